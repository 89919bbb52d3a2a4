#!/usr/bin/env bash
# Mirror bundles and registries benchmark (issue #4 item 7), one run, side by side:
#   load    stella mirror load BUNDLE --registry R        (verifies the whole bundle first, then
#           pushes every image)  vs  skopeo copy oci:BUNDLE/images:REF docker://R/... for the
#           same images from the same OCI layout (no verification on that side)
#   create  stella mirror create (spec of `ref:` images pulled from a registry)
#           vs  skopeo copy docker://R/... oci:DIR:imgN of the same images
# Every round uses fresh local docker-registry instances (127.0.0.1) and fresh output folders;
# stella and skopeo alternate; the best round of each side is compared and the ratio printed
# as skopeo time / stella time (above 1.0: stella is faster). Also printed, for information:
# `stella mirror load X.tar.zst` (verified unpack into a temp folder, then push).
#
# The bundle: IMAGES images (default 4) over one shared base layer (~30 %) plus two own layers
# each (gzip, stored blocks of random bytes), >= 1 GiB of unique blobs by default.
# Usage: scripts/mirror-load-bench.sh [--keep]
#   env: SIZE_MIB (default 1100), ROUNDS (default 3), IMAGES (default 4), BENCH_DIR,
#        STELLA (a prebuilt binary; default: cargo build --release), ARCHIVE=0 to skip the
#        archive figure.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
# A fresh folder of our own (never a fixed name in a shared folder).
BENCH_DIR="${BENCH_DIR:-$(mktemp -d "${TMPDIR:-/tmp}/stella-mirror-load-bench.XXXXXX")}"
SIZE_MIB="${SIZE_MIB:-1100}"
ROUNDS="${ROUNDS:-3}"
IMAGES="${IMAGES:-4}"
ARCHIVE="${ARCHIVE:-1}"
KEEP=0; [ "${1:-}" = "--keep" ] && KEEP=1
REGISTRY_BIN=/usr/bin/docker-registry
SKOPEO=/usr/bin/skopeo

for tool in "$REGISTRY_BIN" "$SKOPEO"; do
    [ -x "$tool" ] || { echo "$tool is missing: run scripts/setup-test-deps.sh" >&2; exit 2; }
done
for tool in python3 curl; do
    command -v "$tool" >/dev/null 2>&1 || { echo "missing $tool" >&2; exit 2; }
done
if [ -z "${STELLA:-}" ]; then
    echo "==> building stella (release)" >&2
    cargo build --release --quiet -p stella-cli --manifest-path "$ROOT/Cargo.toml" </dev/null
    STELLA="$ROOT/target/release/stella"
fi
STELLA="$(realpath "$STELLA")"
export COSIGN_PASSWORD=bench
# Upload journals of this run only.
export XDG_CACHE_HOME="$BENCH_DIR/cache"

REG_PIDS=()
cleanup() {
    for pid in "${REG_PIDS[@]}"; do kill "$pid" 2>/dev/null || true; done
    wait 2>/dev/null || true
    [ "$KEEP" = 1 ] || rm -rf "$BENCH_DIR"
}
trap cleanup EXIT

rm -rf "$BENCH_DIR"; mkdir -p "$BENCH_DIR/src" "$XDG_CACHE_HOME"
cd "$BENCH_DIR"

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }

# start_registry NAME: a fresh docker-registry with its own storage; sets REG (host:port) and
# REG_PID.
start_registry() {
    local name="$1" port dir
    port="$(free_port)"
    dir="$BENCH_DIR/reg-$name"
    rm -rf "$dir"; mkdir -p "$dir/storage"
    cat >"$dir/config.yml" <<EOF
version: 0.1
log:
  level: warn
  accesslog:
    disabled: true
storage:
  filesystem:
    rootdirectory: $dir/storage
  delete:
    enabled: true
  maintenance:
    uploadpurging:
      enabled: false
http:
  addr: 127.0.0.1:$port
  secret: stella-bench-secret
EOF
    "$REGISTRY_BIN" serve "$dir/config.yml" >"$dir/log" 2>&1 </dev/null &
    REG_PID=$!
    REG_PIDS+=("$REG_PID")
    REG="127.0.0.1:$port"
    for _ in $(seq 1 400); do
        curl -fsS "http://$REG/v2/" >/dev/null 2>&1 && return 0
        sleep 0.05
    done
    echo "docker-registry did not start:" >&2; cat "$dir/log" >&2; exit 1
}

stop_registry() {
    kill "$REG_PID" 2>/dev/null || true
    wait "$REG_PID" 2>/dev/null || true
    rm -rf "$BENCH_DIR/reg-$1"
}

now() { echo "$EPOCHREALTIME"; }
elapsed() { python3 -c "import sys; print(f'{float(sys.argv[2]) - float(sys.argv[1]):.3f}')" "$1" "$2"; }

echo "machine: $(nproc) cores, $(free -g | awk '/^Mem:/ {print $2}') GiB RAM; $($SKOPEO --version); $($REGISTRY_BIN --version)"
echo "==> generating ${IMAGES} images over ~${SIZE_MIB} MiB of unique layers" >&2
python3 - "$SIZE_MIB" "$IMAGES" <<'PY'
import hashlib, json, os, struct, sys, zlib
total_mib, images = int(sys.argv[1]), int(sys.argv[2])
layout = "src/layout"
os.makedirs(f"{layout}/blobs/sha256")
def put(data):
    d = hashlib.sha256(data).hexdigest()
    with open(f"{layout}/blobs/sha256/{d}", "wb") as f:
        f.write(data)
    return {"digest": "sha256:" + d, "size": len(data)}
def tar_header(name, size):
    h = bytearray(512)
    h[0:len(name)] = name.encode()
    h[100:108] = b"0000644\0"; h[108:116] = b"0000000\0"; h[116:124] = b"0000000\0"
    h[124:136] = f"{size:011o}\0".encode(); h[136:148] = b"00000000000\0"
    h[156:157] = b"0"; h[257:263] = b"ustar\0"; h[263:265] = b"00"
    h[148:156] = b"        "
    h[148:156] = f"{sum(h):06o}\0 ".encode()
    return bytes(h)
def layer(mib):
    """A gzip (stored blocks) tar of one random file; returns (descriptor, diff_id)."""
    size = mib << 20
    raw = hashlib.sha256(); out = bytearray()
    z = zlib.compressobj(0, zlib.DEFLATED, 31)
    def feed(b):
        raw.update(b); out.extend(z.compress(b))
    feed(tar_header("data.bin", size))
    left = size
    while left:
        n = min(left, 8 << 20); feed(os.urandom(n)); left -= n
    feed(b"\0" * ((512 - size % 512) % 512 + 1024))
    out.extend(z.flush())
    desc = put(bytes(out)); desc["mediaType"] = "application/vnd.oci.image.layer.v1.tar+gzip"
    return desc, "sha256:" + raw.hexdigest()
base_mib = total_mib * 3 // 10
own_mib = (total_mib - base_mib) // (images * 2)
base = layer(base_mib)
index = []
for i in range(images):
    ls = [base, layer(own_mib), layer(own_mib)]
    cfg = json.dumps({"architecture": "amd64", "os": "linux", "config": {},
                      "rootfs": {"type": "layers", "diff_ids": [d for _, d in ls]},
                      "history": [{"created_by": f"bench image {i}"}]}).encode()
    c = put(cfg); c["mediaType"] = "application/vnd.oci.image.config.v1+json"
    m = json.dumps({"schemaVersion": 2, "mediaType": "application/vnd.oci.image.manifest.v1+json",
                    "config": c, "layers": [d for d, _ in ls]}).encode()
    md = put(m)
    index.append({"mediaType": "application/vnd.oci.image.manifest.v1+json", **md,
                  "annotations": {"org.opencontainers.image.ref.name": f"img{i}"}})
open(f"{layout}/oci-layout", "w").write('{"imageLayoutVersion":"1.0.0"}')
json.dump({"schemaVersion": 2, "mediaType": "application/vnd.oci.image.index.v1+json",
           "manifests": index}, open(f"{layout}/index.json", "w"))
PY

"$STELLA" key generate --algorithm p256 --output bench >/dev/null 2>&1
BENCH_REPO=registry.stella-ops.org/bench
{
    echo "name: bench"; echo "version: 1.0.0"; echo "issuer: bench@example.invalid"; echo "images:"
    for i in $(seq 0 $((IMAGES - 1))); do
        echo "  - reference: $BENCH_REPO/img$i:1"
        echo "    ociLayout: src/layout"
        echo "    refName: img$i"
    done
} >bundle.yaml
"$STELLA" mirror create --spec bundle.yaml --output bundle >/dev/null
"$STELLA" mirror sign bundle/manifest.json --key bench.key >/dev/null
UNIQUE=$(du -sb bundle/images/blobs | cut -f1)
BUNDLE=$(du -sb bundle | cut -f1)
python3 -c "import sys; u=int(sys.argv[1]); print(f'bundle: {sys.argv[3]} images, {u/2**30:.2f} GiB of unique blobs ({int(sys.argv[2])/2**30:.2f} GiB bundle)')" "$UNIQUE" "$BUNDLE" "$IMAGES"

# skopeo_each TLS_FLAG SRC DEST: `skopeo copy` of every bench image, one after the other; in SRC
# and DEST, `{i}` stands for the image's number.
skopeo_each() {
    local flag="$1" src="$2" dest="$3" i
    for i in $(seq 0 $((IMAGES - 1))); do
        "$SKOPEO" --insecure-policy copy --quiet "$flag" "${src//\{i\}/$i}" "${dest//\{i\}/$i}"
    done
}

# The manifest digest of bench/img0:1 in the registry at $REG.
img0_digest() {
    curl -fsS -o /dev/null -D - -H 'Accept: application/vnd.oci.image.manifest.v1+json' \
        "http://$REG/v2/bench/img0/manifests/1" | tr -d '\r' \
        | awk -F': ' 'tolower($1)=="docker-content-digest" {print $2}'
}

# The registry `create` pulls from, loaded once.
start_registry source; SRC_REG="$REG"; SRC_PID="$REG_PID"
"$STELLA" mirror load bundle --registry "$SRC_REG" --key bench.pub >/dev/null 2>&1
{
    echo "name: bench"; echo "version: 1.0.1"; echo "issuer: bench@example.invalid"; echo "images:"
    for i in $(seq 0 $((IMAGES - 1))); do echo "  - ref: $SRC_REG/bench/img$i:1"; done
} >pull.yaml

declare -a S_LOAD K_LOAD S_CREATE K_CREATE
for round in $(seq 1 "$ROUNDS"); do
    # load: stella (verify + push)
    start_registry "s$round"
    t0=$(now); "$STELLA" mirror load bundle --registry "$REG" --key bench.pub >/dev/null 2>&1; t1=$(now)
    S_LOAD+=("$(elapsed "$t0" "$t1")")
    digest=$(img0_digest)
    stop_registry "s$round"
    rm -rf "$XDG_CACHE_HOME"/*
    # load: skopeo, same images from the same layout
    start_registry "k$round"
    t0=$(now)
    skopeo_each --dest-tls-verify=false "oci:bundle/images:$BENCH_REPO/img{i}:1" "docker://$REG/bench/img{i}:1"
    t1=$(now)
    K_LOAD+=("$(elapsed "$t0" "$t1")")
    digest2=$(img0_digest)
    [ "$digest" = "$digest2" ] || { echo "digests differ: $digest vs $digest2" >&2; exit 1; }
    stop_registry "k$round"
    echo "round $round: load    stella ${S_LOAD[-1]}s   skopeo ${K_LOAD[-1]}s"

    # create: stella (pull into a new bundle) vs skopeo copy docker:// oci:
    rm -rf pulled-s pulled-k
    t0=$(now); "$STELLA" mirror create --spec pull.yaml --output pulled-s >/dev/null; t1=$(now)
    S_CREATE+=("$(elapsed "$t0" "$t1")")
    t0=$(now)
    skopeo_each --src-tls-verify=false "docker://$SRC_REG/bench/img{i}:1" "oci:pulled-k:img{i}"
    t1=$(now)
    K_CREATE+=("$(elapsed "$t0" "$t1")")
    [ "$(du -sb pulled-s/images/blobs | cut -f1)" = "$UNIQUE" ] || { echo "pulled bundle differs" >&2; exit 1; }
    rm -rf pulled-s pulled-k
    echo "round $round: create  stella ${S_CREATE[-1]}s   skopeo ${K_CREATE[-1]}s"
done

if [ "$ARCHIVE" = 1 ]; then
    "$STELLA" mirror pack bundle --output bundle.tar.zst >/dev/null
    start_registry archive
    t0=$(now); "$STELLA" mirror load bundle.tar.zst --registry "$REG" --key bench.pub --work-dir "$BENCH_DIR" >/dev/null 2>&1; t1=$(now)
    ARCHIVE_S="$(elapsed "$t0" "$t1")"
    stop_registry archive
    rm -f bundle.tar.zst
fi

python3 - "$UNIQUE" "$IMAGES" "$ROUNDS" "${S_LOAD[*]}" "${K_LOAD[*]}" "${S_CREATE[*]}" "${K_CREATE[*]}" "${ARCHIVE_S:-}" <<'PY'
import sys
unique, images, rounds = int(sys.argv[1]), sys.argv[2], sys.argv[3]
best = lambda s: min(float(x) for x in s.split())
mib = unique / 2**20
print(f"--- best of {rounds} round(s); {unique / 2**30:.2f} GiB of unique blobs, {images} images")
for what, s, k in [("load   (mirror load vs skopeo copy oci: docker://)", sys.argv[4], sys.argv[5]),
                   ("create (mirror create vs skopeo copy docker:// oci:)", sys.argv[6], sys.argv[7])]:
    a, b = best(s), best(k)
    print(f"{what}: stella {a:.2f}s ({mib / a:.0f} MiB/s), skopeo {b:.2f}s ({mib / b:.0f} MiB/s), ratio {b / a:.2f}x")
if sys.argv[8]:
    a = float(sys.argv[8])
    print(f"load from .tar.zst (verified unpack + push, for information): {a:.2f}s ({mib / a:.0f} MiB/s)")
PY
