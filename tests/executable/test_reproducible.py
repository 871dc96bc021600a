"""Two clean builds of one spec and data on one machine give the same executable, byte for byte.

The first clean build is the session's ``built.v1`` (frozen into an empty cache). The
second freezes again into another empty cache, from another scratch folder, under umask
077 and with an environment that changes PyInstaller's output if it reaches the freeze
(hash seed, zlib level, optimisation level): none of it may show in the bytes.
"""

from __future__ import annotations

import os
import sysconfig
from pathlib import Path

import pytest

from mlpack_edge.runtime.embedded import LAUNCHER_DATA_NAME, executable_identity, open_appended

from ._builds import Built, assert_reused, build_with_cache, key_changes, key_material, spec_copy

pytestmark = pytest.mark.slow

FREEZING = "freezing the device runtime (first build with this runtime, cached afterwards)…"
HOSTILE_ENV = {"PYTHONHASHSEED": "4242", "PYINSTALLER_ZLIB_COMPRESSION_LEVEL": "1", "PYTHONOPTIMIZE": "2"}


def _infos(events: list[tuple[str, ...]]) -> list[str]:
    return [e[1] for e in events if e[0] == "info"]


def _entries(path: Path, prefix: str = "") -> dict[str, bytes]:
    """Every entry of the frozen runtime, uncompressed (the onedir launcher's entries too)."""
    from PyInstaller.archive.readers import CArchiveReader

    reader = CArchiveReader(str(path))
    out = {prefix + name: reader.extract(name) or b"" for name in reader.toc}
    if LAUNCHER_DATA_NAME in reader.toc:
        launcher = path.parent / f"{path.name}.{LAUNCHER_DATA_NAME}"
        launcher.write_bytes(out[prefix + LAUNCHER_DATA_NAME])
        try:
            out.update(_entries(launcher, f"{prefix}{LAUNCHER_DATA_NAME}!"))
        finally:
            launcher.unlink()
    return out


def _differences(one: Path, two: Path, scratch: Path) -> list[str]:
    """Where two executables differ: archive entries by name, then the appended bundle."""
    first, second = (scratch / "one", scratch / "two")
    for exe, runtime in ((one, first), (two, second)):
        runtime.write_bytes(exe.read_bytes()[: open_appended(exe).runtime_size])
    a, b = _entries(first), _entries(second)
    found = [f"{n}: {'only in one' if n not in b else 'only in two' if n not in a else 'bytes differ'}"
             for n in sorted(a.keys() | b.keys()) if a.get(n) != b.get(n)]
    if not found:
        found.append("entries equal: the archive layout or the bootloader differs")
    za, zb = open_appended(one), open_appended(two)
    found += [f"bundle/{n} differs" for n in sorted(set(za.names) | set(zb.names))
              if n not in za.names or n not in zb.names or za.read(n) != zb.read(n)]
    return found


def test_two_clean_builds_give_the_same_bytes(built: Built, tmp_path: Path) -> None:
    cache = tmp_path / "cache"
    material = key_material()
    umask = os.umask(0o077)
    try:
        again, events = build_with_cache(spec_copy(tmp_path, "1.0.0", 0.5), tmp_path / "dist", cache, **HOSTILE_ENV)
    finally:
        os.umask(umask)
    assert FREEZING in _infos(events)  # really a second freeze, not a reuse
    firsts, [second_entry] = ([p.parent for p in (root / "runtime").glob("*/mlpack-device")]
                              for root in (built.cache, cache))
    assert len(firsts) == 1, f"the session's builds froze {len(firsts)} times; changed: {key_changes(built.material)}"
    [first_entry] = firsts
    assert first_entry.name == second_entry.name, f"changed between the two builds: {key_changes(built.material)}"
    assert again.executable.name == built.v1.name
    if again.executable.read_bytes() != built.v1.read_bytes():
        pytest.fail("clean builds differ: " + "; ".join(_differences(built.v1, again.executable, tmp_path)))
    assert executable_identity(again.executable) == executable_identity(built.v1)

    # Each cache holds the runtime part of that file; a build reusing it gives the same bytes.
    runtime = built.v1.read_bytes()[: open_appended(built.v1).runtime_size]
    for entry in (first_entry, second_entry):
        assert (entry / "mlpack-device").read_bytes() == runtime, entry
    reused, events = build_with_cache(spec_copy(tmp_path / "reuse", "1.0.0", 0.5), tmp_path / "dist-reuse", cache)
    assert_reused(_infos(events), material)
    assert reused.executable.read_bytes() == built.v1.read_bytes()


def test_no_build_path_reaches_the_executable(built: Built) -> None:
    """Neither the scratch folder nor the site-packages path is left in any frozen entry."""
    needles = [b"mlpack-freeze-", sysconfig.get_paths()["purelib"].encode()]
    runtime = built.work / "runtime-only"
    runtime.write_bytes(built.v1.read_bytes()[: open_appended(built.v1).runtime_size])
    leaks = [f"{name} holds {needle!r}" for name, data in _entries(runtime).items() for needle in needles if needle in data]
    assert leaks == []
