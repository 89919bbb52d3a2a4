#!/usr/bin/env bash
# Self-test of the interop peers, without Stella: the peers are checked
# against each other and against openssl. Run scripts/setup-test-deps.sh first.
# Last line: "N passed, M failed"; exit 0 only when M == 0.
set -euo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
ROOT="$(cd "$HERE/../.." && pwd)"
PY="$ROOT/.venv/bin/python"
if [ ! -x "$PY" ] || [ ! -d "$HERE/node_modules/@sigstore/verify" ]; then
    echo "selftest: peers not installed; run scripts/setup-test-deps.sh" >&2
    exit 2
fi
command -v openssl >/dev/null || { echo "selftest: openssl missing" >&2; exit 2; }

T="$(mktemp -d)"
trap 'rm -rf "$T"' EXIT
PASS=0
FAIL=0

# check NAME EXPECTED_EXIT CMD...
check() {
    local name="$1" want="$2" rc=0
    shift 2
    "$@" >"$T/out" 2>&1 || rc=$?
    if [ "$rc" -eq "$want" ]; then
        PASS=$((PASS + 1))
        echo "ok   - $name"
    else
        FAIL=$((FAIL + 1))
        echo "FAIL - $name (exit $rc, expected $want)"
        sed 's/^/       | /' "$T/out"
    fi
}
# must NAME CMD...: setup step that has to work
must() {
    local name="$1"
    shift
    if ! "$@" >"$T/out" 2>&1; then
        FAIL=$((FAIL + 1))
        echo "FAIL - setup: $name"
        sed 's/^/       | /' "$T/out"
    fi
}

helper() { python3 "$HERE/selftest_helper.py" "$@"; }
sslib_sign() { "$PY" "$HERE/sslib_sign.py" "$@"; }
sslib_verify() { "$PY" "$HERE/sslib_verify.py" "$@"; }
intoto() { "$PY" "$HERE/intoto_validate.py" "$@"; }
cosign_kf() { "$PY" "$HERE/cosign_keyfile.py" "$@"; }
sigstore_verify() { (cd "$ROOT" && node tests/interop/sigstore_verify.mjs "$@"); }
keyid_of() { echo "sha256:$(openssl pkey -pubin -in "$1" -outform DER | sha256sum | cut -d' ' -f1)"; }
PT=application/vnd.in-toto+json

printf 'hello stella\n' > "$T/artifact.bin"
helper statement "$T/stmt.json" "$T/artifact.bin"
helper statement "$T/stmt-nosubj.json" --no-subject "$T/artifact.bin"
helper statement "$T/stmt-badtype.json" --bad-type "$T/artifact.bin"
helper statement "$T/stmt-nodigest.json" --no-digest "$T/artifact.bin"
printf 'other\n' > "$T/other.bin"

echo "# sslib_sign.py -> sslib_verify.py"
for alg in ed25519 p256; do
    must "sign 1-of-1 $alg" sslib_sign --alg $alg --payload-type $PT --payload "$T/stmt.json" \
        --out "$T/env-$alg.json" --out-pub "$T/pub-$alg.pem"
    check "1-of-1 $alg verifies" 0 sslib_verify "$T/env-$alg.json" --key "$alg:$T/pub-$alg.pem" --threshold 1
    check "1-of-1 $alg explicit keyid verifies" 0 \
        sslib_verify "$T/env-$alg.json" --key "$alg:$T/pub-$alg.pem:$(keyid_of "$T/pub-$alg.pem")" --threshold 1
    helper tamper-payload "$T/env-$alg.json" "$T/env-$alg-tampered.json"
    check "1-of-1 $alg tampered payload fails" 1 \
        sslib_verify "$T/env-$alg-tampered.json" --key "$alg:$T/pub-$alg.pem" --threshold 1
done
check "wrong key fails" 1 sslib_verify "$T/env-p256.json" --key "ed25519:$T/pub-ed25519.pem" --threshold 1
check "keyid not matching envelope fails (sslib matches keyids)" 1 \
    sslib_verify "$T/env-ed25519.json" --key "ed25519:$T/pub-ed25519.pem:sha256:00" --threshold 1
check "alg/key mismatch is a usage error" 2 sslib_verify "$T/env-p256.json" --key "ed25519:$T/pub-p256.pem" --threshold 1
check "threshold above key count is a usage error" 2 \
    sslib_verify "$T/env-p256.json" --key "p256:$T/pub-p256.pem" --threshold 2

must "sign 3 signers p256" sslib_sign --alg p256 --signers 3 --payload-type $PT --payload "$T/stmt.json" \
    --out "$T/env3.json" --out-pub "$T/pub3.pem"
check "2-of-3 verifies with all 3 keys" 0 sslib_verify "$T/env3.json" \
    --key "p256:$T/pub3.pem.1" --key "p256:$T/pub3.pem.2" --key "p256:$T/pub3.pem.3" --threshold 2
check "2-of-3 verifies with 2 of the keys" 0 sslib_verify "$T/env3.json" \
    --key "p256:$T/pub3.pem.1" --key "p256:$T/pub3.pem.3" --threshold 2
must "sign 1 signer for a foreign key" sslib_sign --alg p256 --payload-type $PT --payload "$T/stmt.json" \
    --out "$T/env-x.json" --out-pub "$T/pub-x.pem"
check "2-of-2 fails when only 1 trusted key signed" 1 sslib_verify "$T/env3.json" \
    --key "p256:$T/pub3.pem.1" --key "p256:$T/pub-x.pem" --threshold 2
helper tamper-payload "$T/env3.json" "$T/env3-tampered.json"
check "2-of-3 tampered payload fails" 1 sslib_verify "$T/env3-tampered.json" \
    --key "p256:$T/pub3.pem.1" --key "p256:$T/pub3.pem.2" --key "p256:$T/pub3.pem.3" --threshold 2
must "sign 2 signers ed25519 (sslib keyids)" sslib_sign --alg ed25519 --signers 2 --keyid-style sslib \
    --payload-type $PT --payload "$T/stmt.json" --out "$T/env2s.json" --out-pub "$T/pub2s.pem"
check "sslib-style keyids need the explicit KEYID" 1 sslib_verify "$T/env2s.json" \
    --key "ed25519:$T/pub2s.pem.1" --threshold 1
kid="$("$PY" -c 'import json,sys; print(json.load(open(sys.argv[1]))["signatures"][0]["keyid"])' "$T/env2s.json")"
check "sslib-style keyid given explicitly verifies" 0 sslib_verify "$T/env2s.json" \
    --key "ed25519:$T/pub2s.pem.1:$kid" --key "ed25519:$T/pub2s.pem.2:$kid-unused" --threshold 1

echo "# openssl-signed envelopes -> sslib_verify.py"
openssl genpkey -algorithm ed25519 -out "$T/ossl-ed.key" 2>/dev/null
openssl pkey -in "$T/ossl-ed.key" -pubout -out "$T/ossl-ed.pub"
openssl genpkey -algorithm EC -pkeyopt ec_paramgen_curve:P-256 -out "$T/ossl-p256.key" 2>/dev/null
openssl pkey -in "$T/ossl-p256.key" -pubout -out "$T/ossl-p256.pub"
helper pae $PT "$T/stmt.json" "$T/pae.bin"
openssl pkeyutl -sign -rawin -inkey "$T/ossl-ed.key" -in "$T/pae.bin" -out "$T/ossl-ed.sig"
openssl dgst -sha256 -sign "$T/ossl-p256.key" -out "$T/ossl-p256.sig" "$T/pae.bin"
helper envelope $PT "$T/stmt.json" "$T/ossl-env.json" \
    "$T/ossl-ed.sig" "$(keyid_of "$T/ossl-ed.pub")" "$T/ossl-p256.sig" "$(keyid_of "$T/ossl-p256.pub")"
check "openssl ed25519+p256 envelope 2-of-2" 0 sslib_verify "$T/ossl-env.json" \
    --key "ed25519:$T/ossl-ed.pub" --key "p256:$T/ossl-p256.pub" --threshold 2
helper tamper-payload "$T/ossl-env.json" "$T/ossl-env-tampered.json"
check "openssl envelope tampered fails" 1 sslib_verify "$T/ossl-env-tampered.json" \
    --key "ed25519:$T/ossl-ed.pub" --key "p256:$T/ossl-p256.pub" --threshold 1
echo '{"payloadType":1}' > "$T/garbage.json"
check "malformed envelope fails" 1 sslib_verify "$T/garbage.json" --key "p256:$T/ossl-p256.pub" --threshold 1

echo "# hand-built sigstore bundle v0.3 -> sigstore_verify.mjs"
KID="$(keyid_of "$T/ossl-p256.pub")"
helper bundle $PT "$T/stmt.json" "$T/ossl-p256.sig" "$KID" "$KID" "$T/bundle.json"
check "p256 bundle verifies" 0 sigstore_verify "$T/bundle.json" "$T/ossl-p256.pub"
check "p256 bundle verifies --require-hint" 0 sigstore_verify "$T/bundle.json" "$T/ossl-p256.pub" --require-hint
check "p256 bundle --artifact (subject digest) verifies" 0 \
    sigstore_verify "$T/bundle.json" "$T/ossl-p256.pub" --artifact "$T/artifact.bin"
check "p256 bundle --artifact not a subject fails" 1 \
    sigstore_verify "$T/bundle.json" "$T/ossl-p256.pub" --artifact "$T/other.bin"
helper tamper-payload "$T/bundle.json" "$T/bundle-tampered.json"
check "tampered bundle fails" 1 sigstore_verify "$T/bundle-tampered.json" "$T/ossl-p256.pub"
check "bundle with wrong key fails" 1 sigstore_verify "$T/bundle.json" "$T/pub-p256.pem"
helper bundle $PT "$T/stmt.json" "$T/ossl-p256.sig" "$KID" "some-other-hint" "$T/bundle-hint.json"
check "foreign hint accepted without --require-hint" 0 sigstore_verify "$T/bundle-hint.json" "$T/ossl-p256.pub"
check "foreign hint rejected with --require-hint" 1 \
    sigstore_verify "$T/bundle-hint.json" "$T/ossl-p256.pub" --require-hint
helper add-signature "$T/bundle.json" "$T/bundle-2sig.json"
check "bundle with 2 signatures rejected" 1 sigstore_verify "$T/bundle-2sig.json" "$T/ossl-p256.pub"
KIDE="$(keyid_of "$T/ossl-ed.pub")"
helper bundle $PT "$T/stmt.json" "$T/ossl-ed.sig" "$KIDE" "$KIDE" "$T/bundle-ed.json"
check "ed25519 bundle verifies" 0 sigstore_verify "$T/bundle-ed.json" "$T/ossl-ed.pub" --require-hint
sed 's/bundle.v0.3+json/bundle.vX+json/' "$T/bundle.json" > "$T/bundle-badmt.json"
check "bad mediaType rejected" 1 sigstore_verify "$T/bundle-badmt.json" "$T/ossl-p256.pub"
check "missing bundle file is a usage error" 2 sigstore_verify "$T/nope.json" "$T/ossl-p256.pub"

echo "# intoto_validate.py"
check "valid statement" 0 intoto "$T/stmt.json"
check "statement without subject fails" 1 intoto "$T/stmt-nosubj.json"
check "statement with v0.9 _type fails" 1 intoto "$T/stmt-badtype.json"
check "subject without digest fails" 1 intoto "$T/stmt-nodigest.json"
check "unknown top-level field fails" 1 intoto "$T/garbage.json"

echo "# cosign_keyfile.py"
for k in ossl-ed ossl-p256; do
    openssl pkey -in "$T/$k.key" -outform DER -out "$T/$k.der"
    must "encrypt $k" cosign_kf --private-pem "$T/$k.key" --password 's3cret pw' --n 32768 \
        --label SIGSTORE --out "$T/$k.cosign.key"
    check "$k decrypts" 0 cosign_kf --decrypt "$T/$k.cosign.key" --password 's3cret pw' --out-pem "$T/$k.dec.pem"
    openssl pkey -in "$T/$k.dec.pem" -outform DER -out "$T/$k.dec.der" 2>/dev/null || true
    check "$k round trip is byte-identical PKCS#8" 0 cmp -s "$T/$k.der" "$T/$k.dec.der"
    check "$k wrong password fails" 1 cosign_kf --decrypt "$T/$k.cosign.key" --password wrong --out-pem "$T/x.pem"
done
must "encrypt COSIGN label N=65536" cosign_kf --private-pem "$T/ossl-p256.key" --password '' --n 65536 \
    --label COSIGN --out "$T/legacy.key"
check "COSIGN label, empty password decrypts (COSIGN_PASSWORD)" 0 \
    env COSIGN_PASSWORD= "$PY" "$HERE/cosign_keyfile.py" --decrypt "$T/legacy.key" --out-pem "$T/legacy.pem"
check "key file format (label, 64-col PEM, JSON fields)" 0 "$PY" - "$T/ossl-ed.cosign.key" "$T/legacy.key" <<'PYEOF'
import base64, json, sys
for path, label, n in ((sys.argv[1], "SIGSTORE", 32768), (sys.argv[2], "COSIGN", 65536)):
    lines = open(path).read().splitlines()
    assert lines[0] == f"-----BEGIN ENCRYPTED {label} PRIVATE KEY-----", lines[0]
    assert lines[-1] == f"-----END ENCRYPTED {label} PRIVATE KEY-----", lines[-1]
    assert all(len(l) == 64 for l in lines[1:-2]) and 0 < len(lines[-2]) <= 64
    d = json.loads(base64.b64decode("".join(lines[1:-1]), validate=True))
    assert list(d) == ["kdf", "cipher", "ciphertext"], list(d)
    assert d["kdf"]["name"] == "scrypt" and d["kdf"]["params"] == {"N": n, "r": 8, "p": 1}
    assert len(base64.b64decode(d["kdf"]["salt"], validate=True)) == 32
    assert d["cipher"]["name"] == "nacl/secretbox"
    assert len(base64.b64decode(d["cipher"]["nonce"], validate=True)) == 24
PYEOF
# corrupt one ciphertext byte: the MAC must catch it
"$PY" - "$T/ossl-ed.cosign.key" "$T/corrupt.key" <<'PYEOF'
import base64, json, sys
lines = open(sys.argv[1]).read().splitlines()
d = json.loads(base64.b64decode("".join(lines[1:-1])))
ct = bytearray(base64.b64decode(d["ciphertext"])); ct[-1] ^= 1
d["ciphertext"] = base64.b64encode(bytes(ct)).decode()
b = base64.b64encode(json.dumps(d).encode()).decode()
open(sys.argv[2], "w").write("\n".join([lines[0]] + [b[i:i+64] for i in range(0, len(b), 64)] + [lines[-1]]) + "\n")
PYEOF
sed_n16k() { "$PY" - "$1" "$2" <<'PYEOF'
import base64, json, sys
lines = open(sys.argv[1]).read().splitlines()
d = json.loads(base64.b64decode("".join(lines[1:-1])))
d["kdf"]["params"]["N"] = 16384
b = base64.b64encode(json.dumps(d).encode()).decode()
open(sys.argv[2], "w").write("\n".join([lines[0]] + [b[i:i+64] for i in range(0, len(b), 64)] + [lines[-1]]) + "\n")
PYEOF
}
sed_n16k "$T/ossl-ed.cosign.key" "$T/n16k.key"
check "scrypt N=16384 refused (cosign accepts only 3 param sets)" 1 \
    cosign_kf --decrypt "$T/n16k.key" --password 's3cret pw' --out-pem "$T/x.pem"
check "corrupted ciphertext fails" 1 cosign_kf --decrypt "$T/corrupt.key" --password 's3cret pw' --out-pem "$T/x.pem"
# known-answer: fixed salt+nonce give a fixed file (guards against format drift)
must "encrypt with fixed salt/nonce" cosign_kf --private-pem "$T/ossl-ed.key" --password pw --n 32768 --label SIGSTORE \
    --salt-hex "$(printf '11%.0s' $(seq 32))" --nonce-hex "$(printf '22%.0s' $(seq 24))" --out "$T/fixed1.key"
must "encrypt again with fixed salt/nonce" cosign_kf --private-pem "$T/ossl-ed.key" --password pw --n 32768 --label SIGSTORE \
    --salt-hex "$(printf '11%.0s' $(seq 32))" --nonce-hex "$(printf '22%.0s' $(seq 24))" --out "$T/fixed2.key"
check "fixed salt/nonce is deterministic" 0 cmp -s "$T/fixed1.key" "$T/fixed2.key"

echo "# usage errors"
check "sslib_verify without args" 2 sslib_verify
check "sslib_sign without args" 2 sslib_sign
check "intoto_validate without args" 2 intoto
check "cosign_keyfile encrypt missing --n" 2 cosign_kf --private-pem "$T/ossl-ed.key" --password x --label COSIGN --out "$T/x.key"
check "sigstore_verify without args" 2 sigstore_verify

echo "$PASS passed, $FAIL failed"
[ "$FAIL" -eq 0 ]
