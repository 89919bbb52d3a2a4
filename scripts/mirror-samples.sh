#!/usr/bin/env bash
# Regenerate the signed sample bundles under docs/samples/mirror/ (seed 001):
#   m0-sample/                      a full bundle folder (a tiny image and advisories), signed
#                                   (detached header at
#                                   m0-sample/mirror/metadata/mirror.dsse.json)
#   mirror-thin-m0-sample.tar.gz    a thin bundle over m0-sample, signed and packed
#   mirror-root-ed25519-01.pub      the sample signing key's public half
#   keyring.toml                    a keyring trusting it for purpose mirror-bundle
# The signing key is generated for the run and thrown away: only its public half is kept, so
# nobody can sign more "samples" with it. Times are pinned (SOURCE_DATE_EPOCH), so the bundles
# differ between runs only by that key. The samples are valid for ten years so they verify as
# shipped. The tests (crates/cli/tests/it/mirror.rs, `shipped_samples_*`) verify what is here.
# Usage: scripts/mirror-samples.sh   (STELLA=path/to/stella to use a given binary)
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
DEST="$ROOT/docs/samples/mirror"
if [ -z "${STELLA:-}" ]; then
  cargo build --locked -p stella-cli >&2
  STELLA="${CARGO_TARGET_DIR:-$ROOT/target}/debug/stella"
fi
WORK="$(mktemp -d)"
trap 'rm -rf "$WORK"' EXIT
umask 077

# A password nobody keeps: the private key dies with $WORK.
COSIGN_PASSWORD="$(head -c 24 /dev/urandom | base64)"
export COSIGN_PASSWORD
KEY="$WORK/mirror-root-ed25519-01"
KEYID="$("$STELLA" key generate --algorithm ed25519 --output "$KEY" 2>&1 | sed -n 's/^Key id: //p')"

# A tiny image (one file, linux/amd64) as an OCI image layout, byte for byte the same on every
# run: a tar with fixed owners and times, gzip without name or time, canonical JSON.
oci_blob() { # FILE -> prints its digest, stores it under blobs/sha256
  local d
  d="$(sha256sum "$1" | cut -d' ' -f1)"
  mkdir -p "$WORK/src/hello/blobs/sha256"
  cp "$1" "$WORK/src/hello/blobs/sha256/$d"
  echo "$d"
}
mkdir -p "$WORK/img/rootfs"
printf 'hello from the stella mirror sample\n' >"$WORK/img/rootfs/hello.txt"
tar --sort=name --mtime=@0 --owner=0 --group=0 --numeric-owner --format=ustar \
  -C "$WORK/img/rootfs" -cf "$WORK/img/layer.tar" hello.txt
gzip -n -9 -c "$WORK/img/layer.tar" >"$WORK/img/layer.tar.gz"
DIFF_ID="$(sha256sum "$WORK/img/layer.tar" | cut -d' ' -f1)"
LAYER="$(oci_blob "$WORK/img/layer.tar.gz")"
printf '{"architecture":"amd64","config":{},"os":"linux","rootfs":{"diff_ids":["sha256:%s"],"type":"layers"}}' \
  "$DIFF_ID" >"$WORK/img/config.json"
CONFIG="$(oci_blob "$WORK/img/config.json")"
printf '{"config":{"digest":"sha256:%s","mediaType":"application/vnd.oci.image.config.v1+json","size":%d},"layers":[{"digest":"sha256:%s","mediaType":"application/vnd.oci.image.layer.v1.tar+gzip","size":%d}],"mediaType":"application/vnd.oci.image.manifest.v1+json","schemaVersion":2}' \
  "$CONFIG" "$(stat -c %s "$WORK/img/config.json")" "$LAYER" "$(stat -c %s "$WORK/img/layer.tar.gz")" \
  >"$WORK/img/manifest.json"
MANIFEST="$(oci_blob "$WORK/img/manifest.json")"
printf '{"manifests":[{"annotations":{"org.opencontainers.image.ref.name":"1.0"},"digest":"sha256:%s","mediaType":"application/vnd.oci.image.manifest.v1+json","platform":{"architecture":"amd64","os":"linux"},"size":%d}],"schemaVersion":2}' \
  "$MANIFEST" "$(stat -c %s "$WORK/img/manifest.json")" >"$WORK/src/hello/index.json"
printf '{"imageLayoutVersion":"1.0.0"}' >"$WORK/src/hello/oci-layout"

mkdir -p "$WORK/src/feeds/ghsa"
printf '{"source":"nvd","cves":["CVE-2025-0001"]}\n' >"$WORK/src/feeds/nvd.json"
printf '{"id":"GHSA-aaaa-bbbb-cccc","severity":"high"}\n' >"$WORK/src/feeds/ghsa/GHSA-aaaa-bbbb-cccc.json"
spec() { # version generation
  cat <<YAML
name: stellaops-mirror-sample
version: $1
generation: $2
issuer: mirror-guild@stella-ops.org
validForSeconds: 315360000
images:
  - reference: registry.stella-ops.org/stellaops/hello:1.0
    ociLayout: hello
advisories:
  - path: feeds/nvd.json
  - path: feeds/ghsa
    target: ghsa
YAML
}

# The full bundle, 2025-12-01T00:00:00Z.
spec 2025.12.0 1 >"$WORK/src/m0.yaml"
export SOURCE_DATE_EPOCH=1764547200
"$STELLA" mirror create --spec "$WORK/src/m0.yaml" --output "$WORK/m0-sample" >/dev/null
"$STELLA" mirror sign "$WORK/m0-sample/manifest.json" --key "$KEY.key" >/dev/null

# The thin update a day later: NVD changed, one advisory added.
printf '{"source":"nvd","cves":["CVE-2025-0001","CVE-2025-0002"]}\n' >"$WORK/src/feeds/nvd.json"
printf '{"id":"GHSA-dddd-eeee-ffff","severity":"low"}\n' >"$WORK/src/feeds/ghsa/GHSA-dddd-eeee-ffff.json"
spec 2025.12.1 2 >"$WORK/src/m1.yaml"
export SOURCE_DATE_EPOCH=1764633600
"$STELLA" mirror create --spec "$WORK/src/m1.yaml" --output "$WORK/thin" \
  --base "$WORK/m0-sample/manifest.json" >/dev/null
"$STELLA" mirror sign "$WORK/thin/manifest.json" --key "$KEY.key" >/dev/null
"$STELLA" mirror pack "$WORK/thin" --output "$WORK/mirror-thin-m0-sample.tar.gz" >/dev/null

# Check before publishing.
"$STELLA" mirror verify "$WORK/m0-sample" --key "$KEY.pub" >/dev/null 2>&1
"$STELLA" mirror verify "$WORK/mirror-thin-m0-sample.tar.gz" --key "$KEY.pub" >/dev/null 2>&1

rm -rf "$DEST/m0-sample"
mkdir -p -m 755 "$ROOT/docs/samples" "$DEST"
cp -R "$WORK/m0-sample" "$DEST/m0-sample"
cp "$WORK/mirror-thin-m0-sample.tar.gz" "$KEY.pub" "$DEST/"
cat >"$DEST/keyring.toml" <<'TOML'
# The sample keyring: trusts the sample mirror key for mirror bundles only (docs/keys.md).
[[keys]]
id = "mirror-root-ed25519-01"
public_key = "mirror-root-ed25519-01.pub"
algorithm = "ed25519"
purposes = ["mirror-bundle"]
TOML
find "$DEST" -type d -exec chmod 755 {} + && find "$DEST" -type f -exec chmod 644 {} +
find "$DEST/m0-sample/scripts" -name '*.sh' -exec chmod 755 {} +
echo "wrote $DEST (sample key mirror-root-ed25519-01 = $KEYID; its private half is gone)" >&2
