"""Production KPIs from merged feedback counts, judged against the build's gates.

Shared by ``<model> status`` on the device and the collector's pages, so both say the
same thing from the same counts. The formulas are scikit-learn's (``zero_division=0``):
per class ``precision = tp / predicted``, ``recall = tp / actual``,
``f1 = 2 tp / (actual + predicted)``; *macro* values are the unweighted means over the
classes; ``accuracy`` is ``sum(diagonal) / labelled``. Regression: ``mae = abs_sum / n``,
``rmse = sqrt(sum_sq / n)``, ``bias = sum / n`` (error = prediction - label).

A gate is judged as the builder judged it: binary precision/recall/f1 score the
positive class, multiclass ones are macro averages. ``roc_auc`` and ``r2`` need more
than counts (probabilities, label variance) and are reported as not measurable. A gate
*fails in production* when at least ``min_labels`` labelled predictions back it and its
value misses the threshold; proportions with one denominator (accuracy, binary
precision and recall) also get a 95 % Wilson interval, and the breach is ``certain``
when the whole interval misses the threshold.
"""

from __future__ import annotations

import math
import operator
from collections.abc import Mapping
from typing import Any

import numpy as np

from mlpack_edge.monitor_agent.wire import Feedback

__all__ = ["DEFAULT_MIN_LABELS", "kpi_reference", "wilson", "classification_kpis", "regression_kpis", "production_kpis"]

DEFAULT_MIN_LABELS = 100
_Z95 = 1.959963984540054
_OPS = {">=": operator.ge, ">": operator.gt, "<=": operator.le, "<": operator.lt}


def kpi_reference(manifest: dict[str, Any]) -> dict[str, Any] | None:
    """What a manifest says production KPIs are judged against (``None``: not a task we know).

    Binary gates score the positive class (``lineage.positive_class``, else the second
    class, as the builder does); multiclass ones are macro averages.
    """
    task = manifest.get("task")
    if task not in ("binary", "multiclass", "regression"):
        return None
    out: dict[str, Any] = {"task": task}
    if task != "regression":
        classes = (manifest.get("output") or {}).get("classes")
        if not isinstance(classes, list) or not classes:
            return None
        out["classes"] = [str(c) for c in classes]
        positive = (manifest.get("lineage") or {}).get("positive_class")
        if task == "binary":
            out["positive"] = str(positive) if positive is not None else out["classes"][-1]
    target = (manifest.get("lineage") or {}).get("target")
    if isinstance(target, str) and target:
        out["target"] = target  # the training data's label column (export-samples writes it)
    metrics = manifest.get("metrics")
    out["metrics"] = {k: v for k, v in metrics.items() if isinstance(v, (int, float))} if isinstance(metrics, dict) else {}
    gates = manifest.get("gates")
    out["gates"] = [
        {"gate": g.get("gate"), "metric": g.get("metric"), "op": g.get("op"), "threshold": g.get("threshold")}
        for g in (gates if isinstance(gates, list) else [])
        if isinstance(g, dict) and isinstance(g.get("threshold"), (int, float)) and g.get("op") in (">=", ">", "<=", "<")
    ]
    return out


def wilson(successes: int, n: int, z: float = _Z95) -> tuple[float, float] | None:
    """The Wilson score interval of a proportion (``None`` when ``n`` is 0)."""
    if n <= 0:
        return None
    p = successes / n
    denom = 1 + z * z / n
    centre = (p + z * z / (2 * n)) / denom
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / denom
    return (max(0.0, centre - half), min(1.0, centre + half))


def _div(a: float, b: float) -> float:
    return a / b if b else 0.0


def classification_kpis(confusion: list[list[int]], classes: list[str]) -> dict[str, Any]:
    """Per-class and macro precision/recall/F1 and accuracy from a confusion matrix (rows: true)."""
    cm = np.asarray(confusion, dtype=np.int64).reshape(len(classes), len(classes))
    tp = np.diag(cm)
    actual = cm.sum(axis=1)
    predicted = cm.sum(axis=0)
    n = int(cm.sum())
    per_class: dict[str, dict[str, Any]] = {}
    for i, c in enumerate(classes):
        per_class[c] = {
            "precision": _div(int(tp[i]), int(predicted[i])),
            "recall": _div(int(tp[i]), int(actual[i])),
            "f1": _div(2 * int(tp[i]), int(actual[i]) + int(predicted[i])),
            "support": int(actual[i]),
            "predicted": int(predicted[i]),
            "tp": int(tp[i]),
        }
    return {
        "labelled": n,
        "accuracy": _div(int(tp.sum()), n) if n else None,
        "per_class": per_class,
        "macro": {
            k: float(np.mean([per_class[c][k] for c in classes])) if n else None for k in ("precision", "recall", "f1")
        },
    }


def regression_kpis(fb: Feedback) -> dict[str, Any]:
    r = fb.residuals
    n = r.count if r is not None else 0
    if r is None or n == 0:
        return {"labelled": 0, "mae": None, "rmse": None, "bias": None, "abs_error_p50": None, "abs_error_p95": None}
    return {
        "labelled": n,
        "mae": r.abs_sum / n,
        "rmse": math.sqrt(r.sum_sq / n),
        "bias": r.sum / n,
        "abs_error_p50": r.abs_error.quantile(0.5),
        "abs_error_p95": r.abs_error.quantile(0.95),
    }


def _gate_value(metric: str, kpi: Mapping[str, Any], ref: Mapping[str, Any]) -> tuple[float | None, int, tuple[float, float] | None, str]:
    """``(value, n, wilson interval, what)`` of a gate's metric in production."""
    n = int(kpi.get("labelled") or 0)
    task = ref.get("task")
    if task == "regression":
        if metric in ("mae", "rmse"):
            return kpi.get(metric), n, None, metric
        return None, n, None, "not measurable from counts"
    if metric == "accuracy":
        per = kpi["per_class"]
        correct = sum(v["tp"] for v in per.values())
        return kpi.get("accuracy"), n, wilson(correct, n), "accuracy"
    if metric not in ("precision", "recall", "f1"):
        return None, n, None, "not measurable from counts"
    if task == "binary":
        pos = str(ref.get("positive"))
        c = kpi["per_class"].get(pos)
        if c is None:
            return None, n, None, f"positive class {pos} unknown"
        if metric == "precision":
            return c["precision"], c["predicted"], wilson(c["tp"], c["predicted"]), f"{metric} of class {pos}"
        if metric == "recall":
            return c["recall"], c["support"], wilson(c["tp"], c["support"]), f"{metric} of class {pos}"
        return c["f1"], n, None, f"f1 of class {pos}"
    return kpi["macro"][metric], n, None, f"macro {metric}"


def production_kpis(fb: Feedback | None, ref: Mapping[str, Any] | None, min_labels: int = DEFAULT_MIN_LABELS) -> dict[str, Any]:
    """KPIs of merged feedback ``fb`` and each gate of ``ref`` (:func:`..agent.kpi_reference`) judged on them.

    Gate ``status``: ``pass``, ``fail`` (a production breach), ``insufficient`` (fewer than
    ``min_labels`` labelled predictions behind it), ``not measurable``.
    """
    fb = fb or Feedback()
    counts = {k: getattr(fb, k) for k in ("labels", "matched", "unmatched", "late", "duplicate", "unknown_label")}
    out: dict[str, Any] = {"feedback": counts, "min_labels": min_labels, "gates": []}
    if ref is None:
        return out
    task = ref.get("task")
    if task == "regression":
        kpi = regression_kpis(fb)
    else:
        classes = list(ref.get("classes") or [])
        confusion = fb.confusion if fb.confusion is not None else [[0] * len(classes) for _ in classes]
        if len(confusion) != len(classes):
            return out
        kpi = classification_kpis(confusion, classes)
        kpi["confusion"] = [list(r) for r in confusion]
        kpi["classes"] = classes
    out["task"] = task
    out.update(kpi)
    build = ref.get("metrics") or {}
    for g in ref.get("gates") or []:
        metric, op, threshold = str(g.get("metric")), str(g.get("op")), float(g["threshold"])
        value, n, interval, what = _gate_value(metric, kpi, ref)
        if value is None:
            status = "not measurable"
        elif n < min_labels:
            status = "insufficient"
        else:
            status = "pass" if _OPS[op](value, threshold) else "fail"
        certain = None
        if status == "fail" and interval is not None:
            certain = not any(_OPS[op](b, threshold) for b in interval)
        out["gates"].append({
            "gate": g.get("gate"), "metric": metric, "measured_as": what, "op": op, "threshold": threshold,
            "build": build.get(metric), "production": value, "n": n,
            "interval": list(interval) if interval is not None else None, "status": status, "certain": certain,
        })
    return out
