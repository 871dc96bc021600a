"""mlpack_edge._digest: the same sha256 as hashlib, without loading OpenSSL for small inputs."""

from __future__ import annotations

import hashlib
import subprocess
import sys

import pytest

from mlpack_edge import _digest


@pytest.mark.parametrize("size", [0, 1, 63, 64, 65, 1000, _digest._OPENSSL_FROM - 1, _digest._OPENSSL_FROM, 3 << 20])
def test_same_digest_as_hashlib_on_both_sides_of_the_threshold(size: int) -> None:
    data = bytes(range(256)) * (size // 256) + bytes(size % 256)
    assert _digest.sha256_hex(data) == hashlib.sha256(data).hexdigest()


def test_small_inputs_do_not_load_openssl() -> None:
    probe = (
        "import sys\n"
        "from mlpack_edge._digest import sha256_hex\n"
        "small = sha256_hex(b'x' * 1000)\n"
        "before = '_hashlib' in sys.modules\n"
        "sha256_hex(b'x' * (2 << 20))\n"
        "print(small, before, '_hashlib' in sys.modules)\n"
    )
    proc = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.split() == [hashlib.sha256(b"x" * 1000).hexdigest(), "False", "True"]


@pytest.mark.parametrize("size", [0, 111, 112, 128, 5000])
def test_sha512_is_hashlibs_and_leaves_openssl_unloaded(size: int) -> None:
    data = bytes(range(256)) * (size // 256) + bytes(size % 256)
    assert _digest.sha512(data) == hashlib.sha512(data).digest()
    probe = "import sys\nfrom mlpack_edge._digest import sha512\nsha512(b'x')\nprint('_hashlib' in sys.modules)\n"
    proc = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.split() == ["False"]
