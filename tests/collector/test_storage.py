"""Storage, migrations and roll-up maths, on a real SQLite file (and PostgreSQL where noted)."""

from __future__ import annotations

import sqlite3
import time
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from mlpack_edge.collector import apply_batches, open_storage, parse_batch
from mlpack_edge.collector.auth import hash_token
from mlpack_edge.collector.rollup import DAY, HOUR, Rollup, plan_range
from mlpack_edge.collector.storage import LATEST
from mlpack_edge.collector.storage.migrations import MIGRATIONS
from mlpack_edge.errors import CollectorError
from mlpack_edge.monitor_agent.drift import js_divergence, js_rows, psi, psi_rows
from mlpack_edge.monitor_agent.wire import merge_windows
from tests.collector.sim import SimDevice, make_profile, model_hash


def test_fresh_database_is_migrated_to_the_latest_version(sqlite_url: str) -> None:
    s = open_storage(sqlite_url)
    try:
        assert s.schema_version() == LATEST == MIGRATIONS[-1][0]
        assert s.migrate() == LATEST  # a second run finds everything applied and does nothing
    finally:
        s.close()


def test_an_old_database_is_upgraded_in_place(sqlite_url: str) -> None:
    path = sqlite_url.removeprefix("sqlite:///")
    conn = sqlite3.connect(path)
    conn.execute("CREATE TABLE schema_version (version INTEGER PRIMARY KEY, description TEXT NOT NULL, applied_at REAL NOT NULL)")
    for st in MIGRATIONS[0][2]:
        conn.execute(st.format(blob="BLOB", bigint="INTEGER", real="REAL"))
    conn.execute("INSERT INTO schema_version VALUES (1, 'v1', 0)")
    conn.execute("INSERT INTO devices (name, token_hash, created_at) VALUES ('old', 'h', 0)")
    conn.commit()
    conn.close()
    s = open_storage(sqlite_url)
    try:
        assert s.schema_version() == LATEST
        assert [d.name for d in s.devices()] == ["old"]
        idx = s._query("SELECT name FROM sqlite_master WHERE type = 'index' AND name = 'rollups_by_time'")
        assert idx == [("rollups_by_time",)]
    finally:
        s.close()


def test_a_newer_schema_is_refused(sqlite_url: str) -> None:
    open_storage(sqlite_url).close()
    path = sqlite_url.removeprefix("sqlite:///")
    with sqlite3.connect(path) as conn:
        conn.execute("INSERT INTO schema_version VALUES (99, 'future', 0)")
    with pytest.raises(CollectorError, match=rf"database schema version 99 is newer than this collector \({LATEST}\); upgrade mlpack"):
        open_storage(sqlite_url)


def test_rollups_equal_the_merge_of_the_windows(sqlite_url: str) -> None:
    s = open_storage(sqlite_url)
    try:
        profile = make_profile()
        h = model_hash("r", "1")
        devs = [SimDevice(f"d{i}", profile, h, seed=i, shift=0.5 * i) for i in range(3)]
        t0 = 1_764_000_000.0 // DAY * DAY + 23 * HOUR  # last hour of a day: windows span two days
        windows = []
        known: dict = {}
        groups: list[list] = [[], []]
        for d in devs:
            s.add_device(d.name, hash_token(d.name), 0.0)
            ws = [d.window(t0 + 60 * i) for i in range(90)]
            windows += ws
            for group, part in zip(groups, (ws[:50], ws[50:])):
                group.append(parse_batch(d.batch(part, name="r", version="1"), d.name, hash_token(d.name)))
        # Two transactions, every device in both: the second merges into the rows the first stored.
        out = [apply_batches(s, group, known, t0) for group in groups]
        assert [[o.stored for o in outs] for outs in out] == [[list(range(50))] * 3, [list(range(50, 90))] * 3]
        merged = merge_windows(windows)
        total = Rollup()
        for level, a, b in plan_range(int(t0), int(t0) + 2 * HOUR):
            for row in s.rollups(level, a, b):
                total.merge(Rollup.from_row(row[3:]))
        assert total.requests == merged.requests
        assert total.errors == sum(merged.errors.values())
        assert total.histogram() == merged.latency
        m = s.get_model(h)
        assert m is not None
        assert np.array_equal(total.counts, m.vector(merged))
        # day roll-ups hold the same as the hours they cover
        hours = Rollup()
        for row in s.rollups("h", int(t0), int(t0) + HOUR):
            hours.merge(Rollup.from_row(row[3:]))
        day = Rollup()
        for row in s.rollups("d", int(t0) // DAY * DAY, int(t0) // DAY * DAY + DAY):
            day.merge(Rollup.from_row(row[3:]))
        assert (day.requests, day.windows) == (hours.requests, hours.windows) == (3 * 60 * 50, 180)
        minutes = Rollup()  # and the minute roll-ups hold the same as the hours (one row per minute)
        rows = s.rollups("m", int(t0), int(t0) + HOUR)
        for row in rows:
            minutes.merge(Rollup.from_row(row[3:]))
        assert (minutes.requests, minutes.windows) == (hours.requests, hours.windows)
        assert np.array_equal(minutes.counts, hours.counts) and len({r[2] for r in rows}) == len(rows)
        # each device's own rows hold exactly its windows
        for k, d in enumerate(devs):
            mine = Rollup()
            for level, a, b in plan_range(int(t0), int(t0) + 2 * HOUR):
                for row in s.rollups(level, a, b, device=d.name):
                    mine.merge(Rollup.from_row(row[3:]))
            days = Rollup()
            for row in s.rollups("d", int(t0) // DAY * DAY, int(t0) // DAY * DAY + 2 * DAY, device=d.name):
                days.merge(Rollup.from_row(row[3:]))
            own = merge_windows(windows[90 * k : 90 * (k + 1)])
            for r in (mine, days):
                assert (r.windows, r.requests, r.histogram()) == (90, own.requests, own.latency)
                assert np.array_equal(r.counts, m.vector(own))
    finally:
        s.close()


def test_plan_range_uses_days_inside_and_hours_at_the_edges() -> None:
    start = 10 * DAY + 5 * HOUR
    assert list(plan_range(start, start + 3 * HOUR)) == [("h", start, start + 3 * HOUR)]
    assert list(plan_range(start, 13 * DAY + 2 * HOUR)) == [
        ("h", start, 11 * DAY),
        ("d", 11 * DAY, 13 * DAY),
        ("h", 13 * DAY, 13 * DAY + 2 * HOUR),
    ]
    assert list(plan_range(10 * DAY, 12 * DAY)) == [("d", 10 * DAY, 12 * DAY)]


def test_row_wise_drift_is_the_shared_maths() -> None:
    rng = np.random.default_rng(0)
    ref = rng.random(8)
    ref[3] = 0.0
    obs = rng.integers(0, 40, (50, 8))
    obs[0] = 0
    obs[1, :4] = 0
    assert np.allclose(psi_rows(ref, obs), [psi(ref, o) for o in obs], rtol=0, atol=1e-12)
    assert np.allclose(js_rows(ref, obs), [js_divergence(ref, o) for o in obs], rtol=0, atol=1e-12)


def test_add_device_twice_and_revoke_unknown_fail_cleanly(sqlite_url: str) -> None:
    s = open_storage(sqlite_url)
    try:
        s.add_device("a", "h1", time.time())
        with pytest.raises(CollectorError, match=r"^device 'a' already exists"):
            s.add_device("a", "h2", time.time())
        with pytest.raises(CollectorError, match=r"^device 'b' is not registered \(see list-devices\)$"):
            s.revoke_device("b", time.time())
    finally:
        s.close()


def _one_batch(url: str) -> tuple:
    s = open_storage(url)
    profile = make_profile()
    dev = SimDevice("d", profile, model_hash("w", "1"))
    s.add_device("d", hash_token("t"), 0.0)
    s.close()
    return parse_batch(dev.batch([dev.window(1_764_000_000.0)]), "d", hash_token("t"))


def test_a_broken_database_is_503_with_retry_after_not_a_crash(sqlite_url: str) -> None:
    from mlpack_edge.collector.ingest import Rejected, Writer
    from mlpack_edge.collector.storage.sqlite import SqliteStorage

    batch = _one_batch(sqlite_url)
    path = sqlite_url.removeprefix("sqlite:///")
    for suffix in ("-wal", "-shm"):
        Path(path + suffix).unlink(missing_ok=True)
    Path(path).write_bytes(b"this is not a database" * 100)
    broken = SqliteStorage(sqlite_url)
    writer = Writer(broken)
    writer.start()
    try:
        out = writer.submit(batch).result(timeout=30)
    finally:
        writer.stop()
        broken.close()
    assert isinstance(out, Rejected)
    assert (out.status, out.message, out.retry_after) == (503, "collector: storage unavailable, retry later", 5)


def test_a_full_write_queue_is_503_before_anything_is_read(sqlite_url: str) -> None:
    from mlpack_edge.collector.ingest import Rejected, Writer

    batch = _one_batch(sqlite_url)
    s = open_storage(sqlite_url)
    try:
        writer = Writer(s, max_pending=1)  # not started: the first batch stays queued
        writer.submit(batch)
        with pytest.raises(Rejected) as exc:
            writer.submit(batch)
        assert (exc.value.status, exc.value.retry_after) == (503, 2)
        assert exc.value.message == "collector: too many uploads waiting to be written, retry later"
        assert s.window_count() == 0
    finally:
        s.close()


def test_batches_of_new_replayed_and_overlapping_windows(sqlite_url: str) -> None:
    """A batch's seq span is checked in one query; any span meeting stored windows is
    checked window by window: duplicates acknowledged, overlaps refused, gaps filled."""
    from mlpack_edge.collector.ingest import Ack, Rejected

    s = open_storage(sqlite_url)
    try:
        dev = SimDevice("d", make_profile(), model_hash("o", "1"))
        s.add_device("d", hash_token("d"), 0.0)
        ws = [dev.window(1_764_000_000.0 + 60 * i) for i in range(8)]
        known: dict = {}

        def send(windows: list, first: bool = False) -> Ack | Rejected:
            payload = dev.batch(windows, name="o", version="1", include_model=first)
            return apply_batches(s, [parse_batch(payload, "d", hash_token("d"))], known, 0.0)[0]

        assert send([ws[0], ws[5]], first=True) == Ack([0, 5], [])
        assert send([ws[2], ws[3]]) == Ack([2, 3], [])  # between stored windows: the span is clear
        assert send([ws[3], ws[4], ws[6]]) == Ack([4, 6], [3])  # a replay among new ones
        merged = merge_windows([ws[6], ws[7]])  # seq 6-7 meets the stored 6-6
        out = send([ws[1], merged])
        assert isinstance(out, Rejected) and (out.status, out.message) == (
            409, "windows[1]: seq 6-7 overlaps the stored window seq 6-6 of device d with different bounds"
        )
        assert send([ws[1], ws[7]]) == Ack([1, 7], [])
        assert s.window_count("d") == 8
    finally:
        s.close()


def test_uploads_of_one_transaction_leave_the_device_row_as_if_applied_in_turn(sqlite_url: str) -> None:
    """A device's row is written once per transaction; several of its uploads in one group
    fold into what applying them one by one would leave: highest seq's model, latest outbox."""
    s = open_storage(sqlite_url)
    try:
        h = model_hash("t", "1")
        dev = SimDevice("d", make_profile(), h)
        s.add_device("d", hash_token("d"), 0.0)
        w0, w1, w2 = (dev.window(1_764_000_000.0 + 60 * i) for i in range(3))

        def batch(windows: list, produced: int | None) -> Any:
            extra = {"outbox": {"produced": produced}} if produced is not None else {}
            payload = dev.batch(windows, name="t", version="1", **extra)
            if produced is None:
                payload.pop("outbox")
            return parse_batch(payload, "d", hash_token("d"))

        # seq 2 first, then seq 0-1; outbox reports 5, none, 7 (the last report wins)
        out = apply_batches(s, [batch([w2], 5), batch([], None), batch([w0, w1], 7)], {}, 1_764_000_500.0)
        assert [o.stored for o in out] == [[2], [], [0, 1]]
        (row,) = s.devices()
        assert (row.last_seen, row.last_model, row.last_seq, row.outbox) == (1_764_000_500.0, h, 2, {"produced": 7})
    finally:
        s.close()
