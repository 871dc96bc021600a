"""A short one-shot process's telemetry at exit: one small file instead of two SQLite writes.

A short ``predict`` (agent deferred and never started, nothing checkpointed) stores its
window and the ids of its predictions at exit. Through SQLite that is two databases, each
opened, written and checkpointed: nine fsyncs and the sqlite3/outbox imports, more than
everything else the agent adds to the run. Instead the agent writes ``<state>/spool/<name>.window.json``
and ``<name>.ids.json`` (each to a temporary name, fsynced, renamed; then the folder fsynced:
as durable as a committed window, so a kill loses no more than before) and the next process
to open a store moves its part in:

* :class:`~.outbox.Outbox` (every open) registers the window's model and stores the window
  under a hand-off token named after the file, so a crash between storing it and deleting
  the file never stores it twice;
* :class:`~.feedback.FeedbackStore` (every open) stores the ids (``INSERT OR IGNORE``).

A run spools only while the folder holds fewer than :data:`MAX_FILES` files and it has at
most :data:`MAX_IDS` ids (:func:`room`): a device that only ever runs short predicts keeps
a bounded spool, because the first run past the bound opens the outbox, which takes the
spool in. Only ``json`` and ``os`` are imported here (``logging`` on the first message).
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

from mlpack_edge.monitor_agent._log import log

__all__ = ["DIR_NAME", "MAX_FILES", "MAX_IDS", "room", "waiting", "write", "pending", "done"]


DIR_NAME = "spool"
MAX_FILES = 64
MAX_IDS = 10_000
_STALE_TMP_SECONDS = 3600.0


def room(state_dir: Path) -> bool:
    """Whether another run may spool: fewer than :data:`MAX_FILES` files waiting."""
    try:
        with os.scandir(state_dir / DIR_NAME) as it:
            n = sum(1 for e in it if e.name.endswith(".json"))
    except FileNotFoundError:
        return True
    except OSError:
        return False
    return n < MAX_FILES


def waiting(state_dir: Path, kind: str) -> bool:
    """Whether a ``kind`` file waits in the spool (telemetry exists even with no outbox yet)."""
    try:
        return any(n.endswith(f".{kind}.json") for n in os.listdir(state_dir / DIR_NAME))
    except OSError:
        return False


def write(state_dir: Path, parts: Mapping[str, Mapping[str, Any]]) -> None:
    """Durably write ``parts`` (kind -> JSON object) as ``<name>.<kind>.json``, one name for all.

    Each file is written under a dot name, fsynced and renamed; the folder is fsynced once
    after (and the state folder too when the spool folder was new). Raises ``OSError``.
    """
    folder = state_dir / DIR_NAME
    created = not folder.is_dir()
    new_state = created and not state_dir.is_dir()
    if created:
        folder.mkdir(parents=True, exist_ok=True)
    name = f"{time.time_ns():020d}-{os.getpid()}-{os.urandom(4).hex()}"  # sorts by time
    for kind, payload in parts.items():
        data = json.dumps(payload, separators=(",", ":"), allow_nan=False).encode()
        tmp = folder / f".{name}.{kind}.tmp"
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        try:
            view = memoryview(data)
            while view:
                view = view[os.write(fd, view) :]
            os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(tmp, folder / f"{name}.{kind}.json")
    _fsync_dir(folder)
    if created:  # the new folders' entries too
        _fsync_dir(state_dir)
    if new_state:
        _fsync_dir(state_dir.parent)


def pending(state_dir: Path, kind: str) -> Iterator[tuple[Path, dict[str, Any]]]:
    """``(path, payload)`` of each waiting ``kind`` file, oldest first. A file that is not a JSON
    object is renamed to ``*.bad`` (one log line) and skipped, so it cannot block the others."""
    folder = state_dir / DIR_NAME
    try:
        names = sorted(os.listdir(folder))
    except OSError:
        return
    suffix = f".{kind}.json"
    now = time.time()
    for n in names:
        path = folder / n
        if n.startswith(".") and n.endswith(".tmp"):  # a writer killed mid-write: nobody will rename it
            try:
                if now - path.stat().st_mtime > _STALE_TMP_SECONDS:
                    path.unlink()
            except OSError:
                pass
            continue
        if not n.endswith(suffix):
            continue
        try:
            payload = json.loads(path.read_bytes())
            if not isinstance(payload, dict):
                raise ValueError("not a JSON object")
        except FileNotFoundError:  # another process took it in meanwhile
            continue
        except (OSError, ValueError) as exc:
            log.error("spooled telemetry %s is unreadable (%s): set aside as %s.bad", path, exc, n)
            try:
                os.replace(path, folder / f"{n}.bad")
            except OSError:
                pass
            continue
        yield path, payload


def done(path: Path) -> None:
    """The file's content is stored: remove it (another process may have already)."""
    try:
        path.unlink()
    except FileNotFoundError:
        pass


def _fsync_dir(folder: Path) -> None:
    fd = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
