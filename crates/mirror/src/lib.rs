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
//! The stages, in the order data flows (the modules are private; their items are
//! re-exported here): the YAML input ([`Spec`]) → local images into the shared layout and
//! registry images pulled into it → [`create()`] → the [`Manifest`] → [`sign_with`] (with RFC
//! 3161 time anchors over the signed manifest: [`stamp_manifest`], [`attach_anchor`]) →
//! [`verify_dir`] (the rules) → [`pack()`] (deterministic archives, compressed as
//! [`Compression`] says) → [`read_archive`] (the safe stream reader) → [`unpack()`] →
//! [`apply`] and [`diff`] (thin updates) → [`load()`] (push a verified bundle's images into a
//! registry). A streaming, parallel SHA-256 ([`Digest`], reporting to a [`Progress`]) serves
//! every stage; the file helpers (bounded reads, the folder walk, atomic writes, staging
//! folders) are private; [`BundlePath`] is the only way a path enters a bundle.
//! [`Source::verify`] is the one verification entry point for a folder, a detached envelope
//! or an archive, used by `verify`, `unpack`, `apply` and `load`. No module
//! imports one that imports it back (`scripts/check-module-cycles.py`).
#![forbid(unsafe_code)]
#![warn(unreachable_pub)]

mod anchor;
mod archive;
mod codec;
mod create;
mod epoch;
mod error;
mod from_base;
mod fs;
mod hash;
mod keyless;
mod listing;
mod load;
mod manifest;
mod oci;
mod pack;
mod path;
mod registry;
mod runs;
mod scripts;
mod sign;
mod source;
mod spec;
mod streamed;
mod sums;
mod thin;
mod tsa;
mod unpack;
mod verify;

#[cfg(any(test, feature = "testing"))]
pub mod testing;

// The public surface: the modules are private and what other crates, tests and fuzz targets use
// is re-exported here, in the order data flows. A name that would be ambiguous at the root gets
// its module as a prefix (`ArchiveLimits`, `StreamLimits`, `VerifyOptions`, `attach_anchor`, ...);
// functions keep their names (`verify`, `pack`, `unpack`, `load` live beside modules of the same
// name only inside the crate). See docs/design.md, "Public surface of mirror and cli".
pub use anchor::{
    attach as attach_anchor, attach_token as attach_anchor_token, local_tsa, signed_manifest,
    signed_manifest_of, signed_manifest_of_with, stamp_digest, stamp_manifest, write_anchor_for,
    Anchor, LocalTsa, SignedManifest, Stamped, TimeStamper, TrustRoots as AnchorTrustRoots,
    FORMAT as ANCHOR_FORMAT,
};
pub use archive::{read_archive, read_stream, verify_archive, Limits as ArchiveLimits, Observed};
pub use codec::Compression;
pub use create::{create, CreateOptions, CreateReport};
pub use epoch::time_or_now;
pub use error::{Detail, Error, ErrorKind, Field, Result, Stage, VerifyFailure};
pub use from_base::FromBase;
pub use hash::{Event, NoProgress, Progress};
pub use listing::read_file_list;
pub use load::{load, LoadOptions, LoadReport};
pub use manifest::{
    format_time, parse_time, BaseRef, FileEntry, ImageEntry, Kind, Manifest, ManifestError,
    TimeError,
};
pub use pack::{pack, pack_with, source_date_epoch as archive_mtime, PackReport};
pub use path::{BundlePath, PathError};
pub use sign::{sign_with, sign_with_limits, SignReport};
pub use source::{Output, Report as SourceReport, Source, Verified};
pub use spec::{Spec, SpecError};
pub use stella_digest::Digest;
pub use streamed::{parse_manifest, parse_manifest_slice, FileIndex, Limits as StreamLimits};
pub use thin::{
    apply, diff, diff_indexed, diff_manifest_files, ApplyReport, Changed as DiffChanged, Diff,
    List as DiffList, Record as DiffRecord,
};
pub use tsa::HttpTimeStamper;
pub use unpack::unpack;
pub use verify::{
    open_keyless_beside, read_keyless_beside, verify_checksums, verify_checksums_with, verify_dir,
    verify_dir_with, verify_header, verify_header_file, verify_header_file_with,
    verify_header_with_keyless, CheckedBundle, Header, KeylessFile, KeylessInput,
    Options as VerifyOptions, PartlyHashedBundle, TimeSource, VerifiedBundle, VerifiedHeader,
    VerifiedMetadata,
};

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
