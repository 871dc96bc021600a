"""Metrics against hand-computed values, and gates that list every failure."""

from __future__ import annotations

import math

import numpy as np
import pytest

from mlpack_edge.builder.metrics import check_gates, evaluate, parse_gate
from mlpack_edge.errors import GateError


def test_binary_metrics_score_the_positive_class() -> None:
    y = np.array(["b", "b", "b", "m", "m", "m", "m", "b"], dtype=object)
    pred = np.array(["b", "m", "b", "m", "m", "b", "m", "b"], dtype=object)
    proba_m = np.array([0.1, 0.6, 0.2, 0.9, 0.8, 0.4, 0.7, 0.3])
    proba = np.column_stack([1 - proba_m, proba_m])
    ev = evaluate("binary", y, pred, proba, ("b", "m"), [], positive="m")
    tp, fp, fn = 3, 1, 1  # positive "m"
    assert ev.metrics["accuracy"] == pytest.approx(6 / 8)
    assert ev.metrics["precision"] == pytest.approx(tp / (tp + fp))
    assert ev.metrics["recall"] == pytest.approx(tp / (tp + fn))
    assert ev.metrics["f1"] == pytest.approx(2 * tp / (2 * tp + fp + fn))
    # AUC = share of (m, b) pairs where m scores higher: m scores .6 .9 .8 .4 .7 vs b .1 .2 .3 (+.6 is m)
    pos, neg = proba_m[y == "m"], proba_m[y == "b"]
    auc = np.mean([[p > q for q in neg] for p in pos])
    assert ev.metrics["roc_auc"] == pytest.approx(auc)
    assert ev.confusion == [[3, 1], [1, 3]]
    # the other class as positive changes precision/recall
    other = evaluate("binary", y, pred, proba, ("b", "m"), [], positive="b")
    assert other.metrics["precision"] == pytest.approx(3 / 4) and other.metrics["roc_auc"] == pytest.approx(auc)


def test_multiclass_metrics_are_macro() -> None:
    y = np.array([0, 0, 1, 1, 2, 2])
    pred = np.array([0, 1, 1, 1, 2, 0])
    proba = np.eye(3)[pred] * 0.8 + 0.2 / 3
    ev = evaluate("multiclass", y, pred, proba, (0, 1, 2), [])
    prec = np.mean([1 / 2, 2 / 3, 1 / 1])
    rec = np.mean([1 / 2, 2 / 2, 1 / 2])
    f1 = np.mean([2 * p * r / (p + r) for p, r in [(1 / 2, 1 / 2), (2 / 3, 1), (1, 1 / 2)]])
    assert ev.metrics["precision"] == pytest.approx(prec)
    assert ev.metrics["recall"] == pytest.approx(rec)
    assert ev.metrics["f1"] == pytest.approx(f1)
    assert 0.0 <= ev.metrics["roc_auc"] <= 1.0


def test_regression_metrics_and_residuals() -> None:
    y = np.array([1.0, 2.0, 3.0, 4.0])
    pred = np.array([1.5, 2.0, 2.0, 5.0])
    ev = evaluate("regression", y, pred, None, (), [])
    err = y - pred
    assert ev.metrics["mae"] == pytest.approx(np.abs(err).mean())
    assert ev.metrics["rmse"] == pytest.approx(math.sqrt((err**2).mean()))
    assert ev.metrics["r2"] == pytest.approx(1 - (err**2).sum() / ((y - y.mean()) ** 2).sum())
    assert ev.residuals is not None and ev.residuals["max_abs"] == 1.0 and ev.confusion is None


def test_every_failed_gate_is_listed_with_its_value() -> None:
    y = np.array([0, 0, 1, 1])
    pred = np.array([0, 1, 1, 1])
    proba = np.eye(2)[pred]
    gates = [parse_gate(g, "binary") for g in ("accuracy >= 0.9", "recall >= 0.5", "precision > 0.7")]
    ev = evaluate("binary", y, pred, proba, (0, 1), gates)
    assert [r.passed for r in ev.gates] == [False, True, False]
    with pytest.raises(GateError) as info:
        check_gates(ev)
    assert (
        str(info.value) == "2 of 3 gates failed: accuracy >= 0.9 (measured 0.7500); precision > 0.7 (measured 0.6667)"
    )
    assert info.value.failures == [("accuracy >= 0.9", 0.75), ("precision > 0.7", pytest.approx(2 / 3))]


def test_passing_gates_raise_nothing() -> None:
    y = np.array([1.0, 2.0, 3.0])
    ev = evaluate("regression", y, y + 0.1, None, (), [parse_gate("mae <= 0.2", "regression")])
    check_gates(ev)
    assert ev.gates[0].passed and ev.gates[0].value == pytest.approx(0.1)


def test_undefined_auc_fails_its_gate() -> None:
    # A held-out split with one class leaves ROC AUC undefined: a gate on it cannot pass.
    y = np.array([1, 1, 1])
    ev = evaluate("binary", y, y, np.eye(2)[y], (0, 1), [parse_gate("roc_auc >= 0.5", "binary")])
    assert math.isnan(ev.metrics["roc_auc"]) and not ev.gates[0].passed
    with pytest.raises(GateError, match=r"^1 of 1 gate failed: roc_auc >= 0.5 \(measured undefined\)$"):
        check_gates(ev)
