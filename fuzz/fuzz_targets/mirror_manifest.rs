//! The mirror bundle manifest (the signed payload, also `--base` for thin bundles), the
//! detached header, and the bundle spec YAML. Never panics; an accepted manifest re-encodes
//! to canonical JSON that parses back to the same manifest.
#![no_main]
use libfuzzer_sys::fuzz_target;
use stella_mirror::{Spec, Header, Manifest};

fuzz_target!(|data: &[u8]| {
    if let Ok(m) = Manifest::from_json(data) {
        let canon = m.to_canonical_json();
        let again = Manifest::from_json(&canon).expect("our canonical output parses");
        assert_eq!(again.to_canonical_json(), canon);
        let _ = m.sha256sums();
        let _ = m.total_size();
        let _ = m.generated_at_time();
        if let Some(f) = m.files.first() {
            assert!(m.file(&f.path).is_some());
        }
    }
    if let Ok(v) = stella_dsse::jcs::parse_strict(data) {
        let _ = serde_json::from_value::<Header>(v);
    }
    if let Ok(text) = std::str::from_utf8(data) {
        // Relative paths resolve under a folder that does not exist: parsing does no I/O.
        let _ = Spec::parse(text, std::path::Path::new("/nonexistent-stella-fuzz"));
    }
});
