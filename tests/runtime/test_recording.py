"""The agent's real recorder behind a real model: the single-row paths record what ``record`` would."""

from __future__ import annotations

import json
import math
import shutil
import threading
import time
from collections import Counter
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from mlpack_edge.monitor_agent.agent import ModelInfo
from mlpack_edge.monitor_agent.recorder import Recorder
from mlpack_edge.monitor_agent.wire import Window, merge_windows
from mlpack_edge.runtime import Bundle, Model
from tests._race import race

T0 = 1_700_000_000.0


def _recorder(bundle: Bundle, sink: list[Window], clock: Any = lambda: T0, buffer_rows: int = 16) -> Recorder:
    info = ModelInfo.from_bundle_bytes(bundle.manifest.raw, bundle.read("profile.json"), "test")
    return Recorder(info.profile, info.content_hash, clock=clock, on_window=sink.append, buffer_rows=buffer_rows)


def _calls(model: Model, rows: list[dict[str, Any]]) -> int:
    """Every single-row entry point, on dicts and lists; returns the number of calls."""
    n = 0
    for i, row in enumerate(rows * 5):
        values = [row[k] for k in model.feature_names]
        if i % 4 == 0:
            model.predict(row)
        elif i % 4 == 1:
            model.predict_proba(row)
        elif i % 4 == 2:
            model.predict(values)
        else:
            model.predict_one(row)
        n += 1
    return n


@pytest.mark.parametrize("name", ["binary_bundle", "mixed_bundle"])
def test_agent_mode_records_what_record_row_does(name: str, request: pytest.FixtureRequest) -> None:
    """With auto_roll off the model appends rows to the recorder's row sink (labels coded at
    flush); the windows equal those of record_row's path, but for latencies measured apart."""
    bundle = Bundle.open(request.getfixturevalue(name))
    rows = bundle.read_json("golden.json")["rows"]
    windows = []
    for agent in (False, True):
        sink: list[Window] = []
        rec = _recorder(bundle, sink)
        rec.auto_roll = not agent
        model = Model(bundle, recorder=rec)
        calls = _calls(model, rows)
        if agent:
            assert rec.sink_cap > 0 and model._sink is not None  # noqa: SLF001 - the path under test is taken
        rec.close()
        (w,) = sink
        assert (w.requests, w.rows, w.latency.count) == (calls, calls, calls)
        windows.append({k: v for k, v in w.to_dict().items() if k != "latency"})
    assert windows[0] == windows[1]
    assert sum(windows[1]["predictions"]["bins"]) == calls


@pytest.mark.parametrize("name", ["binary_bundle", "mixed_bundle"])
def test_a_recorder_rolling_its_own_windows_on_the_wall_clock_takes_rows_through_the_sinks(
    name: str, request: pytest.FixtureRequest
) -> None:
    """A recorder left rolling its own windows (a Python API user's, as one-shot ``predict`` has it)
    on the wall clock: single rows go to the sinks, not through record_row, and the window equals
    the one record_row's path gives (an injected clock keeps that path), but for latencies."""
    bundle = Bundle.open(request.getfixturevalue(name))
    rows = bundle.read_json("golden.json")["rows"]
    windows = []
    for wall in (False, True):
        sink: list[Window] = []
        info = ModelInfo.from_bundle_bytes(bundle.manifest.raw, bundle.read("profile.json"), "test")
        rec = Recorder(info.profile, info.content_hash, window_seconds=10**9, clock=time.time if wall else (lambda: T0),
                       on_window=sink.append, buffer_rows=16)
        assert rec.auto_roll
        by_row = [0]
        record_row = rec.record_row

        def counted(*args: Any) -> None:
            by_row[0] += 1
            record_row(*args)

        rec.record_row = counted  # type: ignore[method-assign]
        calls = _calls(Model(bundle, recorder=rec), rows)
        assert (by_row[0] == 0) if wall else (by_row[0] > calls // 2), by_row
        rec.close()
        (w,) = sink
        assert (w.requests, w.rows, w.latency.count) == (calls, calls, calls)
        windows.append({k: v for k, v in w.to_dict().items() if k not in ("latency", "start", "end")})
    assert windows[0] == windows[1]


@pytest.mark.parametrize("method", ["predict", "predict_proba"])
@pytest.mark.parametrize("mode", ["agent", "own_windows"])
def test_no_row_is_lost_across_threads_flushes_and_rolls(binary_bundle: Path, method: str, mode: str) -> None:
    """Four threads predict while windows roll and snapshots are taken: each row's label is
    counted once, in some window (predict_proba's rows through the proba sink). ``agent``: the
    agent's thread rolls windows and takes snapshots; ``own_windows``: the recorder rolls its
    own 20-ms windows on the wall clock, from the calls that find one ended or a sink full,
    while another thread takes snapshots as checkpoints do."""
    bundle = Bundle.open(binary_bundle)
    rows = bundle.read_json("golden.json")["rows"]
    sink: list[Window] = []
    if mode == "agent":
        now = [T0]
        rec = _recorder(bundle, sink, clock=lambda: now[0])
        rec.auto_roll = False

        def tick() -> None:
            now[0] += 20.0
            rec.roll()
            rec.snapshot()
    else:
        info = ModelInfo.from_bundle_bytes(bundle.manifest.raw, bundle.read("profile.json"), "test")
        rec = Recorder(info.profile, info.content_hash, window_seconds=0.02, on_window=sink.append, buffer_rows=16)

        def tick() -> None:
            rec.snapshot()
            time.sleep(0.001)

    model = Model(bundle, recorder=rec)
    assert rec.sink_cap > 0  # the sinks are open: the path under test is taken
    got: Counter[Any] = Counter()
    lock = threading.Lock()
    if method == "predict":
        call = model.predict
    else:
        assert model._proba_sink is not None  # noqa: SLF001 - the path under test is taken

        def call(row: dict[str, Any]) -> Any:
            return model.classes[int(model.predict_proba(row).argmax())]

    def work(k: int) -> None:
        mine = Counter(call(rows[(i + k) % len(rows)]) for i in range(400))
        with lock:
            got.update(mine)

    race(work, 4, tick, switch_s=1e-5)
    rec.close()
    total = merge_windows(sink)
    assert (total.requests, total.rows, total.latency.count) == (1600, 1600, 1600)
    assert total.predictions is not None
    assert total.predictions.bins == [got[c] for c in model.classes]
    assert len(sink) > 1  # rows landed in several windows


def test_models_opened_again_on_one_recorder_share_its_row_sink(binary_bundle: Path) -> None:
    """A process that opens its model again (a reload) on the same recorder keeps one row sink,
    not one more list per model for every flush to visit; both models' rows are counted."""
    bundle = Bundle.open(binary_bundle)
    rows = bundle.read_json("golden.json")["rows"]
    sink: list[Window] = []
    rec = _recorder(bundle, sink, buffer_rows=1024)
    rec.auto_roll = False
    models = [Model(bundle, recorder=rec) for _ in range(50)]
    assert len({id(m._sink) for m in models}) == 1  # noqa: SLF001 - the list the recorder holds
    labels = Counter(m.predict(row) for m in models[:2] for row in rows)
    rec.close()
    (w,) = sink
    assert (w.requests, w.rows) == (2 * len(rows), 2 * len(rows))
    assert w.predictions is not None and w.predictions.bins == [labels[c] for c in models[0].classes]


def _without_argmax_proof(src: Path, dst: Path) -> Path:
    """A copy of a bundle as built before the proof existed: its parity section lacks it."""
    shutil.copytree(src, dst)
    manifest = json.loads((dst / "manifest.json").read_bytes())
    del manifest["parity"]["label_is_argmax"]
    (dst / "manifest.json").write_text(json.dumps(manifest, sort_keys=True, separators=(",", ":")))
    return dst


@pytest.mark.parametrize("proof", [True, False])
def test_predict_proba_records_the_top_class_where_the_build_proved_it_is_the_label(
    binary_bundle: Path, tmp_path: Path, proof: bool
) -> None:
    """With the build's proof, predict_proba of a single row (dict or float32 array) runs bound
    and its rows go to the proba sink as bytes; the window equals the one record_row's path
    (labels from the model) gives. Without it (an older bundle) the label is asked for as before."""
    path = binary_bundle if proof else _without_argmax_proof(binary_bundle, tmp_path / "old")
    bundle = Bundle.open(path)
    rows = bundle.read_json("golden.json")["rows"]
    windows = []
    for agent in (False, True):
        sink: list[Window] = []
        rec = _recorder(bundle, sink, buffer_rows=4096)
        rec.auto_roll = not agent
        model = Model(bundle, recorder=rec)
        assert (model._proba_sink is not None) == proof  # noqa: SLF001 - the path under test
        got = []
        for row in rows * 3:
            got.append(model.predict_proba(row))
            got.append(model.predict_proba(np.array([row[k] for k in model.feature_names], np.float32)))
        if proof:  # complete rows are in the proba sink (agent mode), the others went through record_row
            complete = sum(all(isinstance(v, float) and math.isfinite(v) for v in row.values()) for row in rows)
            assert 0 < complete < len(rows)  # golden rows include probes with missing values
            assert len(model._proba_sink) == (4 * 2 * 3 * complete if agent else 0)  # noqa: SLF001
        rec.close()
        (w,) = sink
        assert (w.requests, w.rows, w.latency.count) == (len(got), len(got), len(got))
        windows.append(({k: v for k, v in w.to_dict().items() if k != "latency"}, np.array(got)))
    assert windows[0][0] == windows[1][0]
    np.testing.assert_array_equal(windows[0][1], windows[1][1])  # the same probabilities returned
    assert windows[0][0]["predictions"]["bins"] == [
        int((windows[0][1].argmax(axis=1) == k).sum()) for k in range(len(model.classes))
    ]


def test_proba_sink_is_shared_and_numeric_only(binary_bundle: Path, mixed_bundle: Path) -> None:
    """Models opened again on one recorder share its proba sink; a model with categorical
    features has none (its rows are not one float32 matrix), and the recorder refuses one."""
    bundle = Bundle.open(binary_bundle)
    rec = _recorder(bundle, [])
    rec.auto_roll = False
    models = [Model(bundle, recorder=rec) for _ in range(5)]
    assert len({id(m._proba_sink) for m in models}) == 1  # noqa: SLF001 - the list the recorder holds
    mixed = Bundle.open(mixed_bundle)
    mrec = _recorder(mixed, [])
    mrec.auto_roll = False
    assert Model(mixed, recorder=mrec)._proba_sink is None  # noqa: SLF001
    with pytest.raises(ValueError, match="proba_sink takes rows of numeric features only"):
        mrec.proba_sink(3)


def test_a_full_proba_sink_is_flushed_not_spilled_into_the_row_sink(binary_bundle: Path) -> None:
    """When the proba sink is full, the next row is recorded by a call that flushes it: the
    label row sink stays empty (filling it too would keep rows on the slow path twice as long)."""
    bundle = Bundle.open(binary_bundle)
    rows = [r for r in bundle.read_json("golden.json")["rows"]
            if all(isinstance(v, float) and math.isfinite(v) for v in r.values())]
    sink: list[Window] = []
    rec = _recorder(bundle, sink, buffer_rows=16)
    rec.auto_roll = False
    model = Model(bundle, recorder=rec)
    assert model._proba_sink is not None and model._sink is not None  # noqa: SLF001
    held = []
    for i in range(60):
        model.predict_proba(rows[i % len(rows)])
        held.append(len(model._proba_sink) // 4)  # noqa: SLF001
        assert model._sink == []  # noqa: SLF001
    assert max(held) == rec.sink_cap // 4 and held.count(0) >= 5  # filled, then flushed, again and again
    rec.close()
    (w,) = sink
    assert (w.requests, w.rows) == (60, 60)
