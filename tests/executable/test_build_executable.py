"""The runtime cache key and its staleness check, the excluded-module guard, building from a cached runtime."""

from __future__ import annotations

import ast
import json
import os
import stat
import time
from collections.abc import Callable, Iterable
from pathlib import Path

import pytest

from mlpack_edge.builder import _freeze
from mlpack_edge.builder._freeze_inputs import INPUTS_NAME, record_inputs, stale_reason
from mlpack_edge.builder import _freeze_spec
from mlpack_edge.builder._freeze_spec import excluded_uses
from mlpack_edge.builder.executable import build_executable, executable_name
from mlpack_edge.errors import PackagingError
from mlpack_edge.runtime.embedded import open_appended

VERSIONS = {"python": "3.11.7", "numpy": "2.4.6", "onnxruntime": "1.32.0"}


def test_cache_key_is_stable_and_follows_every_runtime_source() -> None:
    sources = _freeze.stage_sources()
    key = _freeze.runtime_key(sources, VERSIONS)
    assert key == _freeze.runtime_key(dict(sources), VERSIONS)
    for path in ("mlpack_edge/runtime/bundle.py", "mlpack_edge/monitor_agent/wire.py", "mlpack_edge/_cli.py"):
        changed = dict(sources)
        changed[path] = changed[path] + b"\n# changed\n"
        assert _freeze.runtime_key(changed, VERSIONS) != key, path
    assert _freeze.runtime_key(sources, {**VERSIONS, "onnxruntime": "1.33.0"}) != key


def test_cache_key_follows_the_optimisation_levels(monkeypatch: pytest.MonkeyPatch) -> None:
    """A runtime frozen at another bytecode level (e.g. the old -O0 one) is never reused."""
    sources = _freeze.stage_sources()
    key = _freeze.runtime_key(sources, VERSIONS)
    monkeypatch.setattr(_freeze_spec, "OPTIMIZE", 0)
    assert _freeze.runtime_key(sources, VERSIONS) != key
    monkeypatch.setattr(_freeze_spec, "OPTIMIZE", 2)
    monkeypatch.setattr(_freeze_spec, "DOCSTRING_OPTIMIZE", 0)
    assert _freeze.runtime_key(sources, VERSIONS) != key


def test_every_click_module_keeps_its_docstrings_and_the_rest_runs_at_oo() -> None:
    """click builds --help from docstrings: each module defining a command is compiled keeping them."""
    sources = _freeze.stage_sources()
    keep = _freeze_spec.docstring_modules(sources)
    commands = sorted(rel[: -len(".py")].replace("/", ".") for rel, data in sources.items()
                      if rel.endswith(".py") and _defines_click_command(data))
    assert commands and set(commands) <= set(keep), (commands, keep)
    assert "mlpack_edge.runtime.server" not in keep
    spec = _freeze_spec.render_spec(
        name="x", script="s", stage="st", scratch="sc", inputs="i", hiddenimports=[], docstring_modules=keep
    )
    assert '"optimize": 2' in spec and '"docstring_optimize": 1' in spec
    assert '[("O", None, "OPTION")] * _P["optimize"]' in spec


def _defines_click_command(source: bytes) -> bool:
    """A function decorated ``@<x>.command(...)`` or ``@<x>.group(...)`` (click takes its docstring as help)."""
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.FunctionDef):
            for deco in node.decorator_list:
                func = deco.func if isinstance(deco, ast.Call) else deco
                if isinstance(func, ast.Attribute) and func.attr in ("command", "group"):
                    return True
    return False


def test_staged_sources_are_exactly_the_device_side() -> None:
    sources = _freeze.stage_sources()
    tops = {p.split("/")[1] for p in sources}
    assert tops == {"__init__.py", "errors.py", "_fs.py", "_cli.py", "_lazy.py", "_record.py", "_digest.py", "runtime", "monitor_agent"}
    assert "mlpack_edge/runtime/install.py" in sources and "mlpack_edge/monitor_agent/wire.py" in sources
    assert not any("__pycache__" in p or p.endswith(".pyc") for p in sources)


def test_device_side_uses_no_excluded_module() -> None:
    assert excluded_uses(_freeze.stage_sources()) == []


def test_excluded_module_use_is_found_with_its_line() -> None:
    source = (
        b"import numpy as np\n"
        b"def f():\n"
        b"    return np.random.default_rng(0)\n"
        b"import importlib\n"
        b"importlib.import_module('sklearn.linear_model')\n"
        b"from mlpack_edge.collector import app\n"
        b"from numpy import zeros, polynomial\n"
    )
    assert excluded_uses({"mlpack_edge/runtime/x.py": source, "mlpack_edge/runtime/y.py": b"import onnxruntime\n"}) == [
        "mlpack_edge/runtime/x.py:3 numpy.random",
        "mlpack_edge/runtime/x.py:5 sklearn.linear_model",
        "mlpack_edge/runtime/x.py:6 mlpack_edge.collector",
        "mlpack_edge/runtime/x.py:7 numpy.polynomial",
    ]


def test_staged_sources_carry_no_trace_of_the_umask_or_the_clock(tmp_path: Path) -> None:
    sources = {"mlpack_edge/runtime/b.py": b"B = 2\n", "mlpack_edge/a.py": b"A = 1\n", "mlpack_edge/runtime/t.sql": b"--\n"}
    umask = os.umask(0o077)
    try:
        _freeze._stage(sources, tmp_path / "stage")
    finally:
        os.umask(umask)
    found = {p.relative_to(tmp_path / "stage").as_posix(): p for p in (tmp_path / "stage").rglob("*")}
    assert sorted(found) == ["mlpack_edge", "mlpack_edge/a.py", "mlpack_edge/runtime", "mlpack_edge/runtime/b.py", "mlpack_edge/runtime/t.sql"]
    for rel, path in found.items():
        st = path.stat()
        assert (stat.S_IMODE(st.st_mode), st.st_mtime) == (
            (0o755 if path.is_dir() else 0o644), _freeze.SOURCE_DATE_EPOCH
        ), rel
        assert path.is_dir() or path.read_bytes() == sources[rel]


def _cached_runtime(root: Path, script: str, inputs: Iterable[Path] = (), warnings: str = "") -> Path:
    """Put a stand-in runtime, "frozen from" ``inputs``, into the cache slot for this machine's real key."""
    key = _freeze.runtime_key(_freeze.stage_sources())
    exe = root / "runtime" / key / _freeze.FROZEN_NAME
    exe.parent.mkdir(parents=True)
    exe.write_text(script)
    exe.chmod(0o755)
    record = record_inputs([str(p) for p in inputs], warnings)
    (exe.parent / INPUTS_NAME).write_text(json.dumps(record))
    return exe


class Recorder:
    def __init__(self) -> None:
        self.lines: list[str] = []

    def info(self, message: str) -> None:
        self.lines.append(message)


def test_cached_runtime_is_reused_without_freezing(tmp_path: Path) -> None:
    exe = _cached_runtime(tmp_path / "cache", "#!/bin/sh\nexit 0\n")
    runtime = _freeze.frozen_runtime(tmp_path / "cache")
    assert (runtime.executable, runtime.reused) == (exe, True)


def test_cached_runtime_is_stale_once_a_file_it_was_frozen_from_changes(tmp_path: Path) -> None:
    lib = tmp_path / "libssl.so.3"
    lib.write_bytes(b"\x7fELF version 1")
    entry = _cached_runtime(tmp_path / "cache", "#!/bin/sh\n", inputs=[lib]).parent
    assert stale_reason(entry) is None
    os.utime(lib, ns=(1, 1))  # touched (or copied back), same bytes: the sha256 settles it
    assert stale_reason(entry) is None
    lib.write_bytes(b"\x7fELF version 2")  # apt upgrade: same path, other bytes
    assert stale_reason(entry) == f"{lib} changed"
    lib.unlink()
    assert stale_reason(entry) == f"{lib} is gone"
    (entry / INPUTS_NAME).unlink()  # an entry from before records existed
    assert stale_reason(entry) == "it has no readable input record"


def _after_a_clock_tick(folder: Path, ctime_ns: int) -> None:
    """Return once the filesystem's clock has moved past ``ctime_ns`` (its ticks can be a few ms long)."""
    probe = folder / "clock-probe"
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        probe.write_bytes(b"tick")
        if probe.stat().st_ctime_ns > ctime_ns:
            return
        time.sleep(0.001)
    pytest.fail("the filesystem clock did not move for 10 s")


def test_cached_runtime_is_stale_once_a_file_is_rewritten_with_its_old_mtime(tmp_path: Path) -> None:
    """Same size, mtime and inode but other bytes (``cp -p``, a package manager restoring the mtime)."""
    lib = tmp_path / "libz.so.1"
    lib.write_bytes(b"\x7fELF version 1")
    entry = _cached_runtime(tmp_path / "cache", "#!/bin/sh\n", inputs=[lib]).parent
    before = lib.stat()
    _after_a_clock_tick(tmp_path, before.st_ctime_ns)
    lib.write_bytes(b"\x7fELF version 2")  # in place: the same inode
    os.utime(lib, ns=(before.st_atime_ns, before.st_mtime_ns))
    after = lib.stat()
    assert (after.st_size, after.st_mtime_ns, after.st_ino) == (before.st_size, before.st_mtime_ns, before.st_ino)
    assert stale_reason(entry) == f"{lib} changed"


def test_optional_import_installed_within_one_timestamp_tick_is_seen(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The import system caches a folder's listing until the folder's mtime changes."""
    site = tmp_path / "site"
    site.mkdir()
    monkeypatch.syspath_prepend(str(site))
    warnings = "missing module named mlpack_test_late - imported by numpy.__config__ (delayed)\n"
    entry = _cached_runtime(tmp_path / "cache", "#!/bin/sh\n", warnings=warnings).parent
    assert stale_reason(entry) is None  # (this lists ``site`` into the import system's cache)
    listed = site.stat().st_mtime_ns
    (site / "mlpack_test_late.py").write_text("")
    os.utime(site, ns=(listed, listed))  # installed within the tick the listing was taken in
    assert stale_reason(entry) == "module mlpack_test_late is installed now (frozen code imports it when present)"


def test_cached_runtime_is_stale_once_an_optional_import_becomes_available(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    warnings = (
        "missing module named mlpack_test_optional - imported by numpy.__config__ (delayed)\n"
        "missing module named 'mlpack_test_optional.sub' - imported by numpy.__config__ (delayed)\n"
        "missing module named json - imported by x (optional)\n"  # found from here: not recorded
        "excluded module named sklearn - imported by y (top-level)\n"
    )
    entry = _cached_runtime(tmp_path / "cache", "#!/bin/sh\n", warnings=warnings).parent
    assert json.loads((entry / INPUTS_NAME).read_text())["missing_modules"] == ["mlpack_test_optional"]
    assert stale_reason(entry) is None
    site = tmp_path / "site"
    site.mkdir()
    (site / "mlpack_test_optional.py").write_text("")
    monkeypatch.syspath_prepend(str(site))  # pip install: a fresh freeze would now bundle it
    assert stale_reason(entry) == "module mlpack_test_optional is installed now (frozen code imports it when present)"


def test_stale_cached_runtime_is_not_reused_and_says_why(tmp_path: Path) -> None:
    lib = tmp_path / "libsqlite3.so.0"
    lib.write_bytes(b"old")
    exe = _cached_runtime(tmp_path / "cache", "#!/bin/sh\n", inputs=[lib])
    key = exe.parent.name
    reporter = Recorder()
    reused = _freeze._reuse(exe.parent, key, reporter)
    assert reused is not None and (reused.executable, reused.reused) == (exe, True)
    lib.write_bytes(b"new")
    assert _freeze._reuse(exe.parent, key, reporter) is None
    assert reporter.lines == [f"cached device runtime {key} is out of date: {lib} changed"]


def test_build_from_cached_runtime_is_deterministic(tmp_path: Path, make_bundle: Callable[..., Path]) -> None:
    cache = tmp_path / "cache"
    runtime = _cached_runtime(cache, "#!/bin/sh\nexit 0\n")
    bundle = make_bundle("1.0.0")
    reporter = Recorder()
    first = build_executable(bundle, tmp_path / "a", reporter, cache_dir=cache)
    second = build_executable(bundle, tmp_path / "b", None, cache_dir=cache, check=False)
    assert first.name == executable_name("toy", "1.0.0") == f"toy-1.0.0-{_freeze.platform_tag()}"
    assert first.read_bytes() == second.read_bytes()
    assert stat.S_IMODE(first.stat().st_mode) == 0o755
    assert first.read_bytes().startswith(runtime.read_bytes())
    assert open_appended(first).names == ("manifest.json", "model.onnx")
    assert reporter.lines[0].startswith(f"reusing cached device runtime {runtime.parent.name} (")
    assert reporter.lines[1] == "checking the device executable (verify on this machine)…"
    assert sorted(os.listdir(tmp_path / "a")) == [first.name]  # no scratch left next to it


def test_executable_failing_its_own_verify_is_not_published(tmp_path: Path, make_bundle: Callable[..., Path]) -> None:
    cache = tmp_path / "cache"
    _cached_runtime(cache, '#!/bin/sh\necho "Error: golden set: 2 of 9 labels differ" >&2\nexit 1\n')
    with pytest.raises(PackagingError) as err:
        build_executable(make_bundle("1.0.0"), tmp_path / "dist", cache_dir=cache)
    assert str(err.value) == "the device executable fails its own verify: golden set: 2 of 9 labels differ"
    assert os.listdir(tmp_path / "dist") == []


def test_tampered_bundle_is_not_packaged(tmp_path: Path, make_bundle: Callable[..., Path]) -> None:
    bundle = make_bundle("1.0.0")
    (bundle / "model.onnx").write_bytes(b"changed after the build")
    with pytest.raises(PackagingError) as err:
        build_executable(bundle, tmp_path / "dist", cache_dir=tmp_path / "cache")
    assert str(err.value) == (
        f"cannot package bundle: {bundle}: file model.onnx does not match its sha256 in the manifest"
        " (tampered or corrupt)"
    )
    assert not (tmp_path / "cache").exists()


def test_unwritable_cache_is_a_one_line_error(tmp_path: Path, make_bundle: Callable[..., Path]) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("x")
    with pytest.raises(PackagingError) as err:
        build_executable(make_bundle("1.0.0"), tmp_path / "dist", cache_dir=blocker)
    assert str(err.value) == (
        f"cache folder {blocker / 'runtime'} is not writable (Not a directory); set MLPACK_CACHE_DIR"
    )


def test_old_cache_entries_are_pruned_but_recent_ones_kept(tmp_path: Path) -> None:
    base = tmp_path / "runtime"
    now = time.time()
    ages = {"a": 0, "b": 60, "c": 600, "d": 86400, "e": 7 * 86400}
    for name, age in ages.items():
        (base / name).mkdir(parents=True)
        (base / f"{name}.log").write_text("log")
        os.utime(base / name, (now - age, now - age))
    (base / "just-built").mkdir()
    _freeze._prune(base, keep=base / "just-built")
    # the one just built and the two most recent stay; c ranks out but was used within the hour
    assert sorted(p.name for p in base.iterdir()) == ["a", "a.log", "b", "b.log", "c", "c.log", "just-built"]
