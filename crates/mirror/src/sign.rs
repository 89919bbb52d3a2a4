//! `sign`: check the folder against its manifest, then write `SHA256SUMS`, `SHA256SUMS.dsse`,
//! `SHA256SUMS.sig` (cosign `sign-blob` form, by the first key), record the two checksum
//! files' digests in the manifest, sign the manifest (`manifest.dsse`, one signature per key),
//! and write the detached header and `public-key.pem`; optionally stamp the signed manifest
//! with an RFC 3161 time anchor (`time-anchor.json`).
//!
//! The checksum digests live inside the signed manifest, so `SHA256SUMS` (which lists the
//! content files) is covered by the manifest signature too; `SHA256SUMS` itself cannot list
//! `manifest.json` without a digest cycle.
//!
//! Memory does not grow with the bundle beyond the file list. A `manifest.json` above
//! [`Limits::stream_above`](crate::streamed::Limits) is read straight into a compact
//! [`FileIndex`] ([`crate::streamed::parse_manifest`], ~90 B per file) and the folder is
//! checked against it as `verify` checks a large bundle ([`crate::streamed`]); a smaller one is
//! typed in memory and checked as before (same messages). Either way every output is written
//! as a stream: `SHA256SUMS` and the new `manifest.json` from the file list
//! ([`Manifest::write_canonical`], [`crate::manifest::write_sha256sums`]), each signature over
//! `PAE` fed from the written file ([`stella_keys::Signer::sign_stream`]: file keys sign with
//! memory independent of the message; other backends read it into memory), and each envelope
//! written with its payload base64-encoded on the way ([`stella_dsse::stream::write_envelope`]).
//! The bytes are those the in-memory writers produced.

use std::fs::File;
use std::io::{self, BufReader, BufWriter, Write};
use std::path::{Path, PathBuf};

use stella_dsse::Signature;
use stella_keys::stream::Prefixed;
use stella_keys::{SignError, Signer};
use time::OffsetDateTime;

use crate::error::{Error, IoContext as _, Result};
use crate::fs::write_file;
use crate::hash::{Digest, Hasher, Progress};
use crate::manifest::{format_time, write_sha256sums, FileEntry, FileList, Manifest};
use crate::names;
use crate::streamed::{FileIndex, Limits};
use crate::verify::{Header, HeaderSignature};
use crate::BundlePath;

/// What `sign` wrote.
#[derive(Debug, Clone)]
pub struct SignReport {
    pub dir: PathBuf,
    pub envelope: PathBuf,
    pub manifest_digest: Digest,
    pub key_ids: Vec<String>,
    pub files: usize,
    /// The time anchor written, if a time stamper was given.
    pub anchor: Option<crate::anchor::Anchor>,
}

/// Sign the bundle whose manifest is `manifest_path` (the envelope goes to `envelope_out`),
/// then, with a time stamper, stamp the signed manifest and write
/// `time-anchor.json` (see [`crate::stamp_manifest`]). Without one, a previous anchor is removed: it
/// stamped the previous manifest.
pub fn sign_with(
    manifest_path: &Path,
    envelope_out: &Path,
    signers: &[&dyn Signer],
    now: OffsetDateTime,
    stamper: Option<&dyn crate::anchor::TimeStamper>,
    progress: &dyn Progress,
) -> Result<SignReport> {
    sign_with_limits(
        manifest_path,
        envelope_out,
        signers,
        now,
        stamper,
        &Limits::default(),
        progress,
    )
}

/// The manifest's files as `sign` holds them.
enum Files {
    /// Typed in memory (a manifest up to [`Limits::stream_above`]).
    Typed(Vec<FileEntry>),
    /// Read straight into a compact index (a larger one).
    Index(FileIndex),
}

impl Files {
    fn list(&self) -> &dyn FileList {
        match self {
            Files::Typed(v) => v,
            Files::Index(i) => i,
        }
    }
}

/// [`sign_with`] with explicit [`Limits`]: a `manifest.json` above `limits.stream_above`
/// bytes is read and checked streamed (tests take that path with small bundles).
pub fn sign_with_limits(
    manifest_path: &Path,
    envelope_out: &Path,
    signers: &[&dyn Signer],
    now: OffsetDateTime,
    stamper: Option<&dyn crate::anchor::TimeStamper>,
    limits: &Limits,
    progress: &dyn Progress,
) -> Result<SignReport> {
    if signers.is_empty() {
        return Err(Error::input("give at least one --key"));
    }
    for (i, s) in signers.iter().enumerate() {
        if signers[..i].iter().any(|o| o.key_id() == s.key_id()) {
            return Err(SignError::DuplicateKey(s.key_id().clone()).into());
        }
    }
    let dir = match manifest_path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
        _ => PathBuf::from("."),
    };
    let not_signable = |e: Error| match e {
        Error::Verify(m) => Error::input(format!("cannot sign {}: {m}", dir.display())),
        e => e,
    };
    let size = std::fs::metadata(manifest_path).at(manifest_path)?.len();
    // Never sign a manifest the folder does not match.
    let (mut manifest, files) = if size > limits.stream_above {
        let f = File::open(manifest_path).at(manifest_path)?;
        let (head, index) = crate::streamed::parse_manifest(BufReader::new(f))
            .map_err(|e| Error::input(format!("{}: {e}", manifest_path.display())))?;
        crate::streamed::check_content(&dir, head.kind, &index, progress).map_err(not_signable)?;
        (head, Files::Index(index))
    } else {
        let mut manifest = {
            let bytes = std::fs::read(manifest_path).at(manifest_path)?;
            Manifest::from_json(&bytes)
                .map_err(|e| Error::input(format!("{}: {e}", manifest_path.display())))?
        };
        crate::verify::check_content_of(&dir, &manifest, progress).map_err(not_signable)?;
        let files = std::mem::take(&mut manifest.files);
        (manifest, Files::Typed(files))
    };
    let count = files.list().count();

    // SHA256SUMS, its cosign signature and its envelope, each from the file just written.
    let sums_path = dir.join(names::SUMS);
    let (sums_size, sums_digest) =
        write_streamed(&sums_path, |w| write_sha256sums(files.list(), w))?.1;
    let sig = signers[0].sign_stream(&mut Prefixed {
        prefix: Vec::new(),
        body: File::open(&sums_path).at(&sums_path)?,
    })?;
    write_file(
        &dir.join(names::SUMS_SIG),
        stella_dsse::b64::encode(&sig).as_bytes(),
    )?;
    let (env_size, env_digest) = write_envelope_of(
        &sums_path,
        sums_size,
        crate::SUMS_PAYLOAD_TYPE,
        signers,
        &dir.join(names::SUMS_DSSE),
    )?
    .1;

    manifest.checksums = vec![
        FileEntry {
            path: BundlePath::new(names::SUMS).map_err(Error::input)?,
            size: sums_size,
            sha256: sums_digest,
            media_type: "text/plain; charset=utf-8".into(),
        },
        FileEntry {
            path: BundlePath::new(names::SUMS_DSSE).map_err(Error::input)?,
            size: env_size,
            sha256: env_digest,
            media_type: "application/vnd.dsse.envelope.v1+json".into(),
        },
    ];
    let (payload_size, digest) =
        write_streamed(manifest_path, |w| manifest.write_canonical(files.list(), w))?.1;
    drop(files);
    let (signatures, _) = write_envelope_of(
        manifest_path,
        payload_size,
        crate::PAYLOAD_TYPE,
        signers,
        envelope_out,
    )?;

    let header = Header {
        created: format_time(now),
        issuer: manifest.issuer.clone(),
        keyid: signers[0].key_id().to_string(),
        payload_sha256: digest.hex(),
        payload_type: crate::PAYLOAD_TYPE.into(),
        purpose: crate::PURPOSE.into(),
        signatures: signatures
            .iter()
            .map(|s| HeaderSignature {
                keyid: s.keyid.clone(),
                sig: stella_dsse::b64::encode(&s.sig),
            })
            .collect(),
        rekor_uuid: None,
        rekor_url: None,
    };
    let hpath = crate::BundlePath::new(names::HEADER)
        .map_err(Error::input)?
        .under(&dir);
    if let Some(parent) = hpath.parent() {
        std::fs::create_dir_all(parent).at(parent)?;
    }
    let hbytes = stella_dsse::jcs::to_vec(&header).map_err(|e| Error::input(e.to_string()))?;
    write_file(&hpath, &hbytes)?;
    let pems: String = signers.iter().map(|s| s.public_key().to_pem()).collect();
    write_file(&dir.join(names::PUBLIC_KEY), pems.as_bytes())?;
    // An older time anchor is over an older manifest.
    let anchor = dir.join(names::TIME_ANCHOR);
    if anchor.exists() {
        std::fs::remove_file(&anchor).at(&anchor)?;
    }
    let anchor = match stamper {
        Some(s) => Some(crate::anchor::stamp_digest(&dir, &digest, s)?),
        None => None,
    };
    Ok(SignReport {
        anchor,
        dir,
        envelope: envelope_out.to_path_buf(),
        manifest_digest: digest,
        key_ids: signers.iter().map(|s| s.key_id().to_string()).collect(),
        files: count,
    })
}

/// Sign the file `payload` (of `len` bytes) as a DSSE envelope of `payload_type` by every
/// signer, each over `PAE` fed from the file, and write the envelope to `out`: the signatures
/// and the envelope's (size, SHA-256).
fn write_envelope_of(
    payload: &Path,
    len: u64,
    payload_type: &str,
    signers: &[&dyn Signer],
    out: &Path,
) -> Result<(Vec<Signature>, (u64, Digest))> {
    let mut signatures = Vec::with_capacity(signers.len());
    for s in signers {
        let mut message = Prefixed {
            prefix: stella_dsse::stream::pae_prefix(payload_type, len),
            body: File::open(payload).at(payload)?,
        };
        signatures.push(Signature {
            keyid: s.key_id().to_string(),
            sig: s.sign_stream(&mut message)?,
        });
    }
    let mut body = BufReader::new(File::open(payload).at(payload)?);
    let (read, written) = write_streamed(out, |w| {
        stella_dsse::stream::write_envelope(payload_type, &mut body, &signatures, w)
    })?;
    if read != len {
        return Err(Error::input(format!(
            "{} changed while it was signed",
            payload.display()
        )));
    }
    Ok((signatures, written))
}

/// A writer that counts and hashes what it passes on.
struct Counted<W> {
    inner: W,
    hasher: Hasher,
    len: u64,
}

impl<W: Write> Write for Counted<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let n = self.inner.write(buf)?;
        self.hasher.update(&buf[..n]);
        self.len += n as u64;
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}

/// [`write_file`] for content made by `fill` as a stream: written to a temporary file beside
/// `path` (mode 0644) and renamed over it once complete (a device such as `/dev/null` is
/// written in place). Returns what `fill` returned and the bytes' (size, SHA-256).
fn write_streamed<T>(
    path: &Path,
    fill: impl FnOnce(&mut dyn Write) -> io::Result<T>,
) -> Result<(T, (u64, Digest))> {
    fn run<T, W: Write>(
        inner: W,
        fill: impl FnOnce(&mut dyn Write) -> io::Result<T>,
    ) -> io::Result<(T, W, (u64, Digest))> {
        let mut w = Counted {
            inner: BufWriter::with_capacity(256 * 1024, inner),
            hasher: Hasher::new(),
            len: 0,
        };
        let out = fill(&mut w)?;
        let digest = w.hasher.finish();
        let inner = w.inner.into_inner().map_err(|e| e.into_error())?;
        Ok((out, inner, (w.len, digest)))
    }
    if std::fs::metadata(path).is_ok_and(|m| !m.is_file() && !m.is_dir()) {
        let f = std::fs::OpenOptions::new()
            .write(true)
            .open(path)
            .at(path)?;
        let (out, _, sum) = run(f, fill).at(path)?;
        return Ok((out, sum));
    }
    let dir = match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    };
    let tmp = tempfile::Builder::new()
        .prefix(".stella-tmp-")
        .permissions(std::os::unix::fs::PermissionsExt::from_mode(0o644))
        .tempfile_in(dir)
        .at(dir)?;
    let (out, tmp, sum) = run(tmp, fill).at(path)?;
    tmp.as_file().sync_all().at(path)?;
    tmp.persist(path).map_err(|e| Error::io(path, e.error))?;
    Ok((out, sum))
}
