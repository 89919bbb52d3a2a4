#!/usr/bin/env bash
# Mirror bundle benchmark (issue #3): builds a >= 2 GiB bundle in /tmp mixing large and small
# files, then measures side by side, in one run, on the same files:
#   verify          stella mirror verify DIR       vs  sha256sum -c SHA256SUMS
#                   (and against the two-core SHA-256 bound: 2 x `openssl speed` sha256)
#   pack tar.zst    stella mirror pack -> .tar.zst  vs  tar -c | zstd -T2 -3
#   pack tar.gz     stella mirror pack -> .tar.gz   vs  tar -c | pigz -p2 -6
#   verify archive  stella mirror verify X.tar.zst (streamed, no extraction)
#   peak RSS of every stella run (GNU time), against the 200 MiB budget.
# Each timing is the best of RUNS runs (default 3) with a warm page cache.
# Usage: scripts/mirror-bench.sh [--keep]   (env: BENCH_DIR, RUNS, SIZE_MIB, STELLA=prebuilt binary)
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
# A fresh folder of our own (never a fixed name in a shared folder).
BENCH_DIR="${BENCH_DIR:-$(mktemp -d "${TMPDIR:-/tmp}/stella-mirror-bench.XXXXXX")}"
RUNS="${RUNS:-3}"
SIZE_MIB="${SIZE_MIB:-2200}"
KEEP=0; [ "${1:-}" = "--keep" ] && KEEP=1

for tool in pigz zstd sha256sum openssl python3 /usr/bin/time; do
    command -v "$tool" >/dev/null 2>&1 || { echo "missing $tool: run scripts/setup-test-deps.sh" >&2; exit 2; }
done
if [ -z "${STELLA:-}" ]; then
    echo "==> building stella (release)" >&2
    cargo build --release --quiet -p stella-cli --manifest-path "$ROOT/Cargo.toml"
    STELLA="$ROOT/target/release/stella"
fi
export COSIGN_PASSWORD=bench

rm -rf "$BENCH_DIR"; mkdir -p "$BENCH_DIR/src"
cd "$BENCH_DIR"
echo "==> generating ~${SIZE_MIB} MiB of sources in $BENCH_DIR" >&2
python3 - "$SIZE_MIB" <<'PY'
import hashlib, json, os, random, sys
total = int(sys.argv[1]) << 20
rnd = random.Random(42)
src = "src"
# Large incompressible layers (what gzip'd image layers look like): ~70% of the bytes.
layout = os.path.join(src, "layout"); os.makedirs(os.path.join(layout, "blobs", "sha256"))
def blob(data):
    d = hashlib.sha256(data).hexdigest()
    with open(os.path.join(layout, "blobs", "sha256", d), "wb") as f: f.write(data)
    return "sha256:" + d, len(data)
big = int(total * 0.70); n_layers = 6
layers = []
for i in range(n_layers):
    size = big // n_layers + rnd.randrange(1 << 20)
    layers.append(blob(os.urandom(size)))
cfg = json.dumps({"architecture": "amd64", "os": "linux", "rootfs": {"type": "layers", "diff_ids": [d for d, _ in layers]}}).encode()
c = blob(cfg)
man = json.dumps({"schemaVersion": 2, "mediaType": "application/vnd.oci.image.manifest.v1+json",
  "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": c[0], "size": c[1]},
  "layers": [{"mediaType": "application/vnd.oci.image.layer.v1.tar+gzip", "digest": d, "size": s} for d, s in layers]}).encode()
m = blob(man)
open(os.path.join(layout, "oci-layout"), "w").write('{"imageLayoutVersion":"1.0.0"}')
json.dump({"schemaVersion": 2, "manifests": [{"mediaType": "application/vnd.oci.image.manifest.v1+json", "digest": m[0], "size": m[1]}]},
          open(os.path.join(layout, "index.json"), "w"))
# Advisories: a big compressible feed (~20%) and thousands of small files (~10%).
feeds = os.path.join(src, "feeds"); os.makedirs(feeds)
words = ["CVE", "GHSA", "openssl", "glibc", "critical", "high", "medium", "low", "affected", "fixed",
         "package", "version", "range", "severity", "cvss", "vector", "reference", "https://nvd.nist.gov/vuln/detail/"]
def text(n):
    out = []; size = 0
    while size < n:
        rec = {"id": "CVE-%d-%05d" % (rnd.randrange(1999, 2026), rnd.randrange(100000)),
               "summary": " ".join(rnd.choice(words) for _ in range(rnd.randrange(5, 40))),
               "score": round(rnd.random() * 10, 1), "pkg": rnd.choice(words) + str(rnd.randrange(1000))}
        line = json.dumps(rec) + "\n"; out.append(line); size += len(line)
    return "".join(out).encode()
chunk = text(8 << 20)
with open(os.path.join(feeds, "nvd.json"), "wb") as f:
    for _ in range(int(total * 0.20) // len(chunk)): f.write(chunk)
small = os.path.join(feeds, "ghsa"); n = 0; size = 0
while size < total * 0.10:
    d = os.path.join(small, "%02d" % (n % 64)); os.makedirs(d, exist_ok=True)
    k = rnd.randrange(2 << 10, 120 << 10)
    data = text(k) if n % 2 else os.urandom(k)
    open(os.path.join(d, "GHSA-%06d.json" % n), "wb").write(data); n += 1; size += k
PY
cat > src/bundle.yaml <<'YAML'
name: bench
version: 1.0.0
issuer: bench@stella-ops.org
validForSeconds: 86400
images:
  - reference: registry.local/bench/app:1.0
    ociLayout: layout
advisories:
  - path: feeds/nvd.json
  - path: feeds/ghsa
YAML
"$STELLA" key generate --algorithm ed25519 --output key >/dev/null 2>&1
"$STELLA" mirror create --spec src/bundle.yaml --output bundle >/dev/null
"$STELLA" mirror sign bundle/manifest.json --key key.key >/dev/null
rm -rf src
BYTES=$(du -sb bundle | cut -f1)
FILES=$(find bundle -type f | wc -l)

# One timed run: prints "wall cpu rss_kib" (cpu = user + sys seconds).
once() {
    /usr/bin/time -o time.out -f '%e %U %S %M' "$@" >/dev/null 2>cmd.err || { cat cmd.err >&2; exit 1; }
    awk '{printf "%s %.2f %s\n", $1, $2 + $3, $4}' time.out
}
# Run two commands alternately RUNS times (so machine load hits both alike); keep the best
# wall time and CPU time of each and the largest RSS. Sets A_T A_C A_R B_T B_C B_R.
# Usage: pair "cmd a" "cmd b"   (each a string run with sh -c; "" for none)
best() { awk -v a="$1" -v b="$2" 'BEGIN{print (a == "" || b < a) ? b : a}'; }
pair() {
    A_T=""; A_C=""; A_R=0; B_T=""; B_C=""; B_R=0
    local i r
    for i in $(seq "$RUNS"); do
        eval "${PRE:-true}"
        r=$(once sh -c "$1"); set -- "$1" "$2" $r
        A_T=$(best "$A_T" "$3"); A_C=$(best "$A_C" "$4"); [ "$5" -gt "$A_R" ] && A_R=$5
        set -- "$1" "$2"
        if [ -n "$2" ]; then
            r=$(once sh -c "$2"); set -- "$1" "$2" $r
            B_T=$(best "$B_T" "$3"); B_C=$(best "$B_C" "$4"); [ "$5" -gt "$B_R" ] && B_R=$5
            set -- "$1" "$2"
        fi
    done
}
ratio() { awk "BEGIN{printf \"%.2f\", $1 / $2}"; }
gbps() { awk "BEGIN{printf \"%.2f\", $BYTES / $1 / 1e9}"; }

cat bundle/SHA256SUMS >/dev/null; find bundle -type f -exec cat {} + >/dev/null  # warm the cache
CORE=$(openssl speed -seconds 3 -bytes 1048576 -evp sha256 2>/dev/null | awk '/^sha256/{print $2}' | tr -d k)
CORE_GBPS=$(awk "BEGIN{printf \"%.2f\", $CORE * 1000 / 1e9}")
CORES=$(nproc)
BOUND=$(awk "BEGIN{printf \"%.2f\", $CORE_GBPS * ($CORES < 2 ? $CORES : 2)}")
S="$STELLA"
LOAD=$(cut -d" " -f1-3 /proc/loadavg)

echo "==> verify" >&2
pair "$S mirror verify bundle --key key.pub" "cd bundle && sha256sum -c --quiet SHA256SUMS"
T_V=$A_T; C_V=$A_C; R_V=$A_R; T_S=$B_T; C_S=$B_C
echo "==> pack tar.zst" >&2
pair "$S mirror pack bundle --output out.tar.zst" "tar -cf - -C bundle . | zstd -T2 -3 -q -c > ref.tar.zst"
T_PZ=$A_T; C_PZ=$A_C; R_PZ=$A_R; T_RZ=$B_T; C_RZ=$B_C
echo "==> pack tar.gz" >&2
pair "$S mirror pack bundle --output out.tar.gz" "tar -cf - -C bundle . | pigz -p2 -6 -c > ref.tar.gz"
T_PG=$A_T; C_PG=$A_C; R_PG=$A_R; T_RG=$B_T; C_RG=$B_C
echo "==> verify archive stream, unpack" >&2
pair "$S mirror verify out.tar.zst --key key.pub" ""
T_VA=$A_T; R_VA=$A_R
PRE="rm -rf unpacked" pair "$S mirror unpack out.tar.zst --output unpacked --key key.pub" ""
T_U=$A_T; R_U=$A_R; rm -rf unpacked

MAXRSS=$(printf '%s\n' "$R_V" "$R_PZ" "$R_PG" "$R_VA" "$R_U" | sort -n | tail -n1)
cat <<REPORT

Mirror benchmark — $(date -u +%Y-%m-%dT%H:%M:%SZ), $CORES cores, best of $RUNS alternating runs, warm cache, load before: $LOAD
bundle: $FILES files, $BYTES bytes ($(awk "BEGIN{printf \"%.2f\", $BYTES/1073741824}") GiB)
SHA-256 per core (openssl speed): $CORE_GBPS GB/s; two-core bound $BOUND GB/s

| what | stella wall (cpu) | reference wall (cpu) | speed ratio: ref wall / stella wall (cpu ratio) | target |
|---|---|---|---|---|
| verify folder | ${T_V} s (${C_V} s), $(gbps "$T_V") GB/s | sha256sum -c: ${T_S} s (${C_S} s), $(gbps "$T_S") GB/s | $(ratio "$T_S" "$T_V")x ($(ratio "$C_S" "$C_V")x) | >= 5x |
| verify vs two-core bound | $(gbps "$T_V") GB/s | $BOUND GB/s | $(awk "BEGIN{printf \"%.0f%%\", $BYTES/$T_V/1e9/$BOUND*100}") of bound | >= 80% |
| pack tar.zst | ${T_PZ} s (${C_PZ} s) | tar -c \| zstd -T2 -3: ${T_RZ} s (${C_RZ} s) | $(ratio "$T_RZ" "$T_PZ")x ($(ratio "$C_RZ" "$C_PZ")x) | >= 0.9x |
| pack tar.gz | ${T_PG} s (${C_PG} s) | tar -c \| pigz -p2 -6: ${T_RG} s (${C_RG} s) | $(ratio "$T_RG" "$T_PG")x ($(ratio "$C_RG" "$C_PG")x) | >= 1.0x |
| verify tar.zst stream | ${T_VA} s ($(gbps "$T_VA") GB/s) | | | |
| unpack tar.zst (verified) | ${T_U} s | | | |

sizes: out.tar.zst $(stat -c %s out.tar.zst), ref.tar.zst $(stat -c %s ref.tar.zst), out.tar.gz $(stat -c %s out.tar.gz), ref.tar.gz $(stat -c %s ref.tar.gz)
peak RSS (KiB): verify $R_V, pack zst $R_PZ, pack gz $R_PG, verify stream $R_VA, unpack $R_U; max $MAXRSS KiB = $(awk "BEGIN{printf \"%.1f\", $MAXRSS/1024}") MiB (budget 200 MiB)
REPORT
if [ "$KEEP" -eq 0 ]; then cd /; rm -rf "$BENCH_DIR"; fi
