//! RFC 3161 TimeStampResp / TimeStampToken parsing and checks: never panic.
#![no_main]
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let _ = stella_x509::tsp::check_token(data, &[]);
    if let Ok(token) = stella_x509::tsp::token_from_bytes(data) {
        let _ = stella_x509::tsp::check_token(&token, &[]);
    }
});
