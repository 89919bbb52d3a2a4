//! Push from a layout and pull back, against a real docker-registry.

use stella_oci::testing::{self, Registry};
use stella_oci::{
    pull_to_layout, push_from_layout, BlobAction, Layout, Platforms, PullOptions, PushOptions,
};

use crate::support::{client, client_with, reference};

fn blob_files(layout: &Layout) -> Vec<String> {
    let mut v: Vec<String> = std::fs::read_dir(layout.root().join("blobs/sha256"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| !n.starts_with('.'))
        .collect();
    v.sort();
    v
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn push_then_pull_preserves_digests_and_skips_existing_blobs() {
    let reg = Registry::start();
    let src = tempfile::tempdir().unwrap();
    let (layout, img) = testing::layout_with_image(src.path(), "app", &[300_000, 1_200_000, 10]);
    let c = client();
    let target = reference(&reg.host(), "team/app:v1");

    let report = push_from_layout(
        &c,
        layout.root(),
        &img.digest,
        &target,
        &PushOptions::default(),
    )
    .await
    .unwrap();
    assert_eq!(report.digest, img.digest);
    assert_eq!(report.blobs.len(), 4, "{report:?}");
    assert_eq!(report.blobs_uploaded, 4);
    assert_eq!(reg.completed_uploads(), 4);
    assert_eq!(c.list_tags(&target).await.unwrap(), vec!["v1".to_string()]);

    // A second push sends no blob: each is found by HEAD first.
    let again = push_from_layout(
        &c,
        layout.root(),
        &img.digest,
        &target,
        &PushOptions::default(),
    )
    .await
    .unwrap();
    assert_eq!(again.blobs_existing, 4);
    assert_eq!(again.bytes_uploaded, 0);
    assert_eq!(reg.completed_uploads(), 4, "no new upload");
    assert!(reg.requests("POST", "/blobs/uploads/").len() == 4);

    // Pull into a fresh layout: same digest, byte-identical blobs.
    let dst = tempfile::tempdir().unwrap();
    let pulled = pull_to_layout(
        &c,
        &target,
        &Platforms::All,
        dst.path(),
        &PullOptions::default(),
    )
    .await
    .unwrap();
    assert_eq!(pulled.digest, img.digest);
    assert_eq!(pulled.source_digest, img.digest);
    assert_eq!(pulled.platforms, vec!["linux/amd64".to_string()]);
    assert_eq!(pulled.blobs_downloaded, 4);
    let out = Layout::open(dst.path()).unwrap();
    assert_eq!(blob_files(&out), blob_files(&layout));
    for f in blob_files(&out) {
        assert_eq!(
            std::fs::read(out.root().join("blobs/sha256").join(&f)).unwrap(),
            std::fs::read(layout.root().join("blobs/sha256").join(&f)).unwrap()
        );
    }
    let entry = out.find_ref(&target.to_string()).unwrap().unwrap();
    assert_eq!(entry.digest, img.digest);

    // Pulling again downloads nothing.
    let again = pull_to_layout(
        &c,
        &target,
        &Platforms::All,
        dst.path(),
        &PullOptions::default(),
    )
    .await
    .unwrap();
    assert_eq!(again.blobs_downloaded, 0);
    assert_eq!(again.blobs_present, 4);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn chunked_uploads_mounts_and_dry_runs() {
    let reg = Registry::start();
    let src = tempfile::tempdir().unwrap();
    let (layout, img) = testing::layout_with_image(src.path(), "big", &[3 << 20, 100]);
    // Force chunking: anything above 256 KiB goes in 1 MiB PATCHes.
    let c = client_with(|cfg| {
        cfg.monolithic_max = 256 << 10;
        cfg.chunk_size = 1 << 20;
    });
    let a = reference(&reg.host(), "a/img:1");
    let dry = push_from_layout(
        &c,
        layout.root(),
        &img.digest,
        &a,
        &PushOptions {
            dry_run: true,
            ..PushOptions::default()
        },
    )
    .await
    .unwrap();
    assert!(dry
        .blobs
        .iter()
        .all(|b| b.action == BlobAction::WouldUpload));
    assert!(dry.manifests.iter().all(|m| m.action == "would-push"));
    assert!(reg.requests("POST", "/blobs/uploads/").is_empty());
    assert!(reg.requests("PUT", "/").is_empty());

    let r = push_from_layout(&c, layout.root(), &img.digest, &a, &PushOptions::default())
        .await
        .unwrap();
    assert_eq!(r.blobs_uploaded, 3);
    // The 3 MiB layer went in 4 PATCHes (3 MiB + tar framing).
    assert_eq!(reg.requests("PATCH", "/blobs/uploads/").len(), 4);

    // Another repository of the same registry: blobs are mounted, not sent.
    let b = reference(&reg.host(), "b/img:1");
    let r = push_from_layout(&c, layout.root(), &img.digest, &b, &PushOptions::default())
        .await
        .unwrap();
    assert_eq!(r.blobs_mounted, 3, "{r:?}");
    assert_eq!(r.bytes_uploaded, 0);
    assert_eq!(reg.requests("POST", "mount=").len(), 3);

    let dry = push_from_layout(
        &c,
        layout.root(),
        &img.digest,
        &b,
        &PushOptions {
            dry_run: true,
            ..PushOptions::default()
        },
    )
    .await
    .unwrap();
    assert!(dry.blobs.iter().all(|b| b.action == BlobAction::Existed));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn multi_platform_index_and_platform_filter() {
    let reg = Registry::start();
    let src = tempfile::tempdir().unwrap();
    let layout = Layout::create(src.path()).unwrap();
    let shared = testing::random_layer(&layout, 200_000);
    let mut images = Vec::new();
    for p in ["linux/amd64", "linux/arm64", "linux/s390x"] {
        let own = testing::random_layer(&layout, 50_000);
        images.push(testing::image(&layout, p, &[shared, own]));
    }
    let idx = testing::index(&layout, &images);
    layout.set_ref(&idx.descriptor(), "multi").unwrap();
    let c = client();
    let target = reference(&reg.host(), "multi:1");
    let r = push_from_layout(
        &c,
        layout.root(),
        &idx.digest,
        &target,
        &PushOptions::default(),
    )
    .await
    .unwrap();
    // shared + 3 own layers + 3 configs; 3 child manifests + the index.
    assert_eq!(r.blobs.len(), 7);
    assert_eq!(r.manifests.len(), 4);
    assert_eq!(r.manifests.last().unwrap().digest, idx.digest);

    let all = tempfile::tempdir().unwrap();
    let p = pull_to_layout(
        &c,
        &target,
        &Platforms::All,
        all.path(),
        &PullOptions::default(),
    )
    .await
    .unwrap();
    assert_eq!(p.digest, idx.digest);
    assert_eq!(
        p.platforms,
        vec!["linux/amd64", "linux/arm64", "linux/s390x"]
    );

    let one = tempfile::tempdir().unwrap();
    let p = pull_to_layout(
        &c,
        &target,
        &Platforms::parse("linux/arm64").unwrap(),
        one.path(),
        &PullOptions::default(),
    )
    .await
    .unwrap();
    assert_eq!(
        p.digest, images[1].digest,
        "one platform: that platform's manifest"
    );
    assert_eq!(p.source_digest, idx.digest);
    assert_eq!(p.platforms, vec!["linux/arm64"]);
    assert_eq!(p.blobs_downloaded, 3);

    // Two of three: a new index, pushable elsewhere as it is.
    let two = tempfile::tempdir().unwrap();
    let p = pull_to_layout(
        &c,
        &target,
        &Platforms::parse("linux/amd64,linux/s390x").unwrap(),
        two.path(),
        &PullOptions {
            ref_name: Some("two".into()),
            ..PullOptions::default()
        },
    )
    .await
    .unwrap();
    assert_ne!(p.digest, idx.digest);
    assert_eq!(p.platforms, vec!["linux/amd64", "linux/s390x"]);
    let back = reference(&reg.host(), "two:1");
    let r = push_from_layout(&c, two.path(), &p.digest, &back, &PushOptions::default())
        .await
        .unwrap();
    assert_eq!(r.digest, p.digest);

    let err = pull_to_layout(
        &c,
        &target,
        &Platforms::parse("windows/amd64").unwrap(),
        tempfile::tempdir().unwrap().path(),
        &PullOptions::default(),
    )
    .await
    .unwrap_err();
    assert!(err.to_string().contains("linux/arm64"), "{err}");
}

/// Docker v2 schema 2 manifests and manifest lists travel unchanged too.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn docker_media_types_round_trip() {
    use stella_oci::media::{DOCKER_CONFIG, DOCKER_LIST, DOCKER_MANIFEST};
    let reg = Registry::start();
    let src = tempfile::tempdir().unwrap();
    let layout = Layout::create(src.path()).unwrap();
    let mut children = Vec::new();
    for arch in ["amd64", "arm64"] {
        let layer = testing::random_layer(&layout, 30_000);
        let config = serde_json::to_vec(&serde_json::json!({
            "architecture": arch, "os": "linux",
            "rootfs": {"type": "layers", "diff_ids": [layer.diff_id.to_string()]},
        }))
        .unwrap();
        let config_d = layout.write_blob(&config).unwrap();
        let m = serde_json::to_vec(&serde_json::json!({
            "schemaVersion": 2,
            "mediaType": DOCKER_MANIFEST,
            "config": {"mediaType": DOCKER_CONFIG, "digest": config_d.to_string(), "size": config.len()},
            "layers": [{"mediaType": "application/vnd.docker.image.rootfs.diff.tar.gzip",
                        "digest": layer.digest.to_string(), "size": layer.size}],
        }))
        .unwrap();
        let d = layout.write_blob(&m).unwrap();
        children.push(
            serde_json::json!({"mediaType": DOCKER_MANIFEST, "digest": d.to_string(),
            "size": m.len(), "platform": {"architecture": arch, "os": "linux"}}),
        );
    }
    let list = serde_json::to_vec(&serde_json::json!({
        "schemaVersion": 2, "mediaType": DOCKER_LIST, "manifests": children,
    }))
    .unwrap();
    let list_d = layout.write_blob(&list).unwrap();
    let desc = stella_oci::Descriptor::new(DOCKER_LIST, list_d, list.len() as u64);
    layout.set_ref(&desc, "docker").unwrap();

    let c = client();
    let target = reference(&reg.host(), "docker/list:1");
    let r = push_from_layout(&c, layout.root(), &list_d, &target, &PushOptions::default())
        .await
        .unwrap();
    assert_eq!(r.media_type, DOCKER_LIST);
    let m = c.fetch_manifest(&target).await.unwrap();
    assert_eq!(m.digest, list_d);
    assert_eq!(m.media_type, DOCKER_LIST);

    let dst = tempfile::tempdir().unwrap();
    let p = pull_to_layout(
        &c,
        &target,
        &Platforms::All,
        dst.path(),
        &PullOptions::default(),
    )
    .await
    .unwrap();
    assert_eq!(p.digest, list_d);
    assert_eq!(p.media_type, DOCKER_LIST);
    assert_eq!(p.platforms, vec!["linux/amd64", "linux/arm64"]);
    let p = pull_to_layout(
        &c,
        &target,
        &Platforms::parse("linux/arm64").unwrap(),
        dst.path(),
        &PullOptions {
            ref_name: Some("arm".into()),
            ..PullOptions::default()
        },
    )
    .await
    .unwrap();
    assert_eq!(p.media_type, DOCKER_MANIFEST);
    assert_eq!(p.blobs_present, 2, "shared with the first pull");
}
