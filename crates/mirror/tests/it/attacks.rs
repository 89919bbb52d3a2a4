//! Attack cases as data, one folder each under `tests/attacks/` (tough's style):
//!
//! - `README`: what the attacker did, in one or two sentences;
//! - `files/`: files written over the honest, signed bundle (paths relative to the bundle);
//! - `remove` (optional): bundle paths deleted, one a line;
//! - `expect`: `stage: <Stage>`, `field: <Field>` (as `Debug` prints it: `File("SHA256SUMS")`,
//!   `Header("purpose")`) and `message: <text the error contains>`.
//!
//! Every case starts from a freshly signed bundle, is applied, and must be refused by
//! `verify_dir` as a verification failure of the named stage and field, with the named text.

use std::path::Path;

use stella_mirror::NoProgress;

use crate::common::{verify_dir, Signed};

fn overlay(from: &Path, onto: &Path) {
    for e in std::fs::read_dir(from).expect("read case files") {
        let e = e.expect("entry");
        let target = onto.join(e.file_name());
        if e.file_type().expect("type").is_dir() {
            std::fs::create_dir_all(&target).expect("mkdir");
            overlay(&e.path(), &target);
        } else {
            std::fs::copy(e.path(), &target).expect("copy");
        }
    }
}

/// The `stage:`, `field:` and `message:` lines of a case's `expect` file.
fn expectation(case: &Path) -> (Option<String>, Option<String>, Option<String>) {
    let text = std::fs::read_to_string(case.join("expect")).unwrap_or_default();
    let field = |name: &str| {
        text.lines()
            .find_map(|l| l.strip_prefix(name))
            .map(|v| v.trim().to_string())
    };
    (field("stage:"), field("field:"), field("message:"))
}

#[test]
fn every_attack_is_refused_at_its_stage() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/attacks");
    let mut cases: Vec<_> = std::fs::read_dir(&root)
        .expect("attacks folder")
        .map(|e| e.expect("entry").path())
        .filter(|p| p.is_dir())
        .collect();
    cases.sort();
    assert!(cases.len() >= 8, "the attack cases are all there");
    for case in cases {
        let name = case.file_name().map(|n| n.to_string_lossy().into_owned());
        let name = name.unwrap_or_default();
        assert!(case.join("README").is_file(), "{name}: README");
        let (stage, field, message) = expectation(&case);
        let (Some(stage), Some(field), Some(message)) = (stage, field, message) else {
            panic!("{name}: `expect` needs a `stage:`, a `field:` and a `message:` line");
        };
        let s = Signed::new();
        let bundle = s.bundle();
        if case.join("files").is_dir() {
            overlay(&case.join("files"), &bundle);
        }
        if let Ok(list) = std::fs::read_to_string(case.join("remove")) {
            for p in list.lines().filter(|l| !l.trim().is_empty()) {
                std::fs::remove_file(bundle.join(p.trim())).expect("remove");
            }
        }
        // The in-memory path, then the streamed one (every metadata file above its threshold):
        // the same stage, field and message.
        let streamed = stella_mirror::StreamLimits {
            stream_above: 0,
            ..Default::default()
        };
        let results = [
            ("in memory", verify_dir(&s, &bundle)),
            (
                "streamed",
                stella_mirror::verify_dir_with(&bundle, &s.opts(), &streamed, &NoProgress),
            ),
        ];
        for (path, result) in results {
            let err = match result {
                Ok(_) => panic!("{name} ({path}): the attacked bundle verified"),
                Err(e) => e,
            };
            assert_eq!(
                err.kind(),
                stella_mirror::ErrorKind::Verification,
                "{name} ({path}): {err}"
            );
            assert_eq!(
                format!("{:?}", err.stage().expect("a stage")),
                stage,
                "{name} ({path}): {err}"
            );
            assert_eq!(
                format!("{:?}", err.field().expect("a field")),
                field,
                "{name} ({path}): {err}"
            );
            assert!(
                err.to_string().contains(&message),
                "{name} ({path}): {err:?} does not say {message:?}"
            );
        }
    }
}
