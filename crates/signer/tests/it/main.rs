//! Signer service integration tests: the real router over HTTPS on 127.0.0.1, a real
//! Authority (oidc-provider, `tests/authority/`) issuing DPoP- and certificate-bound tokens,
//! a Licensing stub, and the SQLite audit log read back for every refusal.

// Test helpers unwrap and panic: a failure is a failing test with a location.
#![allow(clippy::unwrap_used, clippy::panic)]

mod audit_api;
mod dashboard;
mod flows;
#[path = "../common/haproxy.rs"]
mod haproxy;
mod hostile;
mod hsm_kms;
mod keyless;
mod limits;
mod openapi;
mod release;
mod scaleout;
mod sigstore_mock;
mod support;
