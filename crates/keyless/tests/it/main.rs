//! Integration tests of stella-keyless: the dev CA/TSA flow (dev.rs).
// Test helpers outside #[test] functions unwrap too: a failure is a failing test.
#![allow(clippy::unwrap_used, clippy::panic)]

mod dev;
