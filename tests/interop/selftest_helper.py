#!/usr/bin/env python3
"""Helpers for selftest.sh (no third-party imports: stdlib only).

  selftest_helper.py pae TYPE PAYLOAD_FILE OUT            DSSE PAE bytes
  selftest_helper.py envelope TYPE PAYLOAD_FILE OUT (SIGFILE KEYID)...
  selftest_helper.py bundle TYPE PAYLOAD_FILE SIGFILE KEYID HINT OUT
  selftest_helper.py tamper-payload IN OUT                change the DSSE payload
  selftest_helper.py add-signature IN OUT                 duplicate signature[0]
  selftest_helper.py statement OUT [--no-subject|--bad-type|--no-digest] SUBJ_FILE...
"""

import base64
import hashlib
import json
import sys


def pae(ptype: bytes, body: bytes) -> bytes:
    return b"DSSEv1 %d %s %d %s" % (len(ptype), ptype, len(body), body)


def b64(b: bytes) -> str:
    return base64.b64encode(b).decode()


def rd(p):
    with open(p, "rb") as f:
        return f.read()


def wr_json(p, doc):
    with open(p, "w") as f:
        json.dump(doc, f, indent=2)
        f.write("\n")


def main(argv):
    cmd, rest = argv[0], argv[1:]
    if cmd == "pae":
        ptype, payload, out = rest
        with open(out, "wb") as f:
            f.write(pae(ptype.encode(), rd(payload)))
    elif cmd == "envelope":
        ptype, payload, out, *pairs = rest
        sigs = [{"keyid": pairs[i + 1], "sig": b64(rd(pairs[i]))} for i in range(0, len(pairs), 2)]
        wr_json(out, {"payloadType": ptype, "payload": b64(rd(payload)), "signatures": sigs})
    elif cmd == "bundle":
        ptype, payload, sig, keyid, hint, out = rest
        wr_json(out, {
            "mediaType": "application/vnd.dev.sigstore.bundle.v0.3+json",
            "verificationMaterial": {
                "publicKey": {"hint": hint},
                "tlogEntries": [],
                "timestampVerificationData": {"rfc3161Timestamps": []},
            },
            "dsseEnvelope": {
                "payload": b64(rd(payload)),
                "payloadType": ptype,
                "signatures": [{"sig": b64(rd(sig)), "keyid": keyid}],
            },
        })
    elif cmd in ("tamper-payload", "add-signature"):
        src, out = rest
        doc = json.loads(rd(src))
        env = doc.get("dsseEnvelope", doc)
        if cmd == "tamper-payload":
            body = bytearray(base64.b64decode(env["payload"]))
            body[len(body) // 2] ^= 0x01
            env["payload"] = b64(bytes(body))
        else:
            env["signatures"].append(dict(env["signatures"][0], keyid="second"))
        wr_json(out, doc)
    elif cmd == "statement":
        out, *files = rest
        flags = {f for f in files if f.startswith("--")}
        files = [f for f in files if not f.startswith("--")]
        subj = []
        for f in files:
            d = {"name": f.rsplit("/", 1)[-1]}
            if "--no-digest" not in flags:
                d["digest"] = {"sha256": hashlib.sha256(rd(f)).hexdigest()}
            subj.append(d)
        st = {
            "_type": "https://in-toto.io/Statement/v0.9" if "--bad-type" in flags
            else "https://in-toto.io/Statement/v1",
            "subject": subj,
            "predicateType": "https://slsa.dev/provenance/v1",
            "predicate": {"buildDefinition": {"buildType": "https://example.com/selftest"}},
        }
        if "--no-subject" in flags:
            del st["subject"]
        wr_json(out, st)
    else:
        sys.exit(f"unknown command {cmd}")


if __name__ == "__main__":
    main(sys.argv[1:])
