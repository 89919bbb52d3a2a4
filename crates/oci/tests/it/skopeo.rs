//! Cross-checks with skopeo: it reads what we push with the same digests, and what it writes
//! into an OCI layout we push cleanly.

use stella_oci::testing::{self, run, skopeo, Registry};
use stella_oci::{
    pull_to_layout, push_from_layout, Digest, Layout, Platforms, PullOptions, PushOptions,
};

use crate::support::{client, reference};

fn inspect_digest(host: &str, repo_tag: &str) -> String {
    let out = run(skopeo().args([
        "inspect",
        "--tls-verify=false",
        "--raw",
        &format!("docker://{host}/{repo_tag}"),
    ]));
    // --raw prints the manifest bytes: their digest is the image digest.
    Digest::of(out.as_bytes()).to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn skopeo_reads_what_we_push() {
    let reg = Registry::start();
    let src = tempfile::tempdir().unwrap();
    let layout = Layout::create(src.path()).unwrap();
    let shared = testing::random_layer(&layout, 400_000);
    let a = testing::image(
        &layout,
        "linux/amd64",
        &[shared, testing::random_layer(&layout, 1000)],
    );
    let b = testing::image(
        &layout,
        "linux/arm64",
        &[shared, testing::random_layer(&layout, 2000)],
    );
    let idx = testing::index(&layout, &[a.clone(), b]);
    layout.set_ref(&idx.descriptor(), "idx").unwrap();
    let c = client();
    push_from_layout(
        &c,
        layout.root(),
        &idx.digest,
        &reference(&reg.host(), "x/multi:1"),
        &PushOptions::default(),
    )
    .await
    .unwrap();
    push_from_layout(
        &c,
        layout.root(),
        &a.digest,
        &reference(&reg.host(), "x/single:1"),
        &PushOptions::default(),
    )
    .await
    .unwrap();

    assert_eq!(
        inspect_digest(&reg.host(), "x/multi:1"),
        idx.digest.to_string()
    );
    assert_eq!(
        inspect_digest(&reg.host(), "x/single:1"),
        a.digest.to_string()
    );
    let info = run(skopeo().args([
        "inspect",
        "--tls-verify=false",
        &format!("docker://{}/x/single:1", reg.host()),
    ]));
    let v: serde_json::Value = serde_json::from_str(&info).unwrap();
    assert_eq!(v["Digest"], a.digest.to_string());
    assert_eq!(v["Layers"].as_array().unwrap().len(), 2);

    // skopeo copies our image into an OCI layout: same manifest digest, same blobs.
    let out = tempfile::tempdir().unwrap();
    let dest = out.path().join("oci");
    run(skopeo().args([
        "copy",
        "--src-tls-verify=false",
        &format!("docker://{}/x/single:1", reg.host()),
        &format!("oci:{}:single", dest.display()),
    ]));
    let copied = Layout::open(&dest).unwrap();
    assert_eq!(copied.find_ref("single").unwrap().unwrap().digest, a.digest);
    for l in &a.layers {
        assert!(copied.has_blob(&l.digest, l.size));
    }

    // And a whole index with --all.
    let dest2 = out.path().join("oci2");
    run(skopeo().args([
        "copy",
        "--all",
        "--src-tls-verify=false",
        &format!("docker://{}/x/multi:1", reg.host()),
        &format!("oci:{}:multi", dest2.display()),
    ]));
    assert_eq!(
        Layout::open(&dest2)
            .unwrap()
            .find_ref("multi")
            .unwrap()
            .unwrap()
            .digest,
        idx.digest
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn layouts_written_by_skopeo_push_cleanly() {
    let reg = Registry::start();
    let src = tempfile::tempdir().unwrap();
    let (layout, img) = testing::layout_with_image(src.path(), "app", &[500_000, 3000]);
    // skopeo pushes from our layout (the reference transport reads our index.json)...
    run(skopeo().args([
        "copy",
        "--dest-tls-verify=false",
        &format!("oci:{}:app", layout.root().display()),
        &format!("docker://{}/from-skopeo/app:1", reg.host()),
    ]));
    // ...skopeo writes it into a layout of its own...
    let out = tempfile::tempdir().unwrap();
    let sk = out.path().join("sk");
    run(skopeo().args([
        "copy",
        "--src-tls-verify=false",
        &format!("docker://{}/from-skopeo/app:1", reg.host()),
        &format!("oci:{}:app", sk.display()),
    ]));
    let sk_layout = Layout::open(&sk).unwrap();
    let entry = sk_layout.find_ref("app").unwrap().unwrap();
    assert_eq!(entry.digest, img.digest, "skopeo kept the digest");

    // ...and we push skopeo's layout: same digest, and skopeo agrees.
    let c = client();
    let target = reference(&reg.host(), "from-stella/app:1");
    let r = push_from_layout(&c, &sk, &entry.digest, &target, &PushOptions::default())
        .await
        .unwrap();
    assert_eq!(r.digest, img.digest);
    assert_eq!(
        inspect_digest(&reg.host(), "from-stella/app:1"),
        img.digest.to_string()
    );

    // And we pull what skopeo pushed with its digest.
    let mine = tempfile::tempdir().unwrap();
    let p = pull_to_layout(
        &c,
        &reference(&reg.host(), "from-skopeo/app:1"),
        &Platforms::All,
        mine.path(),
        &PullOptions::default(),
    )
    .await
    .unwrap();
    assert_eq!(p.digest, img.digest);
}
