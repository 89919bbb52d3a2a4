//! Mirror air-gap bundles: the offline delivery format of StellaOps (SPEC §5).
//!
//! A bundle is a folder (or a deterministic `tar.gz`/`tar.zst` of it) holding content —
//! one shared OCI image layout under `images/`, `advisories/`, generated `scripts/` and
//! `docs/` — described by a canonical `manifest.json` that lists every content file with its
//! size and SHA-256. `sign` turns the manifest into a DSSE envelope (`manifest.dsse`) and adds
//! the checksum files and the detached header; `verify` checks signature, header, every file,
//! that nothing unlisted is present, and freshness. Archives are verified straight from the
//! stream; `unpack` and `apply` build their result in a staging folder and only move it into
//! place once it verified.
//!
//! Modules, in the order data flows: [`spec`] (the YAML input) → `oci` (local images into
//! the shared layout) and `registry` (registry images pulled into it) → [`create`] →
//! [`manifest`] → [`sign`] (with [`anchor`]: RFC 3161 time anchors over the signed manifest)
//! → [`verify`] (the rules) → [`pack`] (deterministic archives, compressed by [`codec`]) →
//! [`archive`] (the safe stream reader) → [`unpack`] → [`thin`] (apply, diff) → [`load`]
//! (push a verified bundle's images into a registry). [`hash`] does the streaming, parallel
//! SHA-256 every stage uses; `fs` holds the file helpers (bounded reads, the folder walk,
//! atomic writes, staging folders); [`BundlePath`] is the only way a path enters a bundle.
//! [`source::Source::verify`] is the one verification entry point for a folder, a detached
//! envelope or an archive, used by `verify`, `unpack`, `apply` and `load`. No module imports one that imports it back (`scripts/check-module-cycles.py`).
#![forbid(unsafe_code)]

pub mod anchor;
pub mod archive;
pub mod codec;
pub mod create;
pub mod epoch;
mod error;
mod fs;
pub mod hash;
mod keyless;
pub mod load;
pub mod manifest;
mod oci;
pub mod pack;
mod path;
mod registry;
mod scripts;
pub mod sign;
pub mod source;
pub mod spec;
pub mod streamed;
pub mod thin;
pub mod tsa;
pub mod unpack;

#[cfg(any(test, feature = "testing"))]
pub mod testing;
pub mod verify;

pub use error::{Detail, Error, ErrorKind, Field, Result, Stage, VerifyFailure};
pub use manifest::{FileEntry, ImageEntry, Kind, Manifest};
pub use path::{BundlePath, PathError};

/// DSSE payload type of a bundle manifest.
pub const PAYLOAD_TYPE: &str = "application/vnd.stellaops.mirror+json;version=1";
/// The seed 000 spelling, accepted on verify.
pub const PAYLOAD_TYPE_LEGACY: &str = "application/vnd.stellaops.mirror-bundle+json";
/// DSSE payload type of `SHA256SUMS.dsse`.
pub const SUMS_PAYLOAD_TYPE: &str = "application/vnd.stellaops.mirror.sha256sums;version=1";
/// The purpose a bundle signature must be trusted for.
pub const PURPOSE: &str = "mirror-bundle";

/// Fixed names of the files `sign` (and time anchoring) adds beside the content.
pub mod names {
    pub const MANIFEST: &str = "manifest.json";
    pub const ENVELOPE: &str = "manifest.dsse";
    pub const HEADER: &str = "mirror/metadata/mirror.dsse.json";
    pub const PUBLIC_KEY: &str = "public-key.pem";
    pub const SUMS: &str = "SHA256SUMS";
    pub const SUMS_DSSE: &str = "SHA256SUMS.dsse";
    pub const SUMS_SIG: &str = "SHA256SUMS.sig";
    pub const TIME_ANCHOR: &str = "time-anchor.json";
    /// Keyless signatures: Sigstore bundle(s) certifying a signer of `manifest.dsse`.
    pub const KEYLESS: &str = "manifest.sigstore.json";

    /// Every metadata file, in the order `pack` writes them (manifest first, so a stream
    /// reader can check the signature before any content arrives).
    pub const METADATA: [&str; 9] = [
        ENVELOPE,
        MANIFEST,
        HEADER,
        SUMS,
        SUMS_DSSE,
        SUMS_SIG,
        PUBLIC_KEY,
        TIME_ANCHOR,
        KEYLESS,
    ];

    /// Is `path` one of the metadata files (never listed in the manifest's `files`)?
    pub fn is_metadata(path: &str) -> bool {
        METADATA.contains(&path)
    }
}

/// Largest metadata file we read into memory (manifest, envelope, header, checksums). The
/// envelope is the base64 of the manifest, so this allows a manifest of about 24 MiB (some
/// 100 000 files).
pub const MAX_METADATA_BYTES: u64 = 32 * 1024 * 1024;
/// Largest total of all metadata files of one bundle (folder or archive), so that reading and
/// verifying the metadata of any input stays well below the 200 MiB memory budget
/// (docs/mirror.md).
pub const MAX_METADATA_TOTAL: u64 = 64 * 1024 * 1024;
