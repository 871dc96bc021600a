"""sha256/sha512 of small byte strings without loading OpenSSL (the device start-up path)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

__all__ = ["sha256_hex", "sha512"]


#: Inputs from this size on are hashed by OpenSSL (see :func:`sha256_hex`).
_OPENSSL_FROM = 1 << 20


def sha256_hex(data: bytes) -> str:
    """Hex sha256 of ``data``, loading OpenSSL only for large inputs.

    ``import hashlib`` loads libcrypto and sets up its digests: ~10 M instructions (~3 ms
    of a one-row ``predict``, callgrind) and ~3 MB of private memory in a frozen
    executable, which ships its own copy. A device start hashes a few small files (the
    manifest, the bundle's files for the integrity check); CPython's builtin sha256 gives
    the same digest at a quarter of OpenSSL's speed (295 vs 1,127 MB/s on this project's
    machine, SHA-NI), which costs less than loading OpenSSL below ~1 MB; from
    :data:`_OPENSSL_FROM` on, hashlib.
    """
    if len(data) < _OPENSSL_FROM:
        return _builtin()(data).hexdigest()
    import hashlib

    return hashlib.sha256(data).hexdigest()


def sha512(data: bytes) -> bytes:
    """Raw sha512 of ``data`` by CPython's builtin (Ed25519's hash of a manifest: a few KB)."""
    return _builtin_sha512()(data).digest()


_BUILTIN: Callable[[bytes], Any] | None = None
_BUILTIN_512: Callable[[bytes], Any] | None = None


def _builtin() -> Callable[[bytes], Any]:
    """CPython's own sha256 constructor, looked up once (hashlib's if this Python lacks it)."""
    global _BUILTIN
    if _BUILTIN is None:
        try:  # _sha2 from Python 3.12, _sha256 before
            from _sha2 import sha256  # type: ignore[import-not-found]
        except ImportError:
            try:
                from _sha256 import sha256  # type: ignore[import-not-found,no-redef]
            except ImportError:  # a Python built without its own sha256
                from hashlib import sha256  # type: ignore[assignment]
        _BUILTIN = sha256
    return _BUILTIN


def _builtin_sha512() -> Callable[[bytes], Any]:
    """CPython's own sha512 constructor, looked up once (hashlib's if this Python lacks it).

    Spelled out like :func:`_builtin`, not shared through ``__import__(name)``: PyInstaller
    collects ``_sha512`` (an extension module in ``lib-dynload``) only from a static import.
    """
    global _BUILTIN_512
    if _BUILTIN_512 is None:
        try:  # _sha2 from Python 3.12, _sha512 before
            from _sha2 import sha512  # type: ignore[import-not-found]
        except ImportError:
            try:
                from _sha512 import sha512  # type: ignore[import-not-found,no-redef]
            except ImportError:  # a Python built without its own sha512
                from hashlib import sha512  # type: ignore[assignment]
        _BUILTIN_512 = sha512
    return _BUILTIN_512
