"""Recorder: windows by clock, exact counts, mergeability, flat buffers, never breaking predict."""

from __future__ import annotations

import math
import threading
import time
import tracemalloc

import numpy as np
import pytest

from mlpack_edge.monitor_agent.profile import Profile, bin_categorical, bin_numeric
from mlpack_edge.monitor_agent.recorder import Recorder
from mlpack_edge.monitor_agent.wire import Window, merge_windows

from tests._race import race

from .helpers import MODEL_HASH, T0, FakeClock, fixed_sampler, traffic


def _recorder(profile: Profile, clock: FakeClock, sink: list[Window], **kw: object) -> Recorder:
    return Recorder(profile, MODEL_HASH, window_seconds=60, clock=clock, on_window=sink.append, **kw)


def test_counts_equal_binning_raw_rows(profile: Profile, clock: FakeClock) -> None:
    sink: list[Window] = []
    rec = _recorder(profile, clock, sink, buffer_rows=64)
    rng = np.random.default_rng(3)
    parts = [traffic(rng, n) for n in (1, 1, 5, 63, 200, 1)]  # single rows, a batch > buffer
    for num, cat, pred in parts:
        rec.record(num, cat, pred, 0.001)
    rec.record_error("validation", 2)
    window = rec.close()
    assert window is not None and sink == [window]
    num = np.concatenate([p[0] for p in parts])
    colours = [c for p in parts for c in p[1][0]]
    preds = np.concatenate([p[2] for p in parts])
    assert (window.requests, window.rows, window.errors) == (6, num.shape[0], {"validation": 2})
    for j, name in enumerate(["age", "income", "score"]):
        f = profile.feature(name)
        want = bin_numeric(np.array(f.edges), num[:, j], f.min, f.max)
        got = window.features[name]
        assert got.bins == want.counts.tolist()
        assert (got.missing, got.below, got.above) == (want.missing, want.below, want.above)
    colour = profile.feature("colour")
    want_c = bin_categorical({c: i for i, c in enumerate(colour.categories)}, colours)
    assert window.features["colour"].bins == want_c.counts.tolist()
    assert (window.features["colour"].missing, window.features["colour"].unseen) == (want_c.missing, want_c.unseen)
    assert window.features["colour"].unseen > 0 and window.features["colour"].missing > 0
    assert window.predictions is not None
    assert window.predictions.bins == np.bincount(preds, minlength=3).tolist()
    assert window.latency.count == 6


def test_windows_are_aligned_and_roll_with_the_clock(profile: Profile, clock: FakeClock) -> None:
    sink: list[Window] = []
    clock.now = T0 + 30
    rec = _recorder(profile, clock, sink)
    rng = np.random.default_rng(4)
    rec.record(*traffic(rng, 2), 0.002)
    clock.advance(29.9)
    assert rec.roll() is None and sink == []
    clock.advance(0.1)  # T0 + 60: the first window is due
    rec.record(*traffic(rng, 3), 0.002)
    assert [(w.start, w.end, w.rows) for w in sink] == [(T0, T0 + 60, 2)]
    clock.advance(600)  # idle: no empty windows are produced for the gap
    closed = rec.roll()
    assert closed is not None and (closed.start, closed.end, closed.rows) == (T0 + 60, T0 + 120, 3)
    assert rec.roll() is None and len(sink) == 2


def test_without_auto_roll_only_roll_closes_windows(profile: Profile, clock: FakeClock) -> None:
    sink: list[Window] = []
    rec = _recorder(profile, clock, sink)
    rec.auto_roll = False  # what the agent does while its thread closes windows on time
    rng = np.random.default_rng(14)
    rec.record(*traffic(rng, 2), 0.002)
    clock.advance(60.5)
    rec.record(*traffic(rng, 3), 0.002)  # a few ms late: still counted in the closing window
    assert sink == []
    closed = rec.roll()
    assert closed is not None and (closed.start, closed.end, closed.rows) == (T0, T0 + 60, 5)


def test_windows_merge_to_the_window_of_combined_traffic(profile: Profile, clock: FakeClock) -> None:
    rng = np.random.default_rng(5)
    batches = [traffic(rng, n) for n in (3, 50, 1, 700, 9)]
    lat = [0.001, 0.02, 0.0004, 0.3, 0.005]
    split: list[Window] = []
    rec = _recorder(profile, clock, split, buffer_rows=32)
    for b, latency in zip(batches, lat):
        rec.record(*b, latency)
        rec.add_system(fixed_sampler())
        clock.advance(60)
    rec.close()
    whole: list[Window] = []
    rec2 = _recorder(profile, FakeClock(), whole, buffer_rows=10_000)
    for b, latency in zip(batches, lat):
        rec2.record(*b, latency)
        rec2.add_system(fixed_sampler())
    rec2.close()
    assert len(split) == 5 and len(whole) == 1
    merged, one = merge_windows(split).to_dict(), whole[0].to_dict()
    for key in ("requests", "rows", "errors", "latency", "features", "predictions", "system"):
        assert merged[key] == one[key], key


def test_memory_stays_flat_in_the_number_of_rows(profile: Profile, clock: FakeClock) -> None:
    rng = np.random.default_rng(6)
    big = traffic(rng, 20_000)
    one = [traffic(rng, 1) for _ in range(64)]

    def peak(batches: int, singles: int) -> int:
        rec = _recorder(profile, clock, [], buffer_rows=128)
        tracemalloc.start()
        for _ in range(batches):
            # A fresh array each time (as from a request): holding on to them would show.
            rec.record(big[0].copy(), big[1], big[2].copy(), 0.05)  # > buffer: binned at once
        for i in range(singles):
            rec.record(*one[i % 64], 1e-5)
        snap = rec.snapshot()
        result = tracemalloc.get_traced_memory()[1]
        tracemalloc.stop()
        assert snap is not None and snap.rows == batches * 20_000 + singles
        return result

    small, large = peak(1, 1_000), peak(10, 10_000)
    assert large < small * 1.25 + 64 * 1024, (small, large)


def test_regression_predictions_use_prediction_bins(clock: FakeClock) -> None:
    from mlpack_edge.monitor_agent.profile import build_profile

    rng = np.random.default_rng(7)
    prof = build_profile([("x", "numeric", rng.normal(size=300))], prediction=("numeric", rng.normal(size=300), None))
    sink: list[Window] = []
    rec = Recorder(prof, MODEL_HASH, clock=clock, on_window=sink.append)
    values = np.array([np.nan, -100.0, 0.0, 100.0])
    rec.record(rng.normal(size=(4, 1)), [], values, 0.001)
    w = rec.close()
    assert w is not None and w.predictions is not None
    p = prof.prediction
    want = bin_numeric(np.array(p.edges), values, p.min, p.max)
    assert w.predictions.bins == want.counts.tolist()
    assert (w.predictions.missing, w.predictions.below, w.predictions.above) == (1, 1, 1)


def test_bad_calls_are_refused_but_storage_failures_never_reach_predict(profile: Profile, clock: FakeClock) -> None:
    def broken(_: Window) -> None:
        raise OSError("disk full")

    rec = Recorder(profile, MODEL_HASH, clock=clock, on_window=broken)
    rng = np.random.default_rng(8)
    num, cat, pred = traffic(rng, 2)
    with pytest.raises(ValueError, match="numeric has 2 columns, the profile has 3"):
        rec.record(num[:, :2], cat, pred, 0.001)
    with pytest.raises(ValueError, match="error kind"):
        rec.record_error("Bad Kind")
    rec.record(num, cat, pred, 0.001)
    clock.advance(120)
    rec.record(num, cat, pred, 0.001)  # closes a window into a failing sink: logged, not raised


def test_concurrent_recording_loses_nothing(profile: Profile, clock: FakeClock) -> None:
    sink: list[Window] = []
    rec = _recorder(profile, clock, sink, buffer_rows=16)
    num, cat, pred = traffic(np.random.default_rng(9), 1)

    def work() -> None:
        for _ in range(2000):
            rec.record(num, cat, pred, 1e-5)

    threads = [threading.Thread(target=work) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    w = rec.close()
    assert w is not None and (w.requests, w.rows, w.latency.count) == (8000, 8000, 8000)
    assert sum(w.features["colour"].bins) + w.features["colour"].missing + w.features["colour"].unseen == 8000


@pytest.mark.parametrize("auto_roll", [True, False])
def test_record_row_counts_as_record_does(profile: Profile, auto_roll: bool) -> None:
    """The runtime's single-row entry point gives the same windows, rolls and checkpoints as ``record``."""
    results = []
    for use_row in (False, True):
        clock = FakeClock()
        sink: list[Window] = []
        checkpoints: list[int] = []
        rec = _recorder(profile, clock, sink, buffer_rows=16)  # flushes every 8 single rows
        rec.auto_roll = auto_roll
        if auto_roll:
            rec.set_checkpoints(lambda: checkpoints.append(rec.snapshot().rows), 0, 5)  # type: ignore[union-attr]
        rng = np.random.default_rng(7)
        for i in range(150):
            num, cat, pred = traffic(rng, 1)
            if use_row:
                rec.record_row(num, cat, pred, 0.001 * (1 + i % 7))
            else:
                rec.record(num, cat, pred, 0.001 * (1 + i % 7))
            clock.advance(1.0)  # 150 s: two window ends on the way
            if not auto_roll:
                rec.roll()
        rec.close()
        results.append(([w.to_dict() for w in sink], checkpoints))
    assert results[0] == results[1]
    windows, checkpoints = results[1]
    assert len(windows) == 3 and sum(w["rows"] for w in windows) == 150
    if auto_roll:
        assert len(checkpoints) > 20  # every 5 rows, between the window ends
    else:
        assert checkpoints == []


_LABELS = ("maybe", "no", "yes")  # the profile's prediction categories, in class order
_CODES = {c: i for i, c in enumerate(_LABELS)}


def _sink_row(rec: Recorder, rows: list, num: np.ndarray, cat: list, label: str, latency: float) -> None:
    """What the runtime's single-row path does with a row sink (Model.predict with the agent's recorder)."""
    if len(rows) < rec.sink_cap:
        rows.extend((num, cat, label, latency))
    else:
        rec.record(num, cat, np.array([_CODES[label]]), latency)


def test_row_sink_counts_as_record_does(profile: Profile) -> None:
    """Rows appended to a row sink give the same windows as ``record`` of the same rows, across
    flushes, snapshots and window rolls by the agent's thread; labels become the same class codes."""
    results = []
    for use_sink in (False, True):
        clock = FakeClock()
        sink: list[Window] = []
        rec = _recorder(profile, clock, sink, buffer_rows=16)  # a flush every 7 sunk rows
        rec.auto_roll = False
        rows = rec.row_sink(_CODES)
        assert rec.sink_cap == 4 * 7
        rng = np.random.default_rng(8)
        snapshots = []
        for i in range(150):
            num, cat, pred = traffic(rng, 1)
            if use_sink:
                _sink_row(rec, rows, num, cat, _LABELS[int(pred[0])], 0.001 * (1 + i % 7))
            else:
                rec.record(num, cat, pred, 0.001 * (1 + i % 7))
            if i % 9 == 0:
                rec.record(*traffic(rng, 3), 0.002)  # a batch between single rows
            if i % 40 == 0:
                snapshots.append(rec.snapshot().to_dict())  # type: ignore[union-attr]
            clock.advance(1.0)  # 150 s: two window ends on the way
            rec.roll()  # the agent's tick
            assert len(rows) <= rec.sink_cap
        rec.close()
        results.append(([w.to_dict() for w in sink], snapshots))
    assert results[0] == results[1]
    windows = results[1][0]
    assert len(windows) == 3 and sum(w["requests"] for w in windows) == 150 + 17


def test_row_sink_is_off_while_record_rolls_windows_on_an_injected_clock(profile: Profile, clock: FakeClock) -> None:
    """With auto_roll on and an injected clock (its window end cannot be read on the runtime's
    perf_counter) a row needs record_row's clock check: sink_cap is 0 until the agent turns it off."""
    rec = _recorder(profile, clock, [], buffer_rows=64)
    rows = rec.row_sink(_CODES)
    assert rec.sink_cap == 0
    rec.auto_roll = False
    assert rec.sink_cap == 4 * 31
    num, cat, _ = traffic(np.random.default_rng(1), 1)
    _sink_row(rec, rows, num, cat, "yes", 0.001)
    rec.auto_roll = True  # the agent stopping: kept rows still count
    assert rec.sink_cap == 0
    w = rec.close()
    assert w is not None and (w.requests, w.rows, w.predictions.bins) == (1, 1, [0, 0, 1])  # type: ignore[union-attr]


def _timed_sink_row(rec: Recorder, rows: list, num: np.ndarray, cat: list, label: str) -> bool:
    """What the runtime's single-row path does with a recorder rolling its own windows on the
    wall clock: the sink takes a row only before ``sink_until``, read on perf_counter when the
    call begins. Returns whether the sink took it."""
    t0 = time.perf_counter()
    if len(rows) < rec.sink_cap and t0 < rec.sink_until:
        rows.extend((num, cat, label, 1e-5))
        return True
    rec.record(num, cat, np.array([_CODES[label]]), 1e-5)
    return False


def test_row_sink_takes_rows_until_the_window_ends_on_the_wall_clock(profile: Profile) -> None:
    """A recorder rolling its own windows on the wall clock opens its sinks until the window's
    end, read on perf_counter: rows sunk before it are in that window, rows after it in the next
    (without the deadline the later rows would sit in the sink and join the closed window)."""
    width = 1.0
    now = time.time()
    time.sleep(math.ceil(now / width) * width - now + 0.02)  # early in a window
    sink: list[Window] = []
    rec = Recorder(profile, MODEL_HASH, window_seconds=width, on_window=sink.append, buffer_rows=64)
    assert rec.auto_roll and rec.sink_cap == 4 * 31
    assert abs((rec.sink_until - time.perf_counter()) - (rec.window_end - time.time())) < 0.5
    rows = rec.row_sink(_CODES)
    num, cat, _ = traffic(np.random.default_rng(2), 1)
    assert all(_timed_sink_row(rec, rows, num, cat, "yes") for _ in range(20))
    time.sleep(max(0.0, rec.window_end - time.time()) + 0.02)
    took = [_timed_sink_row(rec, rows, num, cat, "no") for _ in range(20)]
    assert not took[0] and all(took[1:])  # the first row after the end rolls the window and reopens the sink
    rec.close()
    assert [w.predictions.bins for w in sink] == [[0, 0, 20], [0, 20, 0]]  # type: ignore[union-attr]


def test_row_sinks_keep_checkpoints_by_rows_while_record_rolls_windows(profile: Profile) -> None:
    """Checkpoints every 10 rows stay every 10 rows or fewer when rows go through the sinks
    (record_row and every sink share what is left before the next one)."""
    sink: list[Window] = []
    rec = Recorder(profile, MODEL_HASH, window_seconds=10**9, on_window=sink.append, buffer_rows=64)
    seen: list[int] = []
    rec.set_checkpoints(lambda: seen.append(rec.snapshot().rows), 0, 10)  # type: ignore[union-attr]
    rows, other = rec.row_sink(_CODES), rec.row_sink({"maybe": 0, "yes": 1, "no": 2})
    num, cat, _ = traffic(np.random.default_rng(3), 1)
    took = [_timed_sink_row(rec, rows if i % 3 else other, num, cat, "yes") for i in range(200)]
    assert sum(took) > 100  # most rows went through a sink
    steps = np.diff([0, *seen])
    assert len(seen) >= 19 and steps.max() <= 10, seen
    w = rec.close()
    assert w is not None and w.rows == 200


def test_row_sink_loses_nothing_while_the_agent_flushes_and_rolls(profile: Profile, clock: FakeClock) -> None:
    """Four threads append single rows while another rolls windows and takes snapshots: every
    row is counted once, in some window (the appends race the flush's copy and delete)."""
    sink: list[Window] = []
    rec = _recorder(profile, clock, sink, buffer_rows=64)
    rec.auto_roll = False
    rows = rec.row_sink(_CODES)
    num, cat, _ = traffic(np.random.default_rng(9), 1)

    def work(k: int) -> None:
        for i in range(3000):
            _sink_row(rec, rows, num, cat, _LABELS[(i + k) % 3], 1e-5)

    def agent() -> None:
        clock.advance(7.0)
        rec.roll()
        rec.snapshot()

    race(work, 4, agent)
    rec.close()
    assert len(sink) > 1  # rows landed in several windows
    total = merge_windows(sink)
    assert (total.requests, total.rows, total.latency.count) == (12000, 12000, 12000)
    assert total.predictions is not None and total.predictions.bins == [4000, 4000, 4000]
    assert sum(total.features["colour"].bins) + total.features["colour"].missing + total.features["colour"].unseen == 12000
