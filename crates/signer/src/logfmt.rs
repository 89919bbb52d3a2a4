//! The JSON log line of `stella signer serve`, written by our own event formatter.
//!
//! [`JsonLines`] writes exactly the bytes of tracing-subscriber's JSON formatter as the
//! service configures it (`.json().flatten_event(true).with_current_span(false)`): one
//! object per line, `timestamp`, `level`, the event's fields in their order (`message`
//! among them), `target`. It builds the line in one per-thread buffer with `serde_json`'s
//! own escaping and number formatting and hands it to the writer at once, where the stock
//! formatter goes through a `serde_json::Serializer` over an `io::Write` adaptor onto a
//! `fmt::Write` (a UTF-8 check and a dynamic call per piece) and formats the timestamp
//! into a fresh `String`: the request log line cost ~40k instructions per request there
//! (issue #15 item 3).
//!
//! Every case it does not write itself goes to the stock formatter, so the output stays
//! the stock output: an event inside a span (the stock formatter then adds `spans`), and
//! an event whose field fails to format (a `Debug` or `Display` impl returning an error;
//! the stock formatter then refuses the event as before). Test: `tests` below compare the
//! bytes of both formatters over many events.

use std::cell::RefCell;
use std::fmt;

use tracing::field::{Field, Visit};
use tracing::{Event, Level, Subscriber};
use tracing_subscriber::fmt::format::{Format, Json, Writer};
use tracing_subscriber::fmt::time::{FormatTime, SystemTime};
use tracing_subscriber::fmt::{FmtContext, FormatEvent, FormatFields};
use tracing_subscriber::registry::LookupSpan;

/// The service's JSON event formatter (see the module documentation). Install it with the
/// stock field formatter of `.json()`:
/// `tracing_subscriber::fmt().json().flatten_event(true).with_current_span(false).event_format(JsonLines::new())`.
#[derive(Debug)]
pub struct JsonLines<T = SystemTime> {
    timer: T,
    stock: Format<Json, T>,
}

impl Default for JsonLines {
    fn default() -> Self {
        Self::new()
    }
}

impl JsonLines {
    /// The formatter, with the stock formatter it stands for (and falls back to).
    pub fn new() -> Self {
        Self::with_timer(SystemTime)
    }
}

impl<T: FormatTime + Clone> JsonLines<T> {
    /// The formatter with another clock (the tests' fixed one).
    pub fn with_timer(timer: T) -> Self {
        Self {
            stock: Format::default()
                .json()
                .flatten_event(true)
                .with_current_span(false)
                .with_timer(timer.clone()),
            timer,
        }
    }
}

thread_local! {
    static LINE: RefCell<Vec<u8>> = const { RefCell::new(Vec::new()) };
}

/// A buffer that is kept between lines unless it grew past this (a rare huge event).
const KEEP: usize = 16 * 1024;

impl<S, N, T> FormatEvent<S, N> for JsonLines<T>
where
    T: FormatTime,
    S: Subscriber + for<'a> LookupSpan<'a>,
    N: for<'w> FormatFields<'w> + 'static,
{
    fn format_event(
        &self,
        ctx: &FmtContext<'_, S, N>,
        mut writer: Writer<'_>,
        event: &Event<'_>,
    ) -> fmt::Result {
        // The stock formatter lists the spans of an event that has one: leave it to it.
        if event
            .parent()
            .and_then(|id| ctx.span(id))
            .or_else(|| ctx.lookup_current())
            .is_some()
        {
            return self.stock.format_event(ctx, writer, event);
        }
        let written = LINE.with(|cell| match cell.try_borrow_mut() {
            Ok(mut buf) => {
                let r = write_line(&self.timer, &mut buf, &mut writer, event);
                if buf.capacity() > KEEP {
                    *buf = Vec::new();
                } else {
                    buf.clear();
                }
                r
            }
            // A field's `Debug` logged an event of its own while this line was built.
            Err(_) => write_line(&self.timer, &mut Vec::new(), &mut writer, event),
        });
        match written {
            Some(r) => r,
            None => self.stock.format_event(ctx, writer, event),
        }
    }
}

/// Writes one line into `buf` and then to `writer`; `None` when the stock formatter has to
/// write it (a field failed to format, or the timestamp is longer than the stack buffer;
/// nothing was written to `writer`).
fn write_line(
    timer: &impl FormatTime,
    buf: &mut Vec<u8>,
    writer: &mut Writer<'_>,
    event: &Event<'_>,
) -> Option<fmt::Result> {
    buf.clear();
    buf.extend_from_slice(b"{\"timestamp\":");
    let mut ts = Timestamp::default();
    if timer.format_time(&mut Writer::new(&mut ts)).is_err() {
        return None;
    }
    string(buf, ts.as_str())?;
    buf.extend_from_slice(b",\"level\":\"");
    buf.extend_from_slice(level_name(event.metadata().level()).as_bytes());
    buf.push(b'"');
    let mut fields = Fields { buf, ok: true };
    event.record(&mut fields);
    if !fields.ok {
        return None;
    }
    buf.extend_from_slice(b",\"target\":");
    string(buf, event.metadata().target())?;
    buf.extend_from_slice(b"}\n");
    // serde_json writes UTF-8 only; the check cannot fail.
    Some(match std::str::from_utf8(buf) {
        Ok(s) => writer.write_str(s),
        Err(_) => Err(fmt::Error),
    })
}

/// tracing-serde's names of the levels.
fn level_name(level: &Level) -> &'static str {
    match *level {
        Level::ERROR => "ERROR",
        Level::WARN => "WARN",
        Level::INFO => "INFO",
        Level::DEBUG => "DEBUG",
        Level::TRACE => "TRACE",
    }
}

/// A JSON string as serde_json writes it.
fn string(buf: &mut Vec<u8>, s: &str) -> Option<()> {
    serde_json::to_writer(buf, s).ok()
}

/// The stock visitor's `,"name":value` for each field (tracing-serde's `SerdeMapVisitor`:
/// the same methods overridden, so the defaults route `i128`, errors and bytes the same
/// way), stopping at the first that fails.
struct Fields<'a> {
    buf: &'a mut Vec<u8>,
    ok: bool,
}

impl Fields<'_> {
    fn entry<T: serde::Serialize + ?Sized>(&mut self, field: &Field, value: &T) {
        if !self.ok {
            return;
        }
        self.buf.push(b',');
        self.ok = string(self.buf, field.name()).is_some() && {
            self.buf.push(b':');
            serde_json::to_writer(&mut *self.buf, value).is_ok()
        };
    }
}

impl Visit for Fields<'_> {
    fn record_bool(&mut self, field: &Field, value: bool) {
        self.entry(field, &value);
    }

    fn record_debug(&mut self, field: &Field, value: &dyn fmt::Debug) {
        self.entry(field, &format_args!("{value:?}"));
    }

    fn record_u64(&mut self, field: &Field, value: u64) {
        self.entry(field, &value);
    }

    fn record_i64(&mut self, field: &Field, value: i64) {
        self.entry(field, &value);
    }

    fn record_f64(&mut self, field: &Field, value: f64) {
        self.entry(field, &value);
    }

    fn record_str(&mut self, field: &Field, value: &str) {
        self.entry(field, value);
    }
}

/// The timestamp's text on the stack (`2026-12-06T22:30:00.123456Z` is 27 bytes; a year
/// past 9999 writes more, up to the 64 kept here).
struct Timestamp {
    bytes: [u8; 64],
    len: usize,
}

impl Default for Timestamp {
    fn default() -> Self {
        Self {
            bytes: [0; 64],
            len: 0,
        }
    }
}

impl Timestamp {
    fn as_str(&self) -> &str {
        std::str::from_utf8(&self.bytes[..self.len]).unwrap_or_default()
    }
}

impl fmt::Write for Timestamp {
    fn write_str(&mut self, s: &str) -> fmt::Result {
        let end = self.len + s.len();
        let dst = self.bytes.get_mut(self.len..end).ok_or(fmt::Error)?;
        dst.copy_from_slice(s.as_bytes());
        self.len = end;
        Ok(())
    }
}

#[cfg(test)]
mod tests;
