//! Request identity: W3C trace context (`traceparent`) and audit ids.
//!
//! An incoming valid `traceparent` (`00-<32 hex trace id>-<16 hex parent id>-<2 hex flags>`,
//! not all-zero) keeps its trace id, so our logs and audit records join the caller's trace;
//! otherwise a fresh random trace id is made. Every response carries a `traceparent` with the
//! trace id and our own span id.

use aws_lc_rs::rand::{SecureRandom as _, SystemRandom};

/// The trace context of one request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct TraceContext {
    pub trace_id: String,
    pub span_id: String,
    pub flags: String,
}

impl TraceContext {
    /// From an incoming `traceparent` header, or fresh.
    pub(crate) fn from_header(traceparent: Option<&str>) -> Self {
        let span_id = random_hex(8);
        if let Some((trace_id, flags)) = traceparent.and_then(parse_traceparent) {
            return TraceContext {
                trace_id,
                span_id,
                flags,
            };
        }
        TraceContext {
            trace_id: random_hex(16),
            span_id,
            flags: "01".into(),
        }
    }

    /// The `traceparent` to send back.
    pub(crate) fn header(&self) -> String {
        format!("00-{}-{}-{}", self.trace_id, self.span_id, self.flags)
    }
}

fn is_lower_hex(s: &str, len: usize) -> bool {
    s.len() == len
        && s.bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
}

fn parse_traceparent(h: &str) -> Option<(String, String)> {
    let mut it = h.trim().split('-');
    let (v, t, p, f) = (it.next()?, it.next()?, it.next()?, it.next()?);
    if !is_lower_hex(v, 2)
        || v == "ff"
        || !is_lower_hex(t, 32)
        || !is_lower_hex(p, 16)
        || !is_lower_hex(f, 2)
    {
        return None;
    }
    // Version 00 has exactly four fields; later versions may append more.
    if v == "00" && it.next().is_some() {
        return None;
    }
    if t.bytes().all(|b| b == b'0') || p.bytes().all(|b| b == b'0') {
        return None;
    }
    Some((t.to_string(), f.to_string()))
}

/// `n` random bytes as lowercase hex.
pub fn random_hex(n: usize) -> String {
    let mut buf = vec![0u8; n];
    if SystemRandom::new().fill(&mut buf).is_err() {
        // The system RNG failing is not recoverable for a signing service; ids only need
        // uniqueness, so fall back to time-derived bytes rather than panicking.
        let t = time::OffsetDateTime::now_utc()
            .unix_timestamp_nanos()
            .to_be_bytes();
        for (i, b) in buf.iter_mut().enumerate() {
            *b = t[i % t.len()];
        }
    }
    stella_keys::hex(&buf)
}

/// A new audit id (UUID-v4 shaped, random).
pub(crate) fn new_audit_id() -> String {
    let h = random_hex(16);
    format!(
        "{}-{}-4{}-{}-{}",
        &h[0..8],
        &h[8..12],
        &h[13..16],
        &h[16..20],
        &h[20..32]
    )
}

/// The time of an audit record: RFC 3339, UTC, milliseconds.
pub(crate) fn now_rfc3339() -> String {
    let t = time::OffsetDateTime::now_utc();
    let fmt = time::macros::format_description!(
        "[year]-[month]-[day]T[hour]:[minute]:[second].[subsecond digits:3]Z"
    );
    t.format(&fmt)
        .unwrap_or_else(|_| t.unix_timestamp().to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn honours_valid_traceparent() {
        let t = TraceContext::from_header(Some(
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
        ));
        assert_eq!(t.trace_id, "4bf92f3577b34da6a3ce929d0e0e4736");
        assert!(t
            .header()
            .starts_with("00-4bf92f3577b34da6a3ce929d0e0e4736-"));
        for bad in [
            "00-00000000000000000000000000000000-00f067aa0ba902b7-01",
            "00-4BF92F3577B34DA6A3CE929D0E0E4736-00f067aa0ba902b7-01",
            "zz",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-extra",
        ] {
            assert_ne!(
                TraceContext::from_header(Some(bad)).trace_id,
                "4bf92f3577b34da6a3ce929d0e0e4736"
            );
        }
        assert_eq!(new_audit_id().len(), 36);
    }
}
