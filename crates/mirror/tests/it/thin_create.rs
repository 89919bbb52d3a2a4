//! Thin `create` (a base manifest given): the packed base file list and the batched, parallel
//! hashing of advisory folders give the bundle the file-by-file route gave — every file of the
//! new sources listed as a full bundle lists it, the base's vanished paths under `removed`, and
//! exactly the new or changed files carried — and the same errors.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

use stella_mirror::{create, CreateOptions, Manifest, NoProgress, Spec};

const SPEC: &str = "name: t\nversion: '1'\nissuer: i@example.org\nadvisories:\n  - path: feeds\n  - path: one.json\n    target: single/one.json\n";

/// More files than one hashing batch (4,096), in nested folders, names of several shapes.
fn write_sources(src: &Path) {
    for i in 0..9_000 {
        let d = src.join(format!("feeds/osv/{:02}", i % 23));
        std::fs::create_dir_all(&d).expect("test set-up");
        std::fs::write(
            d.join(format!("OSV-{i:07}.json")),
            format!("{{\"id\":{i}}}"),
        )
        .expect("test set-up");
    }
    for name in ["a", "a.json", "a-b", "ü.json", "deep/er/still/x.txt"] {
        let p = src.join("feeds/misc").join(name);
        std::fs::create_dir_all(p.parent().expect("test set-up")).expect("test set-up");
        std::fs::write(&p, name.as_bytes()).expect("test set-up");
    }
    std::fs::write(src.join("one.json"), b"{\"one\":1}").expect("test set-up");
}

fn spec(src: &Path, generation: u64) -> Spec {
    Spec::parse(&format!("{SPEC}generation: {generation}\n"), src).expect("test set-up")
}

fn opts(base: Option<&Path>) -> CreateOptions {
    CreateOptions {
        generated_at: time::macros::datetime!(2026-12-06 12:00 UTC),
        base: base.map(Path::to_path_buf),
        registry: Default::default(),
    }
}

fn manifest(bundle: &Path) -> Manifest {
    Manifest::from_json(&std::fs::read(bundle.join("manifest.json")).expect("test set-up"))
        .expect("test set-up")
}

/// Every file under `dir` but `manifest.json`, with its bytes.
fn carried(dir: &Path) -> BTreeMap<String, Vec<u8>> {
    let mut out = BTreeMap::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).expect("test set-up") {
            let p = e.expect("test set-up").path();
            if p.is_dir() {
                stack.push(p);
            } else {
                let rel = p
                    .strip_prefix(dir)
                    .expect("test set-up")
                    .to_str()
                    .expect("test set-up")
                    .to_string();
                if rel != "manifest.json" {
                    out.insert(rel, std::fs::read(&p).expect("test set-up"));
                }
            }
        }
    }
    out
}

#[test]
fn a_thin_bundle_lists_everything_and_carries_only_what_changed() {
    let dir = tempfile::tempdir().unwrap();
    let src = dir.path().join("src");
    write_sources(&src);
    let gen1 = dir.path().join("gen1");
    create(&spec(&src, 1), &gen1, &opts(None), &NoProgress).unwrap();
    let base = manifest(&gen1);

    // Changes spread over several batches; one file rewritten with the same bytes.
    let osv = |i: usize| src.join(format!("feeds/osv/{:02}/OSV-{i:07}.json", i % 23));
    for i in [0, 1, 4_095, 4_096, 4_097, 8_999] {
        std::fs::write(osv(i), format!("changed {i}")).unwrap();
    }
    std::fs::write(osv(17), "{\"id\":17}").unwrap();
    for i in [2, 3, 5_000, 8_998] {
        std::fs::remove_file(osv(i)).unwrap();
    }
    std::fs::remove_dir_all(src.join("feeds/misc/deep")).unwrap();
    for i in 9_000..9_005 {
        std::fs::write(osv(i), format!("new {i}")).unwrap();
    }
    std::fs::create_dir_all(src.join("feeds/new")).unwrap();
    std::fs::write(src.join("feeds/new/a.json"), b"new folder").unwrap();
    std::fs::write(src.join("one.json"), b"{\"one\":2}").unwrap();

    let full2 = dir.path().join("full2");
    create(&spec(&src, 2), &full2, &opts(None), &NoProgress).unwrap();
    let thin2 = dir.path().join("thin2");
    let report = create(
        &spec(&src, 2),
        &thin2,
        &opts(Some(&gen1.join("manifest.json"))),
        &NoProgress,
    )
    .unwrap();
    let (full, thin) = (manifest(&full2), manifest(&thin2));

    // Every file listed as the full bundle lists it.
    assert_eq!(thin.files, full.files);
    assert_eq!(report.files, full.files.len());
    // The base's paths that are gone, in order.
    let now: BTreeSet<&str> = full.files.iter().map(|f| f.path.as_str()).collect();
    let gone: Vec<&str> = base
        .files
        .iter()
        .map(|f| f.path.as_str())
        .filter(|p| !now.contains(p))
        .collect();
    let removed: Vec<&str> = thin.removed.iter().map(|p| p.as_str()).collect();
    assert_eq!(removed, gone);
    assert_eq!(removed.len(), 4 + 1);
    // Carried: exactly the files the base does not list with these bytes.
    let want: BTreeMap<String, Vec<u8>> = full
        .files
        .iter()
        .filter(|f| {
            base.file(f.path.as_str())
                .is_none_or(|b| b.sha256 != f.sha256)
        })
        .map(|f| {
            let bytes = std::fs::read(full2.join(f.path.as_str())).unwrap();
            (f.path.to_string(), bytes)
        })
        .collect();
    assert_eq!(want.len(), 6 + 5 + 1 + 1);
    assert!(!want.contains_key("advisories/feeds/osv/17/OSV-0000017.json"));
    assert_eq!(carried(&thin2), want);
    assert_eq!(report.written, want.len());
    assert_eq!(
        report.written_bytes,
        want.values().map(|b| b.len() as u64).sum::<u64>()
    );

    // The same sources again: nothing carried, nothing removed but what was.
    let thin3 = dir.path().join("thin3");
    create(
        &spec(&src, 3),
        &thin3,
        &opts(Some(&full2.join("manifest.json"))),
        &NoProgress,
    )
    .unwrap();
    let m3 = manifest(&thin3);
    assert_eq!(m3.files, full.files);
    assert!(m3.removed.is_empty());
    assert!(carried(&thin3).is_empty());
}

#[test]
fn a_thin_create_fails_as_a_full_create_does() {
    let dir = tempfile::tempdir().unwrap();
    let src = dir.path().join("src");
    write_sources(&src);
    let gen1 = dir.path().join("gen1");
    create(&spec(&src, 1), &gen1, &opts(None), &NoProgress).unwrap();
    let base = gen1.join("manifest.json");
    let error = |out: &str, base: Option<&Path>| {
        create(
            &spec(&src, 2),
            &dir.path().join(out),
            &opts(base),
            &NoProgress,
        )
        .unwrap_err()
        .to_string()
    };

    // A link in the folder, after thousands of files.
    let link = src.join("feeds/osv/22/zz-link.json");
    std::os::unix::fs::symlink(src.join("one.json"), &link).unwrap();
    let full = error("full-link", None);
    let thin = error("thin-link", Some(&base));
    assert!(thin.contains("zz-link.json"), "{thin}");
    assert_eq!(thin, full);
    std::fs::remove_file(&link).unwrap();

    // A name that is not a bundle path.
    let bad = src.join("feeds/osv/05/bad\\name.json");
    std::fs::write(&bad, b"x").unwrap();
    let full = error("full-bad", None);
    let thin = error("thin-bad", Some(&base));
    assert!(
        thin.contains(&src.join("feeds").display().to_string()),
        "{thin}"
    );
    assert_eq!(thin, full);
    std::fs::remove_file(&bad).unwrap();

    // Nothing half-written is left behind.
    let left: Vec<String> = std::fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect::<BTreeSet<_>>()
        .into_iter()
        .collect();
    assert_eq!(left, ["gen1", "src"]);
}
