//! `create` and `sign` of bundles whose manifest is too large to hold in memory, with a small
//! injected threshold: a manifest above it is signed from a compact index with every output
//! written as a stream. The outputs must be byte-identical to the in-memory path's (Ed25519
//! signatures are deterministic), verify on both verification paths, and the sign-time check
//! of the folder must refuse what the in-memory one refuses.

use std::path::{Path, PathBuf};

use stella_keys::{Algorithm, FileKey, Keyring, Signer as _, TrustedKey};
use stella_mirror::{
    names, sign_with, sign_with_limits, verify_dir, verify_dir_with, Error, Manifest, NoProgress,
    StreamLimits, VerifyOptions,
};

const TEST_THRESHOLD: u64 = 64 * 1024;

fn small_limits() -> StreamLimits {
    StreamLimits {
        stream_above: TEST_THRESHOLD,
        ..Default::default()
    }
}

/// Sources of `n` small advisory files (16 folders) and a big one, in a temporary folder.
struct Sources {
    dir: tempfile::TempDir,
    spec: stella_mirror::Spec,
}

impl Sources {
    fn new(n: usize) -> Self {
        let dir = tempfile::tempdir().expect("temp dir");
        let src = dir.path().join("src");
        crate::common::write_feed(&src, n);
        std::fs::write(src.join("blob.bin"), vec![7u8; 300_000]).expect("write");
        let spec = stella_mirror::Spec::parse(
            "name: many\nversion: '1'\nissuer: i@example.org\nadvisories:\n  - path: feeds\n  - path: blob.bin\n",
            &src,
        )
        .expect("spec");
        Sources { dir, spec }
    }

    /// A fresh bundle of these sources (the same bytes every time: `generatedAt` is pinned).
    fn create(&self, name: &str) -> PathBuf {
        let out = self.dir.path().join(name);
        let opts = stella_mirror::CreateOptions {
            generated_at: time::macros::datetime!(2026-12-06 10:00 UTC),
            base: None,
            registry: Default::default(),
        };
        let r = stella_mirror::create(&self.spec, &out, &opts, &NoProgress).expect("create");
        assert!(r.head.files.is_empty(), "the report holds no file list");
        assert_eq!(r.files, r.written);
        out
    }
}

fn sign_at(dir: &Path, key: &dyn stella_keys::Signer, limits: &StreamLimits) -> Result<(), Error> {
    sign_with_limits(
        &dir.join(names::MANIFEST),
        &dir.join(names::ENVELOPE),
        &[key],
        time::macros::datetime!(2026-12-06 11:00 UTC),
        None,
        limits,
        &NoProgress,
    )
    .map(|_| ())
}

fn opts(ring: &Keyring) -> VerifyOptions<'_> {
    VerifyOptions {
        keyring: ring,
        threshold: 1,
        now: time::macros::datetime!(2026-12-06 12:00 UTC),
        max_age: None,
        time_roots: None,
    }
}

fn ring_of(keys: &[&FileKey]) -> Keyring {
    Keyring::new(
        keys.iter()
            .map(|k| TrustedKey::unrestricted(k.public_key().clone()))
            .collect(),
    )
    .expect("keyring")
}

fn read(p: impl AsRef<Path>) -> Vec<u8> {
    std::fs::read(p).expect("read")
}

/// Every metadata file `sign` writes.
const SIGNED: [&str; 7] = [
    names::MANIFEST,
    names::ENVELOPE,
    names::SUMS,
    names::SUMS_DSSE,
    names::SUMS_SIG,
    names::HEADER,
    names::PUBLIC_KEY,
];

#[test]
fn streamed_sign_writes_the_bytes_of_the_in_memory_sign() {
    let src = Sources::new(1500);
    let (a, b) = (src.create("a"), src.create("b"));
    assert_eq!(read(a.join(names::MANIFEST)), read(b.join(names::MANIFEST)));
    let created = read(a.join(names::MANIFEST));
    assert!(
        created.len() as u64 > TEST_THRESHOLD,
        "above the test threshold"
    );
    // `create` wrote what the in-memory canonical writer writes for the same manifest.
    let typed = Manifest::from_json(&created).expect("manifest");
    let generated = typed
        .files
        .iter()
        .filter(|f| !f.path.starts_with("advisories/"))
        .count();
    assert!(generated > 0, "scripts and docs");
    assert_eq!(
        typed.files.len(),
        1500 + 1 + generated,
        "advisories, blob, generated"
    );
    assert!(created == typed.to_canonical_json());

    let key = FileKey::generate(Algorithm::Ed25519).expect("key");
    sign_at(&a, &key, &StreamLimits::default()).expect("in-memory sign");
    sign_at(&b, &key, &small_limits()).expect("streamed sign");
    for name in SIGNED {
        assert!(read(a.join(name)) == read(b.join(name)), "{name} differs");
    }
    // And the streamed outputs are those of the in-memory writers.
    let signed = read(b.join(names::MANIFEST));
    let m = Manifest::from_json(&signed).expect("signed manifest");
    assert!(signed == m.to_canonical_json());
    assert!(read(b.join(names::SUMS)) == m.sha256sums());
    let env = stella_dsse::Envelope::from_json(&read(b.join(names::ENVELOPE))).expect("env");
    assert!(env.payload == signed);
    assert!(env.to_json() == read(b.join(names::ENVELOPE)));
    assert!(key.public_key().verify(
        &stella_dsse::pae(stella_mirror::PAYLOAD_TYPE, &signed),
        &env.signatures[0].sig
    ));

    // Both verify, on both verification paths, with the same report.
    let ring = ring_of(&[&key]);
    for dir in [&a, &b] {
        let mem = verify_dir(dir, &opts(&ring), &NoProgress).expect("verify");
        let streamed =
            verify_dir_with(dir, &opts(&ring), &small_limits(), &NoProgress).expect("streamed");
        assert_eq!(mem.files_checked, typed.files.len());
        assert_eq!(streamed.files_checked, mem.files_checked);
        assert_eq!(streamed.bytes_checked, mem.bytes_checked);
        assert_eq!(streamed.meta.manifest_digest, mem.meta.manifest_digest);
    }
}

#[test]
fn streamed_sign_with_p256_and_two_keys_verifies() {
    let src = Sources::new(1200);
    let (a, b) = (src.create("a"), src.create("b"));
    let p256 = FileKey::generate(Algorithm::EcdsaP256Sha256).expect("key");
    let ed = FileKey::generate(Algorithm::Ed25519).expect("key");
    let signers: [&dyn stella_keys::Signer; 2] = [&p256, &ed];
    for (dir, limits) in [(&a, StreamLimits::default()), (&b, small_limits())] {
        sign_with_limits(
            &dir.join(names::MANIFEST),
            &dir.join(names::ENVELOPE),
            &signers,
            time::macros::datetime!(2026-12-06 11:00 UTC),
            None,
            &limits,
            &NoProgress,
        )
        .expect("sign");
    }
    // ECDSA is randomised: the signed bytes agree but for the digest of SHA256SUMS.dsse
    // (which holds signatures); the signatures need not.
    for name in [names::SUMS, names::PUBLIC_KEY] {
        assert!(read(a.join(name)) == read(b.join(name)), "{name} differs");
    }
    let (ma, mb) = (
        Manifest::from_json(&read(a.join(names::MANIFEST))).expect("a"),
        Manifest::from_json(&read(b.join(names::MANIFEST))).expect("b"),
    );
    assert_eq!(ma.files, mb.files);
    assert_eq!(ma.checksums[0], mb.checksums[0]);
    let sums = read(b.join(names::SUMS));
    let sig = stella_dsse::b64::decode(
        std::str::from_utf8(&read(b.join(names::SUMS_SIG))).expect("text"),
    )
    .expect("base64");
    assert!(
        p256.public_key().verify(&sums, &sig),
        "SHA256SUMS.sig by the first key"
    );
    let env = stella_dsse::Envelope::from_json(&read(b.join(names::SUMS_DSSE))).expect("env");
    assert!(env.payload == sums);
    assert_eq!(env.signatures.len(), 2);
    let ring = ring_of(&[&p256, &ed]);
    for dir in [&a, &b] {
        let mut o = opts(&ring);
        o.threshold = 2;
        verify_dir(dir, &o, &NoProgress).expect("verify, both signatures");
        verify_dir_with(dir, &o, &small_limits(), &NoProgress).expect("streamed verify");
    }
    // Only the P-256 key trusted: one signature, threshold 1.
    let only = ring_of(&[&p256]);
    verify_dir_with(&b, &opts(&only), &small_limits(), &NoProgress).expect("one key");
    // The same key twice is refused before anything is written.
    let c = src.create("c");
    let e = sign_with_limits(
        &c.join(names::MANIFEST),
        &c.join(names::ENVELOPE),
        &[&ed, &ed],
        time::OffsetDateTime::now_utc(),
        None,
        &small_limits(),
        &NoProgress,
    )
    .expect_err("duplicate key");
    assert!(e.to_string().contains("was given more than once"), "{e}");
    assert!(!c.join(names::SUMS).exists());
}

/// The sign-time check of the folder refuses on both paths, nothing is signed.
#[test]
fn streamed_sign_refuses_a_folder_that_does_not_match() {
    let src = Sources::new(1100);
    let key = FileKey::generate(Algorithm::Ed25519).expect("key");
    type Tamper = fn(&Path);
    // A sparse file of 64 GiB: read past its listed size, it would take minutes.
    fn sparse(p: &Path) {
        let f = std::fs::File::create(p).expect("create");
        f.set_len(64 << 30).expect("sparse");
    }
    let cases: [(&str, Tamper, &str); 6] = [
        (
            "changed",
            |d| {
                std::fs::write(d.join("advisories/feeds/osv/03/OSV-0000003.json"), b"x").expect("w")
            },
            "file advisories/feeds/osv/03/OSV-0000003.json changed: 1 bytes",
        ),
        (
            "missing",
            |d| {
                std::fs::remove_file(d.join("advisories/feeds/osv/04/OSV-0000004.json"))
                    .expect("rm")
            },
            "file advisories/feeds/osv/04/OSV-0000004.json is missing",
        ),
        (
            "unlisted",
            |d| std::fs::write(d.join("advisories/feeds/osv/extra.json"), b"{}").expect("w"),
            "unlisted file advisories/feeds/osv/extra.json (not in the signed manifest)",
        ),
        (
            "big blob changed",
            |d| std::fs::write(d.join("advisories/blob.bin"), vec![8u8; 300_000]).expect("w"),
            "file advisories/blob.bin changed: 300000 bytes",
        ),
        (
            "listed file far larger",
            |d| sparse(&d.join("advisories/blob.bin")),
            "file advisories/blob.bin changed: 68719476736 bytes (larger than listed: not read past its listed size), the manifest says ",
        ),
        (
            "huge unlisted file",
            |d| sparse(&d.join("advisories/huge.bin")),
            "unlisted file advisories/huge.bin (not in the signed manifest)",
        ),
    ];
    for (what, tamper, want) in cases {
        for (i, limits) in [StreamLimits::default(), small_limits()].iter().enumerate() {
            let dir = src.create(&format!("{}-{i}", what.replace(' ', "-")));
            tamper(&dir);
            let e = sign_at(&dir, &key, limits).expect_err(what).to_string();
            assert!(e.starts_with("cannot sign "), "{what}: {e}");
            assert!(
                e.contains("bundle content does not match the signed manifest (1 problem): "),
                "{what}: {e}"
            );
            assert!(e.contains(want), "{what} ({i}): {e}");
            for name in [
                names::ENVELOPE,
                names::SUMS,
                names::SUMS_DSSE,
                names::HEADER,
            ] {
                assert!(!dir.join(name).exists(), "{what}: {name} written");
            }
        }
    }
}

#[test]
fn streamed_sign_refuses_a_malformed_manifest() {
    let src = Sources::new(1000);
    let key = FileKey::generate(Algorithm::Ed25519).expect("key");
    let dir = src.create("bad");
    let path = dir.join(names::MANIFEST);
    let good = read(&path);
    let text = String::from_utf8(good.clone()).expect("utf-8");
    let cases = [
        ("truncated", good[..good.len() - 1].to_vec()),
        ("trailing bytes", [&good[..], b"x"].concat()),
        (
            "unsorted",
            text.replacen("OSV-0000016.json", "OSV-9999999.json", 1)
                .into_bytes(),
        ),
        (
            "unknown field",
            text.replacen("{\"bundle\"", "{\"a\":1,\"bundle\"", 1)
                .into_bytes(),
        ),
        (
            "metadata name",
            text.replacen("advisories/blob.bin", "SHA256SUMS", 1)
                .into_bytes(),
        ),
    ];
    for (what, bytes) in cases {
        assert!(bytes.len() as u64 > TEST_THRESHOLD);
        std::fs::write(&path, &bytes).expect("write");
        let e = sign_at(&dir, &key, &small_limits()).expect_err(what);
        assert!(
            matches!(e, Error::Input(_)),
            "{what}: refused as bad input: {e:?}"
        );
        assert!(e.to_string().contains("manifest"), "{what}: {e}");
        assert!(!dir.join(names::ENVELOPE).exists(), "{what}");
        assert!(
            read(&path) == bytes,
            "{what}: the manifest is left as it was"
        );
    }
    std::fs::write(&path, &good).expect("write");
    sign_at(&dir, &key, &small_limits()).expect("the original signs");
}

/// A time stamper on the streamed path: the anchor stamps the signed manifest's digest and
/// verifies (openssl makes the TSA certificate).
#[test]
fn streamed_sign_with_a_time_stamper() {
    let src = Sources::new(1000);
    let dir = src.create("anchored");
    let tsa_dir = tempfile::tempdir().expect("temp dir");
    let (key_pem, cert_pem) = (
        tsa_dir.path().join("tsa.key"),
        tsa_dir.path().join("tsa.pem"),
    );
    let status = std::process::Command::new("openssl")
        .args(["req", "-x509", "-new", "-newkey", "ec", "-pkeyopt"])
        .args([
            "ec_paramgen_curve:P-256",
            "-nodes",
            "-subj",
            "/CN=Test TSA",
            "-days",
            "30",
        ])
        .args(["-addext", "extendedKeyUsage=critical,timeStamping"])
        .args(["-addext", "keyUsage=critical,digitalSignature"])
        .args(["-addext", "basicConstraints=CA:FALSE"])
        .arg("-keyout")
        .arg(&key_pem)
        .arg("-out")
        .arg(&cert_pem)
        .stderr(std::process::Stdio::null())
        .status()
        .expect("openssl");
    assert!(status.success());
    let tsa_key = FileKey::from_pem(&read(&key_pem), &mut || {
        Err(stella_keys::KeyError::Password("not encrypted".into()))
    })
    .expect("tsa key");
    let cert = read(&cert_pem);
    let tsa =
        stella_mirror::LocalTsa::new_unchecked(&tsa_key, &cert, Some("1.2.3.4.1")).expect("tsa");
    let key = FileKey::generate(Algorithm::Ed25519).expect("key");
    // Sign `bundle` streamed (the test threshold), stamped by the local TSA.
    let sign_anchored = |bundle: &Path| {
        sign_with_limits(
            &bundle.join(names::MANIFEST),
            &bundle.join(names::ENVELOPE),
            &[&key],
            time::OffsetDateTime::now_utc(),
            Some(&tsa),
            &small_limits(),
            &NoProgress,
        )
    };
    let r = sign_anchored(&dir).expect("sign");
    let anchor = r.anchor.expect("an anchor");
    assert_eq!(
        stella_mirror::Digest::of(&read(dir.join(names::MANIFEST))),
        r.manifest_digest
    );
    let ring = ring_of(&[&key]);
    let mut o = opts(&ring);
    // The TSA stamps the real time; `generatedAt` is pinned (2026-12-06 10:00), so the
    // freshness budget is lifted: this test is about the anchor, not about age (with the
    // default budget it failed from 2026-12-07 10:00:05 on).
    o.now = time::OffsetDateTime::now_utc();
    o.max_age = Some(u64::MAX / 4);
    let report = verify_dir(&dir, &o, &NoProgress).expect("verify with the anchor");
    let got = report.meta.anchor.expect("the anchor is checked");
    assert_eq!(got.token_digest, anchor.token_digest);
    // The manifest above the (test) streaming threshold: the anchor is checked by the
    // manifest's SHA-256, as the signer stamped it, not refused for the manifest's size.
    for limits in [
        small_limits(),
        StreamLimits {
            payload_in_memory: 0,
            ..small_limits()
        },
    ] {
        let streamed = verify_dir_with(&dir, &o, &limits, &NoProgress)
            .expect("streamed verify with the anchor");
        let got = streamed
            .meta
            .anchor
            .expect("the anchor is checked streamed");
        assert_eq!(got.token_digest, anchor.token_digest);
        assert_eq!(got.time, anchor.time);
        assert!(
            streamed.meta.manifest.files.is_empty(),
            "not the streamed path"
        );
    }
    // Another bundle's anchor (same TSA, another manifest) is refused on the streamed path.
    let other_src = Sources::new(999);
    let other = other_src.create("other");
    sign_anchored(&other).expect("sign the other");
    let mine = read(dir.join(names::TIME_ANCHOR));
    std::fs::copy(other.join(names::TIME_ANCHOR), dir.join(names::TIME_ANCHOR)).expect("copy");
    let e = verify_dir_with(&dir, &o, &small_limits(), &NoProgress)
        .expect_err("another manifest's anchor");
    assert_eq!(e.stage(), Some(stella_mirror::Stage::Anchor), "{e}");
    assert!(e.to_string().contains("belongs to another manifest"), "{e}");
    std::fs::write(dir.join(names::TIME_ANCHOR), mine).expect("restore");
    // A tampered token is refused streamed as in memory.
    let text = String::from_utf8(read(dir.join(names::TIME_ANCHOR))).expect("utf-8");
    let bad = text.replacen("\"tokenDigest\":\"sha256:", "\"tokenDigest\":\"sha256:0", 1);
    assert_ne!(bad, text);
    std::fs::write(dir.join(names::TIME_ANCHOR), &bad).expect("tamper");
    for limits in [StreamLimits::default(), small_limits()] {
        let e = verify_dir_with(&dir, &o, &limits, &NoProgress).expect_err("tampered");
        assert!(e.to_string().contains("tampered token"), "{e}");
    }
    std::fs::write(dir.join(names::TIME_ANCHOR), &text).expect("restore");
    // A token over the manifest's SHA-384 (`openssl ts`): checked in memory; streamed, where
    // only the SHA-256 is known, refused with what to do instead.
    let t = tsa_dir.path();
    std::fs::write(t.join("serial"), "01\n").expect("serial");
    std::fs::write(
        t.join("tsa.cnf"),
        format!(
            "[ tsa ]\ndefault_tsa = c\n[ c ]\nserial = {}\ncrypto_device = builtin\n\
             signer_cert = {}\nsigner_key = {}\nsigner_digest = sha256\n\
             default_policy = 1.2.3.4.1\ndigests = sha256, sha384\nordering = no\n\
             tsa_name = yes\ness_cert_id_chain = no\n",
            t.join("serial").display(),
            cert_pem.display(),
            key_pem.display()
        ),
    )
    .expect("tsa.cnf");
    let ossl = |args: &[&std::ffi::OsStr]| {
        let st = std::process::Command::new("openssl")
            .args(args)
            .stderr(std::process::Stdio::null())
            .status()
            .expect("openssl");
        assert!(st.success(), "openssl {args:?}");
    };
    let (q, reply, tok) = (t.join("q.tsq"), t.join("r.tsr"), t.join("t.der"));
    let m = dir.join(names::MANIFEST);
    ossl(&[
        "ts".as_ref(),
        "-query".as_ref(),
        "-data".as_ref(),
        m.as_os_str(),
        "-sha384".as_ref(),
        "-cert".as_ref(),
        "-out".as_ref(),
        q.as_os_str(),
    ]);
    ossl(&[
        "ts".as_ref(),
        "-reply".as_ref(),
        "-config".as_ref(),
        t.join("tsa.cnf").as_os_str(),
        "-queryfile".as_ref(),
        q.as_os_str(),
        "-out".as_ref(),
        reply.as_os_str(),
    ]);
    ossl(&[
        "ts".as_ref(),
        "-reply".as_ref(),
        "-in".as_ref(),
        reply.as_os_str(),
        "-token_out".as_ref(),
        "-out".as_ref(),
        tok.as_os_str(),
    ]);
    stella_mirror::write_anchor_for(
        &dir,
        &read(&tok),
        "openssl",
        stella_mirror::Stamped::Bytes(&read(&m)),
    )
    .expect("a SHA-384 token over the manifest");
    verify_dir(&dir, &o, &NoProgress).expect("SHA-384 anchor in memory");
    let e = verify_dir_with(&dir, &o, &small_limits(), &NoProgress).expect_err("streamed");
    assert_eq!(e.stage(), Some(stella_mirror::Stage::Anchor), "{e}");
    assert!(e.to_string().contains("SHA-256 only"), "{e}");
    std::fs::write(dir.join(names::TIME_ANCHOR), &text).expect("restore");

    // `mirror anchor` of a manifest above the threshold: read as a stream, stamped by its
    // SHA-256; the anchor it writes verifies streamed.
    use stella_mirror::{signed_manifest_of, signed_manifest_of_with, SignedManifest};
    let bytes = signed_manifest_of(&dir).expect("in memory");
    assert!(matches!(bytes, SignedManifest::Bytes(_)), "{bytes:?}");
    let streamed = signed_manifest_of_with(&dir, &small_limits()).expect("streamed");
    assert_eq!(streamed, SignedManifest::Sha256(bytes.sha256()));
    let token = stella_mirror::TimeStamper::stamp(&tsa, streamed.sha256().as_bytes()).expect("t");
    stella_mirror::write_anchor_for(&dir, &token, "again", streamed.stamped()).expect("anchor");
    let v = verify_dir_with(&dir, &o, &small_limits(), &NoProgress).expect("anchored, streamed");
    assert_eq!(v.meta.anchor.expect("anchor").source, "again");
    // Its refusals are the in-memory ones: manifest.json not the signed payload (one byte
    // changed, one byte more), no envelope, an envelope that is not one.
    let same_refusal = |what: &str, want: &str| {
        let a = signed_manifest_of(&dir).expect_err(what).to_string();
        let b = signed_manifest_of_with(&dir, &small_limits())
            .expect_err(what)
            .to_string();
        assert!(a.contains(want), "{what}: {a}");
        assert_eq!(a, b, "{what}");
    };
    let manifest = read(&m);
    let mut changed = manifest.clone();
    let at = changed.len() - 10;
    changed[at] ^= 1;
    std::fs::write(&m, &changed).expect("write");
    same_refusal(
        "a byte changed",
        "differs from the payload of manifest.dsse",
    );
    let mut longer = manifest.clone();
    longer.push(b' ');
    std::fs::write(&m, &longer).expect("write");
    same_refusal("a byte more", "differs from the payload of manifest.dsse");
    std::fs::write(&m, &manifest).expect("restore");
    let env = read(dir.join(names::ENVELOPE));
    std::fs::write(dir.join(names::ENVELOPE), b"[]").expect("write");
    let e = signed_manifest_of_with(&dir, &small_limits()).expect_err("not an envelope");
    assert!(e.to_string().starts_with("manifest.dsse: "), "{e}");
    std::fs::remove_file(dir.join(names::ENVELOPE)).expect("rm");
    same_refusal("no envelope", "is not signed (no manifest.dsse)");
    std::fs::write(dir.join(names::ENVELOPE), env).expect("restore");
    signed_manifest_of_with(&dir, &small_limits()).expect("honest again");

    // Packed, the anchored bundle verifies from the archive stream with its metadata spooled
    // (the streamed checks), the anchor checked there too.
    let archive = tsa_dir.path().join("anchored.tar.zst");
    stella_mirror::pack(&dir, &archive, 0, &NoProgress).expect("pack");
    let limits = stella_mirror::ArchiveLimits {
        stream: small_limits(),
        ..Default::default()
    };
    let v = stella_mirror::Source::Archive(&archive)
        .verify(
            &o,
            &limits,
            stella_mirror::Output::verify_only(),
            &NoProgress,
        )
        .expect("the anchored archive, spooled");
    let spooled = v.report;
    assert_eq!(spooled.meta.anchor.expect("anchor").source, "again");
    assert!(
        spooled.meta.manifest.files.is_empty(),
        "not the streamed checks"
    );
    // The anchor is of this manifest: a token over another digest is refused.
    let other = stella_mirror::Digest::of(b"another manifest");
    let token = stella_mirror::TimeStamper::stamp(&tsa, other.as_bytes()).expect("token");
    let e = stella_mirror::write_anchor_for(
        &dir,
        &token,
        "x",
        stella_mirror::Stamped::Sha256(&r.manifest_digest),
    )
    .expect_err("another manifest's token");
    assert!(
        e.to_string().contains("it belongs to another manifest"),
        "{e}"
    );
    // Signing again without a stamper removes the old anchor (it stamped the old manifest).
    sign_with(
        &dir.join(names::MANIFEST),
        &dir.join(names::ENVELOPE),
        &[&key],
        time::OffsetDateTime::now_utc(),
        None,
        &NoProgress,
    )
    .expect("sign again");
    assert!(!dir.join(names::TIME_ANCHOR).exists());
}
