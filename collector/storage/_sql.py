"""The SQL both back-ends share; :mod:`.sqlite` and :mod:`.postgres` add connections and locking.

Statements are written with ``?`` placeholders and translated once per back-end. Every
database exception leaving this module is a one-line :class:`StorageError`.
"""

from __future__ import annotations

import contextlib
import json
import queue
import threading
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any

from mlpack_edge.collector.models import ModelInfo
from mlpack_edge.collector.rollup import FLEET, Rollup, RollupKey, bucket_of
from mlpack_edge.collector.storage import _range_totals
from mlpack_edge.collector.storage._alerts import AlertStore
from mlpack_edge.collector.storage._rollout_sql import RolloutSql
from mlpack_edge.collector.storage.migrations import LATEST, MIGRATIONS, TYPES
from mlpack_edge.errors import CollectorError, StorageError
from mlpack_edge.monitor_agent.drift import Thresholds

__all__ = ["DeviceRow", "DeviceCert", "SqlStorage", "WriteTx"]

_ROLLUP_COLS = "windows, requests, rows, errors, error_kinds, latency, counts, system"


@dataclass(frozen=True)
class DeviceRow:
    name: str
    created_at: float
    revoked_at: float | None
    last_seen: float | None
    last_model: str | None
    last_seq: int | None
    outbox: dict[str, int] | None
    outbox_at: float | None

    @property
    def revoked(self) -> bool:
        return self.revoked_at is not None


@dataclass(frozen=True)
class DeviceCert:
    """A client certificate registered to a device (mutual TLS)."""

    fingerprint: str  # sha256 of the DER certificate, lowercase hex
    device: str
    subject: str
    not_after: float | None
    added_at: float


class _Pool:
    """A small LIFO pool of connections, at most ``size`` checked out at once."""

    def __init__(self, connect: Callable[[], Any], size: int) -> None:
        self._connect = connect
        self._idle: queue.LifoQueue[Any] = queue.LifoQueue()
        self._slots = threading.BoundedSemaphore(size)

    @contextlib.contextmanager
    def connection(self) -> Iterator[Any]:
        self._slots.acquire()
        try:
            try:
                conn = self._idle.get_nowait()
            except queue.Empty:
                conn = self._connect()
            healthy = False
            try:
                yield conn
                healthy = True
            finally:
                if healthy:
                    self._idle.put(conn)
                else:
                    with contextlib.suppress(Exception):
                        conn.close()
        finally:
            self._slots.release()

    def close(self) -> None:
        while True:
            try:
                conn = self._idle.get_nowait()
            except queue.Empty:
                return
            with contextlib.suppress(Exception):
                conn.close()


class WriteTx:
    """The primitives the ingest path composes inside one write transaction."""

    def __init__(self, storage: SqlStorage, conn: Any) -> None:
        self._s = storage
        self._c = conn
        self._touched: dict[str, _Touch] = {}
        # Windows of this transaction, written at :meth:`flush` in one statement: device ->
        # seq -> (seq_last, body); the overlap and replay checks see them as stored.
        self._pending: dict[str, dict[int, tuple[int, str]]] = {}
        self._pending_rows: list[tuple[Any, ...]] = []
        # (device, seq_last) -> the last stored window starting at or before seq_last
        # (:meth:`prefetch_overlaps`): one query for a whole group of uploads.
        self._last_before: dict[tuple[str, int], tuple[int, int] | None] = {}
        self._new_keys: set[RollupKey] = set()  # roll-up rows that exist once this commits
        #: span -> (since, until) of the running totals, read by :meth:`open_group` (else ``None``).
        self.shared_ranges: dict[int, tuple[int, int]] | None = None
        # A device's own roll-up rows read and locked by :meth:`open_group` (key -> columns
        # and address), and every key it looked up (found or not: a key looked up and not
        # found is not stored, whatever :attr:`SqlStorage._rollup_keys` says).
        self._prelocked: dict[RollupKey, tuple[Any, ...]] = {}
        self._looked_up: set[RollupKey] = set()

    def _exec(self, sql: str, params: Sequence[Any] = ()) -> Any:
        return self._c.execute(self._s.sql(sql), params)

    def open_group(
        self, names: Sequence[str], spans: Sequence[tuple[str, int]], windows: Sequence[tuple[str, str, float]] = ()
    ) -> dict[str, tuple[str, float | None] | None]:
        """Start an ingest group: lock the devices ``names``, look up the last stored window of
        each ``(device, seq_last)`` of ``spans`` (:meth:`prefetch_overlaps`) and read the
        running totals' ranges under a shared lock, sent back to back (one round trip with
        PostgreSQL's pipeline); returns :meth:`devices`' answer.

        Where rows are locked (PostgreSQL), the same round trip reads and locks the device
        roll-up rows the group's ``windows`` ``(model, device, start)`` will add to (their
        hour, day and running totals; the totals' ranges as the previous group saw them): a
        device's own rows, which only a transaction holding its device row writes, so any
        order is safe. :meth:`add_to_rollups` then merges them without a round trip of its
        own, and the fleet's rows, which every group shares, are locked in the next one
        only, held while three rows merge and the COMMIT runs (not the whole group's merges).
        """
        dev = self._s.select_devices(self._c, names) if names else None
        todo = sorted({k for k in spans if k not in self._last_before})
        overlaps = self._s.select_last_windows(self._c, todo) if todo else []
        ranges = self._exec("SELECT span, since, until FROM range_totals" + (self._s.lock_clause and " FOR SHARE"))
        own = sorted(self._own_keys(windows)) if self._s.lock_clause and windows else []
        params = {k: _key_params(k) for k in own}
        pre = self._s.lock_rollups(self._c, [params[k] for k in own]) if own else []
        out = self._device_rows(names, dev)
        self._store_overlaps(todo, overlaps)
        self.shared_ranges = {int(r[0]): (int(r[1]), int(r[2])) for r in ranges.fetchall()}
        self._s._ranges_seen = self.shared_ranges
        if own:
            self._prelocked = self._locked_rows(pre, params)
            self._looked_up = set(own)
        return out

    def _own_keys(self, windows: Sequence[tuple[str, str, float]]) -> set[RollupKey]:
        """The device roll-up keys of ``windows`` (see :func:`.rollup.expand_minutes` and
        :func:`._range_totals.share`), the totals' by the ranges last read."""
        ranges = self._s._ranges_seen or {}
        keys: set[RollupKey] = set()
        for model, device, start in windows:
            hour, day = bucket_of(start, "h"), bucket_of(start, "d")
            keys.add(("h", model, device, hour))
            keys.add(("d", model, device, day))
            for span, (since, until) in ranges.items():
                if since <= hour < until:
                    keys.add((_range_totals.level(span), model, device, since))
        return keys

    def devices(self, names: Sequence[str]) -> dict[str, tuple[str, float | None] | None]:
        """name -> ``(token_hash, revoked_at)`` (``None`` if unknown), locking the rows in
        name order until commit (serialises a device's uploads across processes)."""
        return self._device_rows(names, self._s.select_devices(self._c, names) if names else None)

    @staticmethod
    def _device_rows(names: Sequence[str], cur: Any) -> dict[str, tuple[str, float | None] | None]:
        out: dict[str, tuple[str, float | None] | None] = dict.fromkeys(names)
        if cur is not None:
            out.update((r[0], (r[1], r[2])) for r in cur.fetchall())
        return out

    def prefetch_overlaps(self, spans: Sequence[tuple[str, int]]) -> None:
        """Look up, in one query, the last stored window starting at or before ``seq_last``
        for each ``(device, seq_last)``; :meth:`overlapping` then answers those from memory.

        A group of uploads is checked with one round trip instead of one per upload.
        """
        todo = sorted({k for k in spans if k not in self._last_before})
        self._store_overlaps(todo, self._s.select_last_windows(self._c, todo) if todo else [])

    def _store_overlaps(self, todo: list[tuple[str, int]], cursors: list[Any]) -> None:
        self._last_before.update(dict.fromkeys(todo))
        for cur in cursors:
            for d, hi, seq, seq_last in cur.fetchall():
                self._last_before[(str(d), int(hi))] = (int(seq), int(seq_last))

    def overlapping(self, device: str, seq: int, seq_last: int) -> tuple[int, int] | None:
        """The stored window of ``device`` whose range meets ``[seq, seq_last]``, if any
        (windows written earlier in this transaction count as stored).

        Stored ranges never overlap, so only the last one starting at or before
        ``seq_last`` can meet the new range.
        """
        key = (device, seq_last)
        if key in self._last_before:
            found = self._last_before[key]
        else:
            row = self._exec(
                "SELECT seq, seq_last FROM windows WHERE device = ? AND seq <= ? ORDER BY seq DESC LIMIT 1",
                (device, seq_last),
            ).fetchone()
            found = None if row is None else (int(row[0]), int(row[1]))
        pending = self._pending.get(device)
        if pending:
            starts = [s for s in pending if s <= seq_last]
            if starts and (found is None or max(starts) > found[0]):
                s = max(starts)
                found = (s, pending[s][0])
        if found is not None and found[1] >= seq:
            return found
        return None

    def window_bodies(self, device: str, seqs: Sequence[int]) -> dict[int, str]:
        """The stored bodies of ``device``'s windows starting at ``seqs`` (to compare a replay with)."""
        pending = self._pending.get(device, {})
        out: dict[int, str] = {s: pending[s][1] for s in seqs if s in pending}
        rest = [s for s in seqs if s not in out]
        for i in range(0, len(rest), 500):
            part = list(rest[i : i + 500])
            marks = ", ".join("?" * len(part))
            rows = self._exec(f"SELECT seq, body FROM windows WHERE device = ? AND seq IN ({marks})", [device, *part])
            out.update((int(r[0]), str(r[1])) for r in rows.fetchall())
        return out

    def record_conflict(
        self, device: str, seq: int, seq_last: int, stored: tuple[int, int], reason: str, now: float
    ) -> None:
        """A replayed window refused (other contents or bounds than the stored one): counted per (device, seq)."""
        self._exec(
            "INSERT INTO ingest_conflicts (device, seq, seq_last, stored_seq, stored_seq_last, reason, first_at, "
            "last_at, attempts) VALUES (?, ?, ?, ?, ?, ?, ?, ?, 1) ON CONFLICT (device, seq) DO UPDATE SET "
            "seq_last = excluded.seq_last, reason = excluded.reason, last_at = excluded.last_at, "
            "attempts = ingest_conflicts.attempts + 1",
            (device, seq, seq_last, stored[0], stored[1], reason, now, now),
        )

    def model(self, content_hash: str) -> ModelInfo | None:
        row = self._exec(
            "SELECT hash, name, version, profile, thresholds, source FROM models WHERE hash = ?", (content_hash,)
        ).fetchone()
        return None if row is None else _model(row)

    def insert_model(self, m: ModelInfo, now: float) -> None:
        self._exec(
            "INSERT INTO models (hash, name, version, profile, thresholds, source, added_at) "
            "VALUES (?, ?, ?, ?, ?, ?, ?) ON CONFLICT (hash) DO NOTHING",
            (m.hash, m.name, m.version, m.profile_json, json.dumps(m.thresholds.to_dict()), m.source, now),
        )

    def insert_windows(self, rows: list[tuple[Any, ...]]) -> None:
        """Rows ``(device, seq, seq_last, model, start, end, received_at, body)``, written at
        :meth:`flush` with the rest of the transaction's windows."""
        for r in rows:
            self._pending.setdefault(r[0], {})[int(r[1])] = (int(r[2]), r[7])
        self._pending_rows.extend(rows)

    def insert_feedback(self, rows: list[tuple[Any, ...]]) -> None:
        """Rows ``(device, seq, model, start, body)``: the feedback sections of stored windows."""
        self._s.executemany(
            self._c,
            "INSERT INTO feedback (device, seq, model, start_ts, body) VALUES (?, ?, ?, ?, ?) "
            "ON CONFLICT (device, seq) DO NOTHING",
            rows,
        )

    def upsert_samples(self, rows: list[tuple[Any, ...]], keep_after_day: int) -> None:
        """Rows ``(device, model, day, slot, time, id, row, output, label)``: a later copy of a
        slot (a replaced reservoir row, or the same row with its label) replaces the earlier one.
        Days before ``keep_after_day`` are dropped (the collector's bound)."""
        self._s.executemany(
            self._c,
            "INSERT INTO samples (device, model, day, slot, time_ts, id, row_json, output, label) "
            "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?) ON CONFLICT (device, model, day, slot) DO UPDATE SET "
            "time_ts = excluded.time_ts, id = excluded.id, row_json = excluded.row_json, "
            "output = excluded.output, label = excluded.label",
            rows,
        )
        self._exec("DELETE FROM samples WHERE day < ?", (keep_after_day,))

    def set_model_kpi(self, content_hash: str, body: str) -> None:
        self._exec(
            "INSERT INTO model_kpi (hash, body) VALUES (?, ?) ON CONFLICT (hash) DO UPDATE SET body = excluded.body",
            (content_hash, body),
        )

    def insert_audit(self, rows: list[tuple[Any, ...]]) -> None:
        """Rows ``(device, seq, time, event, body, received_at)``; replays are ignored."""
        self._s.executemany(
            self._c,
            "INSERT INTO audit (device, seq, time, event, body, received_at) "
            "VALUES (?, ?, ?, ?, ?, ?) ON CONFLICT (device, seq) DO NOTHING",
            rows,
        )

    def touch_device(
        self, name: str, seen: float, model: str | None, seq: int | None, outbox: dict[str, int] | None
    ) -> None:
        """Record an upload; the device's model is the one of its highest sequence number.

        Uploads of one transaction are folded per device and written by :meth:`flush`
        (one UPDATE per device, sent in bulk), as if each had been applied in turn.
        """
        t = self._touched.get(name)
        if t is None:
            self._touched[name] = t = _Touch(seen)
        t.seen = max(t.seen, seen)
        if seq is not None and model is not None and (t.seq is None or seq >= t.seq):
            t.seq, t.model = seq, model
        if outbox is not None:
            t.outbox, t.outbox_at = json.dumps(outbox, sort_keys=True), seen

    def flush(self) -> None:
        """Write what was folded for the end of the transaction (called before COMMIT)."""
        if self._pending_rows:
            self._s.insert_windows(self._c, self._pending_rows)
            self._pending_rows = []
            self._pending.clear()
        if self._touched:
            self._s.update_devices(
                self._c, [(name, t.seen, t.model, t.seq, t.outbox, t.outbox_at) for name, t in self._touched.items()]
            )
        self._touched.clear()

    def add_to_rollups(self, deltas: dict[RollupKey, Rollup]) -> None:
        """Merge ``deltas`` into the stored roll-ups, in a few statements whatever their number.

        1. Rows not known to exist are inserted as the delta itself, in key order
           (:meth:`SqlStorage.insert_rollups`: a row another writer is inserting is waited
           for, in the same order by every writer);
        2. the others are read and locked in one ``SELECT … ORDER BY <key> FOR UPDATE``
           (rows lock in that order in every process, so two writers sharing a fleet row
           queue instead of deadlocking);
        3. merged in Python and written back in bulk.

        Where rows are locked (PostgreSQL), a device's own rows go first and the fleet's
        rows (device ``*``, shared by every group of every collector process) after them,
        in a second pass: a fleet row is then held only while its few merges and the
        COMMIT run, not while the whole group's device rows are merged, which other
        groups queued on it would wait for. Deadlock-free still: a device's own rows are
        written only by transactions holding that device's row (taken first), and the
        fleet rows are locked in key order by every writer.
        """
        if not deltas:
            return
        deltas = {**deltas, **_range_totals.share(self, deltas)}
        if self._s.lock_clause:
            own = {k: r for k, r in deltas.items() if k[2] != FLEET}
            self._merge_rollups(own)
            self._merge_rollups({k: r for k, r in deltas.items() if k[2] == FLEET})
        else:
            self._merge_rollups(deltas)

    def _merge_rollups(self, deltas: dict[RollupKey, Rollup]) -> None:
        """Insert, lock, merge and write back the rows of ``deltas`` (:meth:`add_to_rollups`)."""
        if not deltas:
            return
        keys = sorted(deltas)
        params = {k: _key_params(k) for k in keys}
        known = self._s._rollup_keys  # rows committed earlier: no insert to try
        self._new_keys.update(keys)
        found = {k: self._prelocked[k] for k in keys if k in self._prelocked}
        looked = self._looked_up  # not found when looked up under the device's lock: not stored
        inserted = self._insert_rollups(
            [k for k in keys if k not in found and (k in looked or k not in known)], params, deltas
        )
        rest = [k for k in keys if k not in inserted]
        found.update(self._lock_rollups([k for k in rest if k not in found], params))
        gone = [k for k in rest if k not in found]
        if gone:  # known rows deleted under a running collector (a restore, a manual prune)
            known.difference_update(gone)
            inserted |= self._insert_rollups(gone, params, deltas)
            found.update(self._lock_rollups([k for k in gone if k not in inserted], params))
        updates = []
        for k in rest:
            if k in inserted:
                continue
            if k not in found:  # pragma: no cover - inserted by nobody and not stored
                raise StorageError(f"roll-up {params[k]}: neither stored nor insertable")
            total = Rollup.from_row(found[k][:8])
            total.merge(deltas[k])
            updates.append((*total.to_row(), *params[k], *found[k][8:]))
        # The rows are locked already: the updates go in bulk.
        self._s.update_rollups(self._c, updates)

    def _insert_rollups(
        self, keys: list[RollupKey], params: dict[RollupKey, tuple[str, str, str, int]], deltas: dict[RollupKey, Rollup]
    ) -> set[RollupKey]:
        """Insert ``keys``' deltas where no row exists; the keys inserted."""
        if not keys:
            return set()
        done = self._s.insert_rollups(self._c, [(*params[k], *deltas[k].to_row()) for k in keys])
        return {k for k in keys if params[k] in done}

    def _lock_rollups(
        self, keys: list[RollupKey], params: dict[RollupKey, tuple[str, str, str, int]]
    ) -> dict[RollupKey, tuple[Any, ...]]:
        """The stored rows of ``keys`` (their roll-up columns, and the row's address where the
        back-end gives one), locked until commit in key order."""
        if not keys:
            return {}
        return self._locked_rows(self._s.lock_rollups(self._c, [params[k] for k in sorted(keys)]), params)

    @staticmethod
    def _locked_rows(cursors: list[Any], params: dict[RollupKey, tuple[str, str, str, int]]) -> dict[RollupKey, tuple[Any, ...]]:
        """:meth:`SqlStorage.lock_rollups`' answer by key (``params``: key -> its columns)."""
        by_params = {p: k for k, p in params.items()}
        out: dict[RollupKey, tuple[Any, ...]] = {}
        for cur in cursors:
            for r in cur.fetchall():
                out[by_params[(str(r[0]), str(r[1]), str(r[2]), int(r[3]))]] = tuple(r[4:])
        return out


_MAX_KNOWN_KEYS = 200_000


@dataclass
class _Touch:
    """A device's uploads in one transaction, folded: what its row must say afterwards."""

    seen: float
    model: str | None = None
    seq: int | None = None
    outbox: str | None = None
    outbox_at: float | None = None


def _values_chunks(items: Sequence[Sequence[Any]], row: str, width: int | None = None) -> Iterator[tuple[str, list[Any]]]:
    """``(VALUES list, parameters)`` for ``items`` (their first ``width`` fields) in parts of 400
    rows: a part's parameters stay under SQLite's 999-variable limit of old builds."""
    for i in range(0, len(items), 400):
        part = items[i : i + 400]
        yield ", ".join([row] * len(part)), [p for item in part for p in item[:width]]


def _key_params(key: RollupKey) -> tuple[str, str, str, int]:
    level, model, device, bucket = key
    return (level, device, model, bucket)


class SqlStorage(AlertStore, RolloutSql):
    """Shared implementation; subclasses set ``dialect`` and implement the connection hooks."""

    dialect = "sqlite"
    lock_clause = ""
    #: Roll-up keys in the order rows are locked: Python's order of the key tuples.
    key_order = "r.level, r.model, r.device, r.bucket"
    _db_errors: tuple[type[BaseException], ...] = ()

    def __init__(self, url: str, readers: int = 4) -> None:
        self.url = url
        self._readers = _Pool(self._connect, readers)
        self._write_lock = threading.Lock()
        self._writer: Any = None
        # Roll-up keys known to be stored (rows are never deleted): the writer inserts only
        # keys not in here. Bounded: cleared when it grows past _MAX_KNOWN_KEYS.
        self._rollup_keys: set[RollupKey] = set()
        #: The running totals' ranges the last ingest group read (which totals' rows it locks early).
        self._ranges_seen: dict[int, tuple[int, int]] | None = None

    # ---------------------------------------------------------------- back-end hooks

    def _connect(self) -> Any:  # pragma: no cover - abstract
        raise NotImplementedError

    def _begin_write(self, conn: Any) -> None:  # pragma: no cover - abstract
        raise NotImplementedError

    def _lock_schema(self, conn: Any) -> None:
        """Keep two processes from migrating at once (the write transaction does on SQLite)."""

    def sql(self, statement: str) -> str:
        return statement

    def executemany(self, conn: Any, statement: str, rows: list[tuple[Any, ...]]) -> None:
        if rows:
            conn.executemany(self.sql(statement), rows)

    def select_devices(self, conn: Any, names: Sequence[str]) -> Any:
        """A cursor over ``(name, token_hash, revoked_at)`` of ``names``, rows locked in name order."""
        marks = ", ".join("?" * len(names))
        return conn.execute(
            self.sql(f"SELECT name, token_hash, revoked_at FROM devices WHERE name IN ({marks}) ORDER BY name"
                     + self.lock_clause),
            list(names),
        )

    def select_last_windows(self, conn: Any, pairs: Sequence[tuple[str, int]]) -> list[Any]:
        """Cursors over ``(device, hi, seq, seq_last)``: each pair's last stored window starting at or before ``hi``."""
        return [
            conn.execute(
                self.sql(f"WITH v(d, hi) AS (VALUES {values}) SELECT v.d, v.hi, w.seq, w.seq_last FROM v JOIN windows w "
                         "ON w.device = v.d AND w.seq = (SELECT MAX(x.seq) FROM windows x WHERE x.device = v.d "
                         "AND x.seq <= v.hi)"),
                params,
            )
            for values, params in _values_chunks(pairs, "(?, CAST(? AS BIGINT))")
        ]

    def lock_rollups(self, conn: Any, keys: Sequence[tuple[str, str, str, int]]) -> list[Any]:
        """Cursors over the stored roll-ups ``(level, device, model, bucket, <columns>[, address])``
        of ``keys`` (given in lock order), locked until commit in that order; the address (a
        back-end's own row id) comes back to :meth:`update_rollups`."""
        return [
            conn.execute(
                self.sql(f"WITH k(level, device, model, bucket) AS (VALUES {values}) "
                         f"SELECT r.level, r.device, r.model, r.bucket, {', '.join('r.' + c for c in _ROLLUP_COLS.split(', '))} "
                         "FROM rollups r JOIN k ON r.level = k.level AND r.device = k.device AND r.model = k.model "
                         f"AND r.bucket = k.bucket ORDER BY {self.key_order}{self.lock_clause and self.lock_clause + ' OF r'}"),
                params,
            )
            for values, params in _values_chunks(keys, "(?, ?, ?, CAST(? AS BIGINT))")
        ]

    def update_devices(self, conn: Any, rows: list[tuple[Any, ...]]) -> None:
        """Rows ``(name, seen, model, seq, outbox, outbox_at)``: the device's model becomes the
        one of its highest sequence number (``seq`` ``None``: unchanged), the outbox counters
        are replaced when given (``outbox`` ``None``: unchanged)."""
        shapes: dict[str, list[tuple[Any, ...]]] = {}
        for name, seen, model, seq, outbox, outbox_at in rows:
            sets = ["last_seen = ?"]
            params: list[Any] = [seen]
            if seq is not None:
                sets.append("last_model = CASE WHEN last_seq IS NULL OR last_seq <= ? THEN ? ELSE last_model END")
                sets.append("last_seq = CASE WHEN last_seq IS NULL OR last_seq <= ? THEN ? ELSE last_seq END")
                params += [seq, model, seq, seq]
            if outbox is not None:
                sets.append("outbox = ?, outbox_at = ?")
                params += [outbox, outbox_at]
            shapes.setdefault(f"UPDATE devices SET {', '.join(sets)} WHERE name = ?", []).append((*params, name))
        for statement, group in shapes.items():
            self.executemany(conn, statement, group)

    def insert_windows(self, conn: Any, rows: list[tuple[Any, ...]]) -> None:
        """Rows ``(device, seq, seq_last, model, start, end, received_at, body)``; a stored
        (device, seq) is left as it is."""
        self.executemany(
            conn,
            "INSERT INTO windows (device, seq, seq_last, model, start_ts, end_ts, received_at, body) "
            "VALUES (?, ?, ?, ?, ?, ?, ?, ?) ON CONFLICT (device, seq) DO NOTHING",
            rows,
        )

    def insert_rollups(self, conn: Any, rows: list[tuple[Any, ...]]) -> set[tuple[str, str, str, int]]:
        """Rows ``(level, device, model, bucket, <roll-up columns>)`` inserted where none is
        stored; the keys ``(level, device, model, bucket)`` inserted.

        SQLite holds the database's one write lock: the rows not found are all inserted
        (no RETURNING, which SQLite before 3.35 lacks).
        """
        found: set[tuple[str, str, str, int]] = set()
        for values, params in _values_chunks(rows, "(?, ?, ?, CAST(? AS BIGINT))", 4):
            found.update(
                (str(r[0]), str(r[1]), str(r[2]), int(r[3]))
                for r in conn.execute(
                    f"WITH k(level, device, model, bucket) AS (VALUES {values}) SELECT r.level, r.device, r.model, "
                    "r.bucket FROM rollups r JOIN k ON r.level = k.level AND r.device = k.device "
                    "AND r.model = k.model AND r.bucket = k.bucket",
                    params,
                ).fetchall()
            )
        new = [r for r in rows if (r[0], r[1], r[2], r[3]) not in found]
        self.executemany(
            conn,
            f"INSERT INTO rollups (level, device, model, bucket, {_ROLLUP_COLS}) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            new,
        )
        return {(r[0], r[1], r[2], r[3]) for r in new}

    def update_rollups(self, conn: Any, rows: list[tuple[Any, ...]]) -> None:
        """Rows ``(windows, requests, rows, errors, error_kinds, latency, counts, system, level,
        device, model, bucket[, address])``: stored (and locked) roll-ups replaced by their merged totals."""
        self.executemany(
            conn,
            "UPDATE rollups SET windows = ?, requests = ?, rows = ?, errors = ?, error_kinds = ?, "
            "latency = ?, counts = ?, system = ? WHERE level = ? AND device = ? AND model = ? AND bucket = ?",
            [r[:12] for r in rows],
        )

    def describe(self) -> str:
        return self.url

    # ---------------------------------------------------------------- plumbing

    @contextlib.contextmanager
    def _read(self) -> Iterator[Any]:
        try:
            with self._readers.connection() as conn:
                yield conn
                self._end_read(conn)
        except self._db_errors as exc:
            raise StorageError(f"{self.describe()}: {_one_line(exc)}") from None

    def _end_read(self, conn: Any) -> None:
        """Readers never hold a snapshot between requests."""

    def _query(self, statement: str, params: Sequence[Any] = ()) -> list[Any]:
        with self._read() as conn:
            return list(conn.execute(self.sql(statement), params).fetchall())

    def _pipeline(self, conn: Any) -> contextlib.AbstractContextManager[Any]:
        """Where the back-end can, send statements without waiting for results nobody reads."""
        return contextlib.nullcontext()

    @contextlib.contextmanager
    def write(self, pipelined: bool = False) -> Iterator[WriteTx]:
        """One write transaction on the process's writer connection; commits on success.

        ``pipelined`` (the ingest path) lets statements whose results are not read go
        out with the next ones (PostgreSQL); their errors surface at COMMIT at the latest.
        """
        with self._write_lock:
            try:
                if self._writer is None:
                    self._writer = self._connect()
                conn = self._writer
                with self._pipeline(conn) if pipelined else contextlib.nullcontext():
                    self._begin_write(conn)
                    try:
                        tx = WriteTx(self, conn)
                        yield tx
                        tx.flush()
                    except BaseException:
                        with contextlib.suppress(*self._db_errors):
                            conn.execute("ROLLBACK")
                        raise
                    conn.execute("COMMIT")
                if len(self._rollup_keys) + len(tx._new_keys) > _MAX_KNOWN_KEYS:
                    self._rollup_keys.clear()
                self._rollup_keys.update(tx._new_keys)
            except self._db_errors as exc:
                self._drop_writer()
                raise StorageError(f"{self.describe()}: {_one_line(exc)}") from None

    def _drop_writer(self) -> None:
        if self._writer is not None:
            with contextlib.suppress(Exception):
                self._writer.close()
        self._writer = None

    def close(self) -> None:
        with self._write_lock:
            self._drop_writer()
        self._readers.close()

    # ---------------------------------------------------------------- schema

    def migrate(self) -> int:
        """Bring the schema to :data:`LATEST`; returns the version found before."""
        types = TYPES[self.dialect]
        with self.write() as tx:
            conn = tx._c
            self._lock_schema(conn)
            conn.execute(
                "CREATE TABLE IF NOT EXISTS schema_version (version INTEGER PRIMARY KEY, "
                f"description TEXT NOT NULL, applied_at {types['real']} NOT NULL)"
            )
            row = conn.execute("SELECT MAX(version) FROM schema_version").fetchone()
            found = int(row[0] or 0)
            if found > LATEST:
                raise CollectorError(
                    f"{self.describe()}: database schema version {found} is newer than this collector ({LATEST}); upgrade mlpack"
                )
            for version, description, statements in MIGRATIONS:
                if version <= found:
                    continue
                for st in statements:
                    if isinstance(st, str):
                        conn.execute(st.format(**types))
                    else:
                        st(tx, _now())
                conn.execute(
                    self.sql("INSERT INTO schema_version (version, description, applied_at) VALUES (?, ?, ?)"),
                    (version, description, _now()),
                )
        return found

    def schema_version(self) -> int:
        return int(self._query("SELECT MAX(version) FROM schema_version")[0][0] or 0)

    # ---------------------------------------------------------------- devices

    def add_device(self, name: str, token_hash: str, now: float, certs: Sequence[DeviceCert] = ()) -> None:
        """Register ``name`` with its token hash (and client certificates), in one transaction."""
        with self.write() as tx:
            if tx._exec("SELECT 1 FROM devices WHERE name = ?", (name,)).fetchone():
                raise CollectorError(f"device {name!r} already exists (revoke-device and add it under a new name)")
            tx._exec(
                "INSERT INTO devices (name, token_hash, created_at) VALUES (?, ?, ?)", (name, token_hash, now)
            )
            self._insert_certs(tx, certs)

    def add_device_certs(self, name: str, certs: Sequence[DeviceCert]) -> None:
        """Register more client certificates for an existing, active device (certificate rotation)."""
        with self.write() as tx:
            row = tx._exec("SELECT revoked_at FROM devices WHERE name = ?", (name,)).fetchone()
            if row is None:
                raise CollectorError(f"device {name!r} is not registered (see list-devices)")
            if row[0] is not None:
                raise CollectorError(f"device {name!r} is revoked (add it under a new name)")
            self._insert_certs(tx, certs)

    def _insert_certs(self, tx: WriteTx, certs: Sequence[DeviceCert]) -> None:
        for c in certs:
            owner = tx._exec("SELECT device FROM device_certs WHERE fingerprint = ?", (c.fingerprint,)).fetchone()
            if owner is not None:
                raise CollectorError(
                    f"certificate {c.fingerprint[:16]}… ({c.subject}) is already registered to device {owner[0]!r}"
                )
            tx._exec(
                "INSERT INTO device_certs (fingerprint, device, subject, not_after, added_at) VALUES (?, ?, ?, ?, ?)",
                (c.fingerprint, c.device, c.subject, c.not_after, c.added_at),
            )

    def device_for_cert(self, fingerprint: str) -> tuple[str, bool] | None:
        """``(device, revoked)`` of the device a client certificate is registered to, or ``None``."""
        rows = self._query(
            "SELECT d.name, d.revoked_at FROM device_certs c JOIN devices d ON d.name = c.device "
            "WHERE c.fingerprint = ?",
            (fingerprint,),
        )
        return (str(rows[0][0]), rows[0][1] is not None) if rows else None

    def device_certs(self, name: str | None = None) -> list[DeviceCert]:
        where, params = ("WHERE device = ?", (name,)) if name is not None else ("", ())
        rows = self._query(
            f"SELECT fingerprint, device, subject, not_after, added_at FROM device_certs {where} "
            "ORDER BY device, added_at, fingerprint",
            params,
        )
        return [DeviceCert(*r) for r in rows]

    def revoke_device(self, name: str, now: float) -> None:
        with self.write() as tx:
            row = tx._exec("SELECT revoked_at FROM devices WHERE name = ?", (name,)).fetchone()
            if row is None:
                raise CollectorError(f"device {name!r} is not registered (see list-devices)")
            if row[0] is None:
                tx._exec("UPDATE devices SET revoked_at = ? WHERE name = ?", (now, name))

    def device_for_token(self, token_hash: str) -> str | None:
        """The active device holding this token, or ``None``."""
        rows = self._query("SELECT name FROM devices WHERE token_hash = ? AND revoked_at IS NULL", (token_hash,))
        return str(rows[0][0]) if rows else None

    def devices(self) -> list[DeviceRow]:
        rows = self._query(
            "SELECT name, created_at, revoked_at, last_seen, last_model, last_seq, outbox, outbox_at "
            "FROM devices ORDER BY name"
        )
        return [
            DeviceRow(r[0], r[1], r[2], r[3], r[4], r[5], json.loads(r[6]) if r[6] else None, r[7]) for r in rows
        ]

    # ---------------------------------------------------------------- models

    def get_model(self, content_hash: str) -> ModelInfo | None:
        rows = self._query(
            "SELECT hash, name, version, profile, thresholds, source FROM models WHERE hash = ?", (content_hash,)
        )
        return _model(rows[0]) if rows else None

    def models(self) -> list[ModelInfo]:
        rows = self._query(
            "SELECT hash, name, version, profile, thresholds, source FROM models ORDER BY name, version, hash"
        )
        return [_model(r) for r in rows]

    def add_model(self, m: ModelInfo, now: float) -> bool:
        """Store ``m``; ``False`` when the same model is already known. A different model under
        the same content hash is refused."""
        known = self.get_model(m.hash)
        if known is not None:
            if not known.same_as(m):
                raise CollectorError(
                    f"model {m.hash[:12]}: already stored as {known.name} {known.version} with a different profile"
                )
            return False
        with self.write() as tx:
            tx.insert_model(m, now)
        return True

    def set_model_kpi(self, content_hash: str, kpi: dict[str, Any]) -> None:
        """What ``content_hash``'s production KPIs are judged against (from its manifest)."""
        with self.write() as tx:
            tx.set_model_kpi(content_hash, json.dumps(kpi, sort_keys=True))

    # ---------------------------------------------------------------- reads for queries

    def samples(self, model: str, labelled_only: bool = True) -> list[tuple[str, float, dict[str, Any], Any, Any]]:
        """``(device, time, row, output, label)`` of ``model``'s captured rows, oldest first."""
        sql = "SELECT device, time_ts, row_json, output, label FROM samples WHERE model = ?"
        if labelled_only:
            sql += " AND label IS NOT NULL"
        rows = self._query(sql + " ORDER BY time_ts, device, slot", (model,))
        return [(str(r[0]), float(r[1]), json.loads(r[2]), json.loads(r[3]), None if r[4] is None else json.loads(r[4]))
                for r in rows]

    def model_kpis(self) -> dict[str, dict[str, Any]]:
        """content hash -> KPI reference (task, classes, positive, metrics, gates)."""
        return {str(h): json.loads(b) for h, b in self._query("SELECT hash, body FROM model_kpi")}

    def feedback(
        self, start: float, end: float, *, model: str | None = None, device: str | None = None
    ) -> list[tuple[str, str, float, str]]:
        """``(device, model, start, body)`` of the feedback sections of windows starting in ``[start, end)``."""
        sql = "SELECT device, model, start_ts, body FROM feedback WHERE start_ts >= ? AND start_ts < ?"
        params: list[Any] = [start, end]
        if model is not None:
            sql += " AND model = ?"
            params.append(model)
        if device is not None:
            sql += " AND device = ?"
            params.append(device)
        return [(str(r[0]), str(r[1]), float(r[2]), str(r[3])) for r in self._query(sql + " ORDER BY start_ts", params)]

    def rollups(
        self,
        level: str,
        start: int,
        end: int,
        *,
        model: str | None = None,
        device: str | None = None,
        per_device: bool = False,
        columns: str = _ROLLUP_COLS,
    ) -> list[tuple[Any, ...]]:
        """Roll-up rows ``(device, model, bucket, <columns>)`` with ``start <= bucket < end``.

        ``device=None`` and ``per_device=False`` gives the fleet rows; ``per_device``
        every device's own rows.
        """
        # One device's (or the fleet's) rows are found through the primary key; a unary
        # plus keeps the planner from preferring the time index, which would scan every
        # device's rows in the range. Only the all-devices scan uses the time index.
        bucket = "bucket" if per_device and device is None else "+bucket"
        where = ["level = ?", f"{bucket} >= ?", f"{bucket} < ?"]
        params: list[Any] = [level, start, end]
        if device is not None:
            where.append("device = ?")
            params.append(device)
        elif per_device:
            where.append("device <> '*'")
        else:
            where.append("device = '*'")
        if model is not None:
            where.append("model = ?")
            params.append(model)
        return self._query(
            f"SELECT device, model, bucket, {columns} FROM rollups WHERE {' AND '.join(where)} ORDER BY {bucket}",
            params,
        )

    def range_totals(self, start: int, end: int, now: float | None = None, *, counts: bool = True,
                     devices: Sequence[str] | None = None) -> list[tuple[Any, ...]] | None:
        """``(device, model, windows, requests, rows, errors[, counts])`` of every device (or of
        ``devices``) over ``[start, end)`` from the running totals (:mod:`._range_totals`), or
        ``None`` when no totals cover exactly that range.

        Given ``now``, a range the page shows at ``now`` (last 24 h / 7 days) that the
        totals have not reached yet moves them on first (once an hour). One statement
        reads a range and its rows: both from the same snapshot.
        """
        rows = _range_totals.read(self._query, start, end, counts, devices)
        shown = {_range_totals.window(s, now) for s in _range_totals.SPANS} if now is not None else set()
        if rows is None and (start, end) in shown:
            for span in _range_totals.SPANS:  # a step a transaction: ingest waits for one step at most
                while True:
                    with self.write() as tx:
                        if not _range_totals.advance(tx, span, now):
                            break
            rows = _range_totals.read(self._query, start, end, counts, devices)
        return rows

    def window_bodies_between(self, device: str, start: float, end: float, model: str | None = None) -> list[str]:
        """Bodies of ``device``'s windows starting in ``[start, end)`` (of ``model`` if given), oldest first."""
        sql = "SELECT body FROM windows WHERE device = ? AND start_ts >= ? AND start_ts < ?"
        params: list[Any] = [device, start, end]
        if model is not None:
            sql += " AND model = ?"
            params.append(model)
        return [str(r[0]) for r in self._query(sql + " ORDER BY start_ts", params)]

    def window_count(self, device: str | None = None) -> int:
        if device is None:
            return int(self._query("SELECT COUNT(*) FROM windows")[0][0])
        return int(self._query("SELECT COUNT(*) FROM windows WHERE device = ?", (device,))[0][0])

    def conflicts(self, device: str | None = None, since: float | None = None) -> list[dict[str, Any]]:
        """Refused replays (see :meth:`WriteTx.record_conflict`), newest first."""
        where, params = [], []
        if device is not None:
            where.append("device = ?")
            params.append(device)
        if since is not None:
            where.append("last_at >= ?")
            params.append(since)
        rows = self._query(
            "SELECT device, seq, seq_last, stored_seq, stored_seq_last, reason, first_at, last_at, attempts "
            "FROM ingest_conflicts" + (f" WHERE {' AND '.join(where)}" if where else "") + " ORDER BY last_at DESC, device, seq",
            params,
        )
        keys = ("device", "seq", "seq_last", "stored_seq", "stored_seq_last", "reason", "first_at", "last_at", "attempts")
        return [dict(zip(keys, r)) for r in rows]

    def audit(self, device: str, limit: int = 100) -> list[dict[str, Any]]:
        rows = self._query(
            "SELECT seq, time, event, body FROM audit WHERE device = ? ORDER BY seq DESC LIMIT ?", (device, limit)
        )
        return [{"seq": r[0], "time": r[1], "event": r[2], **json.loads(r[3])} for r in rows]


def _model(r: Sequence[Any]) -> ModelInfo:
    return ModelInfo(
        hash=r[0],
        name=r[1],
        version=r[2],
        profile=json.loads(r[3]),
        thresholds=Thresholds.from_dict(json.loads(r[4])),
        source=r[5],
    )


def _now() -> float:
    import time

    return time.time()


def _one_line(exc: BaseException) -> str:
    return " ".join(str(exc).split()) or exc.__class__.__name__
