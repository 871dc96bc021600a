"""Signing keys and bundle signatures, on the workstation.

``mlpack keys generate`` makes an Ed25519 key pair; ``mlpack build --sign-key KEY``
signs each bundle's ``manifest.json`` (which holds every file's sha256) into
``manifest.sig``. Devices verify with the public key only, in pure Python
(:mod:`mlpack_edge.runtime._ed25519`, cross-checked against ``cryptography`` in the tests),
so ``cryptography`` — a vetted implementation, used for generating and signing — stays on
the workstation.

Key files: the private key is unencrypted PKCS8 PEM written with mode 0600 and never
overwritten; a private key readable by group or others is refused when loaded (as ssh
does), since whoever can read it can sign models devices will run. The public key is
SubjectPublicKeyInfo PEM (0644), the file a device is told to trust. The private key
only ever produces a signature: nothing of it enters a bundle.
"""

from __future__ import annotations

import hashlib
import os
import re
import stat
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from mlpack_edge._fs import atomic_write_bytes
from mlpack_edge.errors import SigningKeyError
from mlpack_edge.runtime._trust import Signature, key_id, parse_public_key, public_key_pem

__all__ = [
    "DEFAULT_KEY_NAME",
    "PRIVATE_SUFFIX",
    "PUBLIC_SUFFIX",
    "KeyPair",
    "KeyInfo",
    "SigningKey",
    "generate_key",
    "load_signing_key",
    "describe_key",
]

DEFAULT_KEY_NAME = "mlpack-signing"
PRIVATE_SUFFIX = ".key"
PUBLIC_SUFFIX = ".pub"
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,99}$")


@dataclass(frozen=True)
class KeyPair:
    private: Path
    public: Path
    key_id: str


@dataclass(frozen=True)
class KeyInfo:
    path: Path
    kind: str  # "private" or "public"
    key_id: str
    fingerprint: str  # sha256 of the raw public key, hex


@dataclass(frozen=True)
class SigningKey:
    """A loaded private key: it signs manifests and tells its key id, nothing else."""

    key_id: str
    public_raw: bytes
    path: Path
    _key: Any = field(repr=False, compare=False)

    def sign_manifest(self, manifest_raw: bytes) -> bytes:
        """The bytes of ``manifest.sig`` for these ``manifest.json`` bytes (deterministic)."""
        return Signature(self.key_id, self.public_raw, self._key.sign(manifest_raw)).to_bytes()


def generate_key(out_dir: str | os.PathLike[str] = ".", name: str = DEFAULT_KEY_NAME) -> KeyPair:
    """Write ``<out_dir>/<name>.key`` (0600) and ``<name>.pub`` (0644); refuse to overwrite either."""
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    if not _NAME.match(name):
        raise SigningKeyError(f"--name {name!r}: use letters, digits, '.', '_' or '-' (a file name, no path)")
    folder = Path(out_dir)
    private, public = folder / f"{name}{PRIVATE_SUFFIX}", folder / f"{name}{PUBLIC_SUFFIX}"
    for path in (private, public):
        if path.exists() or path.is_symlink():
            raise SigningKeyError(
                f"{path} exists; refusing to overwrite a signing key (choose another --name or --out)"
            )
    key = Ed25519PrivateKey.generate()
    raw = key.public_key().public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    try:
        atomic_write_bytes(private, pem, mode=0o600)
        atomic_write_bytes(public, public_key_pem(raw).encode("ascii"), mode=0o644)
    except OSError as exc:
        private.unlink(missing_ok=True)
        raise SigningKeyError(f"cannot write keys to {folder}: {exc.strerror or exc}") from None
    return KeyPair(private, public, key_id(raw))


def load_signing_key(path: str | os.PathLike[str]) -> SigningKey:
    """Load a private key for ``build --sign-key``; one-line ``SigningKeyError`` on any problem."""
    from cryptography.exceptions import UnsupportedAlgorithm
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    p = Path(path)
    data = _read(p)
    if b"-----BEGIN PUBLIC KEY-----" in data:
        raise SigningKeyError(f"{p}: this is a public key; --sign-key takes the private key ({PRIVATE_SUFFIX} file)")
    if os.name == "posix":
        mode = stat.S_IMODE(p.stat().st_mode)
        if mode & 0o077:
            raise SigningKeyError(
                f"{p}: private key is accessible by group or others (mode {mode:04o}); run chmod 600 {p}"
            )
    try:
        key = serialization.load_pem_private_key(data, password=None)
    except TypeError:
        raise SigningKeyError(
            f"{p}: the private key is encrypted; mlpack needs an unencrypted one (mode 0600)"
        ) from None
    except (ValueError, UnsupportedAlgorithm):
        raise SigningKeyError(f"{p}: not a PEM private key (mlpack keys generate makes one)") from None
    if not isinstance(key, Ed25519PrivateKey):
        raise SigningKeyError(f"{p}: not an Ed25519 private key (mlpack keys generate makes one)")
    raw = key.public_key().public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    return SigningKey(key_id(raw), raw, p, key)


def describe_key(path: str | os.PathLike[str]) -> KeyInfo:
    """Key id and fingerprint of a public or private key file (``mlpack keys show``)."""
    p = Path(path)
    data = _read(p)
    if b"PRIVATE KEY" in data:
        raw, kind = load_signing_key(p).public_raw, "private"
    else:
        raw, kind = parse_public_key(data, str(p)), "public"
    return KeyInfo(p, kind, key_id(raw), hashlib.sha256(raw).hexdigest())


def _read(path: Path) -> bytes:
    try:
        return path.read_bytes()
    except FileNotFoundError:
        raise SigningKeyError(f"{path}: no such key file") from None
    except IsADirectoryError:
        raise SigningKeyError(f"{path}: is a folder, expected a key file") from None
    except OSError as exc:
        raise SigningKeyError(f"{path}: cannot read ({exc.strerror})") from None
