"""The on-disk outbox: closed windows wait here, in SQLite, until the collector has them.

* Every closed window gets the device's next sequence number in the same transaction
  that stores it.
* Open windows are checkpointed (``checkpoints``: one row per model and live process,
  replaced at least every ``checkpoint_seconds``). Storing a window deletes its
  process's checkpoint in the same transaction; a process that died leaves its last
  checkpoint, which the next process to open the outbox stores as a normal window with
  the next sequence number (:meth:`Outbox.recover_checkpoints`, also one transaction).
  So a ``kill -9`` or a power cut loses at most the rows recorded since the last
  checkpoint, and no row is ever counted twice.
* A window leaves only when the collector acknowledged a durable write (:meth:`ack`), or
  when it is moved to the dead-letter table (:meth:`dead_letter`) after a non-retryable
  refusal, or dropped by the cap as a last resort.
* The cap bounds every byte of ``outbox.sqlite``, its ``-wal`` and ``-shm`` and
  ``outbox.seq``, at every moment, not only at rest: history, dead letters, checkpoints
  and models are inside it. Writes keep :attr:`Outbox.headroom` (what one write can add
  while it runs: its WAL frames, then as many database pages when they are
  checkpointed) free below the cap, and every write is followed by a WAL checkpoint
  once the WAL passes ``cap / 64``. When the files reach ``cap - headroom``, room is made
  in this order: older hours of ``status`` history, dead-letter bodies, models nothing
  refers to, merges of unsent windows into hours then days (:mod:`._compact`), and only
  then the oldest unsent windows -- never the newest: new data always wins over
  history. A cap too small for the model's windows is refused when the agent opens
  (:meth:`Outbox.smallest_cap` gives the smallest workable one). Outside the cap: the
  empty lock files of ``checkpoints/`` (one per live process) and ``upload.lock``,
  ``agent.json``/``agent.token``, and up to ``KEEP_ASIDE`` damaged databases set aside.
* Accounting, in original windows: ``produced = delivered + pending + merged + dropped +
  dead_letter`` (pending counts stored rows; merging k rows into one adds k-1 to merged).

Besides the queue, it keeps what ``status`` needs offline: the registered models (name,
version, profile, thresholds), per-hour merged copies of recent windows (``recent``,
48 hours, kept after delivery, the first thing the cap gives up) and the checkpoints of
the windows still open.

It also remembers which models the collector already has (``known_models``: model
hash per collector URL, recorded once a batch carrying the model was acknowledged), so
batches leave out the ~8 KiB ``models`` entry (name, version, reference profile) the
collector would otherwise receive, decode and compare with every upload. Knowing is
per URL: another collector URL starts from nothing, and :meth:`Outbox.forget_known`
drops what a collector turned out not to know (its database was reset).
"""

from __future__ import annotations

import copy
import json
import logging
import os
import re
import sqlite3
import threading
import time
import zlib
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

from mlpack_edge.errors import OutboxError
from mlpack_edge.monitor_agent import _checkpoint, _spool, _store
from mlpack_edge.monitor_agent._compact import STAGES, Stored, plan_merges
from mlpack_edge.monitor_agent.config import DEFAULT_CAP_BYTES
from mlpack_edge.monitor_agent.wire import Window, WireError, merge_windows

__all__ = ["Outbox", "Accounting", "Batch", "DeadLetter", "append_audit", "RECENT_HOURS"]

log = logging.getLogger("mlpack_edge.monitor_agent")

RECENT_HOURS = 48
_SHM_BYTES = 32768  # SQLite's WAL index: 32 KiB while the WAL holds fewer than ~4,000 frames
#: The files the cap bounds (see the module docstring for what lies outside it).
_CAPPED = (_store.DB_NAME, _store.DB_NAME + "-wal", _store.DB_NAME + "-shm", _store.SEQ_NAME)
_EVENT = re.compile(r"^[a-z][a-z0-9_.-]{0,63}$")
T = TypeVar("T")


def _pack(obj: Any) -> bytes:
    # Level 1: 7x less CPU than 6 for ~10% more bytes (a checkpoint is packed twice a second).
    return zlib.compress(json.dumps(obj, separators=(",", ":"), allow_nan=False).encode("utf-8"), 1)


def _unpack(blob: bytes) -> Any:
    return json.loads(zlib.decompress(blob))


@dataclass(frozen=True)
class Accounting:
    """Where every window ever produced went (counted in original windows, see module doc)."""

    produced: int
    delivered: int
    pending: int
    merged: int
    dropped: int
    dead_letter: int
    dropped_rows: int

    @property
    def balanced(self) -> bool:
        return self.produced == self.delivered + self.pending + self.merged + self.dropped + self.dead_letter

    def to_dict(self) -> dict[str, int]:
        return {
            "produced": self.produced,
            "delivered": self.delivered,
            "pending": self.pending,
            "merged": self.merged,
            "dropped": self.dropped,
            "dead_letter": self.dead_letter,
            "dropped_rows": self.dropped_rows,
        }


@dataclass
class Batch:
    """One upload's content, as taken from the outbox (``windows``/``audit`` are wire dicts).

    ``models`` holds the entries the collector may not know; ``known`` the hashes of the
    windows' other models, left out because the collector acknowledged them before.
    """

    windows: list[dict[str, Any]]
    audit: list[dict[str, Any]]
    models: dict[str, dict[str, Any]]
    outbox: dict[str, int]
    known: list[str] = field(default_factory=list)

    @property
    def window_seqs(self) -> list[int]:
        return [int(w["seq"]) for w in self.windows]

    @property
    def audit_seqs(self) -> list[int]:
        return [int(a["seq"]) for a in self.audit]

    def __len__(self) -> int:
        return len(self.windows) + len(self.audit)


@dataclass(frozen=True)
class DeadLetter:
    kind: str
    seq: int
    seq_last: int
    status: int
    reason: str
    time: float


class Outbox:
    """A bounded, crash-safe queue of windows (and audit events) in ``<state_dir>/outbox.sqlite``."""

    def __init__(self, state_dir: Path, cap_bytes: int, clock: Callable[[], float]) -> None:
        self.state_dir = Path(state_dir)
        self.path = self.state_dir / _store.DB_NAME
        self.cap_bytes = cap_bytes
        self._clock = clock
        self._lock = threading.RLock()
        self._conn: sqlite3.Connection | None = None
        self._inode = 0
        self._registered: dict[str, bytes] = {}  # re-registered into a fresh store after a reset
        self._page = 4096
        self._largest = 0  # the largest body written or expected (``expect``): sizes the headroom
        self._wal_allowance = max(0, cap_bytes // 64)  # WAL bytes left between writes before a checkpoint
        self._warned = self._warned_drops = float("-inf")
        self._unwarned_drops = 0
        self._merge_floor: dict[int, int] = {}  # see _first_mergeable
        self._capped = [str(self.state_dir / name) for name in _CAPPED]
        self._reopen()
        self.recover_checkpoints()
        self.take_spool()

    @classmethod
    def open(
        cls,
        state_dir: str | os.PathLike[str],
        cap_bytes: int = DEFAULT_CAP_BYTES,
        clock: Callable[[], float] = time.time,
    ) -> Outbox:
        """Open (creating, or replacing a damaged one) the outbox of ``state_dir``."""
        return cls(Path(state_dir), cap_bytes, clock)

    def close(self) -> None:
        with self._lock:
            if self._conn is not None:
                self._conn.close()
                self._conn = None

    def __enter__(self) -> Outbox:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"Outbox({str(self.path)!r}, cap_bytes={self.cap_bytes})"

    # ------------------------------------------------------------------ plumbing

    def _reopen(self) -> None:
        if self._conn is not None:
            self._conn.close()
            self._conn = None
        conn = _store.connect(self.state_dir, self.cap_bytes, self._clock)
        self._merge_floor = {}
        self._inode = self.path.stat().st_ino
        self._page = int(conn.execute("PRAGMA page_size").fetchone()[0])
        if self._registered:  # a replaced store must still know the models our windows name
            with self._tx(conn):
                conn.executemany("INSERT OR REPLACE INTO models (hash, body) VALUES (?, ?)", self._registered.items())
        self._conn = conn

    def _run(self, op: Callable[[sqlite3.Connection], T]) -> T:
        """Run ``op``; on corruption set the store aside and retry once on a fresh one."""
        with self._lock:
            if self._conn is None:
                raise OutboxError(f"{self.path}: the outbox is closed")
            try:
                if self.path.stat().st_ino != self._inode:  # another process replaced it
                    self._reopen()
            except FileNotFoundError:
                self._reopen()
            assert self._conn is not None
            try:
                return op(self._conn)
            except sqlite3.DatabaseError as exc:
                if not _store.is_corruption(exc):
                    raise OutboxError(f"{self.path}: {exc}") from None
                self._conn.close()
                self._conn = None
                _store.set_aside(self.path, str(exc), self._clock)
                self._reopen()
                assert self._conn is not None
                # The collector hears of the reset (the pending windows it never got are gone).
                self._audit(self._conn, "outbox_reset", json.dumps({"reason": str(exc)}))
                try:
                    return op(self._conn)
                except sqlite3.DatabaseError as again:
                    raise OutboxError(f"{self.path}: fresh outbox failed too ({again})") from None

    _tx = staticmethod(_store.immediate_tx)

    @staticmethod
    def _bump(conn: sqlite3.Connection, **deltas: int) -> None:
        for key, delta in deltas.items():
            if delta:
                conn.execute("UPDATE meta SET value = value + ? WHERE key = ?", (delta, key))

    def expect(self, window_bytes: int) -> None:
        """Size the headroom for windows of about ``window_bytes`` (packed) from the start."""
        self._largest = max(self._largest, window_bytes)

    # ------------------------------------------------------------------ models

    def register_model(self, content_hash: str, wire: Mapping[str, Any], thresholds: Mapping[str, float]) -> None:
        """Remember ``{name, version, profile}`` (sent with its windows) and drift thresholds."""
        body = _pack({"wire": dict(wire), "thresholds": dict(thresholds)})

        def op(conn: sqlite3.Connection) -> None:
            with self._tx(conn):
                row = conn.execute("SELECT body FROM models WHERE hash = ?", (content_hash,)).fetchone()
                if row is not None and row[0] == body:  # every start registers: write (and fsync) only news
                    return
                if row is not None:  # changed: no collector has this version of it
                    conn.execute("DELETE FROM known_models WHERE hash = ?", (content_hash,))
                conn.execute("INSERT OR REPLACE INTO models (hash, body) VALUES (?, ?)", (content_hash, body))

        self._registered[content_hash] = body  # (first: the cap never trims a model being registered)
        self._write(op, len(body), often=True)

    def models(self) -> dict[str, dict[str, Any]]:
        """content hash -> ``{"wire": {name, version, profile}, "thresholds": {...}}``."""
        return self._run(lambda c: {h: _unpack(b) for h, b in c.execute("SELECT hash, body FROM models")})

    def mark_known(self, collector: str, hashes: Sequence[str]) -> None:
        """The collector at URL ``collector`` stored these models; what other URLs knew is dropped."""

        def op(conn: sqlite3.Connection) -> None:
            with self._tx(conn):
                conn.execute("DELETE FROM known_models WHERE url != ?", (collector,))
                conn.executemany(
                    "INSERT OR IGNORE INTO known_models (url, hash) VALUES (?, ?)", [(collector, h) for h in hashes]
                )

        if hashes:
            self._write(op, 0, often=True)

    def forget_known(self, collector: str, hashes: Sequence[str]) -> None:
        """The collector at ``collector`` may not have these models after all: send them again."""

        def op(conn: sqlite3.Connection) -> None:
            with self._tx(conn):
                conn.executemany(
                    "DELETE FROM known_models WHERE url = ? AND hash = ?", [(collector, h) for h in hashes]
                )

        if hashes:
            self._write(op, 0, often=True)

    def known(self, collector: str) -> set[str]:
        """Hashes of the models the collector at ``collector`` has acknowledged."""
        rows = self._run(lambda c: c.execute("SELECT hash FROM known_models WHERE url = ?", (collector,)).fetchall())
        return {r[0] for r in rows}

    # ------------------------------------------------------------------ windows in

    def add_window(self, window: Window, owner: str | None = None, token: str | None = None) -> int:
        """Store a closed window under the next sequence number (returned); enforce the cap.

        ``owner`` (a :class:`._checkpoint.Owner` name): the same transaction deletes that
        process's checkpoint of this window, so a crash leaves either the checkpoint or
        the window, never both. (A checkpoint of an earlier window whose own store failed
        stays, for the next process to recover.)

        ``token`` (a hand-off from another store, :mod:`.feedback`): a window stored under
        the same token before is not stored again; its sequence number is returned.
        """

        def op(conn: sqlite3.Connection) -> int:
            with self._tx(conn):
                if token is not None:
                    row = conn.execute("SELECT seq FROM handoffs WHERE token = ?", (token,)).fetchone()
                    if row is not None:
                        return int(row[0])
                seq = self._insert_window(conn, window)
                if token is not None:
                    conn.execute("INSERT INTO handoffs (token, seq) VALUES (?, ?)", (token, seq))
                    # Keep the newest few hundred: the feedback store forgets a token once stored.
                    conn.execute("DELETE FROM handoffs WHERE seq < ?", (seq - 100_000,))
                if owner is not None:
                    conn.execute(
                        "DELETE FROM checkpoints WHERE model = ? AND owner = ? AND start = ?",
                        (window.model, owner, window.start),
                    )
            return seq

        return self._write(op, 0)  # (sized by the largest body so far, and ``expect``)

    def _insert_window(self, conn: sqlite3.Connection, window: Window) -> int:
        seq = _store.reserve(conn, self.state_dir, "window")
        window.seq = window.seq_last = seq
        body = _pack(window.to_dict())
        self._largest = max(self._largest, len(body))
        conn.execute(
            'INSERT INTO windows (seq, seq_last, model, start, "end", level, rows, body) '
            "VALUES (?, ?, ?, ?, ?, 0, ?, ?)",
            (seq, seq, window.model, window.start, window.end, window.rows, body),
        )
        self._bump(conn, produced=1)
        self._add_recent(conn, window, body)
        return seq

    def _add_recent(self, conn: sqlite3.Connection, window: Window, body: bytes) -> None:
        """Merge ``window`` (packed: ``body``) into its hour of ``status`` history (captured rows left out)."""
        if window.samples:
            window = copy.copy(window)
            window.samples = None
            body = _pack(window.to_dict())
        bucket = int(window.start // 3600)
        row = conn.execute("SELECT body FROM recent WHERE model = ? AND bucket = ?", (window.model, bucket)).fetchone()
        if row is not None:  # (merge leaves ``window`` as it is)
            merged = Window.from_dict(_unpack(row[0]))
            merged.merge(window)
            body = _pack(merged.to_dict())
        conn.execute("INSERT OR REPLACE INTO recent (model, bucket, body) VALUES (?, ?, ?)", (window.model, bucket, body))
        conn.execute("DELETE FROM recent WHERE bucket < ?", (bucket - RECENT_HOURS,))
        # Snapshots an older agent left (schema 1's ``current``; checkpoints replaced them).
        conn.execute("DELETE FROM current WHERE time < ?", (window.start - RECENT_HOURS * 3600,))

    # ------------------------------------------------------------------ checkpoints of open windows

    def save_checkpoint(self, window: Window, owner: str) -> None:
        """Durably replace ``owner``'s checkpoint of its open window (``window.model``, ``window.start``).

        If ``owner`` dies before it stores the window itself, :meth:`recover_checkpoints`
        (in whichever process opens the outbox next) stores this as a normal window.
        """
        body = _pack(window.to_dict())

        def op(conn: sqlite3.Connection) -> None:
            with self._tx(conn):
                conn.execute(
                    "INSERT OR REPLACE INTO checkpoints (model, owner, start, time, rows, body) VALUES (?, ?, ?, ?, ?, ?)",
                    (window.model, owner, window.start, self._clock(), window.rows, body),
                )

        self._write(op, len(body), often=True)

    def drop_checkpoints(self, owner: str) -> None:
        """``owner`` closed its windows some other way (or had nothing): forget its checkpoints."""
        self._run(lambda c: c.execute("DELETE FROM checkpoints WHERE owner = ?", (owner,)))

    def take_spool(self) -> int:
        """Store the windows short one-shot runs spooled at exit (:mod:`._spool`); returns how many.

        All in one transaction (a device that ran 30 short predicts since the last open pays
        one fsync for them, not 30), each window under a hand-off token named after its file,
        so a crash between storing and deleting the files stores each once. A file this
        outbox cannot read as windows is set aside (``*.bad``), as an unreadable one is.
        """
        taken: list[tuple[Path, list[Window]]] = []
        for path, payload in _spool.pending(self.state_dir, "window"):
            try:
                model = payload["model"]
                windows = [Window.from_dict(d) for d in payload["windows"]]
                self.register_model(model["hash"], model["wire"], model["thresholds"])
            except (KeyError, TypeError, ValueError, WireError) as exc:
                log.error("spooled telemetry %s is not a window (%s): set aside", path, exc)
                try:
                    os.replace(path, path.with_name(path.name + ".bad"))
                except OSError:
                    pass
                continue
            taken.append((path, windows))
        if not taken:
            return 0

        def op(conn: sqlite3.Connection) -> int:
            n = 0
            with self._tx(conn):
                for path, windows in taken:
                    for i, window in enumerate(windows):
                        token = _spool.window_token(path, i)
                        if conn.execute("SELECT 1 FROM handoffs WHERE token = ?", (token,)).fetchone() is None:
                            seq = self._insert_window(conn, window)
                            conn.execute("INSERT INTO handoffs (token, seq) VALUES (?, ?)", (token, seq))
                            n += 1
            return n

        n = self._write(op, 0)
        for path, _ in taken:
            _spool.done(path, "window")
        return n

    def recover_checkpoints(self, skip_owner: str | None = None, orphans: bool = False) -> int:
        """Store the checkpoints of dead processes as normal windows; returns how many.

        Cheap when there is nothing to do: the owners' lock files are checked first
        (:mod:`._checkpoint`) and SQLite is asked only if one is dead. ``orphans`` also
        asks SQLite for checkpoint rows whose owner file is gone (done once per
        long-running agent). Each checkpoint becomes a window with the next sequence
        number and leaves the checkpoint table in the same transaction, so a crash in
        the middle recovers it again or not at all, never twice.
        """
        dead = _checkpoint.dead_owners(self.state_dir, skip_owner)
        if not dead and not orphans:
            return 0

        owners = set(dead)
        if orphans:
            found = self._run(lambda c: [o for (o,) in c.execute("SELECT DISTINCT owner FROM checkpoints")])
            owners.update(o for o in found if o != skip_owner and _checkpoint.is_dead(self.state_dir, o))

        def one(owner: str) -> Callable[[sqlite3.Connection], int]:
            def op(conn: sqlite3.Connection) -> int:
                with self._tx(conn):  # read inside the write lock: two recoverers never both store one
                    row = conn.execute(
                        "SELECT model, start, body FROM checkpoints WHERE owner = ? ORDER BY start LIMIT 1", (owner,)
                    ).fetchone()
                    if row is None:
                        return 0
                    window = Window.from_dict(_unpack(row[2]))
                    seq = self._insert_window(conn, window)
                    conn.execute("DELETE FROM checkpoints WHERE model = ? AND owner = ? AND start = ?",
                                 (row[0], owner, row[1]))
                log.info(
                    "stored the last checkpoint of a process that ended without closing its window as seq %d"
                    " (%d rows, %.3f..%.3f)", seq, window.rows, window.start, window.end,
                )
                return 1

            return op

        n = 0
        for owner in sorted(owners):
            while True:  # one transaction per checkpoint: each write's WAL stays within the headroom
                got = self._write(one(owner), 0)
                if not got:
                    break
                n += got
        _checkpoint.forget(self.state_dir, sorted(owners))
        return n

    # ------------------------------------------------------------------ cap

    def footprint(self) -> int:
        """Bytes the outbox holds on disk now: what the cap bounds (see the module docstring)."""
        total = 0
        for path in self._capped:
            try:
                total += os.stat(path).st_size
            except FileNotFoundError:
                pass
        return total

    def _tx_bytes(self, blob: int) -> int:
        """The most one write of a ``blob``-byte body adds while it runs: its WAL frames, and
        as many new database pages when the WAL is checkpointed into the database."""
        usable = self._page - 40
        frames = 2 * -(-blob // usable) + 8  # the body and its hour in ``recent``; b-tree, meta, freelist, ptrmap pages
        return frames * (2 * self._page + 24) + 32

    def _rows_per_write(self) -> int:
        """How many rows one write may touch with its WAL within the headroom: with small
        pages a window row fills a b-tree leaf of its own, so deleting, flagging or
        merging k rows rewrites about k pages."""
        frames = self.headroom // (2 * self._page + 24) - -(-self._largest // (self._page - 40)) - 6
        return max(2, frames)

    @property
    def headroom(self) -> int:
        """Room kept free below the cap at rest, so that no single write crosses it."""
        return 2 * self._wal_allowance + self._tx_bytes(self._largest)

    def smallest_cap(self, window_bytes: int, model: Mapping[str, Any] | None = None) -> int:
        """The smallest cap under which this outbox still keeps the newest window of
        ``window_bytes`` (packed): the empty database with its models (and ``model``'s
        ``register_model`` arguments, if not registered yet), the ``-shm`` index, one
        pending window, its hour of history, one checkpoint, and the headroom one write
        needs."""
        page = self._page

        def pages(n: int) -> int:
            return -(-n // (page - 40)) + 1

        def op(conn: sqlite3.Connection) -> int:
            roots = conn.execute("SELECT COUNT(*) FROM sqlite_master WHERE rootpage > 0").fetchone()[0]
            models = sum(pages(n) for (n,) in conn.execute("SELECT length(body) FROM models"))
            return int(roots) + models + 4  # + header page, pointer maps, a freelist trunk

        base = self._run(op) * page + _SHM_BYTES + 64
        if model is not None:
            base += pages(len(_pack({"wire": dict(model["wire"]), "thresholds": dict(model["thresholds"])}))) * page
        largest = max(window_bytes, self._largest)
        fixed = base + 3 * pages(largest) * page + self._tx_bytes(largest)
        # + twice the WAL allowance, cap // 64 of the answer itself
        return max(fixed + 2 * page, -(-fixed * 32 // 31))

    def _write(self, op: Callable[[sqlite3.Connection], T], blob: int, often: bool = False) -> T:
        """Run a write ``op`` within the cap: make room first if it might cross it, then
        checkpoint the WAL and enforce the cap again.

        ``often`` (the checkpoints of open windows, several a second): checkpoint the
        WAL only once it passes its allowance, instead of after every write, sparing
        the fsyncs; the headroom accounts for it.
        """
        self._largest = max(self._largest, blob)

        def run(conn: sqlite3.Connection) -> T:
            if self.footprint() + self.headroom > self.cap_bytes:
                self._enforce(conn)
            result = op(conn)
            try:
                wal = os.stat(str(self.path) + "-wal").st_size
            except FileNotFoundError:
                wal = 0
            if wal > (self._wal_allowance if often else 0):
                self._checkpoint(conn)
            if self.footprint() + self.headroom > self.cap_bytes:
                self._enforce(conn)
            return result

        return self._run(run)

    def _enforce(self, conn: sqlite3.Connection) -> None:
        """Free room below ``cap - headroom``: history first, then merges, then the oldest pending windows.

        In this order, each step one small transaction followed by a WAL checkpoint (so no
        step's WAL crosses the cap either): hours of ``recent`` history but the newest,
        dead letters, models nothing refers to any more, merges of unsent windows into
        hours then days, and only then the oldest unsent windows -- never the newest one.
        """
        limit = self.cap_bytes - self.headroom
        # Lossless steps free a little more than needed, so the next writes do not
        # compact again one by one; drops stop at the limit (no row lost early).
        target = limit - self.cap_bytes // 16
        self._settle(conn, limit)
        if self.footprint() <= limit:
            return
        for step in (self._trim_history, self._trim_dead_letters, self._trim_models):
            while step(conn):
                self._settle(conn, limit)
                if self.footprint() <= target:
                    return
        for span, level in STAGES:
            first = self._first_mergeable(conn, span, level)
            if first is None:
                continue
            stored = [
                Stored(*r)
                for r in conn.execute(
                    "SELECT seq, seq_last, model, start, level FROM windows WHERE attempted = 0 AND seq >= ? "
                    "ORDER BY seq", (first,)
                )
            ]
            for group in plan_merges(stored, span, level):
                # In chunks, so no merge's WAL (each deleted row rewrites its leaf page)
                # outgrows the headroom: the first chunk's result absorbs the next chunk.
                chunk = self._rows_per_write()
                head, rest = group[:chunk], group[chunk:]
                while True:
                    self._merge(conn, head, level)
                    self._settle(conn, limit)
                    if self.footprint() <= target:
                        return
                    if not rest:
                        break
                    head, rest = [head[0], *rest[: chunk - 1]], rest[chunk - 1 :]
        if self.footprint() <= limit:
            return
        dropped = 0
        while self.footprint() > limit:
            row = conn.execute(
                "SELECT seq, rows FROM windows WHERE attempted = 0 AND seq < (SELECT MAX(seq) FROM windows) "
                "ORDER BY seq LIMIT 1"
            ).fetchone()
            if row is None:
                self._warn_full()
                break
            with self._tx(conn):
                conn.execute("DELETE FROM windows WHERE seq = ?", (row[0],))
                self._bump(conn, dropped=1, dropped_rows=row[1])
            dropped += 1
            self._settle(conn, limit)
        self._unwarned_drops += dropped
        now = self._clock()
        if self._unwarned_drops and now - self._warned_drops >= 3600:  # at most once an hour while it lasts
            log.warning("outbox cap of %d bytes reached: dropped the %d oldest unsent windows", self.cap_bytes,
                        self._unwarned_drops)
            self._warned_drops, self._unwarned_drops = now, 0

    def _first_mergeable(self, conn: sqlite3.Connection, span: int, level: int) -> int | None:
        """The first unsent window that :func:`plan_merges` could merge with the next one at
        ``level`` (``None``: nothing to merge), found by SQLite instead of reading every row.

        Only from ``_merge_floor[level]`` on: below it nothing could merge when last
        looked at, and nothing there changes but by merges here (which lower it again);
        new windows arrive above it.
        """
        floor = self._merge_floor.get(level, 0)
        row = conn.execute(
            "SELECT MIN(a.seq) FROM windows a JOIN windows b ON b.seq = a.seq_last + 1 "
            "WHERE a.seq >= ? AND a.attempted = 0 AND b.attempted = 0 AND a.model = b.model AND a.level <= ? "
            "AND b.level <= ? AND CAST(a.start / ? AS INTEGER) = CAST(b.start / ? AS INTEGER)",
            (floor, level, level, span, span),
        ).fetchone()
        if row is None or row[0] is None:
            last = conn.execute("SELECT MAX(seq) FROM windows").fetchone()[0]
            self._merge_floor[level] = max(floor, int(last or 0))  # the newest may pair with the next
            return None
        self._merge_floor[level] = int(row[0])
        return int(row[0])

    def _warn_full(self) -> None:
        now = self._clock()
        if now - self._warned >= 3600:
            self._warned = now
            log.warning(
                "outbox %s holds %d bytes with only its newest or in-flight windows left, over its cap of %d "
                "less %d bytes of headroom: raise the cap", self.path, self.footprint(), self.cap_bytes, self.headroom,
            )

    def _trim_history(self, conn: sqlite3.Connection) -> bool:
        """Drop the oldest hour of ``status`` history (never a model's newest hour)."""
        row = conn.execute(
            "SELECT r.model, r.bucket FROM recent r WHERE r.bucket < "
            "(SELECT MAX(bucket) FROM recent WHERE model = r.model) ORDER BY r.bucket LIMIT 1"
        ).fetchone()
        if row is None:
            return False
        with self._tx(conn):
            conn.execute("DELETE FROM recent WHERE model = ? AND bucket = ?", row)
            conn.execute("DELETE FROM current")  # an older agent's snapshots: not worth any room
        return True

    def _trim_dead_letters(self, conn: sqlite3.Connection) -> bool:
        """Drop the oldest dead letter's body (it stays counted in ``dead_letter``)."""
        row = conn.execute("SELECT MIN(id) FROM dead_letter").fetchone()
        if row is None or row[0] is None:
            return False
        with self._tx(conn):
            conn.execute("DELETE FROM dead_letter WHERE id = ?", row)
        return True

    def _trim_models(self, conn: sqlite3.Connection) -> bool:
        """Drop the models (~8 KiB each) no window, checkpoint, history or process here refers to."""
        keep = list(self._registered)
        marks = ",".join("?" * len(keep)) or "NULL"
        cur = conn.execute(
            f"SELECT hash FROM models WHERE hash NOT IN ({marks}) AND hash NOT IN (SELECT model FROM windows) "
            "AND hash NOT IN (SELECT model FROM checkpoints) AND hash NOT IN (SELECT model FROM recent) LIMIT 1",
            keep,
        )
        row = cur.fetchone()
        if row is None:
            return False
        with self._tx(conn):
            conn.execute("DELETE FROM models WHERE hash = ?", row)
            conn.execute("DELETE FROM known_models WHERE hash = ?", row)
        return True

    def _merge(self, conn: sqlite3.Connection, seqs: Sequence[int], level: int) -> None:
        for above in list(self._merge_floor):  # a merged window may pair with its neighbours at coarser levels
            if above > level:
                self._merge_floor[above] = min(self._merge_floor[above], seqs[0] - 1)
        with self._tx(conn):
            marks = ",".join("?" * len(seqs))
            bodies = conn.execute(f"SELECT body FROM windows WHERE seq IN ({marks}) ORDER BY seq", seqs).fetchall()
            merged = merge_windows(Window.from_dict(_unpack(b[0])) for b in bodies)
            conn.execute(f"DELETE FROM windows WHERE seq IN ({marks})", seqs)
            conn.execute(
                'INSERT INTO windows (seq, seq_last, model, start, "end", level, rows, body) '
                "VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                (merged.seq, merged.seq_last, merged.model, merged.start, merged.end, level, merged.rows,
                 _pack(merged.to_dict())),
            )
            self._bump(conn, merged=len(bodies) - 1)

    @staticmethod
    def _checkpoint(conn: sqlite3.Connection) -> None:
        """Copy the WAL into the database and truncate it, so the WAL adds nothing at rest."""
        conn.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchall()

    def _settle(self, conn: sqlite3.Connection, limit: int | None = None) -> None:
        """Empty the WAL; give free pages back to the file system when over ``limit`` or when
        they are a quarter of the file, a few at a time so no step's WAL crosses the cap."""
        self._checkpoint(conn)
        step = max(1, (self.headroom // 2) // (3 * (self._page + 24)))  # a moved page: itself, its parent, a pointer map
        while True:
            free = conn.execute("PRAGMA freelist_count").fetchone()[0]
            if not free:
                return
            pages = conn.execute("PRAGMA page_count").fetchone()[0]
            if (limit is None or self.footprint() <= limit) and free * 4 < pages:
                return
            conn.execute(f"PRAGMA incremental_vacuum({min(step, free)})").fetchall()
            self._checkpoint(conn)

    # ------------------------------------------------------------------ windows out

    def take_batch(self, max_windows: int, max_bytes: int, max_audit: int = 100, collector: str | None = None) -> Batch:
        """The oldest pending windows and audit events, marked as sent (no longer mergeable).

        Models the collector at URL ``collector`` acknowledged are left out of ``models``
        (listed in ``known`` instead).
        """

        limit = max(1, min(max_windows, self._rows_per_write()))  # flagging k rows rewrites ~k pages

        def op(conn: sqlite3.Connection) -> Batch:
            with self._tx(conn):
                windows: list[dict[str, Any]] = []
                size = 0
                for (blob,) in conn.execute("SELECT body FROM windows ORDER BY seq LIMIT ?", (limit,)):
                    raw = zlib.decompress(blob)
                    size += len(raw)
                    if windows and size > max_bytes:
                        break
                    windows.append(json.loads(raw))
                seqs = [w["seq"] for w in windows]
                if seqs:
                    conn.execute(
                        f"UPDATE windows SET attempted = 1 WHERE seq IN ({','.join('?' * len(seqs))})", seqs
                    )
                audit = [
                    {"seq": s, "time": t, "event": e, "detail": json.loads(d)}
                    for s, t, e, d in conn.execute(
                        "SELECT seq, time, event, detail FROM audit ORDER BY seq LIMIT ?", (max_audit,)
                    )
                ]
                hashes = sorted({w["model"] for w in windows})
                known = [
                    h for h in hashes
                    if collector is not None
                    and conn.execute("SELECT 1 FROM known_models WHERE url = ? AND hash = ?", (collector, h)).fetchone()
                ]
                models: dict[str, dict[str, Any]] = {}
                for h in hashes:
                    if h in known:
                        continue
                    row = conn.execute("SELECT body FROM models WHERE hash = ?", (h,)).fetchone()
                    if row is not None:
                        models[h] = _unpack(row[0])["wire"]
                return Batch(windows, audit, models, self._accounting(conn).to_dict(), known)

        return self._write(op, 0, often=True)

    def ack(self, window_seqs: Sequence[int], audit_seqs: Sequence[int], reported: Mapping[str, int]) -> int:
        """The collector stored these durably: delete them; returns how many windows were deleted."""

        def op(conn: sqlite3.Connection) -> int:
            with self._tx(conn):
                n = _delete(conn, "windows", window_seqs)
                _delete(conn, "audit", audit_seqs)
                self._bump(conn, delivered=n)
                for key in ("dropped", "dead_letter"):
                    if key in reported:
                        conn.execute("UPDATE meta SET value = ? WHERE key = ?", (reported[key], f"reported_{key}"))
            return n

        n = self._write(op, 0)
        if n:
            self._run(self._settle)
        return n

    def dead_letter(self, window_seqs: Sequence[int], audit_seqs: Sequence[int], status: int, reason: str) -> int:
        """Move refused windows/events to the dead-letter table (kept, reported, not retried)."""
        now = self._clock()

        def op(conn: sqlite3.Connection) -> int:
            with self._tx(conn):
                moved = 0
                for table, seqs, kind in (("windows", window_seqs, "window"), ("audit", audit_seqs, "audit")):
                    if not seqs:
                        continue
                    marks = ",".join("?" * len(seqs))
                    if table == "windows":
                        rows = conn.execute(f"SELECT seq, seq_last, body FROM windows WHERE seq IN ({marks})", seqs)
                    else:
                        rows = conn.execute(
                            f"SELECT seq, seq, event || ' ' || detail FROM audit WHERE seq IN ({marks})", seqs
                        )
                    conn.executemany(
                        "INSERT INTO dead_letter (kind, seq, seq_last, status, reason, time, body) "
                        "VALUES (?, ?, ?, ?, ?, ?, ?)",
                        [(kind, s, sl, status, reason[:500], now, b if isinstance(b, bytes) else b.encode())
                         for s, sl, b in rows.fetchall()],
                    )
                    n = _delete(conn, table, seqs)
                    if table == "windows":
                        moved = n
                        self._bump(conn, dead_letter=n)
                return moved

        return self._write(op, 0)

    def dead_letters(self) -> list[DeadLetter]:
        rows = self._run(
            lambda c: c.execute("SELECT kind, seq, seq_last, status, reason, time FROM dead_letter ORDER BY id").fetchall()
        )
        return [DeadLetter(*r) for r in rows]

    # ------------------------------------------------------------------ audit

    def append_audit(self, event: str, detail: Mapping[str, Any]) -> int:
        """Queue a governance event for upload (its own per-device sequence); returns its seq."""
        if not _EVENT.match(event):
            raise OutboxError(f"audit event name must match {_EVENT.pattern}, got {event!r}")
        try:
            text = json.dumps(dict(detail), sort_keys=True, allow_nan=False)
        except (TypeError, ValueError) as exc:
            raise OutboxError(f"audit event {event!r}: detail is not JSON-serialisable ({exc})") from None
        return self._write(lambda c: self._audit(c, event, text), len(text))

    def _audit(self, conn: sqlite3.Connection, event: str, text: str) -> int:
        with self._tx(conn):
            seq = _store.reserve(conn, self.state_dir, "audit")
            conn.execute(
                "INSERT INTO audit (seq, time, event, detail) VALUES (?, ?, ?, ?)", (seq, self._clock(), event, text)
            )
        return seq

    # ------------------------------------------------------------------ reading

    def _accounting(self, conn: sqlite3.Connection) -> Accounting:
        meta = dict(conn.execute("SELECT key, value FROM meta"))
        pending = conn.execute("SELECT COUNT(*) FROM windows").fetchone()[0]
        return Accounting(
            produced=meta["produced"],
            delivered=meta["delivered"],
            pending=pending,
            merged=meta["merged"],
            dropped=meta["dropped"],
            dead_letter=meta["dead_letter"],
            dropped_rows=meta["dropped_rows"],
        )

    def accounting(self) -> Accounting:
        return self._run(self._accounting)

    def needs_report(self) -> bool:
        """Anything to send: pending windows or events, or drops the collector has not heard of."""

        def op(conn: sqlite3.Connection) -> bool:
            meta = dict(conn.execute("SELECT key, value FROM meta"))
            if conn.execute("SELECT 1 FROM windows LIMIT 1").fetchone() or conn.execute(
                "SELECT 1 FROM audit LIMIT 1"
            ).fetchone():
                return True
            return meta["dropped"] != meta["reported_dropped"] or meta["dead_letter"] != meta["reported_dead_letter"]

        return self._run(op)

    def pending_windows(self) -> list[Window]:
        """Every stored window, oldest first (for inspection and tests)."""
        rows = self._run(lambda c: c.execute("SELECT body FROM windows ORDER BY seq").fetchall())
        return [Window.from_dict(_unpack(r[0])) for r in rows]

    def recent(self, model: str, since: float, skip_owner: str | None = None) -> list[Window]:
        """Closed windows of ``model`` (merged per hour) whose hour ends after ``since``, plus the
        checkpoints of open windows taken after ``since`` (but not owner ``skip_owner``'s).

        Each row counts once: a checkpoint leaves the table in the transaction that stores
        its window (closed by its process, or recovered after that process died), and
        ``status`` recovers dead processes' checkpoints before it reads (opening the
        outbox does), so what it shows is what reaches the collector.
        """

        def op(conn: sqlite3.Connection) -> list[bytes]:
            rows = conn.execute(
                "SELECT body FROM recent WHERE model = ? AND (bucket + 1) * 3600 > ? ORDER BY bucket", (model, since)
            ).fetchall()
            rows += conn.execute(
                "SELECT body FROM checkpoints WHERE model = ? AND time >= ? AND owner != ? ORDER BY start",
                (model, since, skip_owner or ""),
            ).fetchall()
            return [r[0] for r in rows]

        out = []
        for blob in self._run(op):
            try:
                out.append(Window.from_dict(_unpack(blob)))
            except (WireError, ValueError, zlib.error) as exc:  # pragma: no cover - defensive
                log.warning("skipping an unreadable recent window in %s (%s)", self.path, exc)
        return out


def _delete(conn: sqlite3.Connection, table: str, seqs: Sequence[int]) -> int:
    if not seqs:
        return 0
    cur = conn.execute(f"DELETE FROM {table} WHERE seq IN ({','.join('?' * len(seqs))})", list(seqs))
    return int(cur.rowcount)


def append_audit(
    state_dir: str | os.PathLike[str],
    event: str,
    detail: Mapping[str, Any],
    *,
    clock: Callable[[], float] = time.time,
) -> int:
    """Queue a governance event (``install``, ``verify``, ...) for upload; returns its seq."""
    with Outbox.open(state_dir, clock=clock) as box:
        return box.append_audit(event, detail)
