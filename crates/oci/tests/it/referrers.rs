//! Signatures as referrers against distribution 2.8 (no referrers API: the tag-schema fallback
//! is what gets exercised), legacy cosign signatures, tampering, and a registry with the API.

use std::collections::BTreeSet;
use std::sync::Arc;

use stella_keys::{Algorithm, FileKey, Keyring, Purpose, Signer as _, TrustedKey};
use stella_oci::testing::{self, Registry};
use stella_oci::{
    list_referrers, push_from_layout, sign_image, verify_image, verify_image_release, Digest,
    PushOptions, Reference, ReferrerSource,
};
use stella_oci::{sign_image_legacy, ReleasePolicy};

use crate::support::{client, reference, serve, Reply};

fn ring(keys: &[(&FileKey, &str, &[Purpose])]) -> Keyring {
    Keyring::new(
        keys.iter()
            .map(|(k, id, purposes)| {
                let mut t = TrustedKey::unrestricted(k.public_key().clone());
                t.id = id.to_string();
                t.purposes = purposes.iter().copied().collect::<BTreeSet<_>>();
                t
            })
            .collect(),
    )
    .unwrap()
}

async fn pushed_image(reg: &Registry, name: &str) -> (Reference, Digest) {
    let src = tempfile::tempdir().unwrap();
    let (layout, img) = testing::layout_with_image(src.path(), "x", &[20_000]);
    let r = reference(&reg.host(), name);
    push_from_layout(
        &client(),
        layout.root(),
        &img.digest,
        &r,
        &PushOptions::default(),
    )
    .await
    .unwrap();
    (r, img.digest)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sign_then_verify_through_the_tag_schema_fallback() {
    let reg = Registry::start();
    let (image, digest) = pushed_image(&reg, "scanner:1.0").await;
    let c = client();
    let release = FileKey::generate(Algorithm::EcdsaP256Sha256).unwrap();
    let other = FileKey::generate(Algorithm::Ed25519).unwrap();

    let signed = sign_image(&c, &image, &release).await.unwrap();
    assert_eq!(signed.digest, digest);
    assert!(
        signed.fallback_index_updated,
        "distribution 2.8 has no referrers API"
    );

    let refs = list_referrers(&c, &image, &digest, None).await.unwrap();
    assert_eq!(refs.source, ReferrerSource::TagSchema);
    assert_eq!(refs.descriptors.len(), 1);
    assert_eq!(refs.descriptors[0].digest, signed.referrer);
    assert_eq!(
        refs.descriptors[0].artifact_type.as_deref(),
        Some("application/vnd.dev.sigstore.bundle.v0.3+json")
    );
    // The artifact manifest: subject = the image, one bundle layer.
    let m = c
        .fetch_manifest(&image.pinned(signed.referrer))
        .await
        .unwrap();
    assert_eq!(m.subject("t").unwrap().unwrap().digest, digest);
    assert_eq!(
        m.json["config"]["mediaType"],
        "application/vnd.oci.empty.v1+json"
    );

    // Trusted: release key in the keyring for purpose release (by tag and by digest).
    let good = ring(&[(&release, "release-2026", &[Purpose::Release])]);
    for r in [image.clone(), image.pinned(digest)] {
        let v = verify_image_release(&c, &r, &good).await.unwrap();
        assert!(v.trusted, "{v:?}");
        assert_eq!(v.signer.as_deref(), Some("release-2026"));
        assert_eq!(v.keyid.as_deref(), Some(release.key_id().as_str()));
        assert_eq!(v.digest, Some(digest));
        assert_eq!(v.source, Some(ReferrerSource::TagSchema));
    }

    // Wrong key: untrusted, and the reason says so.
    let wrong = ring(&[(&other, "someone-else", &[Purpose::Release])]);
    let v = verify_image_release(&c, &image, &wrong).await.unwrap();
    assert!(!v.trusted);
    assert!(v.reason.contains("no signature verifies"), "{}", v.reason);
    assert_eq!(v.signatures.len(), 1);

    // Right key, wrong purpose: untrusted for release, fine for attestation-any.
    let attest_only = ring(&[(&release, "attest", &[Purpose::Attestation])]);
    let v = verify_image_release(&c, &image, &attest_only)
        .await
        .unwrap();
    assert!(!v.trusted);
    assert!(v.reason.contains("release"), "{}", v.reason);
    let v = verify_image(&c, &image, &attest_only, &ReleasePolicy::any_purpose())
        .await
        .unwrap();
    assert!(v.trusted);

    // A second signature: the fallback index keeps both (read-modify-write).
    let second = sign_image(&c, &image, &other).await.unwrap();
    let refs = list_referrers(&c, &image, &digest, None).await.unwrap();
    let listed: BTreeSet<Digest> = refs.descriptors.iter().map(|d| d.digest).collect();
    assert_eq!(
        listed,
        [signed.referrer, second.referrer].into_iter().collect()
    );
    let v = verify_image_release(&c, &image, &wrong).await.unwrap();
    assert!(v.trusted, "{v:?}");
    assert_eq!(v.signer.as_deref(), Some("someone-else"));

    // An unsigned image: untrusted, no candidates.
    let (plain, _) = pushed_image(&reg, "plain:1").await;
    let v = verify_image_release(&c, &plain, &good).await.unwrap();
    assert!(!v.trusted);
    assert!(v.reason.contains("no signature found"), "{}", v.reason);
    // A missing image: untrusted, not an error.
    let v = verify_image_release(&c, &reference(&reg.host(), "nope:1"), &good)
        .await
        .unwrap();
    assert!(!v.trusted && v.reason.contains("not found"), "{}", v.reason);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tampered_referrers_are_untrusted() {
    let reg = Registry::start();
    let (image, digest) = pushed_image(&reg, "scanner:2").await;
    let (other_image, other_digest) = pushed_image(&reg, "scanner:other").await;
    let c = client();
    let key = FileKey::generate(Algorithm::Ed25519).unwrap();
    let good = ring(&[(&key, "rel", &[Purpose::Release])]);

    // A signature of another image listed in this image's referrers index: its subject
    // (and statement) name the other image, so it does not count.
    let foreign = sign_image(&c, &other_image, &key).await.unwrap();
    let entry = list_referrers(&c, &other_image, &other_digest, None)
        .await
        .unwrap()
        .descriptors
        .remove(0);
    assert_eq!(entry.digest, foreign.referrer);
    stella_oci::update_fallback_index(&c, &image, &digest, &entry)
        .await
        .unwrap();
    let v = verify_image_release(&c, &image, &good).await.unwrap();
    assert!(!v.trusted, "{v:?}");
    assert!(v.reason.contains("not this image"), "{}", v.reason);

    // A real signature whose bundle bytes the registry's storage altered: the bundle no longer
    // matches its digest, so it is refused before it is even parsed.
    let signed = sign_image(&c, &image, &key).await.unwrap();
    assert!(
        verify_image_release(&c, &image, &good)
            .await
            .unwrap()
            .trusted
    );
    let m = c
        .fetch_manifest(&image.pinned(signed.referrer))
        .await
        .unwrap();
    let bundle_d = m.layers("t").unwrap()[0].digest;
    let hex = bundle_d.hex();
    let data = reg
        .storage()
        .join("docker/registry/v2/blobs/sha256")
        .join(&hex[..2])
        .join(&hex)
        .join("data");
    let text = std::fs::read_to_string(&data).unwrap();
    // Same length, one character changed inside the base64 signature.
    let pos = text.find("\"sig\":\"").unwrap() + 10;
    let mut b = text.into_bytes();
    b[pos] = if b[pos] == b'A' { b'B' } else { b'A' };
    std::fs::write(&data, b).unwrap();
    let v = verify_image_release(&c, &image, &good).await.unwrap();
    assert!(!v.trusted, "{v:?}");
    assert!(v.reason.contains("digest mismatch"), "{}", v.reason);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn legacy_cosign_signatures_are_read() {
    let reg = Registry::start();
    let (image, digest) = pushed_image(&reg, "legacy:1").await;
    let c = client();
    let key = FileKey::generate(Algorithm::EcdsaP256Sha256).unwrap();
    let other = FileKey::generate(Algorithm::EcdsaP256Sha256).unwrap();
    sign_image_legacy(&c, &image, &key).await.unwrap();
    let tags = c.list_tags(&image).await.unwrap();
    assert!(
        tags.contains(&format!("{}.sig", digest.tag_form())),
        "{tags:?}"
    );
    let v = verify_image_release(&c, &image, &ring(&[(&key, "k", &[Purpose::Release])]))
        .await
        .unwrap();
    assert!(v.trusted, "{v:?}");
    assert_eq!(v.source, Some(ReferrerSource::CosignTag));
    let v = verify_image_release(&c, &image, &ring(&[(&other, "o", &[Purpose::Release])]))
        .await
        .unwrap();
    assert!(!v.trusted);
    assert!(v.reason.contains("no trusted key"), "{}", v.reason);
}

/// A registry with the referrers API: the API answer is used, not the tag schema.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn referrers_api_is_preferred_when_present() {
    let subject = Digest::of(b"image");
    let referrer = Digest::of(b"sig");
    let index = format!(
        r#"{{"schemaVersion":2,"mediaType":"application/vnd.oci.image.index.v1+json","manifests":[
        {{"mediaType":"application/vnd.oci.image.manifest.v1+json","digest":"{referrer}","size":10,
          "artifactType":"application/vnd.dev.sigstore.bundle.v0.3+json"}},
        {{"mediaType":"application/vnd.oci.image.manifest.v1+json","digest":"{subject}","size":10,
          "artifactType":"application/spdx+json"}}]}}"#
    );
    let s = subject.to_string();
    let handler = move |r: &crate::support::Request| {
        if r.path.starts_with(&format!("/v2/app/referrers/{s}")) {
            Reply::new(200)
                .header("Content-Type", "application/vnd.oci.image.index.v1+json")
                .body(index.clone())
        } else {
            Reply::new(404)
        }
    };
    let fake = serve(Arc::new(handler)).await;
    let c = client();
    let r = reference(&fake.host(), "app:1");
    let all = list_referrers(&c, &r, &subject, None).await.unwrap();
    assert_eq!(all.source, ReferrerSource::ReferrersApi);
    assert_eq!(all.descriptors.len(), 2);
    let sigs = list_referrers(
        &c,
        &r,
        &subject,
        Some("application/vnd.dev.sigstore.bundle.v0.3+json"),
    )
    .await
    .unwrap();
    assert_eq!(sigs.descriptors.len(), 1);
    assert_eq!(sigs.descriptors[0].digest, referrer);
}

#[test]
fn verdict_futures_are_send() {
    // The Signer service runs the release check inside axum handlers.
    fn is_send<T: Send>(_: &T) {}
    let c = client();
    let r = Reference::parse("127.0.0.1:1/a:1").unwrap();
    let k = Keyring::default();
    is_send(&verify_image_release(&c, &r, &k));
    let key = FileKey::generate(Algorithm::Ed25519).unwrap();
    is_send(&sign_image(&c, &r, &key));
    is_send(&stella_oci::pull_to_layout(
        &c,
        &r,
        &stella_oci::Platforms::All,
        std::path::Path::new("/nonexistent"),
        &stella_oci::PullOptions::default(),
    ));
}
