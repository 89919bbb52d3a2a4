"""Test-only KMS emulator: moto's server with two known gaps patched.

moto (up to at least 5.2.6) has two gaps that matter to Stella's KMS backend:
  1. Sign ignores MessageType=DIGEST: it signs SHA-256 *of* the digest, so a correct
     client gets signatures that do not verify;
  2. there are no ECC_NIST_EDWARDS25519 keys.
This file patches both, in memory, before the server starts (the product never sees a
patch). Every signature the tests get from here is also verified independently by
`cryptography`/openssl in the tests, so a fault in this emulator cannot hide one of ours.

Usage:
  moto_kms.py serve [--throttle-first N]   start on 127.0.0.1:<free port>, print the port
  moto_kms.py selftest                     check the patches in process (mock_aws + boto3)
"""

import base64
import sys
import threading

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519
from cryptography.hazmat.primitives.asymmetric.utils import Prehashed

import moto.kms.models as kms_models
import moto.kms.responses as kms_responses
import moto.kms.utils as kms_utils
from moto.core.exceptions import JsonRESTError
from moto.kms.exceptions import ValidationException

ED25519_SPEC = "ECC_NIST_EDWARDS25519"
ED25519_ALGS = ["ED25519_SHA_512", "ED25519_PH_SHA_512"]

_request = threading.local()


class Ed25519Key(kms_utils.AbstractPrivateKey):
    def __init__(self):
        self.private_key = ed25519.Ed25519PrivateKey.generate()

    def sign(self, message, signing_algorithm):
        if signing_algorithm != "ED25519_SHA_512":
            raise ValidationException(f"{signing_algorithm} is not emulated here")
        if getattr(_request, "message_type", "RAW") != "RAW":
            raise ValidationException("ED25519_SHA_512 requires MessageType RAW")
        return self.private_key.sign(message)

    def verify(self, message, signature, signing_algorithm):
        try:
            self.private_key.public_key().verify(signature, message)
            return True
        except InvalidSignature:
            return False

    def public_key(self):
        return self.private_key.public_key().public_bytes(
            encoding=serialization.Encoding.DER,
            format=serialization.PublicFormat.SubjectPublicKeyInfo,
        )


def apply_patches(throttle_first=0):
    # Gap 2: Ed25519 key spec, key generation and signing algorithms.
    original_specs = kms_utils.KeySpec.key_specs.__func__

    def key_specs(cls):
        return sorted(original_specs(cls) + [ED25519_SPEC])

    kms_utils.KeySpec.key_specs = classmethod(key_specs)
    original_ecc = kms_utils.KeySpec.ecc_key_specs.__func__
    kms_utils.KeySpec.ecc_key_specs = classmethod(
        lambda cls: [s for s in original_ecc(cls) if s != ED25519_SPEC]
    )
    original_generate = kms_utils.generate_private_key

    def generate_private_key(key_spec):
        if key_spec == ED25519_SPEC:
            return Ed25519Key()
        return original_generate(key_spec)

    kms_utils.generate_private_key = generate_private_key
    kms_models.generate_private_key = generate_private_key
    original_algs = kms_models.Key.signing_algorithms

    def signing_algorithms(self):
        if self.key_spec == ED25519_SPEC and self.key_usage == "SIGN_VERIFY":
            return list(ED25519_ALGS)
        return original_algs.fget(self)

    kms_models.Key.signing_algorithms = property(signing_algorithms)

    # Gap 1: MessageType=DIGEST signs the given digest (Prehashed), as KMS does.
    original_ecdsa_sign = kms_utils.ECDSAPrivateKey.sign

    def ecdsa_sign(self, message, signing_algorithm):
        if getattr(_request, "message_type", "RAW") != "DIGEST":
            return original_ecdsa_sign(self, message, signing_algorithm)
        kms_utils.validate_signing_algorithm(signing_algorithm, self.valid_signing_algorithms)
        algorithm = {
            "ECDSA_SHA_256": hashes.SHA256(),
            "ECDSA_SHA_384": hashes.SHA384(),
            "ECDSA_SHA_512": hashes.SHA512(),
        }[signing_algorithm]
        if len(message) != algorithm.digest_size:
            raise ValidationException("Digest is invalid length for algorithm " + signing_algorithm)
        return self.private_key.sign(message, ec.ECDSA(Prehashed(algorithm)))

    kms_utils.ECDSAPrivateKey.sign = ecdsa_sign

    original_response_sign = kms_responses.KmsResponse.sign
    throttle = {"left": throttle_first, "lock": threading.Lock()}

    def response_sign(self):
        with throttle["lock"]:
            if throttle["left"] > 0:
                throttle["left"] -= 1
                raise JsonRESTError("ThrottlingException", "Rate exceeded")
        _request.message_type = self._get_param("MessageType") or "RAW"
        try:
            return original_response_sign(self)
        finally:
            _request.message_type = "RAW"

    kms_responses.KmsResponse.sign = response_sign


def serve(throttle_first):
    apply_patches(throttle_first)
    from werkzeug.serving import make_server
    from moto.moto_server.werkzeug_app import (
        DomainDispatcherApplication,
        MotoRequestHandler,
        create_backend_app,
    )

    server = make_server(
        "127.0.0.1",
        0,
        DomainDispatcherApplication(create_backend_app),
        True,
        request_handler=MotoRequestHandler,
    )
    print(server.server_address[1], flush=True)
    server.serve_forever()


def selftest():
    import hashlib
    import os

    os.environ.setdefault("AWS_ACCESS_KEY_ID", "testing")
    os.environ.setdefault("AWS_SECRET_ACCESS_KEY", "testing")
    os.environ.setdefault("AWS_DEFAULT_REGION", "us-east-1")
    import boto3
    from moto import mock_aws

    apply_patches()
    message = b"stella moto selftest"
    with mock_aws():
        kms = boto3.client("kms", region_name="us-east-1")
        # DIGEST: the signature is over the message whose SHA-256 we sent.
        p256 = kms.create_key(KeyUsage="SIGN_VERIFY", KeySpec="ECC_NIST_P256")["KeyMetadata"]["KeyId"]
        pub = serialization.load_der_public_key(kms.get_public_key(KeyId=p256)["PublicKey"])
        sig = kms.sign(KeyId=p256, Message=hashlib.sha256(message).digest(),
                       MessageType="DIGEST", SigningAlgorithm="ECDSA_SHA_256")["Signature"]
        pub.verify(sig, message, ec.ECDSA(hashes.SHA256()))
        # RAW still hashes once.
        sig = kms.sign(KeyId=p256, Message=message, MessageType="RAW",
                       SigningAlgorithm="ECDSA_SHA_256")["Signature"]
        pub.verify(sig, message, ec.ECDSA(hashes.SHA256()))
        # A digest of the wrong length is refused.
        try:
            kms.sign(KeyId=p256, Message=b"short", MessageType="DIGEST",
                     SigningAlgorithm="ECDSA_SHA_256")
            raise AssertionError("short digest accepted")
        except kms.exceptions.ClientError as e:
            assert "ValidationException" in str(e), e
        # Ed25519 keys: pure Ed25519 over the message, RAW only.
        ed = kms.create_key(KeyUsage="SIGN_VERIFY", KeySpec=ED25519_SPEC)["KeyMetadata"]["KeyId"]
        got = kms.get_public_key(KeyId=ed)
        assert got["SigningAlgorithms"] == ED25519_ALGS, got["SigningAlgorithms"]
        edpub = serialization.load_der_public_key(got["PublicKey"])
        assert isinstance(edpub, ed25519.Ed25519PublicKey)
        sig = kms.sign(KeyId=ed, Message=message, MessageType="RAW",
                       SigningAlgorithm="ED25519_SHA_512")["Signature"]
        edpub.verify(sig, message)
        try:
            edpub.verify(sig, message + b"!")
            raise AssertionError("Ed25519 signature verified over other bytes")
        except InvalidSignature:
            pass
        try:
            kms.sign(KeyId=ed, Message=hashlib.sha512(message).digest(), MessageType="DIGEST",
                     SigningAlgorithm="ED25519_SHA_512")
            raise AssertionError("DIGEST accepted for ED25519_SHA_512")
        except kms.exceptions.ClientError as e:
            assert "ValidationException" in str(e), e
    print("selftest ok")


if __name__ == "__main__":
    if len(sys.argv) >= 2 and sys.argv[1] == "serve":
        n = 0
        if len(sys.argv) == 4 and sys.argv[2] == "--throttle-first":
            n = int(sys.argv[3])
        serve(n)
    elif sys.argv[1:] == ["selftest"]:
        selftest()
    else:
        print(__doc__, file=sys.stderr)
        sys.exit(2)
