//! Archives of big bundles (issue #15): `pack`, the archive stream reader, `unpack` and thin
//! `diff` with the metadata spooled instead of held in memory, taken here with a small
//! injected threshold (64 KiB) so that a 1,500-file bundle is "big". The spooled path must
//! accept what the in-memory path accepts, refuse what it refuses with the same stage and
//! message, and leave nothing behind when it refuses.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use stella_mirror::{
    names, read_archive, read_stream, verify_dir, ArchiveLimits, Error, ErrorKind, NoProgress,
    VerifyOptions,
};

use crate::common::Signed;

const TEST_THRESHOLD: u64 = 64 * 1024;

fn small() -> stella_mirror::StreamLimits {
    stella_mirror::StreamLimits {
        stream_above: TEST_THRESHOLD,
        ..Default::default()
    }
}

fn spooled() -> ArchiveLimits {
    ArchiveLimits {
        stream: small(),
        ..ArchiveLimits::default()
    }
}

/// A signed bundle of `n` small advisory files (its manifest is above the test threshold
/// from some 400 files on).
fn many(n: usize) -> Signed {
    Signed::from_spec(
        "name: many\nversion: '1'\nissuer: i@example.org\nadvisories:\n  - path: feeds\n",
        |src| {
            crate::common::write_feed(src, n);
        },
    )
}

/// Every regular file under `dir`, bundle-relative, sorted.
fn files(dir: &Path) -> Vec<String> {
    fn walk(root: &Path, dir: &Path, out: &mut Vec<String>) {
        for e in std::fs::read_dir(dir).expect("read_dir") {
            let p = e.expect("entry").path();
            if p.is_dir() {
                walk(root, &p, out);
            } else {
                let rel = p.strip_prefix(root).expect("under root");
                out.push(rel.to_string_lossy().replace('\\', "/"));
            }
        }
    }
    let mut out = Vec::new();
    walk(dir, dir, &mut out);
    out.sort();
    out
}

/// A tar stream built entry by entry, with any name and type (hostile ones included).
#[derive(Default)]
struct Tar(Vec<u8>);

impl Tar {
    fn entry(&mut self, name: &[u8], kind: tar::EntryType, data: &[u8]) -> &mut Self {
        let mut h = tar::Header::new_ustar();
        h.as_ustar_mut().expect("ustar").name[..name.len()].copy_from_slice(name);
        h.set_size(data.len() as u64);
        h.set_mode(0o644);
        h.set_entry_type(kind);
        if kind.is_symlink() || kind.is_hard_link() {
            h.set_link_name("manifest.json").expect("link name");
        }
        h.set_cksum();
        self.0.extend_from_slice(h.as_bytes());
        self.0.extend_from_slice(data);
        self.0
            .resize(self.0.len() + (512 - data.len() % 512) % 512, 0);
        self
    }

    fn file(&mut self, name: &str, data: &[u8]) -> &mut Self {
        self.entry(name.as_bytes(), tar::EntryType::Regular, data)
    }

    /// The metadata files of `bundle` in pack order, but `skip`.
    fn metadata(&mut self, bundle: &Path, skip: &[&str]) -> &mut Self {
        for name in names::METADATA {
            let p = bundle.join(name);
            if p.is_file() && !skip.contains(&name) {
                self.file(name, &std::fs::read(&p).expect("read"));
            }
        }
        self
    }

    /// The content files of `bundle`, sorted, but `skip`.
    fn content(&mut self, bundle: &Path, skip: &[&str]) -> &mut Self {
        for p in files(bundle) {
            if !names::is_metadata(&p) && !skip.contains(&p.as_str()) {
                self.file(&p, &std::fs::read(bundle.join(&p)).expect("read"));
            }
        }
        self
    }

    fn finish(&mut self) -> Vec<u8> {
        let mut out = std::mem::take(&mut self.0);
        out.extend_from_slice(&[0; 1024]);
        out
    }
}

fn read(bytes: Vec<u8>, limits: ArchiveLimits, opts: &VerifyOptions<'_>) -> Result<(), Error> {
    read_stream(std::io::Cursor::new(bytes), None, limits, opts, &NoProgress).map(|_| ())
}

/// A refusal's stage, field and message.
fn refusal(r: Result<(), Error>, what: &str) -> (String, String, String) {
    let e = r.expect_err(what);
    assert_eq!(e.kind(), ErrorKind::Verification, "{what}: {e}");
    (
        format!("{:?}", e.stage()),
        format!("{:?}", e.field()),
        e.to_string(),
    )
}

#[test]
fn a_big_bundle_packs_verifies_and_unpacks_with_its_metadata_spooled() {
    let s = many(1500);
    let bundle = s.bundle();
    assert!(
        std::fs::metadata(bundle.join(names::MANIFEST))
            .expect("manifest")
            .len()
            > TEST_THRESHOLD
    );
    let folder = verify_dir(&bundle, &s.opts(), &NoProgress).expect("folder verifies");

    // pack: the streamed file list gives the same bytes as the in-memory one.
    let streamed_zst = s.dir.path().join("s.tar.zst");
    let memory_zst = s.dir.path().join("m.tar.zst");
    let p = stella_mirror::pack_with(&bundle, &streamed_zst, 0, &small(), &NoProgress)
        .expect("pack streamed");
    stella_mirror::pack(&bundle, &memory_zst, 0, &NoProgress).expect("pack in memory");
    assert_eq!(
        std::fs::read(&streamed_zst).expect("s"),
        std::fs::read(&memory_zst).expect("m")
    );
    assert_eq!(p.entries, files(&bundle).len());

    // The stream, both ways: the same verdict.
    let (obs, r) =
        read_archive(&streamed_zst, None, spooled(), &s.opts(), &NoProgress).expect("spooled read");
    let index = obs
        .index
        .expect("the spooled path keeps the signed file list");
    assert_eq!(index.len(), folder.meta.manifest.files.len());
    assert!(obs.files.is_empty(), "no per-file map on the spooled path");
    assert!(r.meta.manifest.files.is_empty());
    assert_eq!(r.files_checked, folder.files_checked);
    assert_eq!(r.bytes_checked, folder.bytes_checked);
    assert_eq!(r.meta.manifest_digest, folder.meta.manifest_digest);
    let (obs, m) = read_archive(
        &streamed_zst,
        None,
        ArchiveLimits::default(),
        &s.opts(),
        &NoProgress,
    )
    .expect("in-memory read");
    assert!(obs.index.is_none());
    assert_eq!(m.files_checked, r.files_checked);

    // unpack: a folder that verifies again, scripts executable.
    let dest = s.dir.path().join("site");
    stella_mirror::unpack(&streamed_zst, &dest, spooled(), &s.opts(), &NoProgress)
        .expect("unpack spooled");
    let again = verify_dir(&dest, &s.opts(), &NoProgress).expect("unpacked verifies");
    assert_eq!(again.files_checked, folder.files_checked);
    use std::os::unix::fs::PermissionsExt as _;
    let mode = std::fs::metadata(dest.join("scripts/load.sh"))
        .expect("load.sh")
        .permissions()
        .mode();
    assert_eq!(mode & 0o777, 0o755);
    assert_eq!(files(&dest), files(&bundle));
}

#[test]
fn pack_refuses_unlisted_and_missing_files_with_a_streamed_file_list() {
    let s = many(600);
    let bundle = s.bundle();
    let out = s.dir.path().join("x.tar.gz");
    std::fs::write(bundle.join("advisories/evil.sh"), b"x").expect("plant");
    let e =
        stella_mirror::pack_with(&bundle, &out, 0, &small(), &NoProgress).expect_err("unlisted");
    assert!(
        e.to_string().contains("unlisted file advisories/evil.sh"),
        "{e}"
    );
    std::fs::remove_file(bundle.join("advisories/evil.sh")).expect("rm");
    let victim = files(&bundle)
        .into_iter()
        .find(|p| p.starts_with("advisories/") && p.contains("OSV-"))
        .expect("a feed file");
    std::fs::remove_file(bundle.join(&victim)).expect("rm");
    let e = stella_mirror::pack_with(&bundle, &out, 0, &small(), &NoProgress).expect_err("missing");
    assert!(
        e.to_string().contains(&format!("file {victim} is missing")),
        "{e}"
    );
    assert!(!out.exists());
    // A manifest over the streamed cap is refused on its size.
    let tiny = stella_mirror::StreamLimits {
        stream_above: 1024,
        max_manifest: 2048,
        ..Default::default()
    };
    let e = stella_mirror::pack_with(&bundle, &out, 0, &tiny, &NoProgress).expect_err("over cap");
    assert!(e.to_string().contains("above the 2048-byte limit"), "{e}");
}

/// The attack cases of `tests/attacks/`, as archives: the in-memory and the spooled reader
/// refuse each at the same stage and field with the same message.
#[test]
fn every_attack_is_refused_alike_on_both_archive_paths() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/attacks");
    let mut cases: Vec<PathBuf> = std::fs::read_dir(&root)
        .expect("attacks")
        .map(|e| e.expect("entry").path())
        .filter(|p| p.is_dir())
        .collect();
    cases.sort();
    assert!(cases.len() >= 8);
    let all = stella_mirror::StreamLimits {
        stream_above: 0,
        ..Default::default()
    };
    for case in cases {
        let name = case
            .file_name()
            .expect("name")
            .to_string_lossy()
            .into_owned();
        let s = Signed::new();
        let bundle = s.bundle();
        if case.join("files").is_dir() {
            for p in files(&case.join("files")) {
                let dest = bundle.join(&p);
                std::fs::create_dir_all(dest.parent().expect("parent")).expect("mkdir");
                std::fs::copy(case.join("files").join(&p), &dest).expect("copy");
            }
        }
        if let Ok(list) = std::fs::read_to_string(case.join("remove")) {
            for p in list.lines().filter(|l| !l.trim().is_empty()) {
                std::fs::remove_file(bundle.join(p.trim())).expect("remove");
            }
        }
        let bytes = Tar::default()
            .metadata(&bundle, &[])
            .content(&bundle, &[])
            .finish();
        let memory = refusal(
            read(bytes.clone(), ArchiveLimits::default(), &s.opts()),
            &name,
        );
        let spool = refusal(
            read(
                bytes,
                ArchiveLimits {
                    stream: all,
                    ..ArchiveLimits::default()
                },
                &s.opts(),
            ),
            &name,
        );
        assert_eq!(memory, spool, "{name}");
    }
}

/// What is left beside an unpack's destination (nothing but the archive, after a refusal).
fn leftovers(dir: &Path) -> Vec<String> {
    let mut v: Vec<String> = std::fs::read_dir(dir)
        .expect("read_dir")
        .map(|e| e.expect("entry").file_name().to_string_lossy().into_owned())
        .filter(|n| n != "x.tar")
        .collect();
    v.sort();
    v
}

#[test]
fn hostile_archives_are_refused_on_the_spooled_path_and_leave_nothing_behind() {
    let s = many(600);
    let bundle = s.bundle();
    let content = files(&bundle)
        .into_iter()
        .filter(|p| !names::is_metadata(p))
        .collect::<Vec<_>>();
    let first = content[0].clone();
    let first_bytes = std::fs::read(bundle.join(&first)).expect("read");
    let meta = || {
        let mut t = Tar::default();
        t.metadata(&bundle, &[]);
        t
    };
    type Build<'a> = Box<dyn Fn() -> Vec<u8> + 'a>;
    let reg = tar::EntryType::Regular;
    let cases: Vec<(&str, Build<'_>, String)> = vec![
        (
            "traversal",
            Box::new(|| meta().entry(b"advisories/../../evil", reg, b"x").finish()),
            "unsafe path refused".into(),
        ),
        (
            "absolute",
            Box::new(|| meta().entry(b"/etc/evil", reg, b"x").finish()),
            "absolute path refused".into(),
        ),
        (
            "symlink",
            Box::new(|| {
                meta()
                    .entry(b"advisories/l", tar::EntryType::Symlink, b"")
                    .finish()
            }),
            "is a symbolic link".into(),
        ),
        (
            "hard link",
            Box::new(|| {
                meta()
                    .entry(b"advisories/l", tar::EntryType::Link, b"")
                    .finish()
            }),
            "is a hard link".into(),
        ),
        (
            "device",
            Box::new(|| {
                meta()
                    .entry(b"advisories/d", tar::EntryType::Char, b"")
                    .finish()
            }),
            "is a device or FIFO".into(),
        ),
        (
            "duplicate content",
            Box::new(|| {
                meta()
                    .content(&bundle, &[])
                    .file(&first, &first_bytes)
                    .finish()
            }),
            format!("duplicate entry {first:?}"),
        ),
        (
            "duplicate metadata",
            Box::new(|| {
                let sums = std::fs::read(bundle.join(names::SUMS)).expect("sums");
                meta().file(names::SUMS, &sums).finish()
            }),
            "duplicate entry \"SHA256SUMS\"".into(),
        ),
        (
            "unlisted",
            Box::new(|| meta().file("advisories/evil.sh", b"x").finish()),
            "unlisted entry \"advisories/evil.sh\"".into(),
        ),
        (
            "tampered",
            Box::new(|| {
                let mut bad = first_bytes.clone();
                bad[0] ^= 1;
                meta().file(&first, &bad).finish()
            }),
            format!("file {first} changed"),
        ),
        (
            "missing",
            Box::new(|| meta().content(&bundle, &[first.as_str()]).finish()),
            format!("file {first} is missing"),
        ),
        (
            "truncated",
            Box::new(|| {
                // Cut one byte into the data of the last entry.
                let last = content.last().expect("a file").as_str();
                let mut t = meta();
                t.content(&bundle, &[last]);
                let cut = t.0.len() + 512 + 1;
                let data = std::fs::read(bundle.join(last)).expect("read");
                let mut b = t.file(last, &data).finish();
                b.truncate(cut);
                b
            }),
            "truncated".into(),
        ),
        (
            "metadata after content",
            Box::new(|| {
                let key = std::fs::read(bundle.join(names::PUBLIC_KEY)).expect("key");
                let mut t = Tar::default();
                t.metadata(&bundle, &[names::PUBLIC_KEY])
                    .file(&first, &first_bytes)
                    .file(names::PUBLIC_KEY, &key)
                    .finish()
            }),
            "comes after content entries".into(),
        ),
        (
            "content first",
            Box::new(|| {
                Tar::default()
                    .file(&first, &first_bytes)
                    .metadata(&bundle, &[])
                    .finish()
            }),
            "comes before manifest.dsse".into(),
        ),
        (
            "metadata too big",
            Box::new(|| {
                let mut t = Tar::default();
                t.metadata(&bundle, &[names::MANIFEST, names::HEADER, names::SUMS]);
                t.file(names::MANIFEST, &vec![b' '; 200 * 1024]).finish()
            }),
            "above the 131072-byte limit for bundle metadata (oversize entry)".into(),
        ),
    ];
    let limits = ArchiveLimits {
        stream: stella_mirror::StreamLimits {
            stream_above: TEST_THRESHOLD,
            max_manifest: 128 * 1024,
            max_sums: 1 << 30,
            ..stella_mirror::StreamLimits::default()
        },
        ..ArchiveLimits::default()
    };
    // The honest metadata fits those caps; only "metadata too big" goes over.
    assert!(
        std::fs::metadata(bundle.join(names::MANIFEST))
            .expect("m")
            .len()
            < 128 * 1024
    );
    for (what, build, needle) in cases {
        let work = tempfile::tempdir().expect("tempdir");
        let archive = work.path().join("x.tar");
        std::fs::write(&archive, build()).expect("write");
        let dest = work.path().join("site");
        let e =
            stella_mirror::unpack(&archive, &dest, limits, &s.opts(), &NoProgress).expect_err(what);
        assert_eq!(e.kind(), ErrorKind::Verification, "{what}: {e}");
        assert!(e.to_string().contains(&needle), "{what}: {e}");
        assert!(!dest.exists(), "{what}: the destination was created");
        assert_eq!(leftovers(work.path()), Vec::<String>::new(), "{what}");
        // Verifying the stream alone refuses it the same way.
        let e = read(std::fs::read(&archive).expect("read"), limits, &s.opts()).expect_err(what);
        assert!(e.to_string().contains(&needle), "{what} (verify): {e}");
    }
}

/// A reader that counts what was taken from it.
struct Counted {
    inner: std::io::Cursor<Vec<u8>>,
    taken: Arc<AtomicU64>,
}

impl std::io::Read for Counted {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.taken.fetch_add(n as u64, Ordering::Relaxed);
        Ok(n)
    }
}

#[test]
fn oversize_spooled_metadata_is_refused_before_it_is_read() {
    let s = Signed::new();
    let limits = ArchiveLimits {
        stream: stella_mirror::StreamLimits {
            stream_above: 1024,
            max_manifest: 1 << 20,
            max_sums: 1 << 20,
            ..stella_mirror::StreamLimits::default()
        },
        ..ArchiveLimits::default()
    };
    for (name, size) in [
        (names::ENVELOPE, (4 << 20) / 3 + (64 << 10) + 1),
        (names::MANIFEST, (1 << 20) + 1),
        (names::SUMS, (1 << 20) + 1),
        (names::HEADER, stella_mirror::MAX_METADATA_BYTES + 1),
    ] {
        // A header announcing `size` bytes over a stream of 4 MiB: refused on the header.
        let mut h = tar::Header::new_ustar();
        h.set_path(name).expect("path");
        h.set_size(size);
        h.set_mode(0o644);
        h.set_entry_type(tar::EntryType::Regular);
        h.set_cksum();
        let mut bytes = h.as_bytes().to_vec();
        bytes.resize(bytes.len() + (4 << 20), b' ');
        let taken = Arc::new(AtomicU64::new(0));
        let r = read_stream(
            Counted {
                inner: std::io::Cursor::new(bytes),
                taken: Arc::clone(&taken),
            },
            None,
            limits,
            &s.opts(),
            &NoProgress,
        );
        let e = r.map(|_| ()).expect_err(name);
        assert!(
            e.to_string()
                .contains("limit for bundle metadata (oversize entry)"),
            "{name}: {e}"
        );
        assert!(
            taken.load(Ordering::Relaxed) < 256 * 1024,
            "{name}: read {} bytes",
            taken.load(Ordering::Relaxed)
        );
    }
}

#[test]
fn thin_diff_over_streamed_file_lists_is_the_in_memory_diff() {
    let s = many(600);
    let a_path = s.bundle().join(names::MANIFEST);
    let a = stella_mirror::Manifest::from_json(&std::fs::read(&a_path).expect("read"))
        .expect("manifest");
    // B: one file removed, one changed, one added (the list stays sorted).
    let mut b = a.clone();
    b.files.remove(3);
    b.files[10].sha256 = stella_digest::Digest::sha256([0xab; 32]);
    b.files[10].size += 1;
    let mut added = b.files[20].clone();
    added.path = format!("{}.new", added.path).parse().expect("path");
    b.files.insert(21, added);
    let b_path = s.dir.path().join("b.json");
    std::fs::write(&b_path, b.to_canonical_json()).expect("write");
    let want = serde_json::to_value(stella_mirror::diff(&a, &b)).expect("json");
    assert_eq!(want["added"].as_array().map(Vec::len), Some(1));
    assert_eq!(want["changed"].as_array().map(Vec::len), Some(1));
    assert_eq!(want["removed"].as_array().map(Vec::len), Some(1));
    for limits in [small(), stella_mirror::StreamLimits::default()] {
        let (am, ai, ad) = stella_mirror::read_file_list(&a_path, &limits).expect("a");
        let (bm, bi, _) = stella_mirror::read_file_list(&b_path, &limits).expect("b");
        assert!(am.files.is_empty() && bm.files.is_empty());
        assert_eq!(ai.len(), a.files.len());
        assert_eq!(
            ad,
            stella_mirror::Digest::of(&std::fs::read(&a_path).expect("read"))
        );
        let got = stella_mirror::diff_indexed(&am, &ai, &bm, &bi);
        assert_eq!(serde_json::to_value(got).expect("json"), want);
        // Read as two streams at once, merged as they come: the same diff and manifests.
        let (sm, sn, got) =
            stella_mirror::diff_manifest_files(&a_path, &b_path, &limits).expect("diff");
        assert_eq!(serde_json::to_value(got).expect("json"), want);
        assert_eq!(
            (sm.generation, sn.generation),
            (am.generation, bm.generation)
        );
        assert!(sm.files.is_empty() && sn.files.is_empty());
    }
    // A malformed manifest is refused by the streamed diff as `read_file_list` refuses it,
    // whichever side it is on; when both are malformed, the old side's error wins.
    let bad_path = s.dir.path().join("bad.json");
    let other_bad = s.dir.path().join("other-bad.json");
    std::fs::write(&other_bad, b"not json").expect("write");
    let thin_removed = {
        // A thin manifest listing a file it also removes.
        let mut t = b.clone();
        t.kind = stella_mirror::Kind::Thin;
        t.generation = a.generation + 1;
        t.base = Some(stella_mirror::BaseRef {
            bundle: a.bundle.clone(),
            version: a.version.clone(),
            generation: a.generation,
            manifest_digest: stella_mirror::Digest::of(b"base"),
        });
        t.removed = vec![t.files[5].path.clone()];
        t.to_canonical_json()
    };
    let unsorted = {
        let mut t = b.clone();
        t.files.swap(7, 8);
        t.to_canonical_json()
    };
    let cases = [
        (thin_removed, b.files[5].path.to_string()),
        (unsorted, b.files[7].path.to_string()),
        (vec![b'['; 100 * 1024], String::new()),
    ];
    for (bytes, names) in cases {
        std::fs::write(&bad_path, &bytes).expect("write");
        for limits in [small(), stella_mirror::StreamLimits::default()] {
            let want = stella_mirror::read_file_list(&bad_path, &limits)
                .expect_err("malformed")
                .to_string();
            assert!(want.contains(&names), "{want}");
            let e = stella_mirror::diff_manifest_files(&a_path, &bad_path, &limits)
                .expect_err("new malformed");
            assert_eq!(e.to_string(), want);
            let e = stella_mirror::diff_manifest_files(&bad_path, &a_path, &limits)
                .expect_err("old malformed");
            assert_eq!(e.to_string(), want);
            let e = stella_mirror::diff_manifest_files(&bad_path, &other_bad, &limits)
                .expect_err("both malformed");
            assert_eq!(e.to_string(), want);
        }
    }
    let missing = s.dir.path().join("missing.json");
    let e = stella_mirror::diff_manifest_files(&a_path, &missing, &small()).expect_err("missing");
    assert!(matches!(&e, Error::NotFound(p) if *p == missing), "{e}");
    // An archive where a manifest is expected is named as one (it was "expected value at
    // line 1 column 1"), whatever its name and on either side.
    // (`b.json`: a zstd archive under a manifest's name, known by its magic.)
    for (packed_as, name) in [
        ("b.tar.zst", "b.tar.zst"),
        ("b.tar.gz", "b.tar.gz"),
        ("b.tar.zst", "b.json"),
    ] {
        let packed = s.dir.path().join(packed_as);
        let as_named = s.dir.path().join(name);
        stella_mirror::pack(&s.bundle(), &packed, 0, &NoProgress).expect("pack");
        std::fs::rename(&packed, &as_named).expect("rename");
        for (old, new) in [(&as_named, &a_path), (&a_path, &as_named)] {
            let e = stella_mirror::diff_manifest_files(old, new, &small()).expect_err(name);
            assert!(
                e.to_string().contains(
                    "a bundle archive; diff compares bundle folders or manifest.json files"
                ),
                "{name}: {e}"
            );
            assert_eq!(e.kind(), ErrorKind::Input, "{name}");
        }
        std::fs::remove_file(&as_named).expect("rm");
    }
    // A file list that is not a manifest is an input error on both paths.
    std::fs::write(&b_path, vec![b'['; 100 * 1024]).expect("write");
    for limits in [small(), stella_mirror::StreamLimits::default()] {
        let e = stella_mirror::read_file_list(&b_path, &limits).expect_err("garbage");
        assert_eq!(e.kind(), ErrorKind::Input, "{e}");
    }
}

/// An archive whose metadata entries are each below the per-entry threshold but together above
/// the in-memory total is spooled and verifies (it was refused: "the metadata entries exceed
/// 67108864 bytes in all"), with the report of the folder; unpacked, the same files.
#[test]
fn metadata_entries_above_the_in_memory_total_are_spooled() {
    let s = many(1500);
    let bundle = s.bundle();
    let total: u64 = names::METADATA
        .iter()
        .filter_map(|n| std::fs::metadata(bundle.join(n)).ok())
        .map(|md| md.len())
        .sum();
    let tmp = tempfile::tempdir().expect("tmp");
    let archive = tmp.path().join("b.tar.zst");
    stella_mirror::pack(&bundle, &archive, 0, &NoProgress).expect("pack");
    let within = |metadata_total: u64| ArchiveLimits {
        stream: stella_mirror::StreamLimits {
            stream_above: u64::MAX,
            metadata_total,
            ..Default::default()
        },
        ..ArchiveLimits::default()
    };
    let folder = verify_dir(&bundle, &s.opts(), &NoProgress).expect("folder");
    let (obs, report) = read_archive(&archive, None, within(total - 1), &s.opts(), &NoProgress)
        .expect("above the total: spooled");
    assert!(obs.index.is_some(), "spooled: the signed list as an index");
    assert_eq!(report.files_checked, folder.files_checked);
    assert_eq!(report.bytes_checked, folder.bytes_checked);
    assert_eq!(report.meta.manifest_digest, folder.meta.manifest_digest);
    let (obs, _) = read_archive(&archive, None, within(total), &s.opts(), &NoProgress)
        .expect("at the total: in memory");
    assert!(obs.index.is_none(), "in memory");
    let dest = tmp.path().join("out");
    stella_mirror::unpack(&archive, &dest, within(total - 1), &s.opts(), &NoProgress)
        .expect("unpack");
    assert_eq!(files(&dest), files(&bundle));
}
