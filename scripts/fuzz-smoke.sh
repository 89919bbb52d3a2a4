#!/usr/bin/env bash
# Runs every cargo-fuzz target for a short while (default 30 s each): scripts/fuzz-run.sh with
# a shorter budget. Not part of scripts/test.sh (it takes minutes); run it before releases and
# after touching a parser.
set -euo pipefail
exec "$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)/fuzz-run.sh" "${1:-30}"
