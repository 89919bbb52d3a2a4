#!/usr/bin/env python3
"""Sign a DSSE envelope with securesystemslib using fresh keys (interop peer).

usage: sslib_sign.py --alg ed25519|p256 --payload-type T --payload FILE
                     --out ENVELOPE_JSON --out-pub PUB_PEM [--signers K]
                     [--out-priv PRIV_PEM] [--keyid-style stella|sslib]

Generates K keys (default 1) with securesystemslib's CryptoSigner, signs the
envelope with every one (securesystemslib.dsse.Envelope.sign) and writes the
envelope JSON plus each public key as SPKI PEM (K>1: PUB_PEM.1 .. PUB_PEM.K;
same for --out-priv, unencrypted PKCS#8 PEM). Keyids follow Stella's
convention "sha256:"+hex(SHA-256(SPKI DER)) unless --keyid-style sslib
(securesystemslib's own default keyid).

exit 0: written; 2: usage error.
"""

from __future__ import annotations

import json
import sys

from _common import (
    EXIT_OK,
    EXIT_USAGE,
    ArgParser,
    UsageError,
    fail,
    numbered,
    read_bytes,
    spki_pem,
    stella_keyid,
    write_bytes,
)

PROG = "sslib_sign"


def generate(alg: str, keyid_style: str):
    from cryptography.hazmat.primitives.asymmetric import ec, ed25519
    from securesystemslib.signer import CryptoSigner, SSlibKey

    if alg == "ed25519":
        priv = ed25519.Ed25519PrivateKey.generate()
        scheme = "ed25519"
    else:
        priv = ec.generate_private_key(ec.SECP256R1())
        scheme = "ecdsa-sha2-nistp256"
    keyid = stella_keyid(priv.public_key()) if keyid_style == "stella" else None
    pub = SSlibKey.from_crypto(priv.public_key(), keyid, scheme)
    return CryptoSigner(priv, pub), priv


def main(argv: list[str]) -> int:
    p = ArgParser(prog=PROG, description="Sign a DSSE envelope with securesystemslib.")
    p.add_argument("--alg", required=True, choices=["ed25519", "p256"])
    p.add_argument("--payload-type", required=True, metavar="T")
    p.add_argument("--payload", required=True, metavar="FILE")
    p.add_argument("--out", required=True, metavar="ENVELOPE_JSON")
    p.add_argument("--out-pub", required=True, metavar="PUB_PEM")
    p.add_argument("--out-priv", metavar="PRIV_PEM")
    p.add_argument("--signers", type=int, default=1, metavar="K")
    p.add_argument("--keyid-style", choices=["stella", "sslib"], default="stella")
    a = p.parse_args(argv)

    from cryptography.hazmat.primitives.serialization import (
        Encoding,
        NoEncryption,
        PrivateFormat,
    )
    from securesystemslib.dsse import Envelope

    try:
        if a.signers < 1:
            raise UsageError("--signers must be >= 1")
        payload = read_bytes(a.payload)
        env = Envelope(payload, a.payload_type, {})
        keyids = []
        for i in range(a.signers):
            signer, priv = generate(a.alg, a.keyid_style)
            env.sign(signer)
            keyids.append(signer.public_key.keyid)
            write_bytes(numbered(a.out_pub, i, a.signers), spki_pem(priv.public_key()))
            if a.out_priv:
                pem = priv.private_bytes(Encoding.PEM, PrivateFormat.PKCS8, NoEncryption())
                write_bytes(numbered(a.out_priv, i, a.signers), pem, private=True)
        write_bytes(a.out, (json.dumps(env.to_dict(), indent=2) + "\n").encode())
    except UsageError as e:
        fail(PROG, str(e), EXIT_USAGE)

    print(
        f"OK: securesystemslib signed DSSE envelope {a.out}: alg={a.alg} "
        f"signatures={len(env.signatures)} keyids={','.join(keyids)}"
    )
    return EXIT_OK


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
