#!/usr/bin/env bash
# Keyless vs keyful signatures/s through the Signer service, in one run (issue #12 item 9):
# keyful (P-256 file key), keyless with the certificate reused within its validity, keyless
# with one certificate per signature, and the certificate's cost separated out (the dev CA
# alone, and the difference between the two keyless services). Dev-only in-process CA and
# TSA, so the figures are the service's own cost, not a network's. Not a test: numbers depend
# on the machine and what else runs. docs/keyless.md "Benchmark" has the figures.
#
# Usage: scripts/keyless-bench.sh [--duration SECS] [--connections N]
#                                 [--server-threads N] [--client-threads N]
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
exec cargo bench --locked -p stella-signer --bench keyless -- "$@"
