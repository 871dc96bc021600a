"""The shadow phase: the candidate model answers the same inputs as the serving one, off the record.

Before a rollout switches a device to a new build, the candidate runs beside the current
model and the two are compared row by row:

* **agreement**: the share of rows where both give the same label (classification), or
  values within 5% of each other (regression);
* **max / mean absolute difference** of the probabilities (columns matched by class
  name) or values;
* each model's **error rate** (rows it refused or failed) and **p95 latency**.

:class:`LiveShadow` does it in ``serve`` on live requests: the request thread only puts the
request body on a bounded queue after its answer is computed (a full queue drops the
sample, counted), and one background thread runs both models on it, so answers never
change and the cost on the request path is one queue put. The thread keeps to a duty cycle
(``budget``, a tenth of one core by default): after spending ``t`` on a sample it skips
new ones for ``t·(1-budget)/budget``, and those that arrive while it works (queued and
compared back to back, they would each rest only for the last one's time: a flood of
requests would take the thread over its budget); skipped samples are counted in ``dropped``.
:func:`compare` does it on a fixed set of rows (``<model> update``, which has no live traffic: the golden probe inputs
of both builds). :meth:`ShadowStats.verdict` says why a candidate fails, if it does.
"""

from __future__ import annotations

import logging
import math
import queue
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:
    from mlpack_edge.monitor_agent.wire import Shadow
    from mlpack_edge.runtime.model import BatchResult, Model

__all__ = ["ShadowStats", "LiveShadow", "compare", "REGRESSION_TOLERANCE"]

log = logging.getLogger("mlpack_edge.runtime")
REGRESSION_TOLERANCE = 0.05  # relative difference under which two regression values "agree"
DEFAULT_BUDGET = 0.1  # share of one core the live comparison may use; samples beyond it are skipped
MIN_LATENCY_CALLS = 50  # fewer timed calls than this: no latency verdict
LATENCY_SLACK_MS = 0.5  # a p95 worse by less than this is not held against the candidate


@dataclass
class ShadowStats:
    rows: int = 0  # rows both models predicted
    agree: int = 0
    max_abs: float = 0.0
    sum_abs: float = 0.0
    inputs: int = 0  # rows offered to both
    current_errors: int = 0
    candidate_errors: int = 0
    dropped: int = 0  # live samples not compared because the queue was full
    current_ms: list[float] = field(default_factory=list)  # per-call latency per row, milliseconds
    candidate_ms: list[float] = field(default_factory=list)
    # What :meth:`take` handed out last (a telemetry window's section is the difference since).
    _taken: tuple[int, ...] = (0, 0, 0, 0, 0, 0, 0)
    _taken_sum_abs: float = 0.0
    _window_max_abs: float = 0.0

    def add(self, cur: BatchResult, cand: BatchResult, cur_s: float, cand_s: float) -> None:
        self.inputs += cur.size
        self.current_errors += len(cur.errors)
        self.candidate_errors += len(cand.errors)
        per = max(1, cur.size)
        self.current_ms.append(cur_s * 1000 / per)
        self.candidate_ms.append(cand_s * 1000 / per)
        # Plain sets, not np.intersect1d: that needs numpy.ma, which the device executable leaves out.
        both = np.asarray(sorted(set(cur.ok.tolist()) & set(cand.ok.tolist())), dtype=np.int64)
        if both.size == 0:
            return
        ci = np.searchsorted(cur.ok, both)
        ki = np.searchsorted(cand.ok, both)
        self.rows += int(both.size)
        if cur.values is not None and cand.values is not None:
            a = np.asarray(cur.values, dtype=float).reshape(len(cur.ok), -1)[ci, 0]
            b = np.asarray(cand.values, dtype=float).reshape(len(cand.ok), -1)[ki, 0]
            diff = np.abs(a - b)
            self.agree += int(np.sum(diff <= REGRESSION_TOLERANCE * np.maximum(1.0, np.abs(a))))
        else:
            assert cur.labels is not None and cand.labels is not None
            la, lb = cur.labels[ci], cand.labels[ki]
            self.agree += int(np.sum(np.asarray([str(x) for x in la]) == np.asarray([str(x) for x in lb])))
            diff = _probability_diff(cur, cand, ci, ki)
        if diff.size:
            self.max_abs = max(self.max_abs, float(np.max(diff)))
            self._window_max_abs = max(self._window_max_abs, float(np.max(diff)))
            self.sum_abs += float(np.sum(diff.mean(axis=1) if diff.ndim == 2 else diff))  # one mean per row

    def candidate_slower_share(self) -> float:
        """Share of the paired calls (both models on the same rows, back to back) where the candidate took longer."""
        pairs = list(zip(self.current_ms, self.candidate_ms))
        return sum(cand > cur for cur, cand in pairs) / len(pairs) if pairs else 0.0

    @property
    def agreement(self) -> float | None:
        return self.agree / self.rows if self.rows else None

    def take(self, candidate: str) -> Shadow | None:
        """The figures gathered since the last ``take``, as a telemetry window's ``shadow``
        section (:class:`~mlpack_edge.monitor_agent.wire.Shadow`); ``None`` when nothing happened."""
        from mlpack_edge.monitor_agent.wire import Shadow

        inputs, rows, agree, dropped, cur_err, cand_err, calls = self._taken
        sec = Shadow(candidate, inputs=self.inputs - inputs, rows=self.rows - rows, agree=self.agree - agree,
                     dropped=self.dropped - dropped, abs_diff_max=self._window_max_abs,
                     abs_diff_sum=max(0.0, self.sum_abs - self._taken_sum_abs))
        sec.current_side.errors = self.current_errors - cur_err
        sec.candidate_side.errors = self.candidate_errors - cand_err
        sec.current_side.latency.add_many([ms / 1000 for ms in self.current_ms[calls:]])
        sec.candidate_side.latency.add_many([ms / 1000 for ms in self.candidate_ms[calls:]])
        self._taken = (self.inputs, self.rows, self.agree, self.dropped, self.current_errors, self.candidate_errors,
                       len(self.candidate_ms))
        self._taken_sum_abs, self._window_max_abs = self.sum_abs, 0.0
        return sec if sec.inputs or sec.dropped else None

    def summary(self) -> dict[str, Any]:
        def p95(xs: list[float]) -> float | None:  # nearest rank, without numpy's quantile machinery
            return round(sorted(xs)[min(len(xs) - 1, int(0.95 * len(xs)))], 4) if xs else None

        n = max(1, self.inputs)
        return {
            "rows": self.rows, "agreement": None if self.agreement is None else round(self.agreement, 6),
            "max_abs_diff": round(self.max_abs, 6), "mean_abs_diff": round(self.sum_abs / max(1, self.rows), 6),
            "current_error_rate": round(self.current_errors / n, 6),
            "candidate_error_rate": round(self.candidate_errors / n, 6),
            "current_p95_ms": p95(self.current_ms), "candidate_p95_ms": p95(self.candidate_ms),
            "dropped": self.dropped,
        }

    def verdict(self, agreement_floor: float, error_factor: float, p95_factor: float) -> str | None:
        """Why the candidate fails the shadow phase (one line), or ``None`` when it passes."""
        s = self.summary()
        if self.rows == 0:
            return None if self.inputs == 0 else "shadow: the candidate predicted none of the rows the current model did"
        if self.agreement is not None and self.agreement < agreement_floor:
            return (f"shadow: agreement {self.agreement:.4f} with the current model is below the floor "
                    f"{agreement_floor:g} ({self.rows} rows, max abs diff {self.max_abs:.4g})")
        cur_rate, cand_rate = s["current_error_rate"], s["candidate_error_rate"]
        if cand_rate > max(cur_rate * error_factor, cur_rate + 0.001):
            return f"shadow: error rate {cand_rate:.4f} vs {cur_rate:.4f} for the current model (factor {error_factor:g})"
        cur_p95, cand_p95 = s["current_p95_ms"], s["candidate_p95_ms"]
        # Sub-millisecond p95s of a few dozen calls are noise on a busy device: judge latency only
        # on enough calls and a difference a client could notice.
        # And a sign test on the paired calls: a slower model is slower in most pairs, while a
        # preempted call (another process, the GIL) lands on either side at random and would
        # otherwise decide a p95 of a few dozen calls by itself.
        if (len(self.candidate_ms) >= MIN_LATENCY_CALLS and cur_p95 and cand_p95 and cand_p95 > cur_p95 * p95_factor
                and cand_p95 - cur_p95 > LATENCY_SLACK_MS and self.candidate_slower_share() > 0.5):
            return f"shadow: p95 latency {cand_p95:.3f} ms vs {cur_p95:.3f} ms for the current model (factor {p95_factor:g})"
        return None


def _probability_diff(cur: BatchResult, cand: BatchResult, ci: np.ndarray, ki: np.ndarray) -> np.ndarray:
    if cur.probabilities is None or cand.probabilities is None:
        return np.zeros(0)
    names_a = [str(c) for c in cur.classes]
    names_b = [str(c) for c in cand.classes]
    if sorted(names_a) != sorted(names_b):
        return np.zeros(0)
    order = [names_b.index(n) for n in names_a]
    return np.abs(cur.probabilities[ci] - cand.probabilities[ki][:, order])


def _run(model: Model, rows: Any) -> tuple[BatchResult, float]:
    t0 = time.perf_counter()
    result = model.predict_rows(rows)
    return result, time.perf_counter() - t0


def _warm(model: Model, row: Any) -> None:
    try:
        model.predict_rows([row])
    except Exception:  # a row it cannot take: the timed runs will say so
        pass


def compare(current: Model, candidate: Model, rows: Sequence[dict[str, Any]], stats: ShadowStats | None = None) -> ShadowStats:
    """Both models on ``rows`` (one row per call, like live traffic); the statistics."""
    stats = stats if stats is not None else ShadowStats()
    if rows:  # a session's first run is slow (allocation, kernel choice): keep it out of the timings
        _warm(current, rows[0])
        _warm(candidate, rows[0])
    for i, row in enumerate(rows):
        if i % 2:  # alternate who runs first: the second call finds the row's data warm in the caches
            cand, t_cand = _run(candidate, [row])
            cur, t_cur = _run(current, [row])
        else:
            cur, t_cur = _run(current, [row])
            cand, t_cand = _run(candidate, [row])
        stats.add(cur, cand, t_cur, t_cand)
    return stats


class LiveShadow:
    """The candidate on ``serve``'s live inputs, in one background thread (see the module doc)."""

    def __init__(self, current: Model, candidate: Model, offer: dict[str, Any], started: float,
                 clock: Callable[[], float] = time.time, max_queue: int = 256, worker: bool = True,
                 budget: float = DEFAULT_BUDGET) -> None:
        self.current, self.candidate, self.offer = current, candidate, offer
        self.started, self.clock = started, clock
        self.stats = ShadowStats()
        self.budget = budget  # share of one core the comparison may use
        self._resume_at = 0.0  # perf_counter time before which new samples are skipped (duty cycle)
        self._turn = 0
        self._queue: queue.Queue[Any] = queue.Queue(max_queue)
        self._lock = threading.Lock()
        self._thread = threading.Thread(target=self._work, name="mlpack-shadow", daemon=True)
        if worker:  # False: nothing drains the queue (a test of the bound, or a caller running _work itself)
            self._thread.start()

    @property
    def duration(self) -> float:
        return float(self.offer.get("shadow") or 0.0)

    def done(self) -> bool:
        return self.clock() - self.started >= self.duration

    def submit(self, payload: Any) -> None:
        """A request body the serving model just answered (a row or a list of rows); never blocks.

        Skipped (and counted) while the worker is over its budget or the queue is full."""
        if time.perf_counter() < self._resume_at:
            self._skip()
            return
        try:
            self._queue.put_nowait(payload)
        except queue.Full:
            self._skip()

    def _skip(self) -> None:
        with self._lock:
            self.stats.dropped += 1

    def _work(self) -> None:
        while True:
            payload = self._queue.get()
            if payload is None:
                return
            if time.perf_counter() < self._resume_at:  # queued before this rest began: skipped too
                self._skip()
                continue
            if self.budget < 1.0:  # busy: new samples are skipped, not queued behind this one
                self._resume_at = math.inf
            rows = payload if isinstance(payload, list) else [payload]
            started = time.perf_counter()
            try:
                self._compare(rows)
            finally:
                spent = time.perf_counter() - started
                # Duty cycle: after spending t, rest t * (1 - budget) / budget before the next sample.
                self._resume_at = time.perf_counter() + spent * (1.0 - self.budget) / self.budget

    def _compare(self, rows: list[Any]) -> None:
        if self._turn == 0:  # first sample: warm both sessions, untimed
            _warm(self.current, rows[0])
            _warm(self.candidate, rows[0])
        self._turn += 1
        try:
            if self._turn % 2:  # alternate who runs first, as in compare()
                try:
                    cand, t_cand = _run(self.candidate, rows)
                except Exception:  # the candidate failing on an input is an error of its own
                    self._candidate_failed(len(rows))
                    return
                cur, t_cur = _run(self.current, rows)
            else:
                cur, t_cur = _run(self.current, rows)
                try:
                    cand, t_cand = _run(self.candidate, rows)
                except Exception:
                    self._candidate_failed(len(rows))
                    return
            with self._lock:
                self.stats.add(cur, cand, t_cur, t_cand)
        except Exception:  # an input the current model cannot take either: not the candidate's fault
            log.debug("shadow: input skipped", exc_info=True)

    def _candidate_failed(self, n: int) -> None:
        with self._lock:
            self.stats.inputs += n
            self.stats.candidate_errors += n

    def take_window(self) -> Shadow | None:
        """The comparison since the last call, as a ``shadow`` telemetry section (see :meth:`ShadowStats.take`)."""
        with self._lock:
            return self.stats.take(self.candidate.content_hash)

    def stop(self) -> ShadowStats:
        if self._thread.is_alive():
            self._queue.put(None)
            self._thread.join(timeout=10)
        return self.stats
