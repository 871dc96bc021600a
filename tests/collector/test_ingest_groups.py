"""One write transaction for a group of uploads (what the writer thread does under load),
on SQLite and PostgreSQL: replays and conflicts inside the group are judged as if the
uploads were applied one by one, and the roll-ups hold exactly the stored windows."""

from __future__ import annotations

import json

import numpy as np
import pytest

from mlpack_edge.collector import apply_batches, parse_batch
from mlpack_edge.collector.auth import hash_token
from mlpack_edge.collector.ingest import REPLAY_CONFLICT, Ack, Rejected
from mlpack_edge.collector.rollup import DAY, FLEET, HOUR, Rollup
from mlpack_edge.collector.storage import SqlStorage
from mlpack_edge.monitor_agent.wire import Window, merge_windows
from tests.collector.sim import SimDevice, make_profile, model_hash

T0 = 1_764_000_000.0 // DAY * DAY + DAY - 240  # four minutes before midnight: two days, two hours



def _stored(s: SqlStorage, device: str) -> list[Window]:
    return [Window.from_dict(json.loads(b)) for b in s.window_bodies_between(device, T0 - DAY, T0 + DAY)]


def _sum(s: SqlStorage, level: str, device: str) -> Rollup:
    total = Rollup()
    for row in s.rollups(level, int(T0) - 2 * DAY, int(T0) + 2 * DAY, device=None if device == FLEET else device,
                         per_device=device != FLEET):
        if device == FLEET or row[0] == device:
            total.merge(Rollup.from_row(row[3:]))
    return total


def test_a_group_is_judged_upload_by_upload_and_the_rollups_hold_the_stored_windows(storage: SqlStorage) -> None:
    s = storage
    profile = make_profile()
    h = model_hash("g", "1")
    a, b = SimDevice("a", profile, h, seed=1), SimDevice("b", profile, h, seed=2, shift=1.0)
    for d in (a, b):
        s.add_device(d.name, hash_token(d.name), 0.0)
    wa = [a.window(T0 + 60 * i) for i in range(8)]  # seq 0-7; 30 minutes cross midnight
    wb = [b.window(T0 + 60 * i) for i in range(4)]
    other_1 = wa[1].replace(errors={"validation": 3})  # seq 1 with other contents
    merged_45 = merge_windows([wa[4], wa[5]])  # seq 4-5

    def batch(d: SimDevice, windows: list[Window], first: bool = False):
        return parse_batch(d.batch(windows, name="g", version="1", include_model=first), d.name, hash_token(d.name))

    known: dict = {}
    out = apply_batches(s, [
        batch(a, wa[0:3], first=True),   # new
        batch(b, wb[0:2], first=True),   # new, another device
        batch(a, wa[2:4]),               # seq 2 stored earlier in this transaction: a duplicate; 3 new
        batch(a, [other_1]),             # seq 1 stored earlier in this transaction, other contents: 409
        batch(a, [merged_45]),           # new (4-5)
        batch(a, [wa[5]]),               # meets 4-5 with other bounds: 409
        batch(a, [wa[6]]),               # new
    ], known, T0 + 3600)
    assert out[:3] == [Ack([0, 1, 2], []), Ack([0, 1], []), Ack([3], [2])]
    assert isinstance(out[3], Rejected) and (out[3].status, out[3].kind) == (409, REPLAY_CONFLICT)
    assert "seq 1-1 of device a was stored with other contents" in out[3].message
    assert out[4] == Ack([4], [])
    assert isinstance(out[5], Rejected) and out[5].message == (
        "windows[0]: seq 5-5 overlaps the stored window seq 4-5 of device a with different bounds"
    )
    assert out[6] == Ack([6], [])
    # A second group: everything again (duplicates), plus new windows.
    out = apply_batches(s, [batch(a, [*wa[0:4], merged_45, wa[6], wa[7]]), batch(b, wb)], known, T0 + 3700)
    assert out == [Ack([7], [0, 1, 2, 3, 4, 6]), Ack([2, 3], [0, 1])]

    assert s.window_count("a") == 7 and s.window_count("b") == 4
    assert {(c["device"], c["seq"]) for c in s.conflicts()} == {("a", 1), ("a", 5)}
    m = s.get_model(h)
    assert m is not None
    stored = {d: _stored(s, d) for d in ("a", "b")}
    assert [w.seq for w in stored["a"]] == [0, 1, 2, 3, 4, 6, 7]
    assert stored["a"][1] == wa[1]  # the first contents were kept
    every = stored["a"] + stored["b"]
    for device, windows in (("a", stored["a"]), ("b", stored["b"]), (FLEET, every)):
        want = merge_windows(windows)
        for level in ("h", "d") + (("m",) if device == FLEET else ()):
            got = _sum(s, level, device)
            assert (got.windows, got.requests, got.errors, got.histogram()) == (  # a merged window counts as 2
                sum(w.seq_last - w.seq + 1 for w in windows), want.requests, sum(want.errors.values()), want.latency
            ), (device, level)
            assert np.array_equal(got.counts, m.vector(want)), (device, level)
    # one row per (level, device, bucket): hours and days on both sides of midnight
    assert len(s.rollups("h", int(T0) - HOUR, int(T0) + 2 * HOUR, device="a")) == 2
    assert len(s.rollups("d", int(T0) - DAY, int(T0) + DAY, device="a")) == 2


def test_every_device_row_of_a_group_gets_its_own_uploads(storage: SqlStorage) -> None:
    """Device rows are locked and written back in bulk: with many devices in a group, named
    in an order where byte order and a locale's differ, each row ends with its own last seq,
    model and outbox, a revoked device's row is left as it was, and a second group finds
    rows the first one moved."""
    s = storage
    profile = make_profile()
    h = model_hash("g", "1")
    names = ["b", "A", "a", "Z", "é", "e", "_x", "10", "9"]
    devs = {n: SimDevice(n, profile, h, seed=i) for i, n in enumerate(names)}
    for n in [*names, "revoked"]:
        s.add_device(n, hash_token(n), 0.0)
    s.revoke_device("revoked", 1.0)
    gone = SimDevice("revoked", profile, h)

    def batch(d: SimDevice, count: int, produced: int, first: bool = False):
        windows = [d.window(T0 + 60 * i) for i in range(count)]
        payload = d.batch(windows, name="g", version="1", include_model=first, outbox={"produced": produced})
        return parse_batch(payload, d.name, hash_token(d.name))

    known: dict = {}
    group = [batch(devs[n], i + 1, 100 + i, first=True) for i, n in enumerate(names)]
    out = apply_batches(s, [*group[:4], batch(gone, 1, 1, first=True), *group[4:]], known, T0 + 100)
    assert isinstance(out[4], Rejected) and out[4].status == 401
    rows = {r.name: r for r in s.devices()}
    for i, n in enumerate(names):
        assert (rows[n].last_seen, rows[n].last_model, rows[n].last_seq, rows[n].outbox) == (
            T0 + 100, h, i, {"produced": 100 + i}), n
    assert (rows["revoked"].last_seen, rows["revoked"].last_seq, rows["revoked"].outbox) == (None, None, None)
    # Again, in another order: every row was rewritten above, so each lives somewhere else now.
    out = apply_batches(s, [batch(devs[n], 1, 200 + i) for i, n in enumerate(reversed(names))], known, T0 + 200)
    assert all(isinstance(o, Ack) for o in out)
    rows = {r.name: r for r in s.devices()}
    for i, n in enumerate(reversed(names)):
        assert (rows[n].last_seen, rows[n].last_seq, rows[n].outbox) == (T0 + 200, names.index(n) + 1,
                                                                         {"produced": 200 + i}), n


def test_roll_up_rows_deleted_under_a_running_writer_are_inserted_again(storage: SqlStorage) -> None:
    """The writer remembers which roll-up rows exist (to skip their INSERT); a row deleted
    behind its back (a restore, a manual prune) is inserted again, not lost or a 503."""
    s = storage
    h = model_hash("g", "1")
    a = SimDevice("a", make_profile(), h, seed=1)
    s.add_device("a", hash_token("a"), 0.0)
    w0, w1 = a.window(T0), a.window(T0 + 60)
    known: dict = {}

    def send(w: Window, first: bool = False) -> object:
        payload = a.batch([w], name="g", version="1", include_model=first)
        return apply_batches(s, [parse_batch(payload, "a", hash_token("a"))], known, T0)[0]

    assert send(w0, first=True) == Ack([0], [])
    with s.write() as tx:
        tx._exec("DELETE FROM rollups WHERE device = ?", ("a",))
    assert send(w1) == Ack([1], [])
    m = s.get_model(h)
    assert m is not None
    for level in ("h", "d"):
        got = _sum(s, level, "a")
        assert (got.windows, got.requests) == (1, w1.requests)
        assert np.array_equal(got.counts, m.vector(w1))
    fleet = _sum(s, "h", FLEET)  # the fleet's rows were not deleted: both windows
    assert (fleet.windows, fleet.requests) == (2, w0.requests + w1.requests)


def test_expand_minutes_gives_the_rows_of_merging_each_minute_into_empty_roll_ups() -> None:
    """A key fed by one minute is that minute's delta itself (no copy), a key fed by several
    is a sum of its own: the rows are those of merging every contributor into an empty
    roll-up, and the minutes handed in are left as they were."""
    from mlpack_edge.collector.rollup import expand_minutes

    h = model_hash("g", "1")
    m = pytest.importorskip("mlpack_edge.collector.models").model_from_upload
    a, b = SimDevice("a", make_profile(), h, seed=1), SimDevice("b", make_profile(), h, seed=2)
    info = m(h, a.batch([], name="g", version="1", include_model=True)["models"][h], "m")
    minutes = {}
    for d, t in ((a, T0), (a, T0 + 60), (b, T0)):
        r = Rollup()
        w = d.window(t)
        r.add_window(w, info.vector(w))
        minutes[("m", h, d.name, int(t) // 60 * 60)] = r
    before = {k: r.to_row() for k, r in minutes.items()}
    got = expand_minutes(minutes)
    want: dict = {}
    for (_, model, device, bucket), delta in minutes.items():
        for key in (("h", model, device, bucket // HOUR * HOUR), ("d", model, device, bucket // DAY * DAY),
                    ("m", model, FLEET, bucket), ("h", model, FLEET, bucket // HOUR * HOUR),
                    ("d", model, FLEET, bucket // DAY * DAY)):
            want.setdefault(key, Rollup()).merge(delta)
    assert {k: r.to_row() for k, r in got.items()} == {k: r.to_row() for k, r in want.items()}
    assert got[("m", h, FLEET, int(T0) // 60 * 60)].windows == 2  # a and b: a sum of its own
    assert {k: r.to_row() for k, r in minutes.items()} == before


def test_postgres_holds_a_devices_roll_up_rows_from_the_first_round_trip_and_the_fleets_only_at_the_end(
    storage: SqlStorage,
) -> None:
    """PostgreSQL: the group's first round trip reads and locks the device's own roll-up rows
    (hour, day, running totals), so merging them holds nothing another collector process
    waits for; the fleet's rows, shared by every group, are not locked yet."""
    if storage.dialect != "postgres":
        pytest.skip("row locks: PostgreSQL only")
    import psycopg

    s = storage
    h = model_hash("g", "1")
    a = SimDevice("a", make_profile(), h, seed=1)
    s.add_device("a", hash_token("a"), 0.0)
    known: dict = {}
    payload = a.batch([a.window(T0)], name="g", version="1", include_model=True)
    assert apply_batches(s, [parse_batch(payload, "a", hash_token("a"))], known, T0) == [Ack([0], [])]
    w1 = a.window(T0 + 1)
    with s.write(pipelined=True) as tx, psycopg.connect(s.url, autocommit=True) as other:
        tx.open_group(["a"], [("a", 1)], [(w1.model, "a", w1.start)])
        assert {k[0] for k in tx._prelocked} >= {"h", "d"}
        other.execute("SET lock_timeout = '100ms'")
        for device, locked in (("a", True), (FLEET, False)):
            try:
                n = len(other.execute("SELECT 1 FROM rollups WHERE device = %s FOR UPDATE NOWAIT", (device,)).fetchall())
                assert not locked and n >= 3, device  # the fleet's minute, hour and day
            except psycopg.errors.LockNotAvailable:
                assert locked, device


def test_postgres_leaves_room_on_the_pages_every_upload_updates(storage: SqlStorage) -> None:
    """Migration 10: roll-up and device pages keep 30% free, so the rows every upload rewrites
    are updated in place on their page (no new index entries)."""
    if storage.dialect != "postgres":
        pytest.skip("fillfactor: PostgreSQL only")
    with storage.write() as tx:
        rows = tx._exec("SELECT relname, reloptions FROM pg_class WHERE relname IN ('rollups', 'devices') "
                        "AND relnamespace = current_schema()::regnamespace").fetchall()
    assert dict(rows) == {"rollups": ["fillfactor=70"], "devices": ["fillfactor=70"]}
