#!/usr/bin/env bash
# Key backend benchmark (issue #14 item 6): signatures/s through the Signer service
# (crates/signer/benches/load.rs: real service, DPoP-bound tokens, durable audit) with a file
# key, a PKCS#11 key in SoftHSM2 and an AWS KMS key in the patched moto emulator, each next to
# the same backend's raw speed (Signer::sign in a loop on as many threads as the server has,
# measured in the same process right before the service phases). One run; not a test.
#
# Usage: scripts/keys-bench.sh [--duration SECS] [--connections N]
# Needs scripts/setup-test-deps.sh (softhsm2, .venv-kms).
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
DURATION=5
CONNECTIONS=32
while [ $# -gt 0 ]; do
    case "$1" in
        --duration) DURATION="$2"; shift 2 ;;
        --connections) CONNECTIONS="$2"; shift 2 ;;
        *) echo "unknown option $1" >&2; exit 2 ;;
    esac
done
MODULE=/usr/lib/softhsm/libsofthsm2.so
[ -f "$MODULE" ] || { echo "softhsm2 missing: run scripts/setup-test-deps.sh" >&2; exit 1; }
[ -x "$ROOT/.venv-kms/bin/python" ] || { echo ".venv-kms missing: run scripts/setup-test-deps.sh" >&2; exit 1; }

WORK="$(mktemp -d -t stella-keys-bench-XXXXXX)"
MOTO_PID=""
cleanup() {
    if [ -n "$MOTO_PID" ]; then kill "$MOTO_PID" 2>/dev/null || true; wait "$MOTO_PID" 2>/dev/null || true; fi
    rm -rf "$WORK"
}
trap cleanup EXIT

# A SoftHSM2 token with a P-256 key made inside it.
mkdir -p "$WORK/tokens"
printf 'directories.tokendir = %s/tokens\nobjectstore.backend = file\nlog.level = ERROR\n' "$WORK" > "$WORK/softhsm2.conf"
export SOFTHSM2_CONF="$WORK/softhsm2.conf"
softhsm2-util --init-token --free --label bench --pin 1234 --so-pin 12345678 >/dev/null
PKCS11="pkcs11:token=bench;object=bench-p256?module-path=$MODULE&pin-value=1234"
cargo run -q --locked -p stella-cli -- key generate --pkcs11 "$PKCS11" --algorithm p256 --output "$WORK/hsm" 2>/dev/null

# The KMS emulator and a P-256 key in it.
coproc MOTO { exec "$ROOT/.venv-kms/bin/python" "$ROOT/tests/kms/moto_kms.py" serve 2>/dev/null; }
MOTO_PID=$MOTO_PID
read -r PORT <&"${MOTO[0]}"
export AWS_ACCESS_KEY_ID=bench AWS_SECRET_ACCESS_KEY=bench AWS_REGION=us-east-1
"$ROOT/.venv-kms/bin/python" - "$PORT" <<'PY'
import sys, boto3
kms = boto3.client("kms", endpoint_url=f"http://127.0.0.1:{sys.argv[1]}", region_name="us-east-1")
k = kms.create_key(KeyUsage="SIGN_VERIFY", KeySpec="ECC_NIST_P256")["KeyMetadata"]["KeyId"]
kms.create_alias(AliasName="alias/bench", TargetKeyId=k)
PY
KMS="awskms://127.0.0.1:$PORT/alias/bench"

run() {
    local label="$1"; shift
    echo "== $label" >&2
    cargo bench -q --locked -p stella-signer --bench load -- \
        --duration "$DURATION" --connections "$CONNECTIONS" --rate 0 "$@" 2>/dev/null \
        | tee "$WORK/$label.out" >&2
    local raw sign
    raw="$(sed -n 's/^raw backend.*: \([0-9]*\) signatures\/s$/\1/p' "$WORK/$label.out")"
    sign="$(sed -n 's/^signatures\/s (sustained, closed loop): \([0-9]*\)$/\1/p' "$WORK/$label.out")"
    printf '%-8s raw %8s sig/s   service %8s sig/s   service/raw %s\n' "$label" "$raw" "$sign" \
        "$(awk -v a="$sign" -v b="$raw" 'BEGIN { if (b > 0) printf "%.2f", a / b; else print "n/a" }')" >> "$WORK/summary"
}

run file
run pkcs11 --key "$PKCS11"
run kms --key "$KMS"
echo
echo "keys benchmark, $DURATION s per phase, $CONNECTIONS connections, $(nproc) cores:"
cat "$WORK/summary"
