#!/usr/bin/env bash
# Signer service benchmark (issue #5 item 10): the real service and a load generator in one
# process on this machine (loopback HTTP), three phases on the same server in the same run:
# GET /healthz (trivial route), POST /sign/dsse closed loop (signatures/s), and /sign/dsse open
# loop at a fixed rate (p99 from scheduled send times). Every sign request: DPoP-bound ES256
# token + fresh ES256 DPoP proof verified, P-256 signature, durable hash-chained SQLite audit
# record before the response. Not a test: numbers depend on the machine and what else runs.
#
# Usage: scripts/signer-bench.sh [--duration SECS] [--rate R] [--connections N]
#                                [--server-threads N] [--client-threads N]
#                                [--token-cache N] [--log-level LEVEL]
#                                [--shared]   (PostgreSQL audit + Redis quotas/replay cache)
#                                [--rounds N] (issue #15: N rounds of crypto bound / service /
#                                              open loop; benches/load/rounds.rs) [--profile N]
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
exec cargo bench --locked -p stella-signer --bench load -- "$@"
