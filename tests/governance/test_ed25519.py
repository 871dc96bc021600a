"""The device's pure-Python Ed25519 verifier against RFC 8032 and the ``cryptography`` library (OpenSSL)."""

from __future__ import annotations

import hashlib
import random
import subprocess
import sys
import textwrap

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from mlpack_edge.runtime import _ed25519

# RFC 8032, section 7.1: (name, secret key, public key, message, signature), all five.
# test_the_rfc_vectors_are_what_cryptography_makes re-derives the key and the (deterministic)
# signature from each secret key, so a mistyped digit cannot pass unnoticed.
RFC_8032_7_1: list[tuple[str, bytes, bytes, bytes, bytes]] = [
    (
        "TEST 1",
        bytes.fromhex("9d61b19deffd5a60ba844af492ec2cc44449c5697b326919703bac031cae7f60"),
        bytes.fromhex("d75a980182b10ab7d54bfed3c964073a0ee172f3daa62325af021a68f707511a"),
        b"",
        bytes.fromhex(
            "e5564300c360ac729086e2cc806e828a84877f1eb8e5d974d873e06522490155"
            "5fb8821590a33bacc61e39701cf9b46bd25bf5f0595bbe24655141438e7a100b"
        ),
    ),
    (
        "TEST 2",
        bytes.fromhex("4ccd089b28ff96da9db6c346ec114e0f5b8a319f35aba624da8cf6ed4fb8a6fb"),
        bytes.fromhex("3d4017c3e843895a92b70aa74d1b7ebc9c982ccf2ec4968cc0cd55f12af4660c"),
        bytes.fromhex("72"),
        bytes.fromhex(
            "92a009a9f0d4cab8720e820b5f642540a2b27b5416503f8fb3762223ebdb69da"
            "085ac1e43e15996e458f3613d0f11d8c387b2eaeb4302aeeb00d291612bb0c00"
        ),
    ),
    (
        "TEST 3",
        bytes.fromhex("c5aa8df43f9f837bedb7442f31dcb7b166d38535076f094b85ce3a2e0b4458f7"),
        bytes.fromhex("fc51cd8e6218a1a38da47ed00230f0580816ed13ba3303ac5deb911548908025"),
        bytes.fromhex("af82"),
        bytes.fromhex(
            "6291d657deec24024827e69c3abe01a30ce548a284743a445e3680d7db5ac3ac"
            "18ff9b538d16f290ae67f760984dc6594a7c15e9716ed28dc027beceea1ec40a"
        ),
    ),
    (
        "TEST 1024",
        bytes.fromhex("f5e5767cf153319517630f226876b86c8160cc583bc013744c6bf255f5cc0ee5"),
        bytes.fromhex("278117fc144c72340f67d0f2316e8386ceffbf2b2428c9c51fef7c597f1d426e"),
        bytes.fromhex(
            "08b8b2b733424243760fe426a4b54908632110a66c2f6591eabd3345e3e4eb98"
            "fa6e264bf09efe12ee50f8f54e9f77b1e355f6c50544e23fb1433ddf73be84d8"
            "79de7c0046dc4996d9e773f4bc9efe5738829adb26c81b37c93a1b270b20329d"
            "658675fc6ea534e0810a4432826bf58c941efb65d57a338bbd2e26640f89ffbc"
            "1a858efcb8550ee3a5e1998bd177e93a7363c344fe6b199ee5d02e82d522c4fe"
            "ba15452f80288a821a579116ec6dad2b3b310da903401aa62100ab5d1a36553e"
            "06203b33890cc9b832f79ef80560ccb9a39ce767967ed628c6ad573cb116dbef"
            "efd75499da96bd68a8a97b928a8bbc103b6621fcde2beca1231d206be6cd9ec7"
            "aff6f6c94fcd7204ed3455c68c83f4a41da4af2b74ef5c53f1d8ac70bdcb7ed1"
            "85ce81bd84359d44254d95629e9855a94a7c1958d1f8ada5d0532ed8a5aa3fb2"
            "d17ba70eb6248e594e1a2297acbbb39d502f1a8c6eb6f1ce22b3de1a1f40cc24"
            "554119a831a9aad6079cad88425de6bde1a9187ebb6092cf67bf2b13fd65f270"
            "88d78b7e883c8759d2c4f5c65adb7553878ad575f9fad878e80a0c9ba63bcbcc"
            "2732e69485bbc9c90bfbd62481d9089beccf80cfe2df16a2cf65bd92dd597b07"
            "07e0917af48bbb75fed413d238f5555a7a569d80c3414a8d0859dc65a46128ba"
            "b27af87a71314f318c782b23ebfe808b82b0ce26401d2e22f04d83d1255dc51a"
            "ddd3b75a2b1ae0784504df543af8969be3ea7082ff7fc9888c144da2af58429e"
            "c96031dbcad3dad9af0dcbaaaf268cb8fcffead94f3c7ca495e056a9b47acdb7"
            "51fb73e666c6c655ade8297297d07ad1ba5e43f1bca32301651339e22904cc8c"
            "42f58c30c04aafdb038dda0847dd988dcda6f3bfd15c4b4c4525004aa06eeff8"
            "ca61783aacec57fb3d1f92b0fe2fd1a85f6724517b65e614ad6808d6f6ee34df"
            "f7310fdc82aebfd904b01e1dc54b2927094b2db68d6f903b68401adebf5a7e08"
            "d78ff4ef5d63653a65040cf9bfd4aca7984a74d37145986780fc0b16ac451649"
            "de6188a7dbdf191f64b5fc5e2ab47b57f7f7276cd419c17a3ca8e1b939ae49e4"
            "88acba6b965610b5480109c8b17b80e1b7b750dfc7598d5d5011fd2dcc5600a3"
            "2ef5b52a1ecc820e308aa342721aac0943bf6686b64b2579376504ccc493d97e"
            "6aed3fb0f9cd71a43dd497f01f17c0e2cb3797aa2a2f256656168e6c496afc5f"
            "b93246f6b1116398a346f1a641f3b041e989f7914f90cc2c7fff357876e506b5"
            "0d334ba77c225bc307ba537152f3f1610e4eafe595f6d9d90d11faa933a15ef1"
            "369546868a7f3a45a96768d40fd9d03412c091c6315cf4fde7cb68606937380d"
            "b2eaaa707b4c4185c32eddcdd306705e4dc1ffc872eeee475a64dfac86aba41c"
            "0618983f8741c5ef68d3a101e8a3b8cac60c905c15fc910840b94c00a0b9d0"
        ),
        bytes.fromhex(
            "0aab4c900501b3e24d7cdf4663326a3a87df5e4843b2cbdb67cbf6e460fec350"
            "aa5371b1508f9f4528ecea23c436d94b5e8fcd4f681e30a6ac00a9704a188a03"
        ),
    ),
    (
        "TEST SHA(abc)",
        bytes.fromhex("833fe62409237b9d62ec77587520911e9a759cec1d19755b7da901b96dca3d42"),
        bytes.fromhex("ec172b93ad5e563bf4932c70e1245034c35467ef2efd4d64ebf819683467e2bf"),
        hashlib.sha512(b"abc").digest(),
        bytes.fromhex(
            "dc2a4459e7369633a52b1bf277839a00201009a3efbf3ecb69bea2186c26b589"
            "09351fc9ac90b3ecfdfbc7c66431e0303dca179c138ac17ad9bef1177331a704"
        ),
    ),
]
RFC_IDS = [v[0] for v in RFC_8032_7_1]
_, _, RFC_PUBLIC, RFC_MESSAGE, RFC_SIGNATURE = RFC_8032_7_1[1]  # TEST 2
_P = 2**255 - 19
_L = 2**252 + 27742317777372353535851937790883648493


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


@pytest.mark.parametrize("vector", RFC_8032_7_1, ids=RFC_IDS)
def test_the_rfc_vectors_are_what_cryptography_makes(vector: tuple[str, bytes, bytes, bytes, bytes]) -> None:
    """The table is checked too: key and (deterministic) signature re-derived from the secret."""
    _, secret, public, message, signature = vector
    key = Ed25519PrivateKey.from_private_bytes(secret)
    assert (_raw(key), key.sign(message)) == (public, signature)


@pytest.mark.parametrize("vector", RFC_8032_7_1, ids=RFC_IDS)
def test_the_rfc_8032_vectors_verify(vector: tuple[str, bytes, bytes, bytes, bytes]) -> None:
    _, _, public, message, signature = vector
    assert _ed25519.verify(public, signature, message) is True
    assert _ed25519.verify(public, signature, message + b"\x00") is False
    assert _ed25519.verify(public, _flip(signature, 3), message) is False


def test_a_signature_by_cryptography_verifies(signed: tuple[bytes, bytes, bytes]) -> None:
    public, signature, message = signed
    assert _ed25519.verify(public, signature, message)
    assert _ed25519.verify(public, signature, message)  # twice: no state left behind


def test_the_base_point_table_is_the_odd_multiples_of_b() -> None:
    """The precomputed table, recomputed here with plain affine Edwards arithmetic."""
    d = -121665 * pow(121666, -1, _P) % _P

    def add(p: tuple[int, int], q: tuple[int, int]) -> tuple[int, int]:
        (x1, y1), (x2, y2) = p, q
        t = d * x1 * x2 * y1 * y2 % _P
        return (x1 * y2 + x2 * y1) * pow(1 + t, -1, _P) % _P, (y1 * y2 + x1 * x2) * pow(1 - t, -1, _P) % _P

    y = 4 * pow(5, -1, _P) % _P
    x2 = (y * y - 1) * pow(d * y * y + 1, -1, _P) % _P
    x = pow(x2, (_P + 3) // 8, _P)
    if (x * x - x2) % _P:
        x = x * pow(2, (_P - 1) // 4, _P) % _P
    base = (x if x % 2 == 0 else _P - x, y)  # B has an even x (RFC 8032 5.1)
    twice, point = add(base, base), base
    assert len(_ed25519._B_ODD) == 1 << (_ed25519._W_B - 2)
    for entry in _ed25519._B_ODD:
        x, y = point
        assert entry == ((y - x) % _P, (y + x) % _P, 2 * d * x * y % _P)
        point = add(point, twice)


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


def test_wrong_lengths_are_refused(signed: tuple[bytes, bytes, bytes]) -> None:
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


def _cryptography_verdict(public: bytes, signature: bytes, message: bytes) -> bool:
    try:
        Ed25519PublicKey.from_public_bytes(public).verify(signature, message)
    except Exception:  # InvalidSignature, or a key OpenSSL does not decode
        return False
    return True


def test_verdicts_match_cryptography_on_hundreds_of_keys_and_messages() -> None:
    """Valid and damaged signatures, empty to long messages: the same verdict every time."""
    rng = random.Random(2026)
    lengths = [0, 1, 31, 32, 64, 111, 112, 127, 128, 129, 1000, 4096, 65537]
    verdicts = []
    for i in range(300):
        key = Ed25519PrivateKey.from_private_bytes(rng.randbytes(32))
        message = rng.randbytes(lengths[i] if i < len(lengths) else rng.randrange(0, 2000))
        public, signature = _raw(key), key.sign(message)
        kind = i % 5
        if kind == 1:
            signature = _flip(signature, rng.randrange(256))  # in R
        elif kind == 2:
            signature = _flip(signature, 256 + rng.randrange(256))  # in S
        elif kind == 3:
            public = _flip(public, rng.randrange(256))
        elif kind == 4 and message:
            message = _flip(message, rng.randrange(len(message) * 8))
        expected = _cryptography_verdict(public, signature, message)
        assert _ed25519.verify(public, signature, message) is expected, (i, kind)
        verdicts.append(expected)
    assert verdicts.count(True) >= 60  # every valid case at least, and not everything refused
    assert verdicts.count(False) >= 180


def test_a_non_canonical_s_is_refused(signed: tuple[bytes, bytes, bytes]) -> None:
    """S + L is the same scalar mod L: accepting it would make signatures malleable."""
    public, signature, message = signed
    s = int.from_bytes(signature[32:], "little")
    for bad in (s + _L, _L, 2**256 - 1):
        forged = signature[:32] + bad.to_bytes(32, "little")
        assert _cryptography_verdict(public, forged, message) is False
        assert _ed25519.verify(public, forged, message) is False


def _not_a_point() -> bytes:
    """The smallest y with no x on the curve (y = 2), encoded."""
    return (2).to_bytes(32, "little")


def test_an_r_or_a_key_that_is_not_a_curve_point_is_refused(signed: tuple[bytes, bytes, bytes]) -> None:
    public, signature, message = signed
    assert _ed25519._decode(_not_a_point()) is None
    assert _ed25519.verify(public, _not_a_point() + signature[32:], message) is False
    assert _ed25519.verify(_not_a_point(), signature, message) is False
    assert _cryptography_verdict(_not_a_point(), signature, message) is False


def test_a_key_with_a_non_canonical_encoding_does_not_decode() -> None:
    """RFC 8032 5.1.3: y >= p and a negative zero x are refused (OpenSSL reduces y instead)."""
    assert _ed25519._decode(_P.to_bytes(32, "little")) is None  # y = p: the spelling of y = 0
    assert _ed25519._decode((2**255 - 1).to_bytes(32, "little")) is None
    one = (1).to_bytes(32, "little")  # y = 1: the neutral point, x = 0
    assert _ed25519._decode(one) == (0, 1)
    assert _ed25519._decode(_flip(one, 255)) is None  # x = 0 with the sign bit set


@pytest.mark.parametrize("k", [0, 1, 2, 15, 16, 17, 2**252, _L - 1, 2**253 - 1, 2**255 + 12345])
def test_the_naf_digits_add_up_to_the_scalar(k: int) -> None:
    for width in (_ed25519._W_A, _ed25519._W_B):
        digits = _ed25519._naf(k, width)
        assert sum(d << i for i, d in enumerate(digits)) == k
        assert all(d % 2 == 1 and abs(d) < 1 << (width - 1) for d in digits if d)


def test_verification_loads_neither_openssl_nor_ctypes() -> None:
    """The point of the pure-Python verifier: memory and start-up of a signed device start."""
    probe = textwrap.dedent(
        f"""
        import sys
        from mlpack_edge.runtime import _ed25519
        print(_ed25519.verify({RFC_PUBLIC!r}, {RFC_SIGNATURE!r}, {RFC_MESSAGE!r}))
        print(sorted(m for m in ("_hashlib", "hashlib", "ctypes", "_ctypes", "_ssl") if m in sys.modules))
        """
    )
    proc = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.split("\n")[:2] == ["True", "[]"]


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
