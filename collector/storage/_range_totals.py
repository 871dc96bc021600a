"""Each device's running totals over the fleet page's default ranges (last 24 h, last 7 days).

Scoring every device over 7 days from roll-ups reads ~25 count vectors per device (days
plus the ragged hours at both ends): 250,000 at 10,000 devices, seconds per page. These
totals are one row per (device, model, range) instead, kept in the ``rollups`` table under
level ``t24`` / ``t168`` with ``bucket`` = the range's first hour, and the range itself
(``[since, until)``, hour-aligned) in ``range_totals``:

* the ingest transaction adds each hourly device delta that falls in a range to its total
  (:func:`share`), so the totals see exactly the windows the roll-ups see (a replay or a
  refused conflict adds nothing to either);
* the page advances a range when the clock has moved on (:func:`advance`): the hours that
  left it are subtracted and the new ones added, from hourly roll-ups (two hours' rows per
  device, once an hour), or it is rebuilt from roll-ups when nothing overlaps.

Only what the device table reads is summed (windows, requests, rows, errors, counts):
latency maxima and system minima cannot be subtracted.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Sequence
from typing import TYPE_CHECKING, Any

import numpy as np

from mlpack_edge.collector.rollup import DAY, FLEET, HOUR, Rollup, RollupKey, plan_range

if TYPE_CHECKING:
    from mlpack_edge.collector.storage._sql import WriteTx

__all__ = ["SPANS", "level", "window", "share", "advance", "backfill", "read"]

#: The ranges kept, in hours: the fleet page's 24 h default and its 7 days.
SPANS = (24, 168)


def level(span: int) -> str:
    return f"t{span}"


def window(span: int, now: float) -> tuple[int, int]:
    """The hour-aligned range the page shows for the last ``span`` hours at ``now``
    (:func:`mlpack_edge.collector.queries.time_range`'s widening; a mismatch only
    means the page reads roll-ups instead)."""
    s = int(math.floor((now - span * HOUR) / HOUR)) * HOUR
    return s, max(int(math.ceil(now / HOUR)) * HOUR, s + HOUR)


def _slim(r: Rollup) -> Rollup:
    """What a total keeps of a roll-up: only the fields that can be subtracted again."""
    return Rollup(windows=r.windows, requests=r.requests, rows=r.rows, errors=r.errors,
                  counts=None if r.counts is None else r.counts.astype(np.int64, copy=True))


def _state(tx: WriteTx, span: int | None = None, lock: str = "") -> dict[int, tuple[int, int]]:
    where, params = (" WHERE span = ?", (span,)) if span is not None else ("", ())
    clause = lock if tx._s.lock_clause else ""
    rows = tx._exec(f"SELECT span, since, until FROM range_totals{where}{clause}", params).fetchall()
    return {int(r[0]): (int(r[1]), int(r[2])) for r in rows}


def share(tx: WriteTx, deltas: dict[RollupKey, Rollup]) -> dict[RollupKey, Rollup]:
    """The totals' part of the roll-up ``deltas`` of an ingest transaction.

    The ranges are read under a shared lock (PostgreSQL) so that an :func:`advance`
    running in another process waits for this transaction, and this one for it (by
    :meth:`WriteTx.open_group` at the start of an ingest group, else here).
    """
    hourly = [(k, r) for k, r in deltas.items() if k[0] == "h" and k[2] != FLEET]
    if not hourly:
        return {}
    state = tx.shared_ranges if tx.shared_ranges is not None else _state(tx, lock=" FOR SHARE")
    out: dict[RollupKey, Rollup] = {}
    for (_lv, model, device, bucket), r in hourly:
        for span, (since, until) in state.items():
            if since <= bucket < until:
                key = (level(span), model, device, since)
                total = out.get(key)
                if total is None:  # a fresh slim copy: the same sums as merging it into an empty one
                    out[key] = _slim(r)
                else:
                    total.merge(_slim(r))
    return out


def _sums(tx: WriteTx, ranges: Iterable[tuple[str, int, int]]) -> dict[tuple[str, str], Rollup]:
    """(device, model) -> the slim sum of the device roll-ups in ``ranges``.

    Count vectors are summed with one numpy reduction per vector width (a rebuild reads
    ~250,000 of them at 10,000 devices: a Python loop of merges took 11 s).
    """
    out: dict[tuple[str, str], Rollup] = {}
    blobs: dict[int, list[tuple[tuple[str, str], bytes]]] = {}
    for lv, a, b in ranges:
        if a >= b:
            continue
        rows = tx._exec(
            "SELECT device, model, windows, requests, rows, errors, counts FROM rollups "
            "WHERE level = ? AND bucket >= ? AND bucket < ? AND device <> ?",
            (lv, a, b, FLEET),
        ).fetchall()
        for dev, mdl, windows, requests, nrows, errors, counts in rows:
            key = (str(dev), str(mdl))
            r = out.get(key)
            if r is None:
                out[key] = r = Rollup()
            r.windows += int(windows)
            r.requests += int(requests)
            r.rows += int(nrows)
            r.errors += int(errors)
            if counts:
                data = bytes(counts)
                blobs.setdefault(len(data), []).append((key, data))
    for width, items in blobs.items():
        matrix = np.frombuffer(b"".join(d for _, d in items), dtype="<i8").reshape(len(items), width // 8)
        index: dict[tuple[str, str], int] = {}
        ids = np.fromiter((index.setdefault(k, len(index)) for k, _ in items), dtype=np.int64, count=len(items))
        order = np.argsort(ids, kind="stable")
        sums = np.add.reduceat(matrix[order], np.flatnonzero(np.r_[True, np.diff(ids[order]) != 0]), axis=0)
        for key, i in index.items():
            out[key]._add_counts(sums[i].astype(np.int64))
    return out


def _from_cols(cols: list[Any]) -> Rollup:
    """A slim roll-up from ``windows, requests, rows, errors, counts``."""
    windows, requests, rows, errors, counts = cols
    return Rollup(windows=int(windows), requests=int(requests), rows=int(rows), errors=int(errors),
                  counts=np.frombuffer(bytes(counts), dtype="<i8").astype(np.int64) if counts else None)


def _subtract(total: Rollup, gone: Rollup) -> None:
    total.windows -= gone.windows
    total.requests -= gone.requests
    total.rows -= gone.rows
    total.errors -= gone.errors
    if gone.counts is not None and total.counts is not None:
        total.counts = total.counts - gone.counts


#: A rebuild adds a day of the range per write transaction (one roll-up row per device),
#: or at most this many of the ragged edges' hours: rebuilding 7 days at 10,000 devices in
#: one transaction held the write lock for 12-20 s (the first edge's 16 hours alone, 160,000
#: rows, took 28 s on a loaded machine); ingest now waits for one step at most.
EDGE_HOURS = 4
#: Moved on by more than this, the totals are rebuilt in steps rather than the days that
#: left subtracted in one transaction.
MAX_SLIDE = DAY


def advance(tx: WriteTx, span: int, now: float) -> bool:
    """One step of moving the ``span`` hours' totals to the range the page shows at
    ``now``; ``False`` once they are there (or ``now`` is behind them: the page then reads
    roll-ups). Call again, each in its own write transaction, until it says ``False``.

    A step subtracts what left the range and adds what joined it, at most a day or
    :data:`EDGE_HOURS` hours of it: once an hour that is one hour's rows per device; after
    an idle period longer than :data:`MAX_SLIDE` the range is rebuilt from its start. Meanwhile the totals cover ``[since, until)`` with a shorter ``until``
    (ingest adds to them only what falls in it) and the page, which asks for the whole
    range, reads roll-ups.
    """
    since, until = window(span, now)
    old = _state(tx, span, lock=" FOR UPDATE").get(span)
    if old == (since, until) or (old is not None and (since < old[0] or until < old[1])):
        return False
    lv = level(span)
    totals: dict[tuple[str, str], Rollup] = {}
    covered = since
    if old is not None and since < old[1] and since - old[0] <= MAX_SLIDE:
        covered = old[1]
        for dev, mdl, *cols in tx._exec(
            "SELECT device, model, windows, requests, rows, errors, counts FROM rollups WHERE level = ? AND bucket = ?",
            (lv, old[0]),
        ).fetchall():
            totals[(str(dev), str(mdl))] = _from_cols(cols)
        for key, r in _sums(tx, plan_range(old[0], since) if old[0] < since else ()).items():
            if key in totals:
                _subtract(totals[key], r)
    if covered % DAY == 0 and covered + DAY <= until:
        reach = covered + DAY  # a whole day: its day roll-ups
    else:
        reach = min(until, (covered // DAY + 1) * DAY, covered + EDGE_HOURS * HOUR)
    for key, r in _sums(tx, plan_range(covered, reach) if covered < reach else ()).items():
        totals.setdefault(key, Rollup()).merge(r)
    tx._exec("DELETE FROM rollups WHERE level = ?", (lv,))
    rows = [(lv, dev, mdl, since, *r.to_row()) for (dev, mdl), r in sorted(totals.items()) if r.windows > 0]
    tx._s.executemany(
        tx._c,
        "INSERT INTO rollups (level, device, model, bucket, windows, requests, rows, errors, error_kinds, latency, "
        "counts, system) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
        rows,
    )
    tx._exec(
        "INSERT INTO range_totals (span, since, until) VALUES (?, ?, ?) ON CONFLICT (span) DO UPDATE SET "
        "since = excluded.since, until = excluded.until",
        (span, since, reach),
    )
    return True


def backfill(tx: WriteTx, now: float) -> None:
    """Build every range's totals from the stored roll-ups in one transaction (migration 9,
    and after a restore)."""
    for span in SPANS:
        while advance(tx, span, now):
            pass


#: Devices named per statement when only some devices' totals are read (SQLite's bound
#: parameters are limited; a handful of statements beats reading every count vector).
_CHUNK = 500


def read(query: Callable[[str, Sequence[Any]], list[Any]], start: int, end: int, counts: bool = True,
         devices: Sequence[str] | None = None) -> list[tuple[Any, ...]] | None:
    """``(device, model, windows, requests, rows, errors[, counts])`` of the totals covering
    exactly ``[start, end)`` (of ``devices`` only, if given), or ``None`` if none do.

    Each statement reads the range and its rows together (one snapshot). Without
    ``counts`` a row is ~40 bytes instead of the count vector's kilobytes: what the fleet
    page reads on every request to learn which devices changed since it last scored them.
    """
    cols = "r.device, r.model, r.windows, r.requests, r.rows, r.errors" + (", r.counts" if counts else "")

    def sql(extra: str) -> str:
        return (f"SELECT {cols} FROM range_totals t LEFT JOIN rollups r ON r.level = 't' || CAST(t.span AS TEXT) "
                f"AND r.bucket = t.since{extra} WHERE t.since = ? AND t.until = ?")

    if devices is None:
        rows = query(sql(""), (start, end))
        return [tuple(r) for r in rows if r[0] is not None] if rows else None
    names = sorted(set(devices))
    out: list[tuple[Any, ...]] = []
    for i in range(0, max(len(names), 1), _CHUNK):
        part = names[i : i + _CHUNK] or [""]
        rows = query(sql(f" AND r.device IN ({', '.join('?' * len(part))})"), (*part, start, end))
        if not rows:
            return None
        out += [tuple(r) for r in rows if r[0] is not None]
    return out
