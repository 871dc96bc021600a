"""The device's Ed25519 verifier (OpenSSL through ctypes) against the ``cryptography`` library."""

from __future__ import annotations

import subprocess
import sys
import textwrap

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from mlpack_edge.runtime import _ed25519

# RFC 8032, section 7.1, TEST 2 (one-byte message 0x72).
RFC_PUBLIC = bytes.fromhex("3d4017c3e843895a92b70aa74d1b7ebc9c982ccf2ec4968cc0cd55f12af4660c")
RFC_MESSAGE = bytes.fromhex("72")
RFC_SIGNATURE = bytes.fromhex(
    "92a009a9f0d4cab8720e820b5f642540a2b27b5416503f8fb3762223ebdb69da"
    "085ac1e43e15996e458f3613d0f11d8c387b2eaeb4302aeeb00d291612bb0c00"
)


def _raw(key: Ed25519PrivateKey) -> bytes:
    return key.public_key().public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)


def _flip(data: bytes, bit: int) -> bytes:
    """``data`` with one bit inverted (negative ``bit`` counts from the end)."""
    out = bytearray(data)
    bit %= len(data) * 8
    out[bit // 8] ^= 1 << (bit % 8)
    return bytes(out)


@pytest.fixture(scope="module")
def signed() -> tuple[bytes, bytes, bytes]:
    key = Ed25519PrivateKey.from_private_bytes(bytes(range(32)))
    message = b'{"files": {"model.onnx": "ab12"}, "name": "demo"}\n' * 40
    return _raw(key), key.sign(message), message


def test_the_rfc_8032_vector_verifies() -> None:
    assert _ed25519.available()
    assert _ed25519.verify(RFC_PUBLIC, RFC_SIGNATURE, RFC_MESSAGE)
    assert not _ed25519.verify(RFC_PUBLIC, RFC_SIGNATURE, b"\x73")


def test_a_signature_by_cryptography_verifies(signed: tuple[bytes, bytes, bytes]) -> None:
    public, signature, message = signed
    assert _ed25519.verify(public, signature, message)
    assert _ed25519.verify(public, signature, message)  # twice: no state left behind in OpenSSL


@pytest.mark.parametrize("bit", [0, 7, 100, 255, 256, 300, 511])
def test_a_flipped_bit_in_the_signature_is_refused(signed: tuple[bytes, bytes, bytes], bit: int) -> None:
    public, signature, message = signed
    assert not _ed25519.verify(public, _flip(signature, bit), message)


@pytest.mark.parametrize("bit", [0, 9, 800, -1])
def test_a_flipped_bit_in_the_message_is_refused(signed: tuple[bytes, bytes, bytes], bit: int) -> None:
    public, signature, message = signed
    assert not _ed25519.verify(public, signature, _flip(message, bit))


def test_another_key_or_a_damaged_key_is_refused(signed: tuple[bytes, bytes, bytes]) -> None:
    public, signature, message = signed
    other = _raw(Ed25519PrivateKey.generate())
    assert not _ed25519.verify(other, signature, message)
    assert not _ed25519.verify(_flip(public, 3), signature, message)


def test_wrong_lengths_are_refused_without_calling_openssl(signed: tuple[bytes, bytes, bytes]) -> None:
    public, signature, message = signed
    assert not _ed25519.verify(public[:31], signature, message)
    assert not _ed25519.verify(public, signature[:63], message)
    assert not _ed25519.verify(public, signature + b"\x00", message)


def test_verdicts_match_cryptography_on_random_cases() -> None:
    """The two implementations agree case by case, valid or not."""
    rng = __import__("random").Random(7)
    for i in range(60):
        key = Ed25519PrivateKey.from_private_bytes(rng.randbytes(32))
        message = rng.randbytes(rng.randrange(0, 300))
        signature = key.sign(message)
        public = _raw(key)
        if i % 3 == 1:
            signature = _flip(signature, rng.randrange(512))
        elif i % 3 == 2 and message:
            message = _flip(message, rng.randrange(len(message) * 8))
        try:
            key.public_key().verify(signature, message)
            expected = True
        except Exception:
            expected = False
        assert _ed25519.verify(public, signature, message) is expected, i


def test_verification_needs_no_cryptography_package() -> None:
    """A device has no ``cryptography``: the verifier works with it blocked."""
    probe = textwrap.dedent(
        f"""
        import importlib.abc, sys

        class Block(importlib.abc.MetaPathFinder):
            def find_spec(self, name, path=None, target=None):
                if name == "cryptography" or name.startswith("cryptography."):
                    raise ImportError("blocked on a device: " + name)

        sys.meta_path.insert(0, Block())
        from mlpack_edge.runtime import _ed25519
        print(_ed25519.verify({RFC_PUBLIC!r}, {RFC_SIGNATURE!r}, {RFC_MESSAGE!r}))
        print(sorted(m for m in sys.modules if m.startswith("cryptography")))
        """
    )
    proc = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.split("\n")[:2] == ["True", "[]"]
