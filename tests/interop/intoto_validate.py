#!/usr/bin/env python3
"""Validate an in-toto Statement v1 with the in-toto-attestation package.

usage: intoto_validate.py STATEMENT_JSON

Parses the JSON into in_toto_attestation.v1.statement_pb2.Statement with
google.protobuf.json_format.Parse (strict: unknown fields are rejected, as
the reference implementation does) and runs the package's
Statement.validate(): _type must be https://in-toto.io/Statement/v1, at least
one subject, each subject has name/uri/digest and a non-empty digest,
predicateType set, predicate a non-empty object.

exit 0: valid (prints predicateType and subject count); 1: invalid; 2: usage.
"""

from __future__ import annotations

import sys

from _common import EXIT_OK, EXIT_USAGE, ArgParser, UsageError, fail, read_bytes

PROG = "intoto_validate"


def main(argv: list[str]) -> int:
    p = ArgParser(prog=PROG, description="Validate an in-toto Statement v1.")
    p.add_argument("statement", metavar="STATEMENT_JSON")
    a = p.parse_args(argv)
    try:
        raw = read_bytes(a.statement)
    except UsageError as e:
        fail(PROG, str(e), EXIT_USAGE)

    from google.protobuf import json_format
    from in_toto_attestation.v1 import statement_pb2
    from in_toto_attestation.v1.statement import Statement

    try:
        pb = json_format.Parse(raw.decode("utf-8"), statement_pb2.Statement())
    except Exception as e:  # noqa: BLE001
        fail(PROG, f"not an in-toto Statement v1 (protobuf parse): {e}")
    try:
        Statement.copy_from_pb(pb).validate()
    except ValueError as e:
        fail(PROG, f"in-toto Statement v1 invalid: {e}")

    print(
        f"OK: in-toto Statement v1 valid: predicateType={pb.predicate_type} "
        f"subjects={len(pb.subject)}"
    )
    return EXIT_OK


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
