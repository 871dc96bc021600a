"""The one-shot exit spool: a short predict's window and ids wait in files until a store opens."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from mlpack_edge.monitor_agent import _spool
from mlpack_edge.monitor_agent.agent import Agent, ModelInfo
from mlpack_edge.monitor_agent.config import AgentConfig
from mlpack_edge.monitor_agent.feedback import FeedbackStore
from mlpack_edge.monitor_agent.outbox import Outbox

from .helpers import T0, FakeClock, fixed_sampler, traffic


def _one_shot(model: ModelInfo, state: Path, clock: FakeClock, rows: int = 5, ids: int = 3) -> list[str]:
    """A short predict: some rows recorded, ``ids`` prediction ids remembered, then the exit."""
    agent = Agent.open(model, state, AgentConfig(window_seconds=60), clock=clock, sampler=fixed_sampler, deferred=True)
    agent.recorder.record(*traffic(np.random.default_rng(3), rows), 0.002)
    made = agent.new_ids(ids) if ids else []
    if ids:
        agent.remember(made, np.arange(ids) % 3)
    agent.stop()
    return made


def _spooled(state: Path) -> list[str]:
    return sorted(p.name.split(".", 1)[1] for p in (state / _spool.DIR_NAME).glob("*.json"))


def test_a_short_one_shot_run_spools_and_the_next_stores_take_it_in(
    tmp_path: Path, model: ModelInfo, clock: FakeClock
) -> None:
    state = tmp_path / "state"
    ids = _one_shot(model, state, clock)
    assert _spooled(state) == ["ids-window.json"]  # one file: one fsync for both parts
    assert not (state / "outbox.sqlite").exists() and not (state / "feedback.sqlite").exists()
    with Outbox.open(state) as box:  # every open takes the spooled windows in
        windows = box.pending_windows()
        assert [(w.start, w.rows, w.requests, w.system.samples) for w in windows] == [(T0, 5, 1, 1)]
        assert set(box.models()) == {model.content_hash}
    assert _spooled(state) == ["ids.json"]  # the window's part taken, the ids' left in a file of their own
    store = FeedbackStore(state, clock=clock)  # (the join window runs on the same clock)
    try:
        got = store._conn.execute("SELECT id, pred FROM predictions ORDER BY id").fetchall()  # noqa: SLF001
    finally:
        store.close()
    assert got == sorted(zip(ids, [0.0, 1.0, 2.0]))
    assert _spooled(state) == []


def test_a_spooled_window_is_stored_once_even_if_its_file_comes_back(
    tmp_path: Path, model: ModelInfo, clock: FakeClock
) -> None:
    """A crash between storing the window and deleting its file: the next open must not store it twice."""
    state = tmp_path / "state"
    _one_shot(model, state, clock, ids=0)
    (path,) = (state / _spool.DIR_NAME).glob("*.window.json")
    kept = shutil.copy(path, tmp_path / "kept.json")
    with Outbox.open(state) as box:
        assert len(box.pending_windows()) == 1
    shutil.copy(kept, path)
    with Outbox.open(state) as box:
        assert len(box.pending_windows()) == 1
    assert _spooled(state) == []


def test_a_full_spool_sends_the_run_to_the_stores(tmp_path: Path, model: ModelInfo, clock: FakeClock) -> None:
    state = tmp_path / "state"
    folder = state / _spool.DIR_NAME
    folder.mkdir(parents=True)
    for i in range(_spool.MAX_FILES):
        (folder / f"{i:020d}-1-00000000.other.json").write_text("{}")  # a kind no store takes
    _one_shot(model, state, clock)
    assert len(list(folder.iterdir())) == _spool.MAX_FILES  # nothing added
    with Outbox.open(state) as box:
        assert [w.rows for w in box.pending_windows()] == [5]


def test_an_unreadable_spool_file_is_set_aside_and_the_rest_stored(
    tmp_path: Path, model: ModelInfo, clock: FakeClock, caplog: pytest.LogCaptureFixture
) -> None:
    state = tmp_path / "state"
    folder = state / _spool.DIR_NAME
    folder.mkdir(parents=True)
    (folder / "00000000000000000000-1-00000000.window.json").write_bytes(b'{"model": ')  # cut short
    _one_shot(model, state, clock, ids=0)
    with Outbox.open(state) as box:
        assert [w.rows for w in box.pending_windows()] == [5]
    assert sorted(p.name for p in folder.iterdir()) == ["00000000000000000000-1-00000000.window.json.bad"]
    assert [r.levelname for r in caplog.records] == ["ERROR"]
    assert "is unreadable" in caplog.records[0].getMessage()


def test_a_one_shot_exit_that_spools_loads_no_sqlite(tmp_path: Path) -> None:
    """What the spool is for: no sqlite3 (nor the outbox) imported on a short run's exit path."""
    probe = (
        "import sys, numpy as np\n"
        "from tests.monitor_agent.helpers import make_profile, traffic, fixed_sampler\n"
        "from mlpack_edge.monitor_agent.agent import Agent, ModelInfo\n"
        "m = ModelInfo(content_hash='a' * 64, name='m', version='1', profile=make_profile())\n"
        f"a = Agent.open(m, {str(tmp_path / 'state')!r}, sampler=fixed_sampler, deferred=True)\n"
        "a.recorder.record(*traffic(np.random.default_rng(0), 4), 0.001)\n"
        "a.remember(a.new_ids(4), np.zeros(4))\n"
        "a.stop()\n"
        "print(sorted(k for k in ('sqlite3', 'mlpack_edge.monitor_agent.outbox', 'psutil') if k in sys.modules))\n"
    )
    root = Path(__file__).resolve().parents[2]
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=60, check=True, cwd=root)
    assert out.stdout == "[]\n"
    assert len(list((tmp_path / "state" / _spool.DIR_NAME).glob("*.json"))) == 1


def test_several_spooled_runs_are_stored_in_order_by_one_open(tmp_path: Path, model: ModelInfo, clock: FakeClock) -> None:
    state = tmp_path / "state"
    for rows in (3, 4, 5):
        _one_shot(model, state, clock, rows=rows, ids=0)
        clock.advance(60)
    with Outbox.open(state) as box:
        got = [(w.start, w.rows) for w in box.pending_windows()]
    assert got == [(T0, 3), (T0 + 60, 4), (T0 + 120, 5)]
    assert _spooled(state) == []


def test_the_ids_store_may_take_its_part_first(tmp_path: Path, model: ModelInfo, clock: FakeClock) -> None:
    state = tmp_path / "state"
    ids = _one_shot(model, state, clock)
    store = FeedbackStore(state, clock=clock)
    try:
        got = store._conn.execute("SELECT id FROM predictions ORDER BY id").fetchall()  # noqa: SLF001
    finally:
        store.close()
    assert [g[0] for g in got] == sorted(ids)
    assert _spooled(state) == ["window.json"]
    with Outbox.open(state) as box:
        assert [w.rows for w in box.pending_windows()] == [5]
    assert _spooled(state) == []


def test_a_window_left_apart_after_the_outbox_took_it_is_not_stored_twice(
    tmp_path: Path, model: ModelInfo, clock: FakeClock
) -> None:
    """Two processes taking in one two-part file at once: the outbox stores the window, while the
    feedback store (which read the file first) writes the window part apart. The window file it
    leaves carries the same hand-off token: the next open does not store it again."""
    state = tmp_path / "state"
    _one_shot(model, state, clock)
    (both,) = (state / _spool.DIR_NAME).glob("*.ids-window.json")
    kept = both.read_bytes()
    with Outbox.open(state) as box:
        assert len(box.pending_windows()) == 1
    both.write_bytes(kept)  # the feedback store's process read it before the outbox removed it
    _spool.done(both, "ids")  # ... and writes the window part apart
    assert _spooled(state) == ["ids.json", "window.json"]
    with Outbox.open(state) as box:
        assert len(box.pending_windows()) == 1
    assert _spooled(state) == ["ids.json"]


def test_a_short_run_exit_writes_one_file_with_two_fsyncs(
    tmp_path: Path, model: ModelInfo, clock: FakeClock, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The exit's cost on the disk: the file's data and the folder's entry, once each (the folder
    exists: an earlier run made it)."""
    import os

    state = tmp_path / "state"
    (state / _spool.DIR_NAME).mkdir(parents=True)
    synced: list[int] = []
    real = os.fsync
    monkeypatch.setattr(os, "fsync", lambda fd: (synced.append(fd), real(fd))[1])
    _one_shot(model, state, clock)
    assert len(synced) == 2
    assert _spooled(state) == ["ids-window.json"]
