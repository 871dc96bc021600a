"""PyInstaller's bootloader, rebuilt with a glibc check: an old device refuses in one line.

A frozen runtime needs some glibc (:mod:`mlpack_edge.builder._glibc` measures which). On an
older one, PyInstaller's stock bootloader starts, unpacks, and then fails to load libpython
with the dynamic loader's message (``Failed to load Python shared library …: version
`GLIBC_2.35' not found``), which names neither the executable's floor nor the fix. So the
runtime is frozen with a bootloader built here from the PyInstaller sdist of the installed
version, with a small patch (:data:`PATCH`): the first thing ``main`` does is compare
``gnu_get_libc_version()`` with a floor held in a fixed-size marker string
(:data:`MARKER`) and, if the system is older, print::

    mlpack: this executable needs glibc 2.30 or newer; this system has glibc 2.28

on stderr and exit 1, before anything is unpacked or loaded. The compiled marker says
``0.0`` (never refuses); the freeze overwrites it in place, in its private copy of the
bootloader, with the floor measured over the libraries it collected (:func:`with_floor`,
the same bytes for the same floor: nothing is compiled per floor). The downloaded
onefile and the onedir launcher an ``install`` unpacks are both made from that copy, so
``install`` and every command of an installed device refuse the same way.

Where it is built: against the libraries of the system the runtime is frozen on. In this
machine's architecture's build root (:class:`mlpack_edge.builder._buildroot.BuildRoot`) with
the root's gcc; for a foreign root (``linux-aarch64``: no compiler inside) on this machine
with the cross gcc and the root as sysroot, the flags CPython was cross-compiled with
(:func:`mlpack_edge.builder._buildroot.cross_cc`), the root bind-mounted at ``/mnt``. Either
way it needs at most the root's glibc (checked after the build: the aarch64 one needs
2.17), so the check can run on every older system. On the host (``--floor host``) it needs
the host's crt files' glibc (2.34 on a glibc >= 2.34 machine, for ``__libc_start_main``):
below that the dynamic loader refuses the bootloader itself, with its own message.

Cached: in the root at ``/opt/mlpack/bootloader/<key>/`` (or ``<cache>/bootloader/<key>/``
for the host), keyed by the PyInstaller version, the sdist's sha256, :data:`PATCH` and
where it was built (for a cross build also the compiler flags and the cross gcc's
version); a finished build appears by an atomic rename, so an interrupted one is redone.
Building takes ~10-15 s (waf, two variants); it needs the sdist (one ``pip download`` from
the index this machine's pip uses), a C compiler and zlib's headers (the build roots have
them; a foreign one relies on the host's cross gcc, which its CPython needed already).
"""

from __future__ import annotations

import hashlib
import importlib.metadata
import os
import platform
import re
import shlex
import shutil
import subprocess
import sys
import tarfile
import tempfile
from dataclasses import dataclass
from pathlib import Path

from mlpack_edge._fs import atomic_directory, atomic_write_text, canonical_json, file_sha256, locked
from mlpack_edge.builder._buildroot import GLIBC, BuildRoot, Reporter, cross_cc, cross_gcc_version
from mlpack_edge.builder._glibc import glibc_needs, version_key
from mlpack_edge.errors import PackagingError

__all__ = ["MARKER", "PATCH", "Bootloader", "build_bootloader", "marker_floor", "with_floor"]

#: Start of the marker string; the floor follows it, NUL-padded to :data:`_SLOT` bytes in all.
MARKER = b"MLPACK_GLIBC_FLOOR="
_SLOT = 48
#: What the compiled marker says: below every glibc, so an unpatched bootloader never refuses.
_UNSET = "0.0"
_ANCHOR = "/* Entry point for POSIX */\nint\nmain(int argc, char **argv)\n{\n"
#: C inserted before POSIX ``main`` in ``bootloader/src/main.c``; ``main`` calls it first.
PATCH = r"""/* mlpack: refuse in one line on a glibc older than the frozen runtime needs. */
#if defined(__linux__) && defined(__GLIBC__)
#include <gnu/libc-version.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* Overwritten in place by the freeze (fixed size; volatile: never folded into the code). */
__attribute__((used)) static volatile const char mlpack_glibc_floor[%(slot)d] = "%(marker)s%(unset)s";

static int
mlpack_older(const char *have, const char *need)
{
    while (*have || *need) {
        unsigned long a = strtoul(have, (char **)&have, 10);
        unsigned long b = strtoul(need, (char **)&need, 10);
        if (a != b) {
            return a < b;
        }
        if (*have == '.') {
            have++;
        }
        if (*need == '.') {
            need++;
        }
        if ((*have && (*have < '0' || *have > '9')) || (*need && (*need < '0' || *need > '9'))) {
            return 0;
        }
    }
    return 0;
}

static void
mlpack_check_glibc(void)
{
    char need[%(slot)d];
    size_t skip = sizeof("%(marker)s") - 1;
    size_t i;
    const char *have = gnu_get_libc_version();

    for (i = 0; skip + i < sizeof(mlpack_glibc_floor) - 1 && mlpack_glibc_floor[skip + i]; i++) {
        need[i] = mlpack_glibc_floor[skip + i];
    }
    need[i] = '\0';
    if (mlpack_older(have, need)) {
        fprintf(stderr, "mlpack: this executable needs glibc %%s or newer; this system has glibc %%s\n", need, have);
        exit(1);
    }
}
#else
static void
mlpack_check_glibc(void)
{
}
#endif

""" % {"slot": _SLOT, "marker": MARKER.decode(), "unset": _UNSET}
#: Where built bootloaders are cached inside a build root (they are built in the root's /tmp:
#: no build path reaches the release bootloader, a rebuild gives the same bytes).
_ROOT_BASE = "/opt/mlpack/bootloader"
_TIMEOUT_S = 900
#: How a foreign root's bootloader is built (in its key and the runtime's): waf on this
#: machine, ``CC`` the cross gcc with the root as its only sysroot.
_CROSS_RECIPE = "waf all; CC=buildroot.cross_cc(arch, /mnt); root bind-mounted at /mnt"
#: PyInstaller's folder name for a Linux architecture (``PyInstaller/bootloader/<name>/``).
_PLATFORM = {"amd64": "Linux-64bit-intel", "arm64": "Linux-64bit-arm", "x86_64": "Linux-64bit-intel", "aarch64": "Linux-64bit-arm"}


@dataclass(frozen=True)
class Bootloader:
    """A built, patched ``run``: where the freezing PyInstaller sees it, and its cache key."""

    #: Path as the freezing PyInstaller sees it (inside the root for a root build).
    path: str
    #: Path on this machine.
    host_path: Path
    key: str


def recipe_key(pyinstaller: str | None = None, *, cross: bool = False) -> str:
    """What the patched bootloader is made from, without building it: the runtime cache key covers it.

    The PyInstaller version (its sdist on the index never changes) and :data:`PATCH`;
    where it is built is covered by the runtime key's environment and platform. ``cross``
    (a foreign root's bootloader, cross-compiled here) adds :data:`_CROSS_RECIPE`: a
    runtime frozen before that existed (with the stock bootloader) is frozen again.
    """
    version = pyinstaller or _installed_pyinstaller()
    material: dict[str, object] = {"pyinstaller": version, "patch": PATCH}
    if cross:
        material["cross"] = _CROSS_RECIPE
    return hashlib.sha256(canonical_json(material).encode()).hexdigest()[:16]


def _installed_pyinstaller() -> str:
    try:
        return importlib.metadata.version("pyinstaller")
    except importlib.metadata.PackageNotFoundError:
        return "absent"


def build_bootloader(
    root: BuildRoot | None, cache: Path, *, pyinstaller: str | None = None, reporter: Reporter | None = None
) -> Bootloader:
    """The patched bootloader for freezing in ``root`` (``None``: on this machine), built once and cached.

    ``pyinstaller`` is the version to build (default: the one installed here, which is the
    one the build root installs too). ``cache`` is the mlpack cache folder (used for the
    host build and for the downloaded sdist). Raises :class:`PackagingError` naming the
    step and its log on failure.
    """
    version = pyinstaller or importlib.metadata.version("pyinstaller")
    sdist = _sdist(cache, version, reporter)
    arch = root.arch if root is not None else platform.machine().lower()
    where = f"root:{root.path.name}" if root is not None else f"host:{platform.machine().lower()}:{sys.prefix}"
    if root is not None and root.foreign:
        where = f"cross:{root.path.name}:{cross_gcc_version(root.arch)}:{_CROSS_RECIPE}"
    key = hashlib.sha256(
        canonical_json({"pyinstaller": version, "sdist": file_sha256(sdist), "patch": PATCH, "where": where}).encode()
    ).hexdigest()[:24]
    base = (root.path / _ROOT_BASE.lstrip("/")) if root is not None else cache / "bootloader"
    entry = base / key
    run = entry / "run"
    inside = (lambda p: root.inside(p)) if root is not None else str  # noqa: E731
    if run.is_file():
        return Bootloader(inside(run), run, key)
    base.mkdir(parents=True, exist_ok=True)
    with locked(base / f".{key}.lock"):
        if run.is_file():
            return Bootloader(inside(run), run, key)
        how = "on this machine" if root is None else "in the build root"
        if root is not None and root.foreign:
            how = f"with this machine's cross gcc, the {root.arch} root as sysroot"
        _say(reporter, f"building PyInstaller {version}'s bootloader with the glibc check ({how}, once)…")
        with atomic_directory(entry, replace=True) as tmp:
            floor = _build(sdist, tmp, root, arch, base.parent / f"bootloader-{key}.log" if root is None else base / f"{key}.log")
            atomic_write_text(tmp / "bootloader.json", canonical_json({"key": key, "where": where, "glibc_floor": floor}))
        _say(reporter, f"  the bootloader needs glibc {floor or '(none)'} at most")
    return Bootloader(inside(run), run, key)


def _build(sdist: Path, out: Path, root: BuildRoot | None, arch: str, log: Path) -> str | None:
    """Unpack ``sdist``, patch ``main.c``, ``waf all``; leave ``run`` in ``out``; the glibc it needs.

    In a build root, a bootloader needing more than the root's glibc is an error.
    """
    parent = (root.path / "tmp") if root is not None else None
    with tempfile.TemporaryDirectory(prefix="mlpack-bootloader-", dir=parent) as scratch:
        work = Path(scratch)
        with tarfile.open(sdist) as tar:
            tar.extractall(work, filter="data")
        tops = [p for p in work.iterdir() if p.is_dir()]
        if len(tops) != 1 or not (tops[0] / "bootloader" / "wscript").is_file():
            raise PackagingError(f"{sdist} is not a PyInstaller sdist with a bootloader/ folder")
        src = tops[0]
        main_c = src / "bootloader" / "src" / "main.c"
        main_c.write_text(patched_main(main_c.read_text(encoding="utf-8")), encoding="utf-8")
        bootloader_dir = src / "bootloader"
        if root is None:
            cmd = [sys.executable, "./waf", "all"]
            cwd: Path | str = bootloader_dir
            # This machine's PATH (its compiler), but none of CC/CFLAGS/LDFLAGS: waf would read them into the bytes.
            env: dict[str, str] | None = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "LANG": "C.UTF-8"}
        elif root.foreign:
            # No gcc in a foreign root (and under qemu it would take long): this machine's cross
            # gcc, exactly CC (waf detects the 64-bit ARM target from it; --target-arch would
            # demand -m64, which aarch64 gcc lacks), nothing else of this environment.
            cc = shlex.join(cross_cc(root.arch))
            cmd = root.cross_command([sys.executable, "./waf", "all"], cwd=root.mounted(bootloader_dir), env={"CC": cc})
            cwd, env = "/", None
        else:
            cmd = root.command([root.python, "./waf", "all"], cwd=root.inside(bootloader_dir))
            cwd, env = "/", None
        try:
            with open(log, "wb") as fh:
                proc = subprocess.run(
                    cmd, cwd=cwd, env=env, stdout=fh, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                    timeout=_TIMEOUT_S,
                )
        except subprocess.TimeoutExpired:
            raise PackagingError(f"building the bootloader timed out; log: {log}") from None
        except OSError as exc:
            raise PackagingError(f"cannot build the bootloader: {exc}") from None
        built = src / "PyInstaller" / "bootloader" / _PLATFORM.get(arch, "?") / "run"
        if proc.returncode != 0 or not built.is_file():
            lines = [ln for ln in log.read_text(errors="replace").splitlines() if ln.strip()]
            raise PackagingError(
                f"building the bootloader failed (exit {proc.returncode}): {lines[-1].strip() if lines else 'no output'};"
                f" log: {log} (it needs a C compiler and zlib's headers: apt-get install gcc zlib1g-dev)"
            )
        data = built.read_bytes()
        if data.count(MARKER) != 1 or marker_floor(data) != _UNSET:
            raise PackagingError(f"the built bootloader {built} does not carry the glibc marker once")
        needs = glibc_needs(built)
        floor = max(needs, key=version_key) if needs else None
        if root is not None and floor is not None and version_key(floor) > version_key(GLIBC):
            raise PackagingError(f"the built bootloader needs glibc {floor}, above the build root's {GLIBC}; log: {log}")
        shutil.copyfile(built, out / "run")
        (out / "run").chmod(0o755)
        return floor


def patched_main(text: str) -> str:
    """``main.c`` with :data:`PATCH` before POSIX ``main`` and a call to it as its first statement."""
    if text.count(_ANCHOR) != 1:
        raise PackagingError("this PyInstaller's bootloader main.c has no single POSIX main to patch; update _bootloader.py")
    return text.replace(_ANCHOR, PATCH + _ANCHOR + "    mlpack_check_glibc();\n")


def marker_floor(data: bytes) -> str | None:
    """The floor the first bootloader in ``data`` refuses below (``"0.0"``: unset), ``None`` without a marker.

    For a onefile executable that is the bootloader at its start (the one a download runs).
    """
    at = data.find(MARKER)
    if at < 0:
        return None
    return data[at + len(MARKER) : at + _SLOT].split(b"\0", 1)[0].decode("ascii", "replace")


def with_floor(data: bytes, floor: str) -> bytes:
    """``data`` (a bootloader, or a onefile starting with one) with its first marker set to ``floor``.

    Same length, same bytes but the slot: deterministic, nothing recompiled.
    """
    if not re.fullmatch(r"\d+(\.\d+)+", floor) or len(MARKER) + len(floor) >= _SLOT:
        raise PackagingError(f"glibc floor {floor!r} is not a version like 2.31")
    at = data.find(MARKER)
    if at < 0:
        raise PackagingError("this bootloader has no glibc marker (not built by mlpack)")
    slot = (MARKER + floor.encode()).ljust(_SLOT, b"\0")
    return data[:at] + slot + data[at + _SLOT :]


def _sdist(cache: Path, version: str, reporter: Reporter | None) -> Path:
    """``pyinstaller-<version>.tar.gz``, downloaded once with this machine's pip (its index, proxy, CA)."""
    folder = cache / "sdist"
    found = sorted(folder.glob(f"pyinstaller-{version}.tar.gz")) if folder.is_dir() else []
    if found:
        return found[0]
    folder.mkdir(parents=True, exist_ok=True)
    _say(reporter, f"downloading the PyInstaller {version} source (its bootloader is rebuilt with a glibc check)…")
    with tempfile.TemporaryDirectory(prefix=".sdist-", dir=folder) as tmp:
        cmd = [
            sys.executable, "-m", "pip", "download", "--disable-pip-version-check", "--no-deps",
            "--no-binary", ":all:", "--dest", tmp, f"pyinstaller=={version}",
        ]
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
        got = list(Path(tmp).glob("pyinstaller-*.tar.gz"))
        if proc.returncode != 0 or len(got) != 1:
            lines = [ln for ln in (proc.stderr + proc.stdout).splitlines() if ln.strip()]
            raise PackagingError(
                f"cannot download the PyInstaller {version} source: {lines[-1].strip() if lines else 'no output'}"
            )
        target = folder / got[0].name
        got[0].replace(target)
    return target


def _say(reporter: Reporter | None, message: str) -> None:
    if reporter is not None:
        reporter.info(message)
