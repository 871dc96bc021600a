"""``mlpack inspect``: what a bundle folder or a device executable holds, without running it.

The same facts as the model card (read through :mod:`mlpack_edge.builder._facts`), plus what
only a copy on disk can tell: every file with its size and whether it still matches the
manifest, the signature (``manifest.sig``: present, key id, does it verify), and for an
executable the frozen runtime in front of the appended bundle (size, sha256, intact).

Which hash names what (see :mod:`mlpack_edge.builder._freeze` for the measurements):

* the **content hash** (sha256 of ``manifest.json``, which lists every bundle file's
  sha256) names the *model*. It is the stable one: the same spec, data and library
  versions give the same content hash wherever the bundle is packaged, and devices report
  it in telemetry;
* the **runtime sha256** (recorded in the appended zip's trailer, checked here) names the
  frozen device runtime: the same for every model built with one cached runtime;
* the executable's own **sha256** changes when either part does; two clean builds on the
  same machine give the same file, another machine's libraries give another one.

Nothing here imports scikit-learn: inspecting is cheap, and works on a machine that only
has the device side installed plus this package.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import zipfile
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from mlpack_edge.builder import _facts as facts
from mlpack_edge.monitor_agent.profile import Profile
from mlpack_edge.runtime.embedded import AppendedBundle, open_appended
from mlpack_edge.runtime.manifest import MANIFEST_NAME, SIGNATURE_NAME, Manifest, sha256_bytes

from mlpack_edge.errors import BundleError, IntegrityError, MlpackError

__all__ = ["Inspection", "FileEntry", "SignatureStatus", "ExecutableInfo", "inspect_path"]


@dataclass(frozen=True)
class FileEntry:
    name: str
    size: int
    status: Literal["ok", "modified", "missing", "unlisted", "manifest", "signature"]


@dataclass(frozen=True)
class SignatureStatus:
    present: bool
    key_id: str | None = None
    valid: bool | None = None  # None: unsigned, or not checked
    detail: str = ""

    def to_dict(self) -> dict[str, Any]:
        return {"present": self.present, "key_id": self.key_id, "valid": self.valid, "detail": self.detail}


@dataclass(frozen=True)
class ExecutableInfo:
    size: int
    sha256: str  # the whole file
    runtime_size: int
    runtime_sha256: str  # from the trailer
    runtime_intact: bool  # the bytes in front of the zip hash to the trailer's digest
    bundle_size: int
    target: str | None = None  # from the trailer; None for executables built before it was recorded
    glibc_floor: str | None = None  # the oldest glibc the runtime starts on (from its ELF version needs)

    def to_dict(self) -> dict[str, Any]:
        return {
            "size": self.size,
            "sha256": self.sha256,
            "runtime_size": self.runtime_size,
            "runtime_sha256": self.runtime_sha256,
            "runtime_intact": self.runtime_intact,
            "bundle_size": self.bundle_size,
            "target": self.target,
            "glibc_floor": self.glibc_floor,
        }


@dataclass(frozen=True)
class Inspection:
    kind: Literal["bundle", "executable"]
    path: Path
    manifest: Manifest
    profile: Profile | None
    files: tuple[FileEntry, ...]
    signature: SignatureStatus
    executable: ExecutableInfo | None = None
    problems: tuple[str, ...] = field(default=())  # one line each: tampered files, bad signature, ...

    @property
    def ok(self) -> bool:
        return not self.problems

    def to_dict(self) -> dict[str, Any]:
        """The ``--json`` document: the facts of the card plus files, signature, executable."""
        m = self.manifest.data
        return {
            "ok": self.ok,
            "problems": list(self.problems),
            "kind": self.kind,
            "path": str(self.path),
            "name": self.manifest.name,
            "version": self.manifest.version,
            "task": self.manifest.task,
            **{k: m.get(k, "") for k in ("description", "owner", "intended_use")},
            "content_hash": self.manifest.content_hash,
            "stable_hash": "content_hash",
            "input": {
                "layout": self.manifest.layout,
                "features": [
                    {**f, "missing_rate": r.missing_rate}
                    for f, r in zip(m["input"]["features"], facts.feature_rows(m, self.profile), strict=True)
                ],
            },
            "classes": self.manifest.classes,
            "metrics": m.get("metrics", {}),
            "gates": m.get("gates", []),
            "evaluation": m.get("evaluation"),
            "parity": m.get("parity"),
            "lineage": m.get("lineage"),
            "targets": m.get("targets"),
            "files": [{"name": f.name, "size": f.size, "status": f.status} for f in self.files],
            "signature": self.signature.to_dict(),
            "executable": self.executable.to_dict() if self.executable else None,
        }


def inspect_path(path: str | Path, trust_keys: Sequence[str | Path] = ()) -> Inspection:
    """Inspect a bundle folder or a device executable; ``BundleError`` when it is neither.

    Damage (a modified file, a signature that does not verify, a corrupted runtime) does
    not raise: it is listed in :attr:`Inspection.problems`, so the rest can still be
    shown. With ``trust_keys`` (public key files) a signature by any other key is a problem.
    """
    src = _open(Path(path))
    manifest = Manifest.parse(src.read(MANIFEST_NAME), f"{src.path}/{MANIFEST_NAME}")
    files, intact = _files(manifest, src.sizes, src.read)
    problems = list(src.problems)
    problems += [f"{src.path}: file {f.name} {_PROBLEM[f.status]}" for f in files if f.status in _PROBLEM]
    sig_raw = src.read(SIGNATURE_NAME) if SIGNATURE_NAME in src.sizes else None
    signature = _signature(manifest.raw, sig_raw, trust_keys, str(src.path))
    if signature.valid is False:
        problems.append(signature.detail)
    problems += _floor_mismatch(manifest, src.executable, src.path)
    profile = None
    if "profile.json" in intact:  # a modified profile would show made-up missing rates
        profile = Profile.from_dict(_json(src.read("profile.json"), src.path), f"{src.path}/profile.json")
    return Inspection(src.kind, src.path, manifest, profile, tuple(files), signature, src.executable, tuple(problems))


@dataclass(frozen=True)
class _Source:
    """A bundle folder or an executable's appended zip, read the same way."""

    kind: Literal["bundle", "executable"]
    path: Path
    sizes: dict[str, int]  # every file present, by name
    read: Callable[[str], bytes]
    executable: ExecutableInfo | None = None
    problems: tuple[str, ...] = ()


def _open(p: Path) -> _Source:
    if p.is_dir():
        if not (p / MANIFEST_NAME).is_file():
            raise BundleError(f"{p}: not a bundle folder (no {MANIFEST_NAME})")
        sizes = {c.name: c.stat().st_size for c in sorted(p.iterdir()) if c.is_file()}
        return _Source("bundle", p, sizes, lambda name: (p / name).read_bytes())
    if not p.exists():
        raise BundleError(f"{p}: no such file or folder")
    try:
        with open(p, "rb"):  # zipfile.is_zipfile says False for an unreadable file
            pass
    except OSError as exc:
        raise BundleError(f"{p}: cannot read ({exc.strerror})") from None
    if not zipfile.is_zipfile(p):
        raise BundleError(
            f"{p}: not a bundle folder or device executable (no appended bundle: not from mlpack build, or a truncated copy)"
        )
    appended = open_appended(p)
    if MANIFEST_NAME not in appended.names:
        raise BundleError(f"{p}: the appended bundle has no {MANIFEST_NAME}")
    with zipfile.ZipFile(p) as zf:
        sizes = {i.filename: i.file_size for i in sorted(zf.infolist(), key=lambda i: i.filename)}
    info, problem = _executable_info(p, appended)
    return _Source("executable", p, sizes, appended.read, info, (problem,) if problem else ())


def _executable_info(p: Path, appended: AppendedBundle) -> tuple[ExecutableInfo, str | None]:
    """Sizes and hashes of the file and its runtime part; the problem, if the runtime is damaged."""
    problem = None
    try:
        whole = appended.check_runtime()
    except IntegrityError as exc:
        problem = str(exc)
        with open(p, "rb") as fh:
            whole = hashlib.file_digest(fh, "sha256").hexdigest()
    size = p.stat().st_size
    info = ExecutableInfo(
        size=size,
        sha256=whole,
        runtime_size=appended.runtime_size,
        runtime_sha256=appended.runtime_sha256,
        runtime_intact=problem is None,
        bundle_size=size - appended.runtime_size,
        target=appended.target,
        glibc_floor=appended.glibc_floor,
    )
    return info, problem


def _floor_mismatch(manifest: Manifest, exe: ExecutableInfo | None, path: Path) -> list[str]:
    """The signed manifest's glibc floor for this executable's target must be the trailer's."""
    recorded = (manifest.data.get("targets") or {}).get(exe.target) if exe is not None and exe.target else None
    if exe is None or not isinstance(recorded, dict) or recorded.get("glibc_floor") == exe.glibc_floor:
        return []
    return [
        f"{path}: the manifest says {exe.target} needs glibc {recorded.get('glibc_floor')},"
        f" the executable's trailer says {exe.glibc_floor} (runtime swapped after signing?)"
    ]


_PROBLEM = {
    "modified": "does not match its sha256 in the manifest (tampered or corrupt)",
    "missing": "listed in the manifest is missing",
}


def _files(manifest: Manifest, sizes: dict[str, int], read: Callable[[str], bytes]) -> tuple[list[FileEntry], set[str]]:
    entries: list[FileEntry] = []
    intact: set[str] = set()
    for name in sorted(set(sizes) | set(manifest.files)):
        if name == MANIFEST_NAME:
            entries.append(FileEntry(name, sizes[name], "manifest"))
        elif name == SIGNATURE_NAME:
            entries.append(FileEntry(name, sizes[name], "signature"))
        elif name not in manifest.files:
            entries.append(FileEntry(name, sizes[name], "unlisted"))
        elif name not in sizes:
            entries.append(FileEntry(name, 0, "missing"))
        elif sha256_bytes(read(name)) != manifest.files[name]:
            entries.append(FileEntry(name, sizes[name], "modified"))
        else:
            entries.append(FileEntry(name, sizes[name], "ok"))
            intact.add(name)
    return entries, intact


def _json(data: bytes, where: Path) -> Any:
    try:
        return json.loads(data)
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise BundleError(f"{where}/profile.json: not valid JSON ({exc})") from None


def _signature(
    manifest_raw: bytes, sig_raw: bytes | None, trust_keys: Iterable[str | Path], where: str
) -> SignatureStatus:
    from mlpack_edge.runtime._trust import Signature, TrustPolicy, check_signature

    keys = list(trust_keys)
    policy = TrustPolicy.from_key_files(keys) if keys else TrustPolicy.ad_hoc()
    if sig_raw is None:
        if keys:
            refused = (
                f"{where}: unsigned, so a device trusting only the given keys refuses it (mlpack build --sign-key)"
            )
            return SignatureStatus(False, valid=False, detail=refused)
        return SignatureStatus(False, detail="unsigned (no manifest.sig): devices refuse it unless allowed")
    kid = None
    with contextlib.suppress(MlpackError):  # a malformed file: check_signature says why
        kid = Signature.parse(sig_raw, where).key_id
    try:
        check = check_signature(manifest_raw, sig_raw, policy, where)
    except MlpackError as exc:
        return SignatureStatus(True, kid, False, str(exc))
    if check.trusted:
        return SignatureStatus(True, kid, True, f"verifies; key {kid} is one of the given trusted keys")
    return SignatureStatus(True, kid, True, f"verifies over manifest.json (key {kid}; trust is decided on the device)")
