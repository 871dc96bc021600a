"""Held-out metrics and the gates that decide whether a model may ship.

Gates are parsed when the spec is read (an unknown metric fails before any training)
and judged on the held-out split. Every gate is evaluated, so a failed build lists all
of its failures at once rather than one per attempt.

Binary metrics score the *positive* class (``[evaluate] positive``, default the second
class in sorted order, as scikit-learn does); multiclass ones are macro averages (the
unweighted mean over classes, so a class the model never gets right pulls them down
however rare it is), and ROC AUC is one-vs-rest macro over the class probabilities.
Gates may name the average explicitly: ``precision_macro``, ``recall_macro``,
``f1_macro``, ``roc_auc_macro``. For a multiclass task they are the recorded
``precision``, ``recall``... themselves; for a binary task they average both classes
(``recall_macro`` is balanced accuracy) and are recorded as extra metrics.
Every classification also records precision/recall/F1/support per class, and a failed
gate on an averaged metric names the weakest classes.

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
    "MACRO_METRICS",
    "REGRESSION_METRICS",
    "ClassScore",
    "format_evaluation",
    "metric_note",
    "Gate",
    "GateResult",
    "Evaluation",
    "parse_gate",
    "metrics_for",
    "evaluate",
    "check_gates",
    "weakest",
    "gate_summary",
    "format_metrics",
]

CLASSIFICATION_METRICS = ("accuracy", "precision", "recall", "f1", "roc_auc")
#: Explicit names for the macro averages (gates accept them; see the module docstring).
MACRO_METRICS = ("precision_macro", "recall_macro", "f1_macro", "roc_auc_macro")
REGRESSION_METRICS = ("mae", "rmse", "r2")
#: A failed gate on an averaged metric names at most this many of its weakest classes.
WEAKEST_SHOWN = 3
_PER_CLASS = ("precision", "recall", "f1")

_OPS: dict[str, Callable[[float, float], bool]] = {
    ">=": operator.ge,
    ">": operator.gt,
    "<=": operator.le,
    "<": operator.lt,
}
_GATE = re.compile(r"^\s*([A-Za-z_][A-Za-z0-9_]*)\s*(>=|<=|>|<)\s*([-+]?(\d+(\.\d*)?|\.\d+)([eE][-+]?\d+)?)\s*$")


def metrics_for(task: str) -> tuple[str, ...]:
    return REGRESSION_METRICS if task == "regression" else CLASSIFICATION_METRICS


def _base(metric: str) -> str:
    """``recall_macro`` -> ``recall`` (the per-class score it averages)."""
    return metric[: -len("_macro")] if metric.endswith("_macro") else metric


def metric_note(metric: str, task: str, positive: Any = None) -> str:
    """What a recorded metric averages, for the build output, the model card and ``inspect``.

    ``""`` when there is nothing to say (accuracy, regression metrics).
    """
    base = _base(metric)
    if task == "multiclass" or (task == "binary" and metric.endswith("_macro")):
        if base == "roc_auc":
            return "macro, one-vs-rest" if task == "multiclass" else "macro"
        return "macro" if base in _PER_CLASS else ""
    if task == "binary" and base in _PER_CLASS and positive is not None:
        return f"class {positive}"
    return ""


@dataclass(frozen=True)
class ClassScore:
    """Held-out precision, recall and F1 of one class (scored as if it were the positive one)."""

    label: Any
    precision: float
    recall: float
    f1: float
    support: int  # held-out rows of this class

    def to_dict(self) -> dict[str, Any]:
        return {"class": self.label, "precision": self.precision, "recall": self.recall, "f1": self.f1,
                "support": self.support}


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
    if metric in MACRO_METRICS and task != "regression":
        return Gate(text.strip(), metric, op, number)
    if metric not in known:
        others = REGRESSION_METRICS if known is CLASSIFICATION_METRICS else CLASSIFICATION_METRICS + MACRO_METRICS
        if metric in others:
            raise ValueError(
                f"metric '{metric}' in gate {text!r} does not apply to a {task} task (metrics: {', '.join(known)})"
            )
        close = nearest(metric, known if task == "regression" else known + MACRO_METRICS)
        hint = f"did you mean '{close}'? " if close else ""
        macro = "" if task == "regression" else f"; averaged over classes: {', '.join(MACRO_METRICS)}"
        raise ValueError(
            f"unknown metric '{metric}' in gate {text!r} ({hint}metrics for {task}: {', '.join(known)}{macro})"
        )
    return Gate(text.strip(), metric, op, number)


@dataclass(frozen=True)
class Evaluation:
    """Metrics on the held-out split plus what the report shows about the errors."""

    metrics: dict[str, float]
    gates: tuple[GateResult, ...]
    confusion: list[list[int]] | None = None  # rows = true class, columns = predicted
    residuals: dict[str, float] | None = None  # regression: summary of y_true - y_pred
    per_class: tuple[ClassScore, ...] = ()  # classification: one per class, in class order
    task: str = ""
    positive: Any = None  # binary: the class precision/recall/F1 score

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
    per_class: tuple[ClassScore, ...] = ()
    pos = None
    if task == "regression":
        metrics, residuals, confusion = _regression(y_true, y_pred), _residuals(y_true, y_pred), None
    else:
        metrics = _classification(y_true, y_pred, proba, list(classes), positive, task == "multiclass")
        residuals = None
        from sklearn.metrics import confusion_matrix

        confusion = confusion_matrix(y_true, y_pred, labels=list(classes)).tolist()
        per_class = _per_class(y_true, y_pred, list(classes))
        if task == "binary":
            pos = classes[1] if positive is None else positive
        for g in gates:  # explicit macro names: the same number in multiclass, an extra one in binary
            if g.metric in MACRO_METRICS and g.metric not in metrics:
                base = _base(g.metric)
                if task != "binary":
                    continue
                metrics[g.metric] = (
                    metrics["roc_auc"] if base == "roc_auc"
                    else float(np.mean([getattr(c, base) for c in per_class]))
                )
    values = [_value(metrics, g.metric) for g in gates]
    results = tuple(GateResult(g, v, g.passes(v)) for g, v in zip(gates, values, strict=True))
    return Evaluation(metrics, results, confusion, residuals, per_class, task, pos)


def _value(metrics: Mapping[str, float], metric: str) -> float:
    """A gate's measured value; a multiclass ``recall_macro`` is the recorded ``recall``."""
    if metric in metrics:
        return metrics[metric]
    return metrics[_base(metric)]


def _per_class(y_true: np.ndarray, y_pred: np.ndarray, classes: list[Any]) -> tuple[ClassScore, ...]:
    from sklearn.metrics import precision_recall_fscore_support

    p, r, f, n = precision_recall_fscore_support(y_true, y_pred, labels=classes, average=None, zero_division=0.0)
    return tuple(
        ClassScore(c, float(p[i]), float(r[i]), float(f[i]), int(n[i])) for i, c in enumerate(classes)
    )


def weakest(evaluation: Evaluation, metric: str, shown: int = WEAKEST_SHOWN) -> str:
    """``"class_a 0.00, class_b 0.20, …"``: the lowest per-class scores behind an averaged metric."""
    base = _base(metric)
    if base not in _PER_CLASS or not evaluation.per_class:
        return ""
    ranked = sorted(evaluation.per_class, key=lambda c: getattr(c, base))  # stable: ties in class order
    text = ", ".join(f"{c.label} {getattr(c, base):.2f}" for c in ranked[:shown])
    return text + (", …" if len(ranked) > shown else "")


def check_gates(evaluation: Evaluation, report: str | None = None) -> None:
    """Raise :class:`GateError` listing every failed gate with its measured value.

    ``report`` (the failed build's model card) is named at the end of the message.
    """
    failed = evaluation.failed
    if not failed:
        return
    parts = [f"{r.gate.text} (measured {_measured(evaluation, r)})" for r in failed]
    total = len(evaluation.gates)
    where = f". Report: {report}" if report else ""
    raise GateError(
        f"{len(failed)} of {total} gate{'s' if total > 1 else ''} failed: {'; '.join(parts)}{where}",
        failures=[(r.gate.text, r.value) for r in failed],
        report=report,
    )


def _measured(evaluation: Evaluation, r: GateResult) -> str:
    """``0.3700`` or, for an average over classes, ``0.3700; macro; weakest: a 0.00, b 0.20, …``."""
    value = "undefined" if math.isnan(r.value) else f"{r.value:.4f}"
    note = metric_note(r.gate.metric, evaluation.task, evaluation.positive)
    if not note.startswith("macro"):
        return value
    low = weakest(evaluation, r.gate.metric)
    return f"{value}; {note}" + (f"; weakest: {low}" if low else "")


def _classification(
    y_true: np.ndarray, y_pred: np.ndarray, proba: np.ndarray | None, classes: list[Any], positive: Any, macro: bool
) -> dict[str, float]:
    from sklearn.metrics import accuracy_score, precision_recall_fscore_support, roc_auc_score

    out = {"accuracy": float(accuracy_score(y_true, y_pred))}
    if len(classes) == 2 and not macro:  # a multiclass task with two classes still averages (it says "macro")
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


def format_evaluation(evaluation: Evaluation, classes: int = 0) -> str:
    """The evaluate stage's line: says which metrics are macro averages (multiclass).

    ``accuracy 0.9500; macro over 4 classes: precision 0.9300, recall 0.9200, f1 0.9200,
    roc_auc 0.9900 (one-vs-rest)``; binary and regression lines list the metrics as they
    are (extra ``*_macro`` metrics a binary gate asked for are labelled by their names).
    """
    m = evaluation.metrics
    if evaluation.task != "multiclass":
        return format_metrics(m)
    averaged = [k for k in ("precision", "recall", "f1", "roc_auc") if k in m]
    head = format_metrics({k: v for k, v in m.items() if k not in averaged})
    body = ", ".join(f"{k} {m[k]:.4f}" + (" (one-vs-rest)" if k == "roc_auc" else "") for k in averaged)
    return f"{head}; macro over {classes} classes: {body}" if head else f"macro over {classes} classes: {body}"
