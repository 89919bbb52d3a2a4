//! The honest path through the library: every stage accepts what the previous one wrote.

use stella_mirror::{ArchiveLimits, NoProgress};

use crate::common::{verify_dir, Signed};

#[test]
fn create_sign_verify_pack_stream_unpack() {
    let s = Signed::new();
    let folder = verify_dir(&s, &s.bundle()).expect("the signed folder verifies");
    let manifest = &folder.meta.manifest;
    assert!(manifest.file("advisories/a.json").is_some());
    assert!(manifest.file("advisories/b.json").is_some());
    assert_eq!(folder.files_checked, manifest.files.len());
    assert_eq!(folder.bytes_checked, manifest.total_size());
    assert!(folder.from_base.is_empty());

    for name in ["b.tar.zst", "b.tar.gz"] {
        let archive = s.dir.path().join(name);
        let packed = stella_mirror::pack(&s.bundle(), &archive, 0, &NoProgress).expect("pack");
        assert_eq!(
            packed.archive_bytes,
            std::fs::metadata(&archive).expect("archive").len()
        );
        let streamed = stella_mirror::verify_archive(&archive, &s.opts(), &NoProgress)
            .expect("the archive verifies from its stream");
        assert_eq!(streamed.files_checked, folder.files_checked);
        assert_eq!(streamed.meta.manifest_digest, folder.meta.manifest_digest);

        let dest = s.dir.path().join(format!("unpacked-{name}"));
        let unpacked = stella_mirror::unpack(
            &archive,
            &dest,
            ArchiveLimits::default(),
            &s.opts(),
            &NoProgress,
        )
        .expect("unpack");
        assert_eq!(unpacked.meta.manifest_digest, folder.meta.manifest_digest);
        verify_dir(&s, &dest).expect("the unpacked folder verifies again");
    }
}

#[test]
fn pack_is_byte_reproducible() {
    let s = Signed::new();
    let a = s.dir.path().join("a.tar.gz");
    let b = s.dir.path().join("b.tar.gz");
    stella_mirror::pack(&s.bundle(), &a, 0, &NoProgress).expect("pack a");
    stella_mirror::pack(&s.bundle(), &b, 0, &NoProgress).expect("pack b");
    assert_eq!(std::fs::read(&a).expect("a"), std::fs::read(&b).expect("b"));
}

#[test]
fn a_failed_unpack_leaves_nothing_behind() {
    let s = Signed::new();
    let archive = s.dir.path().join("b.tar.zst");
    stella_mirror::pack(&s.bundle(), &archive, 0, &NoProgress).expect("pack");
    let other = Signed::new(); // a keyring that does not trust the bundle's key
    let dest = s.dir.path().join("out");
    let err = stella_mirror::unpack(
        &archive,
        &dest,
        ArchiveLimits::default(),
        &other.opts(),
        &NoProgress,
    )
    .expect_err("an untrusted bundle is refused");
    assert_eq!(err.kind(), stella_mirror::ErrorKind::Verification);
    assert_eq!(err.stage(), Some(stella_mirror::Stage::Envelope));
    assert!(!dest.exists(), "no output after a refusal");
    let leftovers: Vec<_> = std::fs::read_dir(s.dir.path())
        .expect("list")
        .filter_map(|e| e.ok())
        .filter(|e| e.file_name().to_string_lossy().starts_with(".stella-"))
        .collect();
    assert!(
        leftovers.is_empty(),
        "staging folder removed: {leftovers:?}"
    );
}

#[test]
fn every_source_takes_the_same_verification_path() {
    use crate::common::verify;
    use stella_mirror::Source;
    let s = Signed::new();
    let bundle = s.bundle();
    let archive = s.dir.path().join("b.tar.zst");
    stella_mirror::pack(&bundle, &archive, 0, &NoProgress).expect("pack");
    // A detached envelope: the signature kept beside the folder's files under another name.
    let detached = bundle.join("detached.dsse");
    std::fs::rename(bundle.join(stella_mirror::names::ENVELOPE), &detached).expect("move");
    let from_envelope = verify(Source::Envelope(&detached), &s.opts(), &NoProgress);
    // The folder itself now lacks manifest.dsse (and holds an unlisted file): refused.
    let err = verify(Source::Folder(&bundle), &s.opts(), &NoProgress)
        .expect_err("a folder without manifest.dsse is not signed");
    assert_eq!(err.stage(), Some(stella_mirror::Stage::Envelope));
    // With the detached file the content check still sees it as unlisted.
    let err = from_envelope.expect_err("the detached envelope file is an unlisted file");
    assert_eq!(err.stage(), Some(stella_mirror::Stage::Content));
    assert!(
        err.to_string().contains("unlisted file detached.dsse"),
        "{err}"
    );
    // Moved out of the folder, the detached envelope verifies the folder.
    let outside = s.dir.path().join("detached.dsse");
    std::fs::rename(&detached, &outside).expect("move out");
    std::fs::copy(&outside, bundle.join(stella_mirror::names::ENVELOPE)).expect("restore");
    let a = verify(
        Source::Envelope(&bundle.join(stella_mirror::names::ENVELOPE)),
        &s.opts(),
        &NoProgress,
    )
    .expect("envelope");
    let b = verify(Source::Folder(&bundle), &s.opts(), &NoProgress).expect("folder");
    let c = verify(Source::Archive(&archive), &s.opts(), &NoProgress).expect("archive");
    assert_eq!(a.meta.manifest_digest, b.meta.manifest_digest);
    assert_eq!(b.meta.manifest_digest, c.meta.manifest_digest);
    assert_eq!(
        (a.files_checked, b.files_checked),
        (c.files_checked, c.files_checked)
    );
}
