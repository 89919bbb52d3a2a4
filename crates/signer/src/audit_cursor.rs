//! The audit API's cursor key ([`crate::audit_api`]): `base64url(version || seq ||
//! HMAC-SHA256(key, seq || filters)[..16])`, bound to the filters and caller it was issued
//! for. Held by [`crate::App`]; a leaf, so the state does not depend on the routes.

use aws_lc_rs::hmac;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;

const CURSOR_VERSION: u8 = 1;
const CURSOR_MAC_LEN: usize = 16;

/// The cursor key of the audit API.
pub struct AuditApi {
    cursor_key: hmac::Key,
}

/// Why the audit API state could not be made.
#[derive(Debug, thiserror::Error)]
pub enum AuditApiError {
    #[error("the system random number generator failed: cannot make the audit cursor key")]
    Random,
}

impl AuditApi {
    /// With `secret` (shared by replicas) or a random per-process key.
    pub fn new(secret: Option<&[u8]>) -> Result<Self, AuditApiError> {
        let cursor_key = match secret {
            Some(s) => hmac::Key::new(hmac::HMAC_SHA256, s),
            None => hmac::Key::generate(hmac::HMAC_SHA256, &aws_lc_rs::rand::SystemRandom::new())
                .map_err(|_| AuditApiError::Random)?,
        };
        Ok(AuditApi { cursor_key })
    }

    fn mac(&self, seq: u64, binding: &str) -> hmac::Tag {
        let mut ctx = hmac::Context::with_key(&self.cursor_key);
        ctx.update(b"stella audit cursor v1\0");
        ctx.update(&seq.to_be_bytes());
        ctx.update(binding.as_bytes());
        ctx.sign()
    }

    /// The cursor continuing after `seq` for queries with `binding`.
    pub fn cursor(&self, seq: u64, binding: &str) -> String {
        let mut b = Vec::with_capacity(1 + 8 + CURSOR_MAC_LEN);
        b.push(CURSOR_VERSION);
        b.extend_from_slice(&seq.to_be_bytes());
        b.extend_from_slice(&self.mac(seq, binding).as_ref()[..CURSOR_MAC_LEN]);
        URL_SAFE_NO_PAD.encode(b)
    }

    /// The `seq` a cursor continues after, if it was issued here for `binding`.
    pub fn open_cursor(&self, cursor: &str, binding: &str) -> Option<u64> {
        let b = URL_SAFE_NO_PAD.decode(cursor).ok()?;
        if b.len() != 1 + 8 + CURSOR_MAC_LEN || b[0] != CURSOR_VERSION {
            return None;
        }
        let seq = u64::from_be_bytes(b[1..9].try_into().ok()?);
        let expected = self.mac(seq, binding);
        // Constant time: the tag must not be guessable byte by byte.
        aws_lc_rs::constant_time::verify_slices_are_equal(
            &b[9..],
            &expected.as_ref()[..CURSOR_MAC_LEN],
        )
        .ok()?;
        Some(seq)
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn cursors_are_bound_and_tamper_evident() {
        let api = AuditApi::new(Some(b"0123456789abcdef0123456789abcdef")).unwrap();
        let c = api.cursor(42, "filters-a");
        assert_eq!(api.open_cursor(&c, "filters-a"), Some(42));
        // A replica with the same secret accepts it.
        let replica = AuditApi::new(Some(b"0123456789abcdef0123456789abcdef")).unwrap();
        assert_eq!(replica.open_cursor(&c, "filters-a"), Some(42));
        // Other filters, another key, an edited seq, a cut tag, garbage.
        assert_eq!(api.open_cursor(&c, "filters-b"), None);
        let other = AuditApi::new(None).unwrap();
        assert_eq!(other.open_cursor(&c, "filters-a"), None);
        let mut raw = URL_SAFE_NO_PAD.decode(&c).unwrap();
        raw[8] ^= 1;
        assert_eq!(
            api.open_cursor(&URL_SAFE_NO_PAD.encode(&raw), "filters-a"),
            None
        );
        raw[8] ^= 1;
        raw[0] = 2;
        assert_eq!(
            api.open_cursor(&URL_SAFE_NO_PAD.encode(&raw), "filters-a"),
            None
        );
        assert_eq!(api.open_cursor(&c[..c.len() - 2], "filters-a"), None);
        assert_eq!(api.open_cursor("not base64 !", "filters-a"), None);
        assert_eq!(api.open_cursor("", "filters-a"), None);
    }
}
