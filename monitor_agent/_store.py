"""Opening the outbox's SQLite file safely: pragmas, schema, corruption, sequence floor.

Durability: WAL journal with ``synchronous=FULL`` so a committed window survives a
power cut, not just a crash. A file SQLite calls corrupt (``SQLITE_CORRUPT``/``NOTADB``),
that fails ``quick_check`` or has an unknown schema is renamed aside (with its ``-wal``/
``-shm``) and a fresh one is created, with one clear log line; only the newest
:data:`KEEP_ASIDE` set-aside copies are kept so a flapping disk cannot fill itself up.

Page size: :data:`PAGE_SIZE` (1 KiB) for every new outbox, whatever the cap it is created
with (an ``install`` creates it for its audit events before the agent's cap is known):
the empty schema then takes ~20 KiB instead of ~80 KiB with SQLite's 4 KiB pages, and
one write's WAL frames shrink with it, which is what lets a 128 KiB cap hold windows at
all. An outbox created earlier keeps its page size (the cap accounts for it). The WAL is
checkpointed by the outbox itself (see ``Outbox``'s cap), so SQLite's own automatic
checkpoint is only a safety net here.

Tables added after schema 1 shipped (``known_models``, ``checkpoints``) are created on open when missing
and the schema number stays 1: an older agent (after a rollback) ignores a table it does
not know, where a new schema number would make it set the whole outbox aside.

Sequence numbers must never repeat for a device, even after a reset that loses the
database. ``outbox.seq`` (written atomically) holds a *reservation*: the database never
hands out a number above it without first raising it by :data:`RESERVE_BLOCK`; a fresh
database starts above the reservation. One extra fsync per block, not per window.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import sqlite3
import time
from collections.abc import Callable, Iterator
from pathlib import Path

from mlpack_edge.errors import OutboxError

__all__ = [
    "DB_NAME",
    "SEQ_NAME",
    "KEEP_ASIDE",
    "RESERVE_BLOCK",
    "is_corruption",
    "connect",
    "set_aside",
    "reserve",
    "PAGE_SIZE",
    "CACHE_KIB",
]

log = logging.getLogger("mlpack_edge.monitor_agent")

DB_NAME = "outbox.sqlite"
SEQ_NAME = "outbox.seq"
KEEP_ASIDE = 3
RESERVE_BLOCK = 1024
PAGE_SIZE = 1024
# SQLite's page cache per connection, in KiB (``PRAGMA cache_size``; SQLite's default is 2,000).
# The agent's stores write a few pages a second and read back little, so a bigger cache buys
# nothing the OS page cache does not, while each connection kept up to 2 MB of a serving
# process's memory (the outbox's quick_check at open alone reads every page through it).
CACHE_KIB = 256
SCHEMA_VERSION = 1
_COUNTERS = (
    "produced", "delivered", "merged", "dropped", "dropped_rows", "dead_letter",
    "reported_dropped", "reported_dead_letter",
)

_SCHEMA = """
CREATE TABLE meta (key TEXT PRIMARY KEY, value INTEGER NOT NULL);
CREATE TABLE models (hash TEXT PRIMARY KEY, body BLOB NOT NULL);
CREATE TABLE windows (
    seq INTEGER PRIMARY KEY, seq_last INTEGER NOT NULL, model TEXT NOT NULL,
    start REAL NOT NULL, "end" REAL NOT NULL, level INTEGER NOT NULL, rows INTEGER NOT NULL,
    attempted INTEGER NOT NULL DEFAULT 0, body BLOB NOT NULL);
CREATE TABLE audit (seq INTEGER PRIMARY KEY, time REAL NOT NULL, event TEXT NOT NULL, detail TEXT NOT NULL);
CREATE TABLE dead_letter (
    id INTEGER PRIMARY KEY AUTOINCREMENT, kind TEXT NOT NULL, seq INTEGER NOT NULL,
    seq_last INTEGER NOT NULL, status INTEGER NOT NULL, reason TEXT NOT NULL, time REAL NOT NULL,
    body BLOB NOT NULL);
CREATE TABLE recent (model TEXT NOT NULL, bucket INTEGER NOT NULL, body BLOB NOT NULL,
    PRIMARY KEY (model, bucket));
CREATE TABLE current (model TEXT NOT NULL, pid INTEGER NOT NULL, time REAL NOT NULL,
    body BLOB NOT NULL, PRIMARY KEY (model, pid));
"""
# Added to schema 1 later (see the module docstring): models the collector at ``url``
# acknowledged, so batches to it leave their ``models`` entries out; the durable
# checkpoints of open windows, one per model, owner process and window (``_checkpoint``), which
# replace the ``current`` snapshots (left in the schema for an older agent after a rollback).
_ADDED = {
    "known_models": "CREATE TABLE IF NOT EXISTS known_models (url TEXT NOT NULL, hash TEXT NOT NULL, "
    "PRIMARY KEY (url, hash))",
    "checkpoints": "CREATE TABLE IF NOT EXISTS checkpoints (model TEXT NOT NULL, owner TEXT NOT NULL, "
    "start REAL NOT NULL, time REAL NOT NULL, rows INTEGER NOT NULL, body BLOB NOT NULL, "
    "PRIMARY KEY (model, owner, start))",
    # Hand-offs from the feedback store (``feedback.sqlite``) already stored as windows: the
    # token makes a hand-off interrupted by a crash idempotent across the two files.
    "handoffs": "CREATE TABLE IF NOT EXISTS handoffs (token TEXT PRIMARY KEY, seq INTEGER NOT NULL)",
}


def is_corruption(exc: BaseException) -> bool:
    """True for SQLite errors that mean the file itself is damaged (not busy, not full)."""
    name = getattr(exc, "sqlite_errorname", "") or ""
    return isinstance(exc, sqlite3.DatabaseError) and (
        name.startswith("SQLITE_CORRUPT") or name.startswith("SQLITE_NOTADB")
    )


class _Corrupt(Exception):
    pass


def connect(state_dir: Path, cap_bytes: int, clock: Callable[[], float]) -> sqlite3.Connection:
    """An open, checked outbox in ``state_dir``; a damaged one is set aside and replaced."""
    try:
        state_dir.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise OutboxError(f"{state_dir}: cannot create the state directory ({exc.strerror})") from None
    path = state_dir / DB_NAME
    try:
        return _open(path, cap_bytes)
    except (_Corrupt, sqlite3.DatabaseError) as exc:
        if isinstance(exc, sqlite3.DatabaseError) and not is_corruption(exc):
            raise OutboxError(f"{path}: cannot open the outbox ({exc})") from None
        reason = str(exc)
    set_aside(path, reason, clock)
    try:
        return _open(path, cap_bytes)
    except (_Corrupt, sqlite3.DatabaseError) as exc:  # never loop: a second failure is an error
        raise OutboxError(f"{path}: a fresh outbox cannot be created either ({exc})") from None


def _open(path: Path, cap_bytes: int) -> sqlite3.Connection:
    fresh = not path.exists() or path.stat().st_size == 0
    conn = sqlite3.connect(path, isolation_level=None, check_same_thread=False, timeout=30.0)
    try:
        if fresh:  # only effective before the first table exists
            conn.execute(f"PRAGMA page_size = {PAGE_SIZE}")
            conn.execute("PRAGMA auto_vacuum = INCREMENTAL")
        mode = conn.execute("PRAGMA journal_mode = WAL").fetchone()[0]
        if mode != "wal":
            raise OutboxError(f"{path}: the file system does not support SQLite WAL mode")
        page = conn.execute("PRAGMA page_size").fetchone()[0]
        conn.execute("PRAGMA synchronous = FULL")
        conn.execute(f"PRAGMA cache_size = -{CACHE_KIB}")
        # The outbox checkpoints the WAL itself, within its cap; this is a safety net.
        conn.execute(f"PRAGMA wal_autocheckpoint = {max(16, cap_bytes // page // 16)}")
        conn.execute(f"PRAGMA journal_size_limit = {max(page, cap_bytes // 64)}")
        check = conn.execute("PRAGMA quick_check").fetchall()
        if check != [("ok",)]:
            raise _Corrupt(f"quick_check: {check[0][0]}")
        tables = {r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type='table'")}
        if not tables:
            _create(conn, path)
        else:
            row = conn.execute("SELECT value FROM meta WHERE key='schema'").fetchone() if "meta" in tables else None
            if row is None or row[0] != SCHEMA_VERSION:
                raise _Corrupt(f"unknown outbox schema {row[0] if row else None!r}")
            for name, statement in _ADDED.items():
                if name not in tables:
                    conn.execute(statement)
        return conn
    except BaseException:
        conn.close()
        raise


def _create(conn: sqlite3.Connection, path: Path) -> None:
    floor = _read_reservation(path.parent)
    conn.execute("BEGIN IMMEDIATE")
    if conn.execute("SELECT 1 FROM sqlite_master WHERE name = 'meta'").fetchone():
        conn.execute("COMMIT")  # another process created it while we waited for the lock
        return
    for stmt in [*_SCHEMA.strip().split(";\n"), *_ADDED.values()]:
        if stmt.strip():
            conn.execute(stmt)
    rows = [("schema", SCHEMA_VERSION), ("next_seq", floor["window"] + 1), ("next_audit", floor["audit"] + 1),
            ("reserved_window", floor["window"]), ("reserved_audit", floor["audit"])]
    rows += [(k, 0) for k in _COUNTERS]
    conn.executemany("INSERT INTO meta (key, value) VALUES (?, ?)", rows)
    conn.execute("COMMIT")


def set_aside(path: Path, reason: str, clock: Callable[[], float]) -> Path:
    """Rename a damaged outbox (and its WAL/SHM) aside, keep the newest few, log it."""
    stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime(clock()))
    aside = path.with_name(f"{path.name}.corrupt-{stamp}-{os.getpid()}")
    for suffix in ("", "-wal", "-shm"):
        src = Path(str(path) + suffix)
        if src.exists():
            try:
                os.replace(src, Path(str(aside) + suffix))
            except OSError as exc:
                raise OutboxError(f"{src}: cannot move the damaged outbox aside ({exc.strerror})") from None
    log.error(
        "outbox %s is damaged (%s): moved aside to %s and started a fresh outbox; "
        "windows still pending in it were not delivered",
        path, reason, aside.name,
    )
    olds = sorted(p for p in path.parent.glob(f"{path.name}.corrupt-*") if not p.name.endswith(("-wal", "-shm")))
    for old in olds[:-KEEP_ASIDE]:
        for suffix in ("", "-wal", "-shm"):
            Path(str(old) + suffix).unlink(missing_ok=True)
    return aside


def _read_reservation(state_dir: Path) -> dict[str, int]:
    path = state_dir / SEQ_NAME
    if not path.exists():
        return {"window": 0, "audit": 0}
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
        return {"window": int(data["window"]), "audit": int(data["audit"])}
    except (OSError, ValueError, KeyError, TypeError):
        # The floor is lost too: epoch seconds are above any count a device reaches.
        floor = int(time.time())
        log.error("%s is unreadable: sequence numbers restart above %d", path, floor)
        return {"window": floor, "audit": floor}


def reserve(conn: sqlite3.Connection, state_dir: Path, kind: str) -> int:
    """The next ``kind`` ("window"/"audit") sequence number; call inside a write transaction."""
    key = "next_seq" if kind == "window" else "next_audit"
    meta = dict(conn.execute("SELECT key, value FROM meta WHERE key IN (?, 'reserved_window', 'reserved_audit')", (key,)))
    seq = meta[key]
    conn.execute("UPDATE meta SET value=? WHERE key=?", (seq + 1, key))
    if seq > meta[f"reserved_{kind}"]:
        floor = {"window": meta["reserved_window"], "audit": meta["reserved_audit"]}
        floor[kind] = seq + RESERVE_BLOCK - 1
        # Durable before the number is used: a reset can then always start above it. Imported
        # here (once per RESERVE_BLOCK windows): _fs loads shutil and tempfile (with bz2 and lzma),
        # ~0.3 MB a serving process would otherwise hold for nothing.
        from mlpack_edge._fs import atomic_write_text

        atomic_write_text(state_dir / SEQ_NAME, json.dumps(floor, sort_keys=True) + "\n")
        conn.execute("UPDATE meta SET value=? WHERE key=?", (floor[kind], f"reserved_{kind}"))
    return int(seq)


@contextlib.contextmanager
def immediate_tx(conn: sqlite3.Connection) -> Iterator[sqlite3.Connection]:
    """``BEGIN IMMEDIATE`` … ``COMMIT``, rolled back on any exception (a kill between the
    two leaves nothing: SQLite's journal undoes the open transaction on the next open)."""
    conn.execute("BEGIN IMMEDIATE")
    try:
        yield conn
        conn.execute("COMMIT")
    except BaseException:
        if conn.in_transaction:
            with contextlib.suppress(sqlite3.Error):
                conn.execute("ROLLBACK")
        raise
