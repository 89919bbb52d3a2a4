//! Audit and quota stores (being written).
