//! Integration tests of stella-keyless: the dev CA/TSA flow (dev.rs) and the flow against the
//! Sigstore mock services with their gaps closed (mock.rs, harness in support.rs).
// Test helpers outside #[test] functions unwrap too: a failure is a failing test.
#![allow(clippy::unwrap_used, clippy::panic)]

mod authority;
mod dev;
mod mock;
