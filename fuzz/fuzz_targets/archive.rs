//! The bundle archive reader (`mirror verify X.tar.*`, `unpack`, `apply`, `load`): tar with
//! every extension-header type, gzip and zstd (told apart by magic bytes). Never panics, never
//! reads past the bounds. The keyring holds the key the seed archives were signed with
//! (`fuzz/seeds/archive/`), so mutations of a valid archive reach the content checks after
//! the signature; the clock is pinned so the seeds stay fresh.
#![no_main]
use std::sync::OnceLock;

use libfuzzer_sys::fuzz_target;
use stella_keys::{Keyring, PublicKey, TrustedKey};
use stella_mirror::{read_stream, ArchiveLimits, NoProgress, VerifyOptions};

fn keyring() -> &'static Keyring {
    static RING: OnceLock<Keyring> = OnceLock::new();
    RING.get_or_init(|| {
        let key = PublicKey::from_pem(include_bytes!("../seeds/archive-key.pub"))
            .expect("the seed key parses");
        Keyring::new(vec![TrustedKey::unrestricted(key)]).expect("one key")
    })
}

fuzz_target!(|data: &[u8]| {
    let opts = VerifyOptions {
        keyring: keyring(),
        threshold: 1,
        // Far in the future, with an unlimited freshness budget: never "stale", never "ahead".
        now: time::macros::datetime!(2100-01-01 0:00 UTC),
        max_age: Some(u64::MAX),
        time_roots: None,
    };
    let limits = ArchiveLimits {
        max_entry: 1 << 20,
        max_total: 4 << 20,
        ..ArchiveLimits::default()
    };
    let _ = read_stream(
        std::io::Cursor::new(data.to_vec()),
        None,
        limits,
        &opts,
        &NoProgress,
    );
});
