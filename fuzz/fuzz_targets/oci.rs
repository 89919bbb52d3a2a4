//! OCI documents as registries and layouts serve them: image manifests, indexes (and Docker
//! equivalents), descriptors, platforms, references, digests, registry auth challenges and
//! docker config files. Never panics; a document that parses yields its children, config,
//! layers and subject without panicking either.
#![no_main]
use libfuzzer_sys::fuzz_target;
use stella_oci::media::{Descriptor, Document, Platform, Platforms};
use stella_oci::{Digest, Reference};

const DECLARED: [&str; 6] = [
    "",
    "application/vnd.oci.image.manifest.v1+json",
    "application/vnd.oci.image.index.v1+json",
    "application/vnd.docker.distribution.manifest.v2+json",
    "application/vnd.docker.distribution.manifest.list.v2+json",
    "application/vnd.docker.distribution.manifest.v1+prettyjws",
];

fuzz_target!(|data: &[u8]| {
    let Some((&sel, body)) = data.split_first() else {
        return;
    };
    let digest = Digest::parse(
        "sha256:0000000000000000000000000000000000000000000000000000000000000000",
    )
    .expect("a valid digest");
    let declared = DECLARED[usize::from(sel) % DECLARED.len()];
    if let Ok(doc) = Document::parse(body.to_vec(), digest, declared, "fuzz") {
        let _ = doc.is_index();
        let _ = doc.descriptor();
        let _ = doc.children("fuzz");
        let _ = doc.config("fuzz");
        let _ = doc.layers("fuzz");
        let _ = doc.subject("fuzz");
        let _ = doc.artifact_type();
    }
    if let Ok(v) = serde_json::from_slice::<serde_json::Value>(body) {
        if let Ok(d) = Descriptor::from_value(&v, "fuzz") {
            let back = Descriptor::from_value(&d.to_value(), "fuzz").expect("our own output parses");
            assert_eq!(back.digest, d.digest);
            assert_eq!(back.size, d.size);
        }
        let _ = Platform::from_value(&v);
    }
    let _ = stella_oci::fuzzing::docker_config(body);
    if let Ok(s) = std::str::from_utf8(body) {
        let _ = Reference::parse(s);
        let _ = Digest::parse(s);
        let _ = Platform::parse(s);
        let _ = Platforms::parse(s);
        let _ = stella_oci::fuzzing::challenge(s);
    }
});
