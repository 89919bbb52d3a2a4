#!/usr/bin/env python3
"""Write / read cosign's encrypted private key format with PyNaCl + hashlib only.

usage:
  cosign_keyfile.py --private-pem PKCS8_PEM --password PW --n 32768|65536|131072
                    --label SIGSTORE|COSIGN --out KEYFILE [--salt-hex H --nonce-hex H]
  cosign_keyfile.py --decrypt KEYFILE --password PW --out-pem PKCS8_PEM

The format (go-securesystemslib "encrypted", as used by cosign):
  -----BEGIN ENCRYPTED SIGSTORE PRIVATE KEY-----   (or ... COSIGN ...)
  base64(JSON), 64-column lines
  JSON = {"kdf":{"name":"scrypt","params":{"N":N,"r":8,"p":1},"salt":b64},
          "cipher":{"name":"nacl/secretbox","nonce":b64},"ciphertext":b64}
  key = scrypt(password, salt, N, r, p, dklen=32); salt 32 bytes, nonce 24 bytes
  ciphertext = secretbox(plaintext = PKCS#8 DER of the private key)  (16-byte MAC first)
All base64 is standard and padded. The crypto is PyNaCl's SecretBox and
hashlib.scrypt; nothing from securesystemslib/sigstore/cosign is used, so this
is an independent implementation to check Stella's key files against.
If --password is omitted, $COSIGN_PASSWORD is used.

exit 0: written/decrypted; 1: decryption failed (wrong password, corrupt or
malformed key file, scrypt parameters cosign would refuse, plaintext not
PKCS#8); 2: usage error.
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
import re
import sys

from _common import (
    EXIT_OK,
    EXIT_USAGE,
    ArgParser,
    UsageError,
    fail,
    read_bytes,
    write_bytes,
)

PROG = "cosign_keyfile"
LABELS = {
    "SIGSTORE": "ENCRYPTED SIGSTORE PRIVATE KEY",
    "COSIGN": "ENCRYPTED COSIGN PRIVATE KEY",
}
SALT_LEN = 32
NONCE_LEN = 24  # nacl.secret.SecretBox.NONCE_SIZE
KEY_LEN = 32  # nacl.secret.SecretBox.KEY_SIZE
# legacy, standard, OWASP: the only sets go-securesystemslib's Decrypt accepts
ALLOWED_PARAMS = {(32768, 8, 1), (65536, 8, 1), (131072, 8, 1)}

PEM_RE = re.compile(
    rb"-----BEGIN ([A-Z0-9 ]+)-----\r?\n(.*?)\r?\n?-----END \1-----", re.DOTALL
)


class Rejected(Exception):
    """The key file is not acceptable: exit 1."""


def pem_encode(label: str, der: bytes) -> bytes:
    b64 = base64.b64encode(der).decode("ascii")
    lines = [b64[i : i + 64] for i in range(0, len(b64), 64)]
    return (f"-----BEGIN {label}-----\n" + "\n".join(lines) + f"\n-----END {label}-----\n").encode()


def pem_decode(data: bytes, what: str) -> tuple[str, bytes]:
    m = PEM_RE.search(data)
    if not m:
        raise ValueError(f"{what}: no PEM block found")
    body = b"".join(m.group(2).split())
    try:
        return m.group(1).decode(), base64.b64decode(body, validate=True)
    except Exception as e:  # noqa: BLE001
        raise ValueError(f"{what}: bad base64 in PEM body ({e})") from e


def b64std(b: bytes) -> str:
    return base64.b64encode(b).decode("ascii")


def b64field(obj: dict, key: str, where: str) -> bytes:
    v = obj.get(key)
    if not isinstance(v, str):
        raise Rejected(f"{where}.{key} missing or not a string")
    try:
        return base64.b64decode(v, validate=True)
    except Exception as e:  # noqa: BLE001
        raise Rejected(f"{where}.{key} is not standard padded base64 ({e})") from e


def derive(password: bytes, salt: bytes, n: int, r: int, p: int) -> bytes:
    maxmem = 128 * r * (n + 2) + 128 * r * p + (64 << 20)
    return hashlib.scrypt(password, salt=salt, n=n, r=r, p=p, maxmem=maxmem, dklen=KEY_LEN)


def encrypt(a) -> str:
    import nacl.secret

    label, der = pem_decode(read_bytes(a.private_pem), a.private_pem)
    if label != "PRIVATE KEY":
        raise UsageError(f"{a.private_pem}: expected a PKCS#8 'PRIVATE KEY' PEM, got '{label}'")
    salt = bytes.fromhex(a.salt_hex) if a.salt_hex else os.urandom(SALT_LEN)
    nonce = bytes.fromhex(a.nonce_hex) if a.nonce_hex else os.urandom(NONCE_LEN)
    if len(salt) != SALT_LEN or len(nonce) != NONCE_LEN:
        raise UsageError(f"salt must be {SALT_LEN} bytes and nonce {NONCE_LEN} bytes")
    key = derive(a.password.encode("utf-8"), salt, a.n, 8, 1)
    ciphertext = nacl.secret.SecretBox(key).encrypt(der, nonce).ciphertext  # MAC || ct
    doc = {
        "kdf": {"name": "scrypt", "params": {"N": a.n, "r": 8, "p": 1}, "salt": b64std(salt)},
        "cipher": {"name": "nacl/secretbox", "nonce": b64std(nonce)},
        "ciphertext": b64std(ciphertext),
    }
    body = json.dumps(doc, separators=(",", ":")).encode()
    write_bytes(a.out, pem_encode(LABELS[a.label], body), private=True)
    return f"OK: wrote cosign key file {a.out}: label={LABELS[a.label]} scrypt N={a.n} r=8 p=1"


def decrypt(a) -> str:
    import nacl.exceptions
    import nacl.secret

    data = read_bytes(a.decrypt)
    try:
        label, body = pem_decode(data, a.decrypt)
    except ValueError as e:
        raise Rejected(str(e)) from e
    if label not in LABELS.values():
        raise Rejected(f"PEM label '{label}' is not one of {sorted(LABELS.values())}")
    try:
        doc = json.loads(body)
    except ValueError as e:
        raise Rejected(f"PEM body is not JSON ({e})") from e
    if not isinstance(doc, dict):
        raise Rejected("PEM body JSON is not an object")
    kdf, cipher = doc.get("kdf"), doc.get("cipher")
    if not isinstance(kdf, dict) or kdf.get("name") != "scrypt":
        raise Rejected(f"kdf.name must be 'scrypt' (got {kdf!r:.80})")
    if not isinstance(cipher, dict) or cipher.get("name") != "nacl/secretbox":
        raise Rejected(f"cipher.name must be 'nacl/secretbox' (got {cipher!r:.80})")
    params = kdf.get("params")
    if not isinstance(params, dict):
        raise Rejected("kdf.params missing")
    n, r, p = params.get("N"), params.get("r"), params.get("p")
    for name, v in (("N", n), ("r", r), ("p", p)):
        if not isinstance(v, int) or isinstance(v, bool) or v < 1:
            raise Rejected(f"kdf.params.{name} must be a positive integer (got {v!r})")
    if (n, r, p) not in ALLOWED_PARAMS:
        # go-securesystemslib (cosign) CheckParams(): only these three sets
        raise Rejected(f"unsupported scrypt parameters N={n} r={r} p={p} (cosign accepts "
                       "N in 32768/65536/131072 with r=8 p=1)")
    salt = b64field(kdf, "salt", "kdf")
    nonce = b64field(cipher, "nonce", "cipher")
    ciphertext = b64field(doc, "ciphertext", "")
    if len(nonce) != NONCE_LEN:
        raise Rejected(f"cipher.nonce must be {NONCE_LEN} bytes (got {len(nonce)})")
    try:
        key = derive(a.password.encode("utf-8"), salt, n, r, p)
    except ValueError as e:
        raise Rejected(f"scrypt failed: {e}") from e
    try:
        der = nacl.secret.SecretBox(key).decrypt(ciphertext, nonce)
    except nacl.exceptions.CryptoError as e:
        raise Rejected("secretbox authentication failed (wrong password or corrupt file)") from e

    kind = "unknown"
    try:  # identify the key; plaintext must be PKCS#8 DER
        from cryptography.hazmat.primitives.asymmetric import ec, ed25519
        from cryptography.hazmat.primitives.serialization import load_der_private_key

        k = load_der_private_key(der, None)
        if isinstance(k, ed25519.Ed25519PrivateKey):
            kind = "ed25519"
        elif isinstance(k, ec.EllipticCurvePrivateKey):
            kind = "p256" if k.curve.name == "secp256r1" else f"ecdsa-{k.curve.name}"
        else:
            kind = type(k).__name__
    except Exception as e:  # noqa: BLE001
        raise Rejected(f"decrypted plaintext is not a PKCS#8 DER private key ({e})") from e

    write_bytes(a.out_pem, pem_encode("PRIVATE KEY", der), private=True)
    return (
        f"OK: decrypted cosign key file {a.decrypt}: label={label} scrypt N={n} r={r} p={p} "
        f"key={kind} -> {a.out_pem}"
    )


def main(argv: list[str]) -> int:
    p = ArgParser(prog=PROG, description="cosign encrypted private key files (PyNaCl + scrypt).")
    p.add_argument("--decrypt", metavar="KEYFILE", help="decrypt mode")
    p.add_argument("--out-pem", metavar="PKCS8_PEM", help="decrypt mode output")
    p.add_argument("--private-pem", metavar="PKCS8_PEM", help="encrypt mode input")
    p.add_argument("--n", type=int, choices=[32768, 65536, 131072], default=None)
    p.add_argument("--label", choices=sorted(LABELS), default=None)
    p.add_argument("--out", metavar="KEYFILE", help="encrypt mode output")
    p.add_argument("--salt-hex", help="fixed 32-byte salt (tests only)")
    p.add_argument("--nonce-hex", help="fixed 24-byte nonce (tests only)")
    p.add_argument("--password", help="password (default: $COSIGN_PASSWORD)")
    a = p.parse_args(argv)

    if a.password is None:
        a.password = os.environ.get("COSIGN_PASSWORD")
        if a.password is None:
            p.error("--password (or COSIGN_PASSWORD) is required")
    try:
        if a.decrypt:
            if a.private_pem or a.out or a.n or a.label or a.salt_hex or a.nonce_hex:
                raise UsageError("--decrypt takes only --password and --out-pem")
            if not a.out_pem:
                raise UsageError("--decrypt needs --out-pem")
            msg = decrypt(a)
        else:
            missing = [f for f, v in (("--private-pem", a.private_pem), ("--n", a.n),
                                      ("--label", a.label), ("--out", a.out)) if not v]
            if missing:
                raise UsageError("encrypt mode needs " + ", ".join(missing))
            if a.out_pem:
                raise UsageError("--out-pem is for --decrypt")
            msg = encrypt(a)
    except UsageError as e:
        fail(PROG, str(e), EXIT_USAGE)
    except ValueError as e:  # bad PEM/hex in our own inputs
        fail(PROG, str(e), EXIT_USAGE)
    except Rejected as e:
        fail(PROG, str(e))
    print(msg)
    return EXIT_OK


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
