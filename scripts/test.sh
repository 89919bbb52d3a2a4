#!/usr/bin/env bash
# The whole test suite, from a fresh machine: installs the third-party peers the interop tests
# use (scripts/setup-test-deps.sh), then checks formatting and lints, and runs every test.
# Usage: scripts/test.sh [extra cargo test args]
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
# Nothing here reads the terminal: keep cargo's rustc probes from ever reading a stray stdin.
exec </dev/null

step() { printf '\n==> %s\n' "$*" >&2; }

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
cargo clippy --workspace --all-targets --locked -- -D warnings

step "cargo test (unit, integration, interop)"
LOG="$(mktemp)"
trap 'rm -f "$LOG"' EXIT
set +e
cargo test --workspace --locked --lib --bins --tests "$@" 2>&1 | tee "$LOG"
status=${PIPESTATUS[0]}
set -e
# One closing line for the whole suite, summed over every test binary.
awk '/^test result:/ { for (i = 1; i <= NF; i++) { if ($(i+1) ~ /^passed/) p += $i; if ($(i+1) ~ /^failed/) f += $i } }
     END { printf "%d passed, %d failed\n", p, f }' "$LOG"
exit "$status"
