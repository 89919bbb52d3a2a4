#!/usr/bin/env bash
# Sigstore verification benchmark (issue #11): stella-sigstore next to @sigstore/verify on the
# same real bundles (crates/sigstore/tests/data), in one run:
#   in process   N verifications per bundle (parse + verify), trusted root parsed once:
#                cargo bench -p stella-sigstore --bench verify   vs  tests/interop/sigstore_verify_bench.mjs
#   per process  RUNS invocations of `stella verify blob --bundle ...` vs node running one
#                verification per process (module loading included, as for a CLI).
# Usage: scripts/sigstore-bench.sh   (env: N=1000, RUNS=50, STELLA=prebuilt release binary,
#        BASELINE_BENCH=older verify bench binary for before/after)
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
N="${N:-1000}"; RUNS="${RUNS:-50}"
DATA="$ROOT/crates/sigstore/tests/data"; ROOTS="$ROOT/crates/sigstore/roots"
command -v node >/dev/null || { echo "missing node: run scripts/setup-test-deps.sh" >&2; exit 2; }
[ -d "$ROOT/tests/interop/node_modules/@sigstore/verify" ] || { echo "missing @sigstore/verify: run scripts/setup-test-deps.sh" >&2; exit 2; }
cd "$ROOT"
echo "== in process, n=$N"
N="$N" cargo bench --quiet -p stella-sigstore --bench verify 2>/dev/null | grep 'us/bundle'
node tests/interop/sigstore_verify_bench.mjs "$DATA" "$ROOTS" "$N"
# BASELINE_BENCH=<an older build of the verify bench binary>: run it too, in the same run, for
# before/after figures (its compiled-in data path must still exist).
if [ -n "${BASELINE_BENCH:-}" ]; then
    N="$N" "$BASELINE_BENCH" | grep 'us/bundle' | sed 's/^stella-sigstore /baseline        /'
fi
if [ -z "${STELLA:-}" ]; then
    cargo build --release --quiet -p stella-cli
    STELLA="${CARGO_TARGET_DIR:-$ROOT/target}/release/stella"
fi
TSA_ROOT="$(mktemp)"; trap 'rm -f "$TSA_ROOT"' EXIT
python3 - "$ROOTS/public-good.json" "$DATA/public-good/tsa-github-staging.json" > "$TSA_ROOT" <<'PY'
import json, sys
r = json.load(open(sys.argv[1])); r["timestampAuthorities"] = json.load(open(sys.argv[2])); print(json.dumps(r))
PY
per_run() { # label, command...
    local label="$1"; shift
    local t0 t1; t0=$(date +%s%N)
    for _ in $(seq "$RUNS"); do "$@" >/dev/null; done
    t1=$(date +%s%N)
    printf '%-16s %8.1f ms/process  runs=%s\n' "$label" "$(echo "($t1 - $t0) / 1000000 / $RUNS" | bc -l)" "$RUNS"
}
echo "== per process (CLI), npm key DSSE bundle"
per_run "stella" "$STELLA" verify blob --bundle "$DATA/public-good/bundle-publish.json" \
    --key "$DATA/public-good/npm-registry.pub" \
    sha512:76176ffa33808b54602c7c35de5c6e9a4deb96066dba6533f50ac234f4f1f4c6b3527515dc17c06fbe2860030f410eee69ea20079bd3a2c6f3dcf3b329b10751
per_run "@sigstore/verify" node tests/interop/sigstore_verify_bench.mjs "$DATA" "$ROOTS" 1 1
echo "== per process (CLI), timestamped certificate DSSE bundle"
per_run "stella" "$STELLA" verify blob --bundle "$DATA/public-good/bundle-with-timestamp.json" \
    --trusted-root "$TSA_ROOT" --tlog-threshold 0 \
    --certificate-identity brian@dehamer.com --certificate-oidc-issuer https://github.com/login/oauth \
    sha512:bbfd372fc9beeb777fe35d05bb10c0c70a9733d366a75fed7dd18866c7391de3ee7e88ba74dd47abf3e15c845e547fcf0e5c3da80854c751554224d3a6d4e55f
per_run "@sigstore/verify" node tests/interop/sigstore_verify_bench.mjs "$DATA" "$ROOTS" 1 0
