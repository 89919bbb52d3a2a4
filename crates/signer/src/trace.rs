//! Request identity: W3C trace context (`traceparent`) and audit ids.
//!
//! An incoming valid `traceparent` (`00-<32 hex trace id>-<16 hex parent id>-<2 hex flags>`,
//! not all-zero) keeps its trace id, so our logs and audit records join the caller's trace;
//! otherwise a fresh random trace id is made. Every response carries a `traceparent` with the
//! trace id and our own span id.

use aws_lc_rs::rand::{SecureRandom as _, SystemRandom};

/// The trace context of one request. The span id and flags are held as their lowercase hex
/// digits inline (no heap string each), so a copy of the context costs one allocation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct TraceContext {
    pub trace_id: String,
    span_id: [u8; 16],
    flags: [u8; 2],
}

/// `00-` + 32 + `-` + 16 + `-` + 2: a version-00 `traceparent` whose trace id is 32 digits.
const TRACEPARENT_LEN: usize = 55;

impl TraceContext {
    /// From an incoming `traceparent` header, or fresh.
    pub(crate) fn from_header(traceparent: Option<&str>) -> Self {
        let mut span_id = [0u8; 16];
        random_hex_into(&mut span_id);
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
            flags: *b"01",
        }
    }

    /// Our span id (16 lowercase hex digits).
    pub(crate) fn span_id(&self) -> &str {
        std::str::from_utf8(&self.span_id).unwrap_or_default()
    }

    /// The trace flags (2 lowercase hex digits).
    pub(crate) fn flags(&self) -> &str {
        std::str::from_utf8(&self.flags).unwrap_or_default()
    }

    /// The `traceparent` to send back.
    pub(crate) fn header(&self) -> String {
        format!("00-{}-{}-{}", self.trace_id, self.span_id(), self.flags())
    }

    /// [`header`](Self::header) as a header value, written without an intermediate string;
    /// `None` where `HeaderValue::from_str(&self.header())` fails.
    pub(crate) fn header_value(&self) -> Option<axum::http::HeaderValue> {
        let id = self.trace_id.as_bytes();
        if id.len() != 32 {
            // Never for ids made here or parsed by `parse_traceparent` (32 digits): the slow
            // path keeps the answer the same whatever the id.
            return axum::http::HeaderValue::from_str(&self.header()).ok();
        }
        let mut buf = [0u8; TRACEPARENT_LEN];
        buf[..3].copy_from_slice(b"00-");
        buf[3..35].copy_from_slice(id);
        buf[35] = b'-';
        buf[36..52].copy_from_slice(&self.span_id);
        buf[52] = b'-';
        buf[53..].copy_from_slice(&self.flags);
        axum::http::HeaderValue::from_bytes(&buf).ok()
    }
}

fn is_lower_hex(s: &str, len: usize) -> bool {
    s.len() == len
        && s.bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
}

fn parse_traceparent(h: &str) -> Option<(String, [u8; 2])> {
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
    let f = f.as_bytes();
    Some((t.to_string(), [f[0], f[1]]))
}

/// Lowercase hex digits.
const HEX: &[u8; 16] = b"0123456789abcdef";

/// `out.len() / 2` random bytes as lowercase hex digits into `out` (no allocation).
fn random_hex_into(out: &mut [u8]) {
    let mut bytes = [0u8; 32];
    let raw = &mut bytes[..out.len() / 2];
    fill_random(raw);
    for (pair, b) in out.chunks_exact_mut(2).zip(raw.iter()) {
        pair[0] = HEX[usize::from(b >> 4)];
        pair[1] = HEX[usize::from(b & 0x0f)];
    }
    raw.fill(0);
}

/// `n` random bytes as lowercase hex.
pub fn random_hex(n: usize) -> String {
    let mut stack = [0u8; 32];
    let mut heap = Vec::new();
    let buf = if n <= stack.len() {
        &mut stack[..n]
    } else {
        heap.resize(n, 0);
        &mut heap[..]
    };
    fill_random(buf);
    stella_keys::hex(buf)
}

/// Bytes of system randomness each thread draws at once for ids ([`fill_random`]).
const POOL_BYTES: usize = 1024;

/// A thread's unused system randomness: `bytes[used..]` has never been handed out.
struct RandomPool {
    bytes: [u8; POOL_BYTES],
    used: usize,
}

thread_local! {
    static POOL: std::cell::RefCell<RandomPool> = const {
        std::cell::RefCell::new(RandomPool { bytes: [0; POOL_BYTES], used: POOL_BYTES })
    };
}

/// Fill `out` with system randomness (aws-lc's DRBG) for ids — trace, span and audit ids,
/// DPoP `jti`s: values that must be unpredictable and never repeat, not keys. Each call to
/// the DRBG costs a fixed ~2 µs (a reseed check, the CPU's RNG, two DRBG updates, locks)
/// whatever it returns, and a request needs three ids, so every thread draws 1 KiB at a
/// time and hands each byte out once (and wipes it). Large requests go to the DRBG directly.
fn fill_random(out: &mut [u8]) {
    if out.len() > POOL_BYTES / 4 {
        system_fill(out);
        return;
    }
    POOL.with_borrow_mut(|pool| {
        if POOL_BYTES - pool.used < out.len() {
            if SystemRandom::new().fill(&mut pool.bytes).is_err() {
                system_fill(out);
                return;
            }
            pool.used = 0;
        }
        let take = &mut pool.bytes[pool.used..pool.used + out.len()];
        out.copy_from_slice(take);
        take.fill(0);
        pool.used += out.len();
    });
}

/// `out` straight from the system RNG.
fn system_fill(out: &mut [u8]) {
    if SystemRandom::new().fill(out).is_err() {
        // The system RNG failing is not recoverable for a signing service; ids only need
        // uniqueness, so fall back to time-derived bytes rather than panicking.
        let t = time::OffsetDateTime::now_utc()
            .unix_timestamp_nanos()
            .to_be_bytes();
        for (i, b) in out.iter_mut().enumerate() {
            *b = t[i % t.len()];
        }
    }
}

/// A new audit id (UUID-v4 shaped, random).
pub(crate) fn new_audit_id() -> String {
    let mut h = [0u8; 32];
    random_hex_into(&mut h);
    audit_id_of(&h)
}

/// The audit id of 32 random hex digits `h`: `h[0..8]-h[8..12]-4h[13..16]-h[16..20]-h[20..32]`
/// (digit 12 gives way to the version `4`), written into one string of its final size.
fn audit_id_of(h: &[u8; 32]) -> String {
    let mut id = String::with_capacity(36);
    let push = |id: &mut String, digits: &[u8]| id.extend(digits.iter().map(|&d| char::from(d)));
    push(&mut id, &h[0..8]);
    id.push('-');
    push(&mut id, &h[8..12]);
    id.push_str("-4");
    push(&mut id, &h[13..16]);
    id.push('-');
    push(&mut id, &h[16..20]);
    id.push('-');
    push(&mut id, &h[20..32]);
    id
}

/// The time of an audit record: RFC 3339, UTC, milliseconds.
pub(crate) fn now_rfc3339() -> String {
    rfc3339_millis(time::OffsetDateTime::now_utc())
}

/// `t` as `YYYY-MM-DDTHH:MM:SS.mmmZ` (`t` in UTC), written digit by digit into a string of
/// its size: the bytes of the `time` crate's format description
/// `[year]-[month]-[day]T[hour]:[minute]:[second].[subsecond digits:3]Z`, without
/// interpreting the description on every record. Years outside 0..=9999 (which that
/// description writes differently) go through it.
fn rfc3339_millis(t: time::OffsetDateTime) -> String {
    let year = t.year();
    let Ok(year) = u16::try_from(year) else {
        return rfc3339_millis_described(t);
    };
    if year > 9999 {
        return rfc3339_millis_described(t);
    }
    let mut b = [0u8; 24];
    let mut put = |at: usize, v: u32, digits: usize| {
        let mut v = v;
        for i in (at..at + digits).rev() {
            b[i] = b'0' + (v % 10) as u8;
            v /= 10;
        }
    };
    put(0, u32::from(year), 4);
    put(5, u32::from(u8::from(t.month())), 2);
    put(8, u32::from(t.day()), 2);
    put(11, u32::from(t.hour()), 2);
    put(14, u32::from(t.minute()), 2);
    put(17, u32::from(t.second()), 2);
    put(20, u32::from(t.millisecond()), 3);
    for (at, c) in [
        (4, b'-'),
        (7, b'-'),
        (10, b'T'),
        (13, b':'),
        (16, b':'),
        (19, b'.'),
        (23, b'Z'),
    ] {
        b[at] = c;
    }
    // Digits and ASCII separators only.
    String::from_utf8_lossy(&b).into_owned()
}

/// [`rfc3339_millis`] by the `time` crate's format description (what every record's time
/// was written with before; the reference of the test, and the way for years past 9999).
fn rfc3339_millis_described(t: time::OffsetDateTime) -> String {
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

    #[test]
    fn ids_are_hex_of_the_asked_length_and_never_repeat_across_pool_refills() {
        use std::collections::HashSet;
        // Several refills of the pool on this thread, and ids from other threads.
        let mut seen = HashSet::new();
        for n in [8usize, 16, 1, 31, 32, 33, 300] {
            for _ in 0..(3 * POOL_BYTES / n.max(8)) {
                let h = random_hex(n);
                assert_eq!(h.len(), 2 * n);
                assert!(is_lower_hex(&h, 2 * n), "{h}");
                if n >= 8 {
                    assert!(seen.insert(h), "an id repeated");
                }
            }
        }
        let others: Vec<Vec<String>> = (0..4)
            .map(|_| std::thread::spawn(|| (0..200).map(|_| random_hex(16)).collect()))
            .map(|t| t.join().unwrap())
            .collect();
        for h in others.into_iter().flatten() {
            assert!(seen.insert(h), "an id repeated across threads");
        }
        assert_eq!(random_hex(0), "");
    }

    /// The old `header()` route (`format!` then `HeaderValue::from_str`) and the new one
    /// give the same bytes, over fresh contexts and every kind of incoming header.
    #[test]
    fn header_value_is_the_formatted_header() {
        let mut inputs: Vec<Option<String>> = vec![
            None,
            Some("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01".into()),
            Some("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-00".into()),
            Some(" 00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-ff ".into()),
            Some("01-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-09-more".into()),
            Some("00-4BF92F3577B34DA6A3CE929D0E0E4736-00f067aa0ba902b7-01".into()),
            Some("garbage".into()),
        ];
        inputs.extend((0..50).map(|_| {
            Some(format!(
                "00-{}-{}-{}",
                random_hex(16),
                random_hex(8),
                random_hex(1)
            ))
        }));
        for input in &inputs {
            let tc = TraceContext::from_header(input.as_deref());
            let old = axum::http::HeaderValue::from_str(&tc.header()).ok();
            assert_eq!(tc.header_value(), old, "{input:?}");
            assert_eq!(tc.header().len(), TRACEPARENT_LEN);
            assert!(is_lower_hex(tc.span_id(), 16));
            assert!(is_lower_hex(tc.flags(), 2));
        }
        // The flags of a valid incoming header are kept; a fresh context samples (`01`).
        let t = TraceContext::from_header(inputs[2].as_deref());
        assert_eq!(t.flags(), "00");
        assert_eq!(TraceContext::from_header(None).flags(), "01");
        // An id of another length (never made here) still answers as the old route did.
        let mut odd = TraceContext::from_header(None);
        odd.trace_id = "abc".into();
        assert_eq!(
            odd.header_value(),
            axum::http::HeaderValue::from_str(&odd.header()).ok()
        );
        odd.trace_id = "bad\nid".into();
        assert_eq!(odd.header_value(), None);
    }

    /// The audit id written in one string is the old `format!` of the same digits.
    #[test]
    fn audit_ids_are_the_old_format_of_the_same_digits() {
        for _ in 0..200 {
            let h = random_hex(16);
            let old = format!(
                "{}-{}-4{}-{}-{}",
                &h[0..8],
                &h[8..12],
                &h[13..16],
                &h[16..20],
                &h[20..32]
            );
            let digits: [u8; 32] = h.as_bytes().try_into().unwrap();
            assert_eq!(audit_id_of(&digits), old);
        }
        let id = new_audit_id();
        assert_eq!(id.len(), 36);
        assert_eq!(&id[14..15], "4");
        assert_ne!(new_audit_id(), id);
    }

    #[test]
    fn pool_bytes_are_handed_out_once_and_wiped() {
        let mut a = [0u8; 16];
        fill_random(&mut a);
        POOL.with_borrow(|pool| {
            assert!(pool.used >= 16);
            // What was handed out is gone from the pool.
            assert!(pool.bytes[..pool.used].iter().all(|b| *b == 0));
        });
        let mut b = [0u8; 16];
        fill_random(&mut b);
        assert_ne!(a, b);
        assert_ne!(a, [0u8; 16]);
    }

    #[test]
    fn record_times_are_the_bytes_of_the_format_description() {
        let mut seen = 0;
        let mut check = |t: time::OffsetDateTime| {
            assert_eq!(rfc3339_millis(t), rfc3339_millis_described(t), "{t:?}");
            seen += 1;
        };
        // Edges: epoch, leap days, ends of years and days, every millisecond digit
        // pattern, the last instant of year 9999; and years the description writes
        // otherwise (negative, above 9999) — those take the described route.
        for (y, m, d, h, mi, s, ms) in [
            (1970, 1, 1, 0, 0, 0, 0),
            (2000, 2, 29, 23, 59, 59, 999),
            (2024, 2, 29, 12, 0, 0, 1),
            (2026, 12, 31, 23, 59, 59, 10),
            (2026, 12, 6, 21, 30, 5, 100),
            (1, 1, 1, 0, 0, 0, 0),
            (0, 1, 1, 0, 0, 0, 0),
            (9999, 12, 31, 23, 59, 59, 999),
            (-1, 6, 15, 1, 2, 3, 4),
            (-9999, 1, 1, 0, 0, 0, 0),
        ] {
            let date =
                time::Date::from_calendar_date(y, time::Month::try_from(m).unwrap(), d).unwrap();
            let t = date.with_hms_milli(h, mi, s, ms).unwrap().assume_utc();
            check(t);
            check(t + time::Duration::nanoseconds(999_999));
        }
        // Pseudo-random instants over years 0..=9999 and around now, with sub-millisecond
        // parts (truncated, never rounded).
        let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
        let lo = time::macros::datetime!(0000-01-01 0:00 UTC).unix_timestamp();
        let hi = time::macros::datetime!(9999-12-31 23:59:59 UTC).unix_timestamp();
        let span = u64::try_from(hi - lo).unwrap();
        let now = time::OffsetDateTime::now_utc();
        for i in 0..20_000 {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            let nanos = i64::try_from(x % 1_000_000_000).unwrap();
            let t = if i % 2 == 0 {
                let secs = lo + i64::try_from(x % span).unwrap();
                time::OffsetDateTime::from_unix_timestamp(secs).unwrap()
            } else {
                now + time::Duration::seconds(i64::try_from(x % 1_000_000).unwrap() - 500_000)
            };
            check(t.replace_nanosecond(0).unwrap() + time::Duration::nanoseconds(nanos));
        }
        assert!(seen > 20_000);
        assert_eq!(now_rfc3339().len(), 24);
    }
}
