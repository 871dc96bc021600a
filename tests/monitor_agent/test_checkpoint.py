"""Checkpoints of the open window: a kill -9 loses at most the rows since the last one, none twice."""

from __future__ import annotations

import random
import signal
import sqlite3
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from mlpack_edge.monitor_agent import _checkpoint
from mlpack_edge.monitor_agent.agent import Agent, ModelInfo
from mlpack_edge.monitor_agent.cli import status as status_cli
from mlpack_edge.monitor_agent.config import AgentConfig
from mlpack_edge.monitor_agent.outbox import Outbox
from mlpack_edge.monitor_agent.wire import Window
from tests._proc import start_and_wait

from .helpers import MODEL_HASH, T0, FakeClock, FakeCollector, fixed_sampler, traffic

REPO = Path(__file__).resolve().parents[2]
CONFIG = AgentConfig(collector_url="http://127.0.0.1:9", device_id="press-07", token="t0ken", window_seconds=3600,
                     checkpoint_seconds=0.5, checkpoint_rows=1000)


def _killed_child(state: Path, mode: str, chunks: int, rows: int, after: int) -> tuple[int, int]:
    """Run ``_checkpointer`` until it is ready, SIGKILL it; (rows recorded, rows checkpointed)."""
    cmd = [sys.executable, "-m", "tests.monitor_agent._checkpointer", str(state), mode, str(chunks), str(rows), str(after)]
    started = start_and_wait(cmd, "ready", cwd=REPO)
    assert started.line is not None, started.output()
    started.proc.send_signal(signal.SIGKILL)
    started.proc.wait()
    _, recorded, checkpointed = started.line.split()
    return int(recorded), int(checkpointed)


def _windows(state: Path) -> list[tuple[int, int]]:
    with Outbox.open(state) as box:
        assert box.accounting().balanced
        return [(w.seq, w.rows) for w in box.pending_windows()]


def test_a_killed_serve_leaves_a_checkpoint_the_next_agent_stores_as_its_next_window(
    tmp_path: Path, model: ModelInfo
) -> None:
    state = tmp_path / "state"
    clock = FakeClock()
    first = Agent.open(model, state, CONFIG, clock=clock, sampler=fixed_sampler)
    first.recorder.record(*traffic(np.random.default_rng(1), 30), 0.002)
    first.stop()  # seq 1: 30 rows, stored normally
    recorded, checkpointed = _killed_child(state, "serve", 5, 20, after=7)
    assert (recorded, checkpointed) == (107, 100)
    assert len(_checkpoint.dead_owners(state)) == 1  # the dead child's owner file, unlocked
    again = Agent.open(model, state, CONFIG, clock=clock, sampler=fixed_sampler)
    # Opening the outbox stored the dead child's checkpoint: 100 rows under the next seq;
    # the 7 rows recorded after it are what the kill lost.
    assert _windows(state) == [(1, 30), (2, 100)]
    assert _checkpoint.dead_owners(state) == [] and list((state / "checkpoints").iterdir()) == []
    again.stop()


@pytest.mark.parametrize("mode", ["closing", "closing-no-checkpoint"])
def test_a_kill_while_a_closed_window_is_being_written_loses_only_rows_since_its_checkpoint(
    tmp_path: Path, model: ModelInfo, mode: str
) -> None:
    """The PostgreSQL run's two lost windows: a window closed on its boundary exists only in
    memory until its transaction commits (a flush, an fsync, a WAL checkpoint: tens of ms
    on a loaded machine), so a kill 8 ms after the boundary lost it with the new open
    window, and no sequence number went missing (it was never committed). With
    checkpoints, its last checkpoint survives the kill until that same transaction
    deletes it, and becomes the window."""
    state = tmp_path / "state"
    first = Agent.open(model, state, CONFIG, clock=FakeClock(), sampler=fixed_sampler)
    first.recorder.record(*traffic(np.random.default_rng(1), 30), 0.002)
    first.stop()  # seq 1
    recorded, checkpointed = _killed_child(state, mode, 5, 20, after=6)
    assert recorded == 106
    Outbox.open(state).close()  # the next process: stores the dead one's checkpoint
    if mode == "closing":
        assert checkpointed == 100 and _windows(state) == [(1, 30), (2, 100)]  # lost: the 6 rows after it
    else:  # before checkpoints: the whole closed window is gone, and seq 2 is simply the next one
        assert checkpointed == 0 and _windows(state) == [(1, 30)]
        with Outbox.open(state) as box:
            assert box.add_window(Window(model=model.content_hash, seq=0, start=T0, end=T0 + 1)) == 2


def test_a_killed_one_shot_predict_loses_at_most_its_last_half_second(tmp_path: Path) -> None:
    state = tmp_path / "state"
    recorded, checkpointed = _killed_child(state, "predict", 12, 50, after=3)  # 2.4 s of fake time, 603 rows
    # record() checkpoints (its own chunk included) once 0.5 s passed since the last
    # checkpoint: at most the chunks of the last 0.5 s (2 of 0.2 s) are not in it.
    assert recorded == 603 and recorded - 3 - 2 * 50 <= checkpointed <= recorded - 3
    assert [rows for _, rows in _windows(state)] == [checkpointed]


def test_a_one_shot_agent_touches_no_disk_until_its_first_checkpoint(tmp_path: Path, model: ModelInfo) -> None:
    state = tmp_path / "state"
    clock = FakeClock()
    agent = Agent.open(model, state, CONFIG, clock=clock, sampler=fixed_sampler, deferred=True)
    rng = np.random.default_rng(2)
    agent.recorder.record(*traffic(rng, 10), 0.002)
    clock.advance(0.4)
    agent.recorder.record(*traffic(rng, 10), 0.002)
    assert not state.exists()  # a short predict never opens SQLite before its exit
    clock.advance(0.2)
    agent.recorder.record(*traffic(rng, 10), 0.002)  # 0.6 s: checkpoints the 30 rows, this call's too
    owners = [p.name for p in (state / "checkpoints").iterdir()]
    assert len(owners) == 1 and not _checkpoint.is_dead(state, owners[0])
    assert _checkpoint_rows(state) == {owners[0]: 30}
    agent.recorder.record(*traffic(rng, 999), 0.002)
    assert _checkpoint_rows(state) == {owners[0]: 30}
    agent.recorder.record(*traffic(rng, 1), 0.002)  # checkpoint_rows=1000 since the last one: due
    assert _checkpoint_rows(state) == {owners[0]: 1030}
    agent.stop()  # the window is stored, its checkpoint and the owner file are gone
    assert _checkpoint_rows(state) == {} and list((state / "checkpoints").iterdir()) == []
    assert [rows for _, rows in _windows(state)] == [1030]


def _checkpoint_rows(state: Path) -> dict[str, int]:
    conn = sqlite3.connect(state / "outbox.sqlite")
    try:
        return dict(conn.execute("SELECT owner, rows FROM checkpoints"))
    finally:
        conn.close()


def test_a_window_and_its_checkpoint_never_both_count(
    tmp_path: Path, model: ModelInfo, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """Storing a window deletes its checkpoint in the same transaction: a failure in between
    leaves the checkpoint (recovered once later), a success leaves only the window."""
    state = tmp_path / "state"
    clock = FakeClock()
    agent = Agent.open(model, state, CONFIG, clock=clock, sampler=fixed_sampler)
    agent.recorder.record(*traffic(np.random.default_rng(3), 40), 0.002)
    assert agent.checkpoint()
    agent.recorder.record(*traffic(np.random.default_rng(4), 2), 0.002)

    def fail(*args: object) -> None:  # the window's transaction dies after its INSERT
        raise sqlite3.OperationalError("disk I/O error")

    monkeypatch.setattr(Outbox, "_add_recent", fail)
    agent.stop()  # cannot store the window: keeps the checkpoint for the next process
    monkeypatch.undo()
    assert "not stored" in caplog.text
    assert list(_checkpoint_rows(state).values()) == [40]
    assert [rows for _, rows in _windows(state)] == [40]  # opening recovered it: once, 40 rows
    assert _checkpoint_rows(state) == {} and _windows(state) == [(1, 40)]

    ok = Agent.open(model, tmp_path / "ok", CONFIG, clock=clock, sampler=fixed_sampler)
    ok.recorder.record(*traffic(np.random.default_rng(3), 40), 0.002)
    assert ok.checkpoint()
    clock.advance(3600)
    ok.tick()  # the window closes: stored, and its checkpoint deleted with it
    assert sum(_checkpoint_rows(tmp_path / "ok").values()) == 0  # (the next window's: a system sample)
    assert [rows for _, rows in _windows(tmp_path / "ok")] == [40]
    ok.stop()


def test_the_checkpoint_of_a_window_that_could_not_be_stored_outlives_later_windows(
    tmp_path: Path, model: ModelInfo, monkeypatch: pytest.MonkeyPatch
) -> None:
    clock = FakeClock()
    agent = Agent.open(model, tmp_path, CONFIG, clock=clock, sampler=None)
    agent.recorder.auto_roll = False
    agent.recorder.record(*traffic(np.random.default_rng(1), 8), 0.002)
    assert agent.checkpoint()
    monkeypatch.setattr(Outbox, "_add_recent", lambda *a: (_ for _ in ()).throw(sqlite3.OperationalError("disk I/O error")))
    clock.advance(3600)
    agent.recorder.roll()  # the first window cannot be stored: its checkpoint stays
    monkeypatch.undo()
    agent.recorder.record(*traffic(np.random.default_rng(2), 5), 0.002)
    assert agent.checkpoint()  # the next window's checkpoint is a row of its own
    clock.advance(3600)
    agent.recorder.roll()  # stored
    agent.stop()
    assert [rows for _, rows in _windows(tmp_path)] == [5, 8]  # the first recovered after the second


def test_an_idle_agent_writes_no_checkpoint(tmp_path: Path, model: ModelInfo) -> None:
    clock = FakeClock()
    agent = Agent.open(model, tmp_path, CONFIG, clock=clock, sampler=fixed_sampler)
    agent.recorder.auto_roll = False  # as start() leaves it: only the tick thread checkpoints
    assert not agent.checkpoint()  # nothing recorded yet
    agent.recorder.record(*traffic(np.random.default_rng(5), 3), 0.002)
    assert agent.checkpoint()
    clock.advance(1)
    assert not agent.checkpoint()  # nothing new: no write, no fsync
    agent.recorder.record(*traffic(np.random.default_rng(6), 1), 0.002)
    assert agent.checkpoint()
    agent.stop()


def _dead_checkpoint(state: Path, model: ModelInfo, rows: int, start: float = T0) -> str:
    """A checkpoint whose process died: its row, and its owner file unlocked."""
    clock = FakeClock(start)
    agent = Agent.open(model, state, CONFIG, clock=clock, sampler=fixed_sampler, deferred=True)
    agent.recorder.record(*traffic(np.random.default_rng(rows), rows), 0.002)
    assert agent.checkpoint()
    owner = agent._owner
    assert owner is not None
    owner.release(keep_file=True)  # what the kernel does to the lock of a killed process
    agent.outbox.close()
    return owner.name


def test_two_processes_recovering_at_once_store_each_checkpoint_once(tmp_path: Path, model: ModelInfo) -> None:
    for rows in (11, 12, 13):
        _dead_checkpoint(tmp_path, model, rows)
    boxes = [Outbox.__new__(Outbox) for _ in range(4)]
    barrier = threading.Barrier(len(boxes))

    def open_box(box: Outbox) -> None:
        barrier.wait()
        box.__init__(tmp_path, 64 * 1024 * 1024, FakeClock())  # opening recovers

    threads = [threading.Thread(target=open_box, args=(b,)) for b in boxes]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    for b in boxes:
        b.close()
    assert sorted(rows for _, rows in _windows(tmp_path)) == [11, 12, 13]
    assert _checkpoint_rows(tmp_path) == {} and _checkpoint.dead_owners(tmp_path) == []


def test_a_checkpoint_whose_owner_file_is_gone_is_recovered_by_a_long_running_agent(
    tmp_path: Path, model: ModelInfo
) -> None:
    name = _dead_checkpoint(tmp_path, model, 9)
    (tmp_path / "checkpoints" / name).unlink()
    Outbox.open(tmp_path).close()  # cheap path: only owner files are looked at
    assert list(_checkpoint_rows(tmp_path).values()) == [9]
    Agent.open(model, tmp_path, CONFIG, sampler=fixed_sampler).stop()  # serve's agent asks SQLite too
    assert _checkpoint_rows(tmp_path) == {} and [rows for _, rows in _windows(tmp_path)] == [9]


def test_status_counts_live_checkpoints_once_and_agrees_with_the_collector(
    tmp_path: Path, model: ModelInfo, collector: FakeCollector
) -> None:
    """Status = stored windows + live processes' checkpoints; a dead process's checkpoint
    becomes a window (counted once) and reaches the collector."""
    state = tmp_path / "state"
    clock = FakeClock(time.time() - 60)  # the status command reads the real clock
    kw = {"clock": clock, "sampler": fixed_sampler, "transport": collector, "rng": random.Random(0)}
    serving = Agent.open(model, state, CONFIG, **kw)
    serving.recorder.record(*traffic(np.random.default_rng(8), 50), 0.002)
    other = Agent.open(model, state, CONFIG, **kw)  # another live process of the same model
    other.recorder.record(*traffic(np.random.default_rng(9), 5), 0.002)
    assert other.checkpoint()
    assert serving.status(hours=2).rows == 55  # its own open window + the other's checkpoint
    other.stop()  # stored: the window replaces the checkpoint
    assert serving.status(hours=2).rows == 55
    _dead_checkpoint(state, model, 17, start=clock())  # a process killed with 17 rows checkpointed
    serving.stop()
    shown = CliRunner().invoke(status_cli, ["--json", "--hours", "2", "--state-dir", str(state)], catch_exceptions=False)
    assert shown.exit_code == 0, shown.output
    assert '"rows": 72' in shown.output  # 50 + 5 + 17, each once
    with Outbox.open(state) as box:
        from mlpack_edge.monitor_agent.uploader import Uploader

        assert Uploader(box, CONFIG, collector).sync().outcome == "delivered"
        assert box.accounting().balanced and box.accounting().pending == 0
    assert sum(w["rows"] for w in collector.windows.values()) == 72
