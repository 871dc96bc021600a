"""Which bundles a device runs: signatures over the manifest, trusted keys, the policy.

A signed bundle carries ``manifest.sig`` next to ``manifest.json`` (format
``mlpack.signature/1``, canonical JSON)::

    {"format": "mlpack.signature/1", "algorithm": "ed25519", "key_id": "<16 hex>",
     "public_key": "<base64 of the raw 32-byte key>", "signature": "<base64 of 64 bytes>"}

The signature covers the bytes of ``manifest.json``, which holds the sha256 of every
other file: checking it first and the digests after proves the whole bundle. The key id
is the first 16 hex digits of sha256(raw public key); public keys travel as PEM
(SubjectPublicKeyInfo), as ``mlpack keys generate`` writes them.

Trust policy (checked by :meth:`mlpack_edge.runtime.bundle.Bundle.verify`, the one place):

* **Installed models** (``<prefix>/<name>/<version>/bundle``) are strict. ``install``
  requires ``--trust-key KEY.pub`` (repeatable) or an explicit ``--allow-unsigned`` and
  writes the decision to ``<prefix>/<name>/trust/`` (``policy.json`` + ``<key id>.pub``);
  every start and every ``verify`` enforce it, and a missing trust folder is refused.
  Run-time trust options do not apply to an installed model (re-run ``install``).
* **Ad-hoc runs** (``mlpack device --bundle DIR``, a downloaded executable not yet
  installed, the Python API) enforce trust when given: ``--trust-key`` or
  ``MLPACK_TRUSTED_KEYS=path:path``. With no trust configured, a signed bundle's
  signature is still checked (integrity: it proves the manifest unchanged since signing,
  not who signed it), and an unsigned bundle runs; the device CLI warns about it on
  stderr. Strict on devices, usable for development.
* Always: a signature that does not verify is refused (even with ``--allow-unsigned``);
  a key that is not trusted is refused (``--allow-unsigned`` does not trust any signer);
  an unsigned bundle is refused unless unsigned bundles are allowed. Revoking a key is
  re-running ``install`` with the remaining keys.
"""

from __future__ import annotations

import base64
import binascii
import contextlib
import json
import os
from collections.abc import Iterable, Iterator, Mapping
from pathlib import Path
from typing import NamedTuple

from mlpack_edge._digest import sha256_hex
from mlpack_edge.errors import IntegrityError, SigningKeyError

__all__ = [
    "SIGNATURE_FORMAT",
    "TRUST_FORMAT",
    "TRUST_DIR",
    "POLICY_FILE",
    "TRUSTED_KEYS_ENV",
    "BUNDLE_DIR",
    "ALGORITHM",
    "key_id",
    "public_key_pem",
    "parse_public_key",
    "load_public_key",
    "TrustedKey",
    "Signature",
    "TrustPolicy",
    "SignatureCheck",
    "check_signature",
    "read_trust_dir",
    "write_trust_dir",
    "applied_trust",
    "installed_trust_dir",
    "policy_for",
]

SIGNATURE_FORMAT = "mlpack.signature/1"
TRUST_FORMAT = "mlpack.trust/1"
ALGORITHM = "ed25519"
TRUST_DIR = "trust"
POLICY_FILE = "policy.json"
TRUSTED_KEYS_ENV = "MLPACK_TRUSTED_KEYS"
#: An installed version's bundle folder: ``mlpack_edge.runtime.embedded.BUNDLE_DIR``, repeated here
#: so that opening a bundle does not import the archive code (a test keeps them equal).
BUNDLE_DIR = "bundle"
_CURRENT = "current"
# DER of an Ed25519 SubjectPublicKeyInfo is this 12-byte header + the raw 32-byte key (RFC 8410).
_SPKI_PREFIX = bytes.fromhex("302a300506032b6570032100")
_PEM_HEAD, _PEM_TAIL = "-----BEGIN PUBLIC KEY-----", "-----END PUBLIC KEY-----"
_UNSIGNED_HINT_INSTALLED = "install with --trust-key KEY.pub, or --allow-unsigned"
_UNSIGNED_HINT_AD_HOC = "sign it with mlpack build --sign-key KEY, or pass --allow-unsigned"


def key_id(raw_public_key: bytes) -> str:
    """The short name of a key: the first 16 hex digits of sha256 of its raw 32 bytes."""
    return sha256_hex(raw_public_key)[:16]


def public_key_pem(raw_public_key: bytes) -> str:
    """PEM (SubjectPublicKeyInfo) text of a raw Ed25519 public key, as OpenSSL writes it."""
    body = base64.b64encode(_SPKI_PREFIX + raw_public_key).decode("ascii")
    return f"{_PEM_HEAD}\n{body}\n{_PEM_TAIL}\n"


def parse_public_key(pem: bytes, where: str) -> bytes:
    """The raw 32 bytes of an Ed25519 public key in PEM; ``SigningKeyError`` otherwise."""
    text = pem.decode("ascii", errors="replace").strip()
    if "PRIVATE KEY" in text:
        raise SigningKeyError(f"{where}: this is a private key; trust the public one (the .pub file)")
    if not (text.startswith(_PEM_HEAD) and text.endswith(_PEM_TAIL)):
        raise SigningKeyError(f"{where}: not a PEM public key (expected {_PEM_HEAD} ... {_PEM_TAIL})")
    try:
        der = base64.b64decode("".join(text[len(_PEM_HEAD) : -len(_PEM_TAIL)].split()), validate=True)
    except (binascii.Error, ValueError):
        raise SigningKeyError(f"{where}: the PEM body is not valid base64") from None
    if len(der) != len(_SPKI_PREFIX) + 32 or not der.startswith(_SPKI_PREFIX):
        raise SigningKeyError(f"{where}: not an Ed25519 public key (mlpack keys generate makes one)")
    return der[len(_SPKI_PREFIX) :]


# Value types are NamedTuples, not dataclasses: every device command opens a bundle, and four
# frozen dataclasses cost ~1.5 ms of start-up (NamedTuple: ~0.2 ms).


class TrustedKey(NamedTuple):
    key_id: str
    raw: bytes


def load_public_key(path: str | os.PathLike[str]) -> TrustedKey:
    """Read a ``.pub`` file (PEM) as a key to trust."""
    p = Path(path)
    try:
        data = p.read_bytes()
    except FileNotFoundError:
        raise SigningKeyError(f"{p}: no such public key file") from None
    except OSError as exc:
        raise SigningKeyError(f"{p}: cannot read ({exc.strerror})") from None
    raw = parse_public_key(data, str(p))
    return TrustedKey(key_id(raw), raw)


class Signature(NamedTuple):
    """A parsed ``manifest.sig``."""

    key_id: str
    public_key: bytes
    signature: bytes

    def to_dict(self) -> dict[str, str]:
        return {
            "format": SIGNATURE_FORMAT,
            "algorithm": ALGORITHM,
            "key_id": self.key_id,
            "public_key": base64.b64encode(self.public_key).decode("ascii"),
            "signature": base64.b64encode(self.signature).decode("ascii"),
        }

    def to_bytes(self) -> bytes:
        """The file's bytes (canonical JSON: the same signature gives the same file)."""
        from mlpack_edge._fs import canonical_json

        return canonical_json(self.to_dict()).encode("utf-8")

    @classmethod
    def parse(cls, data: bytes, where: str) -> Signature:
        bad = f"{where}: manifest.sig is malformed"
        try:
            doc = json.loads(data)
        except (UnicodeDecodeError, json.JSONDecodeError):
            raise IntegrityError(f"{bad} (not JSON; tampered or corrupt)") from None
        if not isinstance(doc, dict) or doc.get("format") != SIGNATURE_FORMAT:
            raise IntegrityError(f"{bad} (expected format {SIGNATURE_FORMAT!r}; tampered or corrupt)")
        if doc.get("algorithm") != ALGORITHM:
            raise IntegrityError(f"{bad} (algorithm {doc.get('algorithm')!r}, expected {ALGORITHM!r})")
        try:
            public = base64.b64decode(doc["public_key"], validate=True)
            signature = base64.b64decode(doc["signature"], validate=True)
            kid = doc["key_id"]
        except (KeyError, TypeError, binascii.Error, ValueError):
            raise IntegrityError(f"{bad} (key_id, public_key or signature missing or not base64)") from None
        if len(public) != 32 or len(signature) != 64 or not isinstance(kid, str):
            raise IntegrityError(f"{bad} (expected a 32-byte key and a 64-byte signature)")
        if kid != key_id(public):
            raise IntegrityError(f"{where}: manifest.sig names key {kid} but carries key {key_id(public)} (tampered)")
        return cls(kid, public, signature)


class TrustPolicy(NamedTuple):
    """What a device accepts. ``enforced`` is False only for an ad-hoc run with nothing configured."""

    keys: tuple[TrustedKey, ...] = ()
    allow_unsigned: bool = False
    enforced: bool = True
    installed: bool = False  # decided at install: its refusals point at install's options

    @classmethod
    def ad_hoc(cls) -> TrustPolicy:
        """Nothing configured: signatures are checked for integrity, unsigned bundles run."""
        return cls(allow_unsigned=True, enforced=False)

    @classmethod
    def from_key_files(cls, paths: Iterable[str | os.PathLike[str]], allow_unsigned: bool = False) -> TrustPolicy:
        """Trust the public keys in ``paths`` (PEM files; the same key twice counts once)."""
        keys = {k.key_id: k for k in map(load_public_key, paths)}
        return cls(tuple(keys[k] for k in sorted(keys)), allow_unsigned)

    def key(self, kid: str) -> TrustedKey | None:
        return next((k for k in self.keys if k.key_id == kid), None)

    def describe(self) -> str:
        if not self.enforced:
            return "no trust configured (signatures checked for integrity only; unsigned bundles run)"
        keys = ", ".join(k.key_id for k in self.keys) or "none"
        return f"trusted keys: {keys}; unsigned bundles {'allowed' if self.allow_unsigned else 'refused'}"


class SignatureCheck(NamedTuple):
    """The outcome of :func:`check_signature` for a bundle that was accepted."""

    key_id: str | None  # None: unsigned
    trusted: bool  # verified against a key the policy trusts
    policy: TrustPolicy

    @property
    def signed(self) -> bool:
        return self.key_id is not None

    def describe(self) -> str:
        if self.key_id is None:
            return "unsigned (" + ("allowed by the trust policy)" if self.policy.enforced else "no trust configured)")
        if self.trusted:
            return f"signed by trusted key {self.key_id}"
        return f"signed by key {self.key_id} (integrity checked; no trusted keys configured)"


def check_signature(manifest_raw: bytes, sig_raw: bytes | None, policy: TrustPolicy, where: str) -> SignatureCheck:
    """Accept or refuse a bundle by its manifest bytes and ``manifest.sig`` (``None``: absent).

    Raises :class:`IntegrityError` with one line naming ``where`` and the reason.
    """
    if sig_raw is None:
        if policy.enforced and not policy.allow_unsigned:
            hint = _UNSIGNED_HINT_INSTALLED if policy.installed else _UNSIGNED_HINT_AD_HOC
            raise IntegrityError(f"{where}: unsigned bundle refused ({hint})")
        return SignatureCheck(None, False, policy)
    sig = Signature.parse(sig_raw, where)
    from mlpack_edge.runtime import _ed25519  # pure Python: imported only when there is a signature

    if not _ed25519.verify(sig.public_key, sig.signature, manifest_raw):
        raise IntegrityError(f"{where}: manifest.sig does not verify (tampered manifest or signature)")
    if not policy.enforced:
        return SignatureCheck(sig.key_id, False, policy)
    trusted = policy.key(sig.key_id)
    if trusted is None or trusted.raw != sig.public_key:
        keys = ", ".join(k.key_id for k in policy.keys) or "none"
        raise IntegrityError(f"{where}: signed by key {sig.key_id} which is not trusted here (trusted: {keys})")
    return SignatureCheck(sig.key_id, True, policy)


# ---------------------------------------------------------------------------- installed trust


def read_trust_dir(folder: str | os.PathLike[str]) -> TrustPolicy:
    """The policy ``install`` wrote; ``SigningKeyError`` naming the file when it is missing or damaged."""
    folder = Path(folder)
    path = folder / POLICY_FILE
    try:
        doc = json.loads(path.read_bytes())
    except FileNotFoundError:
        raise SigningKeyError(
            f"{path}: no trust policy for this installed model (re-run install with --trust-key KEY.pub,"
            " or --allow-unsigned)"
        ) from None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise SigningKeyError(f"{path}: unreadable trust policy ({exc.__class__.__name__})") from None
    ok = (
        isinstance(doc, dict)
        and doc.get("format") == TRUST_FORMAT
        and isinstance(doc.get("allow_unsigned"), bool)
        and isinstance(doc.get("keys"), list)
        and all(isinstance(k, str) and len(k) == 16 and all(c in "0123456789abcdef" for c in k) for k in doc["keys"])
    )
    if not ok:
        raise SigningKeyError(f"{path}: not a {TRUST_FORMAT} policy (allow_unsigned, keys)")
    keys = []
    for kid in doc["keys"]:
        key = load_public_key(folder / f"{kid}.pub")
        if key.key_id != kid:
            raise SigningKeyError(f"{folder / f'{kid}.pub'}: holds key {key.key_id}, not {kid} (tampered)")
        keys.append(key)
    return TrustPolicy(tuple(keys), doc["allow_unsigned"], enforced=True, installed=True)


def write_trust_dir(folder: str | os.PathLike[str], policy: TrustPolicy) -> Path:
    """Replace ``folder`` with ``policy`` (``policy.json`` + one ``<key id>.pub`` per key) atomically."""
    from mlpack_edge._fs import canonical_json

    doc = {"format": TRUST_FORMAT, "allow_unsigned": policy.allow_unsigned, "keys": [k.key_id for k in policy.keys]}
    files = {f"{k.key_id}.pub": public_key_pem(k.raw).encode("ascii") for k in policy.keys}
    files[POLICY_FILE] = canonical_json(doc).encode("utf-8")
    _publish(Path(folder), files)
    return Path(folder)


@contextlib.contextmanager
def applied_trust(folder: str | os.PathLike[str], policy: TrustPolicy | None) -> Iterator[bool]:
    """Write ``policy`` to ``folder`` for the block; put the old folder back if the block fails.

    Yields whether the policy on disk changed (``None``: nothing is written, ``False``).
    ``install`` needs the new policy in place while the new version verifies itself.
    """
    if policy is None:
        yield False
        return
    folder = Path(folder)
    before = _snapshot(folder)
    write_trust_dir(folder, policy)
    try:
        yield _snapshot(folder) != before
    except BaseException:
        if before is None:
            import shutil

            shutil.rmtree(folder, ignore_errors=True)
        else:
            _publish(folder, before)
        raise


def _snapshot(folder: Path) -> dict[str, bytes] | None:
    if not folder.is_dir():
        return None
    return {p.name: p.read_bytes() for p in sorted(folder.iterdir()) if p.is_file()}


def _publish(folder: Path, files: Mapping[str, bytes]) -> None:
    """Replace ``folder`` by one holding ``files``, in one rename; readable by the service's user."""
    from mlpack_edge._fs import atomic_directory

    with atomic_directory(folder, replace=True) as tmp:
        for name, data in files.items():
            (tmp / name).write_bytes(data)
            (tmp / name).chmod(0o644)
        tmp.chmod(0o755)


def installed_trust_dir(bundle_dir: str | os.PathLike[str]) -> Path | None:
    """``<prefix>/<name>/trust`` when ``bundle_dir`` is an installed version's ``bundle`` folder."""
    p = Path(bundle_dir).absolute()
    if p.name != BUNDLE_DIR:
        return None
    model_dir = p.parent.parent
    if (model_dir / TRUST_DIR).is_dir() or (model_dir / _CURRENT).is_symlink():
        return model_dir / TRUST_DIR
    return None


def policy_for(
    bundle_path: str | os.PathLike[str],
    explicit: TrustPolicy | None = None,
    environ: Mapping[str, str] | None = None,
) -> TrustPolicy:
    """The policy for a bundle: its installed trust, else ``explicit``, else ``$MLPACK_TRUSTED_KEYS``, else none."""
    trust_dir = installed_trust_dir(bundle_path)
    if trust_dir is not None:
        return read_trust_dir(trust_dir)
    if explicit is not None:
        return explicit
    env = (os.environ if environ is None else environ).get(TRUSTED_KEYS_ENV, "")
    paths = [p for p in env.split(os.pathsep) if p]
    if paths:
        return TrustPolicy.from_key_files(paths)
    return TrustPolicy.ad_hoc()
