"""The in-process recorder: what every prediction adds to the current telemetry window.

The single-row budget is a fraction of a microsecond (a predict costs 5-40 µs), so
:meth:`Recorder.record` only appends one tuple of *references* to the caller's arrays
and lists to a deque, without taking a lock. Counting and binning happen vectorised
(:mod:`._binning`) when the buffer holds ``buffer_rows`` (rows + calls), when a window
closes, or when a snapshot is asked for. Batches larger than the buffer are binned at
once, in fixed-size chunks, so memory stays flat in the number of rows.

Windows are aligned to multiples of ``window_seconds`` (epoch time), closed by the
first ``record``/``roll`` at or after their end (only ``roll`` when ``auto_roll`` is off),
and handed to ``on_window`` outside the lock. A closed window carries ``seq = 0``: the outbox gives it its sequence number.

One-shot use (``auto_roll`` on, no thread: a batch ``predict``) can also ask ``record`` to
call back for a checkpoint of the open window (:meth:`Recorder.set_checkpoints`) at least
every so many seconds and rows; the check rides on the clock read ``auto_roll`` does
anyway, so a ``serve`` request (``auto_roll`` off, the agent's thread checkpoints) pays
nothing for it.

The runtime does not even call into the recorder for a single row: it appends the row to a
list it got from :meth:`Recorder.row_sink` while the list is shorter than
:attr:`Recorder.sink_cap` and its own ``time.perf_counter()`` reading is below
:attr:`Recorder.sink_until` (one Python call per row was a third of what recording cost a
~6 µs linear model), and the labels become class codes at flush, in one pass. With
``auto_roll`` off the deadline is infinite (the agent's thread rolls windows); with it on,
it is the window's end or the next checkpoint, whichever comes first, read on the runtime's
clock, so a sunk row lands in the window a ``record_row`` of it would. A recorder with an
injected ``clock`` (tests, replays) cannot say when that is on ``perf_counter``: while it
rolls its own windows its sinks stay shut (``sink_cap`` 0) and rows take ``record_row``.
"""

from __future__ import annotations

import collections
import itertools
import math
import operator
import threading
import time
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from mlpack_edge.monitor_agent._binning import NumericBinner, NumericCounts, count_categorical
from mlpack_edge.monitor_agent._log import log
from mlpack_edge.monitor_agent.histogram import LatencyHistogram
from mlpack_edge.monitor_agent.profile import CategoricalProfile, NumericProfile, Profile
from mlpack_edge.monitor_agent.wire import _ERROR_KIND, BinCounts, SystemStats, Window

__all__ = ["Recorder", "DEFAULT_WINDOW_SECONDS", "DEFAULT_BUFFER_ROWS"]


DEFAULT_WINDOW_SECONDS = 60.0
DEFAULT_BUFFER_ROWS = 1024


_DTYPE = operator.attrgetter("dtype")


def _take(rows: list[Any]) -> list[Any]:
    """The items ``rows`` holds now, removed from it; rows appended meanwhile (by threads
    without the lock: ``list.extend`` and ``del`` of a slice are atomic) stay for the next flush."""
    taken = len(rows)
    got = rows[:taken]
    del rows[:taken]
    return got


def _fold_rows(w: _Open, flat: list[Any], nums: list[Any], cats: list[Any]) -> list[Any]:
    """Count single rows kept flat (4 items a row: numeric, categorical, prediction, latency)
    into ``w`` as one request each, append their inputs to ``nums``/``cats`` for binning, and
    return their predictions (class codes from record_row, labels from a row sink)."""
    lats = flat[3::4]
    w.requests += len(lats)
    w.rows += len(lats)
    w.latency.add_array(lats)
    nums += flat[0::4]
    cats += flat[1::4]
    return flat[2::4]


def _stack(arrays: Sequence[np.ndarray]) -> np.ndarray:
    """``np.concatenate(arrays)`` along axis 0, by joining their bytes when they share one dtype.

    A flush stacks ~500 one-row arrays: ``concatenate`` inspects each (~1.9k instructions a
    row), ``b"".join`` only takes each one's buffer (~0.5k); with the dtype check ~0.9k. Arrays
    that are not C-contiguous, or of mixed or non-numeric dtypes, take ``concatenate``.
    """
    first = arrays[0]
    if len(arrays) == 1:
        return first
    dtype = first.dtype
    if dtype.kind in "fiub" and len(set(map(_DTYPE, arrays))) == 1:
        try:
            data = b"".join(arrays)  # type: ignore[arg-type]
        except (BufferError, ValueError, TypeError):  # a strided view has no simple buffer
            pass
        else:
            return np.frombuffer(data, dtype).reshape(-1, *first.shape[1:])
    return np.concatenate(arrays)


class _Layout:
    """What the profile says about binning, prepared once per recorder."""

    def __init__(self, profile: Profile) -> None:
        self.numeric = [f for f in profile.features if isinstance(f, NumericProfile)]
        self.categorical = [f for f in profile.features if isinstance(f, CategoricalProfile)]
        self.binner = NumericBinner(self.numeric)
        self.cat_index = [{c: i for i, c in enumerate(f.categories)} for f in self.categorical]
        self.prediction = profile.prediction
        self.pred_binner = (
            NumericBinner([profile.prediction]) if isinstance(profile.prediction, NumericProfile) else None
        )
        self.pred_index = (
            {c: i for i, c in enumerate(profile.prediction.categories)}
            if isinstance(profile.prediction, CategoricalProfile)
            else {}
        )


class _Open:
    """The counts of the window being filled."""

    def __init__(self, layout: _Layout, start: float, end: float) -> None:
        self.start, self.end = start, end
        self.requests = 0
        self.rows = 0
        self.errors: dict[str, int] = {}
        self.latency = LatencyHistogram()
        self.numeric: NumericCounts = layout.binner.zeros()
        n_cat = len(layout.categorical)
        self.cat_counts = [np.zeros(len(f.categories), np.int64) for f in layout.categorical]
        self.cat_missing = [0] * n_cat
        self.cat_unseen = [0] * n_cat
        pred = layout.prediction
        self.pred = BinCounts([0] * pred.n_bins) if pred is not None else None
        self.system = SystemStats()

    def empty(self) -> bool:
        return self.requests == 0 and not self.errors and self.system.samples == 0

    def add_predictions(self, layout: _Layout, p: np.ndarray) -> None:
        if self.pred is None:
            return
        if layout.pred_binner is not None:
            c = layout.pred_binner.count(p.reshape(-1, 1))
            self.pred.add(BinCounts(c.bins.tolist(), int(c.missing[0]), int(c.below[0]), int(c.above[0])))
            return
        n = len(layout.pred_index)
        counts = np.zeros(n, np.int64)
        missing = unseen = 0
        if p.dtype.kind in "iub" or p.dtype.kind == "f":
            if p.dtype.kind == "f":
                nan = np.isnan(p)
                missing = int(nan.sum())
                p = p[~nan]
            p = p.astype(np.int64, copy=False)
            ok = (p >= 0) & (p < n)
            counts += np.bincount(p[ok], minlength=n)
            unseen = int(p.size - int(ok.sum()))
        else:  # labels given as strings
            missing, unseen = count_categorical(layout.pred_index, p.tolist(), counts)
        self.pred.add(BinCounts(counts.tolist(), missing, 0, 0, unseen))

    def to_window(self, layout: _Layout, model: str, end: float) -> Window:
        features: dict[str, BinCounts] = {}
        for j, f in enumerate(layout.numeric):
            features[f.name] = BinCounts(
                layout.binner.column(self.numeric, j).tolist(),
                missing=int(self.numeric.missing[j]),
                below=int(self.numeric.below[j]),
                above=int(self.numeric.above[j]),
            )
        for j, f in enumerate(layout.categorical):
            features[f.name] = BinCounts(
                self.cat_counts[j].tolist(), missing=self.cat_missing[j], unseen=self.cat_unseen[j]
            )
        pred = None if self.pred is None else BinCounts(**self.pred.to_dict())
        system = SystemStats(**self.system.to_dict())
        return Window(
            model=model,
            seq=0,
            start=self.start,
            end=max(self.start, end),
            requests=self.requests,
            rows=self.rows,
            errors=dict(self.errors),
            latency=LatencyHistogram(self.latency.buckets),
            features=features,
            predictions=pred,
            system=system,
        )


class Recorder:
    """Per-window statistics of one model's traffic; safe to call from many threads."""

    def __init__(
        self,
        profile: Profile,
        model_hash: str,
        *,
        window_seconds: float = DEFAULT_WINDOW_SECONDS,
        clock: Callable[[], float] = time.time,
        on_window: Callable[[Window], None] | None = None,
        buffer_rows: int = DEFAULT_BUFFER_ROWS,
    ) -> None:
        if not (window_seconds > 0 and math.isfinite(window_seconds)):
            raise ValueError(f"window_seconds must be a positive number, got {window_seconds!r}")
        if buffer_rows < 1:
            raise ValueError(f"buffer_rows must be >= 1, got {buffer_rows}")
        self.profile = profile
        self.model_hash = model_hash
        self.window_seconds = float(window_seconds)
        self.on_window = on_window
        self._clock = clock
        #: Items (4 a row) a list from row_sink may hold before its owner must call record: 0
        #: while auto_roll is on with an injected clock (a row then needs record_row's clock check).
        self.sink_cap = 0
        #: The ``time.perf_counter()`` reading before which a sink may take a row: the window's
        #: end or the next checkpoint while auto_roll is on, else never.
        self.sink_until = math.inf
        # The sinks' deadline needs this recorder's clock read on perf_counter: only the wall clock can be.
        self._sink_ticks: Callable[[], float] | None = time.perf_counter if clock is time.time else None
        self._auto_roll = True
        self._row_clock: Callable[[], float] | None = clock
        self._buffer_rows = buffer_rows
        self._layout = _Layout(profile)
        self._n_num = len(self._layout.numeric)
        self._n_cat = len(self._layout.categorical)
        self._lock = threading.Lock()
        self._open = self._new_window(clock())
        self._end = self._open.end
        self.on_checkpoint: Callable[[], None] | None = None
        self._checkpoint_seconds = 0.0
        self._checkpoint_rows = 0
        self._next_checkpoint = math.inf
        self._rows_since = 0  # rows recorded since the last checkpoint (auto_roll only)
        self._due_rows = math.inf
        self._due = self._end  # the earliest of the window's end and the next checkpoint
        # One tuple per record() call, binned together at flush: (numeric, categorical,
        # predictions, latency, requests, rows).
        self._calls: collections.deque[tuple[Any, ...]] = collections.deque()
        self._buffered = 0  # rows + calls waiting in _calls
        # record_row's single rows, as (numeric, categorical, predictions, latency): a 4-tuple is
        # all a row needs (requests and rows are 1).
        # Kept flat in one list, 4 items a row, by one list.extend of a 4-tuple (atomic under the
        # GIL, so the list always holds whole rows): the tuple is freed at once, so a row leaves
        # no GC-tracked object behind (kept tuples made the collector run and traverse them).
        self._rows: list[Any] = []
        self._row_extend = self._rows.extend
        # row_sink's lists, each with the label -> class code map its rows are counted by, and
        # proba_sink's, each with its number of classes.
        self._sinks: list[tuple[list[Any], dict[Any, int] | int]] = []
        # record_row's budget: how many more single rows may be appended before the buffer is
        # full or a checkpoint is due by rows. A single-row call only counts it down (one
        # attribute, not two counters and two comparisons); _sync folds the rows it took into
        # _buffered and _rows_since before anything reads them.
        self._room = 0
        self._room_start = 0
        self.auto_roll = True  # computes the budgets

    # ------------------------------------------------------------------ hot path

    def record(
        self,
        numeric: np.ndarray | None,
        categorical: Sequence[Sequence[Any]] | None,
        predictions: np.ndarray | None,
        latency_s: float,
        requests: int = 1,
    ) -> None:
        """Count one request's rows, predictions and latency into the current window.

        ``numeric`` is ``[rows, n_numeric]`` in profile order (``None`` if the model has no
        numeric feature); ``categorical`` holds one sequence of original values per
        categorical feature (missing as ``""``/``None``); ``predictions`` holds class
        indices (classification) or values (regression). The arrays are kept by
        reference until the next flush: do not modify them after the call.
        """
        if numeric is not None and numeric.shape[1] != self._n_num:
            raise ValueError(f"numeric has {numeric.shape[1]} columns, the profile has {self._n_num}")
        if (len(categorical) if categorical else 0) != self._n_cat:
            raise ValueError(f"categorical must hold {self._n_cat} sequences (one per categorical feature)")
        if predictions is not None:
            n = len(predictions)
        elif numeric is not None:
            n = len(numeric)
        else:
            n = len(categorical[0]) if categorical else 0
        self._sync()
        if n > self._buffer_rows:
            self._record_now(numeric, categorical, predictions, latency_s, requests, n)
        elif self.auto_roll:
            self._record_auto(numeric, categorical, predictions, latency_s, requests, n)
        else:
            # No lock on the common path: deque.append is atomic, and the buffered count only
            # decides when to flush (a lost increment under a race just flushes a bit later).
            self._calls.append((numeric, categorical, predictions, latency_s, requests, n))
            self._buffered += n + 1
            if self._buffered + (self._sunk() if self._sinks else 0) >= self._buffer_rows:
                with self._lock:
                    self._flush_locked()
        self._sync()
        self._refill()

    def row_sink(self, codes: dict[Any, int]) -> list[Any]:
        """A list a classifier's single-row path appends its rows to itself.

        Append each row as one ``list.extend`` of ``(numeric [1, n_numeric] or None,
        categorical, label, latency_s)`` (atomic under the GIL: the list always holds whole
        rows), and only while ``len(rows) < recorder.sink_cap`` and ``time.perf_counter()``,
        read when the call began, is below ``recorder.sink_until``; otherwise call
        :meth:`record` (with the label's code), which flushes, rolls and checkpoints.
        ``codes`` maps each label to its class index: a flush maps a whole block of labels at
        once instead of one dict lookup per call.
        The arrays are kept by reference until the next flush, as with :meth:`record`.
        Callers with the same ``codes`` share one list (appends from several are whole rows
        all the same), so a process that opens its model again and again keeps one sink.
        """
        return self._sink_for(dict(codes))

    def proba_sink(self, n_classes: int) -> list[Any]:
        """A :meth:`row_sink` whose rows carry bytes: ``(numeric, (), probabilities, latency_s)``,
        ``numeric`` the row's ``n_numeric`` float32 values and ``probabilities`` its
        ``n_classes`` float32 probabilities, each as bytes (copied out of arrays the caller
        reuses). The flush counts each row's class as its highest probability (the first on a
        tie): for a model whose label is just that, proven by its build. A matrix model's
        rows only (every feature numeric), appended under the same rules as row_sink's.
        """
        if self._n_cat:
            raise ValueError("proba_sink takes rows of numeric features only; the profile has categorical ones")
        return self._sink_for(int(n_classes))

    def _sink_for(self, key: dict[Any, int] | int) -> list[Any]:
        """The sink list kept for ``key`` (a row_sink's codes, a proba_sink's class count), made once."""
        with self._lock:
            for rows, known in self._sinks:
                if type(known) is type(key) and known == key:
                    return rows
            rows: list[Any] = []
            self._sinks = [*self._sinks, (rows, key)]  # a new list: _sunk reads it without the lock
            self._sync()
            self._refill()  # a checkpoint by rows is shared by one more list
        return rows

    def _sunk(self) -> int:
        """Rows waiting in the row_sink lists, weighted as record_row's (2 each: a row and a call)."""
        return sum(len(rows) for rows, _ in self._sinks) // 2

    def record_row(
        self,
        numeric: np.ndarray | None,
        categorical: Sequence[Sequence[Any]] | None,
        predictions: np.ndarray,
        latency_s: float,
    ) -> None:
        """:meth:`record` of one request of one row, as the runtime's single-row path calls it.

        The caller built the arrays from the model's schema (``numeric`` ``[1, n_numeric]``,
        one value per categorical feature, one prediction), so the common case is one clock
        read (``auto_roll``), one countdown and one append: the budget is the fraction of a
        microsecond a linear model's whole prediction leaves. A due window end, checkpoint
        or full buffer takes :meth:`record` (which checks the shapes).
        """
        room = self._room
        if room > 0:
            clock = self._row_clock  # None without auto_roll: the agent's thread rolls windows
            if clock is None or clock() < self._due:
                # No lock: list.extend of a tuple is atomic, and the countdown only decides when to flush
                # (a lost decrement under a race just flushes a bit later; see record).
                self._room = room - 1
                self._row_extend((numeric, categorical, predictions, latency_s))
                return
        self.record(numeric, categorical, predictions, latency_s)

    @property
    def auto_roll(self) -> bool:
        """Close due windows from ``record`` itself. The agent turns this off while its thread
        rolls windows on time, so a request never waits for the outbox write."""
        return self._auto_roll

    @auto_roll.setter
    def auto_roll(self, on: bool) -> None:
        with self._lock:
            self._sync()  # rows taken before the switch, counted under the old mode
            self._auto_roll = bool(on)
            self._row_clock = self._clock if on else None
            self._refill()

    def _sync(self) -> None:
        """Fold the rows record_row took since the last refill into ``_buffered``/``_rows_since``."""
        taken = self._room_start - self._room
        if taken > 0:
            self._buffered += 2 * taken
            if self.auto_roll:
                self._rows_since += taken
        self._room_start = self._room

    def _refill(self) -> None:
        """Recompute record_row's budget and the sinks' cap and deadline from ``_buffered``,
        ``_rows_since``, ``_due_rows`` and ``_due`` (the rows they may take while
        ``buffered + 2 < buffer_rows`` and ``rows_since + 1 < due_rows``)."""
        # A row_sink list may fill to the same room (its rows are not in _buffered): with the
        # record_row rows, at most one buffer's worth is kept.
        room = max(0, (self._buffer_rows - self._buffered - 1) // 2)
        if not self._auto_roll:
            self.sink_cap = 4 * room
            self.sink_until = math.inf
        else:
            if self._due_rows != math.inf:
                # A checkpoint by rows is a promise: record_row and every sink share what is left.
                room = max(0, min(room, int(self._due_rows) - self._rows_since - 1)) // (1 + len(self._sinks))
            ticks = self._sink_ticks
            if ticks is None:
                self.sink_cap = 0
            else:
                self.sink_until = ticks() + (self._due - self._clock())
                self.sink_cap = 4 * room
        self._room = self._room_start = room

    def _record_auto(
        self,
        numeric: np.ndarray | None,
        categorical: Sequence[Sequence[Any]] | None,
        predictions: np.ndarray | None,
        latency_s: float,
        requests: int,
        n: int,
    ) -> None:
        """``record`` with ``auto_roll``: close a due window first (this call belongs to the
        next one), checkpoint after (the checkpoint includes this call)."""
        now = self._clock()
        if now >= self._end:
            self.roll(now)
        self._calls.append((numeric, categorical, predictions, latency_s, requests, n))
        self._buffered += n + 1
        sunk = self._sunk() if self._sinks else 0
        # A sink at its cap is flushed too: under a checkpoint by rows the cap is below the buffer's room.
        if self._buffered + sunk >= self._buffer_rows or (sunk and any(len(r) >= self.sink_cap for r, _ in self._sinks)):
            with self._lock:
                self._flush_locked()  # the sinks' rows join _rows_since there
            sunk = 0
        self._rows_since += n
        if now >= self._due or self._rows_since + sunk // 2 >= self._due_rows:
            self._on_due()

    def _record_now(
        self,
        numeric: np.ndarray | None,
        categorical: Sequence[Sequence[Any]] | None,
        predictions: np.ndarray | None,
        latency_s: float,
        requests: int,
        n: int,
    ) -> None:
        """A batch larger than the buffer: bin it at once instead of holding on to it."""
        with self._lock:
            closed = self._roll_if_due_locked()
            w = self._open
            w.requests += requests
            w.rows += n
            if requests > 0:
                w.latency.add(latency_s, requests)
            self._bin_locked([numeric], [categorical], [predictions])
        if closed is not None:
            self._emit(closed)
        if self.auto_roll:
            self._rows_since += n
            if self._clock() >= self._due or self._rows_since >= self._due_rows:
                self._on_due()

    def set_checkpoints(self, callback: Callable[[], None] | None, seconds: float, rows: int) -> None:
        """With ``auto_roll``: call ``callback`` (which takes a :meth:`snapshot`) from ``record``
        once ``seconds`` (0: never) have passed or ``rows`` rows were recorded since the
        window opened or was last checkpointed. Never from inside the lock."""
        with self._lock:
            self.on_checkpoint = callback
            self._checkpoint_seconds = float(seconds)
            self._checkpoint_rows = int(rows)
            self._reset_checkpoint_locked(self._clock())

    def _reset_checkpoint_locked(self, now: float) -> None:
        on = self.on_checkpoint is not None
        self._sync()
        self._rows_since = 0
        self._next_checkpoint = now + self._checkpoint_seconds if on and self._checkpoint_seconds > 0 else math.inf
        self._due_rows = self._checkpoint_rows if on and self._checkpoint_rows > 0 else math.inf
        self._due = min(self._end, self._next_checkpoint)
        self._refill()

    def _on_due(self) -> None:
        """``record`` found the window's end or a checkpoint due (``auto_roll`` only)."""
        now = self._clock()
        if now >= self._end:
            self.roll(now)  # the window is stored: that is the checkpoint
            return
        callback = self.on_checkpoint
        with self._lock:
            self._flush_locked()  # the sinks' rows count towards a checkpoint by rows
            due = now >= self._next_checkpoint or self._rows_since >= self._due_rows
            if due:
                self._reset_checkpoint_locked(now)
        if due and callback is not None:
            try:
                callback()
            except Exception:  # recording must never break a prediction
                log.exception("telemetry checkpoint failed")

    def record_error(self, kind: str, count: int = 1) -> None:
        """Count ``count`` failures of ``kind`` (``validation``, ``runtime``): rows that got no
        prediction (a request that failed as a whole counts as its rows).

        ``requests`` and ``rows`` count only what was predicted, so the error share of a
        window is ``sum(errors) / (rows + sum(errors))``.
        """
        if not _ERROR_KIND.match(kind):
            raise ValueError(f"error kind must match {_ERROR_KIND.pattern}, got {kind!r}")
        with self._lock:
            closed = self._roll_if_due_locked()
            self._open.errors[kind] = self._open.errors.get(kind, 0) + count
        if closed is not None:
            self._emit(closed)

    # ------------------------------------------------------------------ window life

    def add_system(self, stats: SystemStats) -> None:
        """Add system samples (psutil) to the current window."""
        with self._lock:
            self._open.system.add(stats)

    def roll(self, now: float | None = None) -> Window | None:
        """Close the current window if its time is up; returns (and emits) the closed window."""
        closed = None
        with self._lock:
            now = self._clock() if now is None else now
            if now >= self._end:
                closed = self._roll_locked(now)
        if closed is not None:
            self._emit(closed)
        return closed

    def close(self, now: float | None = None) -> Window | None:
        """Close the current window now (shutdown), ending it at ``now``; returns and emits it."""
        with self._lock:
            now = self._clock() if now is None else now
            closed = self._roll_locked(now, end=min(now, self._open.end))
        if closed is not None:
            self._emit(closed)
        return closed

    def snapshot(self) -> Window | None:
        """A copy of the current, still open window (``None`` if nothing was recorded yet)."""
        with self._lock:
            self._flush_locked()
            if self._open.empty():
                return None
            return self._open.to_window(self._layout, self.model_hash, min(self._clock(), self._open.end))

    @property
    def window_end(self) -> float:
        return self._end

    # ------------------------------------------------------------------ internals

    def _new_window(self, now: float) -> _Open:
        start = math.floor(now / self.window_seconds) * self.window_seconds
        return _Open(self._layout, start, start + self.window_seconds)

    def _roll_if_due_locked(self) -> Window | None:
        if not self.auto_roll:
            return None
        now = self._clock()
        return self._roll_locked(now) if now >= self._end else None

    def _roll_locked(self, now: float, end: float | None = None) -> Window | None:
        self._flush_locked()
        old = self._open
        closed = None if old.empty() else old.to_window(self._layout, self.model_hash, old.end if end is None else end)
        self._open = self._new_window(now)
        self._end = self._open.end
        self._reset_checkpoint_locked(now)
        return closed

    def _flush_locked(self) -> None:
        rows_q, calls_q = self._rows, self._calls
        sunk = [_take(rows) for rows, _ in self._sinks]
        if not rows_q and not calls_q and not any(sunk):
            return
        # Take what is there now; calls appended meanwhile wait for the next flush.
        rows = _take(rows_q)
        calls = [calls_q.popleft() for _ in range(len(calls_q))]
        self._sync()
        if self._auto_roll:
            self._rows_since += sum(map(len, sunk)) // 4
        self._buffered = 0
        self._refill()
        w = self._open
        nums: list[Any] = []
        cats: list[Any] = []
        preds: list[Any] = []
        if rows:
            preds += _fold_rows(w, rows, nums, cats)
        if calls:
            c_nums, c_cats, c_preds, c_lats, reqs, ns = zip(*calls)
            w.requests += sum(reqs)
            w.rows += sum(ns)
            if reqs.count(1) == len(reqs):
                w.latency.add_array(c_lats)
            else:
                w.latency.add_array(np.repeat(np.asarray(c_lats, dtype=np.float64), np.asarray(reqs, dtype=np.int64)))
            nums += c_nums
            cats += c_cats
            preds += c_preds
        for got, (_, codes) in zip(sunk, self._sinks):
            if not got:
                continue
            if type(codes) is int:  # proba_sink's rows: bytes in, classes from the probabilities
                n = len(got) // 4
                nums.append(np.frombuffer(b"".join(got[0::4]), np.float32).reshape(n, -1))
                labels = _fold_rows(w, got, [], cats)
                preds.append(np.frombuffer(b"".join(labels), np.float32).reshape(n, codes).argmax(axis=1))
            else:
                labels = _fold_rows(w, got, nums, cats)
                preds.append(np.fromiter(map(codes.__getitem__, labels), np.int64, len(labels)))
        self._bin_locked(nums, cats, preds)

    def _bin_locked(
        self,
        nums: Sequence[np.ndarray | None],
        cats: Sequence[Sequence[Sequence[Any]] | None],
        preds: Sequence[np.ndarray | None],
    ) -> None:
        w, layout = self._open, self._layout
        num = [x for x in nums if x is not None]
        if num and self._n_num:
            w.numeric.add(layout.binner.count(_stack(num)))
        # One column at a time: zip transposes the calls' sequences in C (a generator or
        # itemgetter per call and column cost ~3x as much on a flush of single rows).
        columns = zip(*[c for c in cats if c]) if self._n_cat else ()
        for j, column in enumerate(columns):
            values = itertools.chain.from_iterable(column)
            missing, unseen = count_categorical(layout.cat_index[j], values, w.cat_counts[j])
            w.cat_missing[j] += missing
            w.cat_unseen[j] += unseen
        pred = [p for p in preds if p is not None]
        if pred:
            try:
                joined = _stack(pred)
            except ValueError:  # mixed shapes: flatten each
                joined = np.concatenate(pred, axis=None)
            w.add_predictions(layout, joined.reshape(-1))

    def _emit(self, window: Window) -> None:
        if self.on_window is None:
            return
        try:
            self.on_window(window)
        except Exception:  # recording must never break a prediction
            log.exception("telemetry window %s..%s could not be stored", window.start, window.end)
