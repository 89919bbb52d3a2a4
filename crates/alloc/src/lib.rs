//! The global allocator of the `stella` binary and its tuning per kind of work
//! (docs/design.md "Allocator", issue #15 items 1 and 3).
//!
//! With the feature `mimalloc`, `Global` is mimalloc's allocator type, for a binary's
//! `#[global_allocator]`, and [`tune`] sets mimalloc's options for a [`Profile`]. mimalloc's
//! defaults suit a long-running service: freed pages are kept for a purge delay (1 s in
//! mimalloc 3) and reused, which is where the Signer's ~10 % of CPU per signature over glibc
//! comes from. They do not suit a one-shot command that allocates and frees a lot in a short
//! time (`mirror verify` of a 1,000,000-file bundle): pages freed within the last second
//! still count in the peak RSS, 233-247 MiB against 151 MiB with glibc. [`Profile::BulkWork`]
//! purges freed pages at once, commits new arenas on demand and turns transparent huge pages
//! off for the process, which brings mimalloc's peak back to glibc's.
//!
//! mimalloc reads `purge_delay` whenever it purges, so setting it first thing in `main`
//! takes effect for everything after. Not so the first arena: mimalloc reserves it (1 GiB)
//! before `main`, committed whole and advised `MADV_HUGEPAGE` (Linux, `arena_eager_commit`
//! 2), so its pages fault in 2 MiB at a time; measured at 1,000,000 files, purging alone left
//! `mirror verify` at 177-181 MiB against 149 MiB with the options set from the environment
//! before start. `prctl(PR_SET_THP_DISABLE)` stops huge pages for every later fault, in that
//! arena too (and is inherited by child processes); `arena_eager_commit` 0 covers arenas
//! reserved later. An operator's `MIMALLOC_<OPTION>` environment variable wins over a
//! profile: [`tune`] only changes options the environment left alone.
//!
//! Without the feature the crate is inert: no `Global`, [`tune`] does nothing and
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
    /// pages go back to the OS at once (`purge_delay` 0), arenas are committed as they are
    /// used (`arena_eager_commit` 0) and memory is faulted in 4 KiB pages, not 2 MiB ones
    /// (transparent huge pages off, Linux), so the peak RSS is what is live.
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
    /// Whether the process may get transparent huge pages (`PR_GET_THP_DISABLE` is 0; always
    /// true off Linux).
    pub huge_pages: bool,
}

impl Settings {
    /// mimalloc's own defaults (what [`Profile::Service`] keeps).
    pub const MIMALLOC_DEFAULTS: Settings = Settings {
        purge_delay_ms: 1000,
        arena_eager_commit: 2,
        huge_pages: true,
    };
    /// What [`Profile::BulkWork`] sets.
    pub const BULK_WORK: Settings = Settings {
        purge_delay_ms: 0,
        arena_eager_commit: 0,
        huge_pages: !cfg!(target_os = "linux"),
    };
}

/// Whether this build's `Global` is mimalloc (feature `mimalloc`).
pub const fn is_mimalloc() -> bool {
    cfg!(feature = "mimalloc")
}

/// Sets mimalloc's options for `profile`, leaving alone any option given in the environment
/// (`MIMALLOC_PURGE_DELAY`, `MIMALLOC_ARENA_EAGER_COMMIT`, `MIMALLOC_ALLOW_THP`: with the
/// latter set, huge pages are left as they are). Call it first thing in `main`,
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
            if !s.huge_pages && std::env::var_os("MIMALLOC_ALLOW_THP").is_none() {
                ffi::disable_huge_pages();
            }
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
            huge_pages: ffi::huge_pages(),
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

    /// `PR_SET_THP_DISABLE` and `PR_GET_THP_DISABLE` (linux/prctl.h).
    #[cfg(target_os = "linux")]
    const PR_SET_THP_DISABLE: std::os::raw::c_int = 41;
    #[cfg(target_os = "linux")]
    const PR_GET_THP_DISABLE: std::os::raw::c_int = 42;

    #[cfg(target_os = "linux")]
    extern "C" {
        /// prctl(2), from the C library std links anyway.
        fn prctl(option: std::os::raw::c_int, ...) -> std::os::raw::c_int;
    }

    /// `prctl(PR_SET_THP_DISABLE, 1)`: no transparent huge page for any later fault of this
    /// process (and its children); what mimalloc itself does at start with
    /// `MIMALLOC_ALLOW_THP=0`. A kernel without it (before 3.15) returns an error, ignored:
    /// the pages stay as they were.
    #[allow(unsafe_code)]
    pub(super) fn disable_huge_pages() {
        #[cfg(target_os = "linux")]
        {
            let (one, zero): (std::os::raw::c_ulong, std::os::raw::c_ulong) = (1, 0);
            // SAFETY: prctl with PR_SET_THP_DISABLE takes four unsigned long arguments (the
            // flag, then three zeros) passed by value and reads no memory of ours; it sets a
            // flag of the process' memory map. Failure is reported by the return value.
            let _ = unsafe { prctl(PR_SET_THP_DISABLE, one, zero, zero, zero) };
        }
    }

    /// `prctl(PR_GET_THP_DISABLE) == 0` (true off Linux or if the call fails).
    #[allow(unsafe_code)]
    pub(super) fn huge_pages() -> bool {
        #[cfg(target_os = "linux")]
        {
            let zero: std::os::raw::c_ulong = 0;
            // SAFETY: prctl with PR_GET_THP_DISABLE takes four zero unsigned longs by value and
            // returns the flag (0 or 1) or -1; it reads and writes no memory of ours.
            let r = unsafe { prctl(PR_GET_THP_DISABLE, zero, zero, zero, zero) };
            r != 1
        }
        #[cfg(not(target_os = "linux"))]
        true
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
            && std::env::var_os("MIMALLOC_ALLOW_THP").is_none()
            && ffi::huge_pages()
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
