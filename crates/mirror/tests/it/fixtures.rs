//! Shipped manifests read and written again byte for byte: the typed manifest (paths as
//! `BundlePath`, digests as `Digest`) keeps the canonical `manifest.json` and the
//! `SHA256SUMS` text exactly as they were signed.

use std::io::Read as _;
use std::path::{Path, PathBuf};

use stella_mirror::Manifest;

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// Parse `manifest` and write it again; with `sums`, the `SHA256SUMS` of its files too.
fn round_trip(what: &str, manifest: &[u8], sums: Option<&[u8]>) -> Manifest {
    let m = Manifest::from_json(manifest).expect(what);
    assert!(
        m.to_canonical_json() == manifest,
        "{what}: manifest.json is not written back byte for byte"
    );
    let mut streamed = Vec::new();
    m.write_canonical(&m.files, &mut streamed).expect("write");
    assert!(streamed == manifest, "{what}: streamed writer differs");
    if let Some(sums) = sums {
        assert!(m.sha256sums() == sums, "{what}: SHA256SUMS differs");
        assert!(m.sha256sums_equal(sums), "{what}");
    }
    // The streamed reader types the same entries.
    let (head, index) = stella_mirror::parse_manifest_slice(manifest).expect(what);
    assert_eq!(index.len(), m.files.len(), "{what}");
    for (i, f) in m.files.iter().enumerate() {
        let e = index.get(i).expect("entry");
        assert_eq!(
            (e.path.as_str(), e.size, e.sha256, e.media_type.as_str()),
            (f.path.as_str(), f.size, f.sha256, f.media_type.as_str()),
            "{what}"
        );
    }
    assert_eq!(head.checksums, m.checksums, "{what}");
    m
}

#[test]
fn shipped_manifests_are_written_back_byte_for_byte() {
    let root = repo();
    let sample = root.join("docs/samples/mirror/m0-sample");
    let m = round_trip(
        "m0-sample",
        &std::fs::read(sample.join("manifest.json")).unwrap(),
        Some(&std::fs::read(sample.join("SHA256SUMS")).unwrap()),
    );
    assert!(!m.files.is_empty() && !m.images.is_empty() && m.checksums.len() == 2);

    // (The attack cases of `tests/attacks/` hold no manifest of their own: `manifest-edited`
    // writes `{}` over the signed one.)
    let seed = root.join("fuzz/seeds/mirror_manifest/manifest.json");
    round_trip("fuzz seed", &std::fs::read(seed).unwrap(), None);

    // The thin sample, read from its archive: base, removed paths and all.
    let tgz =
        std::fs::File::open(root.join("docs/samples/mirror/mirror-thin-m0-sample.tar.gz")).unwrap();
    let mut ar = tar::Archive::new(flate2::read::GzDecoder::new(tgz));
    let (mut manifest, mut sums) = (None, None);
    for e in ar.entries().unwrap() {
        let mut e = e.unwrap();
        let name = e.path().unwrap().to_string_lossy().into_owned();
        let mut bytes = Vec::new();
        e.read_to_end(&mut bytes).unwrap();
        match name.as_str() {
            "manifest.json" => manifest = Some(bytes),
            "SHA256SUMS" => sums = Some(bytes),
            _ => {}
        }
    }
    let thin = round_trip(
        "thin sample",
        &manifest.expect("manifest.json in the thin sample"),
        Some(&sums.expect("SHA256SUMS in the thin sample")),
    );
    assert_eq!(thin.kind, stella_mirror::Kind::Thin);
    let base = thin.base.as_ref().unwrap();
    assert_eq!(
        base.manifest_digest,
        stella_digest::Digest::of(&std::fs::read(sample.join("manifest.json")).unwrap())
    );
}
