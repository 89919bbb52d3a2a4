//! Exit codes (SPEC §1) and the mapping from error chains to them.

use std::fmt;

pub(crate) const OK: u8 = 0;
pub(crate) const VERIFY_FAILED: u8 = 1;
pub(crate) const USAGE: u8 = 2;
pub(crate) const AUTH: u8 = 3;
pub(crate) const NOT_FOUND: u8 = 4;
#[allow(dead_code)] // used by network-facing commands (registry, signer client)
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
            if k.is_wrong_password() {
                return AUTH;
            }
        }
        if let Some(io) = cause.downcast_ref::<std::io::Error>() {
            if io.kind() == std::io::ErrorKind::NotFound {
                return NOT_FOUND;
            }
        }
    }
    USAGE
}
