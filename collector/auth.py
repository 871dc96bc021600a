"""Device tokens: shown once, stored only as a hash, compared in constant time.

A token is 32 random bytes (256 bits) from :mod:`secrets`, so a single unsalted
sha256 is enough to make the stored value useless to a thief (no dictionary to try);
a slow password hash would only cost every upload CPU for nothing.
"""

from __future__ import annotations

import hashlib
import hmac
import re
import secrets

__all__ = ["TOKEN_PREFIX", "new_token", "hash_token", "token_matches", "bearer_token", "check_device_name"]

TOKEN_PREFIX = "mlpk_"
_DEVICE_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$")


def new_token() -> str:
    """A fresh high-entropy device token (printed once by ``add-device``)."""
    return TOKEN_PREFIX + secrets.token_urlsafe(32)


def hash_token(token: str) -> str:
    """What the database keeps instead of the token."""
    return hashlib.sha256(token.encode("utf-8")).hexdigest()


def token_matches(token_hash: str, stored_hash: str) -> bool:
    """Constant-time comparison of two token hashes."""
    return hmac.compare_digest(token_hash.encode("ascii"), stored_hash.encode("ascii"))


def bearer_token(header: str | None) -> str | None:
    """The token of an ``Authorization: Bearer <token>`` header, or ``None``."""
    if not header:
        return None
    scheme, _, value = header.partition(" ")
    value = value.strip()
    if scheme.lower() != "bearer" or not value or len(value) > 512:
        return None
    return value


def check_device_name(name: str) -> str:
    """Device names appear in URLs and labels: letters, digits, ``._-``, up to 128 chars."""
    if not _DEVICE_NAME.match(name):
        raise ValueError(
            f"device name {name!r} is not allowed: use letters, digits, '.', '_' or '-' (max 128), starting with a letter or digit"
        )
    return name
