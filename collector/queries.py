"""Fleet statistics from the roll-ups: series over time, per-device drift, alerts.

Everything here reads roll-ups only (never raw windows), so its cost depends on the
number of devices and hours in the range, not on traffic. Ranges are widened to whole
hours. Drift uses :mod:`mlpack_edge.monitor_agent.drift` — the same numbers the device shows.
"""

from __future__ import annotations

import json
import math
import threading
import weakref
from collections import defaultdict
from collections.abc import Callable, Collection, Iterable
from dataclasses import dataclass
from typing import Any

import numpy as np

from mlpack_edge.collector import kpis
from mlpack_edge.collector._fmt import duration, utc
from mlpack_edge.collector.models import ModelInfo, Section
from mlpack_edge.collector.rollup import DAY, HOUR, MINUTE, Rollup, minute_rollups, plan_range
from mlpack_edge.collector.storage import DeviceRow, Storage
from mlpack_edge.monitor_agent.drift import STATUSES, DriftScore, classify, js_rows, min_testable_count, psi_rows
from mlpack_edge.monitor_agent.kpi import DEFAULT_MIN_LABELS
from mlpack_edge.monitor_agent.wire import Window

__all__ = [
    "TimeRange",
    "time_range",
    "rollup_stats",
    "drift_of",
    "model_series",
    "device_table",
    "fleet_overview",
    "device_detail",
    "model_detail",
    "STATUS_ORDER",
    "ATTENTION_ORDER",
    "PER_PAGE",
    "MAX_PER_PAGE",
    "worst_first",
    "FAILING_RATE",
    "FAILING_MIN_REQUESTS",
]

STATUS_ORDER = ("revoked", "never", "silent", "failing", "drift", "warn", "ok", "idle")
#: The device table's order, what needs attention first (then by name): pages of it are
#: still worst first.
ATTENTION_ORDER = ("failing", "drift", "warn", "silent", "ok", "idle", "never", "revoked")
_ATTENTION = {s: i for i, s in enumerate(ATTENTION_ORDER)}
#: Devices per page of the fleet page and ``GET /api/v1/fleet`` unless asked otherwise.
PER_PAGE = 100
MAX_PER_PAGE = 1000
#: A device answering at least this share of its requests with an error (over at least
#: ``FAILING_MIN_REQUESTS`` requests in the range) is ``failing``, whatever its drift.
FAILING_RATE = 0.05
FAILING_MIN_REQUESTS = 20
_MAX_HOURLY_SPAN = 14 * DAY
_MAX_MINUTE_SPAN = 8 * HOUR  # the page's "6 h", widened to whole hours, spans 7
_LEVEL = {MINUTE: "m", HOUR: "h", DAY: "d"}


@dataclass(frozen=True)
class TimeRange:
    start: int
    end: int

    @property
    def bucket(self) -> int:
        """Chart resolution: minutes up to eight hours, hours up to two weeks, days beyond."""
        span = self.end - self.start
        return MINUTE if span <= _MAX_MINUTE_SPAN else HOUR if span <= _MAX_HOURLY_SPAN else DAY

    @property
    def level(self) -> str:
        """The roll-up level of :attr:`bucket`."""
        return _LEVEL[self.bucket]

    def to_dict(self) -> dict[str, int]:
        return {"from": self.start, "to": self.end, "bucket": self.bucket}


def time_range(start: float | None, end: float | None, now: float, hours: float = 24.0) -> TimeRange:
    """``[start, end)`` widened to whole hours; defaults to the last ``hours`` up to ``now``."""
    hi = now if end is None else end
    lo = hi - hours * HOUR if start is None else start
    if not lo < hi or hi - lo > 400 * DAY:
        raise ValueError("range: 'from' must be before 'to' and span at most 400 days")
    s = int(math.floor(lo / HOUR)) * HOUR
    e = max(int(math.ceil(hi / HOUR)) * HOUR, s + HOUR)
    return TimeRange(s, e)


def _ms(seconds: float | None) -> float | None:
    return None if seconds is None else seconds * 1000.0


def rollup_stats(r: Rollup) -> dict[str, Any]:
    """Counts, error rate, latency quantiles (ms) and average system load of a roll-up."""
    h = r.histogram()
    sysd = r.system
    n = sysd.samples
    return {
        "windows": r.windows,
        "requests": r.requests,
        "rows": r.rows,
        "errors": r.errors,
        "error_kinds": dict(sorted(r.error_kinds.items())),
        "error_rate": (r.errors / r.requests) if r.requests else 0.0,
        "p50_ms": _ms(h.quantile(0.5)),
        "p95_ms": _ms(h.quantile(0.95)),
        "p99_ms": _ms(h.quantile(0.99)),
        "system": {
            "samples": n,
            "cpu": sysd.cpu / n if n else None,
            "proc_cpu": sysd.proc_cpu / n if n else None,
            "mem": sysd.mem / n if n else None,
            "proc_rss_max": sysd.proc_rss_max or None,
            "disk_free_min": sysd.disk_free_min,
        },
    }


_RANK = {s: i for i, s in enumerate(STATUSES)}


def score_section(model: ModelInfo, sec: Section, bins: np.ndarray) -> DriftScore:
    """The device's verdict (:func:`~mlpack_edge.monitor_agent.drift.classify`) for one section."""
    return classify(
        sec.shares,
        bins,
        model.thresholds,
        reference_count=sec.reference_count,
        n_tests=len(model.sections),
        ordered=sec.ordered,
    )


def _test_fields(score: DriftScore) -> dict[str, Any]:
    return {
        "n": score.n,
        "min_count": score.min_count,
        "test": score.test,
        "statistic": None if score.statistic is None else round(score.statistic, 6),
        "df": score.df,
        "p_value": score.p_value,
        "alpha": score.alpha,
    }


def drift_of(model: ModelInfo, counts: np.ndarray | None) -> dict[str, dict[str, Any]]:
    """Per feature (and ``prediction``): PSI, JS, the test, status, the observed extras, and
    the reference shares and observed counts per bin (to show them side by side)."""
    out: dict[str, dict[str, Any]] = {}
    for sec in model.sections:
        if counts is None or counts.size < sec.stop:
            bins = np.zeros(sec.n_bins, dtype=np.int64)
            extras = [0, 0, 0, 0]
        else:
            bins = counts[sec.start : sec.start + sec.n_bins]
            extras = counts[sec.start + sec.n_bins : sec.stop].tolist()
        score = score_section(model, sec, bins)
        out[sec.name] = {
            "psi": round(score.psi, 6),
            "js": round(score.js, 6),
            "status": score.status,
            **_test_fields(score),
            "observed": int(bins.sum()),
            "missing": extras[0],
            "below": extras[1],
            "above": extras[2],
            "unseen": extras[3],
            "bins": {
                "labels": list(sec.labels),
                "reference": [round(x, 6) for x in sec.shares],
                "observed": [int(x) for x in bins.tolist()],
            },
        }
    return out


def _worst(drift: dict[str, dict[str, Any]]) -> dict[str, Any] | None:
    scored = [(_RANK[v["status"]], v["psi"], k) for k, v in drift.items() if v["status"] != "no-data"]
    if not scored:
        return None
    _, psi, name = max(scored)
    d = drift[name]
    return {"feature": name, "psi": psi, "status": d["status"], "n": d["n"], "min_count": d["min_count"],
            "p_value": d["p_value"]}


def _section_scores(sections: Iterable[Section], matrix: np.ndarray) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """Row-wise PSI and JS of each section of a ``[rows, vector]`` count matrix."""
    out = {}
    for sec in sections:
        block = matrix[:, sec.start : sec.start + sec.n_bins]
        out[sec.name] = (psi_rows(sec.shares, block), js_rows(sec.shares, block))
    return out


def model_series(storage: Storage, model: ModelInfo, rng: TimeRange, device: str | None = None) -> dict[str, Any]:
    """Stats and drift per time bucket of one model (the fleet's, or one device's)."""
    step = rng.bucket
    if rng.level == "m" and device is not None:
        rows = _device_minutes(storage, model, rng, device)
    else:
        rows = storage.rollups(rng.level, rng.start, rng.end, model=model.hash, device=device)
    if not rows and rng.level == "m":  # windows stored before minute roll-ups existed: hours
        rows = storage.rollups("h", rng.start, rng.end, model=model.hash, device=device)
        step = HOUR
    total = Rollup()
    points: list[dict[str, Any]] = []
    vectors: list[np.ndarray] = []
    for row in rows:
        r = Rollup.from_row(row[3:])
        total.merge(r)
        points.append({"t": int(row[2]), **rollup_stats(r)})
        vectors.append(r.counts if r.counts is not None and r.counts.size == model.size else np.zeros(model.size, np.int64))
    if points and model.size:
        scores = _section_scores(model.sections, np.vstack(vectors))
        for i, p in enumerate(points):
            p["psi"] = {name: round(float(s[0][i]), 6) for name, s in scores.items()}
            p["js"] = {name: round(float(s[1][i]), 6) for name, s in scores.items()}
            feats = [v for k, v in p["psi"].items() if k != "prediction" or model.prediction is None]
            p["max_psi"] = max(feats) if feats else 0.0
    drift = drift_of(model, total.counts)
    return {
        "model": _model_ref(model),
        "device": device,
        "range": {**rng.to_dict(), "bucket": step},
        "points": points,
        "total": {**rollup_stats(total), "drift": drift, "worst": _worst(drift)},
    }


def _device_minutes(storage: Storage, model: ModelInfo, rng: TimeRange, device: str) -> list[tuple[Any, ...]]:
    """One device's minute rows (shaped like roll-up rows), summed from its stored windows:
    at most a few hundred in a short range, and no per-device minute roll-up to write."""
    windows = [Window.from_dict(json.loads(b)) for b in storage.window_bodies_between(device, rng.start, rng.end, model.hash)]
    minutes = minute_rollups((w, model.vector(w)) for w in windows)
    return [(device, model.hash, t, *minutes[t].to_row()) for t in sorted(minutes)]


def _model_ref(m: ModelInfo) -> dict[str, Any]:
    return {"hash": m.hash, "name": m.name, "version": m.version, "thresholds": m.thresholds.to_dict()}


@dataclass
class _Agg:
    requests: int = 0
    rows: int = 0
    errors: int = 0
    windows: int = 0
    counts: np.ndarray | None = None


def _range_rows(
    storage: Storage, rng: TimeRange, model: str | None, device: str | None, totals: bool, now: float
) -> Iterable[tuple[Any, ...]]:
    """``(device, model, windows, requests, rows, errors, counts)`` rows summing to each device's range.

    ``totals`` (every device, every model): one row per device from the running totals
    when they cover the range (the page's last 24 h / 7 days; moved on first if the hour
    turned), else the range's day and edge-hour roll-ups (~25 rows a device for 7 days).
    """
    if totals and model is None and device is None:
        rows = storage.range_totals(rng.start, rng.end, now)
        if rows is not None:
            return rows
    return [
        (dev, mdl, *cols)
        for level, a, b in plan_range(rng.start, rng.end)
        for dev, mdl, _bucket, *cols in storage.rollups(
            level, a, b, model=model, device=device, per_device=True, columns="windows, requests, rows, errors, counts"
        )
    ]


def _device_aggregates(
    storage: Storage, rng: TimeRange, model: str | None = None, device: str | None = None,
    totals: bool = False, now: float = 0.0,
) -> dict[tuple[str, str], _Agg]:
    """Per (device, model): summed scalars and count vectors over the range (see :func:`_range_rows`)."""
    return _aggregate(_range_rows(storage, rng, model, device, totals, now))


def _aggregate(rows: Iterable[tuple[Any, ...]]) -> dict[tuple[str, str], _Agg]:
    """``(device, model, windows, requests, rows, errors, counts)`` rows summed per (device, model)."""
    aggs: dict[tuple[str, str], _Agg] = defaultdict(_Agg)
    blobs: dict[str, list[tuple[tuple[str, str], bytes]]] = defaultdict(list)
    for dev, mdl, windows, requests, rows_, errors, counts in rows:
        agg = aggs[(dev, mdl)]
        agg.windows += windows
        agg.requests += requests
        agg.rows += rows_
        agg.errors += errors
        if counts:
            blobs[mdl].append(((dev, mdl), bytes(counts)))
    for items in blobs.values():
        width = len(items[0][1])
        same = [(k, b) for k, b in items if len(b) == width]
        matrix = np.frombuffer(b"".join(b for _, b in same), dtype="<i8").reshape(len(same), width // 8)
        # Rows of one (device, model) summed with one reduceat over the rows sorted by key
        # (np.add.at over string keys cost a third of the whole table at 2,000 devices).
        index: dict[tuple[str, str], int] = {}
        ids = np.fromiter((index.setdefault(k, len(index)) for k, _ in same), dtype=np.int64, count=len(same))
        order = np.argsort(ids, kind="stable")
        starts = np.flatnonzero(np.r_[True, np.diff(ids[order]) != 0])
        sums = np.add.reduceat(matrix[order], starts, axis=0)
        for key, i in index.items():
            aggs[key].counts = sums[i]
    return aggs


_Key = tuple[str, str]


def _score(models: dict[str, ModelInfo], items: Iterable[tuple[_Key, np.ndarray]], full: bool
           ) -> dict[_Key, dict[str, Any] | None]:
    """Each (device, model)'s worst feature from its count vector; all devices of a model in
    one numpy call per feature. Not ``full``: a worst feature the verdict did not need to
    test has ``None`` for the test's figures (n, min_count, p_value)."""
    by_model: dict[str, list[tuple[_Key, np.ndarray]]] = defaultdict(list)
    for key, counts in items:
        by_model[key[1]].append((key, counts))
    worst: dict[_Key, dict[str, Any] | None] = {}
    for h, group in by_model.items():
        m = models[h]
        feats = [s for s in m.sections if s.name in m.features]
        if not feats:
            worst.update((k, None) for k, _ in group)
            continue
        matrix = np.vstack([c for _, c in group])
        observed = np.stack([matrix[:, s.start : s.start + s.n_bins].sum(axis=1) for s in feats], axis=1)
        psis = np.stack([psi_rows(s.shares, matrix[:, s.start : s.start + s.n_bins]) for s in feats], axis=1)
        need = max(1, m.thresholds.min_count)
        plain = _plainly_ok(m, feats, psis, observed, need) if not full else None
        for i, (key, _) in enumerate(group):
            if plain is not None and plain[i] >= 0:  # what _device_worst(full=False) says, without its loop
                j = int(plain[i])
                worst[key] = {"feature": feats[j].name, "psi": round(float(psis[i, j]), 6), "status": "ok", "n": None,
                              "min_count": None, "p_value": None}
            else:
                worst[key] = _device_worst(m, feats, matrix[i], psis[i], observed[i], need, full=full)
    return worst


def _complete(w: dict[str, Any] | None) -> bool:
    return w is None or w["n"] is not None


class _RangeScores:
    """One process's worst features of every (device, model) over one range of running
    totals, each kept with the totals' ``(windows, requests, rows, errors)`` it was scored
    from.

    Any change to a total adds at least one window, so an unchanged quadruple is an
    unchanged count vector: the page reads the ~40-byte scalars of every device (from the
    database, so writes by any collector process sharing it are seen) and scores again
    only the devices whose totals moved (the vectors of those read by name). A warm page
    of 10,000 devices then tests no device; a busy fleet re-tests those that uploaded
    since the last page or alert evaluation.
    """

    def __init__(self, models_key: Any) -> None:
        self.lock = threading.Lock()
        self.models_key = models_key
        self.entries: dict[_Key, tuple[tuple[int, int, int, int], dict[str, Any] | None, dict[str, Any] | None]] = {}


#: storage -> (start, end) -> scores; a few ranges per storage (the page's 24 h and 7 days as
#: the hour turns), dropped with the storage.
_SCORES: weakref.WeakKeyDictionary[Any, dict[tuple[int, int], _RangeScores]] = weakref.WeakKeyDictionary()
_SCORES_LOCK = threading.Lock()
_MAX_RANGES = 4
#: Above this many stale devices every count vector is read in one statement instead of by name.
_READ_ALL = 2000


def _range_scores(storage: Storage, rng: TimeRange, models: dict[str, ModelInfo]) -> _RangeScores:
    models_key = tuple(sorted((h, m.profile_json, repr(m.thresholds.to_dict())) for h, m in models.items()))
    with _SCORES_LOCK:
        ranges = _SCORES.setdefault(storage, {})
        scores = ranges.get((rng.start, rng.end))
        if scores is None or scores.models_key != models_key:
            scores = ranges[(rng.start, rng.end)] = _RangeScores(models_key)
            for old in sorted(ranges)[:-_MAX_RANGES]:
                del ranges[old]
        return scores


#: A device's sums over the range: requests, rows, errors, windows (a plain tuple of ints,
#: which the garbage collector stops tracking: 10,000 objects fewer for it to scan a page).
_Sums = tuple[int, int, int, int]
_NO_SUMS: _Sums = (0, 0, 0, 0)


def _sums_of(a: _Agg) -> _Sums:
    return a.requests, a.rows, a.errors, a.windows


def _cached_worst(
    storage: Storage, rng: TimeRange, now: float, models: dict[str, ModelInfo], devices: list[DeviceRow], full: bool,
) -> tuple[dict[_Key, _Sums], dict[str, str | None], dict[str, dict[str, Any] | None],
           Callable[[Collection[str]], None]] | None:
    """The device table's sums, models and worst features from the running totals' scalars
    and the process's scores (:class:`_RangeScores`), or ``None`` when no totals cover the range.

    Returns the sums, each device's model, its worst feature (complete if ``full``) and a
    function completing the named devices' worst features in that dict (the shown page's)."""
    scalars = storage.range_totals(rng.start, rng.end, now, counts=False)
    if scalars is None:
        return None
    aggs: dict[_Key, _Sums] = {(dev, mdl): (req, nrows, err, win) for dev, mdl, win, req, nrows, err in scalars}
    chosen = _choose(devices, aggs, None)
    scores = _range_scores(storage, rng, models)
    worst: dict[str, dict[str, Any] | None] = {}

    def refresh(keys: list[_Key], need_full: bool) -> bool:
        """Score ``keys`` again from their vectors as stored now (their sums too: one snapshot a row)."""
        if not keys:
            return True
        names = None if len(keys) > _READ_ALL else [k[0] for k in keys]
        rows = storage.range_totals(rng.start, rng.end, counts=True, devices=names)
        if rows is None:  # the range moved on under us (another process): nothing to keep
            return False
        wanted = set(keys)
        fresh = _aggregate(r for r in rows if (r[0], r[1]) in wanted)
        scored = _score(models, ((k, a.counts) for k, a in fresh.items() if a.counts is not None), need_full)
        for k in keys:
            a = fresh.get(k)
            if a is None:  # gone from the totals since the scalars were read
                continue
            aggs[k] = _sums_of(a)
            w = scored.get(k)
            scores.entries[k] = (aggs[k], w, w if _complete(w) else None)
        return True

    with scores.lock:
        entries = scores.entries
        stale: list[_Key] = []
        for n, h in chosen.items():
            a = aggs.get((n, h)) if h is not None and h in models else None  # type: ignore[arg-type]
            if a is None:
                continue
            e = entries.get((n, h))  # type: ignore[arg-type]
            if e is None or e[0] != a or (full and e[2] is None):
                stale.append((n, h))  # type: ignore[arg-type]
            else:
                worst[n] = e[1] if e[2] is None else e[2]  # complete once a page has shown it
        if not refresh(stale, full):
            return None
        for k in stale:
            e = entries.get(k)
            if e is not None and e[0] == aggs[k]:
                worst[k[0]] = e[1] if e[2] is None else e[2]

    def complete(names: Collection[str]) -> None:
        with scores.lock:
            keys: list[_Key] = [(n, chosen[n]) for n in names if n in worst and not _complete(worst[n])]  # type: ignore[misc]
            shown = {k: aggs[k] for k in keys}
            if not keys or not refresh(keys, True):
                return
            for k in keys:
                e = entries.get(k)
                if e is not None and e[2] is not None and e[0] == shown[k]:  # scored from the vector the row shows
                    worst[k[0]] = e[2]

    return aggs, chosen, worst, complete


def device_table(
    storage: Storage,
    rng: TimeRange,
    now: float,
    silent_after: float,
    models: dict[str, ModelInfo] | None = None,
    devices: list[DeviceRow] | None = None,
    only_model: str | None = None,
    failing_rate: float = FAILING_RATE,
    failing_min_requests: int = FAILING_MIN_REQUESTS,
    detail: Callable[[list[dict[str, Any]]], Collection[str]] | None = None,
    totals: bool = False,
) -> list[dict[str, Any]]:
    """One row per device: status, model, counts and the worst drifting feature in the range.

    ``totals``: read the devices' running totals where they cover the range (the fleet
    page's last 24 h / 7 days): their scalars, and the count vectors only of the devices
    whose totals changed since this process last scored them (:class:`_RangeScores`).

    ``detail`` (given the rows) names the devices whose ``worst`` must carry its test (n,
    min_count, p_value): only those are tested when the verdict does not need it (a page of
    the table). The others' ``worst`` has the feature, PSI and status, and may have ``None``
    for the test's figures. Without it, every row is complete.

    The status weighs errors too: a device answering ``failing_rate`` or more of at least
    ``failing_min_requests`` requests with an error is ``failing`` (not ``ok``).

    A device's drift is scored for its current model (the one of its last window), or
    for ``only_model`` when given; all devices of a model are scored in one numpy call
    per feature.
    """
    models = models if models is not None else {m.hash: m for m in storage.models()}
    devices = devices if devices is not None else storage.devices()
    aggs, chosen, worst, complete = _scored(storage, rng, now, models, devices, only_model, detail is None, totals)
    refs = {h: _model_ref(m) for h, m in models.items()}  # one per model, shared by its rows
    out = [_row(d, chosen.get(d.name), aggs, worst, refs, now, silent_after, failing_rate, failing_min_requests)
           for d in devices]
    if detail is not None:
        wanted = set(detail(out))
        complete(wanted)
        for row in out:
            if row["name"] in wanted:
                row["worst"] = worst.get(row["name"])
    return out


def _row(d: DeviceRow, h: str | None, aggs: dict[_Key, _Sums], worst: dict[str, dict[str, Any] | None],
         refs: dict[str, dict[str, Any]], now: float, silent_after: float, failing_rate: float,
         failing_min_requests: int) -> dict[str, Any]:
    """One device's row of the table (model ``h``)."""
    name = d.name
    requests, rows, errors, _ = aggs.get((name, h), _NO_SUMS) if h else _NO_SUMS
    w = worst.get(name)
    error_rate = (errors / requests) if requests else 0.0
    failing = requests >= failing_min_requests and error_rate >= failing_rate
    return {
        "name": name,
        "status": _device_status(d, w, now, silent_after, failing),
        "last_seen": d.last_seen,
        "silent_for": None if d.last_seen is None else max(0.0, now - d.last_seen),
        "model": refs.get(h) if h else None,
        "requests": requests,
        "rows": rows,
        "errors": errors,
        "error_rate": error_rate,
        "worst": w,
        "outbox": d.outbox,
        "revoked": d.revoked,
    }


def _scored(
    storage: Storage, rng: TimeRange, now: float, models: dict[str, ModelInfo], devices: list[DeviceRow],
    only_model: str | None, full: bool, totals: bool,
) -> tuple[dict[_Key, _Sums], dict[str, str | None], dict[str, dict[str, Any] | None], Callable[[Collection[str]], None]]:
    """Sums per (device, model), each device's model, its worst feature (complete if
    ``full``) and a function completing the named devices' worst features."""
    single = devices[0].name if len(devices) == 1 else None
    if totals and only_model is None and single is None:
        cached = _cached_worst(storage, rng, now, models, devices, full)
        if cached is not None:
            return cached
    summed = _device_aggregates(storage, rng, only_model, single, totals=totals, now=now)
    aggs = {k: _sums_of(a) for k, a in summed.items()}
    chosen = _choose(devices, aggs, only_model)
    items = [((n, h), summed[(n, h)].counts) for n, h in chosen.items()
             if h is not None and h in models and (n, h) in summed and summed[(n, h)].counts is not None]
    worst = {k[0]: w for k, w in _score(models, items, full).items()}  # type: ignore[arg-type]

    def complete(names: Collection[str]) -> None:
        keys = [(n, chosen[n]) for n in names if n in worst and not _complete(worst[n])]
        worst.update((k[0], w) for k, w in _score(models, [(k, summed[k].counts) for k in keys], True).items())  # type: ignore[index,misc]

    return aggs, chosen, worst, complete


def _page_of_table(
    storage: Storage, rng: TimeRange, now: float, silent_after: float, models: dict[str, ModelInfo],
    page: int, size: int, failing_rate: float, failing_min_requests: int, jump_min_rate: float, totals: bool,
) -> tuple[list[dict[str, Any]], list[dict[str, Any]], dict[str, int], int]:
    """What a page of the fleet needs of :func:`device_table`, without a dict per device:
    the page's rows (worst first, complete), the rows that may raise an alert (silent,
    drifting, erring or dropping devices; in the table's order), every device's status
    counted, and the number of devices."""
    devices = storage.devices()
    aggs, chosen, worst, complete = _scored(storage, rng, now, models, devices, None, False, totals)
    counts: dict[str, int] = {s: 0 for s in STATUS_ORDER}
    keyed: list[tuple[int, str, int]] = []
    alerting: list[int] = []
    rank = _ATTENTION.get
    for i, d in enumerate(devices):
        name = d.name
        h = chosen.get(name)
        requests, _, errors, _ = aggs.get((name, h), _NO_SUMS) if h else _NO_SUMS
        w = worst.get(name)
        error_rate = (errors / requests) if requests else 0.0
        status = _device_status(d, w, now, silent_after, requests >= failing_min_requests and error_rate >= failing_rate)
        counts[status] += 1
        keyed.append((rank(status, 99), name, i))
        if (status == "silent" or (w is not None and w["status"] == "drift") or error_rate >= jump_min_rate
                or (d.outbox or {}).get("dropped", 0)):
            alerting.append(i)
    keyed.sort()
    shown = [i for _, _, i in keyed[(page - 1) * size : page * size]]
    complete([devices[i].name for i in shown])
    refs = {h: _model_ref(m) for h, m in models.items()}

    def row(i: int) -> dict[str, Any]:
        d = devices[i]
        return _row(d, chosen.get(d.name), aggs, worst, refs, now, silent_after, failing_rate, failing_min_requests)

    return [row(i) for i in shown], [row(i) for i in alerting], counts, len(devices)


def _choose(devices: list[DeviceRow], aggs: dict[_Key, _Sums], only_model: str | None) -> dict[str, str | None]:
    """Each device's model in the table: ``only_model``, else its current one (that of its
    last window) if it ran in the range, else the one it ran most."""
    busiest: dict[str, tuple[int, str]] = {}
    for (dev, mh), agg in aggs.items():
        b = busiest.get(dev)
        if b is None or (agg[0], mh) > b:
            busiest[dev] = (agg[0], mh)
    chosen: dict[str, str | None] = {}
    for d in devices:
        if only_model is not None:
            chosen[d.name] = only_model if (d.name, only_model) in aggs else None
        elif d.last_model and (d.name, d.last_model) in aggs:
            chosen[d.name] = d.last_model
        else:  # its current model was silent in the range: show the one it ran most
            chosen[d.name] = busiest[d.name][1] if d.name in busiest else d.last_model
    return chosen


def worst_first(rows: Iterable[dict[str, Any]]) -> list[dict[str, Any]]:
    """Device rows in :data:`ATTENTION_ORDER`, then by name."""
    rank = _ATTENTION.get
    return sorted(rows, key=lambda r: (rank(r["status"], 99), r["name"]))


def _plainly_ok(m: ModelInfo, feats: list[Section], psis: np.ndarray, observed: np.ndarray, need: int) -> np.ndarray:
    """Per device, the worst feature's index when every observed feature is plainly ``ok``
    (enough data to test, PSI below ``psi_warn``: no test needed), else -1.

    That worst is the highest PSI (the first of equals), as :func:`_device_worst` picks it;
    the loop there costs ~50 µs a device, most of a 10,000-device page.
    """
    testable = np.array([min_testable_count(s.shares, s.ordered) for s in feats], dtype=np.int64)
    seen = observed > 0
    plain = ~seen | ((observed >= need) & (observed >= testable) & (psis < m.thresholds.psi_warn))
    ok = plain.all(axis=1) & seen.any(axis=1) & ~np.isnan(np.where(seen, psis, 0.0)).any(axis=1)
    best = np.argmax(np.where(seen, psis, -np.inf), axis=1)
    return np.where(ok, best, -1)


def _device_worst(
    m: ModelInfo, feats: list[Section], counts: np.ndarray, psis: np.ndarray, observed: np.ndarray, need: int,
    full: bool = True,
) -> dict[str, Any] | None:
    """A device's most severe feature (status first, then PSI), by the device's own verdict.

    The (vectorised) PSI already decides most features: below ``psi_warn`` the verdict is
    ``ok`` whatever the test says (if one is possible), so the test runs only where PSI reaches it.
    Not ``full``: a worst feature the verdict did not need to test is not tested for its
    figures either (n, min_count and p_value are ``None``).
    """
    best: tuple[int, float, int] | None = None
    tested: dict[int, DriftScore] = {}
    for j, sec in enumerate(feats):
        n = int(observed[j])
        if n == 0:
            continue
        p = float(psis[j])
        if n >= need and p >= m.thresholds.psi_warn:
            tested[j] = score_section(m, sec, counts[sec.start : sec.start + sec.n_bins])
            status = tested[j].status
        elif n < need or n < min_testable_count(sec.shares, sec.ordered):
            status = "not-enough-data"
        else:
            status = "ok"
        key = (_RANK[status], p, -j)
        if best is None or key > best:
            best = key
    if best is None:
        return None
    j = -best[2]
    sec = feats[j]
    if not full and j not in tested:
        status = "not-enough-data" if best[0] == _RANK["not-enough-data"] else "ok"
        return {"feature": sec.name, "psi": round(float(psis[j]), 6), "status": status, "n": None,
                "min_count": None, "p_value": None}
    score = tested.get(j) or score_section(m, sec, counts[sec.start : sec.start + sec.n_bins])
    return {"feature": sec.name, "psi": round(score.psi, 6), "status": score.status, "n": score.n,
            "min_count": score.min_count, "p_value": score.p_value}


def _device_status(d: DeviceRow, worst: dict[str, Any] | None, now: float, silent_after: float, failing: bool) -> str:
    if d.revoked:
        return "revoked"
    if d.last_seen is None:
        return "never"
    if now - d.last_seen > silent_after:
        return "silent"
    if failing:
        return "failing"
    if worst is not None and worst["status"] in ("drift", "warn"):
        return str(worst["status"])
    if d.outbox and d.outbox.get("dropped", 0) > 0:
        return "warn"
    return "ok" if worst is not None else "idle"


def _hourly(series: dict[str, Any]) -> list[dict[str, Any]]:
    """A series' points summed per hour (requests, errors, rate): error jumps are judged per
    hour whatever the chart's resolution."""
    if series["range"]["bucket"] >= HOUR:
        return list(series["points"])
    hours: dict[int, dict[str, Any]] = {}
    for p in series["points"]:
        h = hours.setdefault(p["t"] // HOUR * HOUR, {"t": p["t"] // HOUR * HOUR, "requests": 0, "errors": 0})
        h["requests"] += p["requests"]
        h["errors"] += p["errors"]
    for h in hours.values():
        h["error_rate"] = h["errors"] / h["requests"] if h["requests"] else 0.0
    return [hours[t] for t in sorted(hours)]


def _alerts(
    table: list[dict[str, Any]],
    series: list[dict[str, Any]],
    silent_after: float,
    jump_factor: float,
    jump_min_rate: float,
    jump_min_requests: int,
    conflicts: list[dict[str, Any]] | None = None,
    production: list[dict[str, Any]] | None = None,
) -> list[dict[str, Any]]:
    alerts: list[dict[str, Any]] = list(production or ())
    fleet_rate = {s["model"]["hash"]: s["total"]["error_rate"] for s in series}
    for s in series:
        m = s["model"]
        label = f"{m['name']} {m['version']}"
        for feat, d in s["total"]["drift"].items():
            if d["status"] == "drift":
                alerts.append({
                    "severity": "critical", "kind": "drift", "model": m["hash"], "device": None, "feature": feat,
                    "message": f"{label}: {feat} drifted fleet-wide (PSI {d['psi']:.3f} >= {m['thresholds']['psi_drift']}, "
                    f"chi-square p {d['p_value']:.2g}, n {d['n']})",
                })
        pts = [p for p in _hourly(s) if p["requests"] >= jump_min_requests]
        if len(pts) >= 2:
            last = pts[-1]
            base_req = sum(p["requests"] for p in pts[:-1])
            base_err = sum(p["errors"] for p in pts[:-1])
            base = base_err / base_req if base_req else 0.0
            if last["error_rate"] >= jump_min_rate and last["error_rate"] >= jump_factor * base:
                alerts.append({
                    "severity": "critical", "kind": "error_rate", "model": m["hash"], "device": None, "feature": None,
                    "message": f"{label}: error rate jumped to {last['error_rate']:.1%} in the hour from "
                    f"{utc(last['t'], seconds=False)} (earlier in range {base:.1%})",
                })
    for row in table:
        name, m = row["name"], row["model"]
        if row["status"] == "silent":
            alerts.append({
                "severity": "warning", "kind": "silent", "model": m["hash"] if m else None, "device": name, "feature": None,
                "message": f"{name}: silent for {duration(row['silent_for'])} (threshold {duration(silent_after)})",
            })
        w = row["worst"]
        if w and w["status"] == "drift" and not row["revoked"]:
            alerts.append({
                "severity": "critical", "kind": "drift", "model": m["hash"] if m else None, "device": name,
                "feature": w["feature"],
                "message": f"{name}: {w['feature']} drifted (PSI {w['psi']:.3f}, chi-square p {w['p_value']:.2g}, n {w['n']}) "
                f"on {m['name']} {m['version']}" if m else "",
            })
        if m and row["requests"] >= jump_min_requests:
            base = fleet_rate.get(m["hash"], 0.0)
            if row["error_rate"] >= jump_min_rate and row["error_rate"] >= jump_factor * base:
                alerts.append({
                    "severity": "warning", "kind": "error_rate", "model": m["hash"], "device": name, "feature": None,
                    "message": f"{name}: error rate {row['error_rate']:.1%} against {base:.1%} fleet-wide",
                })
        dropped = (row["outbox"] or {}).get("dropped", 0)
        if dropped:
            alerts.append({
                "severity": "warning", "kind": "dropped", "model": m["hash"] if m else None, "device": name, "feature": None,
                "message": f"{name}: outbox full, {dropped} windows dropped on the device",
            })
    by_device: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for c in conflicts or ():
        by_device[c["device"]].append(c)
    for name, refused in by_device.items():
        seqs = sorted({c["seq"] for c in refused})
        shown = ", ".join(map(str, seqs[:5])) + (f" (+{len(seqs) - 5} more)" if len(seqs) > 5 else "")
        alerts.append({
            "severity": "critical", "kind": "replay_conflict", "model": None, "device": name, "feature": None,
            "message": f"{name}: {len(seqs)} replayed window{'s' if len(seqs) != 1 else ''} refused, same sequence"
            f" numbers as stored ones but {refused[0]['reason'].split(' than ')[0]} (seq {shown}, last"
            f" {utc(max(c['last_at'] for c in refused))}); the stored windows are kept. Outbox reset, device bug or forgery",
        })
    order = {"critical": 0, "warning": 1}
    alerts.sort(key=lambda a: (order[a["severity"]], a["kind"], a["device"] or "", a["feature"] or ""))
    return alerts


def _active_models(storage: Storage, rng: TimeRange, models: dict[str, ModelInfo]) -> list[ModelInfo]:
    level = "h" if rng.bucket <= HOUR else "d"  # hours cover minute ranges (and old data)
    seen = {row[1] for row in storage.rollups(level, rng.start, rng.end, columns="windows")}
    return sorted((models[h] for h in seen if h in models), key=lambda m: (m.name, m.version, m.hash))


def fleet_overview(
    storage: Storage,
    rng: TimeRange,
    now: float,
    silent_after: float = 3600.0,
    jump_factor: float = 2.0,
    jump_min_rate: float = 0.05,
    jump_min_requests: int = 20,
    min_labels: int = DEFAULT_MIN_LABELS,
    page: int = 1,
    per_page: int | None = None,
    totals: bool = True,
) -> dict[str, Any]:
    """Everything the fleet page shows: model series, the device table, production KPIs, alerts.

    ``totals=False`` scores the devices from roll-ups even where running totals cover the
    range (the reference the totals are tested and benchmarked against).

    ``devices`` is the table worst first (:func:`worst_first`); with ``per_page`` only page
    ``page`` of it (``paging`` says which, of how many). Status counts and alerts always
    cover every device.
    """
    models = {m.hash: m for m in storage.models()}
    prod = kpis.production(storage, rng, models, min_labels=min_labels)
    series = [model_series(storage, m, rng) for m in _active_models(storage, rng, models)]
    if per_page:
        shown, table, by_status, total = _page_of_table(
            storage, rng, now, silent_after, models, page, per_page, jump_min_rate, jump_min_requests, jump_min_rate,
            totals)
        size = per_page
    else:
        table = device_table(storage, rng, now, silent_after, models=models, failing_rate=jump_min_rate,
                             failing_min_requests=jump_min_requests, totals=totals)
        by_status = {s: 0 for s in STATUS_ORDER}
        for row in table:
            by_status[row["status"]] += 1
        shown = worst_first(table)
        total, size = len(table), max(1, len(table))
    return {
        "range": rng.to_dict(),
        "generated_at": now,
        "silent_after": silent_after,
        "models": series,
        "devices": shown,
        "paging": {"page": page, "per_page": size, "total": total, "pages": max(1, -(-total // size))},
        "status_counts": by_status,
        "production": prod,
        "alerts": _alerts(
            table, series, silent_after, jump_factor, jump_min_rate, jump_min_requests, storage.conflicts(since=rng.start),
            kpis.gate_alerts(prod),
        ),
    }


def device_detail(
    storage: Storage, name: str, rng: TimeRange, now: float, silent_after: float, min_labels: int = DEFAULT_MIN_LABELS
) -> dict[str, Any] | None:
    """One device: its table row, a series per model it ran in the range, recent audit events."""
    devices = [d for d in storage.devices() if d.name == name]
    if not devices:
        return None
    models = {m.hash: m for m in storage.models()}
    row = device_table(storage, rng, now, silent_after, models=models, devices=devices)[0]
    level = "h" if rng.bucket <= HOUR else "d"
    used = sorted({r[1] for r in storage.rollups(level, rng.start, rng.end, device=name, columns="windows")})
    return {
        "device": row,
        "range": rng.to_dict(),
        "models": [model_series(storage, models[h], rng, device=name) for h in used if h in models],
        "audit": _collector_events(storage.conflicts(device=name)) + storage.audit(name, limit=50),
        "production": kpis.production(storage, rng, models, device=name, min_labels=min_labels),
    }


def _collector_events(conflicts: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The collector's own audit events about a device (refused replays), shaped like the device's."""
    return [
        {
            "seq": None,
            "time": c["last_at"],
            "event": "replay_refused",
            "origin": "collector",
            "detail": {
                "seq": f"{c['seq']}-{c['seq_last']}",
                "reason": c["reason"],
                "attempts": c["attempts"],
                "first_at": utc(c["first_at"]),
            },
        }
        for c in conflicts
    ]


def model_detail(
    storage: Storage, content_hash: str, rng: TimeRange, now: float, silent_after: float,
    min_labels: int = DEFAULT_MIN_LABELS,
) -> dict[str, Any] | None:
    """One model version: its fleet series and every device's drift on it."""
    m = storage.get_model(content_hash)
    if m is None:
        return None
    table = device_table(storage, rng, now, silent_after, models={m.hash: m}, only_model=m.hash)
    return {
        "series": model_series(storage, m, rng),
        "devices": [r for r in table if r["model"] is not None],
        "profile": m.profile,
        "production": kpis.production(storage, rng, {m.hash: m}, model=m.hash, min_labels=min_labels),
    }
