"""The outbox cap: every byte the outbox keeps on disk, at every moment, at every cap; the
newest data wins over history.

A thread samples the files' sizes (database, WAL, -shm, outbox.seq) every 0.1 ms while
an agent records a long offline period on an injected clock, so the peak includes the
middle of transactions and WAL checkpoints, not only the sizes between writes. The state
folder is on tmpfs when the machine has one (the ``state`` fixture).
"""

from __future__ import annotations

import os
import random
import re
import threading
from pathlib import Path

import numpy as np
import pytest

from mlpack_edge.errors import AgentError
from mlpack_edge.monitor_agent.agent import Agent, ModelInfo
from mlpack_edge.monitor_agent.config import AgentConfig
from mlpack_edge.monitor_agent.outbox import Outbox
from mlpack_edge.monitor_agent.profile import Profile, build_profile
from mlpack_edge.monitor_agent.wire import BinCounts, Window

from .helpers import MODEL_HASH, T0, FakeClock, FakeCollector, fixed_sampler, traffic

KIB, MIB = 1024, 1024 * 1024
FILES = ("outbox.sqlite", "outbox.sqlite-wal", "outbox.sqlite-shm", "outbox.seq")


def on_disk(folder: Path) -> int:
    total = 0
    for name in FILES:
        try:
            total += os.stat(folder / name).st_size
        except FileNotFoundError:
            pass
    return total


class Peak:
    """The largest total size seen by a thread polling the files while the block runs."""

    def __init__(self, folder: Path) -> None:
        self.folder, self.peak, self.samples = folder, 0, 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._poll, daemon=True)

    def _poll(self) -> None:
        while not self._stop.wait(0.0001):  # (SQLite lets go of the GIL while it writes: sampled then too)
            self.peak = max(self.peak, on_disk(self.folder))
            self.samples += 1

    def __enter__(self) -> Peak:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()


def _offline(agent: Agent, clock: FakeClock, windows: int, window_seconds: float, cap: int,
             sync: bool = False) -> tuple[int, int]:
    """Record ``windows`` windows (20 rows each, two ticks per window: checkpoints too);
    returns (rows recorded, largest size seen after a write). Sizes after every window
    are checked against the cap as they go."""
    rng = np.random.default_rng(0)
    rows = worst = 0
    for _ in range(windows):
        agent.recorder.record(*traffic(rng, 20), 0.001 * (1 + rng.random()))
        rows += 20
        clock.advance(window_seconds / 2)
        agent.tick()  # a checkpoint of the open window
        clock.advance(window_seconds / 2)
        agent.tick()  # the window closes
        if sync:
            assert agent.sync().outcome in ("delivered", "nothing")
        size = on_disk(agent.state_dir)
        worst = max(worst, size)
        assert size <= cap
    return rows, worst


def _check_books(box: Outbox, rows: int) -> None:
    acc = box.accounting()
    assert acc.balanced, acc
    pending = box.pending_windows()
    assert sum(w.rows for w in pending) + acc.dropped_rows == rows  # every row pending, or reported dropped
    assert pending and pending[-1].seq_last == acc.produced  # the newest window is always kept


def _agent(model: ModelInfo, state: Path, clock: FakeClock, cap: int, window_seconds: float,
           collector: FakeCollector | None = None) -> Agent:
    url = "http://127.0.0.1:9" if collector is not None else None
    config = AgentConfig(collector_url=url, device_id="press-07" if url else None, token="t0ken" if url else None,
                         window_seconds=window_seconds, cap_bytes=cap)
    return Agent.open(model, state, config, clock=clock, sampler=fixed_sampler, transport=collector,
                      rng=random.Random(0))


def test_at_the_smallest_cap_new_windows_win_over_two_days_of_history(state: Path, model: ModelInfo) -> None:
    """Was: at 128 KiB, once 48 h of history existed, every new window was dropped at once."""
    cap, clock, collector = 128 * KIB, FakeClock(), FakeCollector()
    agent = _agent(model, state, clock, cap, 1800, collector)
    with Peak(state) as peak:
        rows, _ = _offline(agent, clock, 2 * 50, 1800, cap, sync=True)  # 50 hours, delivered as they close
        before = agent.outbox.accounting()
        rows += _offline(agent, clock, 10, 1800, cap, sync=True)[0]
    acc = agent.outbox.accounting()
    assert (acc.dropped, acc.delivered - before.delivered, acc.pending) == (0, 10, 0)
    assert sum(w["rows"] for w in collector.windows.values()) == rows
    assert peak.peak <= cap, (peak.peak, peak.samples)
    agent.stop()


def _offline_within(model: ModelInfo, state: Path, cap: int, windows: int, window_seconds: float) -> tuple[int, Peak]:
    clock = FakeClock()
    agent = _agent(model, state, clock, cap, window_seconds)
    with Peak(state) as peak:
        rows, worst = _offline(agent, clock, windows, window_seconds, cap)
    _check_books(agent.outbox, rows)
    acc = agent.outbox.accounting()
    agent.stop()
    assert peak.peak <= cap, (peak.peak, peak.samples)
    assert worst > cap * 0.7  # the run really filled the outbox up to its cap
    assert acc.merged > 0
    return worst, peak


def test_three_offline_days_at_the_smallest_cap_never_cross_it(state: Path, model: ModelInfo) -> None:
    _offline_within(model, state, 128 * KIB, 3 * 144, 600)


@pytest.mark.slow
@pytest.mark.parametrize(("cap", "window_seconds"), [(128 * KIB, 600), (1 * MIB, 600)])
def test_three_offline_weeks_never_cross_the_cap(state: Path, model: ModelInfo, cap: int, window_seconds: float) -> None:
    """Was: 197 of 1,472 samples over a 128 KiB cap, and a 21-day offline run kept no row."""
    worst, peak = _offline_within(model, state, cap, int(21 * 86400 / window_seconds), window_seconds)
    print(f"cap {cap}: largest after a write {worst}, peak {peak.peak} over {peak.samples} samples")


def _wide(features: int, bins: int = 10, seed: int = 0) -> Profile:
    rng = np.random.default_rng(seed)
    return build_profile([(f"f{i}", "numeric", rng.normal(size=3000)) for i in range(features)],
                         prediction=("categorical", rng.choice(["a", "b"], 3000).tolist(), ["a", "b"]), bins=bins)


@pytest.mark.slow
def test_a_64_mib_cap_holds_through_a_long_offline_period(state: Path) -> None:
    """Big windows (8 features x 500 bins, ~20 KB packed), a day apart so nothing merges:
    the outbox fills to its cap, then drops the oldest, never crossing it."""
    cap, clock = 64 * MIB, FakeClock()
    rnd = np.random.default_rng(1)
    with Outbox.open(state, cap, clock) as box, Peak(state) as peak:
        box.register_model(MODEL_HASH, {"name": "wide", "version": "1", "profile": {}}, {})
        rows = worst = 0
        for day in range(3600):
            w = Window(model=MODEL_HASH, seq=0, start=T0 + 86400 * day, end=T0 + 86400 * day + 600, requests=1,
                       rows=7, features={f"f{i}": BinCounts(rnd.integers(0, 10**9, 500).tolist()) for i in range(8)})
            box.add_window(w)
            rows += 7
            worst = max(worst, on_disk(state))
        _check_books(box, rows)
        acc = box.accounting()
    assert acc.dropped > 0 and peak.peak <= cap and worst > cap * 0.9, (acc, worst, peak.peak)
    print(f"cap {cap}: largest after a write {worst}, peak {peak.peak} over {peak.samples} samples")


def test_a_cap_too_small_for_the_model_is_refused_with_the_smallest_workable_value(
    state: Path, tmp_path: Path
) -> None:
    wide = ModelInfo("cd" * 32, "wide", "2.0.0", _wide(100))
    with pytest.raises(AgentError) as refused:
        Agent.open(wide, tmp_path / "refused", AgentConfig(cap_bytes=128 * KIB), sampler=fixed_sampler)
    message = str(refused.value)
    m = re.fullmatch(
        r"outbox cap of 131072 bytes is too small for the telemetry windows of wide 2\.0\.0: the smallest workable"
        r" cap is (\d+) bytes \(\d+ KiB; cap_bytes in agent\.json or MLPACK_OUTBOX_CAP\)", message)
    assert m, message
    smallest = int(m.group(1))
    assert smallest > 128 * KIB
    # That value works: a long offline run at it keeps the newest window and never crosses it.
    clock = FakeClock()
    agent = Agent.open(wide, state, AgentConfig(window_seconds=600, cap_bytes=smallest), clock=clock,
                       sampler=fixed_sampler)
    rng = np.random.default_rng(3)
    rows = 0
    with Peak(state) as peak:
        for _ in range(150):
            agent.recorder.record(rng.normal(size=(20, 100)), None, rng.integers(0, 2, 20), 0.001)
            rows += 20
            clock.advance(600)
            agent.tick()
    _check_books(agent.outbox, rows)
    agent.stop()
    assert peak.peak <= smallest, (peak.peak, smallest)
