"""Which frozen runtime each installed version runs, so an update knows whether only the bundle must travel.

An installed version folder holds the onedir launcher and ``_internal/`` unpacked from a
onefile executable: the onefile's bytes, whose sha256 the build wrote into the trailer
(:mod:`mlpack_edge.runtime.embedded`), are gone after install and cannot be recomputed
from the unpacked files. So ``install`` records that sha256 per version in
``state/runtimes.json`` (the state folder survives uninstall and is not part of a
version's files, which ``install`` compares byte for byte). A release published with the
same runtime then downloads only its bundle; one with another runtime (or a device whose
version was installed before this record existed: unknown counts as different) downloads
the runtime too.
"""

from __future__ import annotations

import json
from pathlib import Path

from mlpack_edge._fs import atomic_write_text

__all__ = ["RUNTIMES", "record_runtime", "recorded_runtime", "installed_runtime"]

RUNTIMES = "runtimes.json"


def _read(state: Path) -> dict[str, str]:
    try:
        doc = json.loads((state / RUNTIMES).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    return {str(k): str(v) for k, v in doc.items()} if isinstance(doc, dict) else {}


def record_runtime(state: Path, version: str, runtime_sha256: str | None, keep: set[str] | None = None) -> None:
    """Remember ``version`` runs ``runtime_sha256`` (kept only for versions in ``keep``, when given)."""
    doc = _read(state)
    if runtime_sha256 is None or doc.get(version) == runtime_sha256 and (keep is None or set(doc) <= keep):
        return
    doc[version] = runtime_sha256
    if keep is not None:
        doc = {v: h for v, h in doc.items() if v in keep or v == version}
    atomic_write_text(state / RUNTIMES, json.dumps(doc, sort_keys=True, indent=1) + "\n")


def recorded_runtime(state: Path, version: str) -> str | None:
    """The runtime sha256 recorded for ``version``, or ``None`` (installed before the record existed)."""
    return _read(state).get(version)


def installed_runtime(prefix: Path, name: str) -> str | None:
    """sha256 of the frozen runtime the current version of ``name`` runs, ``None`` when unknown."""
    current = Path(prefix) / name / "current"
    if not current.is_symlink():
        return None
    return recorded_runtime(Path(prefix) / name / "state", current.resolve().name)
