//! Trusted root (dev.sigstore.trustedroot JSON) reader: never panics.
#![no_main]
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let _ = stella_sigstore::TrustedRoot::from_json(data);
});
