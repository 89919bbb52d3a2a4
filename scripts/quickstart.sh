#!/usr/bin/env bash
# Quick start on embedded defaults: build `stella`, generate a key, attest an SBOM statement
# about an artefact, verify it offline, and say where everything went.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
OUT="${OUT:-$ROOT/out/quickstart}"
mkdir -p "$OUT"

echo "==> building stella (release)" >&2
cargo build --release --locked -p stella-cli >&2
STELLA="$ROOT/target/release/stella"

# The demo key's password. Set COSIGN_PASSWORD yourself to choose one.
export COSIGN_PASSWORD="${COSIGN_PASSWORD-quickstart-demo}"

echo "==> generating a P-256 key pair (cosign format)" >&2
"$STELLA" key generate --algorithm p256 --output "$OUT/demo" --force

echo "==> making a demo artefact and its SBOM" >&2
printf 'stella quickstart artefact\n' >"$OUT/app.bin"
cat >"$OUT/app.cdx.json" <<'JSON'
{"bomFormat": "CycloneDX", "specVersion": "1.5",
 "components": [{"type": "library", "name": "openssl", "version": "3.0.15",
                 "purl": "pkg:deb/debian/openssl@3.0.15"}]}
JSON

echo "==> attesting the SBOM (stella.ops/sbom@v1): DSSE envelope and Sigstore bundle" >&2
"$STELLA" sign sbom --key "$OUT/demo.key" --subject "$OUT/app.bin" \
  --predicate "$OUT/app.cdx.json" --output "$OUT/app.sbom.dsse.json"
"$STELLA" sign sbom --key "$OUT/demo.key" --subject "$OUT/app.bin" \
  --predicate "$OUT/app.cdx.json" --bundle --output "$OUT/app.sbom.sigstore.json"

echo "==> verifying offline with the public key" >&2
"$STELLA" verify --key "$OUT/demo.pub" "$OUT/app.sbom.dsse.json"
"$STELLA" verify --key "$OUT/demo.pub" "$OUT/app.sbom.sigstore.json"

cat <<MSG

Quick start done. Outputs in $OUT:
  demo.key / demo.pub        key pair (cosign encrypted format; password: \$COSIGN_PASSWORD)
  app.bin, app.cdx.json      the artefact and its SBOM
  app.sbom.dsse.json         DSSE envelope (in-toto statement, stella.ops/sbom@v1)
  app.sbom.sigstore.json     the same as a Sigstore bundle v0.3
Verify again any time:  $STELLA verify --key $OUT/demo.pub $OUT/app.sbom.dsse.json
MSG
