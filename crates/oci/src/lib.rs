//! OCI registries for Stella: a distribution-protocol client, images between registries and
//! OCI image layouts, referrers with their fallbacks, image signatures and the release
//! verdict the Signer service relies on.
//!
//! Modules, in the order data flows: `reference` and `digest` (names and content addresses)
//! → `auth` (docker config credentials, challenges) → `client` (requests, retries, downloads
//! checked against digests) and [`upload`] (existence checks, mounts, monolithic/chunked/resumed
//! uploads) → `layout` (OCI image layout folders) → `transfer` ([`pull_to_layout`],
//! [`push_from_layout`]) → `referrers` (referrers API, tag-schema and cosign-tag fallbacks,
//! attaching artifacts) → `release` ([`sign_image`], [`verify_image_release`]). `blocking`
//! wraps it all for synchronous callers ([`BlockingClient`]).
//!
//! Public surface: the items re-exported here, plus the namespaces [`media`] (media types and
//! manifest documents) and [`upload`] (the resume journal); every other module is private.
//!
//! Why our own client on reqwest rather than `oci-client`: see `docs/oci.md`.
#![forbid(unsafe_code)]
#![warn(unreachable_pub)]

mod auth;
mod blocking;
mod client;
mod digest;
mod error;
mod layout;
pub mod media;
mod progress;
mod reference;
mod referrers;
mod release;
#[cfg(feature = "testing")]
pub mod testing;
mod transfer;
pub mod upload;

pub use auth::{CredentialSource, Credentials};
pub use blocking::BlockingClient;
pub use client::{Client, ClientConfig, PlainHttp, RetryPolicy};
pub use error::{Error, ErrorKind, Result};
pub use layout::Layout;
pub use media::{Descriptor, Platform, Platforms};
pub use progress::{BlobAction, Event, NoProgress, Progress};
pub use reference::Reference;
pub use referrers::{list_referrers, update_fallback_index, ReferrerSource, Referrers};
pub use release::{
    attach_bundle, check_bundle_bytes, check_keyless_bundle, sign_image, sign_image_legacy,
    verify_image, verify_image_release, KeylessRefusal, ReleasePolicy, SignatureRefusal,
    SignedImage, Verdict, COSIGN_SIGN_V1,
};
pub use stella_digest::Digest;

/// Entry points for the fuzz targets (`fuzz/`) into parsers that are private to the crate:
/// the credential file and the `WWW-Authenticate` challenge. Not part of the API.
#[doc(hidden)]
pub mod fuzzing {
    /// Parse a Docker `config.json`; whether it was accepted.
    pub fn docker_config(text: &[u8]) -> bool {
        crate::auth::DockerConfig::parse(text).is_ok()
    }

    /// Parse a `WWW-Authenticate` header; whether it named a usable challenge.
    pub fn challenge(header: &str) -> bool {
        crate::auth::Challenge::parse(header).is_some()
    }
}
pub use transfer::{
    pull_to_layout, push_all_from_layout, push_from_layout, verify_layout_image, PullOptions,
    PulledImage, PushOptions, Report,
};
