"""Held-out metrics and the gates that decide whether a model may ship.

Gates are parsed when the spec is read (an unknown metric fails before any training)
and judged on the held-out split. Every gate is evaluated, so a failed build lists all
of its failures at once rather than one per attempt.

Binary metrics score the *positive* class (``[evaluate] positive``, default the second
class in sorted order, as scikit-learn does); multiclass ones are macro averages, and
ROC AUC is one-vs-rest macro over the class probabilities.

scikit-learn is imported inside the functions that compute: the spec reader imports
this module to parse gates, and reading a spec must stay cheap.
"""

from __future__ import annotations

import math
import operator
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from mlpack_edge.builder._suggest import nearest
from mlpack_edge.errors import GateError

__all__ = [
    "CLASSIFICATION_METRICS",
    "REGRESSION_METRICS",
    "Gate",
    "GateResult",
    "Evaluation",
    "parse_gate",
    "metrics_for",
    "evaluate",
    "check_gates",
    "gate_summary",
    "format_metrics",
]

CLASSIFICATION_METRICS = ("accuracy", "precision", "recall", "f1", "roc_auc")
REGRESSION_METRICS = ("mae", "rmse", "r2")

_OPS: dict[str, Callable[[float, float], bool]] = {
    ">=": operator.ge,
    ">": operator.gt,
    "<=": operator.le,
    "<": operator.lt,
}
_GATE = re.compile(r"^\s*([A-Za-z_][A-Za-z0-9_]*)\s*(>=|<=|>|<)\s*([-+]?(\d+(\.\d*)?|\.\d+)([eE][-+]?\d+)?)\s*$")


def metrics_for(task: str) -> tuple[str, ...]:
    return REGRESSION_METRICS if task == "regression" else CLASSIFICATION_METRICS


@dataclass(frozen=True)
class Gate:
    text: str
    metric: str
    op: str
    threshold: float

    def passes(self, value: float) -> bool:
        return _OPS[self.op](value, self.threshold)


@dataclass(frozen=True)
class GateResult:
    gate: Gate
    value: float
    passed: bool

    def to_dict(self) -> dict[str, Any]:
        g = self.gate
        return {
            "gate": g.text,
            "metric": g.metric,
            "op": g.op,
            "threshold": g.threshold,
            "value": self.value,
            "passed": self.passed,
        }


def parse_gate(text: str, task: str) -> Gate:
    """``"precision >= 0.9"`` -> :class:`Gate`; ``ValueError`` says what is wrong."""
    m = _GATE.match(text)
    if not m:
        raise ValueError(f"gate {text!r} is not 'metric >= number' (operators: >=, >, <=, <)")
    metric, op, number = m.group(1).lower(), m.group(2), float(m.group(3))
    known = metrics_for(task)
    if metric not in known:
        others = REGRESSION_METRICS if known is CLASSIFICATION_METRICS else CLASSIFICATION_METRICS
        if metric in others:
            raise ValueError(
                f"metric '{metric}' in gate {text!r} does not apply to a {task} task (metrics: {', '.join(known)})"
            )
        close = nearest(metric, known)
        hint = f"did you mean '{close}'? " if close else ""
        raise ValueError(f"unknown metric '{metric}' in gate {text!r} ({hint}metrics for {task}: {', '.join(known)})")
    return Gate(text.strip(), metric, op, number)


@dataclass(frozen=True)
class Evaluation:
    """Metrics on the held-out split plus what the report shows about the errors."""

    metrics: dict[str, float]
    gates: tuple[GateResult, ...]
    confusion: list[list[int]] | None = None  # rows = true class, columns = predicted
    residuals: dict[str, float] | None = None  # regression: summary of y_true - y_pred

    @property
    def failed(self) -> tuple[GateResult, ...]:
        return tuple(r for r in self.gates if not r.passed)


def evaluate(
    task: str,
    y_true: np.ndarray,
    y_pred: np.ndarray,
    proba: np.ndarray | None,
    classes: Sequence[Any],
    gates: Sequence[Gate],
    positive: Any = None,
) -> Evaluation:
    """Compute the task's metrics on held-out predictions and judge every gate."""
    if task == "regression":
        metrics, residuals, confusion = _regression(y_true, y_pred), _residuals(y_true, y_pred), None
    else:
        metrics, residuals = _classification(y_true, y_pred, proba, list(classes), positive), None
        from sklearn.metrics import confusion_matrix

        confusion = confusion_matrix(y_true, y_pred, labels=list(classes)).tolist()
    results = tuple(GateResult(g, metrics[g.metric], g.passes(metrics[g.metric])) for g in gates)
    return Evaluation(metrics, results, confusion, residuals)


def check_gates(evaluation: Evaluation) -> None:
    """Raise :class:`GateError` listing every failed gate with its measured value."""
    failed = evaluation.failed
    if not failed:
        return
    parts = [f"{r.gate.text} (measured {'undefined' if math.isnan(r.value) else f'{r.value:.4f}'})" for r in failed]
    total = len(evaluation.gates)
    raise GateError(
        f"{len(failed)} of {total} gate{'s' if total > 1 else ''} failed: {'; '.join(parts)}",
        failures=[(r.gate.text, r.value) for r in failed],
    )


def _classification(
    y_true: np.ndarray, y_pred: np.ndarray, proba: np.ndarray | None, classes: list[Any], positive: Any
) -> dict[str, float]:
    from sklearn.metrics import accuracy_score, precision_recall_fscore_support, roc_auc_score

    out = {"accuracy": float(accuracy_score(y_true, y_pred))}
    if len(classes) == 2:
        pos = classes[1] if positive is None else positive
        p, r, f, _ = precision_recall_fscore_support(y_true, y_pred, labels=[pos], average=None, zero_division=0.0)
        out.update(precision=float(p[0]), recall=float(r[0]), f1=float(f[0]))
    else:
        p, r, f, _ = precision_recall_fscore_support(y_true, y_pred, labels=classes, average="macro", zero_division=0.0)
        out.update(precision=float(p), recall=float(r), f1=float(f))
    out["roc_auc"] = _roc_auc(roc_auc_score, y_true, proba, classes, positive)
    return out


def _roc_auc(
    score: Callable[..., float], y_true: np.ndarray, proba: np.ndarray | None, classes: list[Any], positive: Any
) -> float:
    if proba is None:
        return math.nan
    present = set(np.unique(y_true).tolist())
    if len(present) < 2:
        return math.nan  # undefined: the held-out split has a single class
    if len(classes) == 2:
        pos = classes[1] if positive is None else positive
        return float(score(np.asarray(y_true) == pos, proba[:, classes.index(pos)]))
    if len(present) < len(classes):
        return math.nan
    return float(score(y_true, proba, multi_class="ovr", average="macro", labels=classes))


def _regression(y_true: np.ndarray, y_pred: np.ndarray) -> dict[str, float]:
    from sklearn.metrics import mean_absolute_error, mean_squared_error, r2_score

    return {
        "mae": float(mean_absolute_error(y_true, y_pred)),
        "rmse": float(math.sqrt(mean_squared_error(y_true, y_pred))),
        "r2": float(r2_score(y_true, y_pred)),
    }


def describe(values: np.ndarray) -> dict[str, float]:
    """Mean, spread and the 0/5/50/95/100 % quantiles of ``values`` (report and model card)."""
    v = np.asarray(values, dtype=np.float64)
    q = np.quantile(v, [0.05, 0.5, 0.95])
    return {
        "mean": float(v.mean()),
        "std": float(v.std()),
        "min": float(v.min()),
        "p05": float(q[0]),
        "median": float(q[1]),
        "p95": float(q[2]),
        "max": float(v.max()),
    }


def _residuals(y_true: np.ndarray, y_pred: np.ndarray) -> dict[str, float]:
    r = np.asarray(y_true, dtype=np.float64) - np.asarray(y_pred, dtype=np.float64)
    return {**describe(r), "max_abs": float(np.abs(r).max())}


def gate_summary(results: Sequence[GateResult]) -> str:
    """'2/2 gates passed' for progress lines."""
    ok = sum(r.passed for r in results)
    return f"{ok}/{len(results)} gates passed" if results else "no gates"


def format_metrics(metrics: Mapping[str, float]) -> str:
    """'accuracy 0.9737, precision 0.9756, ...' for progress lines."""
    return ", ".join(f"{k} {v:.4f}" for k, v in metrics.items())
