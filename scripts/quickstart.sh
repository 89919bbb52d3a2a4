#!/usr/bin/env bash
# Quick start on embedded defaults: build `stella`, generate a key, attest an SBOM statement
# about an artefact, verify it offline; run the Signer service (DEV profile) from a config file
# it writes, sign through it, verify that offline, check the audit chain; say where everything
# went. Needs only the Rust toolchain (rust-toolchain.toml) and a C compiler (aws-lc-sys); no
# Python, no Node, no network after `cargo` has fetched the crates.
#
# It builds the `dev` profile (target/debug/stella): much quicker to build than the release
# profile on 2 cores, and the very build the test suite reuses. Benchmarks use the release profile
# (`scripts/*-bench.sh`, `cargo bench`); for everyday use install an optimised binary with
# `cargo install --locked --path crates/cli`.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
OUT="${OUT:-$ROOT/out/quickstart}"
mkdir -p "$OUT"
OUT="$(cd "$OUT" && pwd)"

echo "==> building stella (dev profile)" >&2
cargo build --locked -p stella-cli >&2
BIN_DIR="${CARGO_TARGET_DIR:-$ROOT/target}/debug"
BIN_DIR="$(cd "$BIN_DIR" && pwd)"
STELLA="$BIN_DIR/stella"

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

# The Signer service, DEV PROFILE ONLY: an embedded dev Authority and dev Licensing, a
# generated dev signing key and the SQLite audit log under signer-data/, loopback only. No real
# keys, Authority or Licensing are configured (the dev profile refuses to run with them).
# Relative paths in the file resolve against its folder.
DATA="$OUT/signer-data"
cat >"$OUT/stella.toml" <<'TOML'
# Written by scripts/quickstart.sh: the Signer service's DEV profile (never in production).
# `stella signer serve --config out/quickstart/stella.toml`; the sample production
# configuration is etc/stella.toml (docs/operations.md).
[server]
listen = "127.0.0.1:0"        # any free port; the address is printed on stdout

[audit]
path = "signer-data/audit.db"

[log]
format = "text"

[dev]
enabled = true
data_dir = "signer-data"      # dev-signing.key/.pub, DEV keyless CA/TSA, trusted_root.json
TOML
echo "==> starting the Signer service (DEV profile, config $OUT/stella.toml)" >&2
rm -f "$OUT/signer.addr"
"$STELLA" signer serve --config "$OUT/stella.toml" >"$OUT/signer.addr" 2>"$OUT/signer.log" &
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

echo "==> DPoP-bound token from the dev Authority, SBOM statement signed KEYLESS through $URL" >&2
# Keyless is the default mode: a 10-minute certificate for the Signer's own identity from the
# DEV-ONLY in-process CA, an RFC 3161 timestamp from the DEV-ONLY TSA, a Sigstore bundle.
"$STELLA" signer sign --url "$URL" --dev-authority --client-id quickstart \
  --predicate-type stella.ops/sbom@v1 --predicate "$OUT/app.cdx.json" --subject "$OUT/app.bin" \
  --poe dev-quickstart --bundle --output "$OUT/app.sbom.service.sigstore.json"

echo "==> verifying the keyless bundle offline: dev trusted root + the Signer's identity" >&2
"$STELLA" verify --trusted-root "$DATA/trusted_root.json" \
  --certificate-identity signer@dev.stella.invalid \
  --certificate-oidc-issuer urn:stella:dev-authority --tlog-threshold 0 \
  "$OUT/app.sbom.service.sigstore.json"

echo "==> the same statement signed with the service's dev key (signingMode file)" >&2
"$STELLA" signer sign --url "$URL" --dev-authority --client-id quickstart \
  --predicate-type stella.ops/sbom@v1 --predicate "$OUT/app.cdx.json" --subject "$OUT/app.bin" \
  --poe dev-quickstart --signing-mode file --output "$OUT/app.sbom.service.dsse.json"
"$STELLA" verify --key "$DATA/dev-signing.pub" "$OUT/app.sbom.service.dsse.json"

echo "==> stopping the service (in-flight requests finish, audit log flushed) and checking the audit chain" >&2
kill -TERM "$SIGNER_PID"
wait "$SIGNER_PID"
trap - EXIT
"$STELLA" audit verify --config "$OUT/stella.toml" --checkpoint-key "$DATA/dev-audit.pub"

# Every file the summary names must be there.
for f in demo.key demo.pub app.bin app.cdx.json app.sbom.dsse.json app.sbom.sigstore.json \
  app.sbom.service.sigstore.json app.sbom.service.dsse.json stella.toml signer.log \
  signer.addr signer-data/audit.db signer-data/trusted_root.json signer-data/dev-keyless.json \
  signer-data/dev-signing.key signer-data/dev-signing.pub signer-data/dev-audit.key \
  signer-data/dev-audit.pub signer-data/audit.checkpoint.json; do
  [ -e "$OUT/$f" ] || { echo "quick start: $OUT/$f is missing" >&2; exit 1; }
done

cat <<MSG

Quick start done. The binary: $STELLA
Put it on your PATH for the README examples (or install an optimised one with
\`cargo install --locked --path crates/cli\`, which puts it in ~/.cargo/bin):
  export PATH="$BIN_DIR:\$PATH"

Outputs in $OUT:
  demo.key / demo.pub        key pair (cosign encrypted format; password: \$COSIGN_PASSWORD,
                             default quickstart-demo)
  app.bin, app.cdx.json      the artefact and its SBOM
  app.sbom.dsse.json         DSSE envelope (in-toto statement, stella.ops/sbom@v1)
  app.sbom.sigstore.json     the same as a Sigstore bundle v0.3
  app.sbom.service.sigstore.json  the SBOM statement signed KEYLESS by the Signer service
                             (DEV profile: certificate from the DEV-ONLY CA, RFC 3161
                             timestamp from the DEV-ONLY TSA); verify it offline:
                             stella verify --trusted-root $DATA/trusted_root.json \\
                               --certificate-identity signer@dev.stella.invalid \\
                               --certificate-oidc-issuer urn:stella:dev-authority \\
                               --tlog-threshold 0 $OUT/app.sbom.service.sigstore.json
  app.sbom.service.dsse.json the same signed with the service's DEV key (--signing-mode file)
  stella.toml                the service's DEV configuration (stella signer serve --config ...)
  signer.log                 the service's log; signer.addr: the address it listened on
  signer-data/audit.db       the service's audit log, hash-chained
  signer-data/audit.checkpoint.json   its signed checkpoint (DEV key dev-audit.key / .pub):
                             stella audit verify --config $OUT/stella.toml \\
                               --checkpoint-key $DATA/dev-audit.pub
  signer-data/dev-signing.key, dev-signing.pub   the service's DEV signing key
  signer-data/trusted_root.json   the DEV keyless trusted root (CA, CT log, TSA); the DEV CA
                             and TSA keys are in signer-data/dev-keyless.json (never trust
                             either outside development)
Verify again any time:  stella verify --key $OUT/demo.pub $OUT/app.sbom.dsse.json
MSG
