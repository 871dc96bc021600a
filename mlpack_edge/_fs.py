"""Crash-safe file output shared by every part of mlpack.

Nothing mlpack writes may be left half-written: a file is written to a temporary
sibling, flushed, fsync'd and renamed over its target; a folder is assembled in a
temporary sibling and renamed into place. A reader sees the old state or the new
one, never a mixture.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import shutil
import stat
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import IO, Any

__all__ = [
    "locked",
    "file_sha256",
    "atomic_open",
    "atomic_write_bytes",
    "atomic_write_text",
    "atomic_directory",
    "canonical_json",
    "fsync_directory",
]


def canonical_json(obj: Any) -> str:
    """JSON with sorted keys and a trailing newline: the same object gives the same bytes."""
    return json.dumps(obj, sort_keys=True, indent=2, ensure_ascii=False, allow_nan=False) + "\n"


def fsync_directory(path: Path) -> None:
    """Make a rename inside ``path`` durable (no-op where directories cannot be opened)."""
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def _umask() -> int:
    """This process's umask, read without changing it (Linux), else the common 022."""
    try:
        with open("/proc/self/status", encoding="ascii") as fh:
            for line in fh:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except OSError:
        pass
    return 0o022


@contextlib.contextmanager
def atomic_open(
    path: str | os.PathLike[str], *, text: bool = False, mode: int | None = None
) -> Iterator[IO[Any]]:
    """A file handle whose content appears at ``path`` only once the block succeeds.

    Written to a temp sibling, flushed, fsync'd and renamed; on any exception the temp
    file is removed and ``path`` is untouched. ``mode`` sets permissions (default: what
    ``open`` would give under this process's umask). Streams of any size go through it.

    A symlink is written through (its target is replaced, the link stays). A path that
    is not a regular file — ``/dev/null``, ``/dev/stdout``, a FIFO — is written in place:
    renaming over it would replace the device node with a file.
    """
    target = Path(os.path.realpath(path))
    try:
        special = not stat.S_ISREG(os.stat(target).st_mode)
    except FileNotFoundError:
        special = False
    if special:
        with open(target, "w", encoding="utf-8", newline="") if text else open(target, "wb") as out:
            yield out
        return
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent)
    try:
        os.fchmod(fd, mode if mode is not None else 0o666 & ~_umask())
        fh: IO[Any] = os.fdopen(fd, "w", encoding="utf-8", newline="") if text else os.fdopen(fd, "wb")
        with fh:
            yield fh
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, target)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise
    fsync_directory(target.parent)


def atomic_write_bytes(path: str | os.PathLike[str], data: bytes, mode: int | None = None) -> Path:
    """Write ``data`` to ``path`` through a temp file and a rename; ``mode`` sets permissions."""
    with atomic_open(path, mode=mode) as fh:
        fh.write(data)
    return Path(path)


def atomic_write_text(path: str | os.PathLike[str], text: str, mode: int | None = None) -> Path:
    """Text flavour of :func:`atomic_write_bytes` (UTF-8)."""
    return atomic_write_bytes(path, text.encode("utf-8"), mode=mode)


@contextlib.contextmanager
def atomic_directory(target: str | os.PathLike[str], replace: bool = False) -> Iterator[Path]:
    """Yield a temporary folder that becomes ``target`` only if the block succeeds.

    On any exception the temporary folder is removed and ``target`` is untouched.
    With ``replace`` an existing ``target`` is swapped out; without it an existing
    ``target`` raises ``FileExistsError`` before anything is written.
    """
    final = Path(target)
    if final.exists() and not replace:
        raise FileExistsError(str(final))
    final.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{final.name}.", suffix=".tmp", dir=final.parent))
    try:
        # mkdtemp makes the folder private (0700); the published folder gets the usual
        # permissions for this process's umask, like any folder created with mkdir.
        os.chmod(tmp, 0o777 & ~_umask())
        yield tmp
        if final.exists():
            old = final.with_name(f".{final.name}.old-{os.getpid()}")
            os.replace(final, old)
            os.replace(tmp, final)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(tmp, final)
        fsync_directory(final.parent)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


@contextlib.contextmanager
def locked(path: Path) -> Iterator[None]:
    """Hold an exclusive ``flock`` on ``path`` (created if missing): one process at a time
    builds what another would otherwise build again beside it."""
    with open(path, "a+b") as fh:
        fcntl.flock(fh.fileno(), fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh.fileno(), fcntl.LOCK_UN)


def file_sha256(path: str | os.PathLike[str]) -> str:
    """Hex sha256 of a file's bytes, read in chunks (files here reach tens of MB)."""
    import hashlib

    with open(path, "rb") as fh:
        return hashlib.file_digest(fh, "sha256").hexdigest()
