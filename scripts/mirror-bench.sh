#!/usr/bin/env bash
# Mirror bundle benchmark (issues #3, #15): builds a bundle in /tmp, then measures side by
# side, in one run, on the same files, with a peak-RSS column next to every timing:
#   create          stella mirror create + sign     vs  find -type f | xargs sha256sum
#   verify          stella mirror verify DIR        vs  sha256sum -c SHA256SUMS
#                   (and against the two-core SHA-256 bound: 2 x `openssl speed` sha256)
#   pack tar.zst    stella mirror pack -> .tar.zst  vs  tar -c | zstd -T2 -3
#   pack tar.gz     stella mirror pack -> .tar.gz   vs  tar -c | pigz -p2 -6
#   verify archive  stella mirror verify X.tar.zst (streamed, no extraction)
#   unpack          stella mirror unpack X.tar.zst (verified)
# Shapes (SHAPE=):
#   big   (default) >= 2 GiB mixing large and small files (70 % incompressible layers in an
#         OCI layout, 20 % one text feed, 10 % small files of 2-120 KiB);
#   many  FILES small advisory files (default 200,000 x 1 KiB, half JSON text, half random)
#         plus two 64 MiB blobs: the shape of NVD/GHSA/OSV mirrors, 1,000 folders of FILES/1000
#         files. FILES=1000000 is the issue #15 scale; generating it takes minutes, so give a
#         BENCH_DIR to generate once and reuse.
#   flat  the same files, all in one folder (a flat OSV or GHSA export).
#   deep  the same files, two to a folder: FILES/2 folders under 1,000 (a per-advisory tree).
#   ghsa  the same files in the GitHub advisory database's layout, one folder per advisory
#         (feeds/github-reviewed/YYYY/MM/GHSA-xxxx-xxxx-xxxx/GHSA-xxxx-xxxx-xxxx.json): bundle
#         paths of ~86 bytes, the longest of the shapes (the index holds every path).
# Reuse: with BENCH_DIR set, the sources are generated there once (a marker file records the
# shape and size) and kept; later runs with the same SHAPE/FILES/SIZE_MIB reuse them and only
# redo the bundle, archives and timings. Without BENCH_DIR a fresh folder is made and removed.
# The two sides of each row alternate (A B A B ...) RUNS times (default 5) on a warm page
# cache; the report gives the median and [min-max] of wall time, CPU time (user + sys) and
# peak RSS (GNU time %M: for a pipeline, its largest process) of each side, and the ratio of
# the medians (reference wall / stella wall: above 1, stella is faster).
# ONLY=verify: the bundle is made once (untimed) and only the verify row is measured.
# ONLY=create: only `stella mirror create` (no sign) against `find | xargs sha256sum` on the
#   sources (each create into a fresh folder, the previous output set aside untimed and
#   removed after the last run: see the note at the create row).
# STELLA_OLD=binary: the verify (or ONLY=create) row alternates three sides (stella, the
# reference, the old binary: A B C A B C ...), for before/after figures from one run.
# Usage: scripts/mirror-bench.sh [--keep]
#   env: SHAPE (big|many|flat|deep|ghsa), BENCH_DIR, RUNS, SIZE_MIB (big), FILES (many,
#        flat, deep, ghsa), ONLY, STELLA_OLD,
#        STELLA=prebuilt binary (default: cargo build --release)
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
# A fresh folder of our own (never a fixed name in a shared folder), unless the caller names
# one to reuse.
REUSE=0
if [ -n "${BENCH_DIR:-}" ]; then REUSE=1; else BENCH_DIR="$(mktemp -d "${TMPDIR:-/tmp}/stella-mirror-bench.XXXXXX")"; fi
RUNS="${RUNS:-5}"
SHAPE="${SHAPE:-big}"
FILES="${FILES:-200000}"
SIZE_MIB="${SIZE_MIB:-2200}"
KEEP=0; [ "${1:-}" = "--keep" ] && KEEP=1
[ "$REUSE" -eq 1 ] && KEEP=1

case "$SHAPE" in big|many|flat|deep|ghsa) ;; *) echo "SHAPE must be big, many, flat, deep or ghsa" >&2; exit 2;; esac
for tool in pigz zstd sha256sum openssl python3 xargs /usr/bin/time; do
    command -v "$tool" >/dev/null 2>&1 || { echo "missing $tool: run scripts/setup-test-deps.sh" >&2; exit 2; }
done
if [ -z "${STELLA:-}" ]; then
    echo "==> building stella (release)" >&2
    cargo build --release --quiet -p stella-cli --manifest-path "$ROOT/Cargo.toml"
    STELLA="$ROOT/target/release/stella"
fi
export COSIGN_PASSWORD=bench

MARK="shape=$SHAPE files=$FILES size_mib=$SIZE_MIB"
if [ "$REUSE" -eq 1 ] && [ -d "$BENCH_DIR/src" ] && [ "$(cat "$BENCH_DIR/.generated" 2>/dev/null)" = "$MARK" ]; then
    GENERATE=0
    echo "==> reusing the sources in $BENCH_DIR ($MARK)" >&2
    rm -rf "$BENCH_DIR"/bundle "$BENCH_DIR"/unpacked "$BENCH_DIR"/*.tar.* "$BENCH_DIR"/ref.sums "$BENCH_DIR"/key.key "$BENCH_DIR"/key.pub
else
    GENERATE=1
    rm -rf "$BENCH_DIR"; mkdir -p "$BENCH_DIR/src"
fi
# The data goes away however the run ends (a failed command exits early), unless --keep.
[ "$KEEP" -eq 1 ] || trap 'cd /; rm -rf "$BENCH_DIR"' EXIT
cd "$BENCH_DIR"
if [ "$GENERATE" -eq 0 ]; then
    :
elif [ "$SHAPE" = big ]; then
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
else
echo "==> generating $FILES small files in $BENCH_DIR" >&2
python3 - "$FILES" "$SHAPE" <<'PY'
import json, os, random, sys
n = int(sys.argv[1]); shape = sys.argv[2]; rnd = random.Random(42)
src = "src"; feeds = os.path.join(src, "feeds"); os.makedirs(feeds)
for i in range(2):  # a few large blobs
    with open(os.path.join(feeds, "blob-%d.bin" % i), "wb") as f: f.write(os.urandom(64 << 20))
small = os.path.join(feeds, "osv")
for i in range(n):
    if shape == "flat":
        d = small
        if i == 0: os.makedirs(d)
    elif shape == "deep":
        d = os.path.join(small, "%03d" % ((i // 2) % 1000), "%07d" % (i // 2))
        if i % 2 == 0: os.makedirs(d)
    elif shape == "ghsa":
        # Ids unique by construction: i written in base 20 over the GHSA alphabet.
        alpha = "23456789cfghjmpqrvwx"; k = i * 7919 + 12345; g = ""
        for j in range(12):
            g += alpha[k % 20]; k //= 20
            if j in (3, 7): g += "-"
        d = os.path.join(src, "feeds", "github-reviewed", "%04d" % (2017 + i % 9),
                         "%02d" % (1 + (i // 9) % 12), "GHSA-" + g)
        os.makedirs(d)
        with open(os.path.join(d, "GHSA-%s.json" % g), "wb") as f: f.write(os.urandom(1024) if i % 2 == 0 else (json.dumps({"id": "GHSA-" + g, "summary": "x" * 900}) + " " * 1024)[:1024].encode())
        continue
    else:
        d = os.path.join(small, "%03d" % (i % 1000))
        if i < 1000: os.makedirs(d)
    if i % 2:
        rec = json.dumps({"id": "GHSA-%06d" % i, "summary": "x" * 900, "score": rnd.random()})
        data = (rec + " " * 1024)[:1024].encode()
    else:
        data = os.urandom(1024)
    with open(os.path.join(d, "OSV-%07d.json" % i), "wb") as f: f.write(data)
PY
cat > src/bundle.yaml <<'YAML'
name: bench
version: 1.0.0
issuer: bench@stella-ops.org
validForSeconds: 86400
advisories:
  - path: feeds
YAML
fi
echo "$MARK" > .generated
"$STELLA" key generate --algorithm ed25519 --output key >/dev/null 2>&1

# One timed run: prints "wall cpu rss_kib" (cpu = user + sys seconds).
# A failed command stops the whole benchmark (`once` runs in a command substitution, where
# `exit` alone would leave an empty figure behind and the run going on).
once() {
    /usr/bin/time -o time.out -f '%e %U %S %M' "$@" >/dev/null 2>cmd.err || {
        cat cmd.err >&2; echo "benchmark stopped: this command failed: $*" >&2; kill -TERM $$; exit 1; }
    awk '{printf "%s %.2f %s\n", $1, $2 + $3, $4}' time.out
}
# A folder a timed command is about to write again is moved aside (a rename, untimed), not
# removed; everything set aside is removed after the last run. Removing it just before the
# next run measured the file system instead: ext4 without a journal (these machines' root)
# does not reuse an inode freed in the last ~30 s (`dirty_expire_centisecs`), and its
# allocator checks every such inode on each allocation (`recently_deleted`: quadratic in the
# files just deleted) — 200,000 files created right after 200,000 were removed took 28.6 s
# (54.8 s of system CPU) against 1.5 s (2026-12-07). The folders set aside keep their inodes
# until the end: RUNS x the file count for each of create and unpack's two sides.
set_aside() { if [ -e "$1" ]; then mkdir -p aside; mv "$1" "aside/$1.$(date +%s%N)"; fi; }
# "median [min-max]" of whitespace-separated numbers; med() the median alone.
stat3() { printf '%s\n' $1 | sort -g | awk -v f="${2:-%.2f}" '{v[NR]=$1} END{m=(NR%2)?v[(NR+1)/2]:(v[NR/2]+v[NR/2+1])/2; printf f" ["f"-"f"]", m, v[1], v[NR]}'; }
med() { printf '%s\n' $1 | sort -g | awk '{v[NR]=$1} END{m=(NR%2)?v[(NR+1)/2]:(v[NR/2]+v[NR/2+1])/2; printf "%.3f", m}'; }
# Run two commands alternately RUNS times (so machine drift hits both alike). Sets
# A_T A_C A_R B_T B_C B_R: the lists of wall s, cpu s and peak RSS KiB of each side.
# Usage: pair "cmd a" "cmd b"   (each a string run with sh -c; "" for none; PRE_A / PRE_B run,
# untimed, before each run of a / b)
pair() {
    A_T=""; A_C=""; A_R=""; B_T=""; B_C=""; B_R=""
    local i r
    for i in $(seq "$RUNS"); do
        eval "${PRE_A:-true}"
        r=$(once sh -c "$1"); set -- "$1" "$2" $r
        A_T="$A_T $3"; A_C="$A_C $4"; A_R="$A_R $5"
        set -- "$1" "$2"
        if [ -n "$2" ]; then
            eval "${PRE_B:-true}"
            r=$(once sh -c "$2"); set -- "$1" "$2" $r
            B_T="$B_T $3"; B_C="$B_C $4"; B_R="$B_R $5"
            set -- "$1" "$2"
        fi
    done
}
# pair for three commands (A B C A B C ...); also sets C_T C_C C_R.
trio() {
    A_T=""; A_C=""; A_R=""; B_T=""; B_C=""; B_R=""; C_T=""; C_C=""; C_R=""
    local i t c m
    for i in $(seq "$RUNS"); do
        read -r t c m <<<"$(once sh -c "$1")"; A_T="$A_T $t"; A_C="$A_C $c"; A_R="$A_R $m"
        read -r t c m <<<"$(once sh -c "$2")"; B_T="$B_T $t"; B_C="$B_C $c"; B_R="$B_R $m"
        read -r t c m <<<"$(once sh -c "$3")"; C_T="$C_T $t"; C_C="$C_C $c"; C_R="$C_R $m"
    done
}
# A table cell: "wall s (cpu s), RSS MiB", each median [range].
cell() { echo "$(stat3 "$1") s ($(stat3 "$2") s), $(stat3 "$(printf '%s\n' $3 | awk '{printf "%.0f ", $1/1024}')" %.0f) MiB"; }
ratio() { awk "BEGIN{printf \"%.2f\", $(med "$1") / $(med "$2")}"; }
gbps() { awk "BEGIN{printf \"%.2f\", $BYTES / $(med "$1") / 1e9}"; }

LOAD=$(cut -d" " -f1-3 /proc/loadavg)
S="$STELLA"
find src -type f -exec cat {} + >/dev/null  # warm the cache
if [ "${ONLY:-}" = create ]; then
    echo "==> create" >&2
    NSRC=$(find src -type f | wc -l)
    CREATE="$S mirror create --spec src/bundle.yaml --output bundle"
    REF="cd src && find . -type f -print0 | xargs -0 sha256sum > ../ref.sums"
    set_aside bundle
    trio3() {  # A B [C], each create into a fresh output (the last one set aside, untimed)
        A_T=""; A_C=""; A_R=""; B_T=""; B_C=""; B_R=""; C_T=""; C_C=""; C_R=""
        local i t c m
        for i in $(seq "$RUNS"); do
            set_aside bundle; sync; read -r t c m <<<"$(once sh -c "$1")"; A_T="$A_T $t"; A_C="$A_C $c"; A_R="$A_R $m"
            sync; read -r t c m <<<"$(once sh -c "$2")"; B_T="$B_T $t"; B_C="$B_C $c"; B_R="$B_R $m"
            if [ -n "$3" ]; then
                set_aside bundle; sync; read -r t c m <<<"$(once sh -c "$3")"; C_T="$C_T $t"; C_C="$C_C $c"; C_R="$C_R $m"
            fi
        done
    }
    trio3 "$CREATE" "$REF" "${STELLA_OLD:+$STELLA_OLD mirror create --spec src/bundle.yaml --output bundle}"
    ROWS="| create | $(cell "$A_T" "$A_C" "$A_R") | find \| xargs sha256sum: $(cell "$B_T" "$B_C" "$B_R") | $(ratio "$B_T" "$A_T")x ($(ratio "$B_C" "$A_C")x) |"
    if [ -n "${STELLA_OLD:-}" ]; then
        ROWS="$ROWS
| create, old binary | $(cell "$C_T" "$C_C" "$C_R") | find \| xargs sha256sum (same runs) | $(ratio "$B_T" "$C_T")x ($(ratio "$B_C" "$C_C")x); new is $(ratio "$C_T" "$A_T")x the old wall ($(ratio "$C_C" "$A_C")x cpu) |"
    fi
    cat <<REPORT

Mirror benchmark (create only), shape $SHAPE — $(date -u +%Y-%m-%dT%H:%M:%SZ), $(nproc) cores, $RUNS alternating runs (median [min-max]), warm cache, output on $(df -T . | awk 'NR==2{print $2}'), load average before: $LOAD, after: $(cut -d" " -f1-3 /proc/loadavg)
sources: $NSRC files

| what | stella: wall (cpu), peak RSS | reference: wall (cpu), peak RSS | ref wall / stella wall (cpu ratio) |
|---|---|---|---|
$ROWS
REPORT
    rm -rf bundle aside ref.sums
    if [ "$KEEP" -eq 0 ]; then cd /; rm -rf "$BENCH_DIR"; fi
    exit 0
fi
if [ "${ONLY:-}" = verify ]; then
echo "==> create + sign (once, untimed)" >&2
rm -rf bundle
"$S" mirror create --spec src/bundle.yaml --output bundle >/dev/null
"$S" mirror sign bundle/manifest.json --key key.key >/dev/null
else
echo "==> create + sign" >&2
PRE_A="set_aside bundle" pair "$S mirror create --spec src/bundle.yaml --output bundle && $S mirror sign bundle/manifest.json --key key.key" \
    "cd src && find . -type f -print0 | xargs -0 sha256sum > ../ref.sums"
CR_T=$A_T; CR_C=$A_C; CR_R=$A_R; CRR_T=$B_T; CRR_C=$B_C; CRR_R=$B_R
# The sign step alone (peak RSS of `mirror sign` on its own).
pair "$S mirror sign bundle/manifest.json --key key.key" ""
SG_T=$A_T; SG_C=$A_C; SG_R=$A_R
fi
rm -f ref.sums
[ "$REUSE" -eq 1 ] || rm -rf src
BYTES=$(du -sb bundle | cut -f1)
NFILES=$(find bundle -type f | wc -l)

cat bundle/SHA256SUMS >/dev/null; find bundle -type f -exec cat {} + >/dev/null  # warm the cache
CORE=$(openssl speed -seconds 3 -bytes 1048576 -evp sha256 2>/dev/null | awk '/^sha256/{print $2}' | tr -d k)
CORE_GBPS=$(awk "BEGIN{printf \"%.2f\", $CORE * 1000 / 1e9}")
CORES=$(nproc)
BOUND=$(awk "BEGIN{printf \"%.2f\", $CORE_GBPS * ($CORES < 2 ? $CORES : 2)}")

echo "==> verify" >&2
if [ -n "${STELLA_OLD:-}" ]; then
    trio "$S mirror verify bundle --key key.pub" "cd bundle && sha256sum -c --quiet SHA256SUMS" "$STELLA_OLD mirror verify bundle --key key.pub"
    VO_T=$C_T; VO_C=$C_C; VO_R=$C_R
else
    pair "$S mirror verify bundle --key key.pub" "cd bundle && sha256sum -c --quiet SHA256SUMS"
fi
V_T=$A_T; V_C=$A_C; V_R=$A_R; VS_T=$B_T; VS_C=$B_C; VS_R=$B_R
VERIFY_ROW="| verify folder | $(cell "$V_T" "$V_C" "$V_R"), $(gbps "$V_T") GB/s | sha256sum -c: $(cell "$VS_T" "$VS_C" "$VS_R") | $(ratio "$VS_T" "$V_T")x ($(ratio "$VS_C" "$V_C")x); $(awk "BEGIN{printf \"%.0f%%\", $BYTES/$(med "$V_T")/1e9/$BOUND*100}") of the two-core SHA-256 bound |"
if [ -n "${STELLA_OLD:-}" ]; then
    VERIFY_ROW="$VERIFY_ROW
| verify folder, old binary | $(cell "$VO_T" "$VO_C" "$VO_R") | sha256sum -c (same runs) | $(ratio "$VS_T" "$VO_T")x ($(ratio "$VS_C" "$VO_C")x); new is $(ratio "$VO_T" "$V_T")x the old wall ($(ratio "$VO_C" "$V_C")x cpu) |"
fi
if [ "${ONLY:-}" = verify ]; then
    cat <<REPORT

Mirror benchmark (verify only), shape $SHAPE — $(date -u +%Y-%m-%dT%H:%M:%SZ), $CORES cores, $RUNS alternating runs (median [min-max]), warm cache, load average before: $LOAD, after: $(cut -d" " -f1-3 /proc/loadavg)
bundle: $NFILES files, $BYTES bytes ($(awk "BEGIN{printf \"%.2f\", $BYTES/1073741824}") GiB)
SHA-256 per core (openssl speed): $CORE_GBPS GB/s; two-core bound $BOUND GB/s

| what | stella: wall (cpu), peak RSS | reference: wall (cpu), peak RSS | ref wall / stella wall (cpu ratio) |
|---|---|---|---|
$VERIFY_ROW
REPORT
    if [ "$KEEP" -eq 0 ]; then cd /; rm -rf "$BENCH_DIR"; fi
    exit 0
fi
echo "==> pack tar.zst" >&2
pair "$S mirror pack bundle --output out.tar.zst" "tar -cf - -C bundle . | zstd -T2 -3 -q -c > ref.tar.zst"
PZ_T=$A_T; PZ_C=$A_C; PZ_R=$A_R; RZ_T=$B_T; RZ_C=$B_C; RZ_R=$B_R
echo "==> pack tar.gz" >&2
pair "$S mirror pack bundle --output out.tar.gz" "tar -cf - -C bundle . | pigz -p2 -6 -c > ref.tar.gz"
PG_T=$A_T; PG_C=$A_C; PG_R=$A_R; RG_T=$B_T; RG_C=$B_C; RG_R=$B_R
echo "==> verify archive stream, unpack" >&2
pair "$S mirror verify out.tar.zst --key key.pub" "zstd -d -q -c out.tar.zst | tar -xf - -O > /dev/null"
VA_T=$A_T; VA_C=$A_C; VA_R=$A_R; VAR_T=$B_T; VAR_C=$B_C; VAR_R=$B_R
PRE_A="set_aside unpacked" PRE_B="set_aside unpacked" pair "$S mirror unpack out.tar.zst --output unpacked --key key.pub" "mkdir unpacked && zstd -d -q -c out.tar.zst | tar -xf - -C unpacked"
U_T=$A_T; U_C=$A_C; U_R=$A_R; UR_T=$B_T; UR_C=$B_C; UR_R=$B_R; rm -rf unpacked aside
LOAD_AFTER=$(cut -d" " -f1-3 /proc/loadavg)

MAXRSS=$(printf '%s\n' $CR_R $SG_R $V_R $PZ_R $PG_R $VA_R $U_R | sort -n | tail -n1)
cat <<REPORT

Mirror benchmark, shape $SHAPE — $(date -u +%Y-%m-%dT%H:%M:%SZ), $CORES cores, $RUNS alternating runs (median [min-max]), warm cache, load average before: $LOAD, after: $LOAD_AFTER
bundle: $NFILES files, $BYTES bytes ($(awk "BEGIN{printf \"%.2f\", $BYTES/1073741824}") GiB)
SHA-256 per core (openssl speed): $CORE_GBPS GB/s; two-core bound $BOUND GB/s

| what | stella: wall (cpu), peak RSS | reference: wall (cpu), peak RSS | ref wall / stella wall (cpu ratio) |
|---|---|---|---|
| create + sign | $(cell "$CR_T" "$CR_C" "$CR_R") | find \| xargs sha256sum: $(cell "$CRR_T" "$CRR_C" "$CRR_R") | $(ratio "$CRR_T" "$CR_T")x ($(ratio "$CRR_C" "$CR_C")x) |
| sign alone | $(cell "$SG_T" "$SG_C" "$SG_R") | | |
$VERIFY_ROW
| pack tar.zst | $(cell "$PZ_T" "$PZ_C" "$PZ_R") | tar -c \| zstd -T2 -3: $(cell "$RZ_T" "$RZ_C" "$RZ_R") | $(ratio "$RZ_T" "$PZ_T")x ($(ratio "$RZ_C" "$PZ_C")x) |
| pack tar.gz | $(cell "$PG_T" "$PG_C" "$PG_R") | tar -c \| pigz -p2 -6: $(cell "$RG_T" "$RG_C" "$RG_R") | $(ratio "$RG_T" "$PG_T")x ($(ratio "$RG_C" "$PG_C")x) |
| verify tar.zst stream | $(cell "$VA_T" "$VA_C" "$VA_R") | zstd -d \| tar -xO (no hashing): $(cell "$VAR_T" "$VAR_C" "$VAR_R") | $(ratio "$VAR_T" "$VA_T")x |
| unpack tar.zst (verified) | $(cell "$U_T" "$U_C" "$U_R") | zstd -d \| tar -x (not verified): $(cell "$UR_T" "$UR_C" "$UR_R") | $(ratio "$UR_T" "$U_T")x |

sizes: out.tar.zst $(stat -c %s out.tar.zst), ref.tar.zst $(stat -c %s ref.tar.zst), out.tar.gz $(stat -c %s out.tar.gz), ref.tar.gz $(stat -c %s ref.tar.gz)
largest stella peak RSS: $MAXRSS KiB = $(awk "BEGIN{printf \"%.1f\", $MAXRSS/1024}") MiB (budget 200 MiB)
REPORT
if [ "$KEEP" -eq 0 ]; then cd /; rm -rf "$BENCH_DIR"; fi
