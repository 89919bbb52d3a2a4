"""Small helpers shared by the Python interop peers (not a peer itself)."""

from __future__ import annotations

import argparse
import hashlib
import os
import sys
from typing import NoReturn

EXIT_OK = 0
EXIT_VERIFY_FAILED = 1
EXIT_USAGE = 2


class UsageError(Exception):
    """Bad command line or unreadable input: exit 2."""


class ArgParser(argparse.ArgumentParser):
    """argparse exits 2 on usage errors already; keep one message style."""

    def error(self, message: str) -> NoReturn:  # type: ignore[override]
        self.print_usage(sys.stderr)
        print(f"{self.prog}: usage error: {message}", file=sys.stderr)
        sys.exit(EXIT_USAGE)


def fail(prog: str, message: str, code: int = EXIT_VERIFY_FAILED) -> NoReturn:
    what = "usage error" if code == EXIT_USAGE else "FAILED"
    print(f"{prog}: {what}: {message}", file=sys.stderr)
    sys.exit(code)


def read_bytes(path: str) -> bytes:
    try:
        with open(path, "rb") as f:
            return f.read()
    except OSError as e:
        raise UsageError(f"cannot read {path}: {e.strerror or e}") from e


def write_bytes(path: str, data: bytes, private: bool = False) -> None:
    """Write a file; private keys (private=True) are created 0600, never world-readable."""
    try:
        if private:
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
            os.fchmod(fd, 0o600)
            with os.fdopen(fd, "wb") as f:
                f.write(data)
            return
        with open(path, "wb") as f:
            f.write(data)
    except OSError as e:
        raise UsageError(f"cannot write {path}: {e.strerror or e}") from e


def spki_der(public_key) -> bytes:
    from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

    return public_key.public_bytes(Encoding.DER, PublicFormat.SubjectPublicKeyInfo)


def spki_pem(public_key) -> bytes:
    from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

    return public_key.public_bytes(Encoding.PEM, PublicFormat.SubjectPublicKeyInfo)


def stella_keyid(public_key) -> str:
    """Stella's keyid convention: "sha256:" + hex(SHA-256(SPKI DER))."""
    return "sha256:" + hashlib.sha256(spki_der(public_key)).hexdigest()


def numbered(path: str, index: int, count: int) -> str:
    """PATH for a single item, PATH.1 .. PATH.K for several."""
    return path if count == 1 else f"{path}.{index + 1}"
