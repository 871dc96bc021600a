"""The Python API on real bundles: input forms, outputs, strict vs tolerant, the recorder hook."""

from __future__ import annotations

import json
import threading
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from mlpack_edge.errors import InferenceError, InputError
from mlpack_edge.runtime import Bundle, Model, Prediction, open_model
from mlpack_edge.runtime.manifest import write_bundle


def _golden(bundle: Path) -> dict[str, Any]:
    return json.loads((bundle / "golden.json").read_bytes())


class CountingRecorder:
    """A real recorder double: keeps every call so tests can check what the agent would get."""

    def __init__(self) -> None:
        self.records: list[tuple[Any, ...]] = []
        self.errors: list[tuple[str, int]] = []

    def record(self, numeric: Any, categorical: Any, predictions: Any, latency_s: float, requests: int = 1) -> None:
        self.records.append((numeric, categorical, predictions, latency_s, requests))

    def record_error(self, kind: str, count: int) -> None:
        self.errors.append((kind, count))


@pytest.mark.parametrize("name", ["binary_bundle", "mixed_bundle"])
def test_classifier_matches_sklearn_golden_outputs(name: str, request: pytest.FixtureRequest) -> None:
    bundle = request.getfixturevalue(name)
    golden = _golden(bundle)
    model = open_model(bundle)
    proba = model.predict_proba(golden["rows"])
    assert proba.shape == (len(golden["rows"]), len(model.classes))
    assert np.abs(proba - np.array(golden["expected"]["probabilities"])).max() <= golden["tolerance"]
    assert model.predict(golden["rows"]).tolist() == golden["expected"]["labels"]


def test_regressor_matches_sklearn_golden_values(regression_bundle: Path) -> None:
    golden = _golden(regression_bundle)
    model = open_model(regression_bundle)
    values = model.predict(golden["rows"])
    assert np.abs(values - np.array(golden["expected"]["values"])).max() <= golden["tolerance"]
    assert isinstance(model.predict(golden["rows"][0]), float)
    with pytest.raises(TypeError, match="regression model"):
        model.predict_proba(golden["rows"][0])


def test_every_input_form_gives_the_same_answer(binary_bundle: Path) -> None:
    model = open_model(binary_bundle)
    rows = [{"a": 0.3, "b": -1.2, "c": 0.7}, {"a": -2.0, "b": 0.1, "c": None}]
    X = np.array([[0.3, -1.2, 0.7], [-2.0, 0.1, np.nan]])
    expected = model.predict_proba(rows)
    assert np.array_equal(model.predict_proba(X), expected)
    assert np.array_equal(model.predict_proba(X.astype(np.float32)), expected)
    assert np.array_equal(model.predict_proba([[0.3, -1.2, 0.7], [-2.0, 0.1, None]]), expected)
    for i, row in enumerate(rows):
        # one row alone may differ from the same row in a batch in the last float32 bit
        assert np.allclose(model.predict_proba(row), expected[i], rtol=0, atol=1e-6)
        assert np.array_equal(model.predict_proba(X[i]), model.predict_proba(row))
        assert np.array_equal(model.predict_proba(list(X[i])), model.predict_proba(row))
    labels = model.predict(rows)
    assert [model.predict(r) for r in rows] == labels.tolist()
    assert set(labels.tolist()) <= {"no", "yes"}


def test_predict_one_names_the_classes(mixed_bundle: Path) -> None:
    model = open_model(mixed_bundle)
    p = model.predict_one({"x1": 1.0, "x2": None, "colour": "red", "shape": "round"})
    assert isinstance(p, Prediction)
    assert model.classes == ("A", "B", "C")
    assert list(p.probabilities or {}) == ["A", "B", "C"]
    assert p.label == max(p.probabilities or {}, key=(p.probabilities or {}).get)
    assert abs(sum((p.probabilities or {}).values()) - 1) < 1e-5
    with pytest.raises(InputError, match="predict_one takes one row"):
        model.predict_one([{"x1": 1.0}])


def test_strict_calls_raise_the_first_bad_row(mixed_bundle: Path) -> None:
    model = open_model(mixed_bundle)
    good = {"x1": 1.0, "x2": 2.0, "colour": "red", "shape": "round"}
    with pytest.raises(InputError) as err:
        model.predict({**good, "colour": "purple"})
    assert str(err.value) == "field 'colour': category 'purple' was not seen in training (expected one of 'blue', 'green', 'red')"
    with pytest.raises(InputError) as err:
        model.predict([good, good, {**good, "x1": "??"}])
    assert str(err.value) == "row 2: field 'x1': expected a number, got '??'"
    with pytest.raises(InputError, match="^expected a row .* got int$"):
        model.predict(5)


def test_unseen_category_policy_missing_feeds_empty_string(mixed_bundle: Path) -> None:
    import onnxruntime as ort

    model = open_model(mixed_bundle)
    got = model.predict_proba({"x1": 1.0, "x2": 2.0, "colour": "red", "shape": "triangle"})
    sess = ort.InferenceSession(str(mixed_bundle / "model.onnx"), providers=["CPUExecutionProvider"])
    feeds = {
        "x1": np.array([[1.0]], np.float32),
        "x2": np.array([[2.0]], np.float32),
        "colour": np.array([["red"]], object),
        "shape": np.array([[""]], object),  # what "missing" means on the wire
    }
    assert np.array_equal(got, sess.run(["probabilities"], feeds)[0][0])
    feeds["shape"] = np.array([["triangle"]], object)  # fed as sent, the model would answer otherwise
    assert not np.array_equal(got, sess.run(["probabilities"], feeds)[0][0])


def test_predict_rows_keeps_good_rows_in_order(mixed_bundle: Path) -> None:
    model = open_model(mixed_bundle)
    good = {"x1": 1.0, "x2": 2.0, "colour": "red", "shape": "round"}
    rows = [good, {**good, "x1": None}, {**good, "colour": "blue"}, "junk"]
    result = model.predict_rows(rows, start=1)
    assert result.ok.tolist() == [0, 2]
    assert [str(e) for e in result.errors] == [
        "row 2: field 'x1': is missing (null/NaN) but the feature is not nullable",
        "row 4: expected an object (feature -> value) or a list of 4 values, got str",
    ]
    items = list(result)
    assert isinstance(items[0], Prediction) and isinstance(items[1], InputError)
    assert isinstance(items[2], Prediction) and isinstance(items[3], InputError)
    records = result.records()
    assert records[1] == {"error": str(result.errors[0]), "row": 2, "field": "x1"}
    assert set(records[0]) == {"label", "probabilities"}
    assert np.allclose(result.probabilities, model.predict_proba([good, {**good, "colour": "blue"}]))


def test_all_rows_bad_gives_empty_outputs(binary_bundle: Path) -> None:
    result = open_model(binary_bundle).predict_rows([{"a": 1}])
    assert result.predicted == 0
    assert result.probabilities is not None and result.probabilities.shape == (0, 2)
    assert result.records() == [{"error": "row 0: missing features 'b', 'c'", "row": 0, "field": "b"}]


def test_recorder_gets_rows_originals_and_class_indices(mixed_bundle: Path) -> None:
    rec = CountingRecorder()
    model = Model(Bundle.open(mixed_bundle), recorder=rec)
    good = {"x1": 1.0, "x2": None, "colour": "red", "shape": "hexagon"}
    result = model.predict_rows([good, {**good, "x1": "bad"}, {**good, "colour": None, "shape": "square"}])
    assert rec.errors == [("validation", 1)]
    ((numeric, categorical, predictions, latency, requests),) = rec.records
    assert numeric.shape == (2, 2) and numeric[0, 0] == 1.0 and np.isnan(numeric[0, 1])
    assert [list(c) for c in categorical] == [["red", ""], ["hexagon", "square"]]  # originals, missing as ""
    assert predictions.tolist() == [model.classes.index(v) for v in result.labels.tolist()]
    assert latency > 0 and requests == 1
    with pytest.raises(InputError):
        model.predict({**good, "x1": "bad"})
    assert rec.errors[-1] == ("validation", 1)


def test_recorder_on_the_single_row_path(binary_bundle: Path) -> None:
    rec = CountingRecorder()
    model = open_model(binary_bundle, recorder=rec)
    row = np.array([0.5, 0.5, 0.5], dtype=np.float32)
    label = model.predict(row)
    ((numeric, categorical, predictions, _, _),) = rec.records
    assert numeric.tolist() == [[0.5, 0.5, 0.5]] and categorical == []
    assert predictions.tolist() == [model.classes.index(label)]
    row[0] = 99.0  # the caller reusing its buffer must not change what was recorded
    assert numeric[0, 0] == 0.5


def test_regression_recorder_gets_values(regression_bundle: Path) -> None:
    rec = CountingRecorder()
    model = open_model(regression_bundle, recorder=rec)
    values = model.predict(np.array([[0.0, 1.0, 2.0], [1.0, 1.0, np.nan]]))
    assert np.array_equal(rec.records[0][2], values)


def test_threads_option_and_concurrent_use(binary_bundle: Path) -> None:
    model = open_model(binary_bundle, threads=1)
    assert model.threads == 1
    X = np.random.default_rng(0).normal(size=(64, 3)).astype(np.float32)
    expected = [model.predict_proba(x) for x in X]
    rows = [dict(zip(model.feature_names, x.tolist())) for x in X]
    results: list[bool] = []

    def work() -> None:  # float32 rows and dict rows: each thread in flight takes its own binding
        for _ in range(20):
            results.append(all(np.array_equal(model.predict_proba(X[i]), expected[i]) for i in range(len(X))))
            results.append(all(np.array_equal(model.predict_proba(rows[i]), expected[i]) for i in range(len(X))))

    threads = [threading.Thread(target=work) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert results == [True] * 160


def _binary_bundle(target: Path, graph: Any) -> Path:
    """A bundle of a hand-made binary classifier over features a, b, c (input ``X`` [N, 3],
    outputs ``label`` and ``probabilities``), named after its graph."""
    from onnx import helper

    onx = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)])
    onx.ir_version = 9
    manifest = {
        "name": graph.name,
        "version": "1",
        "task": "binary",
        "input": {"layout": "matrix", "features": [{"name": n, "kind": "numeric", "nullable": False} for n in "abc"]},
        "output": {"classes": [0, 1], "label": "label", "probabilities": "probabilities"},
        "onnx": {"file": "model.onnx", "inputs": [{"name": "X", "dtype": "float32", "width": 3}]},
    }
    return write_bundle(target, {"model.onnx": onx.SerializeToString()}, manifest)


def _failing_bundle(target: Path) -> Path:
    """A valid bundle whose graph fails at run time on an odd number of rows (Reshape [-1, 2] of N*3 values)."""
    from onnx import TensorProto, helper

    graph = helper.make_graph(
        [
            helper.make_node("Reshape", ["X", "shape"], ["probabilities"]),
            helper.make_node("ArgMax", ["probabilities"], ["label"], axis=1, keepdims=0),
        ],
        "failing",
        [helper.make_tensor_value_info("X", TensorProto.FLOAT, [None, 3])],
        [
            helper.make_tensor_value_info("label", TensorProto.INT64, [None]),
            helper.make_tensor_value_info("probabilities", TensorProto.FLOAT, [None, 2]),
        ],
        [helper.make_tensor("shape", TensorProto.INT64, [2], [-1, 2])],
    )
    return _binary_bundle(target, graph)


def test_onnxruntime_failure_is_an_inference_error_and_counted(tmp_path: Path) -> None:
    rec = CountingRecorder()
    model = open_model(_failing_bundle(tmp_path / "f"), recorder=rec)
    assert model.predict(np.zeros((2, 3))).shape == (3,)  # even row counts run
    with pytest.raises(InferenceError, match=r"^onnxruntime failed on 1 row: "):
        model.predict([0.0, 0.0, 0.0])
    assert rec.errors == [("runtime", 1)]
    plain = open_model(tmp_path / "f")
    with pytest.raises(InferenceError, match=r"^onnxruntime failed on 1 row: "):
        plain.predict(np.zeros(3, dtype=np.float32))  # the fast path reports it the same way


def test_onnxruntime_failure_of_a_bound_single_row_is_an_inference_error(tmp_path: Path) -> None:
    """predict_proba of one row runs into bound arrays (session.bound_row): a failing run says the same."""
    plain = open_model(_failing_bundle(tmp_path / "f"))
    for row in (np.zeros(3, dtype=np.float32), {"a": 0.0, "b": 0.0, "c": 0.0}):
        with pytest.raises(InferenceError, match=r"^onnxruntime failed on 1 row: "):
            plain.predict_proba(row)
    assert plain.predict_proba(np.zeros((2, 3), dtype=np.float32)).shape == (3, 2)  # the session still runs


def _softmax_bundle(target: Path, fixed: bool) -> Path:
    """A 3-feature classifier whose probabilities are a softmax of two columns of X: ``fixed``
    declares them ``[N, 2]``; otherwise X is ``[N, ?]`` and the columns are "all but the last",
    a width only the run knows (so no output array can be bound ahead of it)."""
    from onnx import TensorProto, helper

    if fixed:
        nodes = [helper.make_node("MatMul", ["X", "W"], ["logits"])]
    else:
        nodes = [
            helper.make_node("Shape", ["X"], ["shape"]),
            helper.make_node("Gather", ["shape", "one"], ["width"]),
            helper.make_node("Sub", ["width", "one"], ["end"]),
            helper.make_node("Slice", ["X", "zero", "end", "one"], ["logits"]),
        ]
    graph = helper.make_graph(
        nodes
        + [
            helper.make_node("Softmax", ["logits"], ["probabilities"], axis=1),
            helper.make_node("ArgMax", ["probabilities"], ["label"], axis=1, keepdims=0),
        ],
        "softmax",
        [helper.make_tensor_value_info("X", TensorProto.FLOAT, [None, 3 if fixed else None])],
        [
            helper.make_tensor_value_info("label", TensorProto.INT64, [None]),
            helper.make_tensor_value_info("probabilities", TensorProto.FLOAT, [None, 2 if fixed else None]),
        ],
        [
            helper.make_tensor("W", TensorProto.FLOAT, [3, 2], [1.0, 0.0, 0.0, 1.0, 0.0, 0.0]),
            helper.make_tensor("zero", TensorProto.INT64, [1], [0]),
            helper.make_tensor("one", TensorProto.INT64, [1], [1]),
        ],
    )
    return _binary_bundle(target, graph)


@pytest.mark.parametrize("fixed", [True, False])
def test_predict_proba_of_one_row_is_the_batch_answer_byte_for_byte(tmp_path: Path, fixed: bool) -> None:
    """Bound (a declared width) or not (a width only the run knows: the plain run), one row's
    probabilities are the bytes a batch gets, and each answer is the caller's to keep."""
    model = open_model(_softmax_bundle(tmp_path / "m", fixed))
    assert (model._bound is not None) == fixed  # noqa: SLF001 - both paths are exercised
    X = np.random.default_rng(0).normal(size=(16, 3)).astype(np.float32)
    batch = model.predict_proba(X)
    answers = []
    for i, x in enumerate(X):
        d = dict(zip("abc", x.tolist()))
        for p in (model.predict_proba(x), model.predict_proba(d)):
            assert p.shape == (2,) and p.dtype == np.float32 and p.flags.writeable
            assert p.tobytes() == batch[i].tobytes()
            answers.append(p)
    # No answer shares memory with a later one (the bound output is copied out).
    assert all(a.tobytes() == batch[k // 2].tobytes() for k, a in enumerate(answers))


def test_a_float32_row_is_predicted_as_its_dict_and_nan_rows_take_the_full_path(binary_bundle: Path) -> None:
    """predict_proba's inlined float32 path answers exactly as the general one."""
    model = open_model(binary_bundle)
    assert model.manifest.layout == "matrix"
    names = model.feature_names
    rng = np.random.default_rng(0)
    for _ in range(20):
        x = rng.normal(size=len(names)).astype(np.float32)
        d = {n: float(v) for n, v in zip(names, x)}
        assert np.array_equal(model.predict_proba(x), model.predict_proba(d))
    with pytest.raises(InputError):
        model.predict_proba(np.full(len(names), np.inf, dtype=np.float32))


def test_the_recorder_never_keeps_the_callers_row(binary_bundle: Path) -> None:
    """A float32 row is the caller's buffer: what is recorded is a copy; a dict row's array is ours."""
    rec = CountingRecorder()
    model = open_model(binary_bundle, recorder=rec)
    x = np.ones(len(model.feature_names), dtype=np.float32)
    model.predict(x)
    x[:] = 7.0  # the caller reuses its buffer
    model.predict({n: 2.0 for n in model.feature_names})
    first, second = rec.records[0][0], rec.records[1][0]
    assert first.tolist() == [[1.0] * len(model.feature_names)]
    assert second.tolist() == [[2.0] * len(model.feature_names)]
    assert [r[2].tolist() for r in rec.records] == [[model.classes.index(model.predict(np.ones(len(model.feature_names), np.float32)))],
                                                   [model.classes.index(model.predict({n: 2.0 for n in model.feature_names}))]]


def test_dict_rows_in_any_key_order_answer_as_the_general_path(binary_bundle: Path) -> None:
    """The packed dict path (any key order, the order cached between rows) gives the general path's answer."""
    model = open_model(binary_bundle)
    names = list(model.feature_names)
    rng = np.random.default_rng(1)
    rows = [{n: float(v) for n, v in zip(names, rng.normal(size=len(names)))} for _ in range(12)]
    batch = model.predict_proba(rows)  # the general (batch) path
    labels = model.predict(rows)
    for i, row in enumerate(rows):
        for order in (names, names[::-1], sorted(names, key=lambda n: hash((n, i)))):
            d = {n: row[n] for n in order}
            assert np.allclose(model.predict_proba(d), batch[i], rtol=0, atol=1e-6)
            assert np.array_equal(model.predict_proba(d), model.predict_proba(np.array([row[n] for n in names], np.float32)))
            assert model.predict(d) == labels[i]
            assert model.predict_one(d).label == labels[i]
    with pytest.raises(InputError, match=f"^field '{names[0]}': expected a number, got a boolean$"):
        model.predict_proba({**rows[0], names[0]: True})
    with pytest.raises(InputError, match="^missing feature"):
        model.predict({n: rows[0][n] for n in names[1:]})
    with pytest.raises(InputError, match="^unknown feature 'zz'"):
        model.predict({**rows[0], "zz": 1.0})


def test_dict_rows_from_many_threads_get_their_own_answers(binary_bundle: Path) -> None:
    """predict_proba reuses input arrays for dict rows: concurrent calls must never share one."""
    model = open_model(binary_bundle)
    names = list(model.feature_names)
    rng = np.random.default_rng(2)
    rows = [{n: float(v) for n, v in zip(names, rng.normal(scale=3.0, size=len(names)))} for _ in range(40)]
    expected = [model.predict_proba(np.array([r[n] for n in names], np.float32)) for r in rows]
    wrong: list[int] = []

    def work(k: int) -> None:
        for i in range(400):
            j = (i * 7 + k) % len(rows)
            if not np.array_equal(model.predict_proba(rows[j]), expected[j]):
                wrong.append(j)

    threads = [threading.Thread(target=work, args=(k,)) for k in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert wrong == []


def test_predict_proba_of_a_dict_row_with_a_recorder(binary_bundle: Path) -> None:
    """The recorder gets the row, the label's class index and the time; the answer is the one without it."""
    rec = CountingRecorder()
    model = open_model(binary_bundle, recorder=rec)
    plain = open_model(binary_bundle)
    row = {n: 0.25 * (i + 1) for i, n in enumerate(model.feature_names)}
    assert model.predict_proba(row).tobytes() == plain.predict_proba(row).tobytes()
    assert model.predict(row) == plain.predict(row)
    (numeric, _, codes, t, _), (_, _, codes2, _, _) = rec.records
    assert numeric.tolist() == [[0.25 * (i + 1) for i in range(len(model.feature_names))]]
    assert codes.tolist() == codes2.tolist() == [model.classes.index(plain.predict(row))]
    assert t > 0
