//! Stella trust core data model: DSSE envelopes, in-toto statements, the predicate catalogue,
//! RFC 8785 canonical JSON and the Sigstore bundle model. Pure: no I/O, no crypto, no async —
//! signing and verification live in `stella-keys`, which composes these types.
//!
//! Public surface: the types and constants re-exported here, plus four namespaces of free
//! functions and constants: [`b64`], [`jcs`], [`predicates`] and [`stream`] (envelopes too
//! large to hold in memory). Every other module is private.
#![forbid(unsafe_code)]
#![warn(unreachable_pub)]

pub mod b64;
mod bundle;
mod envelope;
pub mod jcs;
pub mod predicates;
mod statement;
pub mod stream;
pub mod stream_detach;
mod stream_write;

pub use bundle::{
    looks_like_bundle, Bundle, BundleError, VerificationMaterial, BUNDLE_MEDIA_TYPE_V03,
};
pub use envelope::{
    pae, Envelope, EnvelopeError, EnvelopeJson, Signature, SortedJson, MAX_ENVELOPE_BYTES,
};
pub use statement::{Statement, StatementError, Subject, PAYLOAD_TYPE_IN_TOTO, STATEMENT_TYPE_V1};
