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
#                                [--replicas N] (with --shared: N replicas behind HAProxy)
#        scripts/signer-bench.sh --scale [OPTIONS]
#   (issue #13) one run, back to back on the same build: one replica on SQLite + memory, one on
#   PostgreSQL + Redis, three on PostgreSQL + Redis behind HAProxy; a table of signatures/s,
#   p99s and the ratio of each to the embedded default, with the load average before each.
#                                [--rounds N] (issue #15: N rounds of crypto bound / service /
#                                              open loop; benches/load/rounds.rs) [--profile N]
#                                [--bound-threads N] (threads of the rounds' bound; default:
#                                                     every core)
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"

# ---- scale-out comparison (issue #13): kept apart from the single-run options above ----
if [ "${1:-}" = "--scale" ]; then
    shift
    cargo bench --locked -p stella-signer --bench load --no-run
    out="$(mktemp -d)"
    trap 'rm -rf "$out"' EXIT
    # CPU seconds used so far by every process named $1 (utime + stime, plus reaped children:
    # PostgreSQL backends that exit count into the postmaster), and the server-wide
    # commit count of PostgreSQL: the per-signature cost of each store, from the difference
    # over a run (other users of the shared servers count too: run on a quiet machine).
    cpu_of() {
        # Processes come and go while /proc is read: a vanished one is skipped.
        { cat /proc/[0-9]*/stat 2>/dev/null || true; } | awk -v name="$1" -v hz="$(getconf CLK_TCK)" '
            { line = $0; sub(/^[0-9]+ \(/, "", line); comm = substr(line, 1, index(line, ") ") - 1);
              if (comm == name) { rest = substr(line, index(line, ") ") + 2); split(rest, f, " ");
                                  t += f[12] + f[13] + f[14] + f[15] } }
            END { printf "%.3f", t / hz }'
    }
    # WAL bytes written by the server so far (the bench database is dropped after each run,
    # so its own statistics are gone; the WAL position is server-wide).
    wal() { psql "${STELLA_BENCH_POSTGRES_URL:-postgres://postgres@127.0.0.1:5432/postgres}" -qAtc \
        "SELECT (pg_current_wal_lsn() - '0/0')::bigint" 2>/dev/null || echo 0; }
    # Redis round trips so far: top-level commands (commands run inside scripts are counted
    # by Redis as well, under their own names; they are not round trips).
    redis_calls() { redis-cli INFO commandstats 2>/dev/null | awk -F'[=:,]' \
        '/^cmdstat_(evalsha|eval|set|get|zrem|ping):/ { n += $3 } END { print n + 0 }'; }
    names=("sqlite+memory, 1 replica" "postgres+redis, 1 replica" "postgres+redis, 3 replicas + HAProxy")
    flags=("" "--shared" "--shared --replicas 3")
    for i in 0 1 2; do
        load="$(cut -d' ' -f1-3 /proc/loadavg)"
        echo "==> ${names[$i]} (load average before: $load)" >&2
        pg0="$(cpu_of postgres)"; rd0="$(cpu_of redis-server)"; c0="$(wal)"; r0="$(redis_calls)"
        # shellcheck disable=SC2086
        cargo bench --locked -p stella-signer --bench load -- "$@" ${flags[$i]} | tee "$out/$i.txt"
        pg1="$(cpu_of postgres)"; rd1="$(cpu_of redis-server)"; c1="$(wal)"; r1="$(redis_calls)"
        echo "$load" > "$out/$i.load"
        recs="$(sed -nE 's/^audit log: ([0-9]+) records.*/\1/p' "$out/$i.txt")"
        awk -v pg="$(awk -v a="$pg0" -v b="$pg1" 'BEGIN{print b-a}')" \
            -v rd="$(awk -v a="$rd0" -v b="$rd1" 'BEGIN{print b-a}')" \
            -v c="$((c1 - c0))" -v r="$((r1 - r0))" -v n="${recs:-0}" 'BEGIN {
            if (n > 0) printf "    per signature (%d records): PostgreSQL %.1f µs CPU, %.0f WAL bytes; Redis %.1f µs CPU, %.2f round trips\n",
                n, pg * 1e6 / n, c / n, rd * 1e6 / n, r / n }' | tee "$out/$i.cost"
    done
    echo
    printf '%-40s %12s %14s %18s %10s %s\n' "configuration" "signatures/s" "p99 closed ms" "p99 at rate ms" "ratio" "load before"
    base=""
    for i in 0 1 2; do
        j="$(grep '^{' "$out/$i.txt" | tail -n1)"
        rps="$(printf '%s' "$j" | sed -E 's/.*"signRps":([0-9.eE+-]+).*/\1/')"
        p99="$(printf '%s' "$j" | sed -E 's/.*"signP99Ms":([0-9.eE+-]+).*/\1/')"
        op99="$(printf '%s' "$j" | sed -E 's/.*"openP99Ms":([0-9.eE+-]+).*/\1/')"
        [ -z "$base" ] && base="$rps"
        ratio="$(awk -v a="$rps" -v b="$base" 'BEGIN { printf "%.2f", a / b }')"
        printf '%-40s %12.0f %14.2f %18.2f %10s %s\n' "${names[$i]}" "$rps" "$p99" "$op99" "$ratio" "$(cat "$out/$i.load")"
    done
    for i in 0 1 2; do printf '%s:%s\n' "${names[$i]}" "$(cat "$out/$i.cost")"; done
    exit 0
fi
exec cargo bench --locked -p stella-signer --bench load -- "$@"
