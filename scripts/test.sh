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

step "checking the peers themselves"
bash tests/interop/selftest.sh >/tmp/stella-peer-selftest.log 2>&1 || {
  cat /tmp/stella-peer-selftest.log >&2
  echo "peer self-test failed" >&2
  exit 1
}
tail -n 1 /tmp/stella-peer-selftest.log >&2

step "cargo fmt --check"
cargo fmt --all -- --check

step "cargo clippy (all targets, -D warnings)"
cargo_probe_retry clippy --workspace --all-targets --locked -- -D warnings

step "building the tests"
cargo_probe_retry test --workspace --locked --lib --bins --tests --no-run

step "cargo test (unit, integration, interop)"
LOG="$(mktemp)"
trap 'rm -f "$LOG"' EXIT
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
exit "$status"
