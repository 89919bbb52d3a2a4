//! The Signer service (being written).
