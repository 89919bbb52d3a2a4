//! One verification path (issue #10 item 2): `verify`, `unpack`, `apply` and `load` all go
//! through `Source::verify`; each command's constructor classifies a path as before, and the
//! output mode decides what is left on disk and what the caller hashes itself.

use std::collections::HashSet;
use std::path::{Path, PathBuf};

use stella_mirror::{
    names, ArchiveLimits, Error, ErrorKind, NoProgress, Output, Source, SourceReport,
};

use crate::common::Signed;

/// The entries of `dir`, sorted (what a command left beside its input or output).
fn entries(dir: &Path) -> Vec<String> {
    let mut v: Vec<String> = std::fs::read_dir(dir)
        .expect("read_dir")
        .map(|e| e.expect("entry").file_name().to_string_lossy().into_owned())
        .collect();
    v.sort();
    v
}

/// A tar entry, any name (hostile ones included), padded to its block.
fn tar_entry(out: &mut Vec<u8>, name: &[u8], data: &[u8]) {
    let mut h = tar::Header::new_ustar();
    h.as_ustar_mut().expect("ustar").name[..name.len()].copy_from_slice(name);
    h.set_size(data.len() as u64);
    h.set_mode(0o644);
    h.set_entry_type(tar::EntryType::Regular);
    h.set_cksum();
    out.extend_from_slice(h.as_bytes());
    out.extend_from_slice(data);
    out.resize(out.len() + (512 - data.len() % 512) % 512, 0);
}

/// The bundle's metadata as `pack` writes it, then a content entry escaping the folder.
fn traversal_archive(s: &Signed, at: &Path) {
    let mut t = Vec::new();
    for name in names::METADATA {
        let p = s.bundle().join(name);
        if p.is_file() {
            tar_entry(&mut t, name.as_bytes(), &std::fs::read(&p).expect("read"));
        }
    }
    tar_entry(&mut t, b"advisories/../../evil", b"x");
    t.extend_from_slice(&[0; 1024]);
    std::fs::write(at, t).expect("write archive");
}

fn mode(p: &Path) -> u32 {
    use std::os::unix::fs::PermissionsExt as _;
    std::fs::metadata(p).expect("metadata").permissions().mode() & 0o777
}

fn kind(s: Result<Source<'_>, Error>) -> String {
    match s {
        Ok(Source::Folder(_)) => "folder".into(),
        Ok(Source::Envelope(_)) => "envelope".into(),
        Ok(Source::Archive(_)) => "archive".into(),
        Err(e) if e.kind() == ErrorKind::NotFound => "not found".into(),
        Err(e) if e.kind() == ErrorKind::Input && e.to_string().contains("not a bundle") => {
            "not a bundle".into()
        }
        Err(e) => format!("error: {e}"),
    }
}

#[test]
fn each_command_classifies_its_input_as_before() {
    let s = Signed::new();
    let b = s.bundle();
    let own = b.join(names::ENVELOPE);
    let detached = s.dir.path().join("release.dsse");
    std::fs::copy(&own, &detached).expect("copy");
    let named = s.dir.path().join("b.tar.zst");
    stella_mirror::pack(&b, &named, 0, &NoProgress).expect("pack");
    let unnamed = s.dir.path().join("bundle.bin");
    std::fs::copy(&named, &unnamed).expect("copy");
    let missing = s.dir.path().join("missing.tar.zst");
    let device = Path::new("/dev/null"); // exists, neither a folder nor a regular file
    let gz = s.dir.path().join("bundle.gz.bin");
    let packed = s.dir.path().join("b.tar.gz");
    stella_mirror::pack(&b, &packed, 0, &NoProgress).expect("pack gz");
    std::fs::rename(&packed, &gz).expect("rename");
    let plain = s.dir.path().join("plain.bin");
    let mut dec = Vec::new();
    std::io::copy(
        &mut zstd::stream::read::Decoder::new(std::fs::File::open(&named).expect("open"))
            .expect("zstd"),
        &mut dec,
    )
    .expect("decompress");
    std::fs::write(&plain, &dec).expect("plain tar");
    let text = s.dir.path().join("notes.txt");
    std::fs::write(&text, "hello").expect("text");
    let refused = "not a bundle";
    let cases: [(&Path, [&str; 4]); 10] = [
        // (input, [verify, unpack, apply, load])
        (&b, ["folder", "not found", "folder", "folder"]),
        (&own, ["envelope", "archive", "archive", "envelope"]),
        (&detached, [refused, "archive", "archive", "archive"]),
        (&named, ["archive", "archive", "archive", "archive"]),
        // Archives by their bytes, whatever their names: zstd, gzip, plain tar.
        (&unnamed, ["archive", "archive", "archive", "archive"]),
        (&gz, ["archive", "archive", "archive", "archive"]),
        (&plain, ["archive", "archive", "archive", "archive"]),
        (&text, [refused, "archive", "archive", "archive"]),
        (&missing, ["not found", "not found", "archive", "not found"]),
        (device, [refused, "not found", "archive", "not found"]),
    ];
    for (path, want) in cases {
        let got = [
            kind(Source::for_verify(path)),
            kind(Source::for_unpack(path)),
            kind(Ok(Source::for_apply(path))),
            kind(Source::for_load(path)),
        ];
        assert_eq!(got, want, "{}", path.display());
    }
    // The source names the path it was given.
    assert_eq!(Source::for_load(&own).expect("own"), Source::Envelope(&own));
    assert_eq!(
        Source::for_verify(&missing)
            .expect_err("missing")
            .to_string(),
        format!("{}: no such file or folder", missing.display())
    );
}

#[test]
fn verify_only_writes_nothing_and_each_form_gives_the_same_report() {
    let s = Signed::new();
    let b = s.bundle();
    let archive = s.dir.path().join("b.tar.gz");
    stella_mirror::pack(&b, &archive, 0, &NoProgress).expect("pack");
    let before = entries(s.dir.path());
    let own = b.join(names::ENVELOPE);
    let mut digests = Vec::new();
    for p in [&b, &own, &archive] {
        let source = Source::for_verify(p).expect("classified");
        let v = source
            .verify(
                &s.opts(),
                &ArchiveLimits::default(),
                Output::verify_only(),
                &NoProgress,
            )
            .unwrap_or_else(|e| panic!("{}: {e}", p.display()));
        let m = &v.report.meta.manifest;
        assert!(m.file("advisories/a.json").is_some());
        assert_eq!(v.report.files_checked, m.files.len(), "{}", p.display());
        assert_eq!(v.dir().map(Path::to_path_buf), source.folder());
        digests.push(v.report.meta.manifest_digest);
    }
    assert!(digests.windows(2).all(|w| w[0] == w[1]));
    assert_eq!(entries(s.dir.path()), before, "nothing written");
}

#[test]
fn an_archive_is_moved_into_place_or_kept_staged_while_the_result_lives() {
    let s = Signed::new();
    let archive = s.dir.path().join("b.tar.zst");
    stella_mirror::pack(&s.bundle(), &archive, 0, &NoProgress).expect("pack");
    let source = Source::for_unpack(&archive).expect("archive");

    let dest = s.dir.path().join("out");
    let v = source
        .verify(
            &s.opts(),
            &ArchiveLimits::default(),
            Output::moved_to(&dest),
            &NoProgress,
        )
        .expect("verified");
    assert_eq!(v.dir(), Some(dest.as_path()));
    drop(v);
    assert!(dest.join("advisories/a.json").is_file(), "moved into place");
    assert_eq!(mode(&dest), 0o755);
    assert_eq!(
        mode(&dest.join("scripts/verify.sh")),
        0o755,
        "scripts executable"
    );
    crate::common::verify_dir(&s, &dest).expect("the result verifies");

    let work = tempfile::tempdir().expect("work");
    let parent = work.path().join("not/yet");
    let v = source
        .verify(
            &s.opts(),
            &ArchiveLimits::default(),
            Output::staged_in(&parent, "thin"),
            &NoProgress,
        )
        .expect("verified");
    let staged: PathBuf = v.dir().expect("staged").to_path_buf();
    assert_eq!(staged.parent(), Some(parent.as_path()));
    assert!(staged
        .file_name()
        .expect("name")
        .to_string_lossy()
        .starts_with(".stella-thin-"));
    assert!(staged.join("advisories/b.json").is_file());
    assert_eq!(mode(&staged.join("scripts/load.sh")), 0o755);
    assert!(staged.join(names::MANIFEST).is_file());
    drop(v);
    assert!(entries(&parent).is_empty(), "removed with the result");
}

#[test]
fn deferring_leaves_only_a_folders_named_files_unhashed() {
    let s = Signed::new();
    let b = s.bundle();
    let archive = s.dir.path().join("b.tar.gz");
    stella_mirror::pack(&b, &archive, 0, &NoProgress).expect("pack");
    // Same size, other bytes: only hashing finds it.
    let victim = b.join("advisories/b.json");
    let mut bytes = std::fs::read(&victim).expect("read");
    bytes[0] ^= 1;
    std::fs::write(&victim, bytes).expect("write");
    let defer = |_: &Path, m: &stella_mirror::Manifest| -> HashSet<String> {
        assert!(m.file("advisories/b.json").is_some());
        HashSet::from(["advisories/b.json".to_string()])
    };
    let verify = |source: Source<'_>| {
        source.verify(
            &s.opts(),
            &ArchiveLimits::default(),
            Output::verify_only().deferring(defer),
            &NoProgress,
        )
    };
    for p in [b.clone(), b.join(names::ENVELOPE)] {
        let source = Source::for_load(&p).expect("classified");
        match verify(source).expect("deferred, so not hashed").report {
            SourceReport::PartlyHashed(r) => {
                assert_eq!(
                    r.deferred().iter().collect::<Vec<_>>(),
                    ["advisories/b.json"]
                );
            }
            SourceReport::Full(_) => panic!("{}: nothing deferred", p.display()),
        }
        // Without deferral the same folder is refused.
        let e = source
            .verify(
                &s.opts(),
                &ArchiveLimits::default(),
                Output::verify_only(),
                &NoProgress,
            )
            .expect_err("hashed");
        assert_eq!(e.kind(), ErrorKind::Verification, "{e}");
    }
    // A deferred file is still held to its listed size.
    let listed = std::fs::metadata(&victim).expect("stat").len();
    std::fs::write(&victim, vec![b'x'; listed as usize + 5]).expect("write");
    let e = verify(Source::for_load(&b).expect("classified")).expect_err("longer");
    assert!(
        e.to_string().contains(&format!(
            "file advisories/b.json changed: {} bytes",
            listed + 5
        )),
        "{e}"
    );
    // A detached envelope is not the folder's own: nothing is deferred, it is refused as
    // without deferral.
    let detached = b.join("release.dsse");
    std::fs::copy(b.join(names::ENVELOPE), &detached).expect("copy");
    let source = Source::Envelope(&detached);
    let deferred = verify(source).expect_err("refused").to_string();
    let whole = crate::common::verify(source, &s.opts(), &NoProgress)
        .expect_err("refused")
        .to_string();
    assert_eq!(deferred, whole);
    std::fs::remove_file(&detached).expect("rm");
    // An archive (packed before the change) hashes every file as it streams: a full report.
    match verify(Source::Archive(&archive)).expect("verified").report {
        SourceReport::Full(r) => assert_eq!(r.files_checked, r.meta.manifest.files.len()),
        SourceReport::PartlyHashed(_) => panic!("an archive deferred"),
    }
}

/// A hostile archive is refused by all four commands with the same error, and none leaves
/// anything behind: no destination, no staging folder, nothing in `load`'s work folder.
#[test]
fn a_traversal_archive_is_refused_alike_by_every_command_and_leaves_nothing() {
    let s = Signed::new();
    let area = tempfile::tempdir().expect("area");
    let archive = area.path().join("x.tar");
    traversal_archive(&s, &archive);
    let onto = area.path().join("onto");
    std::fs::create_dir(&onto).expect("onto");
    let work = area.path().join("work");
    std::fs::create_dir(&work).expect("work");
    let opts = s.opts();

    let verify = Source::for_verify(&archive)
        .expect("archive")
        .verify(
            &opts,
            &ArchiveLimits::default(),
            Output::verify_only(),
            &NoProgress,
        )
        .map(|_| ());
    let unpack = stella_mirror::unpack(
        &archive,
        &area.path().join("out"),
        ArchiveLimits::default(),
        &opts,
        &NoProgress,
    )
    .map(|_| ());
    let apply = stella_mirror::apply(
        &archive,
        &onto,
        Some(&area.path().join("applied")),
        &opts,
        &NoProgress,
    )
    .map(|_| ());
    let mut lo = stella_mirror::LoadOptions::new("127.0.0.1:9");
    lo.work_dir = Some(work.clone());
    let load = stella_mirror::load(&archive, &opts, &lo, &NoProgress).map(|_| ());

    let mut messages = Vec::new();
    for (what, r) in [
        ("verify", verify),
        ("unpack", unpack),
        ("apply", apply),
        ("load", load),
    ] {
        let e = r.expect_err(what);
        assert!(e.to_string().contains("unsafe path refused"), "{what}: {e}");
        messages.push(e.to_string());
    }
    assert!(messages.windows(2).all(|w| w[0] == w[1]), "{messages:?}");
    assert_eq!(entries(area.path()), ["onto", "work", "x.tar"]);
    assert!(entries(&onto).is_empty());
    assert!(entries(&work).is_empty(), "load left its work folder empty");
}

#[test]
fn load_verifies_every_form_through_the_source_and_refuses_what_it_did() {
    let s = Signed::new();
    let b = s.bundle();
    let archive = s.dir.path().join("b.tar.zst");
    stella_mirror::pack(&b, &archive, 0, &NoProgress).expect("pack");
    let work = tempfile::tempdir().expect("work");
    let mut lo = stella_mirror::LoadOptions::new("127.0.0.1:9");
    lo.work_dir = Some(work.path().to_path_buf());
    // No images: nothing to push, so no registry is contacted.
    for (p, from_archive) in [
        (&b, false),
        (&b.join(names::ENVELOPE), false),
        (&archive, true),
    ] {
        let r = stella_mirror::load(p, &s.opts(), &lo, &NoProgress)
            .unwrap_or_else(|e| panic!("{}: {e}", p.display()));
        assert_eq!(r.from_archive, from_archive, "{}", p.display());
        let m = &r.verified.meta.manifest;
        assert!(m.file("advisories/b.json").is_some());
        assert_eq!(r.verified.files_checked, m.files.len());
        assert!(r.images.is_empty());
        assert!(entries(work.path()).is_empty(), "the unpacked copy is gone");
    }
    // A missing input and a device are not found; a file that is not an archive is refused
    // as one (a detached envelope is not loaded).
    let missing = s.dir.path().join("missing");
    for p in [missing.as_path(), Path::new("/dev/null")] {
        let e = stella_mirror::load(p, &s.opts(), &lo, &NoProgress).expect_err("refused");
        assert_eq!(e.kind(), ErrorKind::NotFound, "{}: {e}", p.display());
    }
    let detached = s.dir.path().join("release.dsse");
    std::fs::copy(b.join(names::ENVELOPE), &detached).expect("copy");
    let e =
        stella_mirror::load(&detached, &s.opts(), &lo, &NoProgress).expect_err("not an archive");
    assert_ne!(e.kind(), ErrorKind::NotFound, "{e}");
    assert!(entries(work.path()).is_empty());
    // Arguments are checked before the input is even looked at.
    let bad = stella_mirror::LoadOptions::new("no-registry");
    let e = stella_mirror::load(&missing, &s.opts(), &bad, &NoProgress).expect_err("bad");
    assert!(e.to_string().contains("--registry"), "{e}");
}
