"""Who owns a checkpoint, and whether that process is still alive: one locked file each.

A process that checkpoints its open window first creates ``<state dir>/checkpoints/<name>``
and holds an exclusive ``flock`` on it for as long as it lives; its checkpoint rows in the
outbox carry ``<name>`` as their owner. The kernel releases the lock when the process
dies, however it dies (``kill -9``, a crash, a power cut), so

* *is the owner alive?* = *is its file still locked?* — no pid reuse to fool it, no clock;
* a process can tell cheaply whether anything needs recovering: list a small folder and
  try a non-blocking lock on each file (no SQLite, nothing imported). A one-shot
  ``predict`` that finds nothing to recover never opens the outbox for it.

The files are empty; the folder holds one per live checkpointing process plus those of
dead ones until their checkpoints are recovered (:meth:`Outbox.recover_checkpoints`).
Where ``fcntl`` is missing (not a device platform) every owner counts as alive, so a
checkpoint is never recovered while its process might still write it.
"""

from __future__ import annotations

import os
from pathlib import Path

try:  # POSIX
    import fcntl
except ImportError:  # pragma: no cover
    fcntl = None  # type: ignore[assignment]

__all__ = ["DIR_NAME", "Owner", "dead_owners", "is_dead", "forget"]

DIR_NAME = "checkpoints"


class Owner:
    """This process's claim on its checkpoints (the locked file), made at its first checkpoint."""

    def __init__(self, state_dir: Path) -> None:
        folder = Path(state_dir) / DIR_NAME
        folder.mkdir(parents=True, exist_ok=True)
        self.name = f"{os.getpid()}-{os.urandom(6).hex()}"
        self.path = folder / self.name
        self._fd: int | None = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_EXCL, 0o600)
        if fcntl is not None:
            fcntl.flock(self._fd, fcntl.LOCK_EX | fcntl.LOCK_NB)  # a fresh file: nobody else holds it

    def release(self, keep_file: bool = False) -> None:
        """Done checkpointing: remove the file (its rows are gone), then drop the lock.

        ``keep_file``: the last checkpoint must outlive this process (its window could not
        be stored); the unlocked file then marks it for recovery by the next process.
        """
        if self._fd is None:
            return
        try:
            if not keep_file:
                self.path.unlink(missing_ok=True)
        finally:
            os.close(self._fd)
            self._fd = None

    def __repr__(self) -> str:
        return f"Owner({self.name!r})"


def is_dead(state_dir: Path, name: str) -> bool:
    """True when no live process holds ``name``'s file (a missing file counts as dead)."""
    path = Path(state_dir) / DIR_NAME / name
    try:
        fd = os.open(path, os.O_RDWR)
    except FileNotFoundError:
        return True
    except OSError:
        return False  # cannot tell: assume alive, never steal a live checkpoint
    try:
        if fcntl is None:  # pragma: no cover
            return False
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            return False  # locked: its owner lives
        fcntl.flock(fd, fcntl.LOCK_UN)
        return True
    finally:
        os.close(fd)


def dead_owners(state_dir: Path, skip: str | None = None) -> list[str]:
    """Names of the checkpoint files in ``state_dir`` whose process is gone (cheap: no SQLite)."""
    try:
        names = os.listdir(Path(state_dir) / DIR_NAME)
    except OSError:
        return []
    return [n for n in names if n != skip and not n.startswith(".") and is_dead(state_dir, n)]


def forget(state_dir: Path, names: list[str]) -> None:
    """Remove the files of dead owners whose checkpoints were recovered."""
    for name in names:
        if is_dead(state_dir, name):  # re-check: never remove a live owner's file
            (Path(state_dir) / DIR_NAME / name).unlink(missing_ok=True)
