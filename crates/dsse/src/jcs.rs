//! RFC 8785 JSON Canonicalization Scheme (JCS): one byte string per JSON value, so that a digest
//! or signature over JSON survives re-serialization by any conforming implementation.
//!
//! The module has two halves. [`parse_strict`] is a small hand-written recursive-descent parser
//! (not `serde_json::from_slice`) because JCS input must be rejected where serde_json is lenient
//! or silent: duplicate member names at any depth (serde_json keeps the last one), lone UTF-16
//! surrogates, `NaN`/`Infinity` and numbers that overflow an IEEE-754 double, and inputs that are
//! too large or too deeply nested; its errors carry line and column. The writer ([`write_value`],
//! [`write_str`]) emits the canonical form straight into a caller's `Vec<u8>` with no intermediate
//! `String`s: strings are copied in runs between the few bytes that need escaping (found with a
//! 256-entry table), numbers are exact safe integers written digit by digit or otherwise the
//! ECMAScript `Number.prototype.toString` form from `ryu_js`, and object members are written in
//! UTF-16 code-unit order. `serde_json::Map` iterates in UTF-8 byte order, which equals UTF-16
//! order unless a key holds a character in U+E000..=U+FFFF while another holds a supplementary-
//! plane character; so members are written in iteration order while the same pass checks that
//! keys strictly increase and hold no lead byte `0xEE..`, and only when that check fails are the
//! remaining members sorted by UTF-16 code units (see `write_object`). The check also keeps the
//! output correct if `serde_json/preserve_order` is ever switched on by feature unification.
//! [`to_vec`] goes through `serde_json::Value`, after a pass that rejects non-finite floats,
//! which `serde_json::to_value` would otherwise silently turn into `null`. [`from_slice`] runs
//! the same strict parser straight into a typed value (serde), without the tree.

use std::borrow::Cow;
use std::cmp::Ordering;
use std::fmt;

use serde::ser::{self, Serialize};
use serde_json::map::Entry;
use serde_json::{Map, Number, Value};

mod de;
pub use de::{from_slice, FromSliceError, RawJson};

/// Largest input [`parse_strict`] and [`canonicalize`] accept, in bytes.
pub const MAX_INPUT_BYTES: usize = 64 * 1024 * 1024;

/// Deepest nesting of arrays and objects accepted (a top-level `[]` has depth 1).
pub const MAX_DEPTH: usize = 128;

/// Largest integer magnitude an IEEE-754 double holds exactly together with all smaller ones
/// (2^53). Integers up to this are written digit by digit; larger ones as the nearest double.
const MAX_EXACT_INT: u64 = 1 << 53;

/// Why JSON could not be parsed strictly or written canonically.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum JcsError {
    /// The input is not JSON as RFC 8259 defines it.
    #[error("invalid JSON at line {line}, column {column}: {msg}")]
    Syntax {
        /// 1-based line of the offending character.
        line: usize,
        /// 1-based column (in characters) of the offending character.
        column: usize,
        /// What was wrong.
        msg: String,
    },
    /// The input is not valid UTF-8.
    #[error("invalid UTF-8 at byte offset {offset}; JSON text must be UTF-8")]
    InvalidUtf8 {
        /// Offset of the first byte that is not valid UTF-8.
        offset: usize,
    },
    /// A `\uXXXX` escape encodes a UTF-16 surrogate that is not part of a valid pair.
    #[error("lone UTF-16 surrogate escape at line {line}, column {column}; RFC 8785 requires valid Unicode")]
    LoneSurrogate {
        /// 1-based line of the escape.
        line: usize,
        /// 1-based column (in characters) of the escape.
        column: usize,
    },
    /// An object has two members with the same name (after unescaping).
    #[error("duplicate object key {0:?}; RFC 8785 forbids duplicate member names")]
    DuplicateKey(String),
    /// A number is NaN, infinite, or too large for an IEEE-754 double.
    #[error("number is NaN, infinite or out of IEEE-754 double range; RFC 8785 allows only finite numbers")]
    NonFinite,
    /// Arrays and objects nest deeper than [`MAX_DEPTH`].
    #[error("JSON nesting is deeper than the limit of {MAX_DEPTH} levels")]
    TooDeep,
    /// The input is larger than the limit.
    #[error("JSON input is larger than the limit of {limit} bytes")]
    TooLarge {
        /// The limit that was exceeded, in bytes.
        limit: usize,
    },
    /// A Rust value could not be converted to JSON (for example a map with non-string keys).
    #[error("cannot convert value to JSON: {0}")]
    Serialize(String),
}

// ---------------------------------------------------------------------------------------------
// Public entry points
// ---------------------------------------------------------------------------------------------

/// Strictly parses one JSON text.
///
/// Rejects duplicate object keys at any depth, trailing data after the value, invalid UTF-8, lone
/// surrogate escapes, `NaN`/`Infinity` and numbers overflowing a double, nesting deeper than
/// [`MAX_DEPTH`], and input larger than [`MAX_INPUT_BYTES`]. Whitespace around the value is
/// allowed; a byte-order mark is not.
pub fn parse_strict(input: &[u8]) -> Result<Value, JcsError> {
    let mut parser = start(input)?;
    let value = parser.parse_value(0)?;
    parser.finish()?;
    Ok(value)
}

/// Checks the bounds [`parse_strict`] puts on its input (size, UTF-8) and returns a parser at
/// the first value (leading whitespace skipped).
fn start(input: &[u8]) -> Result<Parser<'_>, JcsError> {
    if input.len() > MAX_INPUT_BYTES {
        return Err(JcsError::TooLarge {
            limit: MAX_INPUT_BYTES,
        });
    }
    let src = std::str::from_utf8(input).map_err(|e| JcsError::InvalidUtf8 {
        offset: e.valid_up_to(),
    })?;
    let mut parser = Parser { src, pos: 0 };
    parser.skip_ws();
    Ok(parser)
}

/// Strictly parses `input` (see [`parse_strict`]) and returns its canonical form.
pub fn canonicalize(input: &[u8]) -> Result<Vec<u8>, JcsError> {
    let value = parse_strict(input)?;
    // Canonical output is never longer than a typical pretty-printed input; one allocation.
    let mut out = Vec::with_capacity(input.len());
    write_value(&value, &mut out)?;
    Ok(out)
}

/// Appends the canonical form of `value` to `out`.
///
/// Object members are sorted by UTF-16 code units, numbers use the ECMAScript format, strings use
/// the minimal escaping of RFC 8785 §3.2.2.2. Fails only on a non-finite number or nesting deeper
/// than [`MAX_DEPTH`]; on failure `out` may hold a partial value.
pub fn write_value(value: &Value, out: &mut Vec<u8>) -> Result<(), JcsError> {
    write_nested(value, out, 0, Mode::Optimistic)
}

/// Appends the canonical JSON string literal (with quotes) for `s` to `out`.
///
/// Only `"`, `\` and the C0 controls U+0000..=U+001F are escaped: `\b \t \n \f \r` in short form,
/// the rest as lowercase `\u00xx`. Everything else, including U+007F and non-ASCII, is copied.
pub fn write_str(s: &str, out: &mut Vec<u8>) {
    write_str_flagged(s, out);
}

/// [`write_str`], also reporting whether `s` holds a UTF-8 lead byte `0xEE..` (a character at or
/// above U+E000), the only characters whose UTF-8 and UTF-16 orders can disagree.
fn write_str_flagged(s: &str, out: &mut Vec<u8>) -> bool {
    let bytes = s.as_bytes();
    let mut high = false;
    out.reserve(bytes.len() + 2);
    out.push(b'"');
    let mut start = 0;
    for (i, &b) in bytes.iter().enumerate() {
        let esc = ESCAPE[usize::from(b)];
        if esc == 0 {
            continue;
        }
        if esc == HIGH {
            high = true;
            continue;
        }
        out.extend_from_slice(&bytes[start..i]);
        if esc == b'u' {
            out.extend_from_slice(&[
                b'\\',
                b'u',
                b'0',
                b'0',
                HEX[usize::from(b >> 4)],
                HEX[usize::from(b & 0xf)],
            ]);
        } else {
            out.extend_from_slice(&[b'\\', esc]);
        }
        start = i + 1;
    }
    out.extend_from_slice(&bytes[start..]);
    out.push(b'"');
    high
}

/// Serializes `value` canonically, by way of `serde_json::Value`.
///
/// Non-finite `f32`/`f64` values are rejected with [`JcsError::NonFinite`] (plain
/// `serde_json::to_value` would turn them into `null`).
pub fn to_vec<T: Serialize + ?Sized>(value: &T) -> Result<Vec<u8>, JcsError> {
    value.serialize(FiniteCheck).map_err(|e| match e {
        CheckError::NonFinite => JcsError::NonFinite,
        CheckError::Custom(msg) => JcsError::Serialize(msg),
    })?;
    let value = serde_json::to_value(value).map_err(|e| JcsError::Serialize(e.to_string()))?;
    let mut out = Vec::with_capacity(256);
    write_value(&value, &mut out)?;
    Ok(out)
}

// ---------------------------------------------------------------------------------------------
// Writer
// ---------------------------------------------------------------------------------------------

/// Escape table: 0 = copy the byte; [`HIGH`] = copy, but note a lead byte `0xEE..`; `u` =
/// `\u00xx`; anything else = backslash + that byte.
static ESCAPE: [u8; 256] = {
    let mut table = [0u8; 256];
    let mut i = 0;
    while i < 0x20 {
        table[i] = b'u';
        i += 1;
    }
    i = 0xEE;
    while i < 0x100 {
        table[i] = HIGH;
        i += 1;
    }
    table[0x08] = b'b';
    table[0x09] = b't';
    table[0x0a] = b'n';
    table[0x0c] = b'f';
    table[0x0d] = b'r';
    table[b'"' as usize] = b'"';
    table[b'\\' as usize] = b'\\';
    table
};

/// [`ESCAPE`] marker for UTF-8 lead bytes `0xEE..=0xFF` (only `0xEE..=0xF4` occur).
const HIGH: u8 = 1;

static HEX: [u8; 16] = *b"0123456789abcdef";

/// How [`write_object`] establishes member order.
#[derive(Clone, Copy)]
enum Mode {
    /// Write members in iteration order while checking that order as it goes (one pass).
    Optimistic,
    /// Check all keys first, then write (two passes, but never rewrites anything).
    Checked,
}

/// What a [`write_members_optimistic`] pass found.
enum Outcome {
    /// All members written, in UTF-16 order.
    Done,
    /// Members before this index are written and, being free of characters at or above U+E000
    /// and byte-order smaller than the rest, precede all later members in UTF-16 order too;
    /// the member at the index has such a character, so the rest must be sorted.
    SortRest(usize),
    /// Iteration order is not byte order (only possible with `serde_json/preserve_order`).
    Unordered,
}

fn write_nested(
    value: &Value,
    out: &mut Vec<u8>,
    depth: usize,
    mode: Mode,
) -> Result<(), JcsError> {
    match value {
        Value::Null => out.extend_from_slice(b"null"),
        Value::Bool(true) => out.extend_from_slice(b"true"),
        Value::Bool(false) => out.extend_from_slice(b"false"),
        Value::Number(n) => write_number(n, out)?,
        Value::String(s) => write_str(s, out),
        Value::Array(items) => {
            let depth = enter(depth)?;
            out.push(b'[');
            let mut first = true;
            for item in items {
                if !first {
                    out.push(b',');
                }
                first = false;
                write_nested(item, out, depth, mode)?;
            }
            out.push(b']');
        }
        Value::Object(map) => write_object(map, out, enter(depth)?, mode)?,
    }
    Ok(())
}

/// Writes an object with members in UTF-16 code-unit order.
///
/// The common case costs one pass: members are written in iteration order while checking that
/// it is already the right order. When a key with a character at or above U+E000 turns up, the
/// members written so far are kept (they precede every later key) and only the rest is sorted.
/// When iteration order is not byte order at all, the partial output is discarded and the object
/// is rewritten in [`Mode::Checked`], whose descendants never discard; so each value is written
/// at most twice per enclosing object and the work stays polynomial even for hostile input.
fn write_object(
    map: &Map<String, Value>,
    out: &mut Vec<u8>,
    depth: usize,
    mode: Mode,
) -> Result<(), JcsError> {
    out.push(b'{');
    let start = out.len();
    let outcome = match mode {
        Mode::Optimistic => write_members_optimistic(map, out, depth)?,
        Mode::Checked if in_utf16_order(map) => {
            write_members(false, map.iter(), out, depth, mode)?;
            Outcome::Done
        }
        Mode::Checked => Outcome::Unordered,
    };
    let sorted_tail = match outcome {
        Outcome::Done => None,
        Outcome::SortRest(index) => Some(sorted_rest(map, index).map(|rest| (index, rest))),
        Outcome::Unordered => Some(None),
    };
    match sorted_tail {
        None => {}
        Some(Some((index, rest))) => {
            write_members(index > 0, rest.into_iter(), out, depth, mode)?;
        }
        Some(None) => {
            out.truncate(start);
            let all = sorted_all(map);
            write_members(false, all.into_iter(), out, depth, Mode::Checked)?;
        }
    }
    out.push(b'}');
    Ok(())
}

fn enter(depth: usize) -> Result<usize, JcsError> {
    let depth = depth + 1;
    if depth > MAX_DEPTH {
        return Err(JcsError::TooDeep);
    }
    Ok(depth)
}

fn write_members<'a>(
    mut comma: bool,
    members: impl Iterator<Item = (&'a String, &'a Value)>,
    out: &mut Vec<u8>,
    depth: usize,
    mode: Mode,
) -> Result<(), JcsError> {
    for (key, value) in members {
        if comma {
            out.push(b',');
        }
        comma = true;
        write_str(key, out);
        out.push(b':');
        write_nested(value, out, depth, mode)?;
    }
    Ok(())
}

/// The one-pass writer of [`Mode::Optimistic`]; see [`Outcome`].
fn write_members_optimistic(
    map: &Map<String, Value>,
    out: &mut Vec<u8>,
    depth: usize,
) -> Result<Outcome, JcsError> {
    let mut prev: Option<&[u8]> = None;
    for (index, (key, value)) in map.iter().enumerate() {
        let member_start = out.len();
        if let Some(prev) = prev {
            if prev >= key.as_bytes() {
                return Ok(Outcome::Unordered);
            }
            out.push(b',');
        }
        if write_str_flagged(key, out) {
            out.truncate(member_start);
            return Ok(Outcome::SortRest(index));
        }
        out.push(b':');
        write_nested(value, out, depth, Mode::Optimistic)?;
        prev = Some(key.as_bytes());
    }
    Ok(Outcome::Done)
}

/// The members from `index` on, sorted by UTF-16 code units; `None` if iteration order is not
/// strictly increasing byte order (then the members before `index` cannot be trusted either).
fn sorted_rest(map: &Map<String, Value>, index: usize) -> Option<Vec<(&String, &Value)>> {
    let mut rest = Vec::with_capacity(map.len().saturating_sub(index));
    let mut prev: Option<&[u8]> = None;
    for (i, (key, value)) in map.iter().enumerate() {
        if prev.is_some_and(|prev| prev >= key.as_bytes()) {
            return None;
        }
        prev = Some(key.as_bytes());
        if i >= index {
            rest.push((key, value));
        }
    }
    rest.sort_unstable_by(|a, b| cmp_utf16(a.0, b.0));
    Some(rest)
}

fn sorted_all(map: &Map<String, Value>) -> Vec<(&String, &Value)> {
    let mut members: Vec<(&String, &Value)> = map.iter().collect();
    members.sort_unstable_by(|a, b| cmp_utf16(a.0, b.0));
    members
}

/// True when iterating `map` already yields UTF-16 code-unit order: keys strictly increasing by
/// bytes (always so for serde_json's default `BTreeMap`), and none holding a lead byte `0xEE..`
/// (a character at or above U+E000), the only characters whose UTF-8 and UTF-16 orders can
/// disagree.
fn in_utf16_order(map: &Map<String, Value>) -> bool {
    let mut prev: Option<&[u8]> = None;
    for key in map.keys() {
        let key = key.as_bytes();
        if key.iter().any(|&b| b >= 0xEE) {
            return false;
        }
        if prev.is_some_and(|prev| prev >= key) {
            return false;
        }
        prev = Some(key);
    }
    true
}

fn cmp_utf16(a: &str, b: &str) -> Ordering {
    a.encode_utf16().cmp(b.encode_utf16())
}

fn write_number(n: &Number, out: &mut Vec<u8>) -> Result<(), JcsError> {
    if let Some(u) = n.as_u64() {
        if u <= MAX_EXACT_INT {
            write_u64(u, out);
        } else {
            // The ECMAScript value is the nearest double (`as` rounds to nearest, ties to even).
            write_f64(u as f64, out)?;
        }
    } else if let Some(i) = n.as_i64() {
        let magnitude = i.unsigned_abs();
        if magnitude <= MAX_EXACT_INT {
            if i < 0 {
                out.push(b'-');
            }
            write_u64(magnitude, out);
        } else {
            write_f64(i as f64, out)?;
        }
    } else if let Some(f) = n.as_f64() {
        write_f64(f, out)?;
    } else {
        // Only reachable with serde_json's arbitrary_precision, which this crate does not enable.
        return Err(JcsError::NonFinite);
    }
    Ok(())
}

fn write_f64(f: f64, out: &mut Vec<u8>) -> Result<(), JcsError> {
    if !f.is_finite() {
        return Err(JcsError::NonFinite);
    }
    let magnitude = f.abs();
    if magnitude == 0.0 {
        // Covers -0.0, which ECMAScript writes as "0".
        out.push(b'0');
    } else if magnitude <= MAX_EXACT_INT as f64 && f.fract() == 0.0 {
        // Exact small integers: same text as ryu_js, without the float formatting work.
        if f < 0.0 {
            out.push(b'-');
        }
        write_u64(magnitude as u64, out);
    } else {
        let mut buf = ryu_js::Buffer::new();
        out.extend_from_slice(buf.format_finite(f).as_bytes());
    }
    Ok(())
}

fn write_u64(mut n: u64, out: &mut Vec<u8>) {
    let mut buf = [0u8; 20];
    let mut i = buf.len();
    loop {
        i -= 1;
        buf[i] = b'0' + (n % 10) as u8;
        n /= 10;
        if n == 0 {
            break;
        }
    }
    out.extend_from_slice(&buf[i..]);
}

// ---------------------------------------------------------------------------------------------
// Strict parser
// ---------------------------------------------------------------------------------------------

struct Parser<'a> {
    src: &'a str,
    pos: usize,
}

impl<'a> Parser<'a> {
    fn peek(&self) -> Option<u8> {
        self.src.as_bytes().get(self.pos).copied()
    }

    fn rest(&self) -> &[u8] {
        self.src.as_bytes().get(self.pos..).unwrap_or_default()
    }

    /// After the top-level value: only whitespace may follow.
    fn finish(&mut self) -> Result<(), JcsError> {
        self.skip_ws();
        if self.pos != self.src.len() {
            return Err(self.syntax("trailing characters after the JSON value"));
        }
        Ok(())
    }

    fn skip_ws(&mut self) {
        while let Some(b' ' | b'\t' | b'\n' | b'\r') = self.peek() {
            self.pos += 1;
        }
    }

    /// (line, column), both 1-based, of byte offset `pos`; column counts characters.
    fn line_col(&self, pos: usize) -> (usize, usize) {
        let bytes = self.src.as_bytes();
        let before = bytes.get(..pos).unwrap_or(bytes);
        let line = 1 + before.iter().filter(|&&b| b == b'\n').count();
        let line_start = before
            .iter()
            .rposition(|&b| b == b'\n')
            .map_or(0, |p| p + 1);
        let column = 1 + before
            .get(line_start..)
            .unwrap_or_default()
            .iter()
            .filter(|&&b| b & 0xC0 != 0x80)
            .count();
        (line, column)
    }

    fn syntax_at(&self, pos: usize, msg: impl Into<String>) -> JcsError {
        let (line, column) = self.line_col(pos);
        JcsError::Syntax {
            line,
            column,
            msg: msg.into(),
        }
    }

    fn syntax(&self, msg: impl Into<String>) -> JcsError {
        self.syntax_at(self.pos, msg)
    }

    fn lone_surrogate(&self, pos: usize) -> JcsError {
        let (line, column) = self.line_col(pos);
        JcsError::LoneSurrogate { line, column }
    }

    fn slice(&self, start: usize, end: usize) -> Result<&'a str, JcsError> {
        // Callers only cut at ASCII bytes, which are always character boundaries.
        self.src
            .get(start..end)
            .ok_or_else(|| self.syntax_at(start, "internal error: slice not on a char boundary"))
    }

    /// Parses the value at `pos` (whitespace already skipped). `depth` is the number of arrays
    /// and objects enclosing it.
    fn parse_value(&mut self, depth: usize) -> Result<Value, JcsError> {
        match self.peek() {
            Some(b'{') => self.parse_object(enter(depth)?),
            Some(b'[') => self.parse_array(enter(depth)?),
            Some(b'"') => self.parse_string().map(|s| Value::String(s.into_owned())),
            Some(b't') => self.parse_literal("true", Value::Bool(true)),
            Some(b'f') => self.parse_literal("false", Value::Bool(false)),
            Some(b'n') => self.parse_literal("null", Value::Null),
            Some(b'-' | b'0'..=b'9') => self.parse_number().map(Value::Number),
            _ => Err(self.not_a_value()),
        }
    }

    fn parse_literal(&mut self, word: &str, value: Value) -> Result<Value, JcsError> {
        self.eat_literal(word)?;
        Ok(value)
    }

    /// Steps over `word` (`true`, `false`, `null`) at `pos`.
    fn eat_literal(&mut self, word: &str) -> Result<(), JcsError> {
        if self.rest().starts_with(word.as_bytes()) {
            self.pos += word.len();
            Ok(())
        } else {
            Err(self.syntax("expected a JSON value"))
        }
    }

    /// The error for a value that starts with none of the characters a JSON value starts
    /// with (`NaN` and `Infinity` are [`JcsError::NonFinite`]).
    fn not_a_value(&self) -> JcsError {
        if self.peek().is_none() {
            self.syntax("unexpected end of input, expected a value")
        } else if self.rest().starts_with(b"NaN") || self.rest().starts_with(b"Infinity") {
            JcsError::NonFinite
        } else {
            self.syntax("expected a JSON value")
        }
    }

    /// Steps over the opening bracket at `pos`; true when the container closes at once
    /// (`close` right after it, whitespace aside).
    fn open(&mut self, close: u8) -> bool {
        self.pos += 1; // '[' or '{'
        self.skip_ws();
        if self.peek() == Some(close) {
            self.pos += 1;
            return true;
        }
        false
    }

    /// After a member of an array or object: true at a `,` (another member follows), false
    /// at `close` (stepped over), else the syntax error `unexpected`.
    fn next_member(&mut self, close: u8, unexpected: &'static str) -> Result<bool, JcsError> {
        self.skip_ws();
        match self.peek() {
            Some(b',') => {
                self.pos += 1;
                self.skip_ws();
                Ok(true)
            }
            Some(b) if b == close => {
                self.pos += 1;
                Ok(false)
            }
            _ => Err(self.syntax(unexpected)),
        }
    }

    fn parse_array(&mut self, depth: usize) -> Result<Value, JcsError> {
        let mut items = Vec::new();
        if self.open(b']') {
            return Ok(Value::Array(items));
        }
        loop {
            items.push(self.parse_value(depth)?);
            if !self.next_member(b']', "expected ',' or ']' in array")? {
                return Ok(Value::Array(items));
            }
        }
    }

    fn parse_object(&mut self, depth: usize) -> Result<Value, JcsError> {
        let mut map = Map::new();
        if self.open(b'}') {
            return Ok(Value::Object(map));
        }
        loop {
            if self.peek() != Some(b'"') {
                return Err(self.syntax("expected a string object key"));
            }
            let key = self.parse_string()?.into_owned();
            self.skip_ws();
            if self.peek() != Some(b':') {
                return Err(self.syntax("expected ':' after object key"));
            }
            self.pos += 1;
            self.skip_ws();
            let value = self.parse_value(depth)?;
            match map.entry(key) {
                Entry::Vacant(slot) => {
                    slot.insert(value);
                }
                Entry::Occupied(slot) => return Err(JcsError::DuplicateKey(slot.key().clone())),
            }
            if !self.next_member(b'}', "expected ',' or '}' in object")? {
                return Ok(Value::Object(map));
            }
        }
    }

    /// Parses a string literal starting at the opening quote: borrowed from the input when it
    /// holds no escape.
    fn parse_string(&mut self) -> Result<Cow<'a, str>, JcsError> {
        let bytes = self.src.as_bytes();
        self.pos += 1; // '"'
        let mut run = self.pos;
        let mut out: Option<String> = None;
        loop {
            // Fast scan over bytes that need no attention.
            self.pos += plain_run(bytes.get(self.pos..).unwrap_or_default());
            match bytes.get(self.pos) {
                None => return Err(self.syntax("unterminated string")),
                Some(b'"') => {
                    let tail = self.slice(run, self.pos)?;
                    self.pos += 1;
                    return Ok(match out {
                        None => Cow::Borrowed(tail),
                        Some(mut s) => {
                            s.push_str(tail);
                            Cow::Owned(s)
                        }
                    });
                }
                Some(b'\\') => {
                    let chunk = self.slice(run, self.pos)?;
                    let c = self.parse_escape()?;
                    let s = out.get_or_insert_with(|| String::with_capacity(chunk.len() + 16));
                    s.push_str(chunk);
                    s.push(c);
                    run = self.pos;
                }
                Some(_) => {
                    return Err(self.syntax("control character in string must be escaped"));
                }
            }
        }
    }

    /// Parses the escape sequence at `pos` (the backslash) and returns the character.
    fn parse_escape(&mut self) -> Result<char, JcsError> {
        let start = self.pos;
        self.pos += 1; // '\\'
        let c = match self.peek() {
            Some(b'"') => '"',
            Some(b'\\') => '\\',
            Some(b'/') => '/',
            Some(b'b') => '\u{8}',
            Some(b'f') => '\u{c}',
            Some(b'n') => '\n',
            Some(b'r') => '\r',
            Some(b't') => '\t',
            Some(b'u') => {
                self.pos += 1;
                let unit = self.parse_hex4()?;
                return match unit {
                    0xD800..=0xDBFF => {
                        if !self.rest().starts_with(b"\\u") {
                            return Err(self.lone_surrogate(start));
                        }
                        self.pos += 2;
                        let low = self.parse_hex4()?;
                        if !(0xDC00..=0xDFFF).contains(&low) {
                            return Err(self.lone_surrogate(start));
                        }
                        let code = 0x10000 + ((unit - 0xD800) << 10) + (low - 0xDC00);
                        char::from_u32(code).ok_or_else(|| self.lone_surrogate(start))
                    }
                    0xDC00..=0xDFFF => Err(self.lone_surrogate(start)),
                    _ => char::from_u32(unit).ok_or_else(|| self.lone_surrogate(start)),
                };
            }
            None => return Err(self.syntax("unterminated string")),
            Some(_) => return Err(self.syntax_at(start, "invalid escape sequence")),
        };
        self.pos += 1;
        Ok(c)
    }

    fn parse_hex4(&mut self) -> Result<u32, JcsError> {
        let mut value = 0u32;
        for _ in 0..4 {
            let digit = match self.peek() {
                Some(b @ b'0'..=b'9') => b - b'0',
                Some(b @ b'a'..=b'f') => b - b'a' + 10,
                Some(b @ b'A'..=b'F') => b - b'A' + 10,
                _ => return Err(self.syntax("expected 4 hex digits in \\u escape")),
            };
            value = value * 16 + u32::from(digit);
            self.pos += 1;
        }
        Ok(value)
    }

    /// Parses a number per the RFC 8259 grammar. Integers that fit `u64`/`i64` stay integers
    /// (as serde_json does); everything else becomes the correctly rounded double.
    fn parse_number(&mut self) -> Result<Number, JcsError> {
        let start = self.pos;
        let negative = self.peek() == Some(b'-');
        if negative {
            self.pos += 1;
            if self.rest().starts_with(b"Infinity") {
                return Err(JcsError::NonFinite);
            }
        }
        match self.peek() {
            Some(b'0') => self.pos += 1,
            Some(b'1'..=b'9') => self.skip_digits(),
            _ => return Err(self.syntax("invalid number: expected a digit")),
        }
        let mut integer = true;
        if self.peek() == Some(b'.') {
            self.pos += 1;
            if !matches!(self.peek(), Some(b'0'..=b'9')) {
                return Err(self.syntax("invalid number: expected a digit after '.'"));
            }
            self.skip_digits();
            integer = false;
        }
        if let Some(b'e' | b'E') = self.peek() {
            self.pos += 1;
            if let Some(b'+' | b'-') = self.peek() {
                self.pos += 1;
            }
            if !matches!(self.peek(), Some(b'0'..=b'9')) {
                return Err(self.syntax("invalid number: expected a digit in the exponent"));
            }
            self.skip_digits();
            integer = false;
        }
        let text = self.slice(start, self.pos)?;
        if integer {
            if negative {
                if let Ok(i) = text.parse::<i64>() {
                    return Ok(Number::from(i));
                }
            } else if let Ok(u) = text.parse::<u64>() {
                return Ok(Number::from(u));
            }
        }
        let f: f64 = text
            .parse()
            .map_err(|_| self.syntax_at(start, "invalid number"))?;
        Number::from_f64(f).ok_or(JcsError::NonFinite)
    }

    fn skip_digits(&mut self) {
        while let Some(b'0'..=b'9') = self.peek() {
            self.pos += 1;
        }
    }
}

/// How many bytes at the start of `bytes` a string copies as they are: up to the first `"`,
/// `\\` or control character (U+0000..=U+001F), or all of them. Eight bytes at a time
/// ([`stop_bytes`]), then byte by byte.
fn plain_run(bytes: &[u8]) -> usize {
    let mut chunks = bytes.chunks_exact(8);
    let mut n = 0;
    for chunk in &mut chunks {
        let mut word = [0u8; 8];
        word.copy_from_slice(chunk);
        let hits = stop_bytes(u64::from_le_bytes(word));
        if hits != 0 {
            return n + (hits.trailing_zeros() / 8) as usize;
        }
        n += 8;
    }
    n + chunks
        .remainder()
        .iter()
        .position(|&b| b == b'"' || b == b'\\' || b < 0x20)
        .unwrap_or(chunks.remainder().len())
}

/// The top bit of each byte of a u64.
const HIGH_BITS: u64 = u64::from_le_bytes([0x80; 8]);
/// 1 in each byte of a u64.
const ONE_BYTES: u64 = u64::from_le_bytes([0x01; 8]);

/// The top bit set in each byte of the little-endian word `x` that is a `"`, a `\\` or below
/// 0x20 (SWAR: the classic "has a zero byte" and "has a byte less than n" tests; a borrow can
/// only mark bytes after a true match, so the lowest marked byte is the first match, and the
/// result is zero exactly when no byte matches).
#[inline]
fn stop_bytes(x: u64) -> u64 {
    let zero_byte = |v: u64| v.wrapping_sub(ONE_BYTES) & !v;
    (zero_byte(x ^ (ONE_BYTES * u64::from(b'"')))
        | zero_byte(x ^ (ONE_BYTES * u64::from(b'\\')))
        | (x.wrapping_sub(ONE_BYTES * 0x20) & !x))
        & HIGH_BITS
}

// ---------------------------------------------------------------------------------------------
// Non-finite float check for `to_vec`
// ---------------------------------------------------------------------------------------------

/// A serializer that produces nothing and fails on the first NaN or infinite float.
struct FiniteCheck;

#[derive(Debug)]
enum CheckError {
    NonFinite,
    Custom(String),
}

impl fmt::Display for CheckError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            CheckError::NonFinite => f.write_str("non-finite float"),
            CheckError::Custom(msg) => f.write_str(msg),
        }
    }
}

impl std::error::Error for CheckError {}

impl ser::Error for CheckError {
    fn custom<T: fmt::Display>(msg: T) -> Self {
        CheckError::Custom(msg.to_string())
    }
}

type CheckResult = Result<(), CheckError>;

fn check_float(finite: bool) -> CheckResult {
    if finite {
        Ok(())
    } else {
        Err(CheckError::NonFinite)
    }
}

/// The scalars hold nothing to check and the compound starters hand back the checker, so
/// their methods differ only in name and argument types: one macro writes each kind.
macro_rules! finite_check_methods {
    (accept: $($method:ident ($($ty:ty),*);)+) => {$(
        fn $method(self, $(_: $ty),*) -> CheckResult {
            Ok(())
        }
    )+};
    (open: $($method:ident ($($ty:ty),*);)+) => {$(
        fn $method(self, $(_: $ty),*) -> Result<Self, CheckError> {
            Ok(self)
        }
    )+};
}

impl ser::Serializer for FiniteCheck {
    type Ok = ();
    type Error = CheckError;
    type SerializeSeq = Self;
    type SerializeTuple = Self;
    type SerializeTupleStruct = Self;
    type SerializeTupleVariant = Self;
    type SerializeMap = Self;
    type SerializeStruct = Self;
    type SerializeStructVariant = Self;

    finite_check_methods! { accept:
        serialize_bool(bool);
        serialize_i8(i8);
        serialize_i16(i16);
        serialize_i32(i32);
        serialize_i64(i64);
        serialize_i128(i128);
        serialize_u8(u8);
        serialize_u16(u16);
        serialize_u32(u32);
        serialize_u64(u64);
        serialize_u128(u128);
        serialize_char(char);
        serialize_str(&str);
        serialize_bytes(&[u8]);
        serialize_none();
        serialize_unit();
        serialize_unit_struct(&'static str);
        serialize_unit_variant(&'static str, u32, &'static str);
    }

    finite_check_methods! { open:
        serialize_seq(Option<usize>);
        serialize_tuple(usize);
        serialize_tuple_struct(&'static str, usize);
        serialize_tuple_variant(&'static str, u32, &'static str, usize);
        serialize_map(Option<usize>);
        serialize_struct(&'static str, usize);
        serialize_struct_variant(&'static str, u32, &'static str, usize);
    }

    fn serialize_f32(self, v: f32) -> CheckResult {
        check_float(v.is_finite())
    }
    fn serialize_f64(self, v: f64) -> CheckResult {
        check_float(v.is_finite())
    }
    fn serialize_some<T: ?Sized + Serialize>(self, value: &T) -> CheckResult {
        value.serialize(self)
    }
    fn serialize_newtype_struct<T: ?Sized + Serialize>(
        self,
        _: &'static str,
        value: &T,
    ) -> CheckResult {
        value.serialize(self)
    }
    fn serialize_newtype_variant<T: ?Sized + Serialize>(
        self,
        _: &'static str,
        _: u32,
        _: &'static str,
        value: &T,
    ) -> CheckResult {
        value.serialize(self)
    }
}

/// The compound serializers only recurse into each element (or key and value): one impl per
/// serde trait, differing only in the trait's method names and their extra arguments.
macro_rules! finite_check_compound {
    ($($trait:ident :: $method:ident ($($arg:ident : $ty:ty),*);)+) => {$(
        impl ser::$trait for FiniteCheck {
            type Ok = ();
            type Error = CheckError;
            fn $method<T: ?Sized + Serialize>(&mut self, $($arg: $ty,)* value: &T) -> CheckResult {
                $(let _ = $arg;)*
                value.serialize(FiniteCheck)
            }
            fn end(self) -> CheckResult {
                Ok(())
            }
        }
    )+};
}

finite_check_compound! {
    SerializeSeq::serialize_element();
    SerializeTuple::serialize_element();
    SerializeTupleStruct::serialize_field();
    SerializeTupleVariant::serialize_field();
    SerializeStruct::serialize_field(key: &'static str);
    SerializeStructVariant::serialize_field(key: &'static str);
}

impl ser::SerializeMap for FiniteCheck {
    type Ok = ();
    type Error = CheckError;
    fn serialize_key<T: ?Sized + Serialize>(&mut self, key: &T) -> CheckResult {
        key.serialize(FiniteCheck)
    }
    fn serialize_value<T: ?Sized + Serialize>(&mut self, value: &T) -> CheckResult {
        value.serialize(FiniteCheck)
    }
    fn end(self) -> CheckResult {
        Ok(())
    }
}

// ---------------------------------------------------------------------------------------------
// Canonical-form check without a tree
// ---------------------------------------------------------------------------------------------

/// Whether `input` is exactly the canonical (RFC 8785) serialisation of a JSON value.
///
/// The answer is the same as `canonicalize(input).ok().as_deref() == Some(input)`, but found in
/// one pass over the bytes without building a `serde_json::Value` tree: memory is the nesting
/// depth plus the previous member name of each open object. Refused, as by the canonicaliser:
/// invalid UTF-8, input above [`MAX_INPUT_BYTES`], nesting deeper than [`MAX_DEPTH`], duplicate
/// member names; and, as not canonical: any whitespace outside strings, members not in
/// strictly increasing UTF-16 code-unit order, escapes other than the minimal RFC 8785 set
/// (`\"`, `\\`, `\b \t \n \f \r`, lowercase `\u00xx` for the other C0 controls), unescaped
/// controls, and numbers whose text is not the ECMAScript form of their value (`1.0`, `1e2`,
/// `-0`, `9007199254740993`, ...).
pub fn is_canonical(input: &[u8]) -> bool {
    if input.len() > MAX_INPUT_BYTES {
        return false;
    }
    Checker::new(SliceWindow(input)).document()
}

/// Longest string (member name or value, between escapes) or number [`is_canonical_read`]
/// holds; a longer one is refused.
pub const MAX_STREAM_STRING_BYTES: usize = 1024 * 1024;

/// [`is_canonical`] over a reader, for documents of any size: one pass, memory a 256 KiB
/// window (growing for a longer string, up to [`MAX_STREAM_STRING_BYTES`]) plus the previous
/// member name of each open object; no [`MAX_INPUT_BYTES`] bound (the caller bounds the
/// reader). The answer is that of [`is_canonical`] for every input below [`MAX_INPUT_BYTES`]
/// whose strings fit; I/O errors are returned as such.
///
/// The same checker serves both: it reads a window of bytes that a slice holds whole and a
/// reader refills, so the check over a reader runs at the speed of the one over a slice.
pub fn is_canonical_read<R: std::io::Read>(input: R) -> std::io::Result<bool> {
    let mut c = Checker::new(ReadWindow {
        inner: input,
        buf: vec![0; 256 * 1024],
        len: 0,
        io: None,
    });
    let ok = c.document();
    match c.win.io.take() {
        Some(e) => Err(e),
        None => Ok(ok),
    }
}

/// The bytes [`Checker`] reads: a window that a slice holds whole, or that a reader refills.
trait Window {
    /// The bytes now in the window.
    fn bytes(&self) -> &[u8];
    /// Extend the window with more input, dropping the bytes before `keep` first: returns how
    /// many were dropped (every position moves down by that) and whether more bytes came
    /// (`false` at the end of the input, on a read error, or when a token would outgrow the
    /// window). The bytes from `keep` on stay in the window either way.
    fn more(&mut self, keep: usize) -> (usize, bool);
}

struct SliceWindow<'a>(&'a [u8]);

impl Window for SliceWindow<'_> {
    #[inline]
    fn bytes(&self) -> &[u8] {
        self.0
    }
    fn more(&mut self, _keep: usize) -> (usize, bool) {
        (0, false)
    }
}

struct ReadWindow<R> {
    inner: R,
    buf: Vec<u8>,
    len: usize,
    io: Option<std::io::Error>,
}

impl<R: std::io::Read> Window for ReadWindow<R> {
    #[inline]
    fn bytes(&self) -> &[u8] {
        self.buf.get(..self.len).unwrap_or_default()
    }

    fn more(&mut self, keep: usize) -> (usize, bool) {
        if self.io.is_some() {
            return (0, false);
        }
        let keep = keep.min(self.len);
        if keep > 0 {
            self.buf.copy_within(keep..self.len, 0);
            self.len -= keep;
        }
        if self.len == self.buf.len() {
            // One token fills the window: grow it, up to the cap.
            if self.buf.len() > MAX_STREAM_STRING_BYTES {
                return (keep, false);
            }
            self.buf.resize(self.buf.len() * 2, 0);
        }
        loop {
            let Some(free) = self.buf.get_mut(self.len..) else {
                return (keep, false);
            };
            match self.inner.read(free) {
                Ok(0) => return (keep, false),
                Ok(n) => {
                    self.len += n;
                    return (keep, true);
                }
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                Err(e) => {
                    self.io = Some(e);
                    return (keep, false);
                }
            }
        }
    }
}

/// The state of [`is_canonical`] and [`is_canonical_read`]: a position in the window and the
/// previous member name of each open object, one after the other in `keys` (decoded). Every
/// method returns `None` as soon as the input departs from the canonical form.
struct Checker<W> {
    win: W,
    pos: usize,
    keys: Vec<u8>,
}

impl<W: Window> Checker<W> {
    fn new(win: W) -> Self {
        Checker {
            win,
            pos: 0,
            keys: Vec::new(),
        }
    }

    fn document(&mut self) -> bool {
        self.value(0).is_some() && self.peek().is_none()
    }

    #[inline]
    fn peek(&mut self) -> Option<u8> {
        match self.win.bytes().get(self.pos) {
            Some(&b) => Some(b),
            None => self.peek_more(),
        }
    }

    #[cold]
    fn peek_more(&mut self) -> Option<u8> {
        let mut keep = self.pos;
        if !self.need(&mut keep, 1) {
            return None;
        }
        self.win.bytes().get(self.pos).copied()
    }

    /// Make `n` bytes from `pos` available, keeping those from `start` (moved with the
    /// window); `false` if the input ends first.
    fn need(&mut self, start: &mut usize, n: usize) -> bool {
        while self.win.bytes().len() < self.pos + n {
            let (dropped, more) = self.win.more(*start);
            *start -= dropped;
            self.pos -= dropped;
            if !more {
                return false;
            }
        }
        true
    }

    #[inline]
    fn eat(&mut self, b: u8) -> Option<()> {
        if self.peek() == Some(b) {
            self.pos += 1;
            Some(())
        } else {
            None
        }
    }

    fn value(&mut self, depth: usize) -> Option<()> {
        match self.peek()? {
            b'{' => self.object(enter(depth).ok()?),
            b'[' => self.array(enter(depth).ok()?),
            b'"' => self.string(false),
            b't' => self.literal(b"true"),
            b'f' => self.literal(b"false"),
            b'n' => self.literal(b"null"),
            b'-' | b'0'..=b'9' => self.number(),
            _ => None,
        }
    }

    fn literal(&mut self, word: &[u8]) -> Option<()> {
        for &w in word {
            self.eat(w)?;
        }
        Some(())
    }

    fn array(&mut self, depth: usize) -> Option<()> {
        self.pos += 1; // '['
        if self.eat(b']').is_some() {
            return Some(());
        }
        loop {
            self.value(depth)?;
            match self.peek()? {
                b',' => self.pos += 1,
                b']' => {
                    self.pos += 1;
                    return Some(());
                }
                _ => return None,
            }
        }
    }

    fn object(&mut self, depth: usize) -> Option<()> {
        self.pos += 1; // '{'
        if self.eat(b'}').is_some() {
            return Some(());
        }
        // keys[base..] is the previous member name (nested objects clear theirs on the way out).
        let base = self.keys.len();
        let mut first = true;
        loop {
            if self.peek()? != b'"' {
                return None;
            }
            let prev_end = self.keys.len();
            self.string(true)?;
            if !first {
                // Strictly increasing: out of order or a duplicate is not canonical.
                let (prev, key) = self.keys.get(base..)?.split_at(prev_end - base);
                if !key_before(prev, key) {
                    return None;
                }
                self.keys.copy_within(prev_end.., base);
                self.keys.truncate(self.keys.len() - (prev_end - base));
            }
            first = false;
            self.eat(b':')?;
            self.value(depth)?;
            match self.peek()? {
                b',' => self.pos += 1,
                b'}' => {
                    self.pos += 1;
                    self.keys.truncate(base);
                    return Some(());
                }
                _ => return None,
            }
        }
    }

    /// A canonical string literal starting at its opening quote; a member name (`key`) is
    /// appended to `keys`, decoded.
    fn string(&mut self, key: bool) -> Option<()> {
        self.pos += 1; // '"'
                       // The bytes from `run` to `pos` are plain (no escape), not yet checked as UTF-8 (when
                       // `high`) nor kept.
        let mut run = self.pos;
        let mut high = false;
        loop {
            let bytes = self.win.bytes();
            let mut i = self.pos;
            // Eight plain bytes at a time (SWAR on a u64); the word that holds a quote, a
            // backslash or a control byte goes byte by byte below.
            while let Some(word) = bytes.get(i..i + 8) {
                let x = u64::from_le_bytes(word.try_into().unwrap_or([b'"'; 8]));
                if word_has_stop(x) {
                    break;
                }
                high |= x & HIGH_BITS != 0;
                i += 8;
            }
            while let Some(&b) = bytes.get(i) {
                if b == b'"' || b == b'\\' || b < 0x20 {
                    break;
                }
                high |= b >= 0x80;
                i += 1;
            }
            self.pos = i;
            let stop = match bytes.get(i) {
                Some(&b) => b,
                None => {
                    if !self.need(&mut run, 1) {
                        return None;
                    }
                    continue;
                }
            };
            if stop < 0x20 {
                return None;
            }
            let plain = bytes.get(run..i)?;
            if high && std::str::from_utf8(plain).is_err() {
                return None;
            }
            if key {
                self.keys.extend_from_slice(plain);
            }
            if stop == b'"' {
                self.pos += 1;
                return Some(());
            }
            let c = self.escape()?;
            if key {
                self.keys.push(c);
            }
            run = self.pos;
            high = false;
        }
    }

    /// A canonical escape at `pos` (the backslash): only what [`write_str`] writes. Returns
    /// the byte it stands for (always ASCII).
    fn escape(&mut self) -> Option<u8> {
        let mut start = self.pos;
        if !self.need(&mut start, 2) {
            return None;
        }
        let bytes = self.win.bytes();
        let c = match *bytes.get(self.pos + 1)? {
            b'"' => b'"',
            b'\\' => b'\\',
            b'b' => 0x08,
            b'f' => 0x0c,
            b'n' => b'\n',
            b'r' => b'\r',
            b't' => b'\t',
            b'u' => {
                if !self.need(&mut start, 6) {
                    return None;
                }
                let h = self.win.bytes().get(self.pos + 2..self.pos + 6)?;
                let hex = |d: u8| match d {
                    b'0'..=b'9' => Some(d - b'0'),
                    b'a'..=b'f' => Some(d - b'a' + 10),
                    _ => None,
                };
                if h[0] != b'0' || h[1] != b'0' {
                    return None;
                }
                let v = (hex(h[2])? << 4) | hex(h[3])?;
                if v >= 0x20 || matches!(v, 0x08 | 0x09 | 0x0a | 0x0c | 0x0d) {
                    return None;
                }
                self.pos += 6;
                return Some(v);
            }
            _ => return None,
        };
        self.pos += 2;
        Some(c)
    }

    /// A number whose text is the canonical text of its value.
    fn number(&mut self) -> Option<()> {
        let mut start = self.pos;
        loop {
            match self.win.bytes().get(self.pos) {
                Some(b'0'..=b'9' | b'-' | b'+' | b'.' | b'e' | b'E') => self.pos += 1,
                Some(_) => break,
                None => {
                    if !self.need(&mut start, 1) {
                        break;
                    }
                }
            }
        }
        canonical_number(self.win.bytes().get(start..self.pos)?).then_some(())
    }
}

/// Does the little-endian word `x` hold a `"`, a `\\` or a byte below 0x20? Exact as a yes
/// or no ([`stop_bytes`]).
#[inline]
fn word_has_stop(x: u64) -> bool {
    stop_bytes(x) != 0
}

/// Whether `text` is a JSON number whose text is the canonical text of its value (as
/// [`Parser::parse_number`] reads it and [`write_number`] writes it).
fn canonical_number(text: &[u8]) -> bool {
    let digits = |mut i: usize| {
        while let Some(b'0'..=b'9') = text.get(i) {
            i += 1;
        }
        i
    };
    let negative = text.first() == Some(&b'-');
    let mut i = usize::from(negative);
    i = match text.get(i) {
        Some(b'0') => i + 1,
        Some(b'1'..=b'9') => digits(i),
        _ => return false,
    };
    let int_digits = i - usize::from(negative);
    let mut integer = true;
    if text.get(i) == Some(&b'.') {
        if !matches!(text.get(i + 1), Some(b'0'..=b'9')) {
            return false;
        }
        i = digits(i + 1);
        integer = false;
    }
    if let Some(b'e' | b'E') = text.get(i) {
        i += 1;
        if let Some(b'+' | b'-') = text.get(i) {
            i += 1;
        }
        if !matches!(text.get(i), Some(b'0'..=b'9')) {
            return false;
        }
        i = digits(i);
        integer = false;
    }
    if i != text.len() {
        return false;
    }
    // Fast path: a plain integer of at most 15 digits (below 2^53, so written digit by digit)
    // is canonical unless it is "-0".
    if integer && int_digits <= 15 {
        return text != b"-0";
    }
    let Ok(text) = std::str::from_utf8(text) else {
        return false;
    };
    let parsed = if !integer {
        None
    } else if negative {
        text.parse::<i64>().ok().map(Number::from)
    } else {
        text.parse::<u64>().ok().map(Number::from)
    };
    let number = match parsed {
        Some(n) => n,
        None => match text.parse::<f64>().ok().and_then(Number::from_f64) {
            Some(n) => n,
            None => return false,
        },
    };
    let mut out = Vec::with_capacity(32);
    write_number(&number, &mut out).is_ok() && out == text.as_bytes()
}

/// `a` sorts strictly before `b` by UTF-16 code units (byte order unless either holds a
/// character at or above U+E000, the only ones where the two orders can disagree). Both are
/// UTF-8 (checked as they were read).
fn key_before(a: &[u8], b: &[u8]) -> bool {
    let high = |s: &[u8]| s.iter().any(|&x| x >= 0xEE);
    if high(a) || high(b) {
        match (std::str::from_utf8(a), std::str::from_utf8(b)) {
            (Ok(a), Ok(b)) => cmp_utf16(a, b) == Ordering::Less,
            _ => false,
        }
    } else {
        a < b
    }
}

#[cfg(test)]
mod canonical_check_tests {
    use super::*;

    /// The reference answer: canonicalise and compare.
    fn reference(input: &[u8]) -> bool {
        canonicalize(input).ok().as_deref() == Some(input)
    }

    fn agree(input: &[u8]) -> bool {
        let got = is_canonical(input);
        assert_eq!(
            got,
            reference(input),
            "is_canonical disagrees with canonicalize on {:?}",
            String::from_utf8_lossy(input)
        );
        // The streaming check agrees too, whatever the read sizes.
        assert_eq!(
            is_canonical_read(OneByte(input)).unwrap(),
            got,
            "is_canonical_read disagrees on {:?}",
            String::from_utf8_lossy(input)
        );
        assert_eq!(is_canonical_read(input).unwrap(), got);
        got
    }

    /// A reader that hands out one byte per read (every buffer boundary is exercised).
    struct OneByte<'a>(&'a [u8]);
    impl std::io::Read for OneByte<'_> {
        fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
            match (self.0.split_first(), buf.first_mut()) {
                (Some((b, rest)), Some(slot)) => {
                    *slot = *b;
                    self.0 = rest;
                    Ok(1)
                }
                _ => Ok(0),
            }
        }
    }

    #[test]
    fn streaming_check_finds_a_departure_deep_in_a_large_document() {
        let mut doc = String::from("{\"files\":[");
        for i in 0..50_000 {
            if i > 0 {
                doc.push(',');
            }
            doc.push_str(&format!("{{\"path\":\"a/{i:06}\",\"size\":{i}}}"));
        }
        doc.push_str("]}");
        assert!(is_canonical_read(doc.as_bytes()).unwrap());
        // One non-canonical byte near the end: a space, an unsorted member, `1.0`.
        let at = doc.len() - 40;
        let spaced = format!("{} {}", &doc[..at], &doc[at..]);
        assert!(!is_canonical_read(spaced.as_bytes()).unwrap());
        let unsorted = doc.replacen(
            "{\"path\":\"a/049990\",\"size\":49990}",
            "{\"size\":49990,\"path\":\"a/049990\"}",
            1,
        );
        assert_ne!(unsorted, doc);
        assert!(!is_canonical_read(unsorted.as_bytes()).unwrap());
        let float = doc.replacen("\"size\":49999}", "\"size\":49999.0}", 1);
        assert!(!is_canonical_read(float.as_bytes()).unwrap());
        assert!(!is_canonical_read(&doc.as_bytes()[..doc.len() - 1]).unwrap());
        // An I/O error is an error, not a verdict.
        struct Failing;
        impl std::io::Read for Failing {
            fn read(&mut self, _: &mut [u8]) -> std::io::Result<usize> {
                Err(std::io::Error::other("disk"))
            }
        }
        assert!(is_canonical_read(Failing).is_err());
    }

    /// The word test says yes exactly when one of the eight bytes stops a plain run.
    #[test]
    fn word_has_stop_is_exact() {
        let stops = |b: u8| b == b'"' || b == b'\\' || b < 0x20;
        let fill = [b'a', 0x7f, 0x80, 0xff, 0x20, 0x21, 0x5b, 0x5d];
        for b in 0..=255u8 {
            for at in 0..8 {
                for f in fill {
                    let mut w = [f; 8];
                    w[at] = b;
                    assert_eq!(word_has_stop(u64::from_le_bytes(w)), stops(b), "{w:?}");
                    // And with its neighbours varied.
                    w[(at + 1) % 8] = b.wrapping_add(1);
                    let want = w.iter().any(|&c| stops(c));
                    assert_eq!(word_has_stop(u64::from_le_bytes(w)), want, "{w:?}");
                }
            }
        }
    }

    /// Strings of every length around the 8-byte words of `Checker::string`, with a quote,
    /// an escape, a control byte, a multi-byte character or a broken UTF-8 sequence at each
    /// position, as values and as member names.
    #[test]
    fn strings_around_block_edges_agree_with_the_canonicaliser() {
        let specials: [&[u8]; 9] = [
            b"\\\"",
            b"\\n",
            b"\\u0001",
            b"\\u000a",
            b"\x01",
            b"\xc3\xa9",
            b"\xee\x80\x80",
            b"\xc3",
            b"\xff",
        ];
        let mut canonical = 0;
        for len in 0..50 {
            for at in 0..=len {
                for sp in specials {
                    let mut text = vec![b'a'; len];
                    text.splice(at..at, sp.iter().copied());
                    let mut value = b"[\"".to_vec();
                    value.extend_from_slice(&text);
                    value.extend_from_slice(b"\"]");
                    let mut key = b"{\"".to_vec();
                    key.extend_from_slice(&text);
                    key.extend_from_slice(b"\":1,\"\xef\xbf\xbf\":2}");
                    canonical += usize::from(agree(&value)) + usize::from(agree(&key));
                }
            }
        }
        assert!(canonical > 1000, "{canonical}");
    }

    #[test]
    fn fixed_cases_agree_with_the_canonicaliser() {
        let yes: &[&str] = &[
            "0",
            "-1",
            "1.5",
            "1e+21",
            "1e-7",
            "5e-324",
            "9007199254740992",
            "123456789012345",
            "1234567890123456",
            "0.1",
            "true",
            "null",
            "\"\"",
            "\"\\u001f\\n\\\"\\\\\u{7f}é\u{2028}\"",
            "[]",
            "{}",
            "[1,\"a\",{\"a\":[]}]",
            "{\"\":0,\"a\":1,\"aa\":2,\"b\":3}",
            // UTF-16 order: U+10000 (D800 DC00) sorts before U+E000, unlike UTF-8 byte order.
            "{\"\u{10000}\":1,\"\u{e000}\":2}",
            "{\"\\n\":1,\"a\":2}",
        ];
        for s in yes {
            assert!(agree(s.as_bytes()), "{s} should be canonical");
        }
        let no: &[&str] = &[
            "",
            " 0",
            "0 ",
            "-0",
            "1.0",
            "1e2",
            "1E+21",
            "1e21",
            "01",
            "+1",
            "9007199254740993",
            "18446744073709551616",
            "1e400",
            "0.10",
            ".5",
            "NaN",
            "\"\\/\"",
            "\"\\u0041\"",
            "\"\\u001F\"",
            "\"\\u0009\"",
            "\"\\ud83d\\ude00\"",
            "\"\u{1}\"",
            "\"unterminated",
            "[1,]",
            "[1 ,2]",
            "{\"a\":1,\"a\":1}",
            "{\"b\":1,\"a\":2}",
            "{\"\u{e000}\":1,\"\u{10000}\":2}",
            "{\"a\" :1}",
            "{\"a\":1}x",
            "{a:1}",
            "tru",
            "\u{feff}0",
        ];
        for s in no {
            assert!(!agree(s.as_bytes()), "{s} should not be canonical");
        }
        assert!(!agree(b"\"\xff\""));
        let deep = format!("{}{}", "[".repeat(MAX_DEPTH), "]".repeat(MAX_DEPTH));
        assert!(agree(deep.as_bytes()));
        let deeper = format!("{}{}", "[".repeat(MAX_DEPTH + 1), "]".repeat(MAX_DEPTH + 1));
        assert!(!agree(deeper.as_bytes()));
    }

    /// A small deterministic generator (xorshift64*), so failures reproduce.
    pub(super) struct Rng(pub(super) u64);
    impl Rng {
        fn next(&mut self) -> u64 {
            self.0 ^= self.0 >> 12;
            self.0 ^= self.0 << 25;
            self.0 ^= self.0 >> 27;
            self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
        }
        pub(super) fn below(&mut self, n: usize) -> usize {
            (self.next() % n as u64) as usize
        }
        fn pick<'s>(&mut self, items: &[&'s str]) -> &'s str {
            items[self.below(items.len())]
        }
    }

    const NUMBERS: &[&str] = &[
        "0",
        "-0",
        "1",
        "-1",
        "7",
        "1.0",
        "1.5",
        "-2.25",
        "1e2",
        "1E2",
        "100",
        "1e21",
        "1e+21",
        "1e-7",
        "0.000001",
        "0.1",
        "5e-324",
        "9007199254740992",
        "9007199254740993",
        "-9007199254740993",
        "18446744073709551616",
        "123456789012345678",
        "1e400",
        "0.10",
        "4.35",
        "1e-6",
        "333333333.3333333",
    ];
    const STRINGS: &[&str] = &[
        "",
        "a",
        "b",
        "ab",
        "B",
        "é",
        "\u{e000}",
        "\u{10000}",
        "\u{ffff}",
        "😂",
        "\\n",
        "\\\"",
        "\\\\",
        "\\u001f",
        "\\u001F",
        "\\u0041",
        "\\/",
        "\\t",
        "\\u0009",
        "a\\u0000b",
        "\u{7f}",
        "\\ud83d\\ude02",
    ];

    /// Random JSON text: mostly canonical-shaped, with random departures (whitespace, key
    /// order, duplicates, non-canonical numbers and escapes).
    pub(super) fn gen(rng: &mut Rng, depth: usize, out: &mut String) {
        let kind = if depth > 4 {
            rng.below(4)
        } else {
            rng.below(6)
        };
        match kind {
            0 => out.push_str(rng.pick(NUMBERS)),
            1 => {
                out.push('"');
                out.push_str(rng.pick(STRINGS));
                out.push('"');
            }
            2 => out.push_str(rng.pick(&["true", "false", "null"])),
            3 => {
                // A number or string picked to be canonical more often.
                out.push_str(rng.pick(&["0", "12", "\"x\"", "-3", "0.5"]))
            }
            4 => {
                out.push('[');
                for i in 0..rng.below(4) {
                    if i > 0 {
                        out.push(',');
                    }
                    gen(rng, depth + 1, out);
                }
                out.push(']');
            }
            _ => {
                // Members usually written in canonical order: generate, sort by UTF-16 of the
                // decoded key, then maybe disturb.
                let mut keys: Vec<String> = (0..rng.below(5))
                    .map(|_| rng.pick(STRINGS).to_string())
                    .collect();
                let decoded = |k: &str| -> Option<String> {
                    match parse_strict(format!("\"{k}\"").as_bytes()).ok()? {
                        Value::String(s) => Some(s),
                        _ => None,
                    }
                };
                keys.sort_by(|a, b| match (decoded(a), decoded(b)) {
                    (Some(a), Some(b)) => cmp_utf16(&a, &b),
                    _ => a.cmp(b),
                });
                if rng.below(4) == 0 {
                    keys.dedup();
                }
                if keys.len() > 1 && rng.below(8) == 0 {
                    keys.swap(0, 1);
                }
                out.push('{');
                for (i, k) in keys.iter().enumerate() {
                    if i > 0 {
                        out.push(',');
                    }
                    out.push('"');
                    out.push_str(k);
                    out.push('"');
                    if rng.below(40) == 0 {
                        out.push(' ');
                    }
                    out.push(':');
                    gen(rng, depth + 1, out);
                }
                out.push('}');
            }
        }
    }

    #[test]
    fn random_documents_agree_with_the_canonicaliser() {
        let mut rng = Rng(0x5eed_1234_abcd_0001);
        let (mut canonical, mut not) = (0, 0);
        for _ in 0..20_000 {
            let mut text = String::new();
            gen(&mut rng, 0, &mut text);
            if agree(text.as_bytes()) {
                canonical += 1;
            } else {
                not += 1;
            }
            // The canonical form of anything parseable is accepted.
            if let Ok(c) = canonicalize(text.as_bytes()) {
                assert!(is_canonical(&c), "{}", String::from_utf8_lossy(&c));
                // And one-byte edits of it are judged like the canonicaliser judges them.
                let mut edited = c.clone();
                let at = rng.below(edited.len());
                match rng.below(3) {
                    0 => edited[at] = b" ,:{}[]\"\\0a.e-"[rng.below(14)],
                    1 => {
                        edited.remove(at);
                    }
                    _ => edited.insert(at, b" ,0\\\"e"[rng.below(6)]),
                }
                agree(&edited);
            }
        }
        // The generator exercises both answers substantially.
        assert!(canonical > 2_000 && not > 2_000, "{canonical} / {not}");
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn canon(s: &str) -> String {
        String::from_utf8(canonicalize(s.as_bytes()).unwrap()).unwrap()
    }

    fn written(v: &Value) -> String {
        let mut out = Vec::new();
        write_value(v, &mut out).unwrap();
        String::from_utf8(out).unwrap()
    }

    #[test]
    fn escapes_exactly_the_rfc_set() {
        for c in 0u32..0x80 {
            let ch = char::from_u32(c).unwrap();
            let mut out = Vec::new();
            write_str(&ch.to_string(), &mut out);
            let expected = match ch {
                '\u{8}' => "\"\\b\"".to_owned(),
                '\t' => "\"\\t\"".to_owned(),
                '\n' => "\"\\n\"".to_owned(),
                '\u{c}' => "\"\\f\"".to_owned(),
                '\r' => "\"\\r\"".to_owned(),
                '"' => "\"\\\"\"".to_owned(),
                '\\' => "\"\\\\\"".to_owned(),
                c if (c as u32) < 0x20 => format!("\"\\u{:04x}\"", c as u32),
                c => format!("\"{c}\""),
            };
            assert_eq!(String::from_utf8(out).unwrap(), expected, "U+{c:04X}");
        }
        let mut out = Vec::new();
        write_str("a\u{7f}\u{80}é€😂\u{1f}z", &mut out);
        assert_eq!(
            String::from_utf8(out).unwrap(),
            "\"a\u{7f}\u{80}é€😂\\u001fz\""
        );
    }

    #[test]
    fn integers_follow_the_double() {
        assert_eq!(written(&json!(0)), "0");
        assert_eq!(written(&json!(-1)), "-1");
        assert_eq!(written(&json!(9007199254740992u64)), "9007199254740992");
        assert_eq!(written(&json!(-9007199254740992i64)), "-9007199254740992");
        // 2^53 + 1 is not a double; the nearest (ties to even) is 2^53.
        assert_eq!(written(&json!(9007199254740993u64)), "9007199254740992");
        assert_eq!(written(&json!(9007199254740995u64)), "9007199254740996");
        assert_eq!(written(&json!(u64::MAX)), "18446744073709552000");
        assert_eq!(written(&json!(i64::MIN)), "-9223372036854776000");
        assert_eq!(canon("1000000000000000000000"), "1e+21");
        assert_eq!(canon("100000000000000000000"), "100000000000000000000");
        assert_eq!(
            canon("123456789012345678901234567890"),
            "1.2345678901234568e+29"
        );
    }

    #[test]
    fn floats_and_negative_zero() {
        assert_eq!(canon("-0"), "0");
        assert_eq!(canon("-0.0"), "0");
        assert_eq!(canon("0e10"), "0");
        assert_eq!(canon("56.0"), "56");
        assert_eq!(canon("-56.0"), "-56");
        assert_eq!(canon("1e-7"), "1e-7");
        assert_eq!(canon("0.1"), "0.1");
    }

    #[test]
    fn number_overflow_is_non_finite() {
        assert!(matches!(canonicalize(b"1E400"), Err(JcsError::NonFinite)));
        assert!(matches!(canonicalize(b"-1e309"), Err(JcsError::NonFinite)));
        assert!(matches!(
            canonicalize(b"-Infinity"),
            Err(JcsError::NonFinite)
        ));
        assert_eq!(canon("1e-400"), "0");
    }

    #[test]
    fn number_grammar_is_strict() {
        for bad in [
            "01", "1.", ".5", "+1", "1e", "1e+", "-", "0x10", "1.e3", "- 1",
        ] {
            assert!(
                matches!(parse_strict(bad.as_bytes()), Err(JcsError::Syntax { .. })),
                "{bad}"
            );
        }
    }

    #[test]
    fn syntax_errors_have_positions() {
        match parse_strict(b"{\n  \"a\": tru\n}") {
            Err(JcsError::Syntax { line, column, .. }) => assert_eq!((line, column), (2, 8)),
            other => panic!("unexpected {other:?}"),
        }
        match parse_strict("[\"é\", x]".as_bytes()) {
            Err(JcsError::Syntax { line, column, .. }) => assert_eq!((line, column), (1, 7)),
            other => panic!("unexpected {other:?}"),
        }
    }

    /// The eight-at-a-time scan stops where the byte-by-byte one does: at every position of
    /// every byte value, after runs of every length, with bytes that borrow (0x00, 0x01,
    /// 0x21, 0x23, 0x5b, 0x5d, 0x80, 0xff) around it.
    #[test]
    fn plain_run_stops_at_the_first_byte_to_look_at() {
        let reference = |b: &[u8]| {
            b.iter()
                .position(|&c| c == b'"' || c == b'\\' || c < 0x20)
                .unwrap_or(b.len())
        };
        let fillers = [b'a', 0x21, 0x23, 0x5b, 0x5d, 0x7f, 0x80, 0xc3, 0xff, b' '];
        for filler in fillers {
            for len in 0..20 {
                for at in 0..=len {
                    for b in 0..=255u8 {
                        let mut v = vec![filler; len];
                        if at < len {
                            v[at] = b;
                        }
                        assert_eq!(plain_run(&v), reference(&v), "{filler} {len} {at} {b}");
                        // A second special byte after the first does not move the answer.
                        if at + 1 < len {
                            v[at + 1] = 0;
                            assert_eq!(plain_run(&v), reference(&v));
                        }
                    }
                }
            }
        }
    }

    #[test]
    fn string_escapes_decode() {
        let v = parse_strict(br#""a\"\\\/\b\f\n\r\t\u00e9\uD83D\uDE02z""#).unwrap();
        assert_eq!(v, json!("a\"\\/\u{8}\u{c}\n\r\té😂z"));
        assert!(parse_strict(b"\"\\x\"").is_err());
        assert!(parse_strict(b"\"\\u12\"").is_err());
        assert!(parse_strict(b"\"a\nb\"").is_err());
        assert!(parse_strict(b"\"abc").is_err());
    }

    #[test]
    fn duplicate_keys_compare_unescaped() {
        assert!(matches!(
            parse_strict(br#"{"a":1,"\u0061":2}"#),
            Err(JcsError::DuplicateKey(k)) if k == "a"
        ));
    }

    #[test]
    fn depth_limit_is_exact() {
        let ok = format!("{}{}", "[".repeat(MAX_DEPTH), "]".repeat(MAX_DEPTH));
        assert_eq!(canon(&ok), ok);
        let deep = format!("{}{}", "[".repeat(MAX_DEPTH + 1), "]".repeat(MAX_DEPTH + 1));
        assert!(matches!(
            canonicalize(deep.as_bytes()),
            Err(JcsError::TooDeep)
        ));
        let mut v = json!(1);
        for _ in 0..=MAX_DEPTH {
            v = json!({ "k": v });
        }
        assert!(matches!(
            write_value(&v, &mut Vec::new()),
            Err(JcsError::TooDeep)
        ));
    }

    #[test]
    fn utf16_order_is_used_when_it_differs() {
        // U+1F602 is D83D DE02 in UTF-16, so it sorts before U+FB33 although its code point and
        // UTF-8 bytes are larger.
        let v = json!({ "\u{fb33}": 1, "\u{1f602}": 2, "a": 3 });
        assert_eq!(written(&v), "{\"a\":3,\"\u{1f602}\":2,\"\u{fb33}\":1}");
        assert!(in_utf16_order(json!({"a":1,"b":2}).as_object().unwrap()));
        assert!(!in_utf16_order(
            json!({"a":1,"\u{e000}":2}).as_object().unwrap()
        ));
        // Checked mode (used after a discard) sorts the same way.
        let mut out = Vec::new();
        let map = json!({ "\u{fb33}": 1, "\u{1f602}": 2, "a": 3 });
        write_object(map.as_object().unwrap(), &mut out, 1, Mode::Checked).unwrap();
        assert_eq!(out, written(&map).as_bytes());
    }

    /// Reference: sort every object's members by UTF-16 code units, no fast paths.
    fn reference(v: &Value, out: &mut Vec<u8>) {
        match v {
            Value::Array(items) => {
                out.push(b'[');
                for (i, item) in items.iter().enumerate() {
                    if i > 0 {
                        out.push(b',');
                    }
                    reference(item, out);
                }
                out.push(b']');
            }
            Value::Object(map) => {
                out.push(b'{');
                for (i, (k, v)) in sorted_all(map).into_iter().enumerate() {
                    if i > 0 {
                        out.push(b',');
                    }
                    write_str(k, out);
                    out.push(b':');
                    reference(v, out);
                }
                out.push(b'}');
            }
            other => write_value(other, out).unwrap(),
        }
    }

    #[test]
    fn ordering_matches_reference_on_random_objects() {
        const PIECES: [&str; 9] = [
            "a",
            "B",
            "\u{e9}",
            "\u{7ff}",
            "\u{d7ff}",
            "\u{e000}",
            "\u{ffff}",
            "\u{10000}",
            "\u{1f602}",
        ];
        let mut seed = 0x9e37_79b9_7f4a_7c15_u64;
        let mut next = move |n: usize| {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            (seed % n as u64) as usize
        };
        fn build(next: &mut dyn FnMut(usize) -> usize, depth: usize) -> Value {
            let mut map = Map::new();
            for _ in 0..next(6) {
                let key: String = (0..next(4)).map(|_| PIECES[next(PIECES.len())]).collect();
                let value = if depth < 4 && next(3) == 0 {
                    build(next, depth + 1)
                } else {
                    Value::from(next(100))
                };
                map.insert(key, value);
            }
            Value::Object(map)
        }
        for _ in 0..2000 {
            let v = build(&mut next, 0);
            let mut expected = Vec::new();
            reference(&v, &mut expected);
            assert_eq!(written(&v).into_bytes(), expected, "{v}");
        }
    }

    #[test]
    fn hostile_nesting_stays_linear() {
        // Each level: a large sibling first, then a key that forces sorting. A writer that
        // discarded and rewrote earlier siblings would do 2^depth work here.
        let mut v = json!(1);
        for _ in 0..MAX_DEPTH - 1 {
            v = json!({ "a": v, "\u{ffff}": 0, "\u{10000}": 0 });
        }
        let text = written(&v);
        assert!(text.starts_with("{\"a\":{\"a\":"));
        assert!(text.ends_with(",\"\u{10000}\":0,\"\u{ffff}\":0}"));
    }

    #[test]
    fn to_vec_rejects_non_finite_and_sorts() {
        #[derive(serde::Serialize)]
        struct S {
            z: u8,
            a: f64,
        }
        assert_eq!(to_vec(&S { z: 1, a: 0.5 }).unwrap(), br#"{"a":0.5,"z":1}"#);
        assert!(matches!(
            to_vec(&S { z: 1, a: f64::NAN }),
            Err(JcsError::NonFinite)
        ));
        assert!(matches!(to_vec(&[f32::INFINITY]), Err(JcsError::NonFinite)));
        assert_eq!(to_vec(&Some(-0.0f64)).unwrap(), b"0");
    }

    #[test]
    fn rejects_invalid_utf8_and_bom() {
        assert!(matches!(
            parse_strict(b"\"a\xff\""),
            Err(JcsError::InvalidUtf8 { offset: 2 })
        ));
        assert!(matches!(
            parse_strict(b"\xef\xbb\xbf{}"),
            Err(JcsError::Syntax { .. })
        ));
    }
}
