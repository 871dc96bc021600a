"""``mlpack runtime import``: a runtime frozen elsewhere (on a real device) joins the cache.

For users who would rather not emulate: ``mlpack runtime freeze`` on an ARM64 device (with
the same mlpack-edge installed) makes the model-free runtime there; importing it here lets
every later ``mlpack build --target linux-aarch64`` append models to it, with no qemu.

An imported file is refused, in one line, unless it is what a build can use: an ELF
executable for the target's architecture, a PyInstaller archive holding the runtime's facts
file (:data:`mlpack_edge.builder._freeze_spec.FACTS_NAME`) and the installed-layout launcher,
no model appended, frozen from today's device-side sources, with Python 3.11 and the
onnxruntime version the model is converted and checked with here. Its glibc floor is read
from every ELF member, as for a runtime frozen here.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from mlpack_edge._fs import atomic_directory, atomic_write_text, canonical_json
from mlpack_edge.builder import _glibc
from mlpack_edge.builder._freeze_spec import FACTS_NAME
from mlpack_edge.errors import MlpackError, PackagingError
from mlpack_edge.runtime.embedded import LAUNCHER_DATA_NAME, open_appended

__all__ = ["IMPORTED_PREFIX", "check_runtime_file", "imported_runtimes", "store_imported"]

#: Cache entries of imported runtimes are ``runtime/imported-<sha256[:16]>/``.
IMPORTED_PREFIX = "imported-"
#: ELF ``e_machine`` of each target.
_MACHINE = {"linux-x86_64": 62, "linux-aarch64": 183}


def check_runtime_file(path: Path, target: str, expected: Mapping[str, str]) -> dict[str, Any]:
    """The runtime's facts (plus ``glibc_floor``) if ``path`` can serve ``target``; else a one-line PackagingError.

    ``expected`` holds ``sources`` (digest of today's device sources), ``python``
    (``3.11``) and ``onnxruntime`` (this machine's version).
    """
    from PyInstaller.archive.readers import CArchiveReader

    try:
        head = path.read_bytes()[:20] if path.stat().st_size >= 20 else b""
    except OSError as exc:
        raise PackagingError(f"{path}: cannot read ({exc.strerror or exc})") from None
    if head[:4] != b"\x7fELF":
        raise PackagingError(f"{path}: not an ELF executable, so not a frozen mlpack runtime")
    machine = int.from_bytes(head[18:20], "little" if head[5] == 1 else "big")
    if machine != _MACHINE[target]:
        names = {v: k for k, v in _MACHINE.items()}
        raise PackagingError(f"{path}: built for {names.get(machine, f'ELF machine {machine}')}, not {target}")
    try:
        open_appended(path)
    except MlpackError:
        pass
    else:
        raise PackagingError(f"{path}: a model executable (a bundle is appended); import the runtime `mlpack runtime freeze` made")
    try:
        reader = CArchiveReader(str(path))
        if LAUNCHER_DATA_NAME not in reader.toc or FACTS_NAME not in reader.toc:
            raise ValueError("not an mlpack runtime")
        facts = json.loads(reader.extract(FACTS_NAME))
        members = [reader.extract(name) for name, entry in reader.toc.items() if entry[-1] in ("b", "x")]
    except Exception as exc:  # PyInstaller's reader raises anything from struct.error to zlib.error on damage
        raise PackagingError(f"{path}: not a frozen mlpack runtime, or damaged ({type(exc).__name__}: {exc})") from None
    got_python = ".".join(str(facts.get("python", "?")).split(".")[:2])
    if got_python != expected["python"]:
        raise PackagingError(f"{path}: frozen with Python {got_python}; models here need a runtime with Python {expected['python']}")
    if facts.get("onnxruntime") != expected["onnxruntime"]:
        raise PackagingError(
            f"{path}: has onnxruntime {facts.get('onnxruntime')}; models here are checked with onnxruntime"
            f" {expected['onnxruntime']} (install that version where you freeze)"
        )
    if facts.get("sources") != expected["sources"]:
        raise PackagingError(
            f"{path}: frozen from other mlpack device sources than this mlpack-edge's"
            " (freeze it with the same mlpack-edge version installed)"
        )
    needs = _glibc.glibc_needs(path)  # the launcher itself
    for data in members:
        if data[:4] == b"\x7fELF":
            needs |= _glibc.needs_of_bytes(data)
    return {**facts, "glibc_floor": max(needs, key=_glibc.version_key) if needs else None}


def store_imported(path: Path, target: str, facts: Mapping[str, Any], cache: Path) -> Path:
    """Copy the checked runtime into ``<cache>/runtime/imported-<sha>/``; its executable's path."""
    data = path.read_bytes()
    entry = cache / "runtime" / f"{IMPORTED_PREFIX}{hashlib.sha256(data).hexdigest()[:16]}"
    info = {
        "key": entry.name,
        "platform": target,
        "floor": "imported",
        "glibc_floor": facts.get("glibc_floor"),
        "versions": {k: v for k, v in facts.items() if k != "glibc_floor"},
        "imported_from": str(path),
    }
    with atomic_directory(entry, replace=True) as tmp:
        (tmp / "mlpack-device").write_bytes(data)
        (tmp / "mlpack-device").chmod(0o755)
        atomic_write_text(tmp / "key.json", canonical_json(info))
    return entry / "mlpack-device"


def imported_runtimes(cache: Path, target: str) -> list[tuple[Path, dict[str, Any]]]:
    """Imported runtimes for ``target`` in the cache, newest first: (executable, key.json)."""
    base = cache / "runtime"
    found = []
    for entry in sorted(base.glob(f"{IMPORTED_PREFIX}*"), key=lambda p: p.stat().st_mtime, reverse=True):
        try:
            info = json.loads((entry / "key.json").read_text(encoding="utf-8"))
        except (OSError, ValueError):
            continue
        if info.get("platform") == target and (entry / "mlpack-device").is_file():
            found.append((entry / "mlpack-device", info))
    return found
