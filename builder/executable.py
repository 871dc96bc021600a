"""The last build stage: one device executable per model, ``dist/<name>-<version>-<platform>``.

It is the cached, model-free frozen runtime (see :mod:`mlpack_edge.builder._freeze`) with the
bundle appended as a deterministic zip (see :mod:`mlpack_edge.runtime.embedded`): after the
first build on a machine, a new model costs a file copy, not a PyInstaller run. Before
the file is published it runs its own ``verify`` once, so a runtime that cannot load
this model never reaches a device. Two clean builds of one spec and data on one machine
give the same bytes; :func:`executable_identity` (re-exported from
:mod:`mlpack_edge.runtime.embedded`) gives the hashes that identify one (for ``mlpack inspect``).
"""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Any

from mlpack_edge._fs import atomic_write_bytes
from mlpack_edge.builder._freeze import FrozenRuntime, Reporter, frozen_runtime, platform_tag, say
from mlpack_edge.errors import MlpackError, PackagingError
from mlpack_edge.runtime.embedded import LAUNCHER_DATA_NAME, append_bundle, executable_identity, open_appended
from mlpack_edge.runtime.install import verify_failure
from mlpack_edge.runtime.manifest import MANIFEST_NAME, SIGNATURE_NAME, read_manifest, verify_files

__all__ = [
    "build_executable",
    "device_runtime",
    "executable_name",
    "executable_contents",
    "executable_identity",
    "frozen_runtime",
    "FrozenRuntime",
]


def executable_name(name: str, version: str, target: str | None = None) -> str:
    """``<name>-<version>-<target>``, the file an engineer copies to a device (target: this machine's)."""
    return f"{name}-{version}-{target or platform_tag()}"


def build_executable(
    bundle_dir: Path,
    dist_dir: Path,
    reporter: Reporter | None = None,
    *,
    cache_dir: Path | None = None,
    check: bool = True,
    floor: str = "host",
    target: str | None = None,
    runtime: FrozenRuntime | None = None,
) -> Path:
    """Write the device executable for the bundle in ``bundle_dir`` into ``dist_dir``.

    ``reporter`` is anything with ``info(str)`` (or ``None``). ``cache_dir`` overrides
    the runtime cache (default :func:`mlpack_edge.builder._freeze.cache_root`). With ``check``
    the finished file runs ``verify`` on itself before it is published. ``floor``
    (``host`` or ``glibc-2.31``) chooses where the runtime is frozen
    (:func:`mlpack_edge.builder._freeze.frozen_runtime`); the target and the glibc floor
    read from the runtime's ELF files are recorded in the trailer (``mlpack inspect``).
    ``target`` (default: this machine's) other than this machine's is frozen in, and
    checked inside, its build root under qemu. ``runtime`` is one :func:`device_runtime`
    already gave (the pipeline freezes first: the floor goes into the signed manifest).
    """
    bundle_dir, dist_dir = Path(bundle_dir), Path(dist_dir).absolute()
    try:
        manifest = read_manifest(bundle_dir)
        files = {MANIFEST_NAME: manifest.raw}
        verify_files(manifest, lambda n: files.setdefault(n, (bundle_dir / n).read_bytes()), str(bundle_dir))
        if (bundle_dir / SIGNATURE_NAME).is_file():
            files[SIGNATURE_NAME] = (bundle_dir / SIGNATURE_NAME).read_bytes()
    except MlpackError as exc:
        raise PackagingError(f"cannot package bundle: {exc}") from None
    except OSError as exc:
        raise PackagingError(f"cannot package bundle {bundle_dir}: {exc.strerror or exc}") from None
    target = target or platform_tag()
    if runtime is None:
        runtime = device_runtime(cache_dir, reporter, floor=floor, target=target)
    facts = {"target": runtime.target or platform_tag()}
    if runtime.glibc_floor:
        facts["glibc_floor"] = runtime.glibc_floor
    data = append_bundle(runtime.executable.read_bytes(), files, facts)
    out = dist_dir / executable_name(manifest.name, manifest.version, target)
    try:
        if check and target != platform_tag():
            _foreign_self_check(data, out.name, target, cache_dir, reporter)
        elif check:
            _self_check(data, out.parent, out.name, reporter)
        atomic_write_bytes(out, data, mode=0o755)
    except OSError as exc:
        raise PackagingError(f"cannot write {out}: {exc.strerror or exc}") from None
    return out


def device_runtime(
    cache_dir: Path | None, reporter: Reporter | None, *, floor: str = "host", target: str | None = None
) -> FrozenRuntime:
    """The frozen runtime for ``target`` (cached or frozen now), with the glibc it needs said in the output.

    A ``host`` runtime needs this machine's glibc: the line says so and how to get an older floor.
    """
    runtime = frozen_runtime(cache_dir, reporter, floor=floor, target=target)
    if runtime.reused:
        say(reporter, f"reusing cached device runtime {runtime.key} ({_mb(runtime.size)})")
    if runtime.glibc_floor and floor == "host" and (target or platform_tag()) == platform_tag():
        say(
            reporter,
            f"the device executable needs glibc {runtime.glibc_floor} or newer (this machine's); for older devices"
            " build with --floor glibc-2.31 (frozen in a Debian 11 root: needs root and mmdebstrap)",
        )
    elif runtime.glibc_floor:
        say(reporter, f"the device executable needs glibc {runtime.glibc_floor} or newer")
    return runtime


def _self_check(data: bytes, dist_dir: Path, name: str, reporter: Reporter | None) -> None:
    """Run the finished executable's ``verify`` from a scratch copy; refuse to publish on failure."""
    say(reporter, "checking the device executable (verify on this machine)…")
    # Next to the output, not in /tmp: /tmp may be mounted noexec.
    dist_dir.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix=".mlpack-check-", dir=dist_dir) as scratch:
        exe = Path(scratch) / name
        exe.write_bytes(data)
        exe.chmod(0o755)
        reason = verify_failure(exe)
    if reason is not None:
        raise PackagingError(f"the device executable fails its own verify: {reason}")


def _foreign_self_check(data: bytes, name: str, target: str, cache_dir: Path | None, reporter: Reporter | None) -> None:
    """``verify`` of an executable for another architecture, inside its build root under qemu."""
    import subprocess

    from mlpack_edge.builder import _buildroot
    from mlpack_edge.builder._freeze import _pins, cache_root
    from mlpack_edge.runtime._audit import NO_AUDIT_ENV

    say(reporter, f"checking the device executable (verify in the {target} build root, under qemu)…")
    root = _buildroot.build_root(cache_dir or cache_root(), _pins(), None, target=target)
    with tempfile.TemporaryDirectory(prefix="mlpack-check-", dir=root.path / "tmp") as scratch:
        exe = Path(scratch) / name
        exe.write_bytes(data)
        exe.chmod(0o755)
        cmd = root.command([root.inside(exe), "verify"], cwd=root.inside(Path(scratch)), env={NO_AUDIT_ENV: "1"})
        try:
            proc = subprocess.run(cmd, capture_output=True, text=True, timeout=900)
        except subprocess.TimeoutExpired:
            raise PackagingError("the device executable's verify under qemu did not finish within 900 s") from None
    if proc.returncode != 0:
        lines = [ln.strip() for ln in (proc.stderr + "\n" + proc.stdout).splitlines() if ln.strip()]
        reason = lines[-1].removeprefix("Error: ") if lines else f"exit code {proc.returncode}"
        raise PackagingError(f"the {target} device executable fails its own verify under qemu: {reason}")


def executable_contents(path: Path) -> list[str]:
    """Every entry of a device executable, for proving what is (not) inside.

    Frozen entries by path (``numpy/_core/...``, modules as ``pkg/mod.pyc``), entries of
    embedded PYZ archives as dotted module names, the onedir launcher's own entries
    under ``_onedir_launcher!``, and the appended bundle under ``bundle/``.
    """
    from PyInstaller.archive.readers import CArchiveReader

    path = Path(path)
    reader = CArchiveReader(str(path))
    names = _archive_entries(reader, "")
    if LAUNCHER_DATA_NAME in reader.toc:
        with tempfile.TemporaryDirectory(prefix="mlpack-contents-") as scratch:
            launcher = Path(scratch) / LAUNCHER_DATA_NAME
            launcher.write_bytes(reader.extract(LAUNCHER_DATA_NAME))
            names += _archive_entries(CArchiveReader(str(launcher)), f"{LAUNCHER_DATA_NAME}!")
    try:
        names += [f"bundle/{n}" for n in open_appended(path).names]
    except MlpackError:
        pass
    return sorted(names)


def _archive_entries(reader: Any, prefix: str) -> list[str]:
    out = []
    for name, entry in reader.toc.items():
        out.append(prefix + name)
        if entry[-1] == "z":  # an embedded PYZ: list its modules too
            out += [prefix + module for module in reader.open_embedded_archive(name).toc]
    return out


def _mb(size: int) -> str:
    return f"{size / 1e6:.1f} MB"
