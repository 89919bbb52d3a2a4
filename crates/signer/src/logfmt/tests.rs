//! [`JsonLines`] against the stock formatter it stands for: the same events through both,
//! the same bytes out.

use std::fmt;
use std::io;
use std::sync::{Arc, Mutex};

use tracing::{debug, error, info, info_span, trace, warn};
use tracing_subscriber::fmt::format::Writer;
use tracing_subscriber::fmt::time::FormatTime;
use tracing_subscriber::fmt::MakeWriter;

use super::JsonLines;

#[derive(Clone)]
struct Fixed(&'static str);

impl FormatTime for Fixed {
    fn format_time(&self, w: &mut Writer<'_>) -> fmt::Result {
        w.write_str(self.0)
    }
}

#[derive(Clone, Default)]
struct Capture(Arc<Mutex<Vec<u8>>>);

impl io::Write for Capture {
    fn write(&mut self, b: &[u8]) -> io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(b);
        Ok(b.len())
    }
    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

impl<'a> MakeWriter<'a> for Capture {
    type Writer = Capture;
    fn make_writer(&'a self) -> Capture {
        self.clone()
    }
}

/// The output of `events` under the service's stock configuration and under [`JsonLines`].
fn both(time: &'static str, events: impl Fn()) -> (Vec<u8>, Vec<u8>) {
    let (old, new) = (Capture::default(), Capture::default());
    let stock = tracing_subscriber::fmt()
        .json()
        .flatten_event(true)
        .with_current_span(false)
        .with_timer(Fixed(time))
        .with_max_level(tracing::Level::TRACE)
        .with_writer(old.clone())
        .finish();
    tracing::subscriber::with_default(stock, &events);
    let ours = tracing_subscriber::fmt()
        .json()
        .flatten_event(true)
        .with_current_span(false)
        .with_max_level(tracing::Level::TRACE)
        .with_writer(new.clone())
        .event_format(JsonLines::with_timer(Fixed(time)))
        .finish();
    tracing::subscriber::with_default(ours, &events);
    let take = |c: Capture| std::mem::take(&mut *c.0.lock().unwrap());
    (take(old), take(new))
}

fn assert_same(time: &'static str, events: impl Fn()) -> usize {
    let (old, new) = both(time, events);
    assert!(!old.is_empty(), "the stock formatter wrote nothing");
    assert_eq!(
        String::from_utf8_lossy(&new),
        String::from_utf8_lossy(&old),
        "bytes differ"
    );
    assert_eq!(new, old);
    old.iter().filter(|&&b| b == b'\n').count()
}

const TIME: &str = "2026-12-06T22:30:00.123456Z";

/// Strings with everything serde_json escapes or passes through.
const STRINGS: &[&str] = &[
    "",
    "plain",
    "quote \" backslash \\ slash /",
    "\n\r\t\u{8}\u{c}",
    "\u{0}\u{1}\u{1f}\u{7f}\u{80}\u{9f}",
    "\u{2028}\u{2029} é ß 中文 🙂 \u{10ffff}",
    "\u{1b}[31mred\u{1b}[0m",
    "{\"json\":[1,2]}",
    "trailing backslash \\",
];

#[derive(Debug)]
#[allow(dead_code)] // read only through Debug
struct Thing<'a> {
    name: &'a str,
    n: i32,
    list: Vec<f64>,
    opt: Option<char>,
}

struct Shown<'a>(&'a str);

impl fmt::Display for Shown<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // In pieces, as a Display impl often writes.
        for part in self.0.split(' ') {
            f.write_str(part)?;
            f.write_str("·")?;
        }
        Ok(())
    }
}

#[test]
fn the_request_line_is_byte_identical() {
    let method = axum::http::Method::POST;
    let lines = assert_same(TIME, || {
        for (route, status, code, audit_id, ms) in [
            ("sign_dsse", 200u16, "-", "a1b2c3", 0.431_f64),
            ("sign_statement", 403, "forbidden", "", 12.0),
            ("verify", 400, "bad_request", "x\"y", 1e-7),
            ("other", 500, "internal", "é", f64::MAX),
        ] {
            let trace_id = "4bf92f3577b34da6a3ce929d0e0e4736";
            info!(
                trace_id = %trace_id, route, method = %method, status, code, audit_id,
                latency_ms = ms, "request"
            );
            debug!(trace_id = %trace_id, route, status, latency_ms = ms, "request");
        }
    });
    assert_eq!(lines, 8);
}

#[test]
fn every_field_type_is_byte_identical() {
    let err = io::Error::other("disk \"full\"\n");
    let lines = assert_same(TIME, || {
        for s in STRINGS {
            info!(value = *s, "str");
            info!(value = ?s, "debug of a str");
            info!(value = %s, "display of a str");
            info!(value = %Shown(s), "display in pieces");
            info!("message with {s} inside");
            info!(message = *s);
            warn!(message = %s, other = *s);
        }
        for v in [i64::MIN, -1, 0, 1, i64::MAX] {
            info!(v, neg = -v.saturating_add(1), "i64");
        }
        for v in [0u64, 1, u64::MAX] {
            info!(v, "u64");
        }
        info!(big = i128::MIN, ubig = u128::MAX, "128-bit");
        for v in [
            0.0,
            -0.0,
            0.1,
            1.0,
            -1.5,
            1e300,
            5e-324,
            f64::MAX,
            f64::MIN_POSITIVE,
            f64::NAN,
            f64::INFINITY,
            f64::NEG_INFINITY,
            123_456_789.123_456_79,
        ] {
            info!(v, "f64");
        }
        info!(yes = true, no = false, "bools");
        let thing = Thing {
            name: "n\"a\u{1}me",
            n: -3,
            list: vec![1.0, f64::NAN, 2.5],
            opt: Some('\u{2028}'),
        };
        info!(thing = ?thing, pretty = format!("{thing:#?}"), "debug of a struct");
        info!(none = ?None::<u8>, unit = ?(), "debug of nothing");
        error!(
            error = &err as &(dyn std::error::Error + 'static),
            "an error"
        );
        info!(bytes = tracing::field::display(format_args!("{:?}", b"\x00\xff")));
        info!(
            empty = tracing::field::Empty,
            after = 1,
            "an empty field is left out"
        );
        info!(a.b.c = 1, "dotted name");
        info!({ "odd \"name\"\n" = 2 }, "quoted name");
        info!(
            level = "dup",
            target = "dup",
            timestamp = 3,
            "names of the line's own members"
        );
        info!(target: "other::target", x = 1, "another target");
        info!(target: "odd \"target\" é", "odd target");
        info!(r#type = "raw identifier");
        info!(s = "no message");
        trace!("trace");
        debug!("debug");
        info!("info");
        warn!("warn");
        error!("error");
    });
    assert!(lines > 80, "{lines} lines");
}

#[test]
fn many_random_strings_are_byte_identical() {
    // Characters from every escaping class, strung together by a fixed LCG.
    let palette: Vec<char> =
        "aZ09 \"\\/\n\r\t\u{0}\u{1}\u{1f}\u{7f}\u{a0}é中🙂\u{2028}\u{fffd}{}:,"
            .chars()
            .collect();
    let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
    let mut strings = Vec::new();
    for _ in 0..500 {
        x = x.wrapping_mul(6_364_136_223_846_793_005).wrapping_add(1);
        let len = (x >> 58) as usize;
        let mut s = String::new();
        for _ in 0..len {
            x = x.wrapping_mul(6_364_136_223_846_793_005).wrapping_add(1);
            s.push(palette[(x >> 33) as usize % palette.len()]);
        }
        strings.push((s, f64::from_bits(x), x as i64));
    }
    let lines = assert_same(TIME, || {
        for (s, f, i) in &strings {
            info!(s = s.as_str(), d = ?s, f, i, "{s}");
        }
    });
    assert_eq!(lines, 500);
}

#[test]
fn events_in_spans_and_odd_timestamps_are_byte_identical() {
    // In a span the stock formatter lists the spans; ours hands such events to it.
    let lines = assert_same(TIME, || {
        info!(outside = 1, "before");
        let span = info_span!("outer", id = "x\"y", n = 3);
        {
            let _g = span.enter();
            info!(inside = 1, "in a span");
            let inner = info_span!("inner", z = 1.5);
            let _g2 = inner.enter();
            info!("in two spans");
            info!(parent: None, "explicit root inside a span");
        }
        info!(parent: &span, "explicit parent outside it");
        info!(outside = 2, "after");
    });
    assert_eq!(lines, 6);
    // A timestamp with characters to escape, and one longer than the stack buffer.
    assert_same("quote\" and \u{1} and é", || info!("odd clock"));
    assert_same(
        "a timestamp far longer than any date the system clock writes, past sixty-four bytes",
        || info!("long clock"),
    );
}

#[test]
fn a_huge_event_and_a_nested_event_are_byte_identical() {
    struct LogsWhenShown;
    impl fmt::Debug for LogsWhenShown {
        fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            info!(nested = true, "logged while formatting another event");
            f.write_str("shown")
        }
    }
    let big = "x\"".repeat(40_000);
    let lines = assert_same(TIME, || {
        info!(big = big.as_str(), "huge");
        info!("small after the huge one");
        info!(v = ?LogsWhenShown, "outer");
    });
    // tracing drops an event raised while another is dispatched: three lines from both.
    assert_eq!(lines, 3);
}

#[test]
fn the_system_clock_line_has_the_stock_shape() {
    // Real clocks differ between two runs; the shape and the rest of the bytes must not.
    let (old, new) = {
        let (old, new) = (Capture::default(), Capture::default());
        let stock = tracing_subscriber::fmt()
            .json()
            .flatten_event(true)
            .with_current_span(false)
            .with_writer(old.clone())
            .finish();
        tracing::subscriber::with_default(stock, || info!(a = 1, "clock"));
        let ours = tracing_subscriber::fmt()
            .json()
            .flatten_event(true)
            .with_current_span(false)
            .with_writer(new.clone())
            .event_format(JsonLines::new())
            .finish();
        tracing::subscriber::with_default(ours, || info!(a = 1, "clock"));
        let take =
            |c: Capture| String::from_utf8(std::mem::take(&mut *c.0.lock().unwrap())).unwrap();
        (take(old), take(new))
    };
    // {"timestamp":"2026-12-06T22:30:00.123456Z", ...
    let cut = |s: &str| (s[..14].to_string(), s[40..].to_string());
    assert_eq!(cut(&new), cut(&old));
    assert_eq!(new.len(), old.len());
    assert!(new.starts_with("{\"timestamp\":\"2"), "{new}");
    assert!(
        new[40..].starts_with("Z\",\"level\":\"INFO\",\"message\":\"clock\",\"a\":1,"),
        "{new}"
    );
}
