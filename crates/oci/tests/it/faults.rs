//! Faults: a registry that dies mid-push, corrupt layouts, registries that lie.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use stella_oci::testing::{self, Registry};
use stella_oci::{
    pull_to_layout, push_from_layout, BlobAction, Digest, ErrorKind, Event, Layout, Platforms,
    PullOptions, PushOptions,
};

use crate::support::{client, client_with, reference, serve, Reply};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn registry_stopped_mid_push_then_rerun_skips_finished_blobs() {
    let reg = Arc::new(Mutex::new(Registry::start()));
    let host = reg.lock().unwrap().host();
    let src = tempfile::tempdir().unwrap();
    let (layout, img) = testing::layout_with_image(
        src.path(),
        "app",
        &[400_000, 400_000, 400_000, 400_000, 400_000],
    );
    // One transfer at a time, so "after the second blob" is well defined.
    let c = client_with(|cfg| cfg.concurrency = 1);
    let target = reference(&host, "app:1");

    let done: Arc<Mutex<Vec<Digest>>> = Arc::default();
    let (reg2, done2) = (reg.clone(), done.clone());
    let progress = move |e: &Event<'_>| {
        if let Event::BlobDone { digest, .. } = e {
            let mut d = done2.lock().unwrap();
            d.push(**digest);
            if d.len() == 2 {
                reg2.lock().unwrap().stop();
            }
        }
    };
    let opts = PushOptions {
        progress: Arc::new(progress),
        ..PushOptions::default()
    };
    let err = push_from_layout(&c, layout.root(), &img.digest, &target, &opts)
        .await
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Unavailable, "{err}");
    // The error says what happened; the "rerun to resume" hint belongs to the commands that
    // upload (`stella mirror load`, `stella sign image`), not to every registry error.
    let msg = err.to_string();
    assert!(msg.contains("unreachable"), "{msg}");
    assert!(
        matches!(err, stella_oci::Error::Unreachable { .. }),
        "{err:?}"
    );
    let finished = done.lock().unwrap().clone();
    assert_eq!(finished.len(), 2);

    reg.lock().unwrap().restart();
    let r = push_from_layout(
        &c,
        layout.root(),
        &img.digest,
        &target,
        &PushOptions::default(),
    )
    .await
    .unwrap();
    assert_eq!(r.digest, img.digest);
    assert_eq!(r.blobs.len(), 6);
    assert_eq!(r.blobs_existing, 2, "{r:?}");
    assert_eq!(r.blobs_uploaded, 4);
    let reg = reg.lock().unwrap();
    // The restarted registry received no upload of the finished blobs.
    for d in &finished {
        assert!(
            reg.requests("PUT", &d.to_string()).is_empty(),
            "{d} was uploaded again"
        );
    }
    assert_eq!(reg.completed_uploads(), 4);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn interrupted_chunked_upload_resumes_at_the_registry_offset() {
    let reg = Arc::new(Mutex::new(Registry::start()));
    let host = reg.lock().unwrap().host();
    let src = tempfile::tempdir().unwrap();
    let (layout, img) = testing::layout_with_image(src.path(), "big", &[6 << 20]);
    let journal = tempfile::tempdir().unwrap();
    let c = client_with(|cfg| {
        cfg.concurrency = 1;
        cfg.monolithic_max = 64 << 10;
        cfg.chunk_size = 1 << 20;
    });
    let target = reference(&host, "big:1");
    let reg2 = reg.clone();
    let progress = move |e: &Event<'_>| {
        if let Event::ChunkDone { offset, .. } = e {
            if *offset == 3 << 20 {
                reg2.lock().unwrap().stop();
            }
        }
    };
    let opts = PushOptions {
        progress: Arc::new(progress),
        resume_dir: Some(journal.path().to_path_buf()),
        ..PushOptions::default()
    };
    let err = push_from_layout(&c, layout.root(), &img.digest, &target, &opts)
        .await
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Unavailable, "{err}");

    reg.lock().unwrap().restart();
    let c = client_with(|cfg| {
        cfg.monolithic_max = 64 << 10;
        cfg.chunk_size = 1 << 20;
    });
    let r = push_from_layout(
        &c,
        layout.root(),
        &img.digest,
        &target,
        &PushOptions {
            resume_dir: Some(journal.path().to_path_buf()),
            ..PushOptions::default()
        },
    )
    .await
    .unwrap();
    let layer = img.layers[0].digest;
    let b = r.blobs.iter().find(|b| b.digest == layer).unwrap();
    assert_eq!(b.action, BlobAction::Resumed, "{r:?}");
    assert_eq!(b.resumed_from, 3 << 20);
    // Only the remaining 3 MiB (+ tar framing) went over the wire: 4 PATCHes, not 7.
    assert_eq!(
        reg.lock()
            .unwrap()
            .requests("PATCH", "/blobs/uploads/")
            .len(),
        4
    );
    // The registry assembled the right blob (it checks the digest on the closing PUT).
    assert_eq!(
        c.blob_exists(&target, &layer).await.unwrap(),
        Some(img.layers[0].size)
    );
    assert!(
        std::fs::read_dir(journal.path()).unwrap().next().is_none(),
        "journal cleaned"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn corrupt_blob_is_refused_before_anything_is_pushed() {
    let reg = Registry::start();
    let src = tempfile::tempdir().unwrap();
    let (layout, img) = testing::layout_with_image(src.path(), "app", &[100_000, 200_000, 300_000]);
    let victim = layout.blob_path(&img.layers[2].digest);
    let mut bytes = std::fs::read(&victim).unwrap();
    bytes[1000] ^= 0x40;
    std::fs::write(&victim, bytes).unwrap();
    let err = push_from_layout(
        &client(),
        layout.root(),
        &img.digest,
        &reference(&reg.host(), "app:1"),
        &PushOptions::default(),
    )
    .await
    .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Integrity, "{err}");
    assert!(
        err.to_string().contains(&img.layers[2].digest.to_string()),
        "{err}"
    );
    assert!(
        reg.requests("POST", "/v2/").is_empty(),
        "nothing was pushed"
    );
    assert!(reg.requests("PUT", "/v2/").is_empty(), "nothing was pushed");
    assert!(
        reg.requests("PATCH", "/v2/").is_empty(),
        "nothing was pushed"
    );

    // A missing blob likewise.
    std::fs::remove_file(&victim).unwrap();
    let err = stella_oci::verify_layout_image(layout.root(), &img.digest)
        .await
        .unwrap_err();
    assert!(err.to_string().contains("lacks"), "{err}");
}

/// A registry whose manifests are honest but whose blob endpoint answers other bytes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn registry_answering_wrong_bytes_is_detected() {
    let src = tempfile::tempdir().unwrap();
    let (layout, img) = testing::layout_with_image(src.path(), "app", &[5000]);
    let manifest = std::fs::read(layout.blob_path(&img.digest)).unwrap();
    let config_d = img.config.unwrap();
    let config = std::fs::read(layout.blob_path(&config_d)).unwrap();
    let layer_d = img.layers[0].digest;
    let mut wrong_layer = std::fs::read(layout.blob_path(&layer_d)).unwrap();
    wrong_layer[700] ^= 1;
    let md = img.digest.to_string();
    let handler = move |r: &crate::support::Request| {
        let p = r.path.as_str();
        if p == "/v2/" {
            Reply::new(200)
        } else if p.ends_with("/manifests/good") || p.ends_with(&format!("/manifests/{md}")) {
            Reply::new(200)
                .header("Content-Type", stella_oci::media::OCI_MANIFEST)
                .header("Docker-Content-Digest", &md)
                .body(manifest.clone())
        } else if p.contains("/manifests/sha256:") {
            // Asked for another digest, answers with these bytes.
            Reply::new(200)
                .header("Content-Type", stella_oci::media::OCI_MANIFEST)
                .body(manifest.clone())
        } else if p.ends_with("/manifests/lying") {
            // Announces a digest its bytes do not have.
            Reply::new(200)
                .header("Content-Type", stella_oci::media::OCI_MANIFEST)
                .header("Docker-Content-Digest", &Digest::of(b"other").to_string())
                .body(manifest.clone())
        } else if p.ends_with(&format!("/blobs/{config_d}")) {
            Reply::new(200).body(config.clone())
        } else if p.ends_with(&format!("/blobs/{layer_d}")) {
            Reply::new(200).body(wrong_layer.clone())
        } else {
            Reply::new(404)
        }
    };
    let fake = serve(Arc::new(handler)).await;
    let c = client();
    let dst = tempfile::tempdir().unwrap();
    let err = pull_to_layout(
        &c,
        &reference(&fake.host(), "app:good"),
        &Platforms::All,
        dst.path(),
        &PullOptions::default(),
    )
    .await
    .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Integrity, "{err}");
    assert!(err.to_string().contains(&layer_d.to_string()), "{err}");
    // Nothing unverified stays behind: no blob file for the layer, no index entry.
    let out = Layout::open(dst.path()).unwrap();
    assert!(!out.has_blob(&layer_d, img.layers[0].size));
    assert!(out.entries().unwrap().is_empty());
    let leftovers: Vec<_> = std::fs::read_dir(dst.path().join("blobs/sha256"))
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .filter(|n| n.to_string_lossy().starts_with('.'))
        .collect();
    assert!(leftovers.is_empty(), "{leftovers:?}");

    let err = c
        .fetch_manifest(&reference(&fake.host(), "app:lying"))
        .await
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Integrity, "{err}");
    // By digest: the bytes must hash to the digest asked for.
    let err = c
        .fetch_manifest(&reference(
            &fake.host(),
            &format!("app@{}", Digest::of(b"x")),
        ))
        .await
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Integrity, "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn transient_errors_are_retried_with_backoff() {
    let calls = Arc::new(AtomicUsize::new(0));
    let calls2 = calls.clone();
    let body = br#"{"schemaVersion":2,"mediaType":"application/vnd.oci.image.index.v1+json","manifests":[]}"#;
    let d = Digest::of(body).to_string();
    let handler = move |r: &crate::support::Request| {
        if r.path.contains("/manifests/") {
            if calls2.fetch_add(1, Ordering::SeqCst) < 2 {
                return Reply::new(503);
            }
            return Reply::new(200)
                .header("Content-Type", stella_oci::media::OCI_INDEX)
                .header("Docker-Content-Digest", &d)
                .body(body.to_vec());
        }
        Reply::new(404)
    };
    let fake = serve(Arc::new(handler)).await;
    let c = client();
    let m = c
        .fetch_manifest(&reference(&fake.host(), "x:1"))
        .await
        .unwrap();
    assert!(m.is_index());
    assert_eq!(calls.load(Ordering::SeqCst), 3);
    assert!(c.stats().retries.load(Ordering::Relaxed) >= 2);

    // Always failing: a clear error after the configured attempts.
    let fake = serve(Arc::new(|_: &crate::support::Request| Reply::new(502))).await;
    let err = client()
        .fetch_manifest(&reference(&fake.host(), "x:1"))
        .await
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Unavailable, "{err}");

    // Nobody listening.
    let port = testing::free_port();
    let err = client()
        .fetch_manifest(&reference(&format!("127.0.0.1:{port}"), "x:1"))
        .await
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Unavailable, "{err}");
    assert!(err.to_string().contains("after 4 attempt"), "{err}");
}

/// A registry that crashed while it linked a blob into a repository (the `docker-registry`
/// filesystem driver writes the link file in place: an empty or torn link) answers 500 to
/// `HEAD` of that blob for good, so a push that asked first could never finish ("retryable"
/// forever; seen twice as a flaky `mirror load` rerun after a kill). A `HEAD` that keeps
/// failing with 5xx is taken as "not known to be there": the blob is sent again (a `PUT` by
/// digest is idempotent and rewrites the link), the push completes and the registry serves
/// the blob again. A registry that fails the upload too still fails the push, clearly.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_blob_the_registry_cannot_say_it_holds_is_sent_again() {
    let reg = Registry::start();
    let src = tempfile::tempdir().unwrap();
    let (layout, img) = testing::layout_with_image(src.path(), "app", &[300_000, 200_000]);
    let opts = PushOptions::default();
    // A fresh client each time (no blob locations remembered from the push before).
    let push = |target: stella_oci::Reference| {
        let (layout, img, opts) = (&layout, &img, &opts);
        async move {
            let c = client();
            let r = push_from_layout(&c, layout.root(), &img.digest, &target, opts).await;
            (c, r)
        }
    };
    let target = reference(&reg.host(), "app:1");
    push(target.clone()).await.1.unwrap();
    // Tear the link of one layer, as a crash mid-write leaves it.
    let layer = img.layers[0].digest;
    let link = reg
        .storage()
        .join("docker/registry/v2/repositories/app/_layers/sha256")
        .join(layer.hex())
        .join("link");
    std::fs::write(&link, b"").unwrap();
    let err = client().blob_exists(&target, &layer).await.unwrap_err();
    assert!(err.to_string().contains("answered 500 to HEAD"), "{err}");
    let (c, r) = push(target.clone()).await;
    let r = r.unwrap();
    let action = |d: &Digest| {
        r.blobs
            .iter()
            .find(|b| b.digest == *d)
            .map(|b| b.action)
            .unwrap()
    };
    assert_eq!(action(&layer), BlobAction::Uploaded);
    assert_eq!(action(&img.layers[1].digest), BlobAction::Existed);
    assert_eq!(
        c.blob_exists(&target, &layer).await.unwrap(),
        Some(img.layers[0].size)
    );
    // A registry that fails everything: the push still fails, on the upload, as unavailable.
    let methods: Arc<Mutex<Vec<String>>> = Arc::default();
    let seen = methods.clone();
    let fake = serve(Arc::new(move |r: &crate::support::Request| {
        seen.lock().unwrap().push(r.method.clone());
        Reply::new(500)
    }))
    .await;
    let err = push(reference(&fake.host(), "app:1")).await.1.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Unavailable, "{err}");
    assert!(err.to_string().contains("answered 500 to POST"), "{err}");
    let methods = methods.lock().unwrap();
    assert!(methods.iter().any(|m| m == "HEAD"), "{methods:?}");
}
