//! OIDC identity tokens (compact JWS, read unverified by the keyless client before Fulcio
//! checks them): never panics, whatever `exp` holds; parsing is idempotent; the proof-of-
//! possession challenge is the verified email or the subject; the subject is always a SAN the
//! issued certificate may carry.
#![no_main]
use libfuzzer_sys::fuzz_target;
use stella_keyless::IdentityToken;
use time::OffsetDateTime;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let Ok(t) = IdentityToken::parse(text) else {
        return;
    };
    assert_eq!(t.raw(), text.trim());
    let again = IdentityToken::parse(t.raw()).expect("a parsed token parses again");
    assert_eq!((&again.issuer, &again.subject, &again.email), (&t.issuer, &t.subject, &t.email));
    assert_eq!((again.expires_at, &again.audiences), (t.expires_at, &t.audiences));
    for now in [OffsetDateTime::UNIX_EPOCH, OffsetDateTime::now_utc()] {
        for margin in [i64::MIN, -1, 0, 30, i64::MAX] {
            let _ = t.check_fresh(now, margin);
        }
    }
    match t.challenge() {
        Ok(c) => assert!(c == t.subject || (t.email_verified && t.email.as_deref() == Some(c))),
        Err(_) => assert!(t.email.is_some() && !t.email_verified),
    }
});
