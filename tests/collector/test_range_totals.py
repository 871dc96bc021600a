"""The fleet page from running totals (migration 9) says exactly what the roll-ups say.

Real ingest path (``apply_batches``) on a real SQLite file and PostgreSQL schema, an
injected clock: devices upload over nine days (late windows, a replay and a refused
conflict included); at each step, for the page's 24 h and 7 day ranges, the overview
from the running totals equals the one scored from roll-ups — statuses, counts, worst
features, alerts — while the clock moves on by an hour, hours, days and past the range.
"""

from __future__ import annotations

import time

import pytest

from mlpack_edge.collector import fleet_overview, time_range
from mlpack_edge.collector.queries import device_table
from mlpack_edge.collector.ingest import Ack, apply_batches, parse_batch
from mlpack_edge.collector.rollup import HOUR
from mlpack_edge.collector.storage import LATEST, Storage
from tests.collector.sim import SimDevice, make_profile, model_hash

T0 = 1_800_000_000 + 1800.0  # half past an hour



def _devices(storage: Storage) -> dict[str, SimDevice]:
    profile, h = make_profile(), model_hash("totals", "1.0.0")
    devs = {
        "t-steady": SimDevice("t-steady", profile, h, seed=1),
        "t-drift": SimDevice("t-drift", profile, h, seed=2, shift=2.0),
        "t-failing": SimDevice("t-failing", profile, h, seed=3, error_rate=0.3),
        "t-old": SimDevice("t-old", profile, h, seed=4, shift=2.0),  # drifted, days ago only
    }
    for name in devs:
        storage.add_device(name, "hash-" + name, T0 - 20 * 86400)
    return devs


def _send(storage: Storage, dev: SimDevice, starts: list[float], now: float) -> list:
    payload = dev.batch([dev.window(t) for t in starts], name="totals")
    return apply_batches(storage, [parse_batch(payload, dev.name, "hash-" + dev.name)], {}, now)


def _same(storage: Storage, now: float) -> dict[int, dict]:
    """Both ranges' overviews from totals equal those from roll-ups; the totals were used."""
    out = {}
    for hours in (24, 168):
        rng = time_range(None, None, now, hours)
        fast = fleet_overview(storage, rng, now)
        assert storage.range_totals(rng.start, rng.end) is not None, (hours, now)
        assert fast == fleet_overview(storage, rng, now, totals=False), (hours, now)
        out[hours] = {d["name"]: d for d in fast["devices"]}
        # The page's rows not shown skip the verdict's loop where every feature is plainly ok:
        # same worst feature and status as the full verdict.
        brief = device_table(storage, rng, now, 3600.0, detail=lambda rows: [], totals=True)
        full = device_table(storage, rng, now, 3600.0)
        assert [(r["name"], r["status"], r["worst"] and (r["worst"]["feature"], r["worst"]["status"])) for r in brief] \
            == [(r["name"], r["status"], r["worst"] and (r["worst"]["feature"], r["worst"]["status"])) for r in full]
    return out


def test_totals_equal_rollups_as_time_moves_on(storage: Storage) -> None:
    devs = _devices(storage)
    old = devs.pop("t-old")
    assert isinstance(_send(storage, old, [T0 - 6 * 86400 + 60 * k for k in range(10)], T0)[0], Ack)
    for dev in devs.values():  # every 3 h over nine days, ten minutes each time
        for k in range(72, -1, -1):
            outcome = _send(storage, dev, [T0 - k * 3 * HOUR - 600 + 60 * i for i in range(10)], T0)
            assert isinstance(outcome[0], Ack), outcome
    first = _same(storage, T0)
    assert {n: r["status"] for n, r in first[24].items()} == {
        "t-failing": "failing", "t-drift": "drift", "t-steady": "ok", "t-old": "idle"}
    assert first[168]["t-old"]["worst"]["status"] == "drift" and first[24]["t-old"]["worst"] is None

    # A replay of stored windows adds nothing; a conflicting one is refused and adds nothing.
    dev = devs["t-steady"]
    dev.seq -= 10
    again = SimDevice(dev.name, dev.profile, dev.model, seed=7)
    again.seq = dev.seq
    sent = again.batch([again.window(T0 - 600 + 60 * i) for i in range(10)], name="totals")
    replay = apply_batches(storage, [parse_batch(sent, dev.name, "hash-" + dev.name)], {}, T0)
    assert not isinstance(replay[0], Ack)  # other contents than the stored windows: refused
    assert storage.conflicts(device=dev.name)
    same = _same(storage, T0)
    assert same[24]["t-steady"]["requests"] == first[24]["t-steady"]["requests"]
    fresh = SimDevice(dev.name, dev.profile, dev.model, seed=8)
    fresh.seq = 50_000
    sent = fresh.batch([fresh.window(T0 - 120)], name="totals")
    for _ in range(2):  # the same window twice: stored once
        assert isinstance(apply_batches(storage, [parse_batch(sent, dev.name, "hash-" + dev.name)], {}, T0)[0], Ack)
    same = _same(storage, T0)
    assert same[24]["t-steady"]["requests"] == first[24]["t-steady"]["requests"] + 50

    # The clock moves on: an hour, a few hours (with new and late windows), two days, past the whole range.
    for step, late in ((HOUR, False), (5 * HOUR, True), (2 * 86400, True), (10 * 86400, False)):
        now = T0 + step
        for d in devs.values():
            d.seq = max(d.seq, 60_000 + int(step))  # seqs keep rising whatever was sent before
            starts = [now - 300 + 60 * i for i in range(3)]
            if late:  # an outbox catching up: windows from hours ago
                starts = [now - 20 * HOUR + 60 * i for i in range(3)] + starts
            assert isinstance(_send(storage, d, starts, now)[0], Ack)
        _same(storage, now)


def test_migration_9_backfills_an_old_database(storage: Storage) -> None:
    devs = _devices(storage)
    now = time.time()
    for dev in devs.values():
        for k in range(60, -1, -4):
            _send(storage, dev, [now - k * 3 * HOUR - 600 + 60 * i for i in range(5)], now)
    with storage.write() as tx:  # back to schema 8: no totals
        tx._exec("DELETE FROM rollups WHERE level IN ('t24', 't168')")
        tx._exec("DROP TABLE range_totals")
        tx._exec("DELETE FROM schema_version WHERE version >= 9")
    assert storage.migrate() == 8
    assert storage.schema_version() == LATEST
    now = time.time()
    rng = time_range(None, None, now, 168)
    built = storage.range_totals(rng.start, rng.end)  # by the migration, before any page asks
    assert built is not None and sorted(r[0] for r in built) == sorted(devs)
    _same(storage, now)


def test_scores_kept_by_a_process_follow_writes_by_another(storage: Storage) -> None:
    """The page's scores cached in one process (:class:`queries._RangeScores`) are checked
    against the database on every page: windows ingested through another connection (a
    second collector process sharing the database), a device revoked and one that changes
    model all show at once, equal to the page scored from roll-ups."""
    from mlpack_edge.collector import open_storage

    devs = _devices(storage)
    for dev in devs.values():
        assert isinstance(_send(storage, dev, [T0 - 3 * HOUR + 60 * i for i in range(20)], T0)[0], Ack)
    before = _same(storage, T0)  # scores now kept by this process
    assert before[24]["t-steady"]["status"] == "ok"
    other = open_storage(storage.url)
    try:
        # t-steady starts to drift (its later windows shifted), through the other connection.
        steady = devs["t-steady"]
        drifting = SimDevice(steady.name, steady.profile, steady.model, seed=11, shift=3.0)
        drifting.seq = steady.seq + 1000
        sent = drifting.batch([drifting.window(T0 - 2 * HOUR + 60 * i) for i in range(60)], name="totals")
        assert isinstance(apply_batches(other, [parse_batch(sent, steady.name, "hash-t-steady")], {}, T0)[0], Ack)
        other.revoke_device("t-failing", T0)
        after = _same(storage, T0)
    finally:
        other.close()
    assert after[24]["t-steady"]["status"] == "drift"
    assert after[24]["t-steady"]["requests"] > before[24]["t-steady"]["requests"]
    assert after[24]["t-failing"]["status"] == "revoked"
    # A page of one device: the worst feature of a page's row carries its test's figures.
    rng = time_range(None, None, T0, 24)
    page = fleet_overview(storage, rng, T0, per_page=1, page=2)
    assert len(page["devices"]) == 1 and page["devices"][0]["worst"]["n"] is not None
    assert page == fleet_overview(storage, rng, T0, per_page=1, page=2, totals=False)


def test_rebuild_after_idle_is_stepped_and_counts_windows_sent_between_steps(storage: Storage) -> None:
    """After longer idle than the range, the totals are rebuilt a day (or
    :data:`_range_totals.EDGE_HOURS` edge hours) per write transaction, not in one holding
    the write lock; windows ingested between two steps, inside and beyond the part already
    rebuilt, are counted once."""
    from mlpack_edge.collector.storage import _range_totals

    devs = _devices(storage)
    for dev in devs.values():
        for k in range(40, -1, -4):
            assert isinstance(_send(storage, dev, [T0 - k * 3 * HOUR - 600 + 60 * i for i in range(5)], T0)[0], Ack)
    _same(storage, T0)
    now = T0 + 9 * 86400  # both ranges' old totals are entirely behind
    for d in devs.values():  # the days before now, so the rebuild has roll-ups to read
        d.seq += 100_000
        assert isinstance(_send(storage, d, [now - k * 5 * HOUR for k in range(30, 0, -1)], now)[0], Ack)
    steps, partial = 0, []
    while True:
        with storage.write() as tx:
            if not _range_totals.advance(tx, 168, now):
                break
        steps += 1
        state = storage._query("SELECT since, until FROM range_totals WHERE span = 168")[0]
        partial.append(tuple(state))
        if steps in (2, 4):  # windows between steps: one in the part already rebuilt, one beyond it
            for d in devs.values():
                d.seq += 1000
                assert isinstance(_send(storage, d, [state[1] - 2 * HOUR, state[1] + 2 * HOUR], now)[0], Ack)
    assert steps >= 7 and len({p[0] for p in partial}) == 1 and [p[1] for p in partial] == sorted(p[1] for p in partial)
    _same(storage, now)
