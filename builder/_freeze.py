"""Freeze the generic device runtime once per machine and reuse it for every model.

Freezing (PyInstaller) takes about a minute; the per-model executable is this cached
runtime plus the bundle appended as a zip, which takes milliseconds. The cache entry
``<cache>/runtime/<key>/`` is keyed by everything that changes the frozen bytes: the
staged source files, the freeze recipe, the versions of Python and of every frozen
distribution, and the platform. It appears atomically (built aside, renamed into place)
under an exclusive lock, so concurrent or interrupted builds never see half an entry.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import importlib.metadata
import importlib.util
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from mlpack._fs import atomic_directory, atomic_write_text, canonical_json
from mlpack.builder import _freeze_spec
from mlpack.errors import PackagingError

__all__ = [
    "ENTRY",
    "FrozenRuntime",
    "Reporter",
    "cache_root",
    "frozen_runtime",
    "platform_tag",
    "runtime_key",
    "say",
    "stage_sources",
]

#: ``module:function`` the frozen app runs.
ENTRY = "mlpack.runtime.cli:main"
#: Name of the generic frozen app (the launcher keeps this name until installed).
FROZEN_NAME = "mlpack-device"
#: Core modules of ``mlpack`` the device side needs (nothing else from the top package).
_CORE = ("__init__.py", "errors.py", "_fs.py", "_cli.py")
#: Device-side subpackages, frozen whole.
_PACKAGES = ("runtime", "monitor_agent")
#: Distributions whose version changes the frozen bytes.
_DISTRIBUTIONS = ("numpy", "onnxruntime", "click", "psutil", "pyinstaller", "pyinstaller-hooks-contrib")
_FREEZE_TIMEOUT_S = 1800
_KEEP_ENTRIES = 3
_PRUNE_GRACE_S = 3600


class Reporter(Protocol):
    def info(self, message: str) -> None: ...


@dataclass(frozen=True)
class FrozenRuntime:
    """A cached onefile runtime with no model inside."""

    key: str
    executable: Path
    reused: bool

    @property
    def size(self) -> int:
        return self.executable.stat().st_size


def platform_tag() -> str:
    """``linux-x86_64`` style tag used in executable names and the cache key."""
    return f"{platform.system().lower()}-{platform.machine().lower()}"


def cache_root() -> Path:
    """``$MLPACK_CACHE_DIR``, else ``$XDG_CACHE_HOME/mlpack``, else ``~/.cache/mlpack``."""
    explicit = os.environ.get("MLPACK_CACHE_DIR")
    if explicit:
        return Path(explicit)
    xdg = os.environ.get("XDG_CACHE_HOME")
    return (Path(xdg) if xdg else Path.home() / ".cache") / "mlpack"


def _package_dir(module: str) -> Path:
    spec = importlib.util.find_spec(module)
    if spec is None or not spec.submodule_search_locations:
        raise PackagingError(f"cannot locate package {module} to freeze it")
    return Path(next(iter(spec.submodule_search_locations)))


def stage_sources() -> dict[str, bytes]:
    """Relative path (under ``mlpack/``) -> bytes of every file frozen into the runtime.

    Read from wherever the packages are installed (editable or not), so the staged copy
    holds exactly the device side: builder and collector cannot enter.
    """
    out: dict[str, bytes] = {}
    core = _package_dir("mlpack")
    for name in _CORE:
        out[f"mlpack/{name}"] = (core / name).read_bytes()
    for pkg in _PACKAGES:
        root = _package_dir(f"mlpack.{pkg}")
        for path in sorted(root.rglob("*")):
            rel = path.relative_to(root)
            if not path.is_file() or "__pycache__" in rel.parts or path.suffix in (".pyc", ".pyo"):
                continue
            if any(part.startswith(".") for part in rel.parts):
                continue
            out[f"mlpack/{pkg}/{rel.as_posix()}"] = path.read_bytes()
    return out


def _versions() -> dict[str, str]:
    found = {"python": sys.version, "implementation": sys.implementation.cache_tag or ""}
    for dist in _DISTRIBUTIONS:
        try:
            found[dist] = importlib.metadata.version(dist)
        except importlib.metadata.PackageNotFoundError:
            found[dist] = "absent"
    return found


def _recipe() -> str:
    """Digest of the freeze recipe itself: a changed exclude list must re-freeze."""
    h = hashlib.sha256(ENTRY.encode())
    for module in (__file__, _freeze_spec.__file__):
        h.update(Path(module).read_bytes())
    return h.hexdigest()


def runtime_key(sources: Mapping[str, bytes], versions: Mapping[str, str] | None = None) -> str:
    """Cache key: sha256 over the staged sources, versions, platform and recipe."""
    material = {
        "files": {p: hashlib.sha256(b).hexdigest() for p, b in sorted(sources.items())},
        "versions": dict(versions if versions is not None else _versions()),
        "platform": platform_tag(),
        "recipe": _recipe(),
    }
    return hashlib.sha256(canonical_json(material).encode()).hexdigest()[:24]


def frozen_runtime(
    root: Path | None = None, reporter: Reporter | None = None
) -> FrozenRuntime:
    """The cached runtime for this machine's sources and versions, freezing it if needed."""
    sources = stage_sources()
    key = runtime_key(sources)
    base = (root or cache_root()) / "runtime"
    entry = base / key
    executable = entry / FROZEN_NAME
    if executable.is_file():
        _touch(entry)
        return FrozenRuntime(key, executable, reused=True)
    if importlib.util.find_spec("PyInstaller") is None:
        raise PackagingError("PyInstaller is not installed here: pip install 'mlpack[build]' (or build with --no-executable)")
    try:
        base.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise PackagingError(f"cache folder {base} is not writable ({exc.strerror}); set MLPACK_CACHE_DIR") from None
    with _locked(base / f".{key}.lock"):
        if executable.is_file():  # another build froze it while we waited
            return FrozenRuntime(key, executable, reused=True)
        say(reporter, "freezing the device runtime (first build with this runtime, cached afterwards)…")
        with atomic_directory(entry, replace=True) as tmp:
            _freeze(sources, tmp, log=base / f"{key}.log")
            info = {"key": key, "versions": _versions(), "platform": platform_tag()}
            atomic_write_text(tmp / "key.json", canonical_json(info))
    _prune(base, keep=entry)
    return FrozenRuntime(key, executable, reused=False)


def _touch(entry: Path) -> None:
    """Mark a cache entry as used (pruning keeps the most recently used)."""
    with contextlib.suppress(OSError):
        os.utime(entry)


def _prune(base: Path, keep: Path) -> None:
    """Keep the newest few entries: each is ~40 MB and every runtime source edit makes one.

    Entries used within the last hour stay whatever their rank (a concurrent build may be
    reading one right now).
    """
    entries = sorted(
        (p for p in base.iterdir() if p.is_dir() and not p.name.startswith(".") and p != keep),
        key=lambda p: p.stat().st_mtime,
        reverse=True,
    )
    cutoff = time.time() - _PRUNE_GRACE_S
    for old in entries[_KEEP_ENTRIES - 1 :]:
        if old.stat().st_mtime < cutoff:
            shutil.rmtree(old, ignore_errors=True)
            for leftover in (base / f"{old.name}.log", base / f".{old.name}.lock"):
                leftover.unlink(missing_ok=True)


def _freeze(sources: Mapping[str, bytes], out_dir: Path, log: Path) -> None:
    """Run PyInstaller on a staged copy of ``sources``; leave the onefile in ``out_dir``."""
    uses = _freeze_spec.excluded_uses(sources)
    if uses:
        raise PackagingError(
            f"the device runtime uses modules the executable leaves out: {', '.join(uses)}"
            " (remove the use, or change EXCLUDES in mlpack/builder/_freeze_spec.py)"
        )
    with tempfile.TemporaryDirectory(prefix="mlpack-freeze-") as scratch:
        work = Path(scratch)
        stage = work / "stage"
        for rel, data in sources.items():
            target = stage / rel
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_bytes(data)
        module, func = ENTRY.split(":")
        script = work / "device_main.py"
        script.write_text(f"from {module} import {func}\n\n{func}()\n")
        spec = work / "device.spec"
        spec.write_text(
            _freeze_spec.render_spec(
                name=FROZEN_NAME,
                script=str(script),
                stage=str(stage),
                hiddenimports=_modules(sources),
                datas=_datas(sources, stage),
            )
        )
        cmd = [
            sys.executable, "-m", "PyInstaller", "--noconfirm", "--log-level", "WARN",
            "--distpath", str(work / "dist"), "--workpath", str(work / "build"), str(spec),
        ]
        env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PYTHONHOME")}
        try:
            proc = subprocess.run(
                cmd, cwd=work, env=env, capture_output=True, text=True, timeout=_FREEZE_TIMEOUT_S
            )
        except subprocess.TimeoutExpired:
            raise PackagingError(f"freezing the device runtime took over {_FREEZE_TIMEOUT_S} s; gave up") from None
        atomic_write_text(log, proc.stdout + proc.stderr)
        built = work / "dist" / f"{FROZEN_NAME}-onefile"
        if proc.returncode != 0 or not built.is_file():
            lines = [ln for ln in proc.stderr.splitlines() if ln.strip()]
            last = lines[-1].strip() if lines else "no output"
            raise PackagingError(
                f"freezing the device runtime failed (PyInstaller exit {proc.returncode}): {last}; full log: {log}"
            )
        shutil.copyfile(built, out_dir / FROZEN_NAME)
        os.chmod(out_dir / FROZEN_NAME, 0o755)


def _modules(sources: Mapping[str, bytes]) -> list[str]:
    """Every staged module, as hidden imports: the CLI loads subcommands by name."""
    names = []
    for rel in sources:
        if not rel.endswith(".py"):
            continue
        parts = rel[: -len(".py")].split("/")
        if parts[-1] == "__init__":
            parts = parts[:-1]
        names.append(".".join(parts))
    return sorted(names)


def _datas(sources: Mapping[str, bytes], stage: Path) -> list[tuple[str, str]]:
    """Non-Python package files (templates, SQL...), at their package location."""
    return sorted(
        (str(stage / rel), str(Path(rel).parent)) for rel in sources if not rel.endswith(".py")
    )


@contextlib.contextmanager
def _locked(path: Path) -> Iterator[None]:
    with open(path, "a+b") as fh:
        fcntl.flock(fh.fileno(), fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh.fileno(), fcntl.LOCK_UN)


def say(reporter: Reporter | None, message: str) -> None:
    """Report progress to ``reporter`` (anything with ``info(str)``), if there is one."""
    if reporter is not None:
        reporter.info(message)
