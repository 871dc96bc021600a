"""The manifest's ``evaluation`` section: how the model errs on the held-out split.

The model card and ``mlpack inspect`` read everything from the bundle, so what they show
about errors (confusion matrix, class balance, residuals by output range) is recorded in
the manifest here, once, rather than recomputed from data a bundle does not carry. The
values are small summaries (no rows), rounded to 6 significant digits, so the manifest
stays compact and deterministic.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import numpy as np
from mlpack_edge.builder.metrics import Evaluation, describe

if TYPE_CHECKING:
    from mlpack_edge.builder.data import Dataset

__all__ = ["evaluation_section", "RESIDUAL_BINS"]

#: How many ranges of the predicted value the residual plot summarises.
RESIDUAL_BINS = 10
_MIN_PER_BIN = 5
_QUANTILES = (0.05, 0.25, 0.5, 0.75, 0.95)


def _r(v: float) -> float:
    return float(f"{float(v):.6g}")


def evaluation_section(ds: Dataset, evaluation: Evaluation, y_pred: np.ndarray) -> dict[str, Any]:
    """``{"stratified", "class_counts", "confusion", "per_class"}`` or ``{"stratified", "target", "residuals", "residual_bins"}``.

    ``class_counts`` (train and held-out), ``confusion`` rows and ``per_class`` (held-out
    precision, recall, F1 and support of each class) follow ``output.classes``.
    """
    out: dict[str, Any] = {"stratified": ds.stratified}
    if ds.task != "regression":
        out["class_counts"] = {
            "train": _class_counts(ds.y_train, ds.classes),
            "held_out": _class_counts(ds.y_test, ds.classes),
        }
        out["confusion"] = [[int(n) for n in row] for row in evaluation.confusion or []]
        out["per_class"] = [
            {"class": c.label, "precision": _r(c.precision), "recall": _r(c.recall), "f1": _r(c.f1), "support": c.support}
            for c in evaluation.per_class
        ]
        return out
    out["target"] = {"train": _summary(ds.y_train), "held_out": _summary(ds.y_test)}
    out["residuals"] = {k: _r(v) for k, v in (evaluation.residuals or {}).items()}
    out["residual_bins"] = residual_bins(np.asarray(ds.y_test, np.float64), np.asarray(y_pred, np.float64))
    return out


def _class_counts(y: np.ndarray, classes: Sequence[Any]) -> list[int]:
    values = np.asarray(y, dtype=object)
    return [int(np.sum(values == c)) for c in classes]


def _summary(y: np.ndarray) -> dict[str, float | int]:
    return {"count": int(np.asarray(y).size), **{k: _r(v) for k, v in describe(y).items()}}


def residual_bins(y_true: np.ndarray, y_pred: np.ndarray, bins: int = RESIDUAL_BINS) -> list[dict[str, float | int]]:
    """Residual (true - predicted) quantiles within quantile ranges of the predicted value.

    A binned residual plot: it shows bias and spread across the output range the way a
    scatter plot does, in a few numbers instead of one point per held-out row.
    """
    n = int(y_pred.size)
    k = max(1, min(bins, n // _MIN_PER_BIN))
    if n == 0:
        return []
    edges = np.unique(np.quantile(y_pred, np.linspace(0.0, 1.0, k + 1)[1:-1]))
    idx = np.searchsorted(edges, y_pred, side="right")
    resid = y_true - y_pred
    out: list[dict[str, float | int]] = []
    for b in range(len(edges) + 1):
        mask = idx == b
        if not mask.any():
            continue
        q = np.quantile(resid[mask], _QUANTILES)
        p = y_pred[mask]
        out.append(
            {
                "count": int(mask.sum()),
                "pred_min": _r(p.min()),
                "pred_max": _r(p.max()),
                "p05": _r(q[0]),
                "p25": _r(q[1]),
                "median": _r(q[2]),
                "p75": _r(q[3]),
                "p95": _r(q[4]),
            }
        )
    return out
