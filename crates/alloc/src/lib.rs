//! The global allocator of the `stella` binary and its tuning per kind of work
//! (docs/design.md "Allocator", issue #15 items 1 and 3).
//!
//! With the feature `mimalloc`, [`Global`] is mimalloc's allocator type, for a binary's
//! `#[global_allocator]`, and [`tune`] sets mimalloc's options for a [`Profile`]. mimalloc's
//! defaults suit a long-running service: freed pages are kept for a purge delay (1 s in
//! mimalloc 3) and reused, which is where the Signer's ~10 % of CPU per signature over glibc
//! comes from. They do not suit a one-shot command that allocates and frees a lot in a short
//! time (`mirror verify` of a 1,000,000-file bundle): pages freed within the last second
//! still count in the peak RSS, 233-247 MiB against 151 MiB with glibc. [`Profile::BulkWork`]
//! purges freed pages at once and commits new arenas on demand, which brings mimalloc's peak
//! back to glibc's.
//!
//! mimalloc reads these options whenever it purges or reserves an arena, not once at start,
//! so setting them first thing in `main` takes effect for everything after (pages freed
//! before that are purged at the next purge). An operator's `MIMALLOC_<OPTION>` environment
//! variable wins over a profile: [`tune`] only changes options the environment left alone.
//!
//! Without the feature the crate is inert: no [`Global`], [`tune`] does nothing and
//! [`settings`] returns `None`, so callers need no `cfg` of their own.
//!
//! This is the workspace's FFI crate: `unsafe_code` is denied, not forbidden, and each call
//! into mimalloc is one function with `#[allow(unsafe_code)]` and a SAFETY comment.
#![deny(unsafe_code)]

/// mimalloc's allocator, for `#[global_allocator] static GLOBAL: stella_alloc::Global =
/// stella_alloc::Global;` (no secure mode, no `malloc` override).
#[cfg(feature = "mimalloc")]
pub use mimalloc::MiMalloc as Global;

/// How a process is going to use memory.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum Profile {
    /// A long-running service (`stella signer serve`): mimalloc's defaults, freed pages kept
    /// for reuse for the purge delay. Changes nothing.
    Service,
    /// A one-shot command that may allocate and free hundreds of MiB (mirror bundles): freed
    /// pages go back to the OS at once (`purge_delay` 0) and arenas are committed page by
    /// page as they are used (`arena_eager_commit` 0), so the peak RSS is what is live.
    BulkWork,
}

/// The options [`tune`] sets, as mimalloc reports them.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct Settings {
    /// Milliseconds before freed memory is purged: 0 at once, -1 never (mimalloc 3: 1000).
    pub purge_delay_ms: i64,
    /// Whether a new arena is committed whole: 0 no, 1 yes, 2 on overcommit systems such as
    /// Linux (mimalloc's default).
    pub arena_eager_commit: i64,
}

impl Settings {
    /// mimalloc's own defaults (what [`Profile::Service`] keeps).
    pub const MIMALLOC_DEFAULTS: Settings = Settings {
        purge_delay_ms: 1000,
        arena_eager_commit: 2,
    };
    /// What [`Profile::BulkWork`] sets.
    pub const BULK_WORK: Settings = Settings {
        purge_delay_ms: 0,
        arena_eager_commit: 0,
    };
}

/// Whether this build's [`Global`] is mimalloc (feature `mimalloc`).
pub const fn is_mimalloc() -> bool {
    cfg!(feature = "mimalloc")
}

/// Sets mimalloc's options for `profile`, leaving alone any option given in the environment
/// (`MIMALLOC_PURGE_DELAY`, `MIMALLOC_ARENA_EAGER_COMMIT`). Call it first thing in `main`,
/// before the work starts. Does nothing without the feature `mimalloc`, and for
/// [`Profile::Service`].
pub fn tune(profile: Profile) {
    #[cfg(feature = "mimalloc")]
    match profile {
        Profile::Service => {}
        Profile::BulkWork => {
            let s = Settings::BULK_WORK;
            ffi::set_default(ffi::PURGE_DELAY, s.purge_delay_ms);
            ffi::set_default(ffi::ARENA_EAGER_COMMIT, s.arena_eager_commit);
        }
    }
    #[cfg(not(feature = "mimalloc"))]
    let _ = profile;
}

/// The options [`tune`] sets, read back from mimalloc; `None` without the feature `mimalloc`.
pub fn settings() -> Option<Settings> {
    #[cfg(feature = "mimalloc")]
    {
        Some(Settings {
            purge_delay_ms: ffi::get(ffi::PURGE_DELAY),
            arena_eager_commit: ffi::get(ffi::ARENA_EAGER_COMMIT),
        })
    }
    #[cfg(not(feature = "mimalloc"))]
    None
}

/// The calls into mimalloc: one function per FFI call.
#[cfg(feature = "mimalloc")]
mod ffi {
    use libmimalloc_sys::{mi_option_get, mi_option_set_default, mi_option_t};

    // Indices of `mi_option_t` in mimalloc's `include/mimalloc.h`, the same in the v2 and v3
    // sources that libmimalloc-sys 0.1.49 vendors (its Rust bindings leave these two out).
    // `tests::defaults_read_back_at_these_indices` checks them against the defaults.
    pub(super) const ARENA_EAGER_COMMIT: mi_option_t = 4;
    pub(super) const PURGE_DELAY: mi_option_t = 15;

    /// `mi_option_get`: the option's value (read from the environment on first use).
    #[allow(unsafe_code)]
    // `c_long` is `i64` on Linux but `i32` on Windows: the conversion is not always a no-op.
    #[allow(clippy::useless_conversion)]
    pub(super) fn get(option: mi_option_t) -> i64 {
        // SAFETY: `mi_option_get` takes an option index by value and returns a `long`; an
        // index outside `0.._mi_option_last` returns 0 (checked in options.c). It touches only
        // mimalloc's static option table, which mimalloc initialises itself on first use.
        i64::from(unsafe { mi_option_get(option) })
    }

    /// `mi_option_set_default`: the value, unless the environment set the option. Reads the
    /// option first so that the environment is consulted before the default is written
    /// (`mi_option_set_default` alone does not mark an option initialised).
    #[allow(unsafe_code)]
    // `c_long` is `i64` on Linux but `i32` on Windows: the conversion is not always a no-op.
    #[allow(clippy::useless_conversion, clippy::unnecessary_fallible_conversions)]
    pub(super) fn set_default(option: mi_option_t, value: i64) {
        let _ = get(option);
        let value = std::os::raw::c_long::try_from(value).unwrap_or(std::os::raw::c_long::MAX);
        // SAFETY: `mi_option_set_default` takes an option index and a `long` by value and
        // writes one entry of mimalloc's static option table (ignoring an index out of range);
        // the options read here are plain integers mimalloc reads on each purge or arena
        // reservation, so changing them while other threads allocate is what mimalloc's
        // `mi_option_set` is for.
        unsafe { mi_option_set_default(option, value) }
    }

    /// `mi_version`: 30302 for mimalloc 3.3.2.
    #[cfg(test)]
    #[allow(unsafe_code)]
    pub(super) fn version() -> i32 {
        // SAFETY: `mi_version` takes nothing and returns a constant.
        unsafe { libmimalloc_sys::mi_version() }
    }
}

#[cfg(all(test, feature = "mimalloc"))]
mod tests {
    use super::*;

    // mimalloc's options are process-wide and the test harness runs tests on threads: the
    // checks that change them run in order in one test.
    #[test]
    fn profiles_set_and_read_back_their_options() {
        // Without MIMALLOC_* in the environment, the indices read back mimalloc 3's defaults
        // (a wrong index would read another option's value).
        if std::env::var_os("MIMALLOC_PURGE_DELAY").is_none()
            && std::env::var_os("MIMALLOC_ARENA_EAGER_COMMIT").is_none()
        {
            assert_eq!(settings(), Some(Settings::MIMALLOC_DEFAULTS));
            tune(Profile::Service);
            assert_eq!(settings(), Some(Settings::MIMALLOC_DEFAULTS));
            tune(Profile::BulkWork);
            assert_eq!(settings(), Some(Settings::BULK_WORK));
        }
    }

    #[test]
    fn the_vendored_mimalloc_is_version_3() {
        let v = ffi::version();
        assert_eq!(
            v / 10000,
            3,
            "mimalloc {v}: check the option indices and defaults"
        );
    }
}
