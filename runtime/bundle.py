"""Open a bundle (a folder, or a .tar/.tar.gz/.zip archive of one) and prove it intact.

:meth:`Bundle.verify` is the one integrity check on the device: every runtime entry
point (Python API, ``predict``, ``serve``, ``verify``) goes through it before the model
is used. It first checks ``manifest.sig`` over the manifest's bytes against the trust
policy (:mod:`mlpack_edge.runtime._trust`: the installed model's trust folder, else the
trust given, else ``$MLPACK_TRUSTED_KEYS``, else integrity only); the digests in the
manifest then cover every other file.

Files read during verification are kept until first :meth:`Bundle.read`, so the model
handed to onnxruntime is the very bytes that were hashed (no re-read between check and
use); a second read re-checks the digest.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from mlpack_edge.errors import BundleError
from mlpack_edge.runtime._trust import SignatureCheck, TrustPolicy, check_signature, policy_for
from mlpack_edge.runtime.manifest import (
    MANIFEST_NAME,
    SIGNATURE_NAME,
    Manifest,
    check_file,
    read_manifest,
    verify_files,
)

if TYPE_CHECKING:  # imported when used: predict and serve start without them
    from mlpack_edge.monitor_agent.profile import Profile
    from mlpack_edge.runtime.golden import Golden

__all__ = ["Bundle", "ARCHIVE_SUFFIXES"]

ARCHIVE_SUFFIXES = (".tar", ".tar.gz", ".tgz", ".zip")


class Bundle:
    """A bundle's manifest plus verified access to its files."""

    def __init__(
        self,
        location: str,
        manifest: Manifest,
        read_raw: Callable[[str], bytes],
        trust: TrustPolicy | None = None,
    ) -> None:
        self.location = location
        self.manifest = manifest
        self.trust = trust if trust is not None else policy_for(location)
        #: How the signature was judged; set by :meth:`verify`.
        self.signature: SignatureCheck | None = None
        self._read_raw = read_raw
        self._verified: dict[str, bytes] = {}
        self._checked = False
        onnx_file = manifest.data["onnx"].get("file") if isinstance(manifest.data["onnx"], dict) else None
        if not isinstance(onnx_file, str) or onnx_file not in manifest.files:
            raise BundleError(f"{location}/{MANIFEST_NAME}: onnx.file {onnx_file!r} is not listed in 'files'")
        self.model_file = onnx_file

    @classmethod
    def open(
        cls,
        path: str | os.PathLike[str],
        verify: bool = True,
        trust: TrustPolicy | None = None,
        label: str | None = None,
    ) -> Bundle:
        """Open the bundle at ``path`` and, unless told otherwise, verify it.

        ``trust`` applies unless ``path`` is an installed model's bundle, whose installed
        trust always applies (see :func:`mlpack_edge.runtime._trust.policy_for`). ``label``
        names the bundle in messages instead of ``path`` (a downloaded executable's bundle
        lives in a temporary folder the user never sees: the executable is named instead).
        """
        p = Path(path)
        policy = policy_for(p, trust)
        if p.is_dir():
            bundle = cls(label or str(p), read_manifest(p), _folder_reader(p), policy)
        elif p.is_file():
            bundle = _open_archive(p, policy, label)
        else:
            raise BundleError(f"{p}: no such bundle (expected a folder or {', '.join(ARCHIVE_SUFFIXES)})")
        if verify:
            bundle.verify()
        return bundle

    def verify(self) -> None:
        """Check the signature, then every file against the manifest; ``IntegrityError`` names the file."""
        try:
            sig_raw: bytes | None = self._read_raw(SIGNATURE_NAME)
        except FileNotFoundError:
            sig_raw = None
        self.signature = check_signature(self.manifest.raw, sig_raw, self.trust, self.location)
        seen: dict[str, bytes] = {}

        def read(name: str) -> bytes:
            seen[name] = self._read_raw(name)
            return seen[name]

        verify_files(self.manifest, read, self.location)
        self._verified = seen
        self._checked = True

    @property
    def verified(self) -> bool:
        return self._checked

    def read(self, name: str) -> bytes:
        """The bytes of bundle file ``name``, proven against the manifest's digest."""
        if name not in self.manifest.files:
            raise BundleError(f"{self.location}: {name} is not part of the bundle (not in the manifest)")
        data = self._verified.pop(name, None)
        if data is None:
            try:
                data = self._read_raw(name)
            except FileNotFoundError:
                raise BundleError(f"{self.location}: file {name} is missing") from None
            check_file(self.manifest, name, data, self.location)
        return data

    def read_json(self, name: str) -> Any:
        try:
            return json.loads(self.read(name))
        except (UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise BundleError(f"{self.location}/{name}: not valid JSON ({exc})") from None

    def profile(self) -> Profile | None:
        """The reference profile, or ``None`` when the bundle ships none."""
        if "profile.json" not in self.manifest.files:
            return None
        from mlpack_edge.monitor_agent.profile import Profile

        return Profile.from_dict(self.read_json("profile.json"), f"{self.location}/profile.json")

    def golden(self) -> Golden | None:
        """The golden probe set, or ``None`` when the bundle ships none."""
        if "golden.json" not in self.manifest.files:
            return None
        from mlpack_edge.runtime.golden import Golden

        return Golden.parse(self.read("golden.json"), f"{self.location}/golden.json")

    def __repr__(self) -> str:
        return f"Bundle({self.location!r}, {self.manifest.name} {self.manifest.version})"


def _folder_reader(folder: Path) -> Callable[[str], bytes]:
    def read(name: str) -> bytes:
        try:
            return (folder / name).read_bytes()
        except IsADirectoryError:
            raise FileNotFoundError(name) from None
        except PermissionError as exc:
            raise BundleError(f"{folder / name}: cannot read ({exc.strerror})") from None

    return read


def _open_archive(path: Path, trust: TrustPolicy, label: str | None = None) -> Bundle:
    """An archive's bundle, read in place (no extraction, so no path tricks) with bounded memory.

    Members the manifest does not list are refused before any data is read; listed files
    are proven while they stream in (:mod:`mlpack_edge.runtime._archive`).
    """
    from mlpack_edge.runtime._archive import open_archive

    archive = open_archive(path)
    manifest = archive.manifest()

    def read(member: str) -> bytes:
        if member == SIGNATURE_NAME:
            sig = archive.signature()
            if sig is None:
                raise FileNotFoundError(member)
            return sig
        return archive.read_verified(member)

    return Bundle(label or str(path), manifest, read, trust)
