"""The telemetry wire format shared by the device agent and the collector (schema 1).

A *window* is everything one device learned about one model over a time span, kept
as counts so that windows merge by addition: merging windows across time or devices
gives exactly the window of the combined traffic (sequence numbers and time bounds
become ranges).

A *batch* is what one upload carries (``POST /api/v1/ingest``, gzip JSON)::

    {
      "schema": 1,
      "device": "press-07",
      "models": {"<content hash>": {"name": "iris", "version": "1.2.0",
                                     "profile": {... mlpack.profile/1 ...}}},
      "windows": [Window.to_dict(), ...],
      "audit": [{"seq": 3, "time": 1764..., "event": "install", "detail": {...}}, ...],
      "outbox": {"produced": 120, "delivered": 100, "pending": 10, "merged": 10,
                 "dropped": 0, "dead_letter": 0, "dropped_rows": 0}
    }

The exchange (``POST /api/v1/ingest``, ``Content-Encoding: gzip``,
``Content-Type: application/json``, ``Authorization: Bearer <token of batch.device>``):

* 200 ``{"stored": [seq...], "duplicates": [seq...]}``, sent only after the collector's
  commit; the agent deletes exactly the windows listed. A window whose
  ``(device, seq, seq_last)`` is already stored is a duplicate (success, not stored
  twice). The 200 also acknowledges the batch's audit rows, which are idempotent per
  ``(device, audit seq)``; audit sequence numbers are a separate per-device counter.
* 401 bad/unknown/revoked token, 400 malformed body, 413 too large, 415 encoding,
  422 schema violation (message names the field), 409 a window overlaps a stored range
  differently, 429/503 with optional ``Retry-After``. Error bodies are ``{"error": msg}``.
* ``models`` carries the entry of each model the batch's windows reference that the
  collector may not know yet: the collector needs a window's model from this batch, an
  earlier upload or ``add-model``, and refuses a window of an unknown model with 422
  (``windows[i].model: unknown model ...``). The agent sends an entry (~8 KiB of
  profile for 20 features, which the collector would otherwise decode and compare
  with every upload) until the collector has acknowledged a batch carrying it, and
  remembers that per collector URL; on a 422 for a batch that left models out (a
  collector restored from an older backup) it resends the same windows with them.
* ``outbox`` is the device's accounting at the time the batch was taken (original windows:
  ``produced = delivered + pending + merged + dropped + dead_letter``); a batch with no
  windows may be sent just to report new drops. The agent never merges a window it
  has sent once, and only merges consecutive sequence numbers, so a correct agent
  never causes a 409.

Window (``Window.to_dict``)::

    {
      "model": "<content hash>",            # sha256 of the bundle's manifest.json
      "seq": 17, "seq_last": 17,            # per-device sequence range; (device, seq) is the
                                            # idempotency key, seq_last > seq after merging
      "start": 1764000000.0, "end": 1764000060.0,   # epoch seconds
      "requests": 12, "rows": 340,
      "errors": {"validation": 2, "runtime": 0},
      "latency": {"alpha": 0.01, "index": [...], "counts": [...]},   # per request, seconds
      "features": {"age": {"bins": [..], "missing": 0, "below": 1, "above": 0, "unseen": 0}},
      "predictions": {"bins": [..], "missing": 0, "below": 0, "above": 0, "unseen": 0},
      "system": {"samples": 6, "proc_cpu": 31.0, "proc_rss_max": 5.1e7, "proc_rss_sum": 3.0e8,
                 "cpu": 120.5, "mem": 300.0, "disk_free_min": 1.2e10}
    }

``feedback`` (optional: only windows that carry ground-truth labels; older agents and
windows without labels leave it out)::

      "feedback": {"labels": 40,            # label records received in the window, all outcomes
                   "matched": 30,           # joined to a prediction: counted below
                   "unmatched": 4,          # no prediction with that id (unknown, evicted, or not yet made)
                   "late": 2,               # the prediction was older than the join window
                   "duplicate": 3,          # a second label for one id: the first one wins
                   "unknown_label": 1,      # not one of the model's classes / not a finite number
                   "confusion": [[12, 1], [2, 15]],   # classifiers: rows true class, columns predicted,
                                                       # in the order of predictions.bins (the classes)
                   "residuals": {"count": 30, "sum": -1.5, "sum_sq": 80.2, "abs_sum": 41.0,
                                 "abs_error": {"alpha": 0.01, "index": [...], "counts": [...]}}}  # regression

``shadow`` (optional: only windows of a device running a rollout's candidate beside the
serving model, ``serve``'s shadow phase; every other window leaves it out)::

      "shadow": {"candidate": {"model": "<content hash>", "errors": 0,   # the candidate's refusals/failures
                               "latency": {"alpha": 0.01, ...}},         # per call and row, seconds
                 "current": {"errors": 0, "latency": {...}},             # the serving model on the same calls
                 "inputs": 120,        # rows offered to both
                 "rows": 118,          # rows both predicted: compared
                 "agree": 117,         # of those, same label (regression: within 5%)
                 "abs_diff_max": 0.03, "abs_diff_sum": 0.8,   # |score difference|: max, and sum of per-row means
                 "dropped": 4}         # live samples skipped (CPU budget or full queue)

Agreement is ``agree / rows``, the mean absolute difference ``abs_diff_sum / rows``;
counts and sums merge by addition, the max by max.

``samples`` (optional, only with the opt-in capture: real input rows, personal data)::

      "samples": [{"day": 20425, "slot": 3,       # UTC day and reservoir slot: the key at the
                   "time": 1764..., "id": "...",   # collector (a later copy replaces an earlier one)
                   "row": {"age": 41.0, "colour": "red"},   # features (excluded ones left out)
                   "output": "yes", "label": null}]        # the prediction, the label once known

Labels are counted in the window during which they arrive (not that of their prediction),
so the counts merge by addition like everything else; error = prediction - label.

``features.*.bins`` has one count per bin of the model's reference profile (numeric:
``len(edges) + 1``; categorical: one per category), and ``predictions.bins`` one per
class (classification) or per bin of the prediction profile (regression). ``system``
holds sums over ``samples`` (CPU percentages, memory percentage, RSS bytes) plus
``proc_rss_max`` and ``disk_free_min``, so averages are ``sum / samples``.
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterable, Mapping
from typing import Any

from mlpack_edge._record import Record
from mlpack_edge.monitor_agent.histogram import ALPHA, MAX_INDEX, LatencyHistogram

__all__ = [
    "SCHEMA_VERSION",
    "MAX_WINDOWS_PER_BATCH",
    "WireError",
    "BinCounts",
    "SystemStats",
    "Window",
    "Feedback",
    "Shadow",
    "ShadowSide",
    "Residuals",
    "merge_windows",
    "validate_batch",
]

SCHEMA_VERSION = 1
MAX_WINDOWS_PER_BATCH = 500
_ERROR_KIND = re.compile(r"^[a-z][a-z0-9_]{0,31}$")
_HASH = re.compile(r"[0-9a-f]{64}")


class WireError(ValueError):
    """A payload does not follow the wire schema; the message names the field."""


#: Largest count or sequence number: they are stored as 64-bit integers (SQLite, PostgreSQL,
#: numpy), and 2**53-1 is the largest integer every JSON reader (JavaScript's included)
#: and JSON Schema validator compares exactly.
MAX_COUNT = 2**53 - 1


def _count(v: Any, where: str) -> int:
    if type(v) is float and v.is_integer() and 0 <= v <= MAX_COUNT:
        return int(v)  # JSON does not tell 7 from 7.0, and some encoders write the latter
    if not isinstance(v, int) or isinstance(v, bool):
        raise WireError(f"{where}: expected an integer count, got {type(v).__name__}")
    if v < 0:
        raise WireError(f"{where}: counts must be non-negative, got {v}")
    if v > MAX_COUNT:
        raise WireError(f"{where}: at most 2**53-1, got a {len(str(v))}-digit number")
    return v


def _number(v: Any, where: str, minimum: float | None = 0.0) -> float:
    if not isinstance(v, (int, float)) or isinstance(v, bool):
        raise WireError(f"{where}: expected a finite number")
    try:
        finite = math.isfinite(v)
    except OverflowError:  # an integer too large for a float
        finite = False
    if not finite:
        raise WireError(f"{where}: expected a finite number")
    if minimum is not None and v < minimum:
        raise WireError(f"{where}: must be >= {minimum}, got {v}")
    return float(v)


# Fast paths. The collector parses every window of every upload, and building a field
# name per count (``windows[3].features.age.bins[7]``) used to cost more than the checks
# themselves. The helpers below accept the common, valid case with C-level loops and
# build names only when something is wrong: they then defer to ``_count``/``_number``,
# so what is accepted and every error text stay exactly those of the checks above.
_ONLY_INT = {int}
_INF = math.inf


def _all_counts(values: list[Any]) -> bool:
    """True when every item is a plain non-negative ``int`` (a quick yes; ``False`` means "check one by one")."""
    return not values or (set(map(type, values)) == _ONLY_INT and min(values) >= 0 and max(values) <= MAX_COUNT)


def _counts(values: list[Any], where: str, key: str) -> list[int]:
    """``values`` (the list at ``where.key``) as counts."""
    if _all_counts(values):
        return list(values)
    return [_count(v, f"{where}.{key}[{i}]") for i, v in enumerate(values)]


def _count_at(d: Mapping[str, Any], key: str, where: str, default: Any = 0) -> int:
    """``d[key]`` (``default`` when absent) as a count."""
    v = d.get(key, default)
    if type(v) is int and 0 <= v <= MAX_COUNT:
        return v
    return _count(v, f"{where}.{key}")


def _number_at(d: Mapping[str, Any], key: str, where: str, default: Any = 0.0) -> float:
    """``d[key]`` (``default`` when absent) as a finite number >= 0."""
    v = d.get(key, default)
    if type(v) is float and 0.0 <= v < _INF:  # NaN fails both comparisons
        return v
    return _number(v, f"{where}.{key}")


def _latency(raw: Any, where: str) -> LatencyHistogram:
    """A window's ``latency``: the fast path takes well-formed buckets (no repeated index);
    anything else goes through :meth:`LatencyHistogram.from_dict` and its messages."""
    if type(raw) is dict and raw.get("alpha", ALPHA) == ALPHA:
        index, counts = raw.get("index"), raw.get("counts")
        if (
            type(index) is list
            and type(counts) is list
            and len(index) == len(counts)
            and (not index or (set(map(type, index)) == _ONLY_INT and -MAX_INDEX <= min(index) and max(index) <= MAX_INDEX))
            and _all_counts(counts)
        ):
            buckets = dict(zip(index, counts))
            if len(buckets) == len(index):
                return LatencyHistogram(buckets)
    if not raw:
        raw = {"index": [], "counts": []}
    elif not isinstance(raw, Mapping):
        raise WireError(f"{where}.latency: expected an object")
    try:
        return LatencyHistogram.from_dict(raw)
    except KeyError as exc:
        raise WireError(f"{where}.latency.{exc.args[0]}: missing (latency holds index and counts, or nothing)") from None
    except (TypeError, ValueError) as exc:
        raise WireError(f"{where}.latency: {exc}") from None


class BinCounts(Record):
    """One feature's (or the predictions') counts in a window: per bin, and the values no bin holds."""

    __slots__ = ("bins", "missing", "below", "above", "unseen")
    _fields = __slots__

    def __init__(self, bins: list[int], missing: int = 0, below: int = 0, above: int = 0, unseen: int = 0) -> None:
        self.bins = bins
        self.missing = missing
        self.below = below
        self.above = above
        self.unseen = unseen

    def add(self, other: BinCounts, where: str = "bins") -> None:
        if len(self.bins) != len(other.bins):
            raise WireError(f"{where}: cannot merge {len(other.bins)} bins into {len(self.bins)}")
        self.bins = [a + b for a, b in zip(self.bins, other.bins)]
        self.missing += other.missing
        self.below += other.below
        self.above += other.above
        self.unseen += other.unseen

    @property
    def total(self) -> int:
        return sum(self.bins)

    def to_dict(self) -> dict[str, Any]:
        return {
            "bins": list(self.bins),
            "missing": self.missing,
            "below": self.below,
            "above": self.above,
            "unseen": self.unseen,
        }

    @classmethod
    def from_dict(cls, d: Any, where: str) -> BinCounts:
        if type(d) is not dict and not isinstance(d, Mapping):
            raise WireError(f"{where}: expected an object")
        bins = d.get("bins")
        if type(bins) is not list:
            raise WireError(f"{where}.bins: expected a list of counts")
        get = d.get
        extras = [get("missing", 0), get("below", 0), get("above", 0), get("unseen", 0)]
        if _all_counts(bins + extras):
            return cls(list(bins), *extras)
        return cls(
            bins=_counts(bins, where, "bins"),
            missing=_count_at(d, "missing", where),
            below=_count_at(d, "below", where),
            above=_count_at(d, "above", where),
            unseen=_count_at(d, "unseen", where),
        )


class SystemStats(Record):
    """Sums over ``samples`` system samples (module docstring), the largest RSS and least free disk."""

    __slots__ = ("samples", "proc_cpu", "proc_rss_sum", "proc_rss_max", "cpu", "mem", "disk_free_min")
    _fields = __slots__

    def __init__(
        self,
        samples: int = 0,
        proc_cpu: float = 0.0,
        proc_rss_sum: float = 0.0,
        proc_rss_max: float = 0.0,
        cpu: float = 0.0,
        mem: float = 0.0,
        disk_free_min: float | None = None,
    ) -> None:
        self.samples = samples
        self.proc_cpu = proc_cpu
        self.proc_rss_sum = proc_rss_sum
        self.proc_rss_max = proc_rss_max
        self.cpu = cpu
        self.mem = mem
        self.disk_free_min = disk_free_min

    def add(self, other: SystemStats) -> None:
        self.samples += other.samples
        self.proc_cpu += other.proc_cpu
        self.proc_rss_sum += other.proc_rss_sum
        self.proc_rss_max = max(self.proc_rss_max, other.proc_rss_max)
        self.cpu += other.cpu
        self.mem += other.mem
        if other.disk_free_min is not None:
            self.disk_free_min = (
                other.disk_free_min
                if self.disk_free_min is None
                else min(self.disk_free_min, other.disk_free_min)
            )

    def to_dict(self) -> dict[str, Any]:
        return {
            "samples": self.samples,
            "proc_cpu": self.proc_cpu,
            "proc_rss_sum": self.proc_rss_sum,
            "proc_rss_max": self.proc_rss_max,
            "cpu": self.cpu,
            "mem": self.mem,
            "disk_free_min": self.disk_free_min,
        }

    @classmethod
    def from_dict(cls, d: Any, where: str) -> SystemStats:
        if type(d) is not dict and not isinstance(d, Mapping):
            raise WireError(f"{where}: expected an object")
        return cls(
            samples=_count_at(d, "samples", where),
            proc_cpu=_number_at(d, "proc_cpu", where),
            proc_rss_sum=_number_at(d, "proc_rss_sum", where),
            proc_rss_max=_number_at(d, "proc_rss_max", where),
            cpu=_number_at(d, "cpu", where),
            mem=_number_at(d, "mem", where),
            disk_free_min=None if d.get("disk_free_min") is None else _number_at(d, "disk_free_min", where),
        )


class Residuals(Record):
    """Regression errors (``prediction - label``) as sums, so they merge by addition."""

    __slots__ = ("count", "sum", "sum_sq", "abs_sum", "abs_error")
    _fields = __slots__

    def __init__(
        self,
        count: int = 0,
        sum: float = 0.0,  # noqa: A002 - the wire field's name
        sum_sq: float = 0.0,
        abs_sum: float = 0.0,
        abs_error: LatencyHistogram | None = None,
    ) -> None:
        self.count = count
        self.sum = sum
        self.sum_sq = sum_sq
        self.abs_sum = abs_sum
        self.abs_error = LatencyHistogram() if abs_error is None else abs_error

    def add(self, other: Residuals) -> None:
        self.count += other.count
        self.sum += other.sum
        self.sum_sq += other.sum_sq
        self.abs_sum += other.abs_sum
        self.abs_error.merge(other.abs_error)

    def to_dict(self) -> dict[str, Any]:
        return {
            "count": self.count,
            "sum": self.sum,
            "sum_sq": self.sum_sq,
            "abs_sum": self.abs_sum,
            "abs_error": self.abs_error.to_dict(),
        }

    @classmethod
    def from_dict(cls, d: Any, where: str) -> Residuals:
        if not isinstance(d, Mapping):
            raise WireError(f"{where}: expected an object")
        hist = d.get("abs_error")
        return cls(
            count=_count_at(d, "count", where),
            sum=_number(d.get("sum", 0.0), f"{where}.sum", None),
            sum_sq=_number_at(d, "sum_sq", where),
            abs_sum=_number_at(d, "abs_sum", where),
            abs_error=_abs_hist(hist, f"{where}.abs_error"),
        )


def _abs_hist(raw: Any, where: str) -> LatencyHistogram:
    if not raw:
        return LatencyHistogram()
    if not isinstance(raw, Mapping):
        raise WireError(f"{where}: expected an object")
    try:
        return LatencyHistogram.from_dict(raw)
    except KeyError as exc:
        raise WireError(f"{where}.{exc.args[0]}: missing") from None
    except (TypeError, ValueError) as exc:
        raise WireError(f"{where}: {exc}") from None


#: Generous: the outbox merges windows under pressure (their samples with them), and a batch's
#: size is bounded by the collector's body limits anyway.
MAX_SAMPLES_PER_WINDOW = 100_000
_SAMPLE_VALUE = (str, int, float, type(None))


def _samples(raw: Any, where: str) -> list[dict[str, Any]]:
    """A window's ``samples``: checked shape (the collector checks the row's feature names)."""
    if type(raw) is not list:
        raise WireError(f"{where}: expected a list")
    if len(raw) > MAX_SAMPLES_PER_WINDOW:
        raise WireError(f"{where}: at most {MAX_SAMPLES_PER_WINDOW} per window, got {len(raw)}")
    out = []
    for i, s in enumerate(raw):
        at = f"{where}[{i}]"
        if not isinstance(s, Mapping):
            raise WireError(f"{at}: expected an object")
        row = s.get("row")
        if not isinstance(row, Mapping) or not all(
            isinstance(k, str) and isinstance(v, _SAMPLE_VALUE) and not isinstance(v, bool) for k, v in row.items()
        ):
            raise WireError(f"{at}.row: expected an object of feature values (numbers, strings or null)")
        for key in ("output", "label"):
            v = s.get(key)
            if not isinstance(v, _SAMPLE_VALUE) or isinstance(v, bool):
                raise WireError(f"{at}.{key}: expected a number, a string or null")
        pid = s.get("id")
        if not isinstance(pid, str) or not 0 < len(pid) <= 200:
            raise WireError(f"{at}.id: expected the prediction id")
        out.append({"day": _count_at(s, "day", at, None), "slot": _count_at(s, "slot", at, None),
                    "time": _number_at(s, "time", at, None), "id": pid, "row": dict(row),
                    "output": s.get("output"), "label": s.get("label")})
    return out


_SHADOW_COUNTS = ("inputs", "rows", "agree", "dropped")


class ShadowSide(Record):
    """One model of a shadow comparison: its errors and per-call latency (seconds per row)."""

    __slots__ = ("errors", "latency")
    _fields = __slots__

    def __init__(self, errors: int = 0, latency: LatencyHistogram | None = None) -> None:
        self.errors = errors
        self.latency = LatencyHistogram() if latency is None else latency


class Shadow(Record):
    """A rollout candidate run beside the serving model over one window (module docstring)."""

    __slots__ = ("candidate", "inputs", "rows", "agree", "dropped", "abs_diff_max", "abs_diff_sum",
                 "candidate_side", "current_side")
    _fields = __slots__

    def __init__(
        self,
        candidate: str,  # the candidate's content hash
        inputs: int = 0,
        rows: int = 0,
        agree: int = 0,
        dropped: int = 0,
        abs_diff_max: float = 0.0,
        abs_diff_sum: float = 0.0,
        candidate_side: ShadowSide | None = None,
        current_side: ShadowSide | None = None,
    ) -> None:
        self.candidate = candidate
        self.inputs = inputs
        self.rows = rows
        self.agree = agree
        self.dropped = dropped
        self.abs_diff_max = abs_diff_max
        self.abs_diff_sum = abs_diff_sum
        self.candidate_side = ShadowSide() if candidate_side is None else candidate_side
        self.current_side = ShadowSide() if current_side is None else current_side

    @property
    def agreement(self) -> float | None:
        return self.agree / self.rows if self.rows else None

    def add(self, other: Shadow, where: str = "shadow") -> None:
        if other.candidate != self.candidate:
            raise WireError(f"{where}.candidate.model: cannot merge candidate {other.candidate[:12]} into {self.candidate[:12]}")
        for k in _SHADOW_COUNTS:
            setattr(self, k, getattr(self, k) + getattr(other, k))
        self.abs_diff_max = max(self.abs_diff_max, other.abs_diff_max)
        self.abs_diff_sum += other.abs_diff_sum
        for mine, theirs in ((self.candidate_side, other.candidate_side), (self.current_side, other.current_side)):
            mine.errors += theirs.errors
            mine.latency.merge(theirs.latency)

    def to_dict(self) -> dict[str, Any]:
        return {
            "candidate": {"model": self.candidate, "errors": self.candidate_side.errors,
                          "latency": self.candidate_side.latency.to_dict()},
            "current": {"errors": self.current_side.errors, "latency": self.current_side.latency.to_dict()},
            **{k: getattr(self, k) for k in _SHADOW_COUNTS},
            "abs_diff_max": self.abs_diff_max, "abs_diff_sum": self.abs_diff_sum,
        }

    @classmethod
    def from_dict(cls, d: Any, where: str) -> Shadow:
        if not isinstance(d, Mapping):
            raise WireError(f"{where}: expected an object")
        sides = []
        for key in ("candidate", "current"):
            side = d.get(key, {})
            if not isinstance(side, Mapping):
                raise WireError(f"{where}.{key}: expected an object")
            sides.append(ShadowSide(_count_at(side, "errors", f"{where}.{key}"), _latency(side.get("latency"), f"{where}.{key}")))
        model = d["candidate"].get("model") if isinstance(d.get("candidate"), Mapping) else None
        if not isinstance(model, str) or not _HASH.fullmatch(model):
            raise WireError(f"{where}.candidate.model: expected the candidate's sha256 content hash")
        out = cls(model, **{k: _count_at(d, k, where) for k in _SHADOW_COUNTS},
                  abs_diff_max=_number_at(d, "abs_diff_max", where), abs_diff_sum=_number_at(d, "abs_diff_sum", where),
                  candidate_side=sides[0], current_side=sides[1])
        if out.agree > out.rows or out.rows > out.inputs:
            raise WireError(f"{where}: expected agree <= rows <= inputs, got {out.agree}, {out.rows}, {out.inputs}")
        return out


_FEEDBACK_COUNTS = ("labels", "matched", "unmatched", "late", "duplicate", "unknown_label")


class Feedback(Record):
    """Ground truth joined on the device in one window (see the module docstring)."""

    __slots__ = ("labels", "matched", "unmatched", "late", "duplicate", "unknown_label", "confusion", "residuals")
    _fields = __slots__

    def __init__(
        self,
        labels: int = 0,
        matched: int = 0,
        unmatched: int = 0,
        late: int = 0,
        duplicate: int = 0,
        unknown_label: int = 0,
        confusion: list[list[int]] | None = None,
        residuals: Residuals | None = None,
    ) -> None:
        self.labels = labels
        self.matched = matched
        self.unmatched = unmatched
        self.late = late
        self.duplicate = duplicate
        self.unknown_label = unknown_label
        self.confusion = confusion
        self.residuals = residuals

    def empty(self) -> bool:
        return self.labels == 0

    def add(self, other: Feedback, where: str = "feedback") -> None:
        for k in _FEEDBACK_COUNTS:
            setattr(self, k, getattr(self, k) + getattr(other, k))
        if other.confusion is not None:
            if self.confusion is None:
                self.confusion = [list(r) for r in other.confusion]
            elif len(self.confusion) != len(other.confusion):
                raise WireError(f"{where}.confusion: cannot merge {len(other.confusion)} classes into {len(self.confusion)}")
            else:
                self.confusion = [[a + b for a, b in zip(r, s)] for r, s in zip(self.confusion, other.confusion)]
        if other.residuals is not None:
            if self.residuals is None:
                self.residuals = Residuals()
            self.residuals.add(other.residuals)

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {k: getattr(self, k) for k in _FEEDBACK_COUNTS}
        if self.confusion is not None:
            out["confusion"] = [list(r) for r in self.confusion]
        if self.residuals is not None:
            out["residuals"] = self.residuals.to_dict()
        return out

    @classmethod
    def from_dict(cls, d: Any, where: str) -> Feedback:
        if not isinstance(d, Mapping):
            raise WireError(f"{where}: expected an object")
        counts = {k: _count_at(d, k, where) for k in _FEEDBACK_COUNTS}
        confusion = None
        raw = d.get("confusion")
        if raw is not None:
            if type(raw) is not list or not all(type(r) is list and len(r) == len(raw) for r in raw):
                raise WireError(f"{where}.confusion: expected a square list of lists of counts")
            confusion = [_counts(r, where, f"confusion[{i}]") for i, r in enumerate(raw)]
        res = d.get("residuals")
        residuals = None if res is None else Residuals.from_dict(res, f"{where}.residuals")
        fb = cls(**counts, confusion=confusion, residuals=residuals)
        joined = (sum(map(sum, confusion)) if confusion is not None else 0) + (residuals.count if residuals else 0)
        if joined != fb.matched:
            raise WireError(f"{where}.matched: {fb.matched} but the confusion matrix/residuals hold {joined} pairs")
        if fb.matched + fb.unmatched + fb.late + fb.duplicate + fb.unknown_label != fb.labels:
            raise WireError(f"{where}.labels: must equal matched + unmatched + late + duplicate + unknown_label")
        return fb


class Window(Record):
    """One device's counts for one model over a time span (module docstring: the wire fields).

    A plain class rather than a dataclass: every monitored ``predict`` imports it at start
    (:mod:`mlpack_edge._record`); fields, their order, ``==`` and ``repr`` are a dataclass's.
    """

    __slots__ = (
        "model", "seq", "start", "end", "seq_last", "requests", "rows", "errors", "latency",
        "features", "predictions", "system", "feedback", "samples", "shadow",
    )
    _fields = __slots__
    model: str
    seq: int
    start: float
    end: float
    seq_last: int | None
    requests: int
    rows: int
    errors: dict[str, int]
    latency: LatencyHistogram
    features: dict[str, BinCounts]
    predictions: BinCounts | None
    system: SystemStats
    feedback: Feedback | None
    samples: list[dict[str, Any]] | None
    shadow: Shadow | None

    def __init__(
        self,
        model: str,
        seq: int,
        start: float,
        end: float,
        seq_last: int | None = None,
        requests: int = 0,
        rows: int = 0,
        errors: dict[str, int] | None = None,
        latency: LatencyHistogram | None = None,
        features: dict[str, BinCounts] | None = None,
        predictions: BinCounts | None = None,
        system: SystemStats | None = None,
        feedback: Feedback | None = None,
        samples: list[dict[str, Any]] | None = None,
        shadow: Shadow | None = None,
    ) -> None:
        self.model = model
        self.seq = seq
        self.start = start
        self.end = end
        self.seq_last = seq if seq_last is None else seq_last
        self.requests = requests
        self.rows = rows
        self.errors = {} if errors is None else errors
        self.latency = LatencyHistogram() if latency is None else latency
        self.features = {} if features is None else features
        self.predictions = predictions
        self.system = SystemStats() if system is None else system
        self.feedback = feedback
        self.samples = samples
        self.shadow = shadow

    @property
    def merged_count(self) -> int:
        """How many original windows this one stands for (1 unless merged)."""
        assert self.seq_last is not None
        return self.seq_last - self.seq + 1

    def merge(self, other: Window) -> None:
        """Add ``other`` into this window (same model; bins must match)."""
        if other.model != self.model:
            raise WireError(f"cannot merge windows of models {self.model} and {other.model}")
        assert self.seq_last is not None and other.seq_last is not None
        self.seq = min(self.seq, other.seq)
        self.seq_last = max(self.seq_last, other.seq_last)
        self.start = min(self.start, other.start)
        self.end = max(self.end, other.end)
        self.requests += other.requests
        self.rows += other.rows
        for k, v in other.errors.items():
            self.errors[k] = self.errors.get(k, 0) + v
        self.latency.merge(other.latency)
        for name, counts in other.features.items():
            mine = self.features.get(name)
            if mine is None:
                self.features[name] = BinCounts(**counts.to_dict())
            else:
                mine.add(counts, f"features.{name}")
        if other.predictions is not None:
            if self.predictions is None:
                self.predictions = BinCounts(**other.predictions.to_dict())
            else:
                self.predictions.add(other.predictions, "predictions")
        self.system.add(other.system)
        if other.feedback is not None:
            if self.feedback is None:
                self.feedback = Feedback()
            self.feedback.add(other.feedback)
        if other.samples:
            self.samples = [*(self.samples or []), *other.samples]
        if other.shadow is not None:
            if self.shadow is None:
                self.shadow = Shadow(other.shadow.candidate)
            self.shadow.add(other.shadow)

    def to_dict(self) -> dict[str, Any]:
        out = {
            "model": self.model,
            "seq": self.seq,
            "seq_last": self.seq_last,
            "start": self.start,
            "end": self.end,
            "requests": self.requests,
            "rows": self.rows,
            "errors": dict(sorted(self.errors.items())),
            "latency": self.latency.to_dict(),
            "features": {k: v.to_dict() for k, v in sorted(self.features.items())},
            "predictions": self.predictions.to_dict() if self.predictions is not None else None,
            "system": self.system.to_dict(),
        }
        if self.feedback is not None:  # left out otherwise: stored bodies of older windows stay byte-equal
            out["feedback"] = self.feedback.to_dict()
        if self.samples:
            out["samples"] = [dict(x) for x in self.samples]
        if self.shadow is not None:  # left out otherwise, like feedback
            out["shadow"] = self.shadow.to_dict()
        return out

    @classmethod
    def from_dict(cls, d: Any, where: str = "window") -> Window:
        """Strict parse: every defect is a ``WireError`` naming the field."""
        if type(d) is not dict and not isinstance(d, Mapping):
            raise WireError(f"{where}: expected an object")
        model = d.get("model")
        if not isinstance(model, str) or not _HASH.fullmatch(model):
            raise WireError(f"{where}.model: expected a sha256 hex content hash")
        seq = _count_at(d, "seq", where, None)
        seq_last = _count_at(d, "seq_last", where, seq)
        if seq_last < seq:
            raise WireError(f"{where}.seq_last: must be >= seq ({seq}), got {seq_last}")
        start = _number_at(d, "start", where, None)
        end = _number_at(d, "end", where, None)
        if end < start:
            raise WireError(f"{where}.end: must be >= start")
        errors_raw = d.get("errors", {})
        if not isinstance(errors_raw, Mapping):
            raise WireError(f"{where}.errors: expected an object")
        errors: dict[str, int] = {}
        for k, v in errors_raw.items():
            if not isinstance(k, str) or not _ERROR_KIND.match(k):
                raise WireError(f"{where}.errors: invalid error kind {k!r}")
            errors[k] = v if type(v) is int and 0 <= v <= MAX_COUNT else _count(v, f"{where}.errors.{k}")
        latency = _latency(d.get("latency"), where)
        feats_raw = d.get("features", {})
        if not isinstance(feats_raw, Mapping):
            raise WireError(f"{where}.features: expected an object")
        features = {
            str(k): BinCounts.from_dict(v, f"{where}.features.{k}") for k, v in feats_raw.items()
        }
        pred_raw = d.get("predictions")
        predictions = None if pred_raw is None else BinCounts.from_dict(pred_raw, f"{where}.predictions")
        system = SystemStats.from_dict(d.get("system", {}), f"{where}.system")
        requests = _count_at(d, "requests", where)
        rows = _count_at(d, "rows", where)
        fb_raw = d.get("feedback")
        feedback = None if fb_raw is None else Feedback.from_dict(fb_raw, f"{where}.feedback")
        samples_raw = d.get("samples")
        samples = None if samples_raw is None else _samples(samples_raw, f"{where}.samples")
        shadow_raw = d.get("shadow")
        shadow = None if shadow_raw is None else Shadow.from_dict(shadow_raw, f"{where}.shadow")
        return cls(
            model=model,
            seq=seq,
            seq_last=seq_last,
            start=start,
            end=end,
            requests=requests,
            rows=rows,
            errors=errors,
            latency=latency,
            features=features,
            predictions=predictions,
            system=system,
            feedback=feedback,
            samples=samples,
            shadow=shadow,
        )


def merge_windows(windows: Iterable[Window]) -> Window:
    """One window holding the sum of ``windows`` (all of the same model)."""
    it = iter(windows)
    try:
        first = next(it)
    except StopIteration:
        raise WireError("nothing to merge") from None
    import copy  # not at import: a one-shot ``predict`` never merges

    out = copy.deepcopy(first)
    for w in it:
        out.merge(w)
    return out


def validate_batch(payload: Any) -> tuple[str, dict[str, dict[str, Any]], list[Window], list[dict[str, Any]], dict[str, int]]:
    """Check a batch's shape; returns ``(device, models, windows, audit, outbox)``.

    Checks that need the collector's knowledge (that a model's bins match its profile)
    are left to the collector; everything that can be judged from the payload is here.
    """
    if not isinstance(payload, Mapping):
        raise WireError("batch: expected a JSON object")
    schema = payload.get("schema")
    if schema != SCHEMA_VERSION or isinstance(schema, bool):
        raise WireError(f"schema: unsupported version {schema!r}, expected {SCHEMA_VERSION}")
    device = payload.get("device")
    if not isinstance(device, str) or not device:
        raise WireError("device: expected a non-empty string")
    models_raw = payload.get("models", {})
    if not isinstance(models_raw, Mapping):
        raise WireError("models: expected an object keyed by content hash")
    models: dict[str, dict[str, Any]] = {}
    for h, m in models_raw.items():
        if not isinstance(h, str) or not _HASH.fullmatch(h):
            raise WireError(f"models: key {h!r} is not a sha256 hex content hash")
        if not isinstance(m, Mapping) or not isinstance(m.get("name"), str) or not isinstance(
            m.get("version"), str
        ):
            raise WireError(f"models.{h[:12]}: expected name and version strings")
        models[h] = dict(m)
    windows_raw = payload.get("windows", [])
    if not isinstance(windows_raw, list):
        raise WireError("windows: expected a list")
    if len(windows_raw) > MAX_WINDOWS_PER_BATCH:
        raise WireError(f"windows: at most {MAX_WINDOWS_PER_BATCH} per batch, got {len(windows_raw)}")
    windows = [Window.from_dict(w, f"windows[{i}]") for i, w in enumerate(windows_raw)]
    audit = payload.get("audit", [])
    if not isinstance(audit, list) or not all(isinstance(a, Mapping) for a in audit):
        raise WireError("audit: expected a list of objects")
    outbox_raw = payload.get("outbox", {})
    if not isinstance(outbox_raw, Mapping):
        raise WireError("outbox: expected an object")
    outbox = {str(k): _count(v, f"outbox.{k}") for k, v in outbox_raw.items()}
    return device, models, windows, [dict(a) for a in audit], outbox
