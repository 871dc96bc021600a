"""What a cached frozen runtime was made from, so a stale one is never reused.

The cache key (:func:`mlpack_edge.builder._freeze.runtime_key`) is computed *before* freezing,
from what is cheap to know: the staged mlpack sources, the versions of Python and of the
main distributions, the Python environment's location, the recipe. The freeze also
reads files the key cannot name in advance: system libraries (libssl, libsqlite3,
libstdc++...), the standard library's sources, files of distributions the key does not
name, and the tools that rewrite bytes (strip, objcopy). A later ``apt upgrade`` or
``pip install`` can change those without changing the key, and reusing the entry would
then give bytes a fresh build no longer gives: the cache would break reproducibility.

So each entry records, at freeze time, every such input file with its size, mtime,
ctime, inode and sha256, plus the optional imports that were *missing* (a module a
frozen library imports only when it is installed, e.g. numpy's ``yaml``). Before reuse,
every file is stat'ed (a mismatch is settled by its sha256: touching a file costs a
hash, not a freeze) and every missing import is looked up again; any difference makes
the entry stale and the runtime is frozen again.

Why the ctime: size, mtime and inode alone can all come back equal for other bytes (a
package manager or ``cp -p`` restores the mtime, a replaced file gets the freed inode
number back), and the entry would then be reused unhashed. The ctime cannot be set from
user space, so a rewritten or replaced file always differs in it. Why
``importlib.invalidate_caches``: the import system caches each folder's listing until
the folder's mtime changes, so in a long-running process a module installed within the
same timestamp tick would stay invisible.
"""

from __future__ import annotations

import importlib.util
import json
import os
import re
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from mlpack_edge._fs import file_sha256

__all__ = ["INPUTS_NAME", "record_inputs", "stale_reason"]

#: File in a cache entry holding the record.
INPUTS_NAME = "inputs.json"
_FORMAT = "mlpack.freeze-inputs/2"  # /1 had no ctime: such entries are frozen again once
#: A top-level module PyInstaller looked for and did not find (``warn-<spec>.txt``).
_MISSING = re.compile(r"^missing module named '?([A-Za-z_][A-Za-z0-9_]*)'? - ", re.MULTILINE)


def _findable(module: str) -> bool:
    """Whether ``import module`` would find something here (top-level names only: no import runs).

    Call :func:`importlib.invalidate_caches` first (see the module docstring).
    """
    try:
        return importlib.util.find_spec(module) is not None
    except (ImportError, ValueError):
        return False


def _stamp(st: os.stat_result) -> tuple[int, ...]:
    """What must be equal for a file to count as unchanged without hashing it (see the module docstring)."""
    return (st.st_size, st.st_mtime_ns, st.st_ctime_ns, st.st_ino)


def record_inputs(files: Iterable[str], warnings: str) -> dict[str, Any]:
    """The record for a runtime frozen from ``files`` (absolute paths) with PyInstaller's warn text.

    Missing modules that *are* findable from this process (frozen importlib internals,
    platform stubs) are left out, so the same check at reuse time agrees with it.
    """
    entries = []
    for path in sorted(set(files)):
        st = os.stat(path)
        entries.append([path, *_stamp(st), file_sha256(path)])
    importlib.invalidate_caches()
    missing = sorted(n for n in set(_MISSING.findall(warnings)) if not _findable(n))
    return {"format": _FORMAT, "files": entries, "missing_modules": missing}


def stale_reason(entry: Path) -> str | None:
    """Why the runtime cached in ``entry`` differs from a fresh freeze, or ``None`` if it does not."""
    try:
        record = json.loads((entry / INPUTS_NAME).read_text(encoding="utf-8"))
        if record.get("format") != _FORMAT:
            return "its input record has another format"
        files = [(str(p), tuple(int(n) for n in stamp), str(h)) for p, *stamp, h in record["files"]]
        missing = [str(n) for n in record["missing_modules"]]
    except (OSError, ValueError, KeyError, TypeError, AttributeError):
        return "it has no readable input record"
    for path, stamp, digest in files:
        try:
            if _stamp(os.stat(path)) != stamp and file_sha256(path) != digest:
                return f"{path} changed"
        except OSError:
            return f"{path} is gone"
    importlib.invalidate_caches()
    for name in missing:
        if _findable(name):
            return f"module {name} is installed now (frozen code imports it when present)"
    return None
