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

# The Signer service on embedded defaults. DEV PROFILE ONLY: an embedded dev Authority and dev
# Licensing, a generated dev signing key and the SQLite audit log under $DATA, loopback only.
DATA="$OUT/signer-data"
echo "==> starting the Signer service (DEV profile: dev Authority + Licensing, dev key, audit in $DATA)" >&2
rm -f "$OUT/signer.addr"
"$STELLA" signer serve --dev --listen 127.0.0.1:0 --data "$DATA" >"$OUT/signer.addr" 2>"$OUT/signer.log" &
SIGNER_PID=$!
trap 'kill "$SIGNER_PID" 2>/dev/null || true' EXIT
URL=""
for _ in $(seq 1 100); do
  URL="$(sed -n 's/^listening on //p' "$OUT/signer.addr" 2>/dev/null || true)"
  [ -n "$URL" ] && break
  kill -0 "$SIGNER_PID" 2>/dev/null || { cat "$OUT/signer.log" >&2; exit 1; }
  sleep 0.1
done
[ -n "$URL" ] || { echo "the Signer service did not start" >&2; cat "$OUT/signer.log" >&2; exit 1; }

echo "==> DPoP-bound token from the dev Authority, SBOM statement signed through $URL" >&2
"$STELLA" signer sign --url "$URL" --dev-authority --client-id quickstart \
  --predicate-type stella.ops/sbom@v1 --predicate "$OUT/app.cdx.json" --subject "$OUT/app.bin" \
  --poe dev-quickstart --output "$OUT/app.sbom.service.dsse.json"

echo "==> verifying the service's envelope offline with the dev key's public half" >&2
"$STELLA" verify --key "$DATA/dev-signing.pub" "$OUT/app.sbom.service.dsse.json"

echo "==> stopping the service (in-flight requests finish, audit log flushed) and checking the audit chain" >&2
kill -TERM "$SIGNER_PID"
wait "$SIGNER_PID"
trap - EXIT
"$STELLA" audit verify --db "$DATA/audit.db"

cat <<MSG

Quick start done. Outputs in $OUT:
  demo.key / demo.pub        key pair (cosign encrypted format; password: \$COSIGN_PASSWORD)
  app.bin, app.cdx.json      the artefact and its SBOM
  app.sbom.dsse.json         DSSE envelope (in-toto statement, stella.ops/sbom@v1)
  app.sbom.sigstore.json     the same as a Sigstore bundle v0.3
  app.sbom.service.dsse.json the SBOM statement signed by the Signer service (DEV profile)
  signer-data/               the service's audit log (audit.db) and DEV signing key
                             (dev-signing.key / dev-signing.pub); signer.log: its JSON logs
Verify again any time:  $STELLA verify --key $OUT/demo.pub $OUT/app.sbom.dsse.json
MSG
