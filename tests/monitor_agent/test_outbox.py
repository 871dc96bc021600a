"""Outbox: sequence numbers, accounting, the cap, damaged stores, audit events."""

from __future__ import annotations

import logging
import os
import sqlite3
from pathlib import Path

import numpy as np
import pytest

from mlpack_edge.errors import OutboxError
from mlpack_edge.monitor_agent import _store
from mlpack_edge.monitor_agent._compact import Stored, plan_merges
from mlpack_edge.monitor_agent.outbox import Outbox, append_audit
from mlpack_edge.monitor_agent.profile import Profile
from mlpack_edge.monitor_agent.recorder import Recorder
from mlpack_edge.monitor_agent.wire import Window

from .helpers import MODEL_HASH, T0, FakeClock, fixed_sampler, traffic

OTHER = "cd" * 32


def _window(start: float, rows: int = 5, model: str = MODEL_HASH) -> Window:
    w = Window(model=model, seq=0, start=start, end=start + 60, requests=1, rows=rows)
    w.system.add(fixed_sampler())
    return w


def test_sequence_numbers_increase_and_survive_reopening(tmp_path: Path) -> None:
    with Outbox.open(tmp_path) as box:
        seqs = [box.add_window(_window(T0 + 60 * i)) for i in range(3)]
    with Outbox.open(tmp_path) as box:
        seqs.append(box.add_window(_window(T0 + 180)))
        assert [w.seq for w in box.pending_windows()] == seqs == [1, 2, 3, 4]
        acc = box.accounting()
        assert (acc.produced, acc.pending) == (4, 4) and acc.balanced


def test_ack_and_dead_letter_keep_the_books_balanced(tmp_path: Path) -> None:
    with Outbox.open(tmp_path) as box:
        for i in range(5):
            box.add_window(_window(T0 + 60 * i))
        batch = box.take_batch(max_windows=3, max_bytes=10**6)
        assert batch.window_seqs == [1, 2, 3]
        assert box.ack([1, 2, 3, 99], [], batch.outbox) == 3  # 99 was never here: not counted
        assert box.ack([1], [], batch.outbox) == 0  # acknowledged twice: counted once
        assert box.dead_letter([4], [], 422, "windows[0].rows: bad") == 1
        acc = box.accounting()
        assert acc.to_dict() == {
            "produced": 5, "delivered": 3, "pending": 1, "merged": 0, "dropped": 0, "dead_letter": 1, "dropped_rows": 0,
        }
        assert acc.balanced
        (dead,) = box.dead_letters()
        assert (dead.kind, dead.seq, dead.status, dead.reason) == ("window", 4, 422, "windows[0].rows: bad")
        assert box.needs_report()  # the dead letter has not been reported yet


def test_plan_merges_only_joins_consecutive_unsent_windows_of_one_model_and_hour() -> None:
    h = 3600.0
    stored = [
        Stored(1, 1, MODEL_HASH, T0, 0),
        Stored(2, 2, MODEL_HASH, T0 + 60, 0),
        Stored(3, 3, MODEL_HASH, T0 + 120, 0),
        # seq 4 is missing (delivered): 5 must not join 3
        Stored(5, 5, MODEL_HASH, T0 + 240, 0),
        Stored(6, 6, OTHER, T0 + 300, 0),  # another model breaks the run
        Stored(7, 7, MODEL_HASH, T0 + 360, 0),
        Stored(8, 8, MODEL_HASH, T0 + h, 0),  # next hour
        Stored(9, 9, MODEL_HASH, T0 + h + 60, 0),
        Stored(10, 20, MODEL_HASH, T0 + h + 120, 1),  # an hour window joins its hour
        Stored(21, 21, MODEL_HASH, T0 + h + 3000, 2),  # a day window cannot go back to hours
        Stored(22, 22, MODEL_HASH, T0 + h + 3100, 0),
    ]
    assert plan_merges(stored, 3600, 1) == [[1, 2, 3], [8, 9, 10]]
    assert plan_merges(stored, 86400, 2) == [[1, 2, 3], [7, 8, 9, 10, 21, 22]]


def _fill(box: Outbox, clock: FakeClock, profile: Profile, windows: int, window_seconds: float) -> list[int]:
    """Record ``windows`` windows of traffic; returns the files' size after each one."""
    rec = Recorder(profile, MODEL_HASH, window_seconds=window_seconds, clock=clock, on_window=box.add_window)
    rng = np.random.default_rng(0)
    sizes = []
    for _ in range(windows):
        rec.record(*traffic(rng, 20), 0.001)
        rec.add_system(fixed_sampler())
        clock.advance(window_seconds)
        rec.roll()
        sizes.append(sum(p.stat().st_size for p in box.state_dir.glob("outbox.sqlite*")))
        assert box.accounting().balanced
    return sizes


@pytest.mark.slow
def test_cap_merges_minutes_into_hours_and_days_before_dropping(state: Path, profile: Profile) -> None:
    cap = 128 * 1024
    clock = FakeClock()
    with Outbox.open(state, cap, clock) as box:
        sizes = _fill(box, clock, profile, 1200, 300.0)  # ~4 days of 5-minute windows
        acc = box.accounting()
        spans = [w.merged_count for w in box.pending_windows()]
        assert acc.dropped == 0 and acc.merged > 0 and max(spans) > 12  # whole days of 5-minute windows
        # Never over the cap, every file counted (test_cap.py samples during writes too).
        assert max(sizes) <= cap
        rows_before = sum(w.rows for w in box.pending_windows())
        assert rows_before == 20 * 1200  # merging loses no row
    with Outbox.open(state, cap, clock) as box:
        # Day-long windows: nothing left to merge, so the oldest are dropped.
        sizes = _fill(box, clock, profile, 400, 86400.0)
        acc = box.accounting()
        assert acc.dropped > 0 and acc.dropped_rows >= 20 * acc.dropped
        assert acc.produced == 1600 == acc.delivered + acc.pending + acc.merged + acc.dropped + acc.dead_letter
        # Rows balance too: every recorded row is either still pending or reported dropped.
        assert sum(w.rows for w in box.pending_windows()) + acc.dropped_rows == 20 * 1600
        assert max(sizes) <= cap
        oldest = box.pending_windows()[0]
        assert oldest.start > T0 + 5 * 86400  # the oldest went first


def test_sent_windows_are_never_merged(state: Path, profile: Profile) -> None:
    clock = FakeClock()
    with Outbox.open(state, 128 * 1024, clock) as box:
        for i in range(3):
            box.add_window(_window(T0 + 60 * i))
        box.take_batch(max_windows=2, max_bytes=10**6)  # 1 and 2 may be at the collector now
        _fill(box, clock, profile, 400, 60.0)
        ranges = [(w.seq, w.seq_last) for w in box.pending_windows()]
        assert ranges[:2] == [(1, 1), (2, 2)]
        assert box.accounting().merged > 0


def test_damaged_store_is_set_aside_and_sequence_continues(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    with Outbox.open(tmp_path) as box:
        for i in range(3):
            box.add_window(_window(T0 + 60 * i))
    (tmp_path / "outbox.sqlite").write_bytes(b"this is not a database" * 500)
    with caplog.at_level(logging.ERROR, logger="mlpack_edge.monitor_agent"):
        box = Outbox.open(tmp_path)
    asides = sorted(p.name for p in tmp_path.glob("outbox.sqlite.corrupt-*"))
    assert len(asides) == 1
    assert any("is damaged (file is not a database): moved aside to " + asides[0] in r.getMessage() for r in caplog.records)
    with box:
        seq = box.add_window(_window(T0 + 600))
        assert seq > 3  # never reuses a number the collector may already hold
        assert seq == _store.RESERVE_BLOCK + 1
        assert box.accounting().pending == 1


def test_store_replaced_by_a_damaged_file_while_running_is_recovered(tmp_path: Path) -> None:
    with Outbox.open(tmp_path) as box:
        box.register_model(MODEL_HASH, {"name": "churn", "version": "1.2.0", "profile": {}}, {})
        box.add_window(_window(T0))
        # Another process (or a bad disk) leaves a damaged file in its place.
        bad = tmp_path / "bad"
        bad.write_bytes(os.urandom(8192))
        os.replace(bad, tmp_path / "outbox.sqlite")
        seq = box.add_window(_window(T0 + 60))
        assert [w.seq for w in box.pending_windows()] == [seq]
        assert seq > 1 and len(list(tmp_path.glob("outbox.sqlite.corrupt-*"))) >= 1
        # The fresh store still knows the model, so the window can be uploaded.
        assert box.take_batch(10, 10**6).models[MODEL_HASH]["name"] == "churn"


def test_set_aside_copies_are_bounded_and_an_unusable_folder_is_an_error(tmp_path: Path) -> None:
    for i in range(_store.KEEP_ASIDE + 3):
        (tmp_path / "outbox.sqlite").write_bytes(b"garbage" * 100)
        clock = FakeClock(T0 + i)
        Outbox.open(tmp_path, clock=clock).close()
    assert len([p for p in tmp_path.glob("outbox.sqlite.corrupt-*") if not p.name.endswith(("-wal", "-shm"))]) == _store.KEEP_ASIDE
    blocker = tmp_path / "file"
    blocker.write_text("x")
    with pytest.raises(OutboxError, match=r"file/state: cannot create the state directory"):
        Outbox.open(blocker / "state")


def test_audit_events_get_their_own_sequence_and_ride_in_batches(tmp_path: Path) -> None:
    assert append_audit(tmp_path, "install", {"version": "1.2.0"}) == 1
    assert append_audit(tmp_path, "verify", {"ok": True}) == 2
    with pytest.raises(OutboxError, match="audit event name must match"):
        append_audit(tmp_path, "Bad Event", {})
    with Outbox.open(tmp_path) as box:
        batch = box.take_batch(10, 10**6)
        assert [(a["seq"], a["event"], a["detail"]) for a in batch.audit] == [
            (1, "install", {"version": "1.2.0"}), (2, "verify", {"ok": True}),
        ]
        box.ack([], batch.audit_seqs, batch.outbox)
        assert box.take_batch(10, 10**6).audit == []
        assert not box.needs_report()


def test_outbox_is_sqlite_wal_with_full_sync(tmp_path: Path) -> None:
    Outbox.open(tmp_path).close()
    conn = sqlite3.connect(tmp_path / "outbox.sqlite")
    assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"


URL = "http://collector.example:8470/api/v1/ingest"
PROFILE = {"format": "mlpack.profile/1", "features": [], "prediction": None}
WIRE = {"name": "churn", "version": "1.2.0", "profile": PROFILE}


def test_models_the_collector_knows_are_left_out_per_url(tmp_path: Path) -> None:
    with Outbox.open(tmp_path) as box:
        box.register_model(MODEL_HASH, WIRE, {})
        box.register_model(OTHER, {**WIRE, "version": "2.0.0"}, {})
        box.add_window(_window(T0))
        box.add_window(_window(T0 + 60, model=OTHER))
        box.mark_known(URL, [MODEL_HASH])
        batch = box.take_batch(10, 10**6, collector=URL)
        assert (sorted(batch.models), batch.known) == ([OTHER], [MODEL_HASH])
        for collector in (None, "http://b/"):  # no URL, or another one: every model travels
            assert sorted(box.take_batch(10, 10**6, collector=collector).models) == sorted([MODEL_HASH, OTHER])
        # A different collector URL learns the models: the first URL's knowledge is dropped.
        box.mark_known("http://b/", [OTHER])
        assert (box.known(URL), box.known("http://b/")) == (set(), {OTHER})
        box.forget_known("http://b/", [OTHER])
        assert box.known("http://b/") == set()
    with Outbox.open(tmp_path) as box:  # what the collector knows survives a restart
        box.mark_known(URL, [MODEL_HASH, OTHER])
    with Outbox.open(tmp_path) as box:
        box.register_model(MODEL_HASH, WIRE, {})  # the same model again: still known
        assert box.known(URL) == {MODEL_HASH, OTHER}
        box.register_model(OTHER, {**WIRE, "version": "2.0.1"}, {})  # changed under its hash: send it again
        assert box.known(URL) == {MODEL_HASH}


def test_an_outbox_from_before_known_models_gains_the_table_and_keeps_its_windows(tmp_path: Path) -> None:
    with Outbox.open(tmp_path) as box:
        box.add_window(_window(T0))
    conn = sqlite3.connect(tmp_path / "outbox.sqlite")
    conn.execute("DROP TABLE known_models")  # as an agent of the previous release left it
    conn.commit()
    conn.close()
    with Outbox.open(tmp_path) as box:
        assert [w.seq for w in box.pending_windows()] == [1]
        assert box.known(URL) == set()
        box.mark_known(URL, [MODEL_HASH])
        assert box.known(URL) == {MODEL_HASH}
    assert not list(tmp_path.glob("outbox.sqlite.corrupt-*"))  # nothing was set aside
