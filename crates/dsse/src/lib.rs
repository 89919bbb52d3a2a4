//! Stella trust core data model: DSSE envelopes, in-toto statements, the predicate catalogue,
//! RFC 8785 canonical JSON and the Sigstore bundle model. Pure: no I/O, no crypto, no async —
//! signing and verification live in `stella-keys`, which composes these types.
#![forbid(unsafe_code)]

pub mod b64;
pub mod bundle;
pub mod envelope;
pub mod jcs;
pub mod predicates;
pub mod statement;
pub mod stream;

pub use bundle::{Bundle, BundleError, VerificationMaterial};
pub use envelope::{pae, Envelope, EnvelopeError, Signature};
pub use statement::{Statement, StatementError, Subject, PAYLOAD_TYPE_IN_TOTO, STATEMENT_TYPE_V1};
