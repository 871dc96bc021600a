"""A short one-shot process's telemetry at exit: one small file instead of two SQLite writes.

A short ``predict`` (agent deferred and never started, nothing checkpointed) stores its
window and the ids of its predictions at exit. Through SQLite that is two databases, each
opened, written and checkpointed: nine fsyncs and the sqlite3/outbox imports, more than
everything else the agent adds to the run. Instead the agent writes one file,
``<state>/spool/<name>.<kinds>.json`` (``ids-window``, or ``window`` or ``ids`` alone),
to a temporary name, fsynced, renamed, then the folder fsynced: two fsyncs, as durable
as a committed window, so a kill loses no more than before. The next process to open a
store takes its part in:

* :class:`~.outbox.Outbox` (every open) registers the window's model and stores the window
  under a hand-off token named after the run (:func:`window_token`), so a crash between
  storing it and removing it from the file never stores it twice;
* :class:`~.feedback.FeedbackStore` (every open) stores the ids (``INSERT OR IGNORE``).

A file holding one kind is removed once its kind is stored (:func:`done`); a file holding
both is replaced by a file of the other kind alone (written as durably first), so each
store finds only its own part afterwards. A file of one kind holds that part as its
object; a file of several holds ``{kind: part}``.

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

__all__ = ["DIR_NAME", "MAX_FILES", "MAX_IDS", "room", "waiting", "write", "pending", "done", "window_token"]


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


def _kinds(file_name: str) -> tuple[str, list[str]] | None:
    """``(run name, kinds)`` of a spool file name (``<name>.<kind>[-<kind>...].json``), else ``None``."""
    if file_name.startswith(".") or not file_name.endswith(".json"):
        return None
    stem, sep, kinds = file_name[: -len(".json")].rpartition(".")
    return (stem, kinds.split("-")) if sep and stem else None


def waiting(state_dir: Path, kind: str) -> bool:
    """Whether a file holding ``kind`` waits in the spool (telemetry exists even with no outbox yet)."""
    try:
        names = os.listdir(state_dir / DIR_NAME)
    except OSError:
        return False
    return any(kind in got[1] for got in map(_kinds, names) if got is not None)


def window_token(path: Path, i: int) -> str:
    """The outbox's hand-off token of the ``i``-th window of the run ``path`` holds: the same
    whichever file of the run holds it (a two-kind file, or the window file it leaves)."""
    got = _kinds(path.name)
    stem = got[0] if got is not None else path.name
    return f"spool:{stem}.window.json:{i}"


def write(state_dir: Path, parts: Mapping[str, Mapping[str, Any]]) -> None:
    """Durably write ``parts`` (kind -> JSON object) as one file ``<name>.<kinds>.json``.

    Written under a dot name, fsynced and renamed; the folder is fsynced after (and the
    state folder too when the spool folder was new): two fsyncs. Raises ``OSError``.
    """
    folder = state_dir / DIR_NAME
    created = not folder.is_dir()
    new_state = created and not state_dir.is_dir()
    if created:
        folder.mkdir(parents=True, exist_ok=True)
    name = f"{time.time_ns():020d}-{os.getpid()}-{os.urandom(4).hex()}"  # sorts by time
    _write_file(folder, name, parts)
    _fsync_dir(folder)
    if created:  # the new folders' entries too
        _fsync_dir(state_dir)
    if new_state:
        _fsync_dir(state_dir.parent)


def _write_file(folder: Path, name: str, parts: Mapping[str, Mapping[str, Any]]) -> Path:
    """``parts`` as ``<name>.<kinds>.json`` (fsynced, renamed; the caller fsyncs the folder)."""
    kinds = sorted(parts)
    payload = parts[kinds[0]] if len(kinds) == 1 else {k: parts[k] for k in kinds}
    data = json.dumps(payload, separators=(",", ":"), allow_nan=False).encode()
    tag = "-".join(kinds)
    tmp = folder / f".{name}.{tag}.tmp"
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        view = memoryview(data)
        while view:
            view = view[os.write(fd, view) :]
        os.fsync(fd)
    finally:
        os.close(fd)
    final = folder / f"{name}.{tag}.json"
    os.replace(tmp, final)
    return final


def pending(state_dir: Path, kind: str) -> Iterator[tuple[Path, dict[str, Any]]]:
    """``(path, part)`` of each waiting file holding ``kind``, oldest first. A file that is not
    a JSON object (or lacks the part its name promises) is renamed to ``*.bad`` (one log line)
    and skipped, so it cannot block the others."""
    folder = state_dir / DIR_NAME
    try:
        names = sorted(os.listdir(folder))
    except OSError:
        return
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
        got = _kinds(n)
        if got is None or kind not in got[1]:
            continue
        try:
            payload = _read(path, got[1], kind)
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


def _read(path: Path, kinds: list[str], kind: str) -> dict[str, Any]:
    payload = json.loads(path.read_bytes())
    if not isinstance(payload, dict):
        raise ValueError("not a JSON object")
    if len(kinds) > 1:
        payload = payload.get(kind)
        if not isinstance(payload, dict):
            raise ValueError(f"no {kind} object")
    return payload


def done(path: Path, kind: str) -> None:
    """``kind``'s part of the file is stored: remove the file (another process may have already),
    first writing the parts of other kinds it holds to a file of their own (durably)."""
    got = _kinds(path.name)
    rest = [k for k in got[1] if k != kind] if got is not None else []
    if rest and got is not None:
        try:
            payload = json.loads(path.read_bytes())
        except FileNotFoundError:
            return
        except (OSError, ValueError):  # it was read a moment ago: leave it for the next open
            return
        parts = {k: payload[k] for k in rest if isinstance(payload, dict) and isinstance(payload.get(k), dict)}
        if parts:
            try:
                _write_file(path.parent, got[0], parts)
                _fsync_dir(path.parent)
            except OSError as exc:
                log.error("spooled telemetry %s: the rest not written apart (%s); left for the next open", path, exc)
                return
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
