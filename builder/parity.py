"""The parity proof: the ONNX model answers like the fitted estimator, row for row.

Held-out rows alone are not enough: a RandomForest trained on data with NaN converts,
runs, and is silently wrong on exactly the rows with missing values (DESIGN.md). So
generated *probe* rows are added: random rows inside the training range, rows beyond
it, a missing value in every nullable feature, and an unseen category in every
categorical feature. Probes are written in the form a device sends them (``None`` for
missing, the raw category) and mapped the way the device maps them (an unseen category
under ``unseen = "missing"`` becomes missing), so what is proven is what will run.

The golden set kept in the bundle is a slice of these rows that the device's input
validation accepts, with scikit-learn's answers, so a device can re-prove itself.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from mlpack_edge.builder._inputs import model_input, onnx_feeds
from mlpack_edge.builder.convert import Converted
from mlpack_edge.builder.data import Dataset
from mlpack_edge.builder.estimators import Model
from mlpack_edge.errors import ParityError
from mlpack_edge.runtime.golden import Golden
from mlpack_edge.runtime.manifest import Feature

__all__ = ["UNSEEN_PROBE", "ParityResult", "Proof", "label_is_argmax", "prove"]

#: The category value probes use for "never seen in training".
UNSEEN_PROBE = "__mlpack_unseen__"
_RANDOM_PROBES = 16
_BASE_ROWS = 2  # held-out rows each missing/unseen probe starts from
_GOLDEN_HELD_OUT = 8
_GOLDEN_MAX = 48


@dataclass(frozen=True)
class ParityResult:
    rows: int  # held-out rows compared
    probe_rows: int
    label_agreement: float | None  # classification only
    max_abs_diff: float
    tolerance: float
    missing_rows: int = 0  # compared rows with a missing value (NaN, or "" for a category)
    # classification only: on every compared row the ONNX label is the class of the highest
    # probability (the first on a tie), so a recorder may take a row's class from its
    # probabilities (Model.predict_proba does, without asking onnxruntime for the label)
    label_is_argmax: bool | None = None

    @property
    def passed(self) -> bool:
        return self.max_abs_diff <= self.tolerance and self.label_agreement in (None, 1.0)

    def to_dict(self) -> dict[str, Any]:
        d = {
            "rows": self.rows,
            "probe_rows": self.probe_rows,
            "missing_rows": self.missing_rows,
            "label_agreement": self.label_agreement,
            "max_abs_diff": self.max_abs_diff,
            "tolerance": self.tolerance,
            "passed": self.passed,
        }
        if self.label_is_argmax is not None:
            d["label_is_argmax"] = self.label_is_argmax
        return d

    def describe(self) -> str:
        missing = f"{self.missing_rows} with missing values; " if self.missing_rows else ""
        return (
            f"{self.rows} held-out + {self.probe_rows} probe rows agree"
            f" ({missing}max abs diff {self.max_abs_diff:.2e} <= {self.tolerance:g})"
        )


@dataclass(frozen=True)
class Proof:
    result: ParityResult
    golden: Golden


@dataclass(frozen=True)
class _Probe:
    kind: str  # random | beyond-range | missing | unseen
    device: dict[str, Any]  # as a device sends it: None = missing
    golden_ok: bool  # the device's validation accepts it


def prove(model: Model, converted: Converted, data: Dataset, tolerance: float, seed: int) -> Proof:
    """Compare ONNX with scikit-learn on held-out + probe rows; raise ParityError on mismatch."""
    probes = _probes(data, seed)
    probe_frame = _to_model_frame([p.device for p in probes], data.features)
    frame = pd.concat([data.x_test, probe_frame], ignore_index=True)
    groups = ["held-out"] * len(data.x_test) + [p.kind for p in probes]
    sk = _sklearn_outputs(model, frame, data.task)
    ox = _onnx_outputs(converted, frame, data, model.layout)
    if data.task == "regression":
        diff = np.abs(ox["values"].astype(np.float64) - sk["values"])
        labels_bad = np.zeros(len(frame), dtype=bool)
    else:
        diff = np.abs(ox["probabilities"].astype(np.float64) - sk["probabilities"]).max(axis=1)
        labels_bad = np.array(
            [_norm(a) != _norm(b) for a, b in zip(ox["labels"], sk["labels"], strict=True)], dtype=bool
        )
    diff = np.where(np.isnan(diff), np.inf, diff)
    bad = labels_bad | (diff > tolerance)
    max_diff = float(diff.max()) if diff.size else 0.0
    agreement = None if data.task == "regression" else float(1.0 - labels_bad.mean())
    missing_rows = int(_missing_mask(frame, data).sum())
    argmax = None if data.task == "regression" else label_is_argmax(ox["labels"], ox["probabilities"], data.classes)
    result = ParityResult(len(data.x_test), len(probes), agreement, max_diff, tolerance, missing_rows, argmax)
    if bad.any():
        raise ParityError(_explain(bad, labels_bad, diff, groups, frame, data, tolerance, sk))
    golden = _golden(model, data, probes, tolerance)
    return Proof(result, golden)


# --------------------------------------------------------------------------- probes


def _probes(data: Dataset, seed: int) -> list[_Probe]:
    rng = np.random.default_rng(seed)
    feats = data.features
    ranges = {f.name: _range(data.x_train[f.name]) for f in feats if f.kind == "numeric"}
    probes: list[_Probe] = []
    for _ in range(_RANDOM_PROBES):
        row = {}
        for f in feats:
            if f.kind == "numeric":
                lo, hi = ranges[f.name]
                row[f.name] = _f32(rng.uniform(lo, hi))
            else:
                row[f.name] = str(rng.choice(f.categories)) if f.categories else None
        probes.append(_Probe("random", row, True))
    for sign in (-1.0, 1.0):
        row = {}
        for f in feats:
            if f.kind == "numeric":
                lo, hi = ranges[f.name]
                span = (hi - lo) or 1.0
                row[f.name] = _f32(lo - span if sign < 0 else hi + span)
            else:
                row[f.name] = f.categories[0] if f.categories else None
        probes.append(_Probe("beyond-range", row, True))
    base = [_device_row(data.x_test.iloc[i], feats) for i in range(min(_BASE_ROWS, len(data.x_test)))]
    base = [r for r in base if _admissible(r, feats)] or [probes[0].device]
    nullable = [f for f in feats if f.nullable]
    for f in nullable:
        for row in base:
            probes.append(_Probe("missing", {**row, f.name: None}, True))
    if len(nullable) > 1:
        probes.append(_Probe("missing", {**base[0], **{f.name: None for f in nullable}}, True))
    for f in feats:
        if f.kind == "categorical":
            for row in base:
                probes.append(_Probe("unseen", {**row, f.name: UNSEEN_PROBE}, f.unseen == "missing"))
    return probes


def _range(values: pd.Series) -> tuple[float, float]:
    v = values.to_numpy(dtype=np.float64)
    v = v[~np.isnan(v)]
    return (float(v.min()), float(v.max())) if v.size else (0.0, 1.0)


def _f32(value: float) -> float:
    """A float a float32 tensor holds exactly, so JSON round-trips give the same input."""
    return float(np.float32(value))


def _device_row(series: pd.Series, feats: Sequence[Feature]) -> dict[str, Any]:
    row: dict[str, Any] = {}
    for f in feats:
        v = series[f.name]
        if f.kind == "numeric":
            row[f.name] = None if np.isnan(v) else float(v)
        else:
            row[f.name] = None if v == "" else str(v)
    return row


def _admissible(row: dict[str, Any], feats: Sequence[Feature]) -> bool:
    """Would the device accept this row as it is (no unseen category, nulls only where allowed)?"""
    for f in feats:
        v = row[f.name]
        if v is None:
            if not f.nullable:
                return False
        elif f.kind == "categorical" and v not in f.categories:
            return False
    return True


def _to_model_frame(rows: list[dict[str, Any]], feats: Sequence[Feature]) -> pd.DataFrame:
    """Device rows -> model rows, mapping missing and unseen the way the device does."""
    cols: dict[str, Any] = {}
    for f in feats:
        values = [r[f.name] for r in rows]
        if f.kind == "numeric":
            cols[f.name] = np.array([np.nan if v is None else v for v in values], dtype=np.float32)
        else:
            known = set(f.categories)
            cols[f.name] = np.array(
                ["" if v is None or (f.unseen == "missing" and v not in known) else v for v in values], dtype=object
            )
    return pd.DataFrame(cols)


# --------------------------------------------------------------------------- running


def _sklearn_outputs(model: Model, frame: pd.DataFrame, task: str) -> dict[str, np.ndarray]:
    x = model_input(frame, model.layout)
    try:
        if task == "regression":
            return {"values": np.asarray(model.estimator.predict(x), dtype=np.float64).ravel()}
        return {
            "labels": np.asarray(model.estimator.predict(x)),
            "probabilities": np.asarray(model.estimator.predict_proba(x), dtype=np.float64),
        }
    except ValueError as exc:
        message = " ".join(str(exc).split())
        hint = ""
        if "NaN" in message:
            hint = '; features that may be missing need an imputer: keep [preprocess] numeric.impute (default "median")'
        elif "unknown categor" in message:
            hint = '; the encoder must accept categories it never saw (OneHotEncoder handle_unknown = "ignore")'
        raise ParityError(f"scikit-learn cannot predict the probe rows ({message}){hint}") from None


def _onnx_outputs(converted: Converted, frame: pd.DataFrame, data: Dataset, layout: str) -> dict[str, np.ndarray]:
    import onnxruntime as ort

    try:
        session = ort.InferenceSession(converted.model, providers=["CPUExecutionProvider"])
        names = list(converted.output.values())
        out = session.run(names, onnx_feeds(frame, data.features, layout))
    except Exception as exc:  # onnxruntime raises its own exception types
        raise ParityError(f"onnxruntime cannot run the converted model: {' '.join(str(exc).split())[:300]}") from None
    if data.task == "regression":
        return {"values": np.asarray(out[0]).ravel()}
    return {"labels": np.asarray(out[0]).ravel(), "probabilities": np.asarray(out[1])}


def label_is_argmax(labels: np.ndarray, probabilities: np.ndarray, classes: Sequence[Any]) -> bool:
    """Whether every row's label is the class of its highest probability (the first on a tie).

    True for most converters (linear models, trees, boosting, networks); not for an SVC,
    whose label comes from its decision function and its probabilities from Platt scaling.
    """
    if len(labels) == 0 or probabilities.ndim != 2 or probabilities.shape[1] != len(classes):
        return False
    top = np.asarray(probabilities).argmax(axis=1)
    return all(_same(a, classes[k]) for a, k in zip(labels, top.tolist(), strict=True))


def _same(label: Any, cls: Any) -> bool:
    v = _norm(label)
    return bool(v == cls) or str(v) == str(cls)


def _norm(v: Any) -> Any:
    return v.item() if isinstance(v, np.generic) else v


def _explain(
    bad: np.ndarray,
    labels_bad: np.ndarray,
    diff: np.ndarray,
    groups: list[str],
    frame: pd.DataFrame,
    data: Dataset,
    tolerance: float,
    sk: dict[str, np.ndarray],
) -> str:
    n_bad, n = int(bad.sum()), len(bad)
    worst = float(diff.max())
    parts = [f"ONNX disagrees with scikit-learn on {n_bad} of {n} rows"]
    detail = []
    if data.task != "regression":
        detail.append(f"labels differ on {int(labels_bad.sum())}")
    detail.append(f"max abs diff {'NaN' if math.isinf(worst) else f'{worst:.3g}'}, tolerance {tolerance:g}")
    parts.append(f" ({'; '.join(detail)})")
    by_group = []
    for g in dict.fromkeys(groups):
        mask = np.array([x == g for x in groups])
        by_group.append(f"{g} {int((bad & mask).sum())}/{int(mask.sum())}")
    parts.append(": " + ", ".join(by_group))
    has_missing = _missing_mask(frame, data)
    if has_missing[bad].all():
        parts.append(
            " — every disagreeing row has a missing value: this model does not treat missing values the same"
            ' way in ONNX; put an imputer in front ([preprocess] numeric = { impute = "median" })'
        )
    elif data.task == "regression":
        scale = float(np.abs(sk["values"]).max()) if sk["values"].size else 0.0
        if scale * 1e-6 > tolerance:
            parts.append(
                f" — ONNX computes in float32: for outputs up to {scale:.3g} raise [parity] tolerance"
                f" to about {scale * 1e-6:.1g}"
            )
    return "".join(parts)


def _missing_mask(frame: pd.DataFrame, data: Dataset) -> np.ndarray:
    """Rows with at least one missing value (NaN numeric, ``""`` categorical)."""
    has_missing = np.zeros(len(frame), dtype=bool)
    for f in data.features:
        col = frame[f.name].to_numpy()
        has_missing |= np.isnan(col.astype(np.float64)) if f.kind == "numeric" else (col == "")
    return has_missing


# --------------------------------------------------------------------------- golden set


def _golden(model: Model, data: Dataset, probes: list[_Probe], tolerance: float) -> Golden:
    held = []
    for i in range(len(data.x_test)):
        if len(held) == _GOLDEN_HELD_OUT:
            break
        row = _device_row(data.x_test.iloc[i], data.features)
        if _admissible(row, data.features):
            held.append(row)
    rows = (held + [p.device for p in probes if p.golden_ok])[:_GOLDEN_MAX]
    sk = _sklearn_outputs(model, _to_model_frame(rows, data.features), data.task)
    if data.task == "regression":
        return Golden(rows=rows, tolerance=tolerance, values=[float(v) for v in sk["values"]])
    return Golden(
        rows=rows,
        tolerance=tolerance,
        labels=[_norm(v) for v in sk["labels"]],
        probabilities=[[float(p) for p in r] for r in sk["probabilities"]],
    )
