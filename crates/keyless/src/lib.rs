//! Keyless signing, as Sigstore does it: an ephemeral P-256 key that never leaves memory, a
//! short-lived certificate for an OIDC identity (Fulcio), an RFC 3161 timestamp over the
//! signature (so a verifier can prove the signature was made while the certificate was
//! valid), an optional Rekor v1 entry, and the result as a Sigstore bundle v0.3.
//!
//! The services sit behind three traits, each with an HTTP client and a dev-only in-process
//! implementation:
//!
//! | role | trait | HTTP | in process (dev only) |
//! |---|---|---|---|
//! | certificates | [`CertificateIssuer`] | [`fulcio::FulcioClient`] | [`dev::DevCa`] |
//! | timestamps | [`Timestamper`] | [`tsa::HttpTsa`] | [`dev::DevTsa`] |
//! | transparency log | [`TransparencyLog`] | [`rekor::RekorClient`] | – |
//!
//! [`KeylessSigner`] composes them: token → ephemeral key → checked certificate → DSSE (or
//! message) signature → timestamp over the signature → optional log entry → bundle, which is
//! verified with `stella-sigstore` against the configured trusted root before it is returned
//! (we never hand out a bundle our own verifier refuses). Every certificate an issuer returns
//! is checked before use ([`check_chain`]): the public key is ours, SAN and OIDC issuer
//! match the token, the chain leads to a Fulcio CA of the trusted root, an embedded SCT by a CT
//! log of the trusted root verifies.
//!
//! Traits are async (boxed futures, so `Arc<dyn Trait>` works) because the Signer service is a
//! tokio program; the CLI drives them with a current-thread runtime.
//!
//! Public namespaces: [`dev`] (the in-process services), [`fulcio`], [`rekor`] and [`tsa`]
//! (the HTTP clients, also re-exported here), [`http`], [`token`]; every other module is
//! private, its public items re-exported here.
#![forbid(unsafe_code)]
#![warn(unreachable_pub)]

use std::future::Future;
use std::pin::Pin;

mod bundle;
pub mod dev;
mod ephemeral;
mod error;
mod flow;
pub mod fulcio;
pub mod http;
mod issuer;
pub mod rekor;
#[cfg(feature = "testing")]
pub mod testing;
mod timestamp;
mod tlog;
pub mod token;
pub mod tsa;

/// The parsers of upstream answers (Fulcio, Rekor, the TSA wrapper), exposed for the fuzz
/// targets in `fuzz/` only; not part of the crate's interface.
#[cfg(feature = "fuzzing")]
#[doc(hidden)]
pub mod fuzzing {
    /// A Fulcio `signingCert` answer: the DER chain, leaf first.
    pub fn fulcio_chain(resp: &[u8]) -> Option<Vec<Vec<u8>>> {
        crate::fulcio::parse_chain(resp).ok()
    }

    /// A Rekor v1 `LogEntry` answer.
    pub fn rekor_entry(resp: &[u8]) -> Option<crate::LogEntry> {
        crate::rekor::parse_entry(resp, "https://rekor.test").ok()
    }

    /// A bare `TimeStampToken` wrapped in a granted `TimeStampResp`.
    pub fn granted_response(token: &[u8]) -> Option<Vec<u8>> {
        crate::timestamp::granted_response(token).ok()
    }
}

pub use ephemeral::EphemeralSigner;
pub use error::{KeylessError, Service, UpstreamError};
pub use flow::{KeylessOutput, KeylessSigner, Reuse, SigningIdentity};
pub use fulcio::FulcioClient;
pub use http::HttpOptions;
pub use issuer::{check_chain, CertificateIssuer, CertificateRequest, IssuedCertificate};
pub use rekor::RekorClient;
pub use timestamp::Timestamper;
pub use tlog::{LogEntry, Proposal, TlogPolicy, TransparencyLog};
pub use token::{ClientCredentials, IdentityToken, IdentityTokenSource, StaticToken};
pub use tsa::HttpTsa;

/// A boxed `Send` future: what the service traits return, so they can be used as
/// `Arc<dyn Trait>`.
pub type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// What a call to an upstream service ([`CertificateIssuer`], [`Timestamper`],
/// [`TransparencyLog`]) returns.
pub type UpstreamFuture<'a, T> = BoxFuture<'a, Result<T, UpstreamError>>;

/// Mode string of keyless signatures (audit records, metrics, the API's `mode`).
pub const MODE: &str = "keyless";
