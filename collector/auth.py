"""Device credentials: tokens (shown once, stored only as a hash, compared in constant
time) and client certificates (mutual TLS, known by their SHA-256 fingerprint).

A token is 32 random bytes (256 bits) from :mod:`secrets`, so a single unsalted
sha256 is enough to make the stored value useless to a thief (no dictionary to try);
a slow password hash would only cost every upload CPU for nothing.

A fleet authenticates devices by ``token`` (the default), ``cert`` (the client
certificate presented in the TLS handshake, verified against ``--tls-client-ca`` and
registered to the device with ``add-device NAME --cert FILE``) or ``both`` (each must
name the same device). A certificate is pinned by the SHA-256 of its DER bytes, so a
second certificate the CA issues with the same subject is not accepted by accident.
"""

from __future__ import annotations

import hashlib
import hmac
import re
import secrets
import ssl
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from mlpack_edge.errors import CollectorError

__all__ = [
    "TOKEN_PREFIX",
    "DEVICE_AUTH",
    "new_token",
    "hash_token",
    "token_matches",
    "bearer_token",
    "check_device_name",
    "CertInfo",
    "read_cert",
    "peer_fingerprint",
]

#: How a fleet's devices prove who they are.
DEVICE_AUTH = ("token", "cert", "both")

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


@dataclass(frozen=True)
class CertInfo:
    fingerprint: str  # sha256 of the DER certificate, lowercase hex
    subject: str  # RFC 4514
    not_after: float  # epoch seconds


def read_cert(path: str | Path, now: float, option: str = "--cert") -> CertInfo:
    """The first certificate of a PEM (or DER) file; refuses an expired one."""
    from cryptography import x509  # workstation/collector only: the device never parses certificates

    try:
        data = Path(path).read_bytes()
    except OSError as exc:
        raise CollectorError(f"{option} {path}: cannot read ({exc.strerror or exc})") from None
    try:
        cert = x509.load_pem_x509_certificates(data)[0] if b"-----BEGIN" in data else x509.load_der_x509_certificate(data)
    except ValueError:
        raise CollectorError(f"{option} {path}: not a PEM or DER X.509 certificate") from None
    from cryptography.hazmat.primitives.serialization import Encoding

    not_after = cert.not_valid_after_utc.timestamp()
    subject = cert.subject.rfc4514_string() or "(empty subject)"
    if not_after < now:
        raise CollectorError(f"{option} {path}: certificate {subject} expired on {cert.not_valid_after_utc:%Y-%m-%d}")
    return CertInfo(hashlib.sha256(cert.public_bytes(Encoding.DER)).hexdigest(), subject, not_after)


def peer_fingerprint(scope: Mapping[str, Any]) -> str | None:
    """SHA-256 fingerprint of the client certificate of this request's TLS connection, if any.

    Read from the ASGI TLS extension (``scope["extensions"]["tls"]["client_cert_chain"]``,
    PEM, leaf first), which :mod:`mlpack_edge.collector.server` fills in for uvicorn.
    """
    tls = (scope.get("extensions") or {}).get("tls") or {}
    chain = tls.get("client_cert_chain") or ()
    if not chain:
        return None
    return hashlib.sha256(ssl.PEM_cert_to_DER_cert(chain[0])).hexdigest()
