#!/usr/bin/env bash
# The whole test suite, from a fresh machine: installs the third-party peers the interop tests
# use (scripts/setup-test-deps.sh), then checks formatting and lints, and runs every test.
# Usage: scripts/test.sh [extra cargo test args]
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
step() { printf '\n==> %s\n' "$*" >&2; }

# /dev/null must be the null device. Once, a tool renamed a temp file over it (see the
# regression test `output_to_a_device_writes_into_it_and_keeps_the_device`), and every
# `> /dev/null` then filled a regular file that cargo's `rustc -` probe read as source.
if [ ! -c /dev/null ]; then
  echo "/dev/null is not a character device; recreating it" >&2
  rm -f /dev/null && mknod -m 666 /dev/null c 1 3
fi

# Nothing here reads the terminal.
exec </dev/null

# Cargo caches its `rustc -` target probe in target/.rustc_info.json; a failed probe is cached
# for every later cargo call. Retry such a failure with the cache cleared.
cargo_probe_retry() {
  local err attempt
  err="$(mktemp)"
  for attempt in 1 2 3; do
    if cargo "$@" 2> >(tee "$err" >&2); then
      rm -f "$err"
      return 0
    fi
    sleep 1 # let the stderr tee finish writing
    if grep -q "learn about target-specific information" "$err"; then
      echo "cargo's rustc probe failed (attempt $attempt); clearing its cache and retrying" >&2
      rm -f target/.rustc_info.json
      continue
    fi
    rm -f "$err"
    return 1
  done
  rm -f "$err"
  return 1
}

step "installing test peers (openssl, Python venv, npm packages)"
bash scripts/setup-test-deps.sh

# Tests leave nothing behind. Every temporary file of the run goes to a private folder
# (TMPDIR: Rust's tempfile, mktemp, Python's tempfile and Node's os.tmpdir() all honour it)
# that must be empty at the end. The system temp folder is listed before and after as well:
# a new entry named like the temp files of the tools this suite uses (.tmpXXXXXX from
# tempfile, tmp.XXXXXXXXXX from mktemp, tmpXXXXXXXX from Python, stella*) could only come from
# a hard-coded path and fails the run too (other names belong to other users of the machine).
# On a machine where other jobs create such temp files in the system folder while the suite
# runs, STELLA_SHARED_TMP_CHECK=warn reports them without failing (the private folder stays
# strict).
SYS_TMP="${TMPDIR:-/tmp}"
tmp_names() {
  find "$SYS_TMP" -mindepth 1 -maxdepth 1 \( -name '.tmp*' -o -name 'tmp*' -o -name 'stella*' \) \
    -printf '%f\n' 2>/dev/null | sort
}
TMP_BEFORE="$(tmp_names)"
RUN_TMP="$(mktemp -d "$SYS_TMP/stella-test.XXXXXX")"
trap 'rm -rf "$RUN_TMP"' EXIT
export TMPDIR="$RUN_TMP"
check_tmp() {
  local left new
  left="$(find "$RUN_TMP" -mindepth 1 -printf '  %P\n' | head -n 50)"
  rm -rf "$RUN_TMP"
  new="$(comm -13 <(printf '%s\n' "$TMP_BEFORE") <(tmp_names) | sed 's/^/  /')"
  if [ -n "$new" ] && [ "${STELLA_SHARED_TMP_CHECK:-fail}" = "warn" ] && [ -z "$left" ]; then
    printf 'warning: new temp-like entries in %s (another job, or a hard-coded path?):\n%s\n' \
      "$SYS_TMP" "$new" >&2
    return 0
  fi
  if [ -n "$left" ] || [ -n "$new" ]; then
    echo "the test run left files behind:" >&2
    if [ -n "$left" ]; then printf 'in its TMPDIR:\n%s\n' "$left" >&2; fi
    if [ -n "$new" ]; then
      printf 'in %s:\n%s\n' "$SYS_TMP" "$new" >&2
      echo "(other jobs on this machine? STELLA_SHARED_TMP_CHECK=warn reports these without failing)" >&2
    fi
    return 1
  fi
  echo "no temporary files left behind" >&2
}

step "checking the peers themselves"
PEER_LOG="$(mktemp)"
if ! bash tests/interop/selftest.sh >"$PEER_LOG" 2>&1; then
  cat "$PEER_LOG" >&2
  rm -f "$PEER_LOG"
  echo "peer self-test failed" >&2
  exit 1
fi
tail -n 1 "$PEER_LOG" >&2
rm -f "$PEER_LOG"

step "cargo fmt --check"
cargo fmt --all -- --check

step "no module cycles inside a crate (scripts/check-module-cycles.py)"
python3 scripts/check-module-cycles.py

step "cargo clippy (all targets, -D warnings)"
cargo_probe_retry clippy --workspace --all-targets --locked -- -D warnings

step "building the tests"
cargo_probe_retry test --workspace --locked --lib --bins --tests --no-run

step "the Prometheus alert rules (scripts/promtool-test.sh)"
bash scripts/promtool-test.sh

step "the README examples (scripts/readme-examples.sh)"
bash scripts/readme-examples.sh

step "cargo test (unit, integration, interop)"
LOG="$(mktemp)"
trap 'rm -f "$LOG"; rm -rf "$RUN_TMP"' EXIT
set +e
for attempt in 1 2 3; do
  cargo test --workspace --locked --lib --bins --tests --no-fail-fast "$@" 2>&1 | tee "$LOG"
  status=${PIPESTATUS[0]}
  if [ "$status" -ne 0 ] && grep -q "learn about target-specific information" "$LOG"; then
    echo "cargo's rustc probe failed (attempt $attempt); clearing its cache and retrying" >&2
    rm -f target/.rustc_info.json
    continue
  fi
  break
done
set -e
# One closing line for the whole suite, summed over every test binary.
awk '/^test result:/ { for (i = 1; i <= NF; i++) { if ($(i+1) ~ /^passed/) p += $i; if ($(i+1) ~ /^failed/) f += $i } }
     END { printf "%d passed, %d failed\n", p, f }' "$LOG"
rm -f "$LOG"
trap - EXIT

step "checking that the run left no temporary files"
check_tmp || status=1
exit "$status"
