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

/// Signatures are not signed, nor is `public-key.pem`: a stranger who appends signatures to a
/// signed bundle's envelope, or keys to that file, adds work to every verification (an
/// Ed25519 check is a pass over the whole manifest). Past the cap, or with more keys than
/// the signatures could have made, the bundle is refused before any of it is checked — in
/// memory and streamed alike.
#[test]
fn appended_signatures_and_stuffed_key_files_are_refused() {
    let streamed = stella_mirror::StreamLimits {
        stream_above: 0,
        ..Default::default()
    };
    let both = |s: &Signed, bundle: &Path| {
        [
            verify_dir(s, bundle).map(|_| ()),
            stella_mirror::verify_dir_with(bundle, &s.opts(), &streamed, &NoProgress).map(|_| ()),
        ]
    };
    // Well-formed 64-byte signatures put before the valid one, in the envelope and in the
    // detached header that copies its signatures.
    let junk_signatures = |bundle: &Path, extra: usize| {
        for file in ["manifest.dsse", "mirror/metadata/mirror.dsse.json"] {
            let path = bundle.join(file);
            let mut env: serde_json::Value =
                serde_json::from_slice(&std::fs::read(&path).expect("read")).expect("json");
            let sigs = env["signatures"].as_array_mut().expect("signatures");
            let valid = sigs[0].clone();
            for i in 0..extra {
                let mut s = valid.clone();
                let mut raw = [0u8; 64];
                raw[0] = i as u8;
                raw[1] = (i >> 8) as u8;
                s["sig"] = serde_json::Value::String(stella_dsse::b64::encode(&raw));
                sigs.insert(0, s);
            }
            std::fs::write(&path, serde_json::to_vec(&env).expect("json")).expect("write");
        }
    };

    // 32 signatures, the valid one last: verifies.
    let s = Signed::new();
    let bundle = s.bundle();
    junk_signatures(&bundle, stella_keys::MAX_SIGNATURES - 1);
    for r in both(&s, &bundle) {
        r.expect("32 signatures, one valid");
    }
    // Both routes refuse, as a verification failure of `stage` saying `text`.
    let refused = |s: &Signed, bundle: &Path, stage: stella_mirror::Stage, text: &str| {
        for r in both(s, bundle) {
            let e = r.expect_err(text);
            assert_eq!(e.kind(), stella_mirror::ErrorKind::Verification, "{e}");
            assert_eq!(e.stage(), Some(stage), "{e}");
            assert!(e.to_string().contains(text), "{e}");
        }
    };
    // Strangers' public keys: the PEM text and the first one's key id.
    let strangers = |n: usize| -> (String, String) {
        let keys: Vec<_> = (0..n)
            .map(|_| {
                let k =
                    stella_keys::FileKey::generate(stella_keys::Algorithm::Ed25519).expect("key");
                stella_keys::Signer::public_key(&k).clone()
            })
            .collect();
        let first = keys
            .first()
            .map(|k| k.key_id().to_string())
            .unwrap_or_default();
        (keys.iter().map(|k| k.to_pem()).collect(), first)
    };
    // 33: refused for the count, at the signature stage.
    let s = Signed::new();
    let bundle = s.bundle();
    junk_signatures(&bundle, stella_keys::MAX_SIGNATURES);
    refused(
        &s,
        &bundle,
        stella_mirror::Stage::Envelope,
        "has 33 signatures, more than the 32 a verifier checks",
    );

    // public-key.pem: the signer's key and two strangers' for one signature.
    let s = Signed::new();
    let bundle = s.bundle();
    let pem = std::fs::read_to_string(bundle.join("public-key.pem")).expect("pem");
    std::fs::write(bundle.join("public-key.pem"), pem + &strangers(2).0).expect("write");
    refused(
        &s,
        &bundle,
        stella_mirror::Stage::PublicKey,
        "holds 3 keys, more than the envelope's 1 signatures: some did not sign this bundle",
    );
    // Two strangers' keys and two signatures, one of them the signer's (a trusted key that
    // counted): each stranger is checked against the signatures, the first in the file named.
    let s = Signed::new();
    let bundle = s.bundle();
    junk_signatures(&bundle, 1);
    let (pem, first) = strangers(2);
    std::fs::write(bundle.join("public-key.pem"), pem).expect("write");
    refused(
        &s,
        &bundle,
        stella_mirror::Stage::PublicKey,
        &format!("holds key {first}, which did not sign this bundle"),
    );
    // The same key twice is one key: the file verifies.
    let s = Signed::new();
    let bundle = s.bundle();
    let pem = std::fs::read_to_string(bundle.join("public-key.pem")).expect("pem");
    std::fs::write(bundle.join("public-key.pem"), pem.repeat(2)).expect("write");
    for r in both(&s, &bundle) {
        r.expect("one key, written twice");
    }
}
