//! The streamed verification path (`stella_mirror::streamed`) with small, injected limits: a
//! manifest above a 64 KiB test threshold takes the memory-bound path and verifies; tampered
//! streams are refused at their stage; an over-cap manifest is refused before it is read.

use std::io::Read;
use std::path::{Path, PathBuf};

use stella_mirror::{
    names, parse_manifest, verify_dir, verify_dir_with, NoProgress, Stage, StreamLimits,
    VerifyOptions,
};

const TEST_THRESHOLD: u64 = 64 * 1024;

fn small_limits() -> StreamLimits {
    StreamLimits {
        stream_above: TEST_THRESHOLD,
        ..Default::default()
    }
}

/// [`small_limits`] with the decoded manifest in a temporary file, not in memory.
fn on_disk() -> StreamLimits {
    StreamLimits {
        payload_in_memory: 0,
        ..small_limits()
    }
}

/// A bundle of `n` small advisory files, signed with a key the test holds.
struct Many {
    bundle: PathBuf,
    signed: stella_mirror::testing::SignedBundle,
}

impl Many {
    fn new(n: usize) -> Self {
        let b = stella_mirror::testing::SignedBundle::from_spec(
            "name: many\nversion: '1'\nissuer: i@example.org\nadvisories:\n  - path: feeds\n",
            |src| {
                crate::common::write_feed(src, n);
            },
        );
        Many {
            bundle: b.bundle(),
            signed: b,
        }
    }

    fn opts(&self) -> VerifyOptions<'_> {
        self.signed.opts()
    }

    fn streamed(
        &self,
        limits: &StreamLimits,
    ) -> Result<stella_mirror::VerifiedBundle, stella_mirror::Error> {
        verify_dir_with(&self.bundle, &self.opts(), limits, &NoProgress)
    }

    /// Replace the signed manifest by `payload`, signed again (envelope, manifest.json and
    /// the header's digest and signatures follow), so only the payload's own rules can fail.
    fn resign(&self, payload: Vec<u8>) {
        let env =
            stella_keys::sign_envelope(stella_mirror::PAYLOAD_TYPE, payload, &[&self.signed.key])
                .expect("sign");
        std::fs::write(self.bundle.join(names::MANIFEST), &env.payload).expect("write");
        std::fs::write(self.bundle.join(names::ENVELOPE), env.to_json()).expect("write");
        let hpath = self.bundle.join(names::HEADER);
        let mut h: serde_json::Value =
            serde_json::from_slice(&std::fs::read(&hpath).expect("header")).expect("json");
        h["payloadSha256"] = stella_mirror::Digest::of(&env.payload).hex().into();
        h["signatures"] = serde_json::json!([{
            "keyid": env.signatures[0].keyid,
            "sig": stella_dsse::b64::encode(&env.signatures[0].sig),
        }]);
        std::fs::write(&hpath, stella_dsse::jcs::to_vec(&h).expect("jcs")).expect("write");
    }
}

fn stage_of(r: Result<stella_mirror::VerifiedBundle, stella_mirror::Error>) -> (Stage, String) {
    let e = r.expect_err("refused");
    (e.stage().expect("a verification failure"), e.to_string())
}

/// A failure without serde_json's trailing position (a reader and a slice count columns one
/// apart).
fn without_position((stage, msg): (Stage, String)) -> (Stage, String) {
    let msg = match msg.rfind(" at line ") {
        Some(at) => msg[..at].to_string(),
        None => msg,
    };
    (stage, msg)
}

fn file_len(p: &Path) -> u64 {
    std::fs::metadata(p).expect("stat").len()
}

#[test]
fn a_manifest_above_the_threshold_verifies_streamed_with_the_same_report() {
    let m = Many::new(1500);
    assert!(
        file_len(&m.bundle.join(names::MANIFEST)) > TEST_THRESHOLD,
        "the manifest is above the test threshold"
    );
    let streamed = m.streamed(&small_limits()).expect("streamed verify");
    let in_memory = verify_dir(&m.bundle, &m.opts(), &NoProgress).expect("in-memory verify");
    // The decoded manifest in a temporary file instead of memory: the same report.
    let spilled = m
        .streamed(&on_disk())
        .expect("streamed verify, payload on disk");
    assert_eq!(spilled.files_checked, streamed.files_checked);
    assert_eq!(spilled.bytes_checked, streamed.bytes_checked);
    assert_eq!(spilled.meta.manifest_digest, streamed.meta.manifest_digest);
    assert_eq!(spilled.meta.manifest, streamed.meta.manifest);
    assert!(
        streamed.files_checked > 1500,
        "the advisories and the generated docs"
    );
    assert_eq!(streamed.files_checked, in_memory.files_checked);
    assert_eq!(streamed.bytes_checked, in_memory.bytes_checked);
    assert_eq!(
        streamed.meta.manifest_digest,
        in_memory.meta.manifest_digest
    );
    assert_eq!(streamed.meta.signers, in_memory.meta.signers);
    assert_eq!(streamed.meta.manifest.bundle, "many");
    // The streamed report does not hold the manifest's bytes or file list.
    assert!(streamed.meta.manifest_bytes.is_empty());
    assert!(streamed.meta.manifest.files.is_empty());

    // Content problems are found on the streamed path too.
    let victim = m.bundle.join("advisories/feeds/osv/03/OSV-0000003.json");
    std::fs::write(&victim, b"changed").expect("write");
    std::fs::write(m.bundle.join("advisories/feeds/osv/03/extra.json"), b"x").expect("write");
    let (stage, msg) = stage_of(m.streamed(&small_limits()));
    assert_eq!(stage, Stage::Content);
    assert!(
        msg.contains("file advisories/feeds/osv/03/OSV-0000003.json changed"),
        "{msg}"
    );
    assert!(
        msg.contains("unlisted file advisories/feeds/osv/03/extra.json"),
        "{msg}"
    );
    std::fs::remove_file(&victim).expect("rm");
    let (_, msg) = stage_of(m.streamed(&small_limits()));
    assert!(
        msg.contains("file advisories/feeds/osv/03/OSV-0000003.json is missing"),
        "{msg}"
    );
}

#[test]
fn an_over_cap_manifest_is_refused_before_it_is_read() {
    let m = Many::new(1500);
    let limits = StreamLimits {
        stream_above: TEST_THRESHOLD,
        max_manifest: TEST_THRESHOLD,
        max_sums: 1 << 30,
        ..Default::default()
    };
    // A file that cannot be read at all: refused on its size alone.
    let env = m.bundle.join(names::ENVELOPE);
    let honest = std::fs::read(&env).expect("envelope");
    let mut perms = std::fs::metadata(&env).expect("stat").permissions();
    std::os::unix::fs::PermissionsExt::set_mode(&mut perms, 0o000);
    std::fs::set_permissions(&env, perms).expect("chmod");
    let (stage, msg) = stage_of(m.streamed(&limits));
    assert_eq!(stage, Stage::Metadata);
    assert!(msg.starts_with("manifest.dsse is "), "{msg}");
    std::fs::remove_file(&env).expect("rm");
    std::fs::write(&env, honest).expect("write");
    assert!(msg.contains("limit for streamed bundle metadata"), "{msg}");
}

#[test]
fn tampered_streams_are_refused_at_their_stage() {
    let m = Many::new(1500);
    let env_path = m.bundle.join(names::ENVELOPE);
    let honest = std::fs::read(&env_path).expect("envelope");

    // Truncated base64 (the file cut inside the payload).
    std::fs::write(&env_path, &honest[..honest.len() / 2]).expect("write");
    let (stage, msg) = stage_of(m.streamed(&small_limits()));
    assert_eq!(stage, Stage::Envelope);
    assert!(msg.contains("truncated"), "{msg}");
    // One base64 character changed deep in the payload: the signature fails.
    let mut flipped = honest.clone();
    let at = honest.len() - 400;
    flipped[at] = if flipped[at] == b'A' { b'B' } else { b'A' };
    std::fs::write(&env_path, &flipped).expect("write");
    let e = m.streamed(&small_limits()).expect_err("refused");
    assert!(e.to_string().contains("no signature verifies"), "{e}");
    let e = m.streamed(&on_disk()).expect_err("refused");
    assert!(e.to_string().contains("no signature verifies"), "{e}");
    std::fs::write(&env_path, &honest).expect("write");
    m.streamed(&small_limits()).expect("honest again");

    // A payload that is not canonical deep in the stream (signed, so only the form is wrong).
    let manifest = std::fs::read(m.bundle.join(names::MANIFEST)).expect("manifest");
    let text = String::from_utf8(manifest.clone()).expect("utf8");
    let deep = text.rfind("\"size\":").expect("a size");
    let spaced = format!("{} {}", &text[..deep], &text[deep..]);
    m.resign(spaced.into_bytes());
    let (stage, msg) = stage_of(m.streamed(&small_limits()));
    assert_eq!(stage, Stage::Manifest);
    assert!(msg.contains("not canonical"), "{msg}");
    assert_eq!(
        without_position(stage_of(m.streamed(&on_disk()))),
        without_position((stage, msg))
    );

    // Unsorted and duplicate entries (signed, canonical otherwise).
    let mut v: serde_json::Value = serde_json::from_slice(&manifest).expect("json");
    let files = v["files"].as_array_mut().expect("files");
    let last = files.len() - 1;
    files.swap(last - 1, last);
    m.resign(stella_dsse::jcs::to_vec(&v).expect("jcs"));
    let (stage, msg) = stage_of(m.streamed(&small_limits()));
    assert_eq!(stage, Stage::Manifest);
    assert!(msg.contains("not sorted"), "{msg}");
    assert_eq!(
        without_position(stage_of(m.streamed(&on_disk()))),
        without_position((stage, msg))
    );
    let mut v: serde_json::Value = serde_json::from_slice(&manifest).expect("json");
    let files = v["files"].as_array_mut().expect("files");
    let dup = files[1000].clone();
    files.insert(1000, dup);
    m.resign(stella_dsse::jcs::to_vec(&v).expect("jcs"));
    let (stage, msg) = stage_of(m.streamed(&small_limits()));
    assert_eq!(stage, Stage::Manifest);
    assert!(msg.contains("repeat a path"), "{msg}");
    assert_eq!(
        without_position(stage_of(m.streamed(&on_disk()))),
        without_position((stage, msg))
    );

    // SHA256SUMS edited at its last line (its signed digest no longer matches).
    m.resign(manifest);
    m.streamed(&small_limits()).expect("honest again");
    let sums = m.bundle.join(names::SUMS);
    let mut s = std::fs::read(&sums).expect("sums");
    let n = s.len();
    s[n - 3] ^= 1;
    std::fs::write(&sums, &s).expect("write");
    let (stage, _) = stage_of(m.streamed(&small_limits()));
    assert_eq!(stage, Stage::Checksums);
}

/// A listed file replaced by a sparse file of 64 GiB, and one such file dropped into the
/// folder unlisted: refused on every route (in memory, streamed, streamed with the payload on
/// disk) as changed — named with its size and the listed one, not with a digest, since it is
/// read no further than its listed size — and as unlisted, in about the time of the honest
/// verification, not of reading 64 GiB.
#[test]
fn a_file_far_larger_than_listed_is_refused_without_being_read() {
    let m = Many::new(1500);
    let listed = "advisories/feeds/osv/03/OSV-0000003.json";
    let size = file_len(&m.bundle.join(listed));
    let huge: u64 = 64 << 30;
    let sparse = |rel: &str| {
        let f = std::fs::File::create(m.bundle.join(rel)).expect("create");
        f.set_len(huge).expect("sparse");
    };
    type Route<'a> = (
        &'a str,
        Box<dyn Fn() -> Result<stella_mirror::VerifiedBundle, stella_mirror::Error> + 'a>,
    );
    let routes: [Route<'_>; 3] = [
        (
            "in memory",
            Box::new(|| verify_dir(&m.bundle, &m.opts(), &NoProgress)),
        ),
        ("streamed", Box::new(|| m.streamed(&small_limits()))),
        (
            "streamed, payload on disk",
            Box::new(|| m.streamed(&on_disk())),
        ),
    ];
    let original = std::fs::read(m.bundle.join(listed)).expect("read");
    sparse(listed);
    for (route, verify) in &routes {
        let (stage, msg) = stage_of(verify());
        assert_eq!(stage, Stage::Content, "{route}: {msg}");
        assert!(
            msg.contains(&format!(
                "file {listed} changed: {huge} bytes (larger than listed: not read past its listed size), the manifest says {size} bytes sha256:"
            )),
            "{route}: {msg}"
        );
        assert!(msg.contains("(1 problem)"), "{route}: {msg}");
    }
    std::fs::write(m.bundle.join(listed), &original).expect("restore");
    sparse("advisories/huge.bin");
    for (route, verify) in &routes {
        let (stage, msg) = stage_of(verify());
        assert_eq!(stage, Stage::Content, "{route}: {msg}");
        assert!(
            msg.ends_with(
                "(1 problem): unlisted file advisories/huge.bin (not in the signed manifest)"
            ),
            "{route}: {msg}"
        );
    }
    std::fs::remove_file(m.bundle.join("advisories/huge.bin")).expect("rm");
    for (route, verify) in &routes {
        verify().unwrap_or_else(|e| panic!("{route}: honest again: {e}"));
    }
}

/// A bundle whose metadata files are each below the per-file threshold but together above
/// what the in-memory path reads (a bundle of some 100,000 to 145,000 files by default, which
/// `mirror verify` refused: "the metadata files exceed 67108864 bytes in all") verifies
/// streamed, with the in-memory report; one byte below the total, in memory.
#[test]
fn metadata_above_the_in_memory_total_verifies_streamed() {
    let m = Many::new(1500);
    let total: u64 = names::METADATA
        .iter()
        .filter_map(|n| std::fs::metadata(m.bundle.join(n)).ok())
        .map(|md| md.len())
        .sum();
    let in_memory = verify_dir(&m.bundle, &m.opts(), &NoProgress).expect("in memory");
    assert!(!in_memory.meta.manifest_bytes.is_empty(), "in memory");
    let within = |metadata_total: u64| StreamLimits {
        stream_above: u64::MAX,
        metadata_total,
        ..Default::default()
    };
    let streamed = m
        .streamed(&within(total - 1))
        .expect("above the total: streamed");
    assert!(streamed.meta.manifest_bytes.is_empty(), "streamed");
    assert_eq!(streamed.files_checked, in_memory.files_checked);
    assert_eq!(streamed.bytes_checked, in_memory.bytes_checked);
    assert_eq!(
        streamed.meta.manifest_digest,
        in_memory.meta.manifest_digest
    );
    let at = m.streamed(&within(total)).expect("at the total: in memory");
    assert!(!at.meta.manifest_bytes.is_empty(), "in memory");
    // Refusals are the same on both sides of the line.
    let sums = m.bundle.join(names::SUMS);
    let honest = std::fs::read(&sums).expect("sums");
    let mut edited = honest.clone();
    let n = edited.len();
    edited[n - 3] ^= 1;
    std::fs::write(&sums, &edited).expect("write");
    let (above, _) = stage_of(m.streamed(&within(total - 1)));
    let (below, _) = stage_of(m.streamed(&within(total + 64)));
    assert_eq!((above, below), (Stage::Checksums, Stage::Checksums));
    std::fs::write(&sums, &honest).expect("restore");
}

/// `SHA256SUMS.dsse` is read once on the streamed path (hashed whole while its envelope is
/// read, its payload compared with `SHA256SUMS` byte for byte): an envelope whose digest the
/// manifest signs but whose payload is not `SHA256SUMS` (a byte changed, one short, one
/// more) is refused at the same stage with the same text as on the in-memory path; one that
/// is no envelope at the same stage.
#[test]
fn a_signed_sha256sums_dsse_not_carrying_sha256sums_is_refused_as_in_memory() {
    let m = Many::new(1500);
    let manifest = std::fs::read(m.bundle.join(names::MANIFEST)).expect("manifest");
    let sums = std::fs::read(m.bundle.join(names::SUMS)).expect("sums");
    let dsse_path = m.bundle.join(names::SUMS_DSSE);
    let honest = std::fs::read(&dsse_path).expect("dsse");
    let n = sums.len();
    let mut changed = sums.clone();
    changed[n / 2] ^= 1;
    let mut longer = sums.clone();
    longer.push(b'\n');
    let payloads = [changed, sums[..n - 1].to_vec(), longer];
    let mut bodies: Vec<Vec<u8>> = payloads
        .iter()
        .map(|p| {
            stella_keys::sign_envelope(
                stella_mirror::SUMS_PAYLOAD_TYPE,
                p.clone(),
                &[&m.signed.key],
            )
            .expect("sign")
            .to_json()
        })
        .collect();
    bodies.push(b"{\"payload\": 1}".to_vec());
    bodies.push(honest[..honest.len() / 2].to_vec());
    for (i, body) in bodies.iter().enumerate() {
        std::fs::write(&dsse_path, body).expect("write");
        // The manifest signs this envelope's digest and size.
        let mut v: serde_json::Value = serde_json::from_slice(&manifest).expect("json");
        for c in v["checksums"].as_array_mut().expect("checksums") {
            if c["path"] == names::SUMS_DSSE {
                c["sha256"] = stella_mirror::Digest::of(body).hex().into();
                c["size"] = body.len().into();
            }
        }
        m.resign(stella_dsse::jcs::to_vec(&v).expect("jcs"));
        let in_memory = stage_of(verify_dir(&m.bundle, &m.opts(), &NoProgress));
        assert_eq!(in_memory.0, Stage::Checksums, "{i}: {}", in_memory.1);
        if i < 3 {
            assert!(
                in_memory.1.contains("does not carry SHA256SUMS"),
                "{i}: {}",
                in_memory.1
            );
        }
        let streamed = stage_of(m.streamed(&small_limits()));
        assert_eq!(stage_of(m.streamed(&on_disk())), streamed, "{i}");
        if i < 3 {
            assert_eq!(streamed, in_memory, "{i}");
        } else {
            // No envelope: the streamed reader words it its own way (as before).
            assert_eq!(streamed.0, in_memory.0, "{i}");
            assert!(
                streamed
                    .1
                    .contains("SHA256SUMS.dsse: malformed DSSE envelope"),
                "{i}: {}",
                streamed.1
            );
        }
    }
    // Honest again: both paths verify.
    std::fs::write(&dsse_path, &honest).expect("write");
    m.resign(manifest);
    m.streamed(&small_limits()).expect("streamed");
    verify_dir(&m.bundle, &m.opts(), &NoProgress).expect("in memory");
}

/// A manifest generated on the fly (never held): `n` entries, `tweak` applied to each line.
struct Synthetic {
    head: Vec<u8>,
    n: usize,
    i: usize,
    line: Vec<u8>,
    pos: usize,
    tail: Vec<u8>,
    stage: u8,
    entry: fn(usize, &mut Vec<u8>),
}

impl Synthetic {
    fn manifest(n: usize, entry: fn(usize, &mut Vec<u8>)) -> Self {
        Synthetic {
            head: br#"{"bundle":"b","checksums":[],"files":["#.to_vec(),
            n,
            i: 0,
            line: Vec::new(),
            pos: 0,
            tail: br#"],"generatedAt":"2025-01-01T00:00:00.000Z","generation":1,"issuer":"i","kind":"full","purpose":"mirror-bundle","version":"1"}"#.to_vec(),
            stage: 0,
            entry,
        }
    }
}

impl Read for Synthetic {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        loop {
            if self.pos < self.line.len() {
                let n = buf.len().min(self.line.len() - self.pos);
                buf[..n].copy_from_slice(&self.line[self.pos..self.pos + n]);
                self.pos += n;
                return Ok(n);
            }
            self.line.clear();
            self.pos = 0;
            match self.stage {
                0 => {
                    self.line.extend_from_slice(&self.head);
                    self.stage = 1;
                }
                1 if self.i < self.n => {
                    if self.i > 0 {
                        self.line.push(b',');
                    }
                    (self.entry)(self.i, &mut self.line);
                    self.i += 1;
                }
                1 => {
                    self.line.extend_from_slice(&self.tail);
                    self.stage = 2;
                }
                _ => return Ok(0),
            }
        }
    }
}

fn honest_entry(i: usize, out: &mut Vec<u8>) {
    out.extend_from_slice(
        format!(
            r#"{{"mediaType":"application/json","path":"a/{i:07}","sha256":"{:064x}","size":{i}}}"#,
            i
        )
        .as_bytes(),
    );
}

const MILLION: usize = 1_000_000;

#[test]
fn a_million_entries_stream_and_sha256sums_disagreeing_at_entry_999_999_is_found() {
    // The index of a million entries, built entry by entry as the parser does (parsing a
    // million entries with serde in a debug build takes a minute; the parser itself is
    // tested on 50,000 below).
    let mut index = stella_mirror::FileIndex::default();
    for i in 0..MILLION {
        index
            .push(stella_mirror::FileEntry {
                path: format!("a/{i:07}").parse().expect("path"),
                size: i as u64,
                sha256: stella_digest::Digest::parse_sha256_hex(&format!("{i:064x}")).expect("hex"),
                media_type: "application/json".into(),
            })
            .expect("in order");
    }
    assert_eq!(index.len(), MILLION);
    let (manifest, parsed) = parse_manifest(std::io::BufReader::new(Synthetic::manifest(
        50_000,
        honest_entry,
    )))
    .expect("50,000 entries");
    assert!(manifest.files.is_empty());
    assert_eq!(parsed.len(), 50_000);
    assert_eq!(parsed.get(49_999), index.get(49_999));
    // Compact: records and path arena only.
    let per_file = index.heap_bytes() as f64 / MILLION as f64;
    assert!(per_file < 60.0, "{per_file} bytes per file");
    assert_eq!(index.find("a/0999999"), Some(999_999));
    assert_eq!(index.find("a/1000000"), None);

    // SHA256SUMS as a stream: honest, then wrong at entry 999,999 only.
    struct Sums {
        i: usize,
        bad: Option<usize>,
        line: Vec<u8>,
        pos: usize,
    }
    impl Read for Sums {
        fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
            if self.pos == self.line.len() {
                if self.i == MILLION {
                    return Ok(0);
                }
                let mut digest = format!("{:064x}", self.i);
                if Some(self.i) == self.bad {
                    digest.replace_range(0..1, "f");
                }
                self.line = format!("{digest}  a/{:07}\n", self.i).into_bytes();
                self.pos = 0;
                self.i += 1;
            }
            let n = buf.len().min(self.line.len() - self.pos);
            buf[..n].copy_from_slice(&self.line[self.pos..self.pos + n]);
            self.pos += n;
            Ok(n)
        }
    }
    let sums = |bad| {
        std::io::BufReader::new(Sums {
            i: 0,
            bad,
            line: Vec::new(),
            pos: 0,
        })
    };
    assert!(index.sha256sums_equal(&mut sums(None)).expect("read"));
    assert!(!index
        .sha256sums_equal(&mut sums(Some(999_999)))
        .expect("read"));
    let mut longer = sums(None).chain(&b"x"[..]);
    let mut longer = std::io::BufReader::new(&mut longer);
    assert!(!index.sha256sums_equal(&mut longer).expect("read"));
}

#[test]
fn duplicate_unsorted_and_bad_entries_deep_in_a_stream_are_refused() {
    fn dup_at_end(i: usize, out: &mut Vec<u8>) {
        honest_entry(if i == 49_999 { 49_998 } else { i }, out)
    }
    fn unsorted(i: usize, out: &mut Vec<u8>) {
        honest_entry(if i == 49_000 { 48_000 } else { i }, out)
    }
    fn metadata_name(i: usize, out: &mut Vec<u8>) {
        if i == 49_999 {
            out.extend_from_slice(
                br#"{"mediaType":"x","path":"manifest.json","sha256":"0000000000000000000000000000000000000000000000000000000000000000","size":1}"#,
            );
        } else {
            honest_entry(i, out)
        }
    }
    fn bad_digest(i: usize, out: &mut Vec<u8>) {
        honest_entry(i, out);
        if i == 40_000 {
            let n = out.len();
            out[n - 20] = b'G';
        }
    }
    fn folder(i: usize, out: &mut Vec<u8>) {
        if i == 40_001 {
            out.extend_from_slice(
                br#"{"mediaType":"x","path":"a/0040000/x","sha256":"0000000000000000000000000000000000000000000000000000000000000000","size":1}"#,
            );
        } else {
            honest_entry(i, out)
        }
    }
    for (entry, want) in [
        (dup_at_end as fn(usize, &mut Vec<u8>), "repeat a path"),
        (unsorted, "not sorted"),
        (metadata_name, "metadata name"),
        (bad_digest, "not 64 lowercase hex"),
        (folder, "also a folder"),
    ] {
        let e = parse_manifest(std::io::BufReader::new(Synthetic::manifest(50_000, entry)))
            .expect_err("refused")
            .to_string();
        assert!(e.contains(want), "{e} does not say {want:?}");
    }
    // Truncated stream.
    let cut = Synthetic::manifest(50_000, honest_entry).take(1_000_000);
    assert!(parse_manifest(cut).is_err());
}

/// `SHA256SUMS.sig` is checked at the same time as `SHA256SUMS.dsse` on the streamed path
/// (a SHA-512 pass over `SHA256SUMS` each, on two threads): its refusals (another key's
/// signature, not base64, missing) read as on the in-memory path, and with `SHA256SUMS.dsse`
/// refused too, that refusal is the one reported, as in sequence.
#[test]
fn sha256sums_sig_refusals_keep_their_order_while_checked_beside_the_dsse() {
    use stella_keys::{Algorithm, FileKey, Signer as _};
    let m = Many::new(1500);
    let manifest = std::fs::read(m.bundle.join(names::MANIFEST)).expect("manifest");
    let sums = std::fs::read(m.bundle.join(names::SUMS)).expect("sums");
    let sig_path = m.bundle.join(names::SUMS_SIG);
    let dsse_path = m.bundle.join(names::SUMS_DSSE);
    let honest_sig = std::fs::read(&sig_path).expect("sig");
    let honest_dsse = std::fs::read(&dsse_path).expect("dsse");
    let other = FileKey::generate(Algorithm::Ed25519).expect("key");
    let foreign_sig = stella_dsse::b64::encode(&other.sign(&sums).expect("sign")).into_bytes();
    let foreign_dsse =
        stella_keys::sign_envelope(stella_mirror::SUMS_PAYLOAD_TYPE, sums.clone(), &[&other])
            .expect("sign")
            .to_json();
    // The manifest signs `name`'s digest and size (when it lists it).
    let sign_file = |name: &str, body: &[u8]| {
        std::fs::write(m.bundle.join(name), body).expect("write");
        let mut v: serde_json::Value =
            serde_json::from_slice(&std::fs::read(m.bundle.join(names::MANIFEST)).expect("m"))
                .expect("json");
        for c in v["checksums"].as_array_mut().expect("checksums") {
            if c["path"] == name {
                c["sha256"] = stella_mirror::Digest::of(body).hex().into();
                c["size"] = body.len().into();
            }
        }
        m.resign(stella_dsse::jcs::to_vec(&v).expect("jcs"));
    };
    let same_everywhere = |case: &str| -> (Stage, String) {
        let in_memory = stage_of(verify_dir(&m.bundle, &m.opts(), &NoProgress));
        assert_eq!(stage_of(m.streamed(&small_limits())), in_memory, "{case}");
        assert_eq!(stage_of(m.streamed(&on_disk())), in_memory, "{case}");
        in_memory
    };
    /// What is changed (the `.sig` written, or removed; the `.dsse`) and what the refusal says.
    type Case<'a> = (&'a str, Option<&'a [u8]>, &'a [u8], &'a str);
    let cases: [Case<'_>; 5] = [
        (
            "another key's .sig",
            Some(&foreign_sig),
            &honest_dsse,
            "SHA256SUMS.sig does not verify",
        ),
        (
            "a .sig not base64",
            Some(b"not base64!"),
            &honest_dsse,
            "SHA256SUMS.sig:",
        ),
        ("no .sig", None, &honest_dsse, "SHA256SUMS.sig"),
        (
            "another key's .dsse and .sig",
            Some(&foreign_sig),
            foreign_dsse.as_slice(),
            "SHA256SUMS.dsse",
        ),
        (
            "another key's .dsse, no .sig",
            None,
            foreign_dsse.as_slice(),
            "SHA256SUMS.dsse",
        ),
    ];
    for (case, sig, dsse, says) in cases {
        match sig {
            Some(sig) => sign_file(names::SUMS_SIG, sig),
            None => std::fs::remove_file(&sig_path).expect("remove"),
        }
        sign_file(names::SUMS_DSSE, dsse);
        let (stage, msg) = same_everywhere(case);
        assert_eq!(stage, Stage::Checksums, "{case}: {msg}");
        assert!(msg.contains(says), "{case}: {msg}");
        if dsse != honest_dsse.as_slice() {
            assert!(!msg.contains("SHA256SUMS.sig"), "{case}: {msg}");
        }
    }
    // Honest again: every path verifies.
    std::fs::write(&sig_path, &honest_sig).expect("write");
    std::fs::write(&dsse_path, &honest_dsse).expect("write");
    m.resign(manifest);
    m.streamed(&small_limits()).expect("streamed");
    m.streamed(&on_disk()).expect("on disk");
    verify_dir(&m.bundle, &m.opts(), &NoProgress).expect("in memory");
}

/// The detached header of a bundle whose manifest is above the threshold verifies on its own
/// as a stream (`verify_header_file`): the same result as in memory, and each refusal at the
/// same field with the same text, the payload in memory or in a temporary file.
#[test]
fn a_detached_header_over_a_streamed_manifest_verifies_as_in_memory() {
    use stella_mirror::{verify_header_file_with, verify_header_with_keyless, Error};
    let m = Many::new(1500);
    let header_path = m.bundle.join(names::HEADER);
    let payload = m.bundle.join(names::MANIFEST);
    assert!(file_len(&payload) > TEST_THRESHOLD);
    let o = m.opts();
    let in_memory = |h: &[u8]| -> Result<stella_mirror::VerifiedHeader, Error> {
        verify_header_with_keyless(h, &std::fs::read(&payload).expect("payload"), None, &o)
    };
    let both = |h: &[u8]| -> (Result<_, Error>, Result<_, Error>, Result<_, Error>) {
        (
            in_memory(h),
            verify_header_file_with(h, &payload, None, &o, &small_limits()),
            verify_header_file_with(h, &payload, None, &o, &on_disk()),
        )
    };
    let header = std::fs::read(&header_path).expect("header");
    let (a, b, c) = both(&header);
    let (a, b, c) = (
        a.expect("in memory"),
        b.expect("streamed"),
        c.expect("on disk"),
    );
    for r in [&b, &c] {
        assert_eq!(r.manifest_digest, a.manifest_digest);
        assert_eq!(r.signers, a.signers);
        assert_eq!(r.header, a.header);
        assert_eq!(r.manifest.bundle, "many");
        assert_eq!(r.manifest.generated_at, a.manifest.generated_at);
        assert!(
            r.manifest.files.is_empty(),
            "the streamed manifest keeps no file list"
        );
    }
    assert!(
        a.manifest.files.len() > 1500,
        "the advisories and the generated files, in memory"
    );

    let refused = |h: &[u8], want: &str| {
        let (a, b, c) = both(h);
        let a = a.expect_err("in memory").to_string();
        assert!(a.contains(want), "{a}");
        assert_eq!(b.expect_err("streamed").to_string(), a);
        assert_eq!(c.expect_err("on disk").to_string(), a);
    };
    // Another payload digest, a signature by nobody the keyring knows, no signature.
    let v: serde_json::Value = serde_json::from_slice(&header).expect("json");
    let edit = |f: &dyn Fn(&mut serde_json::Value)| {
        let mut h = v.clone();
        f(&mut h);
        stella_dsse::jcs::to_vec(&h).expect("jcs")
    };
    refused(
        &edit(&|h| h["payloadSha256"] = "00".repeat(32).into()),
        "payload hash mismatch",
    );
    refused(
        &edit(&|h| h["signatures"] = serde_json::json!([])),
        "no signatures",
    );
    let other = stella_keys::sign_envelope(
        stella_mirror::PAYLOAD_TYPE,
        std::fs::read(&payload).expect("payload"),
        &[&stella_keys::FileKey::generate(stella_keys::Algorithm::Ed25519).expect("key")],
    )
    .expect("sign");
    refused(
        &edit(&|h| {
            h["signatures"] = serde_json::json!([{
                "keyid": other.signatures[0].keyid,
                "sig": stella_dsse::b64::encode(&other.signatures[0].sig),
            }])
        }),
        "no signature verifies",
    );
    // A signature over the payload with one byte changed: the streamed PAE is what is signed.
    let mut sig = stella_dsse::b64::decode(v["signatures"][0]["sig"].as_str().unwrap()).unwrap();
    sig[10] ^= 1;
    let flipped = stella_dsse::b64::encode(&sig);
    refused(
        &edit(&|h| h["signatures"][0]["sig"] = flipped.clone().into()),
        "no signature verifies",
    );

    // A payload signed and named by the header but not canonical, deep in the stream.
    let text = String::from_utf8(std::fs::read(&payload).expect("payload")).expect("utf8");
    let deep = text.rfind("\"size\":").expect("a size");
    m.resign(format!("{} {}", &text[..deep], &text[deep..]).into_bytes());
    let header = std::fs::read(&header_path).expect("header");
    refused(&header, "not canonical");
    m.resign(text.into_bytes());

    // Keyless signatures beside a streamed payload are read too (an empty list: refused as
    // in memory, naming the file).
    let header = std::fs::read(&header_path).expect("header");
    let keyless = Some(stella_mirror::KeylessInput::Bytes(b"[]"));
    let e = verify_header_file_with(&header, &payload, keyless, &o, &small_limits())
        .expect_err("no keyless bundle");
    assert!(
        e.to_string()
            .contains("manifest.sigstore.json: 0 Sigstore bundles"),
        "{e}"
    );
    // Over the cap: refused on its size.
    let tight = StreamLimits {
        max_manifest: TEST_THRESHOLD,
        ..small_limits()
    };
    let e = verify_header_file_with(&header, &payload, None, &o, &tight).expect_err("cap");
    assert!(e.to_string().contains("above the"), "{e}");
    verify_header_file_with(&header, &payload, None, &o, &small_limits()).expect("honest again");
    // A payload that is not a regular file is refused without reading (a FIFO without a
    // writer would block an open), and a missing one is not found.
    let fifo = payload.with_file_name("payload-fifo");
    let made = std::process::Command::new("mkfifo")
        .arg(&fifo)
        .status()
        .expect("mkfifo");
    assert!(made.success());
    for odd in [&fifo, &m.bundle] {
        let e = verify_header_file_with(&header, odd, None, &o, &small_limits())
            .expect_err("not a regular file");
        assert!(e.to_string().contains("not a regular file"), "{e}");
    }
    std::fs::remove_file(&fifo).expect("rm fifo");
    let e =
        verify_header_file_with(&header, &fifo, None, &o, &small_limits()).expect_err("missing");
    assert!(matches!(e, stella_mirror::Error::NotFound(_)), "{e}");
}

/// A manifest typed from a file goes at most `parse_ahead` bytes ahead of its signature check,
/// then waits for the verdict: an honest bundle verifies as without the wait (folder and
/// detached header), and one signed by a key nobody trusts gets the same refusal.
#[test]
fn typing_past_parse_ahead_waits_for_the_signature_verdict() {
    use stella_mirror::verify_header_file_with;
    let m = Many::new(1500);
    let o = m.opts();
    let waiting = |ahead: u64| StreamLimits {
        parse_ahead: ahead,
        ..on_disk()
    };
    let free = m.streamed(&waiting(u64::MAX)).expect("no wait");
    for ahead in [0, 4096] {
        let r = m.streamed(&waiting(ahead)).expect("waits, then verifies");
        assert_eq!(r.files_checked, free.files_checked);
        assert_eq!(r.meta.manifest, free.meta.manifest);
        let header = std::fs::read(m.bundle.join(names::HEADER)).expect("header");
        let h = verify_header_file_with(
            &header,
            &m.bundle.join(names::MANIFEST),
            None,
            &o,
            &waiting(ahead),
        )
        .expect("detached header");
        assert_eq!(h.manifest_digest, free.meta.manifest_digest);
    }
    // Signed by a key the keyring does not hold: refused alike, waiting or not.
    let payload = std::fs::read(m.bundle.join(names::MANIFEST)).expect("payload");
    let stranger = stella_keys::FileKey::generate(stella_keys::Algorithm::Ed25519).expect("key");
    let env = stella_keys::sign_envelope(stella_mirror::PAYLOAD_TYPE, payload, &[&stranger])
        .expect("sign");
    std::fs::write(m.bundle.join(names::ENVELOPE), env.to_json()).expect("write");
    let (stage, msg) = stage_of(m.streamed(&waiting(u64::MAX)));
    assert!(msg.contains("no signature verifies"), "{msg}");
    for ahead in [0, 4096] {
        assert_eq!(stage_of(m.streamed(&waiting(ahead))), (stage, msg.clone()));
    }
}

/// The keyless signatures beside a detached header's payload: read when a regular file (or a
/// link to one) is there, absent otherwise — a FIFO is never waited on, a folder never read —
/// and refused above the metadata limit without being read.
#[test]
fn keyless_signatures_beside_a_payload_are_opened_once_and_never_waited_on() {
    use stella_mirror::read_keyless_beside;
    let dir = tempfile::tempdir().expect("temp dir");
    let payload = dir.path().join(names::MANIFEST);
    let beside = dir.path().join(names::KEYLESS);
    assert_eq!(read_keyless_beside(&payload).expect("missing"), None);
    std::fs::write(&beside, b"[]").expect("write");
    assert_eq!(
        read_keyless_beside(&payload).expect("file").as_deref(),
        Some(&b"[]"[..])
    );
    // A link to a regular file is followed (the payload's own rule); a dangling one is absent.
    std::fs::remove_file(&beside).expect("rm");
    let target = dir.path().join("elsewhere.json");
    std::fs::write(&target, b"[{}]").expect("write");
    std::os::unix::fs::symlink(&target, &beside).expect("link");
    assert_eq!(
        read_keyless_beside(&payload).expect("link").as_deref(),
        Some(&b"[{}]"[..])
    );
    std::fs::remove_file(&target).expect("rm target");
    assert_eq!(read_keyless_beside(&payload).expect("dangling"), None);
    std::fs::remove_file(&beside).expect("rm link");
    // A FIFO without a writer (an open would block) and a folder: not read.
    let made = std::process::Command::new("mkfifo")
        .arg(&beside)
        .status()
        .expect("mkfifo");
    assert!(made.success());
    assert_eq!(read_keyless_beside(&payload).expect("fifo"), None);
    std::fs::remove_file(&beside).expect("rm fifo");
    std::fs::create_dir(&beside).expect("mkdir");
    assert_eq!(read_keyless_beside(&payload).expect("folder"), None);
    std::fs::remove_dir(&beside).expect("rmdir");
    // Above the limit (a sparse file: nothing is written): refused on its size.
    let f = std::fs::File::create(&beside).expect("create");
    f.set_len(stella_mirror::MAX_METADATA_BYTES + 1)
        .expect("set_len");
    let e = read_keyless_beside(&payload).expect_err("too large");
    assert!(e.to_string().contains("byte limit"), "{e}");
    f.set_len(stella_mirror::MAX_METADATA_BYTES)
        .expect("set_len");
    let at_limit = read_keyless_beside(&payload).expect("at the limit");
    assert_eq!(
        at_limit.map(|b| b.len() as u64),
        Some(stella_mirror::MAX_METADATA_BYTES)
    );
}

/// `verify-checksums` reads `SHA256SUMS` as a stream, in any line order: the same counts and
/// every refusal with the same text whatever the limits, the first problem in line order
/// reported (a repeated path at its second line, before or after a malformed line), and an
/// unsorted file taken as `sha256sum -c` takes it.
#[test]
fn verify_checksums_streams_sha256sums_in_any_order_with_the_same_verdicts() {
    use stella_mirror::{verify_checksums, verify_checksums_with};
    let m = Many::new(1500);
    let sums_path = m.bundle.join(names::SUMS);
    assert!(file_len(&sums_path) > TEST_THRESHOLD);
    let honest = std::fs::read(&sums_path).expect("sums");
    let a = verify_checksums(&m.bundle, &NoProgress).expect("in memory");
    let b = verify_checksums_with(&m.bundle, &small_limits(), &NoProgress).expect("streamed");
    assert_eq!(a, b);
    assert!(a.0 > 1500, "{a:?}");

    let same = |what: &str, want: &str| {
        let a = verify_checksums(&m.bundle, &NoProgress)
            .expect_err(what)
            .to_string();
        let b = verify_checksums_with(&m.bundle, &small_limits(), &NoProgress)
            .expect_err(what)
            .to_string();
        assert!(a.contains(want), "{what}: {a}");
        assert_eq!(a, b, "{what}");
    };
    // Content: one file changed, one missing, one unlisted — all three named, in order.
    let changed = m.bundle.join("advisories/feeds/osv/03/OSV-0000003.json");
    let missing = m.bundle.join("advisories/feeds/osv/04/OSV-0000004.json");
    let kept = std::fs::read(&missing).expect("read");
    let was = std::fs::read(&changed).expect("read");
    std::fs::write(&changed, b"changed").expect("write");
    std::fs::remove_file(&missing).expect("rm");
    std::fs::write(m.bundle.join("advisories/zz-extra.json"), b"x").expect("write");
    std::fs::write(m.bundle.join("advisories/aa-extra.json"), b"x").expect("write");
    same(
        "content",
        "unlisted file advisories/aa-extra.json; unlisted file advisories/zz-extra.json; \
         file advisories/feeds/osv/04/OSV-0000004.json is missing; \
         file advisories/feeds/osv/03/OSV-0000003.json changed",
    );
    std::fs::write(&changed, &was).expect("restore");
    std::fs::write(&missing, kept).expect("restore");
    std::fs::remove_file(m.bundle.join("advisories/zz-extra.json")).expect("rm");
    std::fs::remove_file(m.bundle.join("advisories/aa-extra.json")).expect("rm");
    // Many problems: the first ten named in the same order (the smallest unlisted paths, then
    // missing and changed files in path order), the rest counted — not one line per file.
    let kept = std::fs::read(&missing).expect("read");
    let extra = |k: usize| m.bundle.join(format!("advisories/u{k:02}.json"));
    for k in [7, 3, 11, 0, 9, 1, 5, 10, 2, 8, 4, 6] {
        std::fs::write(extra(k), b"x").expect("write");
    }
    std::fs::remove_file(&missing).expect("rm");
    std::fs::write(&changed, b"changed").expect("write");
    let named: Vec<String> = (0..10)
        .map(|k| format!("unlisted file advisories/u{k:02}.json"))
        .collect();
    same(
        "many unlisted",
        &format!("check failed: {}; and 4 more", named.join("; ")),
    );
    for k in 0..12 {
        std::fs::remove_file(extra(k)).expect("rm");
    }
    std::fs::write(&missing, &kept).expect("restore");
    std::fs::write(&changed, &was).expect("restore");
    // Twelve files changed, in an order the walk does not follow: ten named by path, two
    // counted.
    let osv = |i: usize| {
        m.bundle.join(format!(
            "advisories/feeds/osv/{:02}/OSV-{i:07}.json",
            i % 16
        ))
    };
    let victims: Vec<usize> = (0..12).map(|k| 16 * (11 - k) + 1 + k % 3).collect();
    let mut sorted: Vec<String> = victims
        .iter()
        .map(|&i| format!("advisories/feeds/osv/{:02}/OSV-{i:07}.json", i % 16))
        .collect();
    sorted.sort();
    let olds: Vec<Vec<u8>> = victims
        .iter()
        .map(|&i| {
            let old = std::fs::read(osv(i)).expect("read");
            std::fs::write(osv(i), b"changed").expect("write");
            old
        })
        .collect();
    let r = verify_checksums(&m.bundle, &NoProgress)
        .expect_err("changed")
        .to_string();
    let named: Vec<&str> = r
        .split("; ")
        .filter_map(|p| p.split("file ").nth(1)?.split(" changed").next())
        .collect();
    assert_eq!(
        named,
        sorted[..10].iter().map(String::as_str).collect::<Vec<_>>(),
        "{r}"
    );
    assert!(r.ends_with("; and 2 more"), "{r}");
    same("many changed", "; and 2 more");
    for (&i, old) in victims.iter().zip(olds) {
        std::fs::write(osv(i), old).expect("restore");
    }
    // A link where a listed file was: refused by the walk on both paths.
    let victim = m.bundle.join("advisories/feeds/osv/05/OSV-0000005.json");
    let kept = std::fs::read(&victim).expect("read");
    std::fs::remove_file(&victim).expect("rm");
    std::os::unix::fs::symlink("/etc/hostname", &victim).expect("symlink");
    same("a link", "OSV-0000005.json");
    std::fs::remove_file(&victim).expect("rm");
    std::fs::write(&victim, kept).expect("restore");
    verify_checksums_with(&m.bundle, &small_limits(), &NoProgress).expect("honest again");

    // The file itself, edited at its last lines (past any in-memory prefix).
    let text = String::from_utf8(honest.clone()).expect("utf8");
    let lines: Vec<&str> = text.lines().collect();
    let n = lines.len();
    let edit = |f: &dyn Fn(&mut Vec<String>)| {
        let mut l: Vec<String> = lines.iter().map(|s| s.to_string()).collect();
        f(&mut l);
        std::fs::write(&sums_path, l.join("\n") + "\n").expect("write");
    };
    edit(&|l| l[n - 1] = l[n - 1].replacen("  ", " ", 1));
    same(
        "one space",
        &format!("SHA256SUMS line {n}: not `<sha256>  <path>`"),
    );
    edit(&|l| l[n - 2] = format!("zz{}", &l[n - 2][2..]));
    same(
        "a bad digest",
        &format!("SHA256SUMS line {}: malformed digest", n - 1),
    );
    edit(&|l| l[n - 1] = format!("{}  ../../etc/passwd", &l[n - 1][..64]));
    same(
        "a path out of the folder",
        &format!("SHA256SUMS line {n}: "),
    );
    edit(&|l| {
        let dup = l[n - 2].clone();
        l.insert(n - 1, dup);
    });
    same("a line twice", "SHA256SUMS lists ");
    // Repeats and malformed lines in any order: the first problem in line order is reported,
    // a repeated path at its second line, however far from the first.
    let path_of = |l: &str| l[66..].to_string();
    edit(&|l| {
        let dup = l[2].clone();
        l.insert(n - 1, dup);
    });
    same(
        "a path repeated far below",
        &format!(
            "SHA256SUMS lists {} twice (lines 3 and {n})",
            path_of(lines[2])
        ),
    );
    edit(&|l| {
        let (a, b) = (l[3].clone(), l[7].clone());
        l.insert(n - 1, a);
        l.insert(10, b);
    });
    same(
        "two paths repeated: the earlier second line",
        &format!(
            "SHA256SUMS lists {} twice (lines 8 and 11)",
            path_of(lines[7])
        ),
    );
    edit(&|l| {
        let dup = l[5].clone();
        l.insert(n - 1, dup);
        l[20] = l[20].replacen("  ", " ", 1);
    });
    same(
        "malformed, then a repeat",
        "SHA256SUMS line 21: not `<sha256>  <path>`",
    );
    edit(&|l| {
        let dup = l[5].clone();
        l.insert(8, dup);
        l[20] = l[20].replacen("  ", " ", 1);
    });
    same(
        "a repeat, then malformed",
        &format!(
            "SHA256SUMS lists {} twice (lines 6 and 9)",
            path_of(lines[5])
        ),
    );
    // Any line order, as `sha256sum -c` takes it: reversed, and shuffled.
    edit(&|l| l.reverse());
    assert_eq!(
        verify_checksums(&m.bundle, &NoProgress).expect("reversed"),
        a
    );
    edit(&|l| {
        let k = l.len();
        for i in 0..k {
            l.swap(i, (i * 7919 + 13) % k);
        }
    });
    assert_eq!(
        verify_checksums_with(&m.bundle, &small_limits(), &NoProgress).expect("shuffled"),
        a
    );
    // Unsorted and content problems together: named by path as for a sorted file.
    std::fs::write(&changed, b"changed again").expect("write");
    same(
        "unsorted, a file changed",
        "file advisories/feeds/osv/03/OSV-0000003.json changed",
    );
    std::fs::write(&changed, &was).expect("restore");
    // CRLF line ends read as `sha256sum` and `str::lines` read them.
    std::fs::write(&sums_path, text.replace('\n', "\r\n")).expect("write");
    assert_eq!(
        verify_checksums_with(&m.bundle, &small_limits(), &NoProgress).expect("crlf"),
        a
    );
    // The last line ended by a lone `\r` (no `\n`): the same verdict both ways.
    let mut lone_cr = honest.clone();
    lone_cr.pop();
    lone_cr.push(b'\r');
    std::fs::write(&sums_path, &lone_cr).expect("write");
    same("a lone CR at the end", "SHA256SUMS line");
    // Not UTF-8.
    let mut bad = honest.clone();
    let at = bad.len() - 5;
    bad[at] = 0xff;
    std::fs::write(&sums_path, &bad).expect("write");
    same("not UTF-8", "SHA256SUMS is not UTF-8 text");
    // Not UTF-8 near the end and a malformed line before it: in memory the whole file is
    // tested for UTF-8 first; so is it streamed.
    let mut both = bad.clone();
    let first_line_end = both.iter().position(|&b| b == b'\n').expect("a line");
    both.insert(first_line_end, b'!');
    std::fs::write(&sums_path, &both).expect("write");
    same(
        "malformed early, not UTF-8 late",
        "SHA256SUMS is not UTF-8 text",
    );
    // Above `max_sums`: refused on its size.
    std::fs::write(&sums_path, &honest).expect("restore");
    let tight = StreamLimits {
        max_sums: TEST_THRESHOLD,
        ..small_limits()
    };
    let e = verify_checksums_with(&m.bundle, &tight, &NoProgress).expect_err("cap");
    assert!(e.to_string().contains("above the"), "{e}");
    assert_eq!(
        verify_checksums_with(&m.bundle, &small_limits(), &NoProgress).expect("honest"),
        a
    );
}

/// Keyless signatures (`manifest.sigstore.json`, each Sigstore bundle carrying the manifest
/// again) are checked on the streamed path with the bundles' payloads hashed as they are read,
/// never held: the same signers and the same refusals as in memory, in a folder and in an
/// archive whose metadata is spooled. Before, a keyless-signed bundle too large for memory
/// was refused whatever it held.
#[test]
fn keyless_signatures_verify_streamed_as_in_memory() {
    use stella_sigstore::testing::{LeafSpec, TestSigstore};
    const ISSUER: &str = "https://issuer.test.invalid";

    let m = Many::new(1500);
    let sigstore = TestSigstore::new();
    let now = time::OffsetDateTime::now_utc();
    let leaf = sigstore.issue(&LeafSpec::email("release@ops.example.com", ISSUER, now));
    // Signed with the leaf's (ephemeral) key, then certified by one Sigstore bundle.
    let key = stella_keys::FileKey::from_pem(leaf.key.private_pem().as_bytes(), &mut || {
        unreachable!("not encrypted")
    })
    .expect("leaf key");
    stella_mirror::sign_with(
        &m.bundle.join(names::MANIFEST),
        &m.bundle.join(names::ENVELOPE),
        &[&key],
        now,
        None,
        &NoProgress,
    )
    .expect("sign with the leaf key");
    let env =
        stella_dsse::Envelope::from_json(&std::fs::read(m.bundle.join(names::ENVELOPE)).unwrap())
            .expect("envelope");
    let keyless = m.bundle.join(names::KEYLESS);
    let write_keyless = |bundles: &[serde_json::Value]| {
        std::fs::write(&keyless, serde_json::to_vec(bundles).expect("json")).expect("write");
    };
    let good = sigstore.dsse_bundle(&leaf, &env.payload_type, &env.payload, now);
    write_keyless(std::slice::from_ref(&good));
    assert!(
        file_len(&keyless) > TEST_THRESHOLD,
        "the keyless file carries the manifest"
    );

    let dir = tempfile::tempdir().expect("tmp");
    std::fs::write(dir.path().join("root.json"), sigstore.trusted_root_json()).expect("root");
    std::fs::write(
        dir.path().join("ring.toml"),
        format!(
            "[[identities]]\nid = \"mirror-ci\"\ncertificate_identity = \"release@ops.example.com\"\n\
             certificate_oidc_issuer = \"{ISSUER}\"\ntrusted_root = \"root.json\"\npurposes = [\"mirror-bundle\"]\n"
        ),
    )
    .expect("ring");
    let ring =
        stella_keys::Keyring::load(&dir.path().join("ring.toml"), stella_keys::DevKeys::Refuse)
            .expect("keyring");
    let opts = VerifyOptions {
        keyring: &ring,
        threshold: 1,
        now,
        max_age: None,
        time_roots: None,
    };
    let streamed = |l: &StreamLimits| verify_dir_with(&m.bundle, &opts, l, &NoProgress);
    let in_memory = || verify_dir(&m.bundle, &opts, &NoProgress);

    let mem = in_memory().expect("in memory");
    for l in [small_limits(), on_disk()] {
        let s = streamed(&l).expect("streamed");
        assert_eq!(s.meta.signers, mem.meta.signers);
        assert_eq!(s.files_checked, mem.files_checked);
        assert_eq!(s.meta.manifest_digest, mem.meta.manifest_digest);
    }
    assert!(
        format!("{:?}", mem.meta.signers).contains("mirror-ci"),
        "{:?}",
        mem.meta.signers
    );
    // The object form (one bundle, not an array) too.
    std::fs::write(&keyless, serde_json::to_vec(&good).unwrap()).unwrap();
    streamed(&small_limits()).expect("one bundle as an object");

    // Through an archive whose metadata is spooled (the keyless entry is one of the files
    // that grow with the bundle).
    write_keyless(std::slice::from_ref(&good));
    let archive = dir.path().join("b.tar.zst");
    stella_mirror::pack(&m.bundle, &archive, 0, &NoProgress).expect("pack");
    let spooled = stella_mirror::ArchiveLimits {
        stream: small_limits(),
        ..Default::default()
    };
    let (obs, report) = stella_mirror::read_archive(&archive, None, spooled, &opts, &NoProgress)
        .expect("archive, spooled");
    assert!(obs.index.is_some(), "spooled");
    assert_eq!(report.meta.signers, mem.meta.signers);

    // The detached header with the keyless signatures beside its payload: the payload held,
    // or streamed with the keyless file read as a stream; the same signers.
    let header = std::fs::read(m.bundle.join(names::HEADER)).expect("header");
    let payload = m.bundle.join(names::MANIFEST);
    let header_in_memory = || {
        stella_mirror::verify_header_with_keyless(
            &header,
            &std::fs::read(&payload).expect("payload"),
            std::fs::read(&keyless).ok().as_deref(),
            &opts,
        )
    };
    let header_streamed = |l: &StreamLimits| {
        let k = stella_mirror::open_keyless_beside(&payload).expect("open");
        stella_mirror::verify_header_file_with(
            &header,
            &payload,
            k.as_ref().map(stella_mirror::KeylessInput::File),
            &opts,
            l,
        )
    };
    let h = header_in_memory().expect("header in memory");
    for l in [small_limits(), on_disk()] {
        assert_eq!(
            header_streamed(&l).expect("header streamed").signers,
            h.signers
        );
    }

    // Each refusal, as in memory: the same stage, the same words, for the folder and for the
    // detached header.
    let same_refusal = |what: &str, fragment: &str| {
        let (stage, msg) = stage_of(in_memory());
        let header_msg = header_in_memory().expect_err("header refused").to_string();
        for l in [small_limits(), on_disk()] {
            let (s, streamed_msg) = stage_of(streamed(&l));
            assert_eq!(s, stage, "{what}: {streamed_msg}");
            assert_eq!(
                without_position((s, streamed_msg)).1,
                without_position((stage, msg.clone())).1,
                "{what}"
            );
            let e = header_streamed(&l).expect_err("header streamed refused");
            assert_eq!(e.to_string(), header_msg, "{what}");
        }
        assert!(msg.contains(fragment), "{what}: {msg}");
        assert!(header_msg.contains(fragment), "{what}: {header_msg}");
    };
    // A payload one byte off, the same length; a payload type other than the envelope's.
    let mut off = env.payload.clone();
    let mid = off.len() / 2;
    off[mid] ^= 0x20;
    write_keyless(&[sigstore.dsse_bundle(&leaf, &env.payload_type, &off, now)]);
    same_refusal(
        "payload",
        "bundle 0 does not sign the manifest of manifest.dsse",
    );
    write_keyless(&[sigstore.dsse_bundle(&leaf, "application/x", &env.payload, now)]);
    same_refusal("payload type", "does not sign the manifest");
    let mut longer = env.payload.clone();
    longer.push(b' ');
    write_keyless(&[
        good.clone(),
        sigstore.dsse_bundle(&leaf, &env.payload_type, &longer, now),
    ]);
    same_refusal("second bundle", "bundle 1 does not sign the manifest");
    // A message signature is not a signature of the manifest.
    write_keyless(&[sigstore.message_bundle(&leaf, &env.payload, now)]);
    same_refusal("message signature", "bundle 0 does not sign the manifest");
    // The bundle's signature changed (the log entry then records another): refused, and the
    // threshold then fails naming why.
    let mut forged = good.clone();
    let mut sig = stella_dsse::b64::decode(
        forged["dsseEnvelope"]["signatures"][0]["sig"]
            .as_str()
            .unwrap(),
    )
    .unwrap();
    let last = sig.len() - 1;
    sig[last] ^= 1;
    forged["dsseEnvelope"]["signatures"][0]["sig"] = stella_dsse::b64::encode(&sig).into();
    write_keyless(&[forged]);
    same_refusal(
        "signature",
        "keyless signatures (manifest.sigstore.json) refused: bundle 0",
    );
    // Another identity: refused by the entry.
    let mallory = sigstore.issue(&LeafSpec::email("mallory@example.com", ISSUER, now));
    write_keyless(&[sigstore.dsse_bundle(&mallory, &env.payload_type, &env.payload, now)]);
    same_refusal("identity", "refused: bundle 0");
    // Seventeen bundles; none.
    write_keyless(&vec![good.clone(); 17]);
    let (stage, msg) = stage_of(streamed(&small_limits()));
    assert!(
        msg.contains("manifest.sigstore.json") && msg.contains("16"),
        "{stage:?} {msg}"
    );
    assert_eq!(stage_of(in_memory()).0, stage);
    write_keyless(&[]);
    same_refusal("empty", "0 Sigstore bundles");
    // Two payloads in one envelope: which one a parser keeps is not for us to guess.
    let text = serde_json::to_string(std::slice::from_ref(&good)).unwrap();
    let twice = text.replacen("\"payload\":", "\"payload\":\"e30=\",\"payload\":", 1);
    std::fs::write(&keyless, &twice).unwrap();
    let (_, msg) = stage_of(streamed(&small_limits()));
    assert!(msg.contains("duplicate member `payload`"), "{msg}");
    // Larger than sixteen bundles of this manifest can be: refused on its size, unread.
    let f = std::fs::File::create(&keyless).unwrap();
    f.set_len(16 * file_len(&m.bundle.join(names::ENVELOPE)) + (64 << 20))
        .unwrap();
    drop(f);
    let (_, msg) = stage_of(streamed(&small_limits()));
    assert!(
        msg.contains("above the") && msg.contains("bundles of this manifest"),
        "{msg}"
    );

    // Back to the good bundle: verified again on every path.
    write_keyless(&[good]);
    streamed(&on_disk()).expect("streamed again");
    in_memory().expect("in memory again");
}
