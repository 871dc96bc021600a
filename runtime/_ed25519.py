"""Ed25519 signature verification through the OpenSSL libcrypto this Python already runs.

Why not the ``cryptography`` package: on a device it would add ~4.6 MB (compressed) to
an executable already at its size limit, to do one verification per start. CPython's
``hashlib`` is linked against OpenSSL (1.1.1 or newer has Ed25519), and a frozen
executable ships that very library next to ``_hashlib``; so the verifier resolves the
EVP functions through ``_hashlib``'s own dependency tree (``dlsym`` on its handle), or,
failing that, from the ``libcrypto`` mapped into this process (``/proc/self/maps``).
Either way it is the exact copy hashlib uses, never another one found on a search path.

Verification only handles public data (key, signature, message), so timing leaks do
not matter here; correctness rests on OpenSSL's implementation (RFC 8032, strict
decoding), which the tests cross-check against signatures made by ``cryptography``.
"""

from __future__ import annotations

import ctypes
import functools
from pathlib import Path
from typing import Any

__all__ = ["PUBLIC_KEY_BYTES", "SIGNATURE_BYTES", "available", "verify"]

PUBLIC_KEY_BYTES = 32
SIGNATURE_BYTES = 64
_EVP_PKEY_ED25519 = 1087  # NID_ED25519, stable across OpenSSL 1.1.1 and 3.x
_P = ctypes.c_void_p
_SIGNATURES: dict[str, tuple[Any, list[Any]]] = {
    "EVP_PKEY_new_raw_public_key": (_P, [ctypes.c_int, _P, ctypes.c_char_p, ctypes.c_size_t]),
    "EVP_PKEY_free": (None, [_P]),
    "EVP_MD_CTX_new": (_P, []),
    "EVP_MD_CTX_free": (None, [_P]),
    "EVP_DigestVerifyInit": (ctypes.c_int, [_P, _P, _P, _P, _P]),
    "EVP_DigestVerify": (ctypes.c_int, [_P, ctypes.c_char_p, ctypes.c_size_t, ctypes.c_char_p, ctypes.c_size_t]),
    "ERR_clear_error": (None, []),
}


def _bind(lib: ctypes.CDLL) -> ctypes.CDLL | None:
    try:
        for name, (restype, argtypes) in _SIGNATURES.items():
            fn = getattr(lib, name)
            fn.restype, fn.argtypes = restype, argtypes
    except AttributeError:
        return None
    return lib


def _mapped_libcrypto() -> str | None:
    """The path of the libcrypto mapped into this process (Linux), if any."""
    try:
        with open("/proc/self/maps", encoding="utf-8", errors="replace") as fh:
            for line in fh:
                path = line.rstrip("\n").split(maxsplit=5)[-1]
                if Path(path).name.startswith("libcrypto"):
                    return path
    except OSError:
        pass
    return None


@functools.lru_cache(maxsize=1)
def _libcrypto() -> ctypes.CDLL | None:
    try:
        import _hashlib  # loads libcrypto, if this Python has OpenSSL at all
    except ImportError:
        return None
    candidates = [getattr(_hashlib, "__file__", None), _mapped_libcrypto()]
    for path in candidates:
        if not path:
            continue
        try:
            lib = _bind(ctypes.CDLL(path))
        except OSError:
            continue
        if lib is not None:
            return lib
    return None


def available() -> bool:
    """Whether this process can verify Ed25519 signatures (OpenSSL >= 1.1.1 loaded)."""
    return _libcrypto() is not None


def verify(public_key: bytes, signature: bytes, message: bytes) -> bool:
    """True when ``signature`` is ``public_key``'s Ed25519 signature of ``message``.

    Raises ``RuntimeError`` when no usable libcrypto is loaded (the caller turns that
    into a refusal: a signature that cannot be checked is not accepted).
    """
    if len(public_key) != PUBLIC_KEY_BYTES or len(signature) != SIGNATURE_BYTES:
        return False
    lib = _libcrypto()
    if lib is None:
        raise RuntimeError("no OpenSSL libcrypto with Ed25519 (1.1.1 or newer) is loaded in this Python")
    pkey = lib.EVP_PKEY_new_raw_public_key(_EVP_PKEY_ED25519, None, public_key, len(public_key))
    if not pkey:
        lib.ERR_clear_error()
        return False
    ctx = lib.EVP_MD_CTX_new()
    try:
        if not ctx or lib.EVP_DigestVerifyInit(ctx, None, None, None, pkey) != 1:
            raise RuntimeError("OpenSSL could not set up an Ed25519 verification")
        return bool(lib.EVP_DigestVerify(ctx, signature, len(signature), message, len(message)) == 1)
    finally:
        if ctx:
            lib.EVP_MD_CTX_free(ctx)
        lib.EVP_PKEY_free(pkey)
        lib.ERR_clear_error()  # leave OpenSSL's error queue as hashlib expects it: empty
