"""The agent as the runtime uses it: record, tick, sync, status, start/stop, all with seams."""

from __future__ import annotations

import hashlib
import json
import random
import sqlite3
import threading
from pathlib import Path

import numpy as np
import pytest

from mlpack_edge.errors import BundleError, OutboxError
from mlpack_edge.monitor_agent.agent import Agent, ModelInfo
from mlpack_edge.monitor_agent.config import AgentConfig
from mlpack_edge.monitor_agent.drift import Thresholds
from mlpack_edge.monitor_agent.outbox import Outbox

from .helpers import T0, FakeClock, FakeCollector, fixed_sampler, traffic

CONFIG = AgentConfig(collector_url="http://127.0.0.1:9", device_id="press-07", token="t0ken", window_seconds=60)


def _agent(tmp_path: Path, model: ModelInfo, clock: FakeClock, collector: FakeCollector, **kw: object) -> Agent:
    return Agent.open(model, tmp_path, CONFIG, clock=clock, transport=collector, rng=random.Random(0),
                      sampler=fixed_sampler, **kw)


def test_windows_flow_from_predictions_to_the_collector(
    tmp_path: Path, model: ModelInfo, clock: FakeClock, collector: FakeCollector
) -> None:
    agent = _agent(tmp_path, model, clock, collector, sample_seconds=20)
    rng = np.random.default_rng(0)
    for minute in range(3):
        for _ in range(6):
            agent.recorder.record(*traffic(rng, 4), 0.002)
            agent.tick()
            clock.advance(10)
    agent.tick()
    assert agent.outbox.accounting().pending == 3
    result = agent.sync()
    assert (result.outcome, result.delivered) == ("delivered", 3)
    stored = sorted(collector.windows.values(), key=lambda w: w["seq"])
    assert [(w["start"], w["rows"], w["system"]["samples"]) for w in stored] == [
        (T0, 24, 3), (T0 + 60, 24, 3), (T0 + 120, 24, 3),
    ]
    assert collector.requests[0]["models"][model.content_hash]["profile"] == model.profile.to_dict()


def test_status_combines_stored_and_live_windows(
    tmp_path: Path, model: ModelInfo, clock: FakeClock, collector: FakeCollector
) -> None:
    agent = _agent(tmp_path, model, clock, collector)
    rng = np.random.default_rng(1)
    agent.recorder.record(*traffic(rng, 500), 0.004)
    clock.advance(60)
    agent.tick()  # closes the first window
    agent.recorder.record(*traffic(rng, 500, shift=15.0), 0.004)  # still open
    report = agent.status(hours=1)
    assert (report.rows, report.requests) == (1000, 2)
    assert report.status == "drift" and report.features[0].name == "age" and report.features[0].status == "drift"
    colour = next(f for f in report.features if f.name == "colour")
    assert "unseen" in colour.flags  # 'purple' is not a training category
    assert report.latency["p50"] == pytest.approx(0.004, rel=0.01)
    text = agent.metrics_text(hours=1)
    assert 'mlpack_drift_status{model="churn",version="1.2.0",feature="age"} 2' in text
    assert 'mlpack_outbox_windows{model="churn",version="1.2.0",state="pending"} 1' in text
    assert "# TYPE mlpack_drift_psi gauge" in text


def test_stop_stores_the_open_window_and_threads_end(tmp_path: Path, model: ModelInfo, collector: FakeCollector) -> None:
    agent = Agent.open(model, tmp_path, CONFIG, transport=collector, sampler=fixed_sampler)  # real clock
    agent.start()
    agent.recorder.record(*traffic(np.random.default_rng(2), 3), 0.001)
    agent.stop()
    assert not [t for t in threading.enumerate() if t.name.startswith("mlpack-agent")]
    with Outbox.open(tmp_path) as box:
        rows = sum(w.rows for w in box.pending_windows()) + sum(w["rows"] for w in collector.windows.values())
        assert rows == 3


def test_model_info_from_bundle_bytes(profile: object) -> None:
    manifest = json.dumps({"name": "churn", "version": "2.0.0", "drift": {"psi_warn": 0.05, "psi_drift": 0.3}}).encode()
    prof = json.dumps(profile.to_dict()).encode()  # type: ignore[attr-defined]
    info = ModelInfo.from_bundle_bytes(manifest, prof)
    assert info.content_hash == hashlib.sha256(manifest).hexdigest()
    assert info.thresholds == Thresholds(0.05, 0.3) and info.profile == profile
    with pytest.raises(BundleError, match=r"^bundle/manifest.json: expected name and version strings$"):
        ModelInfo.from_bundle_bytes(b'{"name": 1}', prof)
    with pytest.raises(BundleError, match=r"^bundle/profile.json: unsupported format None"):
        ModelInfo.from_bundle_bytes(manifest, b"{}")


def test_deferred_agent_touches_the_disk_only_when_it_stores_a_window(
    tmp_path: Path, model: ModelInfo, clock: FakeClock
) -> None:
    """One-shot (batch predict): no outbox, no thread until a window closes; one system sample per stored window."""
    state = tmp_path / "state"
    agent = Agent.open(model, state, AgentConfig(window_seconds=60), clock=clock, sampler=fixed_sampler, deferred=True)
    rng = np.random.default_rng(3)
    agent.recorder.record(*traffic(rng, 5), 0.002)
    assert not state.exists()  # nothing opened, nothing created yet
    clock.advance(60)
    agent.recorder.record(*traffic(rng, 2), 0.002)  # closes the first window from record (auto_roll)
    assert (state / "outbox.sqlite").exists()
    agent.stop()
    assert not [t for t in threading.enumerate() if t.name.startswith("mlpack-agent")]
    empty = Agent.open(model, tmp_path / "empty", clock=clock, sampler=fixed_sampler, deferred=True)
    empty.stop()
    assert not (tmp_path / "empty").exists()  # recorded nothing, stored nothing
    with Outbox.open(state) as box:
        windows = box.pending_windows()
        assert [(w.start, w.rows, w.system.samples) for w in windows] == [(T0, 5, 1), (T0 + 60, 2, 1)]
        assert set(box.models()) == {model.content_hash}  # registered when the outbox was opened


def test_deferred_agent_on_a_bad_state_dir_logs_one_line_and_never_raises(
    tmp_path: Path, model: ModelInfo, clock: FakeClock, caplog: pytest.LogCaptureFixture
) -> None:
    (tmp_path / "file").write_text("not a folder")
    agent = Agent.open(model, tmp_path / "file" / "state", clock=clock, sampler=fixed_sampler, deferred=True)
    agent.recorder.record(*traffic(np.random.default_rng(4), 3), 0.002)
    agent.stop()
    assert [(r.levelname, r.exc_info) for r in caplog.records] == [("ERROR", None)]
    assert caplog.records[0].getMessage() == (
        f"telemetry window {T0}..{T0} not stored: {tmp_path / 'file' / 'state'}: cannot create the state directory"
        " (Not a directory)"
    )


def test_an_eager_agent_fails_at_open_on_a_bad_state_dir(tmp_path: Path, model: ModelInfo) -> None:
    (tmp_path / "file").write_text("not a folder")
    with pytest.raises(OutboxError, match=r"cannot create the state directory \(Not a directory\)$"):
        Agent.open(model, tmp_path / "file" / "state", sampler=fixed_sampler)


class _RecordingEvent(threading.Event):
    """The tick thread's wake event, counting ``set`` calls."""

    def __init__(self) -> None:
        super().__init__()
        self.sets = 0

    def set(self) -> None:
        self.sets += 1
        super().set()


def test_a_started_agent_wakes_its_tick_to_write_ids_every_so_many_rows(
    tmp_path: Path, model: ModelInfo, clock: FakeClock
) -> None:
    """Ids wait in memory for the tick only up to TICK_DRAIN_ROWS rows (a second of a busy serve's
    ids as Python objects was megabytes); past that, the tick thread is woken to write them. A
    batch's generated run is held without its strings: it counts 1 + n // RUN_IDS_PER_HELD_ROW."""
    from mlpack_edge.monitor_agent.agent import RUN_IDS_PER_HELD_ROW, TICK_DRAIN_ROWS

    agent = Agent.open(model, tmp_path, AgentConfig(window_seconds=60), clock=clock, sampler=fixed_sampler)
    agent.start()
    runs = -(-(TICK_DRAIN_ROWS // 2) // (1 + 100 // RUN_IDS_PER_HELD_ROW))  # runs of 100 to the bound
    try:
        agent._wake = wake = _RecordingEvent()  # noqa: SLF001 - the tick thread waits on the old one until its timeout
        given = [f"given-{i}" for i in range(TICK_DRAIN_ROWS // 2)]
        agent.remember(given, np.zeros(len(given)))
        assert wake.sets == 0  # below the bound: the next tick writes them
        for _ in range(runs - 1):
            agent.remember(agent.new_ids(100), np.ones(100))
        assert wake.sets == 0  # runs - 1 runs of 100 (thousands of ids) are still below it
        agent.remember(agent.new_ids(100), np.ones(100))
        assert wake.sets == 1
        agent.remember(agent.new_ids(1), np.ones(1))
        assert wake.sets == 1  # one wake per drain, not one per request
    finally:
        agent.stop()
    con = sqlite3.connect(tmp_path / "feedback.sqlite")
    try:
        stored = con.execute("SELECT COALESCE(SUM(last - first + 1), 0) FROM blocks").fetchone()[0]
        stored += con.execute("SELECT COUNT(*) FROM predictions").fetchone()[0]
    finally:
        con.close()
    assert stored == len(given) + 100 * runs + 1  # all written by the exit at the latest, none twice
    assert agent._remembered_rows == 0 and agent._held_in == agent._held_out > 0  # noqa: SLF001 - all drained


def test_the_stores_keep_a_small_sqlite_page_cache(tmp_path: Path, model: ModelInfo, clock: FakeClock) -> None:
    """2 MB (SQLite's default) per connection was a serving process's memory held for pages the OS caches anyway."""
    from mlpack_edge.monitor_agent._store import CACHE_KIB

    agent = Agent.open(model, tmp_path, AgentConfig(window_seconds=60), clock=clock, sampler=fixed_sampler)
    try:
        assert CACHE_KIB <= 512
        assert agent.outbox._conn.execute("PRAGMA cache_size").fetchone()[0] == -CACHE_KIB  # noqa: SLF001
        assert agent.feedback._conn.execute("PRAGMA cache_size").fetchone()[0] == -CACHE_KIB  # noqa: SLF001
    finally:
        agent.stop()
