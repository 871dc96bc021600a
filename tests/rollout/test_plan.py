"""Rollout plans and the state machine on a real database (SQLite and PostgreSQL), clock driven by the test.

Devices' telemetry goes through the collector's real ingest path (``parse_batch`` +
``apply_batches``), so "a device runs the new build" means what it means in production:
its windows carry the release's content hash.
"""

from __future__ import annotations

from typing import Any

import pytest

from mlpack_edge._rollout_plan import parse_duration, parse_labels, parse_stages
from mlpack_edge.collector import apply_batches, parse_batch
from mlpack_edge.collector import rollout as ro
from mlpack_edge.collector.auth import hash_token
from mlpack_edge.collector.storage import Release
from mlpack_edge.collector.storage._sql import SqlStorage
from mlpack_edge.errors import CollectorError
from tests.collector.sim import SimDevice, make_profile, model_hash

T0 = 1_764_000_000.0
OLD, NEW = model_hash("demo", "1.0.0"), model_hash("demo", "1.1.0")
PROFILE = make_profile()


def test_durations_stages_and_labels_parse_or_say_what_is_wrong() -> None:
    assert [parse_duration(t, "--hold") for t in ("90", "30s", "15m", "2h", "1d", "250ms")] == [
        90, 30, 900, 7200, 86400, 0.25]
    assert parse_stages("1,10,50,100") == [1, 10, 50, 100]
    assert parse_labels(["site=plant-a", "line = 2"]) == {"site": "plant-a", "line": "2"}
    for bad, message in [
        (lambda: parse_duration("2 weeks", "--hold"), "--hold: expected a duration such as 90s, 15m, 2h or 1d, got '2 weeks'"),
        (lambda: parse_stages("0,100"), "--stages: each stage is a percentage in (0, 100], got '0,100'"),
        (lambda: parse_stages("50,10,100"), "--stages: percentages must increase, got '50,10,100'"),
        (lambda: parse_stages("10,50"), "--stages: the last stage must be 100 (every targeted device), got '10,50'"),
        (lambda: parse_stages("a,100"), "--stages: expected percentages such as 1,10,50,100, got 'a,100'"),
        (lambda: parse_labels(["site"]), "--label 'site': expected KEY=VALUE (key up to 64, value up to 128 characters)"),
    ]:
        with pytest.raises(CollectorError) as exc:
            bad()
        assert str(exc.value) == message


def test_stage_membership_is_deterministic_cumulative_and_per_rollout() -> None:
    devices = [f"press-{i:02d}" for i in range(20)]
    a = ro.order("ro-a", devices)
    assert a == ro.order("ro-a", list(reversed(devices)))  # registration order does not matter
    assert sorted(a) == devices and a != devices
    assert ro.order("ro-b", devices) != a  # another rollout, another order
    sizes = [len(ro.stage_members([1, 10, 50, 100], a, i)) for i in range(4)]
    assert sizes == [1, 2, 10, 20]
    assert ro.stage_members([1, 10, 50, 100], a, 2)[:2] == ro.stage_members([1, 10, 50, 100], a, 1)
    assert ro.stage_members([1, 100], [], 0) == []
    # one more device registered later does not move the others' places among themselves
    b = ro.order("ro-a", [*devices, "press-99"])
    assert [d for d in b if d != "press-99"] == a


def _fleet(storage: SqlStorage, n: int, labels: dict[str, str] | None = None) -> list[SimDevice]:
    sims = []
    for i in range(n):
        name = f"press-{i:02d}"
        storage.add_device(name, hash_token(name), T0)
        storage.set_device_labels(name, labels or {"site": "a" if i % 2 == 0 else "b"})
        sims.append(SimDevice(name, PROFILE, OLD, seed=i))
    for sim in sims:
        report(storage, sim, OLD, T0)
    return sims


def report(storage: SqlStorage, sim: SimDevice, model: str, now: float, audit: list[dict[str, Any]] | None = None,
           rows: int = 400) -> None:
    """One window of ``model`` from ``sim`` through the real ingest path (and its update events);
    ``rows`` many enough that a drift verdict on one window is not chance (the hold judges it)."""
    sim.model = model
    version = "1.0.0" if model == OLD else "1.1.0"
    payload = sim.batch([sim.window(now - 60, rows=rows)], version=version, audit=audit or [])
    batch = parse_batch(payload, sim.name, hash_token(sim.name))
    (ack,) = apply_batches(storage, [batch], {}, now)
    assert not hasattr(ack, "status"), ack
    ro.observe_audit(storage, sim.name, batch.audit, now)


def _release(storage: SqlStorage) -> None:
    storage.add_release(Release(NEW, "demo", "1.1.0", 1000, "ab" * 32, "k" * 16, None, T0, "ops"))


def test_a_rollout_advances_stage_by_stage_after_its_hold(storage: SqlStorage) -> None:
    sims = {s.name: s for s in _fleet(storage, 10)}
    _release(storage)
    plan = ro.RolloutPlan(stages=(10, 50, 100), hold=100, shadow=0)
    r = ro.start_rollout(storage, "demo", "1.1.0", plan, T0 + 10)
    ordered, first = ro.members(storage, r)
    assert len(ordered) == 10 and len(first) == 1

    offers = ro.offers(storage, T0 + 11)
    assert set(offers) == set(first)  # only the first stage is offered the release
    (offer,) = offers[first[0]]
    assert (offer["action"], offer["hash"], offer["url"]) == ("install", NEW, f"/api/v1/releases/{NEW}/bundle")

    report(storage, sims[first[0]], NEW, T0 + 20)
    r = ro.evaluate(storage, storage.rollouts("demo")[0], T0 + 110)
    assert (r.state, r.stage) == ("active", 0)  # updated 90 s ago: hold not over
    r = ro.evaluate(storage, r, T0 + 121)
    assert (r.state, r.stage) == ("active", 1)
    _, second = ro.members(storage, r)
    assert len(second) == 5 and second[0] == first[0]
    for name in second[1:4]:
        report(storage, sims[name], NEW, T0 + 130)
    r = ro.evaluate(storage, r, T0 + 1000)
    assert r.stage == 1  # one device of the stage has not updated yet
    report(storage, sims[second[4]], NEW, T0 + 1001)
    r = ro.evaluate(storage, r, T0 + 1102)
    assert r.stage == 1  # hold over, but devices of the stage sent nothing from the new build during it
    for name in second[:4]:
        report(storage, sims[name], NEW, T0 + 1050)
    r = ro.evaluate(storage, r, T0 + 1102)
    assert r.stage == 2
    for name in ordered[5:]:
        report(storage, sims[name], NEW, T0 + 1200)
    for name in ordered[:5]:
        report(storage, sims[name], NEW, T0 + 1250)
    r = ro.evaluate(storage, r, T0 + 1301)
    assert r.state == "completed" and r.reason is None

    doc = ro.status(storage, storage.rollouts("demo")[0])
    assert [s["counts"] for s in doc["stages"]] == [{"updated": 1}, {"updated": 4}, {"updated": 5}]
    assert [e["event"] for e in doc["events"]] == ["started", "stage_started", "stage_started", "completed"]


def test_a_failed_update_fails_the_stage_and_its_devices_roll_back(storage: SqlStorage) -> None:
    sims = {s.name: s for s in _fleet(storage, 6)}
    _release(storage)
    r = ro.start_rollout(storage, "demo", "1.1.0", ro.RolloutPlan(stages=(50, 100), hold=10, shadow=0), T0)
    _, stage = ro.members(storage, r)
    assert len(stage) == 3
    report(storage, sims[stage[0]], NEW, T0 + 5)
    failure = {"rollout": r.id, "reason": "golden set: 3 of 26 rows differ on this CPU", "version": "1.1.0"}
    report(storage, sims[stage[1]], OLD, T0 + 6, audit=[{"seq": 0, "time": T0 + 6, "event": "update_failed",
                                                        "detail": failure}])
    r = ro.evaluate(storage, storage.rollouts("demo")[0], T0 + 7)
    assert r.state == "failed"
    assert r.reason == f"stage 1 (50%): device {stage[1]}: golden set: 3 of 26 rows differ on this CPU"
    offers = ro.offers(storage, T0 + 8)
    assert set(offers) == set(stage)  # the stage's devices (only) are told to go back
    assert {o[0]["action"] for o in offers.values()} == {"rollback"}
    doc = ro.status(storage, storage.rollouts("demo")[0])
    assert doc["stages"][0]["counts"] == {"failed": 1, "updated": 1, "waiting": 1}
    # the model is free again: a fixed build may be rolled out
    storage.add_release(Release(model_hash("demo", "1.1.1"), "demo", "1.1.1", 1, "cd" * 32, None, None, T0, "ops"))
    ro.start_rollout(storage, "demo", "1.1.1", ro.RolloutPlan(stages=(100,), hold=0, shadow=0), T0 + 9)


def test_one_active_rollout_per_model_pause_resume_abort(storage: SqlStorage) -> None:
    _fleet(storage, 4, labels={"site": "a"})
    _release(storage)
    plan = ro.RolloutPlan(stages=(100,), hold=0, shadow=0, labels=(("site", "a"),))
    r = ro.start_rollout(storage, "demo", "1.1.0", plan, T0)
    with pytest.raises(CollectorError, match=rf"model .demo. already has an active rollout \({r.id}, active\)"):
        ro.start_rollout(storage, "demo", "1.1.0", plan, T0 + 1)
    with pytest.raises(CollectorError, match=r"demo 2.0.0: not published \(published versions of demo: 1.1.0\)"):
        ro.start_rollout(storage, "demo", "2.0.0", plan, T0)
    with pytest.raises(CollectorError, match="--devices: press-77 not registered"):
        ro.start_rollout(storage, "demo", "1.1.0", ro.RolloutPlan(devices=("press-77",)), T0)
    assert len(ro.offers(storage, T0 + 1)) == 4

    assert ro.set_state(storage, "demo", "pause", T0 + 2).state == "paused"
    assert ro.offers(storage, T0 + 3) == {}  # paused: nobody new is offered the release
    with pytest.raises(CollectorError, match=r"already has an active rollout \(ro-[0-9a-f]+, paused\)"):
        ro.start_rollout(storage, "demo", "1.1.0", plan, T0 + 3)
    assert ro.set_state(storage, "demo", "resume", T0 + 4).state == "active"
    aborted = ro.set_state(storage, "demo", "abort", T0 + 5)
    assert (aborted.state, aborted.reason) == ("aborted", "aborted by an administrator")
    with pytest.raises(CollectorError, match="model 'demo' has no active or paused rollout"):
        ro.set_state(storage, "demo", "pause", T0 + 6)
    assert {o[0]["action"] for o in ro.offers(storage, T0 + 7).values()} == {"rollback"}


def test_targets_by_device_list_and_label(storage: SqlStorage) -> None:
    _fleet(storage, 6)
    _release(storage)
    by_label = ro.start_rollout(storage, "demo", "1.1.0", ro.RolloutPlan(stages=(100,), labels=(("site", "b"),)), T0)
    assert sorted(ro.members(storage, by_label)[0]) == ["press-01", "press-03", "press-05"]
    ro.set_state(storage, "demo", "abort", T0 + 1)
    listed = ro.start_rollout(storage, "demo", "1.1.0", ro.RolloutPlan(stages=(100,), devices=("press-02", "press-04")),
                              T0 + 2)
    assert sorted(ro.members(storage, listed)[0]) == ["press-02", "press-04"]
