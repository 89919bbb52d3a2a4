//! Reproducible timestamps: the one reader of `SOURCE_DATE_EPOCH`
//! (<https://reproducible-builds.org/specs/source-date-epoch/>) for every stage that stamps a
//! time — `create` (`generatedAt`), `sign` (the detached header's `created`) and `pack`
//! (archive entry mtimes). An explicit time (a CLI flag) wins over the variable; without
//! either, `create` and `sign` use the clock and `pack` uses 0.

use time::OffsetDateTime;

use crate::error::{Error, Result};

/// The environment variable.
pub(crate) const VAR: &str = "SOURCE_DATE_EPOCH";

/// Parse a `SOURCE_DATE_EPOCH` value: a non-negative decimal integer number of seconds since
/// 1970-01-01T00:00:00Z that a timestamp can hold (at most year 9999).
pub(crate) fn parse(value: &str) -> Result<u64> {
    let v = value.trim();
    let bad = || {
        Error::input(format!(
            "{VAR}={value:?} is not a non-negative integer number of seconds since 1970"
        ))
    };
    if v.is_empty() || !v.bytes().all(|b| b.is_ascii_digit()) {
        return Err(bad());
    }
    let secs: u64 = v.parse().map_err(|_| bad())?;
    let in_range = i64::try_from(secs)
        .ok()
        .and_then(|s| OffsetDateTime::from_unix_timestamp(s).ok())
        .is_some();
    if !in_range {
        return Err(bad());
    }
    Ok(secs)
}

/// `SOURCE_DATE_EPOCH` from the environment: `None` when unset or empty.
pub(crate) fn source_date_epoch() -> Result<Option<u64>> {
    match std::env::var(VAR) {
        Ok(v) if !v.trim().is_empty() => parse(&v).map(Some),
        Ok(_) | Err(std::env::VarError::NotPresent) => Ok(None),
        Err(std::env::VarError::NotUnicode(_)) => {
            Err(Error::input(format!("{VAR} is not valid UTF-8")))
        }
    }
}

/// The time to stamp: `explicit` if given, else `SOURCE_DATE_EPOCH`, else the clock.
pub fn time_or_now(explicit: Option<OffsetDateTime>) -> Result<OffsetDateTime> {
    if let Some(t) = explicit {
        return Ok(t);
    }
    match source_date_epoch()? {
        Some(secs) => to_time(secs),
        None => Ok(OffsetDateTime::now_utc()),
    }
}

fn to_time(secs: u64) -> Result<OffsetDateTime> {
    i64::try_from(secs)
        .ok()
        .and_then(|s| OffsetDateTime::from_unix_timestamp(s).ok())
        .ok_or_else(|| Error::input(format!("{VAR}={secs} is out of range")))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_only_non_negative_decimal_seconds_in_range() {
        assert_eq!(parse("0").unwrap(), 0);
        assert_eq!(parse(" 1700000000\n").unwrap(), 1_700_000_000);
        for bad in [
            "",
            "-1",
            "+5",
            "1.5",
            "1e9",
            "0x10",
            "abc",
            "99999999999999999999",
        ] {
            assert!(parse(bad).is_err(), "{bad:?}");
        }
        // Year 10000 does not fit a timestamp.
        assert!(parse("253402300800").is_err());
        assert!(parse("253402300799").is_ok());
    }

    #[test]
    fn an_explicit_time_wins() {
        let t = OffsetDateTime::from_unix_timestamp(42).unwrap();
        assert_eq!(time_or_now(Some(t)).unwrap(), t);
    }
}
