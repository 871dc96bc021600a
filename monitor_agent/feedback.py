"""Ground truth on the device: prediction ids, the join store, and feedback windows.

Every prediction gets an id (:class:`IdMaker`, or a column the user names). The store
(``<state dir>/feedback.sqlite``) keeps, per prediction, what a later label is compared
with -- the predicted class index or value, and when it was made -- for
``join_seconds`` (default 7 days) and at most ``max_pending`` rows (default 1,000,000;
oldest evicted first, counted). A label (``POST /feedback``, ``<model> feedback``) is
joined in one SQLite transaction that also adds its outcome to the model's running
counts, so a label acknowledged to its sender is durable and counted exactly once:

* ``matched``: joined; classifiers add one to ``confusion[true][predicted]``, regression
  adds ``prediction - label`` to the residual sums and the abs-error histogram;
* ``duplicate``: the id already has a label (the first one wins);
* ``late``: the prediction is older than ``join_seconds`` (it is kept for another
  ``join_seconds`` so that a late label is recognised as such, not as unknown);
* ``unmatched``: no prediction with that id (never made, evicted, or not made yet);
* ``unknown_label``: not one of the model's classes, or not a finite number (regression).
  Such a label does not use up its id: a corrected label may follow.

The counts leave the store as a *feedback window* (a :class:`~.wire.Window` with only
its ``feedback`` section) handed to the outbox: the store moves its counts into a
hand-off row with a fresh token, the outbox stores the window under that token (a
second store of the same token is a no-op, :meth:`Outbox.add_window`), then the hand-off
row goes. A crash anywhere in between re-runs the hand-off, never doubles it. From the
outbox on, labels have the telemetry's store-and-forward guarantees.

Predictions are the hot path: :meth:`FeedbackStore.remember` appends to an in-memory
list (about 0.2 µs); the agent's tick writes the list every ``checkpoint_seconds`` (and
every label request writes it first, so a label never misses a prediction made just
before it). So a ``kill -9`` forgets the predictions of the last ``checkpoint_seconds``
at most -- their labels then count as ``unmatched`` -- the same bound as the telemetry
window's rows. Ids a batch request gets (an :class:`IdRun`: one prefix, consecutive
counters) are stored as one ``blocks`` row -- the counter range and the predictions packed
as 8-byte floats -- and a label finds its block by prefix and counter; the first label of
a block's id goes into ``block_labels``. A batch of 100 is then one insert (about 5 µs
against 200 µs for 100 rows). Disk: about 60 bytes per pending single-row prediction with
generated ids (measured in ``benchmarks/feedback.py``), about 9 in a batch of 100; memory:
only the predictions since the last write (the agent holds a run as an :class:`IdSpan`, not
its strings). A full store evicts along ``blocks_by_time``, whole blocks a statement: a batch
of 100 costs the tick thread ~12 µs full, ~5 µs fresh (``benchmarks/feedback_batch_ids.py``).
"""

from __future__ import annotations

import contextlib
import itertools
import json
import logging
import math
import os
import random
import sqlite3
import sys
import threading
from array import array
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from mlpack_edge.errors import AgentError
from mlpack_edge.monitor_agent import _spool
from mlpack_edge.monitor_agent._ids import IdMaker, IdRun, IdSpan, split_id
from mlpack_edge.monitor_agent._store import CACHE_KIB, immediate_tx
from mlpack_edge.monitor_agent.wire import Feedback, Residuals, Window

if TYPE_CHECKING:
    from mlpack_edge.monitor_agent.outbox import Outbox

__all__ = ["DB_NAME", "OUTCOMES", "Target", "IdMaker", "FeedbackStore", "label_value", "read_labels"]

DB_NAME = "feedback.sqlite"
OUTCOMES = ("matched", "duplicate", "late", "unmatched", "unknown_label")
MAX_ID_CHARS = 200

_SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS models (key INTEGER PRIMARY KEY, hash TEXT NOT NULL UNIQUE);
CREATE TABLE IF NOT EXISTS predictions (
    model INTEGER NOT NULL, id TEXT NOT NULL, time REAL NOT NULL, pred REAL NOT NULL,
    labelled INTEGER NOT NULL DEFAULT 0, PRIMARY KEY (model, id)) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS predictions_by_time ON predictions (time);
CREATE TABLE IF NOT EXISTS blocks (
    model INTEGER NOT NULL, prefix TEXT NOT NULL, first INTEGER NOT NULL, last INTEGER NOT NULL,
    time REAL NOT NULL, preds BLOB NOT NULL, PRIMARY KEY (model, prefix, first)) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS blocks_by_time ON blocks (time);
CREATE TABLE IF NOT EXISTS block_labels (
    model INTEGER NOT NULL, id TEXT NOT NULL, time REAL NOT NULL, PRIMARY KEY (model, id)) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS counts (model TEXT PRIMARY KEY, start REAL NOT NULL, "end" REAL NOT NULL, body TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS handoffs (token TEXT PRIMARY KEY, body TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS samples (
    model TEXT NOT NULL, day INTEGER NOT NULL, slot INTEGER NOT NULL, id TEXT NOT NULL, time REAL NOT NULL,
    row TEXT NOT NULL, output TEXT NOT NULL, label TEXT, sent INTEGER NOT NULL DEFAULT 0,
    PRIMARY KEY (model, day, slot));
CREATE INDEX IF NOT EXISTS samples_by_id ON samples (model, id);
CREATE TABLE IF NOT EXISTS sample_days (model TEXT NOT NULL, day INTEGER NOT NULL, seen INTEGER NOT NULL,
    PRIMARY KEY (model, day));
"""
SAMPLES_PER_HANDOFF = 200
_BLOCK_ROWS = "COALESCE(SUM(last - first + 1), 0)"
_EVICT_SPANS = 256  # blocks read per eviction step at most
_Block = tuple[str, str, int, float, bytes]  # (model hash, id prefix, first counter, time, packed predictions)


def _pack(predictions: Sequence[float]) -> bytes:
    """Predictions as little-endian float64s: 8 bytes each, one blob per block.

    A numpy array (the runtime's class codes or values) converts in one C call: ``map(float)``
    over it made a numpy scalar per element (100 codes: ~7.5 us of the tick thread, ~0.5 us).
    """
    astype = getattr(predictions, "astype", None)  # numpy without importing it
    if astype is not None:
        return astype("<f8").tobytes()
    a = array("d", map(float, predictions))
    if sys.byteorder != "little":
        a.byteswap()
    return a.tobytes()


def _unpack_one(blob: bytes, i: int) -> float:
    a = array("d", blob[8 * i : 8 * i + 8])
    if sys.byteorder != "little":
        a.byteswap()
    return a[0]


@dataclass(frozen=True)
class Target:
    """What labels are compared with: the classes in prediction-code order, or regression (``None``)."""

    classes: tuple[str, ...] | None

    @property
    def index(self) -> dict[str, int]:
        return {c: i for i, c in enumerate(self.classes or ())}


def _plain(v: Any) -> Any:
    """numpy scalars (and anything else json cannot write) as plain values."""
    if hasattr(v, "item"):
        return v.item()
    return str(v)


def label_value(label: Any, target: Target, index: dict[str, int]) -> float | None:
    """The label as the store compares it (a class index or a number); ``None``: not a valid label."""
    if label is None or isinstance(label, bool):
        return None
    if target.classes is None:
        if isinstance(label, str):
            try:
                label = float(label)
            except ValueError:
                return None
        if not isinstance(label, (int, float)):
            return None
        v = float(label)
        return v if math.isfinite(v) else None
    if isinstance(label, float) and label.is_integer():
        label = int(label)  # JSON 1.0 for class 1
    if not isinstance(label, (str, int, float)):
        return None
    i = index.get(str(label))
    return None if i is None else float(i)


log = logging.getLogger("mlpack_edge.monitor_agent")

_ANYTHING_TO_HAND_OFF = "SELECT EXISTS (SELECT 1 FROM counts) OR EXISTS (SELECT 1 FROM samples WHERE sent = 0)"


#: Rows per multi-row ``INSERT`` at most (fewer where SQLite takes fewer parameters: 999 before 3.32).
INSERT_CHUNK = 512


def _insert_many(conn: sqlite3.Connection, head: str, width: int, flat: list[Any]) -> None:
    """``head`` + ``VALUES (?, ...), (?, ...)`` for rows of ``width`` values given flat, in order,
    :data:`INSERT_CHUNK` rows per statement.

    Why not ``executemany``: :mod:`sqlite3` releases the GIL around every row's step, and on
    ``serve``'s tick thread each release handed the GIL to the request thread, which the tick
    thread then had to take back by forcing a switch (up to the 1 ms switch interval later):
    2,048 single-row ids a drain were ~2,000 GIL hand-overs, each two context switches and a
    request held up (and under CPU contention waiting for the tick thread to be scheduled). A
    statement of up to 512 rows steps once; the rows and their order are the same.
    """
    rows = max(1, min(INSERT_CHUNK, conn.getlimit(sqlite3.SQLITE_LIMIT_VARIABLE_NUMBER) // width))
    step = rows * width
    one = "(" + ", ".join("?" * width) + ")"
    full = head + ", ".join([one] * rows)
    for start in range(0, len(flat), step):
        part = flat[start : start + step]
        sql = full if len(part) == step else head + ", ".join([one] * (len(part) // width))
        conn.execute(sql, part)


class FeedbackStore:
    """The join store of one state folder (every model served from it); see the module docstring."""

    def __init__(
        self,
        state_dir: str | Path,
        join_seconds: float = 7 * 86400.0,
        max_pending: int = 1_000_000,
        clock: Callable[[], float] = time.time,
        capture_max_rows_per_day: int = 1000,
    ) -> None:
        self.path = Path(state_dir) / DB_NAME
        self.join_seconds = float(join_seconds)
        self.max_pending = int(max_pending)
        self._clock = clock
        self._lock = threading.Lock()
        self._buffer: list[tuple[str, str, float, float]] = []  # (model hash, id, time, prediction)
        self._blocks: list[_Block] = []  # batches of generated ids (IdRun): one row each
        self.capture_max_rows_per_day = int(capture_max_rows_per_day)
        self._captured: list[tuple[str, str, float, str, str]] = []  # (model, id, time, row JSON, output JSON)
        self._rng = random.Random(int.from_bytes(os.urandom(8), "little"))
        self._model_keys: dict[str, int] = {}
        self._count: int | None = None  # rows in ``predictions`` (this process's view; see _evict_locked)
        try:
            self._conn = sqlite3.connect(str(self.path), isolation_level=None, check_same_thread=False, timeout=30)
            self._conn.execute("PRAGMA journal_mode=WAL")
            self._conn.execute("PRAGMA synchronous=FULL")
            self._conn.execute(f"PRAGMA cache_size=-{CACHE_KIB}")  # see _store.CACHE_KIB
            self._conn.executescript(_SCHEMA)
        except sqlite3.Error as exc:
            raise AgentError(f"{self.path}: cannot open the feedback store ({exc})") from None
        self._take_spool()

    def _take_spool(self) -> None:
        """Store the prediction ids short one-shot runs spooled at exit (:mod:`._spool`); idempotent."""
        for path, payload in _spool.pending(self.path.parent, "ids"):
            try:
                model = payload["model"]
                for ids, predictions, when in payload["items"]:
                    self.remember(model, [str(i) for i in ids], predictions, float(when))
            except (KeyError, TypeError, ValueError):
                with self._lock:
                    self._buffer.clear()
                    self._blocks.clear()
                with contextlib.suppress(OSError):
                    path.replace(path.with_name(path.name + ".bad"))
                continue
            try:
                self.flush()  # stored (INSERT OR IGNORE: a crash before the unlink repeats it harmlessly)
            except AgentError as exc:  # the file stays for the next open
                log.error("spooled prediction ids %s not stored: %s", path, exc)
                return
            _spool.done(path, "ids")

    def close(self) -> None:
        with self._lock:
            with contextlib.suppress(sqlite3.Error):
                self._flush_locked()
            self._conn.close()

    # ------------------------------------------------------------------ predictions

    def remember(self, model: str, ids: Sequence[str], predictions: Sequence[float], when: float | None = None) -> None:
        """Keep ``ids[i] -> predictions[i]`` (class index or value) for the join; buffered.

        Ids made together by :class:`IdMaker` (an :class:`IdRun`, as a batch request gets)
        are kept as one block row (prefix, counter range, packed predictions): a batch of
        100 costs one insert instead of 100 index entries.
        """
        self.remember_many(model, ((ids, predictions, self._clock() if when is None else when),))

    def remember_many(self, model: str, items: Sequence[tuple[Sequence[str] | IdSpan, Sequence[float], float]]) -> None:
        """:meth:`remember` of each ``(ids, predictions, when)`` in turn, in one pass and one lock.

        The agent drains ~2,048 single-row requests at a time on ``serve``'s tick thread, whose
        Python holds the GIL from the request thread: a call per request was ~10k instructions
        (~7 ms of GIL a drain on this machine), against ~3k here.
        """
        rows: list[tuple[str, str, float, float]] = []
        blocks: list[_Block] = []
        bad: Exception | None = None
        for ids, predictions, when in items:
            kept = len(rows)
            try:
                if isinstance(ids, (IdRun, IdSpan)) and ids:  # a span: the agent's compact hold of a run
                    blob = _pack(predictions)
                    if len(blob) != 8 * len(ids):
                        raise ValueError(f"{len(ids)} ids for {len(blob) // 8} predictions")
                    blocks.append((model, ids.prefix, ids.first, when, blob))
                elif len(ids) == 1 == len(predictions):  # a single-row request: no iterators to make (~3x)
                    rows.append((model, ids[0], when, float(predictions[0])))
                else:
                    rows.extend(zip(itertools.repeat(model), ids, itertools.repeat(when), map(float, predictions)))
            except (TypeError, ValueError, OverflowError) as exc:  # none of this request's rows; the others stay
                del rows[kept:]
                bad = exc
        with self._lock:
            self._buffer.extend(rows)
            self._blocks.extend(blocks)
        if bad is not None:  # as remember would have: the others are kept
            raise bad

    def capture(self, model: str, items: Sequence[tuple[str, dict[str, Any], Any]], when: float | None = None) -> None:
        """Offer ``(id, row, output)`` to the day's reservoir of captured rows (opt-in; buffered)."""
        t = self._clock() if when is None else when
        rows = [(model, pid, t, json.dumps(row, allow_nan=False, default=_plain), json.dumps(output, default=_plain))
                for pid, row, output in items]
        with self._lock:
            self._captured.extend(rows)

    def _reservoir_locked(self, conn: sqlite3.Connection, items: list[tuple[str, str, float, str, str]]) -> None:
        """Algorithm R per (model, UTC day): every offered row ends up kept with the same chance."""
        k = self.capture_max_rows_per_day
        for model, pid, t, row, output in items:
            day = int(t // 86400)
            got = conn.execute("SELECT seen FROM sample_days WHERE model = ? AND day = ?", (model, day)).fetchone()
            seen = (got[0] if got else 0) + 1
            conn.execute("INSERT OR REPLACE INTO sample_days (model, day, seen) VALUES (?, ?, ?)", (model, day, seen))
            slot = seen - 1 if seen <= k else self._rng.randrange(seen)
            if slot < k:
                conn.execute(
                    "INSERT OR REPLACE INTO samples (model, day, slot, id, time, row, output, label, sent) "
                    "VALUES (?, ?, ?, ?, ?, ?, ?, NULL, 0)", (model, day, slot, pid, t, row, output))

    def flush(self) -> int:
        """Write the buffered predictions (and evict what is too old or too many); returns how many."""
        with self._lock:
            return self._flush_locked()

    def _flush_locked(self) -> int:
        if not self._buffer and not self._blocks and not self._captured:
            return 0
        buf, self._buffer = self._buffer, []
        blocks, self._blocks = self._blocks, []
        captured, self._captured = self._captured, []
        try:
            # Predictions need to survive a crash (WAL, synchronous=NORMAL does: the OS has
            # the frames), not a power cut: no fsync per write on the serve path's neighbour.
            # The next label transaction (FULL) makes them durable with it.
            self._conn.execute("PRAGMA synchronous=NORMAL")
            try:
                with self._tx() as conn:
                    n = self._insert_locked(conn, buf, blocks)
                    self._reservoir_locked(conn, captured)
                    self._evict_locked(conn)
            finally:
                self._conn.execute("PRAGMA synchronous=FULL")
        except sqlite3.Error as exc:
            self._buffer[:0] = buf  # try again at the next flush
            self._blocks[:0] = blocks
            self._captured[:0] = captured
            self._count = None
            raise AgentError(f"{self.path}: cannot store predictions for feedback ({exc})") from None
        return n

    def _insert_locked(
        self, conn: sqlite3.Connection, buf: list[tuple[str, str, float, float]], blocks: list[_Block]
    ) -> int:
        keys = {m: self._key(conn, m) for m in {row[0] for row in buf}}
        before = conn.total_changes
        # A repeated id (a user's id column seen twice) keeps its first prediction (rows go in order).
        _insert_many(conn, "INSERT OR IGNORE INTO predictions (model, id, time, pred) VALUES ", 4,
                     [v for m, i, t, p in buf for v in (keys[m], i, t, p)])
        ignored = len(buf) - (conn.total_changes - before)
        in_blocks = 0
        if blocks:  # generated ids never repeat: nothing to ignore (OR IGNORE: a re-run flush)
            spans = [(self._key(conn, m), prefix, first, first + len(blob) // 8 - 1, t, blob)
                     for m, prefix, first, t, blob in blocks]
            _insert_many(conn, "INSERT OR IGNORE INTO blocks (model, prefix, first, last, time, preds) VALUES ", 6,
                         [v for span in spans for v in span])
            in_blocks = sum(last - first + 1 for _, _, first, last, _, _ in spans)
        if self._count is not None:
            self._count += len(buf) - ignored + in_blocks
        if ignored:
            self._bump(conn, "repeated_ids", ignored)
        return len(buf) + in_blocks

    def _evict_locked(self, conn: sqlite3.Connection) -> None:
        cut = self._clock() - 2 * self.join_seconds
        gone = conn.execute("DELETE FROM predictions WHERE time < ?", (cut,)).rowcount
        gone += int(conn.execute(f"SELECT {_BLOCK_ROWS} FROM blocks WHERE time < ?", (cut,)).fetchone()[0])
        conn.execute("DELETE FROM blocks WHERE time < ?", (cut,))
        conn.execute("DELETE FROM block_labels WHERE time < ?", (cut,))
        if self._count is None:  # counted once per process, then kept up to date (a COUNT(*) per write would scan)
            self._count = self._pending(conn)
        else:
            self._count -= gone
        over = self._count - self.max_pending
        if over > 0:
            self._evict_oldest(conn, over)
            self._bump(conn, "evicted", over)
            self._count -= over
        if gone:
            self._bump(conn, "expired", gone)
        # Captured rows stay while a label may still come (then they are sent again with it).
        conn.execute("DELETE FROM samples WHERE sent = 1 AND time < ?", (cut,))
        conn.execute("DELETE FROM sample_days WHERE day < ?", (int(cut // 86400) - 1,))

    @staticmethod
    def _pending(conn: sqlite3.Connection) -> int:
        rows = int(conn.execute("SELECT COUNT(*) FROM predictions").fetchone()[0])
        return rows + int(conn.execute(f"SELECT {_BLOCK_ROWS} FROM blocks").fetchone()[0])

    @staticmethod
    def _evict_oldest(conn: sqlite3.Connection, over: int) -> None:
        """Delete the ``over`` oldest predictions, single rows and blocks alike (a block is cut
        from its oldest end when only part of it must go; on equal times single rows go first).

        Every read here follows ``blocks_by_time`` (whose entries end with the primary key, so
        ``ORDER BY time, model, prefix, first`` is the index's own order): the former
        ``ORDER BY time, first`` sorted the whole table, blobs and all, once per evicted block --
        a full store (``max_pending``) took ~1 ms a batch request on the tick thread.
        """
        while over > 0:
            oldest_row = conn.execute("SELECT MIN(time) FROM predictions").fetchone()[0]
            oldest_block = conn.execute("SELECT MIN(time) FROM blocks").fetchone()[0]
            if oldest_block is None and oldest_row is None:
                return
            if oldest_block is None or (oldest_row is not None and oldest_row <= oldest_block):
                bound = math.inf if oldest_block is None else oldest_block
                over -= conn.execute(
                    "DELETE FROM predictions WHERE (model, id) IN "
                    "(SELECT model, id FROM predictions WHERE time <= ? ORDER BY time LIMIT ?)", (bound, over)).rowcount
                continue
            # Blocks older than every single row, oldest first: whole ones go, the last may be cut.
            spans = conn.execute(
                "SELECT model, prefix, first, last, time FROM blocks WHERE time < ? "
                "ORDER BY time, model, prefix, first LIMIT ?",
                (math.inf if oldest_row is None else oldest_row, min(over, _EVICT_SPANS))).fetchall()
            whole = 0
            for model, prefix, first, last, _ in spans:
                size = last - first + 1
                if size > over:
                    blob = conn.execute("SELECT preds FROM blocks WHERE model = ? AND prefix = ? AND first = ?",
                                        (model, prefix, first)).fetchone()[0]
                    conn.execute("UPDATE blocks SET first = ?, preds = ? WHERE model = ? AND prefix = ? AND first = ?",
                                 (first + over, blob[8 * over :], model, prefix, first))
                    over = 0
                    break
                whole += 1
                over -= size
            if whole:  # those before the last one's time in one statement (all of them are in spans)
                t_last = spans[whole - 1][4]
                conn.execute("DELETE FROM blocks WHERE time < ?", (t_last,))
                for model, prefix, first, _, t in spans[:whole]:
                    if t == t_last:
                        conn.execute("DELETE FROM blocks WHERE model = ? AND prefix = ? AND first = ?",
                                     (model, prefix, first))

    def _lookup(self, conn: sqlite3.Connection, key: int, pid: str) -> tuple[float, float, bool, bool] | None:
        """``(time, prediction, labelled, in a block)`` of a stored prediction, or ``None``."""
        row = conn.execute("SELECT time, pred, labelled FROM predictions WHERE model = ? AND id = ?", (key, pid)).fetchone()
        if row is not None:
            return float(row[0]), float(row[1]), bool(row[2]), False
        parts = split_id(pid)
        if parts is None:
            return None
        prefix, n = parts
        block = conn.execute(
            "SELECT first, last, time, preds FROM blocks WHERE model = ? AND prefix = ? AND first <= ? "
            "ORDER BY first DESC LIMIT 1", (key, prefix, n)).fetchone()
        if block is None or n > block[1]:
            return None
        first, _, t, blob = block
        labelled = conn.execute("SELECT 1 FROM block_labels WHERE model = ? AND id = ?", (key, pid)).fetchone()
        return float(t), _unpack_one(blob, n - first), labelled is not None, True

    def _key(self, conn: sqlite3.Connection, model: str) -> int:
        k = self._model_keys.get(model)
        if k is None:
            conn.execute("INSERT OR IGNORE INTO models (hash) VALUES (?)", (model,))
            k = int(conn.execute("SELECT key FROM models WHERE hash = ?", (model,)).fetchone()[0])
            self._model_keys[model] = k
        return k

    @staticmethod
    def _bump(conn: sqlite3.Connection, key: str, n: int) -> None:
        conn.execute(
            "INSERT INTO meta (key, value) VALUES (?, ?) ON CONFLICT (key) DO UPDATE SET value = value + excluded.value",
            (key, n),
        )

    def _tx(self) -> contextlib.AbstractContextManager[sqlite3.Connection]:
        return immediate_tx(self._conn)

    # ------------------------------------------------------------------ labels

    def add_labels(self, model: str, target: Target, items: Sequence[tuple[str, Any]]) -> list[str]:
        """Join ``(id, label)`` pairs; returns each one's outcome (:data:`OUTCOMES`). Durable on return."""
        index = target.index
        now = self._clock()
        fb = Feedback(confusion=[[0] * len(target.classes) for _ in target.classes] if target.classes else None,
                      residuals=Residuals() if target.classes is None else None)
        outcomes: list[str] = []
        with self._lock:
            buf, self._buffer = self._buffer, []
            blocks, self._blocks = self._blocks, []
            try:
                with self._tx() as conn:
                    if buf or blocks:
                        self._insert_locked(conn, buf, blocks)
                    if self._captured:  # rows captured just before their label: in the reservoir first
                        captured, self._captured = self._captured, []
                        self._reservoir_locked(conn, captured)
                    key = self._key(conn, model)
                    for pid, label in items:
                        outcome = self._one(conn, key, str(pid), label_value(label, target, index), now, fb, model, label)
                        outcomes.append(outcome)
                    fb.labels = len(items)
                    self._accumulate(conn, model, fb, now)
            except sqlite3.Error as exc:
                self._buffer[:0] = buf
                self._blocks[:0] = blocks
                self._count = None
                raise AgentError(f"{self.path}: cannot store labels ({exc})") from None
        return outcomes

    def _one(
        self, conn: sqlite3.Connection, key: int, pid: str, value: float | None, now: float, fb: Feedback,
        model: str, raw_label: Any,
    ) -> str:
        found = self._lookup(conn, key, pid)
        if found is None:
            fb.unmatched += 1
            return "unmatched"
        t, pred, labelled, in_block = found
        if labelled:
            fb.duplicate += 1
            return "duplicate"
        if value is None:
            fb.unknown_label += 1
            return "unknown_label"
        if in_block:
            conn.execute("INSERT INTO block_labels (model, id, time) VALUES (?, ?, ?)", (key, pid, t))
        else:
            conn.execute("UPDATE predictions SET labelled = 1 WHERE model = ? AND id = ?", (key, pid))
        # A captured row gets its label (and goes to the collector again, replacing its copy there).
        conn.execute("UPDATE samples SET label = ?, sent = 0 WHERE model = ? AND id = ?",
                     (json.dumps(raw_label, default=_plain), model, pid))
        if now - t > self.join_seconds:
            fb.late += 1
            return "late"
        fb.matched += 1
        if fb.confusion is not None:
            fb.confusion[int(value)][int(pred)] += 1
        else:
            assert fb.residuals is not None
            err = pred - value
            r = fb.residuals
            r.count += 1
            r.sum += err
            r.sum_sq += err * err
            r.abs_sum += abs(err)
            r.abs_error.add(abs(err))
        return "matched"

    def _accumulate(self, conn: sqlite3.Connection, model: str, fb: Feedback, now: float) -> None:
        row = conn.execute('SELECT start, "end", body FROM counts WHERE model = ?', (model,)).fetchone()
        if row is None:
            conn.execute('INSERT INTO counts (model, start, "end", body) VALUES (?, ?, ?, ?)',
                         (model, now, now, json.dumps(fb.to_dict())))
            return
        total = Feedback.from_dict(json.loads(row[2]), "feedback")
        total.add(fb)
        conn.execute('UPDATE counts SET "end" = ?, body = ? WHERE model = ?', (max(row[1], now), json.dumps(total.to_dict()), model))

    # ------------------------------------------------------------------ into the outbox

    def handoff(self, outbox: Outbox) -> int:
        """Move the counts gathered so far into the outbox as feedback windows; returns how many."""
        with self._lock:
            try:
                if self._conn.execute(_ANYTHING_TO_HAND_OFF).fetchone()[0]:
                    self._handoff_tx_locked()
                pending = self._conn.execute("SELECT token, body FROM handoffs ORDER BY rowid").fetchall()
            except sqlite3.Error as exc:
                raise AgentError(f"{self.path}: cannot hand labels over to the outbox ({exc})") from None
        n = 0
        for token, body in pending:
            outbox.add_window(Window.from_dict(json.loads(body)), token=token)
            with self._lock:
                self._conn.execute("DELETE FROM handoffs WHERE token = ?", (token,))
            n += 1
        return n

    def _handoff_tx_locked(self) -> None:
        """Counts and unsent samples into ``handoffs`` rows, in one write transaction.

        Only called when a read found something to move: a process with no labels (every
        one-shot ``predict``) then never pays for an empty write transaction and its fsync.
        """
        with self._tx() as conn:
            for model, start, end, body in conn.execute('SELECT model, start, "end", body FROM counts').fetchall():
                w = Window(model=model, seq=0, start=start, end=end,
                           feedback=Feedback.from_dict(json.loads(body), "feedback"))
                conn.execute("INSERT INTO handoffs (token, body) VALUES (?, ?)",
                             (os.urandom(16).hex(), json.dumps(w.to_dict())))
            conn.execute("DELETE FROM counts")
            self._handoff_samples_locked(conn)

    def _handoff_samples_locked(self, conn: sqlite3.Connection) -> None:
        """Unsent captured rows into hand-off windows (``SAMPLES_PER_HANDOFF`` each), marked sent."""
        while True:
            rows = conn.execute(
                "SELECT model, day, slot, id, time, row, output, label FROM samples WHERE sent = 0 "
                "ORDER BY model, time LIMIT ?", (SAMPLES_PER_HANDOFF,)).fetchall()
            if not rows:
                return
            by_model: dict[str, list[dict[str, Any]]] = {}
            for model, day, slot, pid, t, row, output, label in rows:
                by_model.setdefault(model, []).append({
                    "day": day, "slot": slot, "time": t, "id": pid, "row": json.loads(row),
                    "output": json.loads(output), "label": None if label is None else json.loads(label)})
                conn.execute("UPDATE samples SET sent = 1 WHERE model = ? AND day = ? AND slot = ?", (model, day, slot))
            for model, samples in by_model.items():
                times = [x["time"] for x in samples]
                w = Window(model=model, seq=0, start=min(times), end=max(times), samples=samples)
                conn.execute("INSERT INTO handoffs (token, body) VALUES (?, ?)", (os.urandom(16).hex(), json.dumps(w.to_dict())))

    def captured(self, model: str) -> dict[str, int]:
        """How many rows are kept for ``model`` and how many wait to be sent."""
        with self._lock:
            kept, unsent = self._conn.execute(
                "SELECT COUNT(*), COALESCE(SUM(sent = 0), 0) FROM samples WHERE model = ?", (model,)).fetchone()
        return {"kept": int(kept), "unsent": int(unsent)}

    # ------------------------------------------------------------------ state

    def stats(self) -> dict[str, int]:
        """Pending predictions (written and buffered) and the store's counters."""
        with self._lock:
            pending = self._pending(self._conn) + len(self._buffer) + sum(len(b[4]) // 8 for b in self._blocks)
            meta = dict(self._conn.execute("SELECT key, value FROM meta").fetchall())
            return {"pending": pending, "expired": int(meta.get("expired", 0)),
                    "evicted": int(meta.get("evicted", 0)), "repeated_ids": int(meta.get("repeated_ids", 0))}

    def unsent(self, model: str) -> Feedback | None:
        """The counts not yet handed to the outbox (``status`` adds them to what it shows)."""
        with self._lock:
            row = self._conn.execute("SELECT body FROM counts WHERE model = ?", (model,)).fetchone()
        return None if row is None else Feedback.from_dict(json.loads(row[0]), "feedback")


def read_labels(path: str, id_column: str, label_column: str, regression: bool = False) -> list[tuple[str, Any]]:
    """``(id, label)`` pairs of a labels CSV (``-``: stdin), all read before any is counted.

    A missing column, a CSV syntax error, a row of the wrong width, an empty or too long
    id, or text that is not UTF-8 is an :class:`AgentError` naming the file and line.
    """
    import csv
    import io
    import sys

    where = "stdin" if path == "-" else path
    try:
        raw = sys.stdin.buffer.read() if path == "-" else Path(path).read_bytes()
    except OSError as exc:
        raise AgentError(f"{where}: cannot read ({exc.strerror})") from None
    try:
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise AgentError(f"{where}: not UTF-8 text (byte {exc.start})") from None
    reader = csv.reader(io.StringIO(text, newline=""))
    try:
        header = next(reader, None)
        if not header:
            raise AgentError(f"{where}: empty file (expected a CSV header with {id_column!r} and {label_column!r})")
        for col in (id_column, label_column):
            if col not in header:
                raise AgentError(f"{where}: the CSV header lacks column {col!r} (it has {', '.join(map(repr, header[:8]))})")
        i, j = header.index(id_column), header.index(label_column)
        out: list[tuple[str, Any]] = []
        for row in reader:
            if not row:
                continue
            line = reader.line_num
            if len(row) != len(header):
                raise AgentError(f"{where}: line {line}: expected {len(header)} fields as in the header, got {len(row)}")
            pid = row[i]
            if not pid or len(pid) > MAX_ID_CHARS:
                raise AgentError(f"{where}: line {line}: {id_column}: expected an id of 1-{MAX_ID_CHARS} characters")
            out.append((pid, row[j]))
    except csv.Error as exc:
        raise AgentError(f"{where}: line {reader.line_num}: {exc}") from None
    return out
