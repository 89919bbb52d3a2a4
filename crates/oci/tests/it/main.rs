//! Integration tests of `stella-oci` against a real registry (Debian's `docker-registry`,
//! distribution 2.8, started per test on 127.0.0.1), `skopeo` as the cross-check, and small
//! fake registries for the faults a real one will not produce.
#![allow(clippy::unwrap_used, clippy::panic)]

mod auth;
mod faults;
mod keyless;
mod referrers;
mod roundtrip;
mod skopeo;
mod support;
