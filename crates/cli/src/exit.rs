//! Exit codes (SPEC §1) and the mapping from error chains to them.

use std::fmt;

pub(crate) const OK: u8 = 0;
pub(crate) const VERIFY_FAILED: u8 = 1;
pub(crate) const USAGE: u8 = 2;
pub(crate) const AUTH: u8 = 3;
pub(crate) const NOT_FOUND: u8 = 4;
pub(crate) const OFFLINE: u8 = 5;
pub(crate) const RETRYABLE: u8 = 10;

/// An error that already knows its exit code.
#[derive(Debug)]
pub(crate) struct Coded {
    pub(crate) code: u8,
    pub(crate) message: String,
}

impl fmt::Display for Coded {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for Coded {}

/// Fail with a specific exit code.
pub(crate) fn fail(code: u8, message: impl Into<String>) -> anyhow::Error {
    anyhow::Error::new(Coded {
        code,
        message: message.into(),
    })
}

/// The exit code for an error chain: the first cause that determines one wins.
pub(crate) fn code_for(err: &anyhow::Error) -> u8 {
    for cause in err.chain() {
        if let Some(c) = cause.downcast_ref::<Coded>() {
            return c.code;
        }
        if cause.downcast_ref::<stella_keys::VerifyError>().is_some() {
            return VERIFY_FAILED;
        }
        if let Some(k) = cause.downcast_ref::<stella_keys::KeyError>() {
            if k.is_wrong_password() || k.is_auth() {
                return AUTH;
            }
            if k.is_not_found() {
                return NOT_FOUND;
            }
            if k.is_unavailable() {
                return RETRYABLE;
            }
        }
        if let Some(stella_keys::SignError::Unavailable { .. }) =
            cause.downcast_ref::<stella_keys::SignError>()
        {
            return RETRYABLE;
        }
        if let Some(k) = cause.downcast_ref::<stella_keyless::KeylessError>() {
            return keyless_code(k);
        }
        if let Some(io) = cause.downcast_ref::<std::io::Error>() {
            if io.kind() == std::io::ErrorKind::NotFound {
                return NOT_FOUND;
            }
        }
    }
    USAGE
}

/// Keyless signing: an unreachable Fulcio/TSA/Rekor is retryable (10); a refused or expired
/// identity token is an authentication failure (3); a certificate, timestamp or log entry we
/// do not trust is a verification failure (1).
fn keyless_code(k: &stella_keyless::KeylessError) -> u8 {
    use stella_keyless::{KeylessError, UpstreamError};
    match k {
        _ if k.is_upstream_unavailable() => RETRYABLE,
        KeylessError::Token(_) => AUTH,
        KeylessError::Upstream(UpstreamError::Rejected {
            status: 401 | 403, ..
        }) => AUTH,
        KeylessError::Upstream(UpstreamError::Untrusted { .. }) | KeylessError::SelfCheck(_) => {
            VERIFY_FAILED
        }
        _ => USAGE,
    }
}

/// The error chain as one line, `outer: inner: cause`, without repeating a cause that the
/// message before it already ends with (a library error that quotes its `source` in its own
/// message would otherwise print it twice).
pub(crate) fn render(err: &anyhow::Error) -> String {
    let mut out = String::new();
    for cause in err.chain() {
        let msg = cause.to_string();
        if msg.is_empty() || out.ends_with(&msg) {
            continue;
        }
        if !out.is_empty() {
            out.push_str(": ");
        }
        out.push_str(&msg);
    }
    out
}

/// The exit code for an error from a library that does not know exit codes: `NOT_FOUND` when
/// a missing file is somewhere in its source chain, else `default`.
pub(crate) fn code_for_std(err: &(dyn std::error::Error + 'static), default: u8) -> u8 {
    let mut cur: Option<&(dyn std::error::Error + 'static)> = Some(err);
    while let Some(e) = cur {
        if let Some(io) = e.downcast_ref::<std::io::Error>() {
            if io.kind() == std::io::ErrorKind::NotFound {
                return NOT_FOUND;
            }
        }
        cur = e.source();
    }
    default
}

/// The JSON report of a failed command run with `--output json`: what was checked, that it
/// failed, why, and the exit code. Printed on stdout, so a script reading the JSON sees the
/// failure as well as the exit code.
pub(crate) fn json_failure(err: &anyhow::Error, fields: serde_json::Value) -> serde_json::Value {
    let mut v = match fields {
        serde_json::Value::Object(m) => m,
        _ => serde_json::Map::new(),
    };
    let code = code_for(err);
    v.insert("verified".into(), serde_json::Value::Bool(false));
    v.insert(
        "outcome".into(),
        serde_json::Value::String(outcome_name(code).into()),
    );
    v.insert("exitCode".into(), code.into());
    v.insert("error".into(), serde_json::Value::String(render(err)));
    serde_json::Value::Object(v)
}

/// A stable name for an exit code (SPEC §1).
pub(crate) fn outcome_name(code: u8) -> &'static str {
    match code {
        OK => "ok",
        VERIFY_FAILED => "verification-failed",
        USAGE => "usage-or-input-error",
        AUTH => "authentication-failed",
        NOT_FOUND => "not-found",
        OFFLINE => "offline",
        RETRYABLE => "retryable",
        _ => "error",
    }
}

/// Print `json_failure` on stdout and hand the error back (the exit code stays the error's).
pub(crate) fn print_json_failure(err: anyhow::Error, fields: serde_json::Value) -> anyhow::Error {
    let v = json_failure(&err, fields);
    match serde_json::to_string_pretty(&v) {
        Ok(s) => println!("{s}"),
        Err(_) => println!("{v}"),
    }
    err
}

/// [`render`] for a plain error and its `source` chain.
pub(crate) fn render_std(err: &(dyn std::error::Error + 'static)) -> String {
    let mut out = String::new();
    let mut cur: Option<&(dyn std::error::Error + 'static)> = Some(err);
    while let Some(e) = cur {
        let msg = e.to_string();
        if !msg.is_empty() && !out.ends_with(&msg) {
            if !out.is_empty() {
                out.push_str(": ");
            }
            out.push_str(&msg);
        }
        cur = e.source();
    }
    out
}
