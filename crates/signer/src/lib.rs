//! The Stella Signer service as a library: [`router`] over an [`AppState`] that holds every
//! backend behind its trait (audit log, quota store, replay cache, key backends), and
//! [`serve`] for HTTP/HTTPS with optional mTLS and graceful shutdown. The `stella`
//! binary's `signer serve` is a thin wrapper.
//!
//! Request flow: `api` (router, audited-route runner); gate order: `gates`; handlers:
//! `sign`; wire types: `wire`. Token and proof rules: `auth`. Entitlement:
//! `poe`. The dev profile (embedded Authority and Licensing, dev only): [`dev`]. A client
//! for the API (DPoP proofs, client-credentials tokens), used by the CLI, the tests and the
//! benchmark: [`client`].
//!
//! Public surface (docs/architecture.md "Public surface"): the modules are private and this
//! file re-exports what the CLI, the tests and the benches use (the server as [`serve`] and
//! [`tls_acceptor`]). Namespaces reached by path stay public: [`client`], [`jose`]
//! (`jose::sign`), [`dev`] (the dev profile's constants) and [`checkpoints`]
//! (`checkpoints::check`).
#![forbid(unsafe_code)]
#![warn(unreachable_pub)]

mod api;
mod app;
mod audit_api;
mod audit_cursor;
mod auth;
pub mod checkpoints;
pub mod client;
mod config;
pub mod dev;
mod error;
mod flood;
mod gates;
pub mod jose;
mod jwks;
mod keyless;
pub mod logfmt;
mod metrics;
mod openapi;
mod poe;
mod release;
mod server;
mod sign;
mod trace;
mod wire;

pub use api::router;
pub use app::{App, AppBuilder, AppState, TenantKeys};
pub use auth::NonceIssuer;
pub use config::Config;
pub use config::ReleaseConfig;
pub use error::{ApiError, Code, StartError};
pub use gates::ConnInfo;
pub use release::ReleaseGate;
pub use server::{serve, tls_acceptor};
pub use trace::random_hex;
