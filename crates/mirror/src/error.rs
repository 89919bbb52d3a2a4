//! The error type of every bundle operation.
//!
//! One enum for the crate, classified by [`ErrorKind`] so the CLI can map it to the exit codes
//! of SPEC §1: a bundle that fails a check is `Verification` (exit 1), a bad spec or argument
//! `Input` (exit 2), a missing input `NotFound` (exit 4). Messages carry the path or key they
//! are about, and say what to do when there is something to do.
//!
//! A failed verification rule is a [`VerifyFailure`]: its [`Stage`], the [`Field`] at fault (a
//! bundle file, a line, a header, manifest or anchor field) and a [`Detail`] whose `Display` is
//! the message users see. Call sites build it with the stage constructors below
//! (`Error::header(Field::Header("keyid"), ..)`), never from a stage and a bare string.

use std::path::{Path, PathBuf};

use time::OffsetDateTime;

/// How an error should be reported.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum ErrorKind {
    /// The bundle (or archive) failed a verification rule.
    Verification,
    /// The input (spec, arguments, folder state) is not usable.
    Input,
    /// An input file or folder does not exist.
    NotFound,
    /// Reading or writing failed.
    Io,
    /// A key could not be loaded or used.
    Key,
    /// A registry failed or refused (pull in `create`, push in `load`); the wrapped
    /// `stella_oci::Error` has its own kind (unavailable, auth, not found, ...).
    Registry,
    /// A time stamp authority over HTTP failed or refused (`mirror sign/anchor --tsa-url`);
    /// the wrapped `stella_keyless::UpstreamError` says how (unavailable, refused, untrusted).
    Timestamp,
}

/// The stage of bundle verification a failed rule belongs to, in the order they run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum Stage {
    /// The metadata files themselves: present, regular files, within the size limits.
    Metadata,
    /// `manifest.dsse`: a DSSE envelope of the mirror payload type, signed by enough keys.
    Envelope,
    /// The signed manifest and `manifest.json`: well-formed, canonical, identical.
    Manifest,
    /// The detached header agrees with the envelope and the manifest.
    Header,
    /// `SHA256SUMS`, `SHA256SUMS.dsse`, `SHA256SUMS.sig` match what the manifest signs.
    Checksums,
    /// `public-key.pem` holds only keys that signed.
    PublicKey,
    /// `time-anchor.json`: the RFC 3161 token over the manifest.
    Anchor,
    /// `generatedAt` against the clock (or the trusted anchor) and the validity budget.
    Freshness,
    /// The content files: listed, present, sizes and digests as signed, nothing else.
    Content,
    /// The archive stream: entry types, order, sizes, limits.
    Archive,
}

/// What a failed verification rule is about: the file, or the field of a signed document.
///
/// Names are those of the bundle (`SHA256SUMS`, `mirror/metadata/mirror.dsse.json`, a content
/// path) and the JSON names of header, manifest and anchor fields (`payloadSha256`,
/// `generatedAt`, `tokenDigest`).
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Field {
    /// A file of the bundle, by its path in the bundle (a metadata or a content file), as a
    /// whole: missing, not a regular file, too large, not parseable, a wrong signature.
    File(String),
    /// One line of a bundle file (1-based): `SHA256SUMS` line 3.
    Line { file: &'static str, line: usize },
    /// A field of the detached header (`mirror/metadata/mirror.dsse.json`).
    Header(&'static str),
    /// A field of the signed manifest (`manifest.dsse`'s payload).
    Manifest(&'static str),
    /// A field of the time anchor (`time-anchor.json`).
    Anchor(&'static str),
    /// The content files as a whole (the failure's text names the first problems).
    Content,
    /// The metadata files together (their total size).
    Metadata,
    /// An image the bundle carries, by its reference or its place in the OCI layout.
    Image(String),
    /// An entry of the archive stream, by its name as stored.
    Entry(String),
    /// The archive stream itself (not a tar stream, corrupt, not in bundle order).
    Archive,
}

impl Field {
    /// A bundle file by its path in the bundle.
    pub fn file(path: impl Into<String>) -> Self {
        Field::File(path.into())
    }
}

/// Which clock freshness was judged by.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TimeSource {
    /// The local clock (no trusted time anchor, or the clock is ahead of the anchor).
    LocalClock,
    /// The trusted time anchor: the local clock is behind the TSA's time, so it is wrong.
    TimeAnchor,
}

impl TimeSource {
    pub fn name(self) -> &'static str {
        match self {
            TimeSource::LocalClock => "local-clock",
            TimeSource::TimeAnchor => "time-anchor",
        }
    }

    /// What a freshness message adds when judged by the anchor's time.
    fn note(self) -> &'static str {
        match self {
            TimeSource::LocalClock => "",
            TimeSource::TimeAnchor => {
                " (time from the trusted time anchor; the local clock is behind it)"
            }
        }
    }
}

/// What went wrong, typed where a caller may want the values; [`Display`](std::fmt::Display)
/// gives the message users see.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Detail {
    /// The rule's message (it names the file or field and what to do).
    Rule(String),
    /// The content check: `count` problems in all, the first (at most ten) named.
    Content { count: usize, first: Vec<String> },
    /// `generatedAt` is after the trusted time anchor's time (by more than `skew` seconds).
    AfterAnchor {
        generated_at: String,
        anchor_time: OffsetDateTime,
        skew: i64,
    },
    /// `generatedAt` is ahead of the time freshness was judged at (by more than `skew`).
    InFuture {
        generated_at: String,
        judged_at: OffsetDateTime,
        skew: i64,
        clock: TimeSource,
    },
    /// The bundle is `age` seconds old, beyond its validity `budget` (± `skew`).
    Stale {
        generated_at: String,
        age: i64,
        budget: u64,
        skew: i64,
        clock: TimeSource,
    },
}

impl std::fmt::Display for Detail {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        use stella_x509::format_time;
        match self {
            Detail::Rule(m) => f.write_str(m),
            Detail::Content { count: n, first } => {
                write!(
                    f,
                    "bundle content does not match the signed manifest ({n} problem{}): {}",
                    if *n == 1 { "" } else { "s" },
                    first[..first.len().min(NAMED_PROBLEMS)].join("; ")
                )?;
                if *n > NAMED_PROBLEMS {
                    write!(f, "; and {} more", n - NAMED_PROBLEMS)?;
                }
                Ok(())
            }
            Detail::AfterAnchor {
                generated_at,
                anchor_time,
                skew,
            } => write!(
                f,
                "bundle generatedAt {generated_at} is after its time anchor {} (more than \
                 {skew} s): the manifest cannot have been generated after it was stamped",
                format_time(*anchor_time)
            ),
            Detail::InFuture {
                generated_at,
                judged_at,
                skew,
                clock,
            } => write!(
                f,
                "bundle generatedAt {generated_at} is in the future (more than {skew} s ahead \
                 of {}){}",
                format_time(*judged_at),
                clock.note()
            ),
            Detail::Stale {
                generated_at,
                age,
                budget,
                skew,
                clock,
            } => write!(
                f,
                "bundle is stale: generated at {generated_at}, {age} s ago, beyond its validity \
                 of {budget} s (±{skew} s){}",
                clock.note()
            ),
        }
    }
}

/// A verification rule that failed: its stage, the file or field it is about, and what is
/// wrong. Built by the stage constructors of [`Error`] (`Error::header(Field::Header("keyid"),
/// ...)`), never from a bare string.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VerifyFailure {
    stage: Stage,
    field: Field,
    detail: Detail,
    /// The archive the bundle was read from, when it was (the message names it first).
    archive: Option<PathBuf>,
}

impl VerifyFailure {
    /// The stage of verification the rule belongs to.
    pub fn stage(&self) -> Stage {
        self.stage
    }

    /// The file or field the rule is about.
    pub fn field(&self) -> &Field {
        &self.field
    }

    /// What is wrong.
    pub fn detail(&self) -> &Detail {
        &self.detail
    }

    /// The archive the bundle was read from, when it was.
    pub fn archive(&self) -> Option<&Path> {
        self.archive.as_deref()
    }
}

impl std::fmt::Display for VerifyFailure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if let Some(a) = &self.archive {
            write!(f, "{}: ", a.display())?;
        }
        self.detail.fmt(f)
    }
}

impl std::error::Error for VerifyFailure {}

/// Why a bundle operation failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// A verification rule failed (its stage and field say which and where).
    #[error(transparent)]
    Verify(VerifyFailure),
    /// The signature check itself failed (untrusted key, wrong purpose, revoked, expired, ...).
    #[error("manifest signature: {0}")]
    Signature(#[from] stella_keys::VerifyError),
    /// A spec, argument or folder the user must fix.
    #[error("{0}")]
    Input(String),
    #[error("{}: no such file or folder", .0.display())]
    NotFound(PathBuf),
    #[error("{}: {source}", path.display())]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error(transparent)]
    Key(#[from] stella_keys::KeyError),
    #[error(transparent)]
    Sign(#[from] stella_keys::SignError),
    /// A registry operation failed (see [`stella_oci::Error::kind`]).
    #[error(transparent)]
    Registry(#[from] stella_oci::Error),
    /// A time stamp authority over HTTP failed (see [`crate::HttpTimeStamper`]).
    #[error(transparent)]
    Timestamp(#[from] stella_keyless::UpstreamError),
}

impl Error {
    pub fn kind(&self) -> ErrorKind {
        match self {
            Error::Verify(_) | Error::Signature(_) => ErrorKind::Verification,
            Error::Input(_) => ErrorKind::Input,
            Error::NotFound(_) => ErrorKind::NotFound,
            Error::Io { .. } => ErrorKind::Io,
            Error::Key(_) | Error::Sign(_) => ErrorKind::Key,
            Error::Registry(_) => ErrorKind::Registry,
            Error::Timestamp(_) => ErrorKind::Timestamp,
        }
    }

    pub(crate) fn io(path: impl AsRef<Path>, source: std::io::Error) -> Self {
        let path = path.as_ref().to_path_buf();
        if source.kind() == std::io::ErrorKind::NotFound {
            Error::NotFound(path)
        } else {
            Error::Io { path, source }
        }
    }

    /// A failed rule of `stage` about `field`.
    fn failed(stage: Stage, field: Field, detail: Detail) -> Self {
        Error::Verify(VerifyFailure {
            stage,
            field,
            detail,
            archive: None,
        })
    }

    fn rule(stage: Stage, field: Field, msg: impl std::fmt::Display) -> Self {
        Error::failed(stage, field, Detail::Rule(msg.to_string()))
    }

    /// [`Stage::Metadata`]: a metadata file is not a regular file or too large.
    pub(crate) fn metadata(field: Field, msg: impl std::fmt::Display) -> Self {
        Error::rule(Stage::Metadata, field, msg)
    }

    /// [`Stage::Metadata`]: the metadata file `name` is a link or a folder.
    pub(crate) fn metadata_not_regular(name: &str) -> Self {
        Error::metadata(
            Field::file(name),
            format!("{name} is not a regular file (links are refused)"),
        )
    }

    /// [`Stage::Content`]: the content path `rel` is a symbolic link.
    pub(crate) fn content_link(rel: &str) -> Self {
        Error::content(
            Field::file(rel),
            format!("{rel} is a symbolic link: bundles hold regular files only"),
        )
    }

    /// [`Stage::Envelope`]: `manifest.dsse` (or the keyless signatures) refused.
    pub(crate) fn envelope(field: Field, msg: impl std::fmt::Display) -> Self {
        Error::rule(Stage::Envelope, field, msg)
    }

    /// [`Stage::Manifest`]: the signed manifest or `manifest.json` refused.
    pub(crate) fn manifest(field: Field, msg: impl std::fmt::Display) -> Self {
        Error::rule(Stage::Manifest, field, msg)
    }

    /// [`Stage::Header`]: the detached header refused.
    pub(crate) fn header(field: Field, msg: impl std::fmt::Display) -> Self {
        Error::rule(Stage::Header, field, msg)
    }

    /// [`Stage::Checksums`]: `SHA256SUMS`, `SHA256SUMS.dsse` or `SHA256SUMS.sig` refused.
    pub(crate) fn checksums(field: Field, msg: impl std::fmt::Display) -> Self {
        Error::rule(Stage::Checksums, field, msg)
    }

    /// [`Stage::PublicKey`]: `public-key.pem` refused.
    pub(crate) fn public_key(msg: impl std::fmt::Display) -> Self {
        Error::rule(Stage::PublicKey, Field::file(crate::names::PUBLIC_KEY), msg)
    }

    /// [`Stage::Anchor`]: `time-anchor.json` refused.
    pub(crate) fn anchor(field: Field, msg: impl std::fmt::Display) -> Self {
        Error::rule(Stage::Anchor, field, msg)
    }

    /// [`Stage::Freshness`]: `generatedAt` against the clock or the anchor.
    pub(crate) fn freshness(detail: Detail) -> Self {
        Error::failed(Stage::Freshness, Field::Manifest("generatedAt"), detail)
    }

    /// [`Stage::Content`]: one content file (or image) refused.
    pub(crate) fn content(field: Field, msg: impl std::fmt::Display) -> Self {
        Error::rule(Stage::Content, field, msg)
    }

    /// The content check's one refusal: `n` problems, the first (at most ten) named
    /// ([`unlisted_problem`], [`missing_problem`], a changed file).
    pub(crate) fn content_mismatch(n: usize, first: &[String]) -> Self {
        Error::failed(
            Stage::Content,
            Field::Content,
            Detail::Content {
                count: n,
                first: first[..first.len().min(NAMED_PROBLEMS)].to_vec(),
            },
        )
    }

    /// [`Stage::Archive`]: the archive stream or one of its entries refused.
    pub(crate) fn archive(field: Field, msg: impl std::fmt::Display) -> Self {
        Error::rule(Stage::Archive, field, msg)
    }

    /// A verification failure of the bundle read from `archive` names it first.
    pub(crate) fn in_archive(self, archive: &Path) -> Self {
        match self {
            Error::Verify(mut f) => {
                f.archive = Some(archive.to_path_buf());
                Error::Verify(f)
            }
            e => e,
        }
    }

    /// The verification stage that failed, if this is a verification failure.
    pub fn stage(&self) -> Option<Stage> {
        match self {
            Error::Verify(f) => Some(f.stage),
            Error::Signature(_) => Some(Stage::Envelope),
            _ => None,
        }
    }

    /// The file or field a failed verification rule is about (`manifest.dsse` for a
    /// signature that does not verify).
    pub fn field(&self) -> Option<Field> {
        match self {
            Error::Verify(f) => Some(f.field.clone()),
            Error::Signature(_) => Some(Field::file(crate::names::ENVELOPE)),
            _ => None,
        }
    }

    pub(crate) fn input(msg: impl std::fmt::Display) -> Self {
        Error::Input(msg.to_string())
    }
}

/// `Result` with [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Attach a path to an `io::Result`.
pub(crate) trait IoContext<T> {
    fn at(self, path: impl AsRef<Path>) -> Result<T>;
}

impl<T> IoContext<T> for std::io::Result<T> {
    fn at(self, path: impl AsRef<Path>) -> Result<T> {
        self.map_err(|e| Error::io(path, e))
    }
}

/// A content problem: `path` is in the folder, not in the signed manifest.
pub(crate) fn unlisted_problem(path: &str) -> String {
    format!("unlisted file {path} (not in the signed manifest)")
}

/// A content problem: `path` is listed, not in the folder.
pub(crate) fn missing_problem(path: &str) -> String {
    format!("file {path} is missing")
}

/// Problems a content failure names; the rest are counted ([`Error::content_mismatch`]).
pub(crate) const NAMED_PROBLEMS: usize = 10;

/// The [`NAMED_PROBLEMS`] smallest of the items pushed, and how many were pushed: what the
/// report of a folder with millions of problems keeps.
pub(crate) struct Smallest<T: Ord> {
    pub(crate) count: usize,
    kept: std::collections::BinaryHeap<T>,
}

impl<T: Ord> Smallest<T> {
    pub(crate) fn new() -> Self {
        Smallest {
            count: 0,
            kept: std::collections::BinaryHeap::with_capacity(NAMED_PROBLEMS + 1),
        }
    }

    pub(crate) fn push(&mut self, t: T) {
        self.count += 1;
        if self.kept.len() < NAMED_PROBLEMS {
            self.kept.push(t);
        } else if self.kept.peek().is_some_and(|largest| t < *largest) {
            self.kept.pop();
            self.kept.push(t);
        }
    }

    pub(crate) fn sorted(self) -> Vec<T> {
        self.kept.into_sorted_vec()
    }
}

#[cfg(test)]
mod tests {
    use time::macros::datetime;

    use super::*;

    fn text(e: Error) -> String {
        e.to_string()
    }

    #[test]
    fn content_failures_read_as_before() {
        let one = Error::content_mismatch(1, &["file a is missing".to_string()]);
        assert_eq!(
            text(one),
            "bundle content does not match the signed manifest (1 problem): file a is missing"
        );
        let first: Vec<String> = (0..12).map(|i| format!("file f{i} is missing")).collect();
        let many = Error::content_mismatch(12, &first);
        assert_eq!(many.stage(), Some(Stage::Content));
        assert_eq!(many.field(), Some(Field::Content));
        assert_eq!(
            text(many),
            format!(
                "bundle content does not match the signed manifest (12 problems): {}; and 2 more",
                first[..10].join("; ")
            )
        );
    }

    #[test]
    fn freshness_failures_read_as_before() {
        let at = datetime!(2026-01-02 03:04:05 UTC);
        let gen = "2026-01-03T00:00:00Z".to_string();
        assert_eq!(
            text(Error::freshness(Detail::AfterAnchor {
                generated_at: gen.clone(),
                anchor_time: at,
                skew: 5,
            })),
            "bundle generatedAt 2026-01-03T00:00:00Z is after its time anchor \
             2026-01-02T03:04:05.000Z (more than 5 s): the manifest cannot have been generated \
             after it was stamped"
        );
        assert_eq!(
            text(Error::freshness(Detail::InFuture {
                generated_at: gen.clone(),
                judged_at: at,
                skew: 5,
                clock: TimeSource::LocalClock,
            })),
            "bundle generatedAt 2026-01-03T00:00:00Z is in the future (more than 5 s ahead of \
             2026-01-02T03:04:05.000Z)"
        );
        let stale = Error::freshness(Detail::Stale {
            generated_at: gen,
            age: 90_000,
            budget: 86_400,
            skew: 5,
            clock: TimeSource::TimeAnchor,
        });
        assert_eq!(stale.stage(), Some(Stage::Freshness));
        assert_eq!(stale.field(), Some(Field::Manifest("generatedAt")));
        assert_eq!(
            text(stale),
            "bundle is stale: generated at 2026-01-03T00:00:00Z, 90000 s ago, beyond its \
             validity of 86400 s (±5 s) (time from the trusted time anchor; the local clock is \
             behind it)"
        );
    }

    #[test]
    fn rules_read_as_given_and_name_their_stage_and_field() {
        let e = Error::header(Field::Header("keyid"), "detached header keyid k is wrong");
        assert_eq!(e.kind(), ErrorKind::Verification);
        assert_eq!(e.stage(), Some(Stage::Header));
        assert_eq!(e.field(), Some(Field::Header("keyid")));
        assert_eq!(text(e), "detached header keyid k is wrong");
        let e = Error::metadata_not_regular("SHA256SUMS");
        assert_eq!(e.field(), Some(Field::file("SHA256SUMS")));
        assert_eq!(
            text(e),
            "SHA256SUMS is not a regular file (links are refused)"
        );
        assert_eq!(
            text(Error::content_link("a/b")),
            "a/b is a symbolic link: bundles hold regular files only"
        );
    }

    #[test]
    fn a_failure_in_an_archive_names_the_archive_first() {
        let e = Error::checksums(Field::file("SHA256SUMS.sig"), "SHA256SUMS.sig is missing")
            .in_archive(Path::new("/tmp/b.tar.gz"));
        assert_eq!(e.stage(), Some(Stage::Checksums));
        assert_eq!(e.field(), Some(Field::file("SHA256SUMS.sig")));
        assert_eq!(text(e), "/tmp/b.tar.gz: SHA256SUMS.sig is missing");
        // Other errors pass unchanged.
        let e = Error::input("bad spec").in_archive(Path::new("/tmp/b.tar.gz"));
        assert_eq!(text(e), "bad spec");
    }
}
