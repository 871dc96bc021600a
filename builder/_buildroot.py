"""A Debian 11 (bullseye, glibc 2.31) root to freeze the device runtime in, so it runs on old Linux.

A frozen runtime needs the glibc of the machine it was frozen on: every library it
bundles (libpython, libstdc++, libssl...) was linked there. Freezing on a Debian 12
workstation gives an executable that needs glibc 2.36 and fails to start on Debian 11,
Ubuntu 20.04/22.04, RHEL 8/9 or Raspberry Pi OS 11. So the runtime is frozen inside a
bullseye root instead:

1. ``mmdebstrap --variant=minbase bullseye`` makes the root (about a minute, ~330 MB),
   with the compiler and headers CPython needs;
2. CPython 3.11.2 is compiled inside it from Debian's own source tarball
   (``python3.11_3.11.2.orig.tar.gz`` in the bookworm pool, checked against its sha256):
   bullseye ships only Python 3.9, and a Python built there links against glibc 2.31 at
   most (2-3 minutes on two loaded cores, once). A foreign root (``linux-aarch64``) holds
   only headers and libraries: CPython is cross-compiled on the host with Debian's cross
   gcc and the root as sysroot (7-8 minutes; under qemu it took over an hour), its glibc
   floor checked on every ELF file, pip added by ``ensurepip`` under qemu;
3. that Python installs, from PyPI, the same versions of numpy, onnxruntime, psutil,
   click and PyInstaller as this machine has: their manylinux wheels need glibc 2.28 at
   most (onnxruntime sets that floor), and pip inside the root picks the wheels for *its*
   glibc;
4. :mod:`mlpack_edge.builder._freeze` runs PyInstaller with that Python inside the root.

Every step is cached under ``<cache>/buildroot/bullseye-<arch>/`` and marked done only
when it finished (the root appears by an atomic rename; the interpreter and the wheels
each write a marker last), so an interrupted set-up resumes where it stopped. The commands
run through ``unshare --mount`` + ``chroot``: ``/proc`` is mounted in a private mount
namespace and disappears with the process, so nothing stays mounted on the host. This
needs root (``chroot``), ``mmdebstrap`` (Debian package) and network access to the
Debian archive and PyPI while the root is made; nothing is downloaded afterwards.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import sys
import time
import urllib.request
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from mlpack_edge._fs import atomic_directory, atomic_write_text, canonical_json, file_sha256, locked
from mlpack_edge.builder._glibc import glibc_floor, version_key
from mlpack_edge.errors import PackagingError

__all__ = ["FLOORS", "SUITE", "TARGETS", "BuildRoot", "build_root", "cross_cc", "cross_gcc_version", "root_problem"]

#: Debian release of the root and the glibc it ships.
SUITE = "bullseye"
GLIBC = "2.31"
#: ``--floor`` values: ``host`` freezes with this machine's Python, the others in a build root.
FLOORS = ("host", f"glibc-{GLIBC}")
MIRROR = "http://deb.debian.org/debian"
#: What CPython's build needs beyond minbase (no Tk, no gdbm, no test modules).
PACKAGES = (
    "gcc", "make", "libc6-dev", "binutils", "libssl-dev", "zlib1g-dev", "libffi-dev",
    "libsqlite3-dev", "libbz2-dev", "liblzma-dev", "libreadline-dev",
)
#: A foreign root is only the sysroot of the host's cross compiler (headers and libraries
#: CPython links against) and the place PyInstaller runs: no compiler inside (binutils: objdump
#: for PyInstaller).
CROSS_PACKAGES = (
    "libc6-dev", "binutils", "libssl-dev", "zlib1g-dev", "libffi-dev", "libsqlite3-dev", "libbz2-dev", "liblzma-dev",
)
PYTHON_VERSION = "3.11.2"
PYTHON_URL = f"{MIRROR}/pool/main/p/python3.11/python3.11_{PYTHON_VERSION}.orig.tar.gz"
PYTHON_SHA256 = "2411c74bda5bbcfcddaf4531f66d1adc73f247f529aee981b029513aefdbf849"
#: Where the interpreter lives inside the root.
PREFIX = "/opt/mlpack/python"
PYTHON = f"{PREFIX}/bin/python3.11"
_CONFIGURE = (
    f"./configure --prefix={PREFIX} --enable-shared --disable-test-modules"
    f" LDFLAGS=-Wl,-rpath,{PREFIX}/lib"
)
_COMPILE_SCRIPT = f"""set -e
export SOURCE_DATE_EPOCH=315532800
cd /opt/mlpack/src
rm -rf build && mkdir build && cd build
tar -xzf ../python.tar.gz --strip-components=1
{_CONFIGURE} > ../configure.log 2>&1
make -j"$(nproc)" > ../make.log 2>&1
make altinstall > ../install.log 2>&1
cd .. && rm -rf build
"""
_ARCH = {"linux-x86_64": "amd64", "linux-aarch64": "arm64"}
#: GNU triplet of each architecture (the cross compiler's prefix, the multiarch folder).
_TRIPLET = {"amd64": "x86_64-linux-gnu", "arm64": "aarch64-linux-gnu"}
#: Where a foreign root is bind-mounted while CPython is cross-compiled against it (in a
#: private mount namespace): the build records its sysroot and build folder in
#: ``_sysconfigdata``, which is frozen into the runtime, so they are fixed paths rather than
#: wherever the cache happens to be.
_CROSS_MOUNT = "/mnt"
#: Extension modules the runtime or PyInstaller import: a cross build that silently left one
#: out (a dependency not found in the sysroot) fails here, not in the freeze.
_CROSS_CHECK_MODULES = ("ctypes", "ssl", "sqlite3", "lzma", "bz2", "zlib", "_decimal", "hashlib", "ctypes.util")
#: Cross-compiling on the host takes minutes; compiling under qemu took over an hour.
_CROSS_COMPILE_TIMEOUT_S = 3600
#: Targets a runtime can be frozen for (a foreign one under qemu-user, see :func:`root_problem`).
TARGETS = tuple(sorted(_ARCH))
#: qemu-user's binfmt_misc entry for each foreign architecture (Debian's qemu-user-static).
_BINFMT = {"arm64": "qemu-aarch64", "amd64": "qemu-x86_64"}
_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
_ROOT_TIMEOUT_S = 1800
_COMPILE_TIMEOUT_S = 5400
_PIP_TIMEOUT_S = 1800


class Reporter(Protocol):
    def info(self, message: str) -> None: ...


def _say(reporter: Reporter | None, message: str) -> None:
    if reporter is not None:
        reporter.info(message)


def root_problem(
    target: str | None = None,
    binfmt: Path = Path("/proc/sys/fs/binfmt_misc"),
    which: Callable[[str], str | None] = shutil.which,
) -> str | None:
    """Why a build root for ``target`` cannot be made or used here (one line naming the fix), or ``None``.

    A foreign target's programs run through qemu-user registered with ``binfmt_misc``
    with the F flag (the interpreter is opened at registration, so it works inside a chroot),
    and its CPython is cross-compiled by Debian's cross gcc (``which`` finds the tools).
    """
    if os.geteuid() != 0:
        return "a build root needs root (chroot): run as root, or freeze with --floor host"
    for tool, package in (("mmdebstrap", "mmdebstrap"), ("unshare", "util-linux"), ("chroot", "coreutils")):
        if which(tool) is None:
            return f"{tool} is not installed: apt-get install {package}"
    arch = _ARCH.get(target or _host_target())
    if arch is None or target is None or target == _host_target():
        return None
    cross = f"{_TRIPLET[arch]}-gcc"
    for tool, package in ((cross, f"gcc-{_TRIPLET[arch]}"), ("make", "make"), ("pkg-config", "pkg-config")):
        if which(tool) is None:
            return f"{tool} is not installed (CPython for {target} is cross-compiled here): apt-get install {package}"
    if _build_python(which) is None:
        return f"no Python {PYTHON_VERSION.rsplit('.', 1)[0]} here to cross-compile CPython for {target} with (needs python3.11 on PATH)"
    entry = binfmt / _BINFMT[arch]
    try:
        text = entry.read_text()
    except OSError:
        return (
            f"{target} programs cannot run here: no {_BINFMT[arch]} binfmt_misc entry"
            f" (apt-get install qemu-user-static binfmt-support; mount -t binfmt_misc binfmt_misc {binfmt})"
        )
    flags = next((ln.split(":", 1)[1].strip() for ln in text.splitlines() if ln.startswith("flags:")), "")
    if not text.startswith("enabled") or "F" not in flags:
        return f"{entry} is disabled or lacks the F flag (update-binfmts --enable {_BINFMT[arch]}; Debian's qemu-user-static sets F)"
    return None


def _build_python(which: Callable[[str], str | None] = shutil.which) -> str | None:
    """A Python of the same minor version as :data:`PYTHON_VERSION` (a cross build runs it)."""
    minor = PYTHON_VERSION.rsplit(".", 1)[0]
    if "%d.%d" % sys.version_info[:2] == minor:
        return sys.executable
    return which(f"python{minor}")


def host_arch() -> str | None:
    """Debian's name of this machine's architecture (``amd64``), ``None`` if no build root serves it."""
    return _ARCH.get(_host_target())


def _host_target() -> str:
    import platform

    return f"{platform.system().lower()}-{platform.machine().lower()}"


@dataclass(frozen=True)
class BuildRoot:
    """A finished bullseye root: its folder and the versions installed in it."""

    path: Path
    arch: str
    versions: Mapping[str, str]

    @property
    def python(self) -> str:
        """The interpreter, as a path inside the root."""
        return PYTHON

    def inside(self, host_path: Path) -> str:
        """``<root>/tmp/x`` -> ``/tmp/x``."""
        return "/" + Path(host_path).resolve().relative_to(self.path.resolve()).as_posix()

    def outside(self, inside_path: str) -> str:
        """``/tmp/x`` -> ``<root>/tmp/x`` (how the host stats a file the root's build read)."""
        return str(self.path / inside_path.lstrip("/"))

    def command(self, argv: Sequence[str], *, cwd: str = "/", env: Mapping[str, str] | None = None) -> list[str]:
        """``argv`` run inside the root, in a private mount namespace, with exactly ``env``."""
        return _chroot_command(self.path, argv, cwd=cwd, env=env)

    @property
    def foreign(self) -> bool:
        """Another architecture than this machine's: its code is cross-compiled here, run under qemu."""
        return self.arch != host_arch()

    def mounted(self, host_path: Path) -> str:
        """``<root>/tmp/x`` -> ``/mnt/tmp/x``: the path :meth:`cross_command` sees."""
        return _CROSS_MOUNT + self.inside(host_path)

    def cross_command(self, argv: Sequence[str], *, cwd: str = "/", env: Mapping[str, str] | None = None) -> list[str]:
        """``argv`` run on this machine with the root bind-mounted at :data:`_CROSS_MOUNT` (private namespace).

        How a foreign root's code is compiled: with :func:`cross_cc`, so the sysroot's path
        is the same whatever the cache folder. ``env`` is exactly the environment (plus PATH, LANG).
        """
        environ = {"PATH": _PATH, "LANG": "C.UTF-8", **(env or {})}
        mount = f'mount --bind "$0" {_CROSS_MOUNT} && exec "$@"'
        return [
            "unshare", "--mount", "--propagation", "private", "--", "/bin/sh", "-c", mount, str(self.path),
            "/usr/bin/env", "-i", "-C", cwd, *(f"{k}={v}" for k, v in sorted(environ.items())), *argv,
        ]


def cross_cc(arch: str, sysroot: str = _CROSS_MOUNT) -> list[str]:
    """This machine's cross gcc for ``arch`` seeing only ``sysroot``'s headers, crt files and libraries.

    The same flags as :func:`_cross_script`'s ``cc`` (a test keeps them equal): without
    ``-nostdinc`` and the explicit ``-isystem``/``-B``/``-L``, bookworm's cross gcc takes its
    own glibc 2.36 first and the floor rises. Raises :class:`PackagingError` without the compiler.
    """
    t = _TRIPLET[arch]
    try:
        proc = subprocess.run([f"{t}-gcc", "-print-file-name=include"], capture_output=True, text=True, timeout=60)
    except OSError as exc:
        raise PackagingError(f"{t}-gcc cannot run ({exc.strerror}): apt-get install gcc-{t}") from None
    gccinc = proc.stdout.strip()
    if proc.returncode != 0 or not gccinc.startswith("/"):
        raise PackagingError(f"{t}-gcc -print-file-name=include failed: {(proc.stderr or proc.stdout).strip()[:200]}")
    s = sysroot
    return [
        f"{t}-gcc", f"--sysroot={s}", "-nostdinc", "-isystem", gccinc, "-isystem", f"{s}/usr/include/{t}",
        "-isystem", f"{s}/usr/include", f"-B{s}/usr/lib/{t}/", f"-L{s}/usr/lib/{t}", f"-L{s}/lib/{t}",
    ]


def cross_gcc_version(arch: str) -> str:
    """``aarch64-linux-gnu-gcc -dumpfullversion`` (``"12.2.0"``; ``"absent"``): part of what a cross build is keyed by."""
    try:
        proc = subprocess.run([f"{_TRIPLET[arch]}-gcc", "-dumpfullversion"], capture_output=True, text=True, timeout=60)
    except OSError:
        return "absent"
    return proc.stdout.strip() if proc.returncode == 0 else "absent"


def _chroot_command(
    root: Path, argv: Sequence[str], *, cwd: str = "/", env: Mapping[str, str] | None = None
) -> list[str]:
    environ = {"PATH": _PATH, "HOME": "/root", "LANG": "C.UTF-8", **(env or {})}
    mount = 'mount -t proc proc "$0/proc" && mount --rbind /dev "$0/dev" && exec chroot "$0" "$@"'
    return [
        "unshare", "--mount", "--propagation", "private", "--", "/bin/sh", "-c", mount, str(root),
        "/usr/bin/env", "-i", "-C", cwd, *(f"{k}={v}" for k, v in sorted(environ.items())), *argv,
    ]


def build_root(
    cache: Path,
    pins: Mapping[str, str],
    reporter: Reporter | None = None,
    *,
    target: str = "linux-x86_64",
) -> BuildRoot:
    """The bullseye root for ``target`` with CPython and ``pins`` (distribution -> version) installed.

    Makes whatever is missing (minutes the first time, progress through ``reporter``);
    a finished root is reused as it is. Raises :class:`PackagingError` naming the step
    and its log when a step fails.
    """
    problem = root_problem(target)
    if problem is not None:
        raise PackagingError(problem)
    arch = _ARCH.get(target)
    if arch is None:
        raise PackagingError(f"unknown target {target!r} (expected one of: {', '.join(sorted(_ARCH))})")
    base = cache / "buildroot"
    try:
        base.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise PackagingError(f"cache folder {base} is not writable ({exc.strerror}); set MLPACK_CACHE_DIR") from None
    path = base / f"{SUITE}-{arch}"
    with locked(base / f".{SUITE}-{arch}.lock"):
        if not (path / "etc" / "debian_version").is_file():
            _make_root(path, arch, base / f"{SUITE}-{arch}.log", reporter)
        if arch == host_arch():
            _ensure_python(path, reporter)
        else:
            _ensure_cross_python(path, arch, reporter)
        versions = _ensure_wheels(path, pins, reporter)
    return BuildRoot(path, arch, versions)


def _make_root(path: Path, arch: str, log: Path, reporter: Reporter | None) -> None:
    native = arch == host_arch()
    how = "about a minute" if native else "a few minutes: its package scripts run under qemu"
    _say(reporter, f"making a Debian {SUITE} ({arch}) build root with mmdebstrap ({how}, once)…")
    packages = PACKAGES if native else CROSS_PACKAGES
    with atomic_directory(path, replace=True) as tmp:  # mmdebstrap fills the empty folder
        cmd = [
            "mmdebstrap", "--variant=minbase", f"--architectures={arch}", f"--include={','.join(packages)}",
            SUITE, str(tmp), MIRROR,
        ]
        _run(cmd, log, "making the build root", timeout=_ROOT_TIMEOUT_S, reporter=reporter)


def _python_source(root: Path, reporter: Reporter | None) -> Path:
    """The folder in the root holding CPython's checked source tarball (downloaded once)."""
    src = root / "opt" / "mlpack" / "src"
    src.mkdir(parents=True, exist_ok=True)
    tarball = src / "python.tar.gz"
    if not tarball.is_file() or file_sha256(tarball) != PYTHON_SHA256:
        _say(reporter, f"downloading CPython {PYTHON_VERSION} source from {PYTHON_URL}…")
        _download(PYTHON_URL, tarball, PYTHON_SHA256)
    return src


def _ensure_python(root: Path, reporter: Reporter | None) -> None:
    """Compile CPython inside the root unless the marker says this exact recipe is installed."""
    marker = root / "opt" / "mlpack" / "python.json"
    recipe = {"version": PYTHON_VERSION, "sha256": PYTHON_SHA256, "script": _COMPILE_SCRIPT}
    if _read_json(marker) == recipe and (root / PYTHON.lstrip("/")).is_file():
        return
    src = _python_source(root, reporter)
    (src / "compile.sh").write_text(_COMPILE_SCRIPT)
    _say(reporter, f"compiling CPython {PYTHON_VERSION} inside the build root (a few minutes, once)…")
    _run(
        _chroot_command(root, ["/bin/sh", "/opt/mlpack/src/compile.sh"]),
        root.parent / f"{root.name}-python.log",
        "compiling CPython in the build root",
        timeout=_COMPILE_TIMEOUT_S,
        reporter=reporter,
        detail=f"see {src}/make.log",
    )
    atomic_write_text(marker, canonical_json(recipe))


def _cross_script(arch: str, build_python: str) -> str:
    """Shell recipe that cross-compiles CPython on the host against the root mounted at :data:`_CROSS_MOUNT`.

    Debian's cross gcc searches its own ``/usr/<triplet>`` (bookworm's glibc 2.36) before
    the sysroot, which would raise the floor: ``-nostdinc`` and explicit ``-isystem``/``-B``/
    ``-L`` make it see only the root's headers, crt files and libraries (and gcc's own
    freestanding headers and libgcc). pip is not installed by the cross build (``ensurepip``
    would run the host's Python); it is installed inside the root afterwards.
    """
    t = _TRIPLET[arch]
    s = _CROSS_MOUNT
    return f"""set -e
export SOURCE_DATE_EPOCH=315532800 LC_ALL=C
gccinc=$({t}-gcc -print-file-name=include)
cc="{t}-gcc --sysroot={s} -nostdinc -isystem $gccinc -isystem {s}/usr/include/{t} -isystem {s}/usr/include"
cc="$cc -B{s}/usr/lib/{t}/ -L{s}/usr/lib/{t} -L{s}/lib/{t}"
export PKG_CONFIG_SYSROOT_DIR={s} PKG_CONFIG_LIBDIR={s}/usr/lib/{t}/pkgconfig:{s}/usr/share/pkgconfig
# the root's /usr/include is a system folder: pkg-config must not print it (setup.py then
# looks for ffi.h only there, misses the multiarch folder and links _ctypes without libffi)
export PKG_CONFIG_SYSTEM_INCLUDE_PATH={s}/usr/include
src={s}/opt/mlpack/src
rm -rf "$src/cross" && mkdir "$src/cross" && cd "$src/cross"
tar -xzf ../python.tar.gz --strip-components=1
printf 'ac_cv_file__dev_ptmx=yes\\nac_cv_file__dev_ptc=no\\nac_cv_buggy_getaddrinfo=no\\n' > config.site
CONFIG_SITE=$PWD/config.site ./configure --host={t} --build={_TRIPLET[host_arch() or "amd64"]} \\
    --with-build-python={build_python} --prefix={PREFIX} --enable-shared --disable-test-modules \\
    --with-ensurepip=no CC="$cc" LDFLAGS=-Wl,-rpath,{PREFIX}/lib > ../cross-configure.log 2>&1
make -j"$(nproc)" > ../cross-make.log 2>&1
make altinstall DESTDIR={s} > ../cross-install.log 2>&1
cd .. && rm -rf cross
"""


def _relative_links(root: Path) -> None:
    """Make the root's absolute library symlinks relative, so the host's linker follows them.

    Debian's ``-dev`` packages link ``/usr/lib/<triplet>/libfoo.so`` to ``/lib/<triplet>/libfoo.so.N``:
    seen from the host that target is the host's own (missing) file, and the linker silently
    falls back to the static archive. A relative link means the same inside the root.
    """
    for top in ("lib", "usr/lib"):
        for link in (root / top).rglob("*"):
            if not link.is_symlink():
                continue
            target = os.readlink(link)
            if target.startswith("/"):
                relative = os.path.relpath(root / target.lstrip("/"), link.parent)
                tmp = link.with_name(link.name + ".mlpack-tmp")
                tmp.unlink(missing_ok=True)
                tmp.symlink_to(relative)
                os.replace(tmp, link)


def _ensure_cross_python(root: Path, arch: str, reporter: Reporter | None) -> None:
    """Cross-compile CPython on the host for a foreign root, unless the marker says it is there.

    Compiling inside the root under qemu took over 43 minutes for ``./configure`` alone;
    the host's cross compiler does the whole build in minutes. The result must need the
    root's glibc at most (checked on every ELF file installed), and pip is added by
    running ``ensurepip`` inside the root (emulated, once).
    """
    marker = root / "opt" / "mlpack" / "python.json"
    build_python = _build_python()
    if build_python is None:
        raise PackagingError(f"no Python {PYTHON_VERSION.rsplit('.', 1)[0]} here to cross-compile CPython with")
    script = _cross_script(arch, f"{_CROSS_MOUNT}/opt/mlpack/src/bin/python-for-build")
    recipe = {"version": PYTHON_VERSION, "sha256": PYTHON_SHA256, "script": script, "cross": True}
    if _read_json(marker) == recipe and (root / PYTHON.lstrip("/")).is_file():
        return
    src = _python_source(root, reporter)
    # The build Python is reached through a fixed name so its host path is not recorded.
    shim = src / "bin"
    shim.mkdir(exist_ok=True)
    link = shim / "python-for-build"
    link.unlink(missing_ok=True)
    link.symlink_to(build_python)
    (src / "cross.sh").write_text(script)
    _relative_links(root)
    _say(reporter, f"cross-compiling CPython {PYTHON_VERSION} for {arch} with the host's {_TRIPLET[arch]}-gcc (a few minutes, once)…")
    mount = f'mount --bind "$0" {_CROSS_MOUNT} && exec /bin/sh {_CROSS_MOUNT}/opt/mlpack/src/cross.sh'
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PYTHON", "_PYTHON", "CONFIG_SITE", "VIRTUAL_ENV"))}
    _run(
        ["unshare", "--mount", "--propagation", "private", "--", "/bin/sh", "-c", mount, str(root)],
        root.parent / f"{root.name}-python.log",
        "cross-compiling CPython for the build root",
        timeout=_CROSS_COMPILE_TIMEOUT_S,
        reporter=reporter,
        detail=f"see {src}/cross-make.log",
        env=env,
    )
    link.unlink()
    installed = root / PREFIX.lstrip("/")
    elves = [p for p in sorted(installed.rglob("*")) if p.is_file() and not p.is_symlink() and p.read_bytes()[:4] == b"\x7fELF"]
    floor = glibc_floor(elves)
    if floor is not None and version_key(floor) > version_key(GLIBC):
        raise PackagingError(f"the cross-compiled CPython needs glibc {floor}, above the root's {GLIBC} (log: {src}/cross-make.log)")
    _say(reporter, f"  CPython needs glibc {floor} at most; checking its extension modules and installing pip inside the root (emulated)…")
    _run(
        _chroot_command(root, [PYTHON, "-c", "import " + ", ".join(_CROSS_CHECK_MODULES)]),
        root.parent / f"{root.name}-check.log",
        "importing the cross-compiled CPython's extension modules in the build root",
        timeout=_PIP_TIMEOUT_S,
        reporter=reporter,
    )
    _run(
        _chroot_command(root, [PYTHON, "-m", "ensurepip", "--altinstall"]),
        root.parent / f"{root.name}-ensurepip.log",
        "installing pip in the build root",
        timeout=_PIP_TIMEOUT_S,
        reporter=reporter,
    )
    (root / "opt" / "mlpack" / "wheels.json").unlink(missing_ok=True)  # installed into another build
    atomic_write_text(marker, canonical_json(recipe))


def _ensure_wheels(root: Path, pins: Mapping[str, str], reporter: Reporter | None) -> dict[str, str]:
    """pip-install ``pins`` into the root's Python unless the marker says they are there."""
    marker = root / "opt" / "mlpack" / "wheels.json"
    wanted = dict(sorted(pins.items()))
    recorded = _read_json(marker)
    if isinstance(recorded, dict) and recorded.get("pins") == wanted:
        return dict(recorded["versions"])
    args = [f"{k}=={v}" for k, v in wanted.items()]
    wheels = root / "opt" / "mlpack" / "wheels"
    shutil.rmtree(wheels, ignore_errors=True)
    wheels.mkdir(parents=True)
    _say(reporter, f"downloading the wheels of {', '.join(args)} for glibc {GLIBC}…")
    _run(
        _download_command(wheels, args, arch=root.name.rsplit("-", 1)[-1]),
        root.parent / f"{root.name}-download.log",
        "downloading the runtime's wheels",
        timeout=_PIP_TIMEOUT_S,
        reporter=reporter,
    )
    _say(reporter, "installing them into the build root's Python…")
    _run(
        _chroot_command(
            root,
            [
                PYTHON, "-m", "pip", "install", "--disable-pip-version-check", "--no-cache-dir", "--no-index",
                "--find-links", "/opt/mlpack/wheels", *args,
            ],
        ),
        root.parent / f"{root.name}-pip.log",
        "installing the runtime's distributions in the build root",
        timeout=_PIP_TIMEOUT_S,
        reporter=reporter,
    )
    versions = {"python": PYTHON_VERSION, "suite": SUITE, "glibc": GLIBC, **wanted}
    atomic_write_text(marker, canonical_json({"pins": wanted, "versions": versions}))
    return versions


def _download_command(dest: Path, requirements: Sequence[str], *, arch: str) -> list[str]:
    """``pip download`` (this machine's pip) of manylinux wheels that run on glibc :data:`GLIBC` or older.

    Downloaded here rather than by pip inside the root so this machine's pip configuration
    holds (index mirror, proxy, certificate authority); the platform tags stop at the
    root's glibc, so no wheel can raise the floor.
    """
    machine = {"amd64": "x86_64", "arm64": "aarch64"}[arch]
    newest = version_key_minor(GLIBC)
    platforms = [f"manylinux_2_{minor}_{machine}" for minor in range(newest, 16, -1)]
    platforms += [f"manylinux2014_{machine}"]
    if machine == "x86_64":
        platforms += ["manylinux2010_x86_64", "manylinux1_x86_64"]
    return [
        sys.executable, "-m", "pip", "download", "--disable-pip-version-check", "--only-binary=:all:",
        "--python-version", PYTHON_VERSION.rsplit(".", 1)[0], "--implementation", "cp", "--abi", "cp311",
        *(arg for p in platforms for arg in ("--platform", p)), "--dest", str(dest), *requirements,
    ]


def version_key_minor(version: str) -> int:
    """``"2.31"`` -> 31."""
    return int(version.split(".")[1])


def _run(
    cmd: Sequence[str],
    log: Path,
    what: str,
    *,
    timeout: float,
    reporter: Reporter | None,
    detail: str = "",
    env: Mapping[str, str] | None = None,
) -> None:
    """Run ``cmd`` with its output in ``log``, a progress line every minute; one-line failure."""
    started = time.monotonic()
    with open(log, "wb") as out:
        proc = subprocess.Popen(
            list(cmd), stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, env=None if env is None else dict(env)
        )
        try:
            while True:
                try:
                    proc.wait(timeout=60)
                    break
                except subprocess.TimeoutExpired:
                    elapsed = time.monotonic() - started
                    if elapsed > timeout:
                        proc.kill()
                        proc.wait()
                        raise PackagingError(f"{what} took over {timeout:.0f} s; gave up (log: {log})") from None
                    _say(reporter, f"  … still {what} ({elapsed / 60:.0f} min)")
        except BaseException:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
            raise
    if proc.returncode != 0:
        tail = [ln for ln in log.read_text(errors="replace").splitlines() if ln.strip()]
        last = tail[-1].strip() if tail else "no output"
        raise PackagingError(f"{what} failed (exit {proc.returncode}): {last}; log: {log}{'; ' + detail if detail else ''}")


def _download(url: str, dest: Path, sha256: str, opener: Callable[..., object] = urllib.request.urlopen) -> None:
    tmp = dest.with_name(dest.name + ".part")
    digest = hashlib.sha256()
    try:
        with opener(url, timeout=120) as resp, open(tmp, "wb") as fh:  # type: ignore[attr-defined]
            while chunk := resp.read(1 << 20):
                digest.update(chunk)
                fh.write(chunk)
    except OSError as exc:
        tmp.unlink(missing_ok=True)
        raise PackagingError(f"cannot download {url}: {exc}") from None
    if digest.hexdigest() != sha256:
        tmp.unlink(missing_ok=True)
        raise PackagingError(f"{url}: sha256 {digest.hexdigest()} is not the expected {sha256}")
    os.replace(tmp, dest)


def _read_json(path: Path) -> object:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None


