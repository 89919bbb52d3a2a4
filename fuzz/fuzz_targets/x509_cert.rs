//! X.509 certificate (DER) parsing and the Fulcio certificate checks: never panic.
#![no_main]
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(c) = stella_sigstore::cert::FulcioCert::from_der(data) {
        let _ = c.check_profile();
        let _ = c.sans();
        let _ = c.issuer();
        let _ = c.key();
        let _ = c.cert.is_self_signed();
        if let Ok(root) = stella_sigstore::TrustedRoot::public_good() {
            let _ = c.check_scts(&c.cert, &root);
        }
    }
});
