"""A stage advances only if its devices are healthy on the new build over the hold: errors
and drift from the collector's stored windows (real ingest path, SQLite and PostgreSQL,
clock driven by the test)."""

from __future__ import annotations

import pytest

from mlpack_edge.collector import rollout as ro
from mlpack_edge.collector.auth import hash_token
from mlpack_edge.collector.storage import Release
from mlpack_edge.collector.storage._sql import SqlStorage
from tests.collector.sim import SimDevice
from tests.rollout.test_plan import NEW, OLD, PROFILE, T0, report

PLAN = ro.RolloutPlan(stages=(50, 100), hold=600, shadow=0, error_factor=2.0)


def _setup(storage: SqlStorage, history: int = 5, old_rate: float = 0.01
           ) -> tuple[dict[str, SimDevice], ro.Rollout, list[str]]:
    """Two devices, each with ``history`` windows of the old build (``old_rate`` errors), a release and
    its rollout; returns the sims, the rollout and the first stage's devices."""
    sims = {}
    for i in range(2):
        name = f"press-{i:02d}"
        storage.add_device(name, hash_token(name), T0)
        storage.set_device_labels(name, {"site": "a"})
        sims[name] = SimDevice(name, PROFILE, OLD, seed=i, error_rate=old_rate)
        for k in range(history):
            report(storage, sims[name], OLD, T0 + 60 * k)
    storage.add_release(Release(NEW, "demo", "1.1.0", 1000, "ab" * 32, "k" * 16, None, T0, "ops"))
    devices = tuple(sims) if not history else ()
    r = ro.start_rollout(storage, "demo", "1.1.0", ro.RolloutPlan(**{**PLAN.__dict__, "devices": devices}), T0 + 1000)
    _, first = ro.members(storage, r)
    assert len(first) == 1
    return sims, r, first


def _run_new_build(storage: SqlStorage, sim: SimDevice, windows: int = 6, start: float = T0 + 1100) -> None:
    for k in range(windows):
        report(storage, sim, NEW, start + 120 * k)


def test_a_healthy_device_advances_the_stage(storage: SqlStorage) -> None:
    sims, r, (first,) = _setup(storage)
    _run_new_build(storage, sims[first])
    r = ro.evaluate(storage, storage.rollouts("demo")[0], T0 + 1699)
    assert (r.state, r.stage) == ("active", 0)  # hold not over
    r = ro.evaluate(storage, r, T0 + 1701)
    assert (r.state, r.stage, r.reason) == ("active", 1, None), r.reason


def test_a_worse_error_rate_over_the_hold_fails_the_stage(storage: SqlStorage) -> None:
    sims, r, (first,) = _setup(storage)
    sims[first].error_rate = 0.3
    _run_new_build(storage, sims[first])
    r = ro.evaluate(storage, storage.rollouts("demo")[0], T0 + 1701)
    assert r.state == "failed"
    assert r.reason is not None and r.reason.startswith(f"stage 1 (50%): device {first}: error rate ")
    assert " on 1.1.0 vs " in r.reason and " on 1.0.0 (error factor 2)" in r.reason
    # both values, as counted from the stored windows
    assert "of 2400 requests" in r.reason and "of 2000)" in r.reason
    (event,) = [e for e in storage.rollout_events(r.id) if e["event"] == "stage_failed"]
    assert event["detail"]["metric"] == "error_rate" and event["detail"]["devices"] == [first]
    offers = ro.offers(storage, T0 + 1702)
    assert set(offers) == {first} and offers[first][0]["action"] == "rollback"


def test_drift_on_the_new_build_where_the_old_was_ok_fails_the_stage(storage: SqlStorage) -> None:
    sims, r, (first,) = _setup(storage)
    sims[first].shift = 3.0
    _run_new_build(storage, sims[first])
    r = ro.evaluate(storage, storage.rollouts("demo")[0], T0 + 1701)
    assert r.state == "failed", r.reason
    assert r.reason is not None and r.reason.startswith(f"stage 1 (50%): device {first}: drift on x0 (PSI ")
    assert r.reason.endswith("on 1.1.0 vs ok on 1.0.0 before the update")
    (event,) = [e for e in storage.rollout_events(r.id) if e["event"] == "stage_failed"]
    assert event["detail"]["metric"] == "drift"


def test_without_previous_telemetry_the_absolute_failing_rule_applies(storage: SqlStorage) -> None:
    sims, r, (first,) = _setup(storage, history=0)
    sims[first].error_rate = 0.02  # below 5%: not failing
    _run_new_build(storage, sims[first])
    r = ro.evaluate(storage, storage.rollouts("demo")[0], T0 + 1701)
    assert (r.state, r.stage) == ("active", 1), r.reason
    (second,) = [d for d in sims if d != first]
    sims[second].error_rate = 0.4
    _run_new_build(storage, sims[second], start=T0 + 1800)
    report(storage, sims[first], NEW, T0 + 1900)
    r = ro.evaluate(storage, r, T0 + 1800 + 601)
    assert r.state == "failed"
    assert r.reason is not None and r.reason.startswith(f"stage 2 (100%): device {second}: error rate ")
    assert "no telemetry from the previous build (failing at >= 5% of >= 20 requests)" in r.reason


def test_a_device_silent_during_the_hold_keeps_the_stage_waiting(storage: SqlStorage) -> None:
    sims, r, (first,) = _setup(storage)
    _run_new_build(storage, sims[first])
    r = ro.evaluate(storage, storage.rollouts("demo")[0], T0 + 1701)
    assert r.stage == 1
    (second,) = [d for d in sims if d != first]
    report(storage, sims[second], NEW, T0 + 1800)  # the hold of stage 2 starts here
    r = ro.evaluate(storage, r, T0 + 2500)
    assert (r.state, r.stage) == ("active", 1)  # the first device sent nothing since: waiting, not failed
    report(storage, sims[first], NEW, T0 + 2510)
    r = ro.evaluate(storage, r, T0 + 2520)
    assert r.state == "completed"


@pytest.mark.parametrize(("rate", "passes"), [(0.06, True), (0.25, False)])
def test_an_error_rate_within_the_factor_passes(storage: SqlStorage, rate: float, passes: bool) -> None:
    sims, r, (first,) = _setup(storage, old_rate=0.05)  # errors were already common on 1.0.0
    sims[first].error_rate = rate
    _run_new_build(storage, sims[first])
    r = ro.evaluate(storage, storage.rollouts("demo")[0], T0 + 1701)
    assert (r.state, r.stage) == (("active", 1) if passes else ("failed", 0)), r.reason


@pytest.mark.parametrize(("scale", "passes"), [(1.3, True), (2.5, False)])
def test_a_p95_latency_worse_than_the_factor_over_the_hold_fails_the_stage(storage: SqlStorage, scale: float,
                                                                         passes: bool) -> None:
    sims, r, (first,) = _setup(storage)
    sims[first].latency_scale = scale  # every request of the new build takes ``scale`` times as long
    _run_new_build(storage, sims[first])
    r = ro.evaluate(storage, storage.rollouts("demo")[0], T0 + 1701)
    if passes:  # p95 factor 1.5 (the plan's default)
        assert (r.state, r.stage) == ("active", 1), r.reason
        return
    assert r.state == "failed"
    assert r.reason is not None and r.reason.startswith(f"stage 1 (50%): device {first}: p95 latency ")
    # both p95s from the merged histograms of the stored windows, with their request counts
    assert " ms (2400 requests) on 1.1.0 vs " in r.reason and " ms (2000) on 1.0.0 (p95 factor 1.5)" in r.reason
    new_ms, old_ms = (float(r.reason.split("p95 latency ")[1].split(" ms")[0]),
                      float(r.reason.split(" vs ")[1].split(" ms")[0]))
    assert 2.0 < new_ms / old_ms < 3.0
    (event,) = [e for e in storage.rollout_events(r.id) if e["event"] == "stage_failed"]
    assert event["detail"]["metric"] == "p95_latency"


def test_too_few_timed_requests_give_no_latency_verdict(storage: SqlStorage) -> None:
    sims, r, (first,) = _setup(storage)
    sims[first].latency_scale = 5.0
    report(storage, sims[first], NEW, T0 + 1100, rows=40)  # 40 timed requests: below the 50 needed
    r = ro.evaluate(storage, storage.rollouts("demo")[0], T0 + 1701)
    assert (r.state, r.stage) == ("active", 1), r.reason
