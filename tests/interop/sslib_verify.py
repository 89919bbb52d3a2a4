#!/usr/bin/env python3
"""Verify a DSSE envelope with securesystemslib (peer for interop tests).

usage: sslib_verify.py ENVELOPE_JSON --key ALG:PUBPEM_PATH[:KEYID] [--key ...] --threshold N

ALG is p256 (keytype "ecdsa", scheme "ecdsa-sha2-nistp256", keyval.public = PEM)
or ed25519 (keytype/scheme "ed25519", keyval.public = hex of the raw 32 bytes).
KEYID defaults to Stella's convention "sha256:" + hex(SHA-256(SPKI DER)).
securesystemslib only tries a key on a signature whose keyid equals the key's
keyid, so the keyid given here must be the one in the envelope.

exit 0: verified (prints one OK line); 1: verification failed or envelope
malformed; 2: usage error (bad arguments, unreadable/invalid key file).
"""

from __future__ import annotations

import json
import os
import sys

from _common import (
    EXIT_OK,
    EXIT_USAGE,
    ArgParser,
    UsageError,
    fail,
    read_bytes,
    stella_keyid,
)

PROG = "sslib_verify"


def parse_key_spec(spec: str) -> tuple[str, str, str | None]:
    """ALG:PATH[:KEYID]; KEYID may itself contain ':' (e.g. "sha256:...")."""
    alg, sep, rest = spec.partition(":")
    if not sep or not rest:
        raise UsageError(f"--key {spec!r}: expected ALG:PUBPEM_PATH[:KEYID]")
    alg = alg.lower()
    if alg not in ("p256", "ed25519"):
        raise UsageError(f"--key {spec!r}: ALG must be p256 or ed25519")
    if os.path.isfile(rest):
        return alg, rest, None
    # split at the first ':' whose prefix names an existing file
    idx = rest.find(":")
    while idx != -1:
        path, keyid = rest[:idx], rest[idx + 1 :]
        if os.path.isfile(path):
            if not keyid:
                raise UsageError(f"--key {spec!r}: empty KEYID")
            return alg, path, keyid
        idx = rest.find(":", idx + 1)
    raise UsageError(f"--key {spec!r}: no such public key file")


def build_key(alg: str, path: str, keyid: str | None):
    from cryptography.hazmat.primitives.asymmetric import ec, ed25519
    from cryptography.hazmat.primitives.serialization import (
        Encoding,
        PublicFormat,
        load_pem_public_key,
    )
    from securesystemslib.signer import SSlibKey

    pem = read_bytes(path)
    try:
        pub = load_pem_public_key(pem)
    except Exception as e:  # noqa: BLE001
        raise UsageError(f"{path}: not a PEM SubjectPublicKeyInfo public key ({e})") from e
    if keyid is None:
        keyid = stella_keyid(pub)
    if alg == "p256":
        if not isinstance(pub, ec.EllipticCurvePublicKey) or pub.curve.name != "secp256r1":
            raise UsageError(f"{path}: not a P-256 public key")
        keyval = {"public": pub.public_bytes(Encoding.PEM, PublicFormat.SubjectPublicKeyInfo).decode()}
        return SSlibKey(keyid, "ecdsa", "ecdsa-sha2-nistp256", keyval)
    if not isinstance(pub, ed25519.Ed25519PublicKey):
        raise UsageError(f"{path}: not an Ed25519 public key")
    raw = pub.public_bytes(Encoding.Raw, PublicFormat.Raw)
    return SSlibKey(keyid, "ed25519", "ed25519", {"public": raw.hex()})


def main(argv: list[str]) -> int:
    p = ArgParser(prog=PROG, description="Verify a DSSE envelope with securesystemslib.")
    p.add_argument("envelope", metavar="ENVELOPE_JSON")
    p.add_argument("--key", action="append", required=True, metavar="ALG:PUBPEM_PATH[:KEYID]")
    p.add_argument("--threshold", type=int, required=True, metavar="N")
    a = p.parse_args(argv)

    try:
        if a.threshold < 1:
            raise UsageError("--threshold must be >= 1")
        if a.threshold > len(a.key):
            raise UsageError(f"--threshold {a.threshold} exceeds the number of keys ({len(a.key)})")
        keys = [build_key(*parse_key_spec(s)) for s in a.key]
        ids = [k.keyid for k in keys]
        if len(set(ids)) != len(ids):
            raise UsageError("two --key arguments have the same keyid")
        raw = read_bytes(a.envelope)
    except UsageError as e:
        fail(PROG, str(e), EXIT_USAGE)

    from securesystemslib import exceptions
    from securesystemslib.dsse import Envelope

    try:
        doc = json.loads(raw)
        if not isinstance(doc, dict):
            raise ValueError("envelope JSON is not an object")
        env = Envelope.from_dict(doc)
    except Exception as e:  # noqa: BLE001 - any parse problem is a rejection
        fail(PROG, f"envelope rejected by securesystemslib parser: {type(e).__name__}: {e}")

    try:
        accepted = env.verify(keys, a.threshold)
    except exceptions.VerificationError as e:
        sig_ids = sorted(env.signatures)
        note = ""
        if not set(sig_ids) & set(ids):
            note = (
                f" (no envelope keyid {sig_ids} equals a key's keyid {ids}: "
                "securesystemslib only tries keys whose keyid matches)"
            )
        fail(PROG, f"securesystemslib: {e}{note}")
    except Exception as e:  # noqa: BLE001
        fail(PROG, f"securesystemslib: {type(e).__name__}: {e}")

    print(
        f"OK: securesystemslib verified DSSE envelope: payloadType={env.payload_type} "
        f"keys={len(accepted)}/{a.threshold} keyids={','.join(sorted(accepted))}"
    )
    return EXIT_OK


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
