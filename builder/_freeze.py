"""Freeze the generic device runtime once per machine and reuse it for every model.

Freezing (PyInstaller) takes 15-60 s; the per-model executable is this cached runtime
plus the bundle appended as a zip, which takes milliseconds. The cache entry
``<cache>/runtime/<key>/`` is keyed by the staged source files, the freeze recipe, the
versions of Python and of the main frozen distributions, the byte-rewriting tools, the
platform and the Python environment (``sys.prefix``: an entry's input record names that
environment's files, so two virtualenvs sharing ``~/.cache/mlpack`` never check or
replace each other's entries); it also records every other file the freeze read
(:mod:`mlpack_edge.builder._freeze_inputs`) and is frozen again when one changed, so a cached
runtime is always byte-identical to a fresh one. It appears atomically (built aside,
renamed into place) under an exclusive lock, so concurrent or interrupted builds never
see half an entry.

Where: by default PyInstaller runs with this Python, so the runtime needs this machine's
glibc; ``floor="glibc-2.31"`` and any foreign ``target`` run it inside a Debian 11 build
root instead (:mod:`mlpack_edge.builder._buildroot`; a foreign architecture under qemu), and
``mlpack runtime import`` adds a runtime frozen on a device
(:mod:`mlpack_edge.builder._runtime_import`). Every entry's ``key.json`` records its target
and the glibc floor read from its ELF files (:mod:`mlpack_edge.builder._glibc`). Both
executables start with mlpack's rebuilt bootloader (:mod:`mlpack_edge.builder._bootloader`),
whose marker the spec sets to that floor: below it a device refuses in one line. PyInstaller's
phases are reported as progress lines while it runs.

Reproducibility: two clean builds (empty caches) of the same spec and data on the same
machine give a byte-identical executable. Every input to the freeze is fixed:

* staged sources: written in sorted order, mode 0644 (folders 0755), mtime
  :data:`SOURCE_DATE_EPOCH`, under a random scratch folder whose path never reaches the
  output (PyInstaller rewrites every ``co_filename`` to the module's relative path; the
  slow test scans every unpacked entry for the scratch and site-packages paths);
* the PyInstaller process: ``PYTHONHASHSEED=0`` (set and frozenset order inside code
  objects), ``SOURCE_DATE_EPOCH``, zlib level 9 (``PYINSTALLER_ZLIB_COMPRESSION_LEVEL``,
  whatever the caller's environment says), no ``PYTHONPATH``/``PYTHONHOME``/
  ``PYTHONOPTIMIZE`` (the spec pins the level, :data:`~mlpack_edge.builder._freeze_spec.OPTIMIZE`,
  as well; the level is part of the cache key, so a runtime frozen at another level is never
  reused);
* ``.pyc`` files: PyInstaller writes unchecked hash-based pycs with a zeroed source hash,
  so no source mtime or size is inside;
* archive order: PyInstaller sorts its TOC; the spec text is sorted JSON; the appended
  bundle zip is deterministic (:mod:`mlpack_edge.runtime.embedded`).

Measured on Linux x86_64 (PyInstaller 6.22, two clean freezes with different hash
seeds, umasks, TMPDIR, locale and working directory): ``cmp`` finds no differing byte,
so there is no unstable byte to document *on one machine*. Across machines the runtime
part is expected to differ wherever its inputs differ (another distribution's libssl,
another binutils' ``strip`` output, another zlib's deflate stream): that is a
different input, not an unstable build. The stable identities of a file are therefore
the three sha256s of :func:`mlpack_edge.runtime.embedded.executable_identity`: the whole file
(same machine), the runtime part (same for every model built with one cached runtime),
and the bundle (``manifest.json``, which lists every bundle file's sha256: the model's
identity wherever it was packaged).
"""

from __future__ import annotations

import contextlib
import hashlib
import importlib.metadata
import importlib.util
import json
import os
import platform
import re
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from mlpack_edge._fs import atomic_directory, atomic_write_text, canonical_json, locked
from mlpack_edge.builder import _bootloader, _buildroot, _freeze_inputs, _freeze_spec, _glibc
from mlpack_edge.errors import PackagingError

__all__ = [
    "ENTRY",
    "FLOORS",
    "TARGETS",
    "SOURCE_DATE_EPOCH",
    "FrozenRuntime",
    "Reporter",
    "cache_root",
    "frozen_runtime",
    "key_material",
    "runtime_entries",
    "import_expectations",
    "sources_digest",
    "platform_tag",
    "runtime_key",
    "say",
    "stage_sources",
]

#: ``module:function`` the frozen app runs (the command line, with start-up's garbage collection
#: paused: see :mod:`mlpack_edge.runtime._startup`).
ENTRY = "mlpack_edge.runtime._startup:run"
#: Name of the generic frozen app (the launcher keeps this name until installed).
FROZEN_NAME = "mlpack-device"
#: Core modules of ``mlpack`` the device side needs (nothing else from the top package).
_CORE = ("__init__.py", "errors.py", "_fs.py", "_cli.py", "_lazy.py", "_record.py", "_digest.py")
#: Device-side subpackages, frozen whole.
_PACKAGES = ("runtime", "monitor_agent")
#: Distributions whose version changes the frozen bytes.
_DISTRIBUTIONS = ("numpy", "onnxruntime", "click", "psutil", "pyinstaller", "pyinstaller-hooks-contrib")
#: Tools that rewrite frozen bytes (found on PATH; which one is part of the key).
_TOOLS = ("strip", "objcopy")
#: 1980-01-01T00:00:00Z (the appended zip's time too): mtime of staged files and
#: ``SOURCE_DATE_EPOCH`` of the freeze.
SOURCE_DATE_EPOCH = 315532800
#: Environment of the PyInstaller process: removed (they would change the bytes or what is
#: found) and pinned.
_ENV_REMOVED = ("PYTHONPATH", "PYTHONHOME", "PYTHONOPTIMIZE")
_ENV_PINNED = {
    "PYTHONHASHSEED": "0",
    "SOURCE_DATE_EPOCH": str(SOURCE_DATE_EPOCH),
    "PYINSTALLER_ZLIB_COMPRESSION_LEVEL": "9",
}
#: Name of the spec (PyInstaller names its work folder and warn file after it).
_SPEC_NAME = "device"
_FREEZE_TIMEOUT_S = 1800
#: Under qemu-user every step runs emulated (several times slower).
_EMULATED_FREEZE_TIMEOUT_S = 7200
_KEEP_ENTRIES = 3
_PRUNE_GRACE_S = 3600
#: ``--floor`` values (see :mod:`mlpack_edge.builder._buildroot`).
FLOORS = _buildroot.FLOORS
#: ``--target`` values: the host's, and any other a build root can be made for under qemu.
TARGETS = _buildroot.TARGETS
#: PyInstaller's INFO lines that start a phase worth a progress line (pattern -> what to say).
_PHASES = (
    (re.compile(r"Analyzing modules for base_library"), "analysing the standard library"),
    (re.compile(r"Analyzing /"), "analysing the runtime's imports"),
    (re.compile(r"Looking for dynamic libraries"), "collecting shared libraries"),
    (re.compile(r"Building COLLECT "), "writing the installed layout"),
    (re.compile(r"Building PKG \(CArchive\) \S+-onefile\.pkg$"), "compressing the download (the longest step)"),
    (re.compile(r"Building EXE from EXE-01\.toc$"), "writing the download"),
)


class Reporter(Protocol):
    def info(self, message: str) -> None: ...


@dataclass(frozen=True)
class FrozenRuntime:
    """A cached onefile runtime with no model inside."""

    key: str
    executable: Path
    reused: bool
    #: ``linux-x86_64`` style: what the executable runs on.
    target: str = ""
    #: Highest ``GLIBC_x.y`` any ELF file of the runtime needs (``None``: none read).
    glibc_floor: str | None = None

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
    """Relative path (under ``mlpack_edge/``) -> bytes of every file frozen into the runtime.

    Read from wherever the packages are installed (editable or not), so the staged copy
    holds exactly the device side: builder and collector cannot enter.
    """
    out: dict[str, bytes] = {}
    core = _package_dir("mlpack_edge")
    for name in _CORE:
        out[f"mlpack_edge/{name}"] = (core / name).read_bytes()
    for pkg in _PACKAGES:
        root = _package_dir(f"mlpack_edge.{pkg}")
        for path in sorted(root.rglob("*")):
            rel = path.relative_to(root)
            if not path.is_file() or "__pycache__" in rel.parts or path.suffix in (".pyc", ".pyo"):
                continue
            if any(part.startswith(".") for part in rel.parts):
                continue
            out[f"mlpack_edge/{pkg}/{rel.as_posix()}"] = path.read_bytes()
    return out


def _versions() -> dict[str, str]:
    found = {"python": sys.version, "implementation": sys.implementation.cache_tag or "", "environment": sys.prefix}
    for dist in _DISTRIBUTIONS:
        try:
            found[dist] = importlib.metadata.version(dist)
        except importlib.metadata.PackageNotFoundError:
            found[dist] = "absent"
    for tool in _TOOLS:
        found[tool] = shutil.which(tool) or "absent"
    found["bootloader"] = _bootloader.recipe_key(found["pyinstaller"])
    return found


def _recipe() -> str:
    """Digest of the freeze recipe itself: a changed exclude list must re-freeze."""
    h = hashlib.sha256(ENTRY.encode())
    for module in (__file__, _freeze_spec.__file__, _glibc.__file__):
        h.update(Path(module).read_bytes())
    return h.hexdigest()


def sources_digest(sources: Mapping[str, bytes]) -> str:
    """One sha256 over the staged device-side sources: an imported runtime must carry today's."""
    files = {p: hashlib.sha256(b).hexdigest() for p, b in sorted(sources.items())}
    return hashlib.sha256(canonical_json(files).encode()).hexdigest()


def key_material(
    sources: Mapping[str, bytes], versions: Mapping[str, str] | None = None, target: str | None = None
) -> dict[str, Any]:
    """What the cache key is a digest of: each staged file's sha256, versions, platform, recipe.

    Public so that a caller whose build froze where it expected a reuse can say what changed.
    """
    return {
        "files": {p: hashlib.sha256(b).hexdigest() for p, b in sorted(sources.items())},
        "versions": dict(versions if versions is not None else _versions()),
        "platform": target or platform_tag(),
        "recipe": _recipe(),
        # Also inside the recipe's digest; named so a changed level shows in key_changes().
        "optimize": [_freeze_spec.OPTIMIZE, _freeze_spec.DOCSTRING_OPTIMIZE],
    }


def runtime_key(
    sources: Mapping[str, bytes], versions: Mapping[str, str] | None = None, target: str | None = None
) -> str:
    """Cache key: sha256 over :func:`key_material`."""
    return hashlib.sha256(canonical_json(key_material(sources, versions, target)).encode()).hexdigest()[:24]


def _pins() -> dict[str, str]:
    """This machine's versions of what the build root installs: the runtime matches the host's."""
    versions = _versions()
    return {d: versions[d] for d in _DISTRIBUTIONS if versions[d] != "absent"}


def frozen_runtime(
    root: Path | None = None, reporter: Reporter | None = None, *, floor: str = "host", target: str | None = None
) -> FrozenRuntime:
    """The cached runtime for this machine's sources and versions, freezing it if needed.

    ``floor`` is ``host`` (freeze with this Python: the executable needs this machine's
    glibc) or ``glibc-2.31`` (freeze inside a Debian 11 build root, made and cached on
    first use: see :mod:`mlpack_edge.builder._buildroot`). ``target`` (default: this
    machine's) other than this machine's is always frozen in its build root, under qemu.
    A cached entry is reused only
    while every file it was frozen from is unchanged
    (:func:`mlpack_edge.builder._freeze_inputs.stale_reason`); otherwise it is frozen again.
    """
    if floor not in FLOORS:
        raise PackagingError(f"unknown floor {floor!r} (expected one of: {', '.join(FLOORS)})")
    target = target or platform_tag()
    if target not in TARGETS:
        raise PackagingError(f"unknown target {target!r} (expected one of: {', '.join(TARGETS)})")
    if target != platform_tag():
        floor = FLOORS[1]  # a foreign runtime can only come from its build root
    cache = root or cache_root()
    sources = stage_sources()
    if target != platform_tag() and _buildroot.root_problem(target) is not None:
        return _imported(cache, target, sources, str(_buildroot.root_problem(target)))
    buildroot = None
    versions = _versions()
    if floor != "host":
        if importlib.util.find_spec("PyInstaller") is None:
            raise PackagingError("PyInstaller is not installed here: pip install 'mlpack-edge[build]' (or build with --no-executable)")
        buildroot = _buildroot.build_root(cache, _pins(), reporter, target=target)
        versions = {**buildroot.versions, "environment": str(buildroot.path), "floor": floor}
        versions["bootloader"] = _bootloader.recipe_key(buildroot.versions.get("pyinstaller"), cross=buildroot.foreign)
    key = runtime_key(sources, versions, target)
    base = cache / "runtime"
    entry = base / key
    cached = _reuse(entry, key)
    if cached is not None:
        return cached
    if importlib.util.find_spec("PyInstaller") is None:
        raise PackagingError("PyInstaller is not installed here: pip install 'mlpack-edge[build]' (or build with --no-executable)")
    try:
        base.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise PackagingError(f"cache folder {base} is not writable ({exc.strerror}); set MLPACK_CACHE_DIR") from None
    with locked(base / f".{key}.lock"):
        cached = _reuse(entry, key, reporter)  # another build may have frozen it while we waited
        if cached is not None:
            return cached
        where = "" if buildroot is None else f" for {target} in the Debian {_buildroot.SUITE} build root"
        if buildroot is not None and target != platform_tag():
            where += " (emulated by qemu: several minutes)"
        bootloader = _patched_bootloader(buildroot, cache, reporter)
        say(reporter, f"freezing the device runtime{where} (first build with this runtime, cached afterwards)…")
        with atomic_directory(entry, replace=True) as tmp:
            glibc = _freeze(
                sources, tmp, log=base / f"{key}.log", reporter=reporter, buildroot=buildroot, bootloader=bootloader
            )
            info = {
                "key": key, "versions": versions, "platform": target, "floor": floor, "glibc_floor": glibc,
                "bootloader": bootloader.key if bootloader is not None else "stock",
            }
            atomic_write_text(tmp / "key.json", canonical_json(info))
    _prune(base, keep=entry)
    return FrozenRuntime(key, entry / FROZEN_NAME, reused=False, target=target, glibc_floor=glibc)


def _patched_bootloader(
    buildroot: _buildroot.BuildRoot | None, cache: Path, reporter: Reporter | None
) -> _bootloader.Bootloader | None:
    """mlpack's bootloader (one-line refusal on an old glibc) for this freeze.

    For a build root a failure is an error: this architecture's root has gcc and zlib's
    headers, and a foreign root's bootloader is cross-compiled here with the cross gcc its
    CPython needed already. On the host the freeze goes on with PyInstaller's stock
    bootloader (an old device then fails with the dynamic loader's message), and says so.
    """
    try:
        version = buildroot.versions.get("pyinstaller") if buildroot is not None else None
        return _bootloader.build_bootloader(buildroot, cache, pyinstaller=version, reporter=reporter)
    except PackagingError as exc:
        if buildroot is not None:
            raise
        say(reporter, f"warning: freezing with PyInstaller's stock bootloader (no one-line glibc refusal): {exc}")
        return None


def import_expectations(sources: Mapping[str, bytes] | None = None) -> dict[str, str]:
    """What a runtime frozen elsewhere must match to serve models built here."""
    return {
        "sources": sources_digest(sources if sources is not None else stage_sources()),
        "python": "%d.%d" % sys.version_info[:2],
        "onnxruntime": _versions()["onnxruntime"],
    }


def _imported(cache: Path, target: str, sources: Mapping[str, bytes], problem: str) -> FrozenRuntime:
    """The newest imported runtime for ``target`` that fits today's sources and versions, or a one-line error."""
    from mlpack_edge.builder._runtime_import import imported_runtimes

    expected = import_expectations(sources)
    for exe, info in imported_runtimes(cache, target):
        versions = info.get("versions") or {}
        got_python = ".".join(str(versions.get("python", "")).split(".")[:2])
        if (versions.get("sources"), got_python, versions.get("onnxruntime")) == (
            expected["sources"], expected["python"], expected["onnxruntime"]
        ):
            _touch(exe.parent)
            return FrozenRuntime(str(info["key"]), exe, reused=True, target=target, glibc_floor=info.get("glibc_floor"))
    raise PackagingError(
        f"no {target} runtime for this mlpack-edge in the cache, and none can be frozen here ({problem});"
        f" make one with `mlpack runtime freeze --target {target}` where that works, or run `mlpack runtime freeze`"
        f" on a {target} device and `mlpack runtime import FILE --target {target}` here"
    )


def runtime_entries(cache: Path) -> list[dict[str, Any]]:
    """The finished runtimes cached under ``cache`` (newest first), for ``mlpack runtime list``."""
    base = cache / "runtime"
    rows = []
    entries = [p for p in base.iterdir() if p.is_dir() and not p.name.startswith(".")] if base.is_dir() else []
    for entry in sorted(entries, key=lambda p: p.stat().st_mtime, reverse=True):
        exe = entry / FROZEN_NAME
        try:
            info = json.loads((entry / "key.json").read_text(encoding="utf-8"))
            size = exe.stat().st_size
        except (OSError, ValueError):
            continue
        versions = info.get("versions") or {}
        rows.append(
            {
                "key": entry.name,
                "target": info.get("platform", "?"),
                "floor": info.get("floor", "host"),
                "glibc_floor": info.get("glibc_floor"),
                "python": str(versions.get("python", "?")).split()[0],
                "onnxruntime": versions.get("onnxruntime", "?"),
                "size": size,
                "path": str(exe),
            }
        )
    return rows


def _reuse(entry: Path, key: str, reporter: Reporter | None = None) -> FrozenRuntime | None:
    """The runtime cached in ``entry`` if it is there and still what a fresh freeze would give."""
    executable = entry / FROZEN_NAME
    if not executable.is_file():
        return None
    stale = _freeze_inputs.stale_reason(entry)
    if stale is not None:
        say(reporter, f"cached device runtime {key} is out of date: {stale}")
        return None
    _touch(entry)
    try:
        info = json.loads((entry / "key.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        info = {}
    return FrozenRuntime(
        key, executable, reused=True, target=str(info.get("platform") or platform_tag()), glibc_floor=info.get("glibc_floor")
    )


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
        (p for p in base.iterdir() if p.is_dir() and not p.name.startswith((".", "imported-")) and p != keep),
        key=lambda p: p.stat().st_mtime,
        reverse=True,
    )
    cutoff = time.time() - _PRUNE_GRACE_S
    for old in entries[_KEEP_ENTRIES - 1 :]:
        if old.stat().st_mtime < cutoff:
            shutil.rmtree(old, ignore_errors=True)
            for leftover in (base / f"{old.name}.log", base / f".{old.name}.lock"):
                leftover.unlink(missing_ok=True)


def _freeze(
    sources: Mapping[str, bytes],
    out_dir: Path,
    log: Path,
    reporter: Reporter | None = None,
    buildroot: _buildroot.BuildRoot | None = None,
    bootloader: _bootloader.Bootloader | None = None,
) -> str | None:
    """Run PyInstaller on a staged copy of ``sources``; leave the onefile in ``out_dir``.

    With ``buildroot`` PyInstaller runs inside it (the scratch folder lives in the root's
    ``/tmp`` so both sides see it). With ``bootloader`` (built for that root or this
    machine) both executables start with it, its glibc marker set to the floor. Returns
    the runtime's glibc floor, read from every ELF file it holds.
    """
    uses = _freeze_spec.excluded_uses(sources)
    if uses:
        raise PackagingError(
            f"the device runtime uses modules the executable leaves out: {', '.join(uses)}"
            " (remove the use, or change EXCLUDES in mlpack/builder/_freeze_spec.py)"
        )
    scratch_parent = None if buildroot is None else buildroot.path / "tmp"
    inside = (lambda p: str(p)) if buildroot is None else buildroot.inside
    with tempfile.TemporaryDirectory(prefix="mlpack-freeze-", dir=scratch_parent) as scratch:
        work = Path(scratch)
        stage = work / "stage"
        module, func = ENTRY.split(":")
        script = work / "device_main.py"
        inputs = work / "inputs.json"
        _stage(sources, stage)
        _write_fixed(script, f"from {module} import {func}\n\n{func}()\n".encode())
        reader = work / "_mlpack_glibc.py"
        _write_fixed(reader, Path(_glibc.__file__).read_bytes())
        spec = work / f"{_SPEC_NAME}.spec"
        spec.write_text(
            _freeze_spec.render_spec(
                name=FROZEN_NAME,
                script=inside(script),
                stage=inside(stage),
                scratch=inside(work),
                inputs=inside(inputs),
                hiddenimports=_modules(sources),
                datas=[(inside(Path(src)), dest) for src, dest in _datas(sources, stage)],
                sources=sources_digest(sources),
                bootloader=bootloader.path if bootloader is not None else "",
                glibc_reader=inside(reader),
                docstring_modules=_freeze_spec.docstring_modules(sources),
            )
        )
        argv = [
            "-m", "PyInstaller", "--noconfirm", "--log-level", "INFO",
            "--distpath", inside(work / "dist"), "--workpath", inside(work / "build"), inside(spec),
        ]
        if buildroot is None:
            cmd = [sys.executable, *argv]
            env: dict[str, str] | None = {k: v for k, v in os.environ.items() if k not in _ENV_REMOVED} | _ENV_PINNED
        else:
            cmd = buildroot.command([buildroot.python, *argv], cwd=inside(work), env=_ENV_PINNED)
            env = None
        emulated = buildroot is not None and buildroot.arch != _buildroot.host_arch()
        timeout = _EMULATED_FREEZE_TIMEOUT_S if emulated else _FREEZE_TIMEOUT_S
        returncode, output = _run_pyinstaller(cmd, work, env, reporter, timeout)
        atomic_write_text(log, output)
        built = work / "dist" / f"{FROZEN_NAME}-onefile"
        if returncode != 0 or not built.is_file():
            lines = [ln for ln in output.splitlines() if ln.strip()]
            last = lines[-1].strip() if lines else "no output"
            raise PackagingError(
                f"freezing the device runtime failed (PyInstaller exit {returncode}): {last}; full log: {log}"
            )
        shutil.copyfile(built, out_dir / FROZEN_NAME)
        os.chmod(out_dir / FROZEN_NAME, 0o755)
        outside = None if buildroot is None else buildroot.outside
        _record(inputs, work / "build" / _SPEC_NAME / f"warn-{_SPEC_NAME}.txt", out_dir, outside)
        onedir = work / "dist" / FROZEN_NAME
        floor = _glibc.glibc_floor([built, *(p for p in sorted(onedir.rglob("*")) if p.is_file() and not p.is_symlink())])
        if bootloader is not None:
            _check_marker(built, onedir / FROZEN_NAME, floor)
        return floor


def _check_marker(onefile: Path, launcher: Path, floor: str | None) -> None:
    """Both executables refuse below exactly the floor measured over what was frozen."""
    for exe in (onefile, launcher):
        marked = _bootloader.marker_floor(exe.read_bytes())
        if marked != (floor or "0.0"):
            raise PackagingError(
                f"the frozen {exe.name} refuses below glibc {marked}, but the runtime needs {floor}:"
                " the spec's floor and the measured one disagree (mlpack bug)"
            )


def _run_pyinstaller(
    cmd: list[str], cwd: Path, env: dict[str, str] | None, reporter: Reporter | None, timeout: float = _FREEZE_TIMEOUT_S
) -> tuple[int, str]:
    """Run PyInstaller, turning its phase lines into progress lines; its exit code and whole output.

    A freeze takes from 15 s to minutes and printed nothing meanwhile: each phase of
    :data:`_PHASES` is reported once, with the seconds elapsed.
    """
    started = time.monotonic()
    seen: set[str] = set()
    lines: list[str] = []
    deadline = started + timeout
    with subprocess.Popen(
        cmd, cwd=cwd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
        text=True, errors="replace",
    ) as proc:
        assert proc.stdout is not None
        for line in proc.stdout:
            lines.append(line)
            message = line.rstrip("\n").split("INFO: ", 1)[-1]
            for pattern, what in _PHASES:
                if pattern.match(message) and what not in seen:
                    seen.add(what)
                    say(reporter, f"  freezing: {what} ({time.monotonic() - started:.0f} s)")
            if time.monotonic() > deadline:
                proc.kill()
                raise PackagingError(f"freezing the device runtime took over {timeout:.0f} s; gave up")
        returncode = proc.wait()
    return returncode, "".join(lines)


def _record(inputs: Path, warnings: Path, out_dir: Path, outside: Callable[[str], str] | None = None) -> None:
    """Write the entry's input record from the spec's file list and PyInstaller's warn file.

    ``outside`` maps a path the build root's PyInstaller saw to the host's path of that file.
    """
    try:
        files = json.loads(inputs.read_text(encoding="utf-8"))
        if outside is not None:
            files = [outside(f) for f in files]
        record = _freeze_inputs.record_inputs(files, warnings.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise PackagingError(f"cannot record what the device runtime was frozen from: {exc}") from None
    atomic_write_text(out_dir / _freeze_inputs.INPUTS_NAME, canonical_json(record))


def _stage(sources: Mapping[str, bytes], stage: Path) -> None:
    """Write ``sources`` under ``stage`` in sorted order, folders 0755, metadata fixed."""
    for rel in sorted(sources):
        _write_fixed(stage / rel, sources[rel])
    for folder in sorted(p for p in stage.rglob("*") if p.is_dir()):
        os.chmod(folder, 0o755)
        os.utime(folder, (SOURCE_DATE_EPOCH, SOURCE_DATE_EPOCH))


def _write_fixed(path: Path, data: bytes) -> None:
    """Mode 0644 and mtime :data:`SOURCE_DATE_EPOCH` whatever the umask and the clock."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    os.chmod(path, 0o644)
    os.utime(path, (SOURCE_DATE_EPOCH, SOURCE_DATE_EPOCH))


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


def say(reporter: Reporter | None, message: str) -> None:
    """Report progress to ``reporter`` (anything with ``info(str)``), if there is one."""
    if reporter is not None:
        reporter.info(message)
