"""A window replayed with a stored window's seq but other contents: 409, the first kept, made visible.

Against a real collector process (SQLite and PostgreSQL): the HTTP reply, what stays
stored, the conflict counter on /metrics, the alert on the fleet API and page, and the
collector-side event on the device's page. Then the device side: a real agent whose
outbox was reset (seq numbers start again from 0 with other traffic) uploads to a real
collector; the refused windows go to its dead-letter table with the reason, the rest
are delivered, and its accounting still balances.
"""

from __future__ import annotations

import json
import re
import time
import uuid
from pathlib import Path

import numpy as np
import pytest

from mlpack_edge.collector import admin, open_storage
from mlpack_edge.monitor_agent.agent import Agent, ModelInfo
from mlpack_edge.monitor_agent.config import AgentConfig
from mlpack_edge.monitor_agent.drift import Thresholds
from tests.collector.process import Collector, start_collector, stop_collector
from tests.collector.sim import gz
from tests.monitor_agent.helpers import FakeClock, fixed_sampler, traffic
from tests.monitor_agent.helpers import make_profile as agent_profile

from .test_api import post


def _conflicts_total(c: Collector) -> int:
    with c.client() as cl:
        text = cl.get("/metrics").text
    match = re.search(r"^mlpack_collector_ingest_conflicts_total ([0-9.e+]+)$", text, re.M)
    assert match, text
    return int(float(match.group(1)))


def _stored_body(c: Collector, device: str, seq: int) -> dict:
    s = open_storage(c.db_url, migrate=False)
    try:
        rows = s._query("SELECT body FROM windows WHERE device = ? AND seq = ?", (device, seq))
        return json.loads(rows[0][0])
    finally:
        s.close()


def test_a_replay_with_other_contents_is_409_and_the_first_is_kept(collector, profile, demo_hash) -> None:
    dev, token = collector.device(profile, demo_hash)
    now = time.time()
    windows = [dev.window(now - 900 + 60 * i) for i in range(3)]
    assert post(collector, token, gz(dev.batch(windows))).status_code == 200
    before = _conflicts_total(collector)

    dev.seq = 1
    forged = dev.window(windows[1].start)  # seq 1 again, other traffic
    fresh = dev.window(now - 700)  # seq 2 again, other traffic too
    dev.seq = 3
    new = dev.window(now - 600)
    r = post(collector, token, gz(dev.batch([forged, new])))
    assert (r.status_code, r.json()) == (
        409,
        {"error": f"windows[0]: seq 1-1 of device {dev.name} was stored with other contents; the stored window is"
                  " kept and this one refused (outbox reset, device bug or forgery)"},
    )
    assert _stored_body(collector, dev.name, 1) == json.loads(json.dumps(windows[1].to_dict()))  # the first one kept
    assert _conflicts_total(collector) == before + 1
    # the identical replay is still a duplicate, and the new window goes through once the forged one is left out
    r = post(collector, token, gz(dev.batch([windows[1], new])))
    assert (r.status_code, r.json()) == (200, {"stored": [3], "duplicates": [1]})
    r = post(collector, token, gz(dev.batch([fresh])))
    assert r.status_code == 409  # seq 2 with other contents
    assert post(collector, token, gz(dev.batch([forged]))).status_code == 409  # tried again: counted again

    s = open_storage(collector.db_url, migrate=False)
    try:
        refused = {c["seq"]: c for c in s.conflicts(device=dev.name)}
        assert s.window_count(dev.name) == 4
    finally:
        s.close()
    assert sorted(refused) == [1, 2]
    assert refused[1]["attempts"] == 2 and refused[1]["reason"] == "other contents than the stored window"
    assert _conflicts_total(collector) == before + 3

    with collector.client() as cl:
        alerts = [a for a in cl.get("/api/v1/alerts").json()["alerts"] if a["device"] == dev.name]
        page = cl.get("/").text
        device_page = cl.get(f"/devices/{dev.name}").text
        detail = cl.get(f"/api/v1/devices/{dev.name}").json()
    assert [a["kind"] for a in alerts] == ["replay_conflict"]
    assert alerts[0]["severity"] == "critical"
    assert alerts[0]["message"].startswith(
        f"{dev.name}: 2 replayed windows refused, same sequence numbers as stored ones but other contents (seq 1, 2, last "
    )
    assert alerts[0]["message"].endswith("); the stored windows are kept. Outbox reset, device bug or forgery")
    assert 'data-kind="replay_conflict"' in page
    events = [a for a in detail["audit"] if a["event"] == "replay_refused"]
    assert sorted((e["origin"], e["detail"]["seq"], e["detail"]["attempts"]) for e in events) == [
        ("collector", "1-1", 2), ("collector", "2-2", 1)
    ]
    assert "replay_refused" in device_page and "other contents than the stored window" in device_page


def test_a_window_twice_in_one_batch_with_other_contents_is_409(collector, profile, demo_hash) -> None:
    dev, token = collector.device(profile, demo_hash)
    a = dev.window(time.time() - 300)
    dev.seq = 0
    b = dev.window(time.time() - 300)
    r = post(collector, token, gz(dev.batch([a, b])))
    assert (r.status_code, r.json()) == (409, {"error": "windows[1]: seq 0-0 appears twice in the batch with different contents"})
    r = post(collector, token, gz(dev.batch([a, a])))
    assert (r.status_code, r.json()) == (200, {"stored": [0], "duplicates": [0]})


def _record(agent: Agent, clock: FakeClock, windows: int, rng: np.random.Generator) -> None:
    for _ in range(windows):
        agent.recorder.record(*traffic(rng, int(rng.integers(5, 30))), 0.002)
        clock.advance(60)
        agent.tick()


def test_an_agent_whose_outbox_was_reset_dead_letters_the_refused_windows(tmp_path: Path, sqlite_url: str) -> None:
    collector = start_collector(sqlite_url)
    try:
        device = f"dev-{uuid.uuid4().hex[:8]}"
        token = admin.add_device(sqlite_url, device)
        model = ModelInfo("cd" * 32, "churn", "1.2.0", agent_profile(), Thresholds())
        config = AgentConfig(collector.url, device, token)
        clock = FakeClock()
        first = Agent.open(model, tmp_path / "state-a", config, clock=clock, sampler=fixed_sampler)
        try:
            _record(first, clock, 4, np.random.default_rng(1))
            assert first.sync().delivered == 4
        finally:
            first.stop()
        kept = [_stored_body(collector, device, s) for s in range(1, 5)]  # the agent numbers from 1

        # The device's state folder is lost (a new SD card, uninstall --purge): numbering starts again.
        second = Agent.open(model, tmp_path / "state-b", config, clock=clock, sampler=fixed_sampler)
        try:
            _record(second, clock, 6, np.random.default_rng(2))
            result = second.sync()
            assert (result.outcome, result.delivered, result.dead_lettered) == ("refused", 2, 4)
            letters = second.outbox.dead_letters()
            assert [(d.kind, d.seq, d.status) for d in letters] == [("window", s, 409) for s in range(1, 5)]
            assert letters[0].reason == (
                f"HTTP 409: windows[0]: seq 1-1 of device {device} was stored with other contents; the stored window"
                " is kept and this one refused (outbox reset, device bug or forgery)"
            )
            acc = second.outbox.accounting()
            assert (acc.produced, acc.delivered, acc.dead_letter, acc.pending) == (6, 2, 4, 0) and acc.balanced
            assert second.sync().outcome in ("nothing", "delivered")  # nothing refused is retried
        finally:
            second.stop()
        assert [_stored_body(collector, device, s) for s in range(1, 5)] == kept
        s = open_storage(sqlite_url, migrate=False)
        try:
            assert s.window_count(device) == 6
            assert sorted(c["seq"] for c in s.conflicts(device=device)) == [1, 2, 3, 4]
        finally:
            s.close()
        with collector.client() as cl:
            kinds = [a["kind"] for a in cl.get("/api/v1/alerts").json()["alerts"] if a["device"] == device]
        assert "replay_conflict" in kinds
    finally:
        stop_collector(collector)


@pytest.fixture
def sqlite_url(tmp_path: Path) -> str:
    return "sqlite:///" + str(tmp_path / "collector.db")
