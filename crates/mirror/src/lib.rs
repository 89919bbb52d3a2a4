//! Mirror air-gap bundles (being written).
