"""Ground-truth feedback on the device: the join store (real SQLite), its hand-off to the real
outbox, the wire section, and the KPIs against scikit-learn's on the same pairs."""

from __future__ import annotations

import math
import sqlite3
from pathlib import Path

import numpy as np
import pytest

from mlpack_edge.errors import AgentError
from mlpack_edge.monitor_agent.agent import Agent, ModelInfo
from mlpack_edge.monitor_agent.config import AgentConfig
from mlpack_edge.monitor_agent.feedback import FeedbackStore, IdMaker, Target, read_labels
from mlpack_edge.monitor_agent.kpi import production_kpis, wilson
from mlpack_edge.monitor_agent.outbox import Outbox
from mlpack_edge.monitor_agent.wire import Feedback, SystemStats, Window, WireError, validate_batch

from .helpers import MODEL_HASH, FakeClock

CLASSES = ("maybe", "no", "yes")
TARGET = Target(CLASSES)


def _store(state: Path, clock: FakeClock, **kw: object) -> FeedbackStore:
    state.mkdir(parents=True, exist_ok=True)
    return FeedbackStore(state, clock=clock, **kw)  # type: ignore[arg-type]


def test_each_label_is_counted_once_with_its_outcome(state: Path, clock: FakeClock) -> None:
    store = _store(state, clock, join_seconds=3600)
    ids = IdMaker().many(4)
    store.remember(MODEL_HASH, ids, [0, 1, 2, 2])
    outcomes = store.add_labels(MODEL_HASH, TARGET, [
        (ids[0], "maybe"),    # right
        (ids[1], "yes"),      # wrong: true yes, predicted no
        (ids[1], "no"),       # a second label for one id: the first one wins
        ("nobody", "yes"),    # no such prediction
        (ids[2], "perhaps"),  # not a class: the id stays open for a corrected label
        (ids[2], "yes"),
    ])
    assert outcomes == ["matched", "matched", "duplicate", "unmatched", "unknown_label", "matched"]
    clock.advance(3601)
    assert store.add_labels(MODEL_HASH, TARGET, [(ids[3], "yes")]) == ["late"]
    fb = store.unsent(MODEL_HASH)
    assert fb is not None
    assert (fb.labels, fb.matched, fb.duplicate, fb.unmatched, fb.unknown_label, fb.late) == (7, 3, 1, 1, 1, 1)
    assert fb.confusion == [[1, 0, 0], [0, 0, 0], [0, 1, 1]]  # rows: true class, columns: predicted
    store.close()


def test_labels_are_durable_before_the_reply_and_handed_over_exactly_once(state: Path, clock: FakeClock) -> None:
    store = _store(state, clock)
    ids = IdMaker().many(2)
    store.remember(MODEL_HASH, ids, [1, 2])
    store.add_labels(MODEL_HASH, TARGET, [(ids[0], "no"), (ids[1], "no")])
    # No close(): what a kill -9 leaves. A new process finds the counts and hands them over.
    again = FeedbackStore(state, clock=clock)
    with Outbox.open(state) as box:
        assert again.handoff(box) == 1
        assert again.handoff(box) == 0  # nothing twice
        windows = box.pending_windows()
    assert len(windows) == 1 and windows[0].feedback is not None
    assert windows[0].feedback.confusion == [[0, 0, 0], [0, 1, 1], [0, 0, 0]]
    assert windows[0].requests == 0 and windows[0].features == {}
    # A duplicate after the restart is still a duplicate: the join state is on disk.
    assert again.add_labels(MODEL_HASH, TARGET, [(ids[0], "no")]) == ["duplicate"]
    again.close()


def test_a_handoff_interrupted_after_the_outbox_write_is_not_stored_twice(state: Path, clock: FakeClock) -> None:
    store = _store(state, clock)
    ids = IdMaker().many(1)
    store.remember(MODEL_HASH, ids, [0])
    store.add_labels(MODEL_HASH, TARGET, [(ids[0], "maybe")])

    class DiesAfterWrite:
        """The real outbox; the process 'dies' right after the window is committed."""

        def __init__(self, box: Outbox) -> None:
            self.box = box

        def add_window(self, window: Window, owner: str | None = None, token: str | None = None) -> int:
            self.box.add_window(window, owner, token)
            raise KeyboardInterrupt  # nothing after this line of handoff() runs

    with Outbox.open(state) as box:
        with pytest.raises(KeyboardInterrupt):
            store.handoff(DiesAfterWrite(box))  # type: ignore[arg-type]
        assert len(box.pending_windows()) == 1
        assert store.handoff(box) == 1  # the hand-off row is still there: retried...
        assert len(box.pending_windows()) == 1  # ...and the token makes it a no-op
        assert box.accounting().balanced
    store.close()


def test_regression_residuals(state: Path, clock: FakeClock) -> None:
    store = _store(state, clock)
    ids = IdMaker().many(4)
    preds = [1.0, 2.5, -3.0, 10.0]
    labels = [1.5, 2.5, -1.0, "7.25"]  # a CSV label arrives as text
    store.remember(MODEL_HASH, ids, preds)
    out = store.add_labels(MODEL_HASH, Target(None), [*zip(ids, labels), (ids[0], "x"), ("z", 1.0)])
    assert out == ["matched"] * 4 + ["duplicate", "unmatched"]
    fb = store.unsent(MODEL_HASH)
    assert fb is not None and fb.residuals is not None
    errs = np.array(preds) - np.array([1.5, 2.5, -1.0, 7.25])
    assert fb.residuals.count == 4
    assert fb.residuals.sum == pytest.approx(errs.sum())
    assert fb.residuals.sum_sq == pytest.approx((errs**2).sum())
    k = production_kpis(fb, {"task": "regression", "gates": [{"gate": "mae <= 1", "metric": "mae", "op": "<=", "threshold": 1.0}]}, 1)
    assert k["mae"] == pytest.approx(np.abs(errs).mean()) and k["rmse"] == pytest.approx(math.sqrt((errs**2).mean()))
    assert k["gates"][0]["status"] == "fail"  # mae 1.3125
    store.close()


def test_a_batch_of_generated_ids_is_one_block_joined_like_single_rows(state: Path, clock: FakeClock) -> None:
    store = _store(state, clock, join_seconds=3600)
    maker = IdMaker()
    single = maker.one()
    ids = maker.many(100)
    preds = [i % 3 for i in range(100)]
    store.remember(MODEL_HASH, [single], [1])
    store.remember(MODEL_HASH, ids, preds)
    store.flush()
    con = sqlite3.connect(state / "feedback.sqlite")
    assert con.execute("SELECT COUNT(*) FROM predictions").fetchone()[0] == 1  # the single row
    assert con.execute("SELECT COUNT(*), SUM(LENGTH(preds)) FROM blocks").fetchone() == (1, 800)  # 8 bytes a prediction
    assert store.stats()["pending"] == 101
    prefix, last = ids[-1].rsplit("-", 1)
    past_the_end = f"{prefix}-{int(last, 16) + 1:x}"
    zero_padded = f"{prefix}-0{ids[10].rsplit('-', 1)[1]}"  # another spelling of ids[10]: not the same id
    outcomes = store.add_labels(MODEL_HASH, TARGET, [
        (ids[0], "maybe"), (ids[10], "no"), (ids[99], "yes"), (ids[10], "no"), (single, "no"),
        (past_the_end, "yes"), (zero_padded, "no"), (ids[5], "perhaps"), (ids[5], "maybe"),
    ])
    assert outcomes == ["matched", "matched", "matched", "duplicate", "matched", "unmatched", "unmatched",
                        "unknown_label", "matched"]
    fb = store.unsent(MODEL_HASH)
    assert fb is not None and fb.confusion == [[1, 0, 1], [0, 2, 0], [1, 0, 0]]  # ids[5] predicted 2, ids[99] 0
    store.close()
    again = FeedbackStore(state, clock=clock)  # a new process: the block's labels are remembered
    assert again.add_labels(MODEL_HASH, TARGET, [(ids[0], "maybe"), (ids[1], "no")]) == ["duplicate", "matched"]
    again.close()


def test_single_rows_past_one_insert_statement_keep_order_times_and_first_prediction(state: Path, clock: FakeClock) -> None:
    """Single-row ids go in as multi-row INSERTs (INSERT_CHUNK rows each): every row, its own
    time, and a repeated id keeps its first prediction across a statement boundary."""
    from mlpack_edge.monitor_agent.feedback import INSERT_CHUNK

    store = _store(state, clock, join_seconds=3600)
    n = 2 * INSERT_CHUNK + 7
    ids = [f"user-{i}" for i in range(n)]
    for i, pid in enumerate(ids):
        store.remember(MODEL_HASH, [pid], [i % 3])
        clock.advance(1)
    store.remember(MODEL_HASH, [ids[3]], [2])  # a repeat in the last statement: ignored
    assert store.flush() == n + 1
    con = sqlite3.connect(state / "feedback.sqlite")
    got = con.execute("SELECT id, time, pred FROM predictions ORDER BY time").fetchall()
    start = got[0][1]
    assert got == [(pid, start + i, float(i % 3)) for i, pid in enumerate(ids)]
    assert con.execute("SELECT value FROM meta WHERE key = 'repeated_ids'").fetchone() == (1,)
    assert store.stats()["pending"] == n
    assert store.add_labels(MODEL_HASH, TARGET, [(ids[3], "maybe"), (ids[-1], "yes")]) == ["matched", "matched"]
    fb = store.unsent(MODEL_HASH)
    # ids[3] predicted 0 (its first prediction, not the repeat's 2); ids[-1] predicted (n - 1) % 3 == 1
    assert fb is not None and fb.confusion == [[1, 0, 0], [0, 0, 0], [0, 1, 0]] and fb.labels == 2
    store.close()


def test_more_blocks_than_one_insert_statement_takes_are_all_stored(state: Path, clock: FakeClock) -> None:
    from mlpack_edge.monitor_agent.feedback import INSERT_CHUNK

    store = _store(state, clock, join_seconds=3600)
    maker = IdMaker()
    runs = [maker.many(2) for _ in range(INSERT_CHUNK + 3)]
    for k, ids in enumerate(runs):
        store.remember(MODEL_HASH, ids, [k % 3, (k + 1) % 3])
    assert store.flush() == 2 * len(runs)
    con = sqlite3.connect(state / "feedback.sqlite")
    assert con.execute("SELECT COUNT(*), SUM(last - first + 1) FROM blocks").fetchone() == (len(runs), 2 * len(runs))
    k = len(runs) - 1  # the last block, in the second statement: predicted (k + 1) % 3 for its second id
    assert store.add_labels(MODEL_HASH, TARGET, [(runs[k][1], CLASSES[(k + 1) % 3])]) == ["matched"]
    fb = store.unsent(MODEL_HASH)
    assert fb is not None and sum(map(sum, fb.confusion)) == 1 and fb.confusion[(k + 1) % 3][(k + 1) % 3] == 1
    store.close()


def test_blocks_are_evicted_oldest_first_with_single_rows(state: Path, clock: FakeClock) -> None:
    store = _store(state, clock, join_seconds=100, max_pending=6)
    maker = IdMaker()
    first = maker.one()
    store.remember(MODEL_HASH, [first], [0])
    clock.advance(1)
    older = maker.many(4)
    store.remember(MODEL_HASH, older, [0, 1, 2, 0])
    clock.advance(1)
    newer = maker.many(4)
    store.remember(MODEL_HASH, newer, [0, 0, 0, 0])
    store.flush()  # 9 pending, 6 allowed: the single row, then the first 2 of the older block go
    stats = store.stats()
    assert stats["pending"] == 6 and stats["evicted"] == 3
    outcomes = store.add_labels(MODEL_HASH, TARGET, [(first, "maybe"), (older[1], "no"), (older[2], "yes"),
                                                     (older[3], "maybe"), (newer[0], "maybe")])
    assert outcomes == ["unmatched", "unmatched", "matched", "matched", "matched"]
    clock.advance(250)  # past twice the join window: blocks expire and are counted as such
    store.remember(MODEL_HASH, maker.many(2), [1, 1])
    store.flush()
    assert store.stats()["pending"] == 2 and store.stats()["expired"] == 6
    store.close()


def test_the_store_is_bounded_oldest_first(state: Path, clock: FakeClock) -> None:
    store = _store(state, clock, join_seconds=100, max_pending=3)
    ids = IdMaker().many(5)
    for i, pid in enumerate(ids):
        store.remember(MODEL_HASH, [pid], [0])
        clock.advance(1)
    store.flush()
    stats = store.stats()
    assert stats["pending"] == 3 and stats["evicted"] == 2
    assert store.add_labels(MODEL_HASH, TARGET, [(ids[0], "maybe"), (ids[4], "maybe")]) == ["unmatched", "matched"]
    clock.advance(250)  # past twice the join window: gone
    store.remember(MODEL_HASH, ["new"], [0])
    store.flush()
    assert store.stats()["pending"] == 1 and store.stats()["expired"] == 3
    store.close()


def test_kpis_equal_scikit_learn_on_the_same_pairs(state: Path, clock: FakeClock) -> None:
    from sklearn.metrics import accuracy_score, precision_recall_fscore_support

    rng = np.random.default_rng(7)
    n = 997
    pred = rng.integers(0, 3, n)
    true = np.where(rng.random(n) < 0.7, pred, rng.integers(0, 3, n))
    store = _store(state, clock)
    ids = IdMaker().many(n)
    store.remember(MODEL_HASH, ids, pred.tolist())
    store.add_labels(MODEL_HASH, TARGET, [(i, CLASSES[t]) for i, t in zip(ids, true)])
    fb = store.unsent(MODEL_HASH)
    ref = {"task": "multiclass", "classes": list(CLASSES), "metrics": {"recall": 0.9},
           "gates": [{"gate": "recall >= 0.9", "metric": "recall", "op": ">=", "threshold": 0.9}]}
    k = production_kpis(fb, ref, min_labels=100)
    p, r, f, s = precision_recall_fscore_support(true, pred, labels=[0, 1, 2], zero_division=0.0)
    for j, c in enumerate(CLASSES):
        assert k["per_class"][c]["precision"] == p[j]
        assert k["per_class"][c]["recall"] == r[j]
        assert k["per_class"][c]["f1"] == f[j]
        assert k["per_class"][c]["support"] == s[j]
    mp, mr, mf, _ = precision_recall_fscore_support(true, pred, average="macro", zero_division=0.0)
    assert (k["macro"]["precision"], k["macro"]["recall"], k["macro"]["f1"]) == (mp, mr, mf)
    assert k["accuracy"] == accuracy_score(true, pred)
    gate = k["gates"][0]
    assert gate["status"] == "fail" and gate["measured_as"] == "macro recall" and gate["build"] == 0.9
    store.close()


def test_wilson_interval() -> None:
    lo, hi = wilson(81, 100)  # type: ignore[misc]
    assert (round(lo, 4), round(hi, 4)) == (0.7222, 0.8749)  # the textbook values for 81/100
    assert wilson(0, 0) is None


def test_binary_gates_score_the_positive_class_with_an_interval() -> None:
    fb = Feedback(labels=300, matched=300, confusion=[[150, 10], [60, 80]])  # true malignant: 80 of 140 found
    ref = {"task": "binary", "classes": ["benign", "malignant"], "positive": "malignant", "metrics": {"recall": 0.95},
           "gates": [{"gate": "recall >= 0.9", "metric": "recall", "op": ">=", "threshold": 0.9},
                     {"gate": "precision >= 0.9", "metric": "precision", "op": ">=", "threshold": 0.9},
                     {"gate": "roc_auc >= 0.9", "metric": "roc_auc", "op": ">=", "threshold": 0.9}]}
    recall, precision, auc = production_kpis(fb, ref, min_labels=100)["gates"]
    assert recall["production"] == 80 / 140 and recall["n"] == 140 and recall["status"] == "fail" and recall["certain"]
    assert precision["production"] == 80 / 90 and precision["n"] == 90 and precision["status"] == "insufficient"
    assert auc["status"] == "not measurable"


def test_wire_section_round_trips_and_older_windows_stay_byte_equal() -> None:
    old = {"model": MODEL_HASH, "seq": 1, "start": 0.0, "end": 60.0}
    assert "feedback" not in Window.from_dict(old).to_dict()
    fb = {"labels": 5, "matched": 3, "unmatched": 1, "late": 0, "duplicate": 1, "unknown_label": 0,
          "confusion": [[1, 0], [1, 1]]}
    w = Window.from_dict({**old, "feedback": fb})
    assert w.to_dict()["feedback"] == fb
    merged = Window.from_dict({**old, "feedback": fb})
    merged.merge(Window.from_dict({**old, "seq": 2, "feedback": fb}))
    assert merged.feedback is not None and merged.feedback.confusion == [[2, 0], [2, 2]] and merged.feedback.labels == 10
    batch = {"schema": 1, "device": "d", "windows": [{**old, "feedback": {**fb, "matched": 4}}]}
    with pytest.raises(WireError, match=r"windows\[0\]\.feedback\.matched: 4 but the confusion matrix"):
        validate_batch(batch)
    with pytest.raises(WireError, match=r"windows\[0\]\.feedback\.confusion: expected a square"):
        validate_batch({**batch, "windows": [{**old, "feedback": {**fb, "confusion": [[1, 0]]}}]})


def test_labels_csv_errors_name_file_and_line(tmp_path: Path) -> None:
    good = tmp_path / "labels.csv"
    good.write_text("order,truth,extra\no1,yes,1\n\no2,no,2\n", encoding="utf-8")
    assert read_labels(str(good), "order", "truth") == [("o1", "yes"), ("o2", "no")]
    with pytest.raises(AgentError, match=r"labels\.csv: the CSV header lacks column 'label'"):
        read_labels(str(good), "order", "label")
    bad = tmp_path / "bad.csv"
    bad.write_text("order,truth\no1,yes\no2\n", encoding="utf-8")
    with pytest.raises(AgentError, match=r"bad\.csv: line 3: expected 2 fields"):
        read_labels(str(bad), "order", "truth")
    bad.write_text("order,truth\n,yes\n", encoding="utf-8")
    with pytest.raises(AgentError, match=r"line 2: order: expected an id"):
        read_labels(str(bad), "order", "truth")


def test_agent_hands_labels_to_the_outbox_and_status_shows_kpis(state: Path, clock: FakeClock, model: ModelInfo) -> None:
    kpi = {"task": "multiclass", "classes": list(CLASSES), "metrics": {"accuracy": 0.8},
           "gates": [{"gate": "accuracy >= 0.8", "metric": "accuracy", "op": ">=", "threshold": 0.8}]}
    info = ModelInfo(model.content_hash, model.name, model.version, model.profile, model.thresholds, CLASSES, kpi)
    state.mkdir(parents=True)
    agent = Agent.open(info, state, AgentConfig(), clock=clock, sampler=SystemStats)
    agent.start()
    try:
        ids = agent.new_ids(3)
        agent.remember(ids, np.array([0, 1, 2]))
        assert agent.add_labels([(ids[0], "maybe"), (ids[1], "yes"), (ids[2], "yes")]) == ["matched"] * 3
        report = agent.status()  # before the hand-off: the store's unsent counts are shown too
        assert report.production is not None and report.production["accuracy"] == 2 / 3
        assert report.production["gates"][0]["status"] == "insufficient"
    finally:
        agent.stop()
    with Outbox.open(state) as box:
        fbs = [w.feedback for w in box.pending_windows() if w.feedback is not None]
        assert len(fbs) == 1 and fbs[0].matched == 3
        assert box.models()[MODEL_HASH]["wire"]["kpi"] == kpi  # the collector learns the gates with the model
    con = sqlite3.connect(state / "feedback.sqlite")
    assert con.execute("SELECT COUNT(*) FROM handoffs").fetchone()[0] == 0


def test_remember_many_buffers_what_remember_would(tmp_path: Path, clock: FakeClock) -> None:
    """The agent's drain hands a list of requests over at once: single ids, plain id lists,
    generated runs (one block row each), a run whose predictions do not match its ids and a
    run with a prediction that is no number (each refused, the others kept, the ones after
    it too), exactly as one ``remember`` per request."""
    maker = IdMaker()
    items = [([maker.one()], (1,), 10.0), (maker.many(2), [1, "not a number"], 10.5),
             (["given-a", "given-b"], [0, 2], 11.0), (maker.many(3), [2, 1, 0], 12.0),
             ([maker.one()], [0.0], 13.0), (maker.many(2), [1], 14.0), (["x"], ["not a number"], 15.0)]
    stores = []
    for many in (False, True):
        store = _store(tmp_path / str(many), clock)
        errors = 0
        if many:
            with pytest.raises(ValueError):
                store.remember_many(MODEL_HASH, items)
        else:
            for ids, preds, t in items:
                try:
                    store.remember(MODEL_HASH, ids, preds, t)
                except ValueError:
                    errors += 1
            assert errors == 3
        stores.append((list(store._buffer), list(store._blocks)))  # noqa: SLF001 - what flush will write
        assert store.flush() == 7
        store.close()
    assert stores[0] == stores[1]
    assert len(stores[1][0]) == 4 and len(stores[1][1]) == 1


def test_eviction_keeps_the_newest_across_many_blocks_ties_and_cut_blocks(state: Path, clock: FakeClock) -> None:
    """Eviction reads the oldest blocks a run at a time: the kept predictions are still exactly
    the newest ``max_pending`` in (time, single rows before blocks, creation) order, over
    several flushes, blocks of equal times, a step of many whole blocks and a cut block."""
    import random

    rng = random.Random(5)
    store = _store(state, clock, join_seconds=10**6, max_pending=57)
    maker = IdMaker()
    order: list[tuple[float, int, int, str]] = []  # (time, 0 single / 1 block, creation, id)
    start = clock()
    for flush in range(4):
        for k in range(30):
            if rng.random() < 0.3:
                clock.advance(1)
            t = clock()
            if rng.random() < 0.25:
                pid = f"user-{flush}-{k}"
                store.remember(MODEL_HASH, [pid], [0])
                order.append((t, 0, len(order), pid))
            else:
                ids = maker.many(rng.randint(2, 9))
                store.remember(MODEL_HASH, ids, [1] * len(ids))
                order.extend((t, 1, len(order) + i, pid) for i, pid in enumerate(ids))
        store.flush()
        order.sort()
        evicted, order = order[:-57], order[-57:]
        assert store.stats()["pending"] == 57
        if flush == 3:
            assert start < order[0][0] and evicted
            got = store.add_labels(MODEL_HASH, TARGET, [(pid, "no") for _, _, _, pid in evicted + order])
            assert got == ["unmatched"] * len(evicted) + ["matched"] * 57
    store.close()


def test_a_run_remembered_with_numpy_codes_is_stored_as_with_a_list(tmp_path: Path, clock: FakeClock) -> None:
    """The runtime hands numpy arrays (int64 class codes, float values): the same block bytes as
    a list of the same numbers, and an array of non-numbers is refused like the list."""
    maker = IdMaker()
    blobs = []
    for preds in ([2, 0, 1], np.array([2, 0, 1], dtype=np.int64), np.array([2.0, 0.0, 1.0], dtype=np.float32)):
        store = _store(tmp_path / str(len(blobs)), clock)
        store.remember(MODEL_HASH, maker.many(3), preds)
        blobs.append(store._blocks[0][4])  # noqa: SLF001 - what flush will write
        store.close()
    assert blobs[0] == blobs[1] == blobs[2] and len(blobs[0]) == 24
    store = _store(tmp_path / "bad", clock)
    with pytest.raises(ValueError):
        store.remember(MODEL_HASH, maker.many(2), np.array(["x", "y"]))
    assert store.flush() == 0
    store.close()


@pytest.mark.parametrize("start", [1, 250, 256, 65530, 2**40 - 3])
def test_generated_runs_are_spelled_as_single_ids_across_low_byte_boundaries(start: int) -> None:
    """A run's ids are made 256 at a time from a table of low bytes: each must be the one
    spelling ``one`` gives its counter (no zero padding), across the 0xff -> 0x100 steps."""
    from mlpack_edge.monitor_agent._ids import IdRun, split_id

    maker = IdMaker(start)
    runs = [maker.many(n) for n in (1, 3, 300, 2)]
    following = maker.one()
    prefix = following[: following.rindex("-") + 1]
    counter = start
    for run in runs:
        assert isinstance(run, IdRun) and (run.prefix, run.first) == (prefix, counter)
        assert run == [f"{prefix}{k:x}" for k in range(counter, counter + len(run))]
        assert [split_id(pid) for pid in run] == [(prefix, k) for k in range(counter, counter + len(run))]
        counter += len(run)
    assert following == f"{prefix}{counter:x}" and maker.many(0) == []


def test_a_run_held_as_a_span_is_stored_and_spelled_as_the_run(tmp_path: Path, clock: FakeClock) -> None:
    """The agent holds a batch's run as an IdSpan (no strings) until its drain: the store makes
    the same block of it, and iterating it (the one-shot spool) gives the run's ids."""
    run = IdMaker(250).many(10)
    span = run.span()
    assert len(span) == 10 and list(span) == run
    blocks = []
    for ids in (run, span):
        store = _store(tmp_path / type(ids).__name__, clock)
        store.remember_many(MODEL_HASH, [(ids, np.arange(10) % 3, clock())])
        blocks.append(store._blocks)  # noqa: SLF001 - what flush will write
        assert store.flush() == 10
        assert store.add_labels(MODEL_HASH, TARGET, [(run[7], "no")]) == ["matched"]
        store.close()
    assert blocks[0] == blocks[1] and len(blocks[0]) == 1
