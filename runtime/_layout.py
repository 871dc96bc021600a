"""Laying out a version folder: copy aside, verify there, rename into place; one line when a write fails.

``shutil.copytree`` keeps copying after a failure and reports every failed file at the
end (on a full disk, a 147,941-byte message); here the first failed write stops the
copy and is reported as the one file, the reason, and the free space against what the
version needs.
"""

from __future__ import annotations

import contextlib
import errno
import os
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

from mlpack_edge._fs import atomic_directory
from mlpack_edge.errors import InstallError, MlpackError
from mlpack_edge.runtime._archive import BundleArchive
from mlpack_edge.runtime.embedded import BUNDLE_DIR, INTERNAL_DIR
from mlpack_edge.runtime.manifest import MANIFEST_NAME, SIGNATURE_NAME, read_manifest

if TYPE_CHECKING:
    from mlpack_edge.runtime.install import Payload

__all__ = ["lay_out"]

Verifier = Callable[[Path, str], None]


def lay_out(
    payload: Payload,
    source: Path | BundleArchive,
    target: Path,
    name: str,
    verifier: Verifier,
    replace_existing: bool = False,
) -> None:
    """Assemble the version folder aside, verify it there, then rename it into place.

    A write that fails (a full disk) stops at once and names the one file and why, with
    the free space there and what the version needs.
    """
    doing = ["creating a temporary folder beside it"]
    tmp: Path | None = None
    try:
        with atomic_directory(target, replace=replace_existing) as tmp:
            doing[0] = f"writing {name}"
            shutil.copy2(payload.launcher, tmp / name)
            os.chmod(tmp / name, 0o755)
            _copy_tree(payload.internal, tmp / INTERNAL_DIR, payload.skip, doing)
            doing[0] = f"writing {BUNDLE_DIR}/"
            (tmp / BUNDLE_DIR).mkdir()
            if isinstance(source, Path):
                manifest = read_manifest(source)
                for member in sorted({MANIFEST_NAME, SIGNATURE_NAME, *manifest.files}):
                    if (source / member).is_file():
                        doing[0] = f"writing {BUNDLE_DIR}/{member}"
                        shutil.copy2(source / member, tmp / BUNDLE_DIR / member)
            else:
                source.extract(tmp / BUNDLE_DIR)
            doing[0] = "setting permissions"
            _readable_by_all(tmp)
            try:
                verifier(tmp, name)
            except InstallError as exc:  # name the folder it was meant for, not the temporary one
                raise InstallError(str(exc).replace(str(tmp), str(target))) from None
            doing[0] = f"renaming it into place{' over the damaged copy' if replace_existing else ''}"
    except OSError as exc:
        what = doing[0]
        if exc.filename and tmp is not None and str(exc.filename).startswith(str(tmp) + os.sep):
            what = f"writing {os.path.relpath(exc.filename, tmp)}"
        raise InstallError(_write_failure(target, what, exc, payload)) from None
    except MlpackError as exc:
        if isinstance(exc, InstallError):
            raise
        raise InstallError(f"not installed: {exc}") from None


def _copy_tree(src: Path, dst: Path, skip: frozenset[str], doing: list[str]) -> None:
    """``shutil.copytree`` that stops at the first failure (it would try every file, then report them all)."""
    dst.mkdir()
    for root, dirs, files in os.walk(src):
        rel_root = Path(root).relative_to(src)
        if rel_root == Path("."):
            dirs[:] = [d for d in dirs if d not in skip]
            files = [f for f in files if f not in skip]
        for d in sorted(dirs):
            a, b = Path(root) / d, dst / rel_root / d
            doing[0] = f"writing {INTERNAL_DIR}/{(rel_root / d).as_posix()}"
            if a.is_symlink():
                os.symlink(os.readlink(a), b)
            else:
                b.mkdir()
        dirs[:] = [d for d in dirs if not (Path(root) / d).is_symlink()]
        for f in sorted(files):
            a, b = Path(root) / f, dst / rel_root / f
            doing[0] = f"writing {INTERNAL_DIR}/{(rel_root / f).as_posix()}"
            if a.is_symlink():
                os.symlink(os.readlink(a), b)
            else:
                shutil.copy2(a, b)


def _write_failure(target: Path, what: str, exc: OSError, payload: Payload) -> str:
    """One line: where, which file, why; with the space figures when the disk is full."""
    reason = exc.strerror or str(exc).splitlines()[0]
    message = f"cannot install into {target}: {what} failed: {reason}"
    if exc.errno in (errno.ENOSPC, errno.EDQUOT):
        try:
            free = shutil.disk_usage(target.parent).free
            message += f" ({_size(free)} free on {target.parent}, this version needs about {_size(_payload_size(payload))})"
        except OSError:
            pass
    return message


def _payload_size(payload: Payload) -> int:
    total = payload.launcher.stat().st_size + payload.bundle.stat().st_size
    for root, dirs, files in os.walk(payload.internal):
        if Path(root) == payload.internal:
            dirs[:] = [d for d in dirs if d not in payload.skip]
            files = [f for f in files if f not in payload.skip]
        for f in files:
            with contextlib.suppress(OSError):
                total += os.lstat(os.path.join(root, f)).st_size
    if payload.bundle.is_dir():
        total += sum(p.stat().st_size for p in payload.bundle.iterdir() if p.is_file())
    return total


def _size(n: int) -> str:
    return f"{n / 1e6:.1f} MB" if n >= 100_000 else f"{n / 1e3:.1f} kB"


def _readable_by_all(root: Path) -> None:
    """0755 folders, 0644/0755 files: the service may run as another user than the installer."""
    for path in (root, *root.rglob("*")):
        if path.is_symlink():
            continue
        executable = path.is_dir() or path.stat().st_mode & 0o100
        os.chmod(path, 0o755 if executable else 0o644)
