//! Typed verification failures: each names its stage and the file or field it is about, and
//! carries typed values where a caller may want them (freshness, content), with the message
//! users see unchanged.

use stella_mirror::{
    names, verify_checksums, verify_header, Detail, Error, Field, NoProgress, Stage, TimeSource,
    VerifyOptions,
};

use crate::common::{verify_dir, Signed};

/// The stage and field of a verification failure, with its text.
fn refused<T>(r: Result<T, Error>) -> (Stage, Field, String) {
    let e = r.err().expect("a verification failure");
    (
        e.stage().expect("a stage"),
        e.field().expect("a field"),
        e.to_string(),
    )
}

#[test]
fn a_stale_bundle_is_refused_on_generated_at_with_its_age_and_budget() {
    let s = Signed::new();
    let later = time::OffsetDateTime::now_utc() + time::Duration::days(30);
    let opts = VerifyOptions {
        now: later,
        max_age: Some(3600),
        ..s.opts()
    };
    let err = stella_mirror::verify_dir(&s.bundle(), &opts, &NoProgress)
        .expect_err("30 days old with a one-hour budget");
    assert_eq!(err.stage(), Some(Stage::Freshness));
    assert_eq!(err.field(), Some(Field::Manifest("generatedAt")));
    let Error::Verify(f) = &err else {
        panic!("not a verification failure: {err}")
    };
    match f.detail() {
        Detail::Stale {
            age, budget, clock, ..
        } => {
            assert_eq!(*budget, 3600);
            assert!(*age >= 30 * 86_400 - 5, "age {age}");
            assert_eq!(*clock, TimeSource::LocalClock);
        }
        other => panic!("not a stale bundle: {other:?}"),
    }
    assert!(
        err.to_string()
            .starts_with("bundle is stale: generated at "),
        "{err}"
    );
    assert!(
        err.to_string()
            .ends_with("beyond its validity of 3600 s (±5 s)"),
        "{err}"
    );
}

#[test]
fn a_bundle_from_the_future_is_refused_on_generated_at() {
    let s = Signed::new();
    let earlier = time::OffsetDateTime::now_utc() - time::Duration::days(1);
    let opts = VerifyOptions {
        now: earlier,
        ..s.opts()
    };
    let (stage, field, msg) = refused(stella_mirror::verify_dir(&s.bundle(), &opts, &NoProgress));
    assert_eq!(stage, Stage::Freshness);
    assert_eq!(field, Field::Manifest("generatedAt"));
    assert!(
        msg.contains("is in the future (more than 5 s ahead of"),
        "{msg}"
    );
}

#[test]
fn a_detached_header_on_its_own_names_the_header_field_that_is_wrong() {
    let s = Signed::new();
    let bundle = s.bundle();
    let header = std::fs::read(bundle.join(names::HEADER)).expect("header");
    let payload = std::fs::read(bundle.join(names::MANIFEST)).expect("manifest");
    verify_header(&header, &payload, &s.opts()).expect("the honest header verifies");

    // Another payload: its digest is not the one the header names.
    let (stage, field, msg) = refused(verify_header(&header, b"{}", &s.opts()));
    assert_eq!(stage, Stage::Header);
    assert_eq!(field, Field::Header("payloadSha256"));
    assert!(msg.starts_with("payload hash mismatch: "), "{msg}");

    // A header of another purpose.
    let text = String::from_utf8(header).expect("UTF-8");
    let other = text.replace("\"mirror-bundle\"", "\"release-signing\"");
    assert_ne!(other, text);
    let (stage, field, msg) = refused(verify_header(other.as_bytes(), &payload, &s.opts()));
    assert_eq!(stage, Stage::Header);
    assert_eq!(field, Field::Header("purpose"));
    assert_eq!(
        msg,
        "detached header purpose is \"release-signing\", not \"mirror-bundle\""
    );
}

#[test]
fn a_malformed_checksums_line_is_named_by_its_line() {
    let s = Signed::new();
    let bundle = s.bundle();
    let sums = bundle.join(names::SUMS);
    let mut text = std::fs::read_to_string(&sums).expect("SHA256SUMS");
    text.push_str("not a checksum line\n");
    let line = text.lines().count();
    std::fs::write(&sums, text).expect("write");
    let (stage, field, msg) = refused(verify_checksums(&bundle, &NoProgress));
    assert_eq!(stage, Stage::Checksums);
    assert_eq!(
        field,
        Field::Line {
            file: names::SUMS,
            line
        }
    );
    assert_eq!(
        msg,
        format!("SHA256SUMS line {line}: not `<sha256>  <path>`")
    );
}

#[test]
fn content_problems_are_counted_and_named_in_the_failure() {
    let s = Signed::new();
    let bundle = s.bundle();
    std::fs::remove_file(bundle.join("advisories/b.json")).expect("remove");
    std::fs::write(bundle.join("advisories/extra.json"), b"{}").expect("write");
    let err = verify_dir(&s, &bundle).expect_err("content changed");
    assert_eq!(err.stage(), Some(Stage::Content));
    assert_eq!(err.field(), Some(Field::Content));
    let Error::Verify(f) = &err else {
        panic!("not a verification failure: {err}")
    };
    let Detail::Content { count, first } = f.detail() else {
        panic!("not a content failure: {f:?}")
    };
    assert_eq!(*count, 2);
    assert_eq!(
        first,
        &[
            "unlisted file advisories/extra.json (not in the signed manifest)".to_string(),
            "file advisories/b.json is missing".to_string(),
        ]
    );
    assert_eq!(
        err.to_string(),
        "bundle content does not match the signed manifest (2 problems): unlisted file \
         advisories/extra.json (not in the signed manifest); file advisories/b.json is missing"
    );
}

#[test]
fn a_failure_read_from_an_archive_names_the_archive_and_keeps_its_field() {
    let s = Signed::new();
    let bundle = s.bundle();
    std::fs::remove_file(bundle.join(names::SUMS_SIG)).expect("remove");
    let archive = s.dir.path().join("b.tar.gz");
    stella_mirror::pack(&bundle, &archive, 0, &NoProgress).expect("pack");
    let err = stella_mirror::verify_archive(&archive, &s.opts(), &NoProgress)
        .expect_err("SHA256SUMS.sig is missing");
    assert_eq!(err.stage(), Some(Stage::Checksums));
    assert_eq!(err.field(), Some(Field::file(names::SUMS_SIG)));
    let Error::Verify(f) = &err else {
        panic!("not a verification failure: {err}")
    };
    assert_eq!(f.archive(), Some(archive.as_path()));
    assert_eq!(
        err.to_string(),
        format!("{}: SHA256SUMS.sig is missing", archive.display())
    );
}

/// Metadata the streamed path does not check (it refuses them with another message), so not
/// attack fixtures (those must read alike on every path): a `time-anchor.json` or a
/// `manifest.sigstore.json` that is not JSON is refused on the file, at its stage.
#[test]
fn an_unreadable_anchor_or_keyless_file_is_refused_on_that_file() {
    for (name, stage) in [
        (names::TIME_ANCHOR, Stage::Anchor),
        (names::KEYLESS, Stage::Envelope),
    ] {
        let s = Signed::new();
        let bundle = s.bundle();
        std::fs::write(bundle.join(name), b"not json\n").expect("write");
        let (got_stage, field, msg) = refused(verify_dir(&s, &bundle));
        assert_eq!(got_stage, stage, "{name}: {msg}");
        assert_eq!(field, Field::file(name), "{name}: {msg}");
        assert!(msg.starts_with(&format!("{name}: ")), "{name}: {msg}");
    }
}
