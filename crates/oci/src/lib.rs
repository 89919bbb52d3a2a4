//! OCI registries for Stella: a distribution-protocol client, images between registries and
//! OCI image layouts, referrers with their fallbacks, image signatures and the release
//! verdict the Signer service relies on.
//!
//! Modules, in the order data flows: [`reference`] and [`digest`] (names and content
//! addresses) → [`auth`] (docker config credentials, challenges) → [`client`] (requests,
//! retries, downloads checked against digests) and [`upload`] (existence checks, mounts,
//! monolithic/chunked/resumed uploads) → [`layout`] (OCI image layout folders) →
//! [`transfer`] ([`pull_to_layout`], [`push_from_layout`]) → [`referrers`] (referrers API,
//! tag-schema and cosign-tag fallbacks, attaching artifacts) → [`release`] ([`sign_image`],
//! [`verify_image_release`]). [`blocking`] wraps it all for synchronous callers.
//!
//! Why our own client on reqwest rather than `oci-client`: see `docs/oci.md`.
#![forbid(unsafe_code)]

pub mod auth;
pub mod blocking;
pub mod client;
pub mod digest;
mod error;
pub mod layout;
pub mod media;
pub mod progress;
pub mod reference;
pub mod referrers;
pub mod release;
#[cfg(feature = "testing")]
pub mod testing;
pub mod transfer;
pub mod upload;

pub use auth::{CredentialSource, Credentials};
pub use blocking::BlockingClient;
pub use client::{Client, ClientConfig, PlainHttp, RetryPolicy};
pub use digest::Digest;
pub use error::{Error, ErrorKind, Result};
pub use layout::Layout;
pub use media::{Descriptor, Platform, Platforms};
pub use progress::{BlobAction, Event, NoProgress, Progress};
pub use reference::Reference;
pub use referrers::{list_referrers, ReferrerSource, Referrers};
pub use release::{
    attach_bundle, check_keyless_bundle, sign_image, verify_image, verify_image_release,
    KeylessRefusal, ReleasePolicy, SignedImage, Verdict,
};
pub use transfer::{
    pull_to_layout, push_all_from_layout, push_from_layout, PullOptions, PulledImage, PushOptions,
    Report,
};
