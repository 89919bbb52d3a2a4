#!/usr/bin/env bash
# Runs every cargo-fuzz target for a short while (default 30 s each). Needs cargo-fuzz
# (`cargo install cargo-fuzz`); on stable toolchains RUSTC_BOOTSTRAP=1 enables the sanitizer
# flags cargo-fuzz passes. Not part of scripts/test.sh (it takes minutes); run it before
# releases and after touching a parser.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
SECS="${1:-30}"
command -v cargo-fuzz >/dev/null || cargo install cargo-fuzz --locked
cd "$ROOT/fuzz"
export RUSTC_BOOTSTRAP=1
for t in envelope bundle statement jcs keyfile; do
  echo "==> fuzz $t for ${SECS}s" >&2
  cargo fuzz run -O "$t" -- -max_total_time="$SECS" -rss_limit_mb=2048 2>&1 | tail -n 3
done
