//! The Stella Signer service as a library: [`router`] over an [`AppState`] that holds every
//! backend behind its trait (audit log, quota store, replay cache, key backends), and
//! [`server::serve`] for HTTP/HTTPS with optional mTLS and graceful shutdown. The `stella`
//! binary's `signer serve` is a thin wrapper.
//!
//! Request flow: [`api`] (router, audited-route runner); gate order: [`gates`]; handlers:
//! [`sign`]; wire types: [`wire`]. Token and proof rules: [`auth`]. Entitlement:
//! [`poe`]. The dev profile (embedded Authority and Licensing, dev only): [`dev`]. A client
//! for the API (DPoP proofs, client-credentials tokens), used by the CLI, the tests and the
//! benchmark: [`client`].
#![forbid(unsafe_code)]

pub mod api;
pub mod app;
pub mod audit_api;
pub mod audit_cursor;
pub mod auth;
pub mod checkpoints;
pub mod client;
pub mod config;
pub mod dev;
pub mod error;
pub mod flood;
pub mod gates;
pub mod jose;
pub mod jwks;
pub mod keyless;
pub mod metrics;
pub mod openapi;
pub mod poe;
pub mod release;
pub mod server;
pub mod sign;
pub mod trace;
pub mod wire;

pub use api::router;
pub use app::{App, AppBuilder, AppState, TenantKeys};
pub use config::Config;
pub use error::{ApiError, Code, StartError};
pub use gates::ConnInfo;
