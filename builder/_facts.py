"""The facts a model card and ``mlpack inspect`` both show, as plain rows of text.

One place decides what each fact is called and how its number is written, so the HTML
card and the terminal cannot tell two stories about the same bundle. Everything is read
from the manifest (and the reference profile); a bundle built before a section existed
simply shows fewer rows. Ordering is fixed (sorted where the source is a mapping), so
the card stays byte-identical across builds.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from mlpack_edge.monitor_agent.profile import NumericProfile, Profile

__all__ = [
    "TASKS",
    "VERSION_KEYS",
    "Row",
    "FeatureRow",
    "MetricRow",
    "num",
    "share",
    "stat",
    "intended_use",
    "data_rows",
    "feature_rows",
    "class_balance",
    "metric_rows",
    "class_rows",
    "ClassRow",
    "parity_rows",
    "parity_heading",
    "parity_chip",
    "lineage_rows",
    "gates_passed",
    "stat_table",
]

TASKS = {"binary": "binary classification", "multiclass": "multiclass classification", "regression": "regression"}
VERSION_KEYS = (
    *("python", "mlpack", "sklearn", "skl2onnx", "onnx", "onnxruntime", "numpy", "pandas"),
    *("xgboost", "lightgbm", "onnxmltools"),  # builds with a booster (builder/boosters.py)
)

Row = tuple[str, str]
#: Summary statistics in reading order (a manifest read back from disk has its keys sorted).
STAT_ORDER = ("count", "mean", "std", "min", "p05", "median", "p95", "max", "max_abs")


@dataclass(frozen=True)
class FeatureRow:
    name: str
    kind: str
    nullable: bool
    missing_rate: float | None  # training split, from the profile
    detail: str  # categories, or the training range


@dataclass(frozen=True)
class MetricRow:
    metric: str
    value: float | None
    gates: tuple[tuple[str, bool], ...]  # (gate text, passed)
    note: str = ""  # what it averages or scores: "macro", "macro, one-vs-rest", "class malignant"

    @property
    def label(self) -> str:
        """``recall (macro)``: the name as the card and ``inspect`` show it."""
        return f"{self.metric} ({self.note})" if self.note else self.metric


@dataclass(frozen=True)
class ClassRow:
    label: str
    precision: float
    recall: float
    f1: float
    support: int


def num(v: Any, digits: int = 4) -> str:
    """A metric-style number: fixed decimals, ``undefined`` for a missing (NaN) value."""
    if v is None:
        return "undefined"
    if isinstance(v, bool) or not isinstance(v, int | float):
        return str(v)
    return f"{v:.{digits}f}"


def stat(v: float) -> str:
    """A summary statistic: counts exact, everything else to 4 significant digits."""
    return str(v) if isinstance(v, int) else f"{v:.4g}"


def share(v: float) -> str:
    return f"{v * 100:.1f}%"


def intended_use(m: Mapping[str, Any]) -> list[Row]:
    """Description, owner and intended use as the spec wrote them (only those given)."""
    labels = (("description", "Description"), ("owner", "Owner"), ("intended_use", "Intended use"))
    return [(label, str(m[key])) for key, label in labels if m.get(key)]


def data_rows(m: Mapping[str, Any]) -> list[Row]:
    lin = m.get("lineage") or {}
    if "rows" not in lin:
        return []
    ev = m.get("evaluation") or {}
    how = " (stratified by class)" if ev.get("stratified") else ""
    rows = [
        ("data file", f"{lin.get('data_path', '?')}"),
        ("target", str(lin.get("target", "?"))),
        ("rows", str(lin["rows"])),
        ("split", f"{lin['train_rows']} train, {lin['test_rows']} held out{how}, seed {lin.get('seed', '?')}"),
    ]
    if "positive_class" in lin:
        rows.append(("positive class", str(lin["positive_class"])))
    return rows


def feature_rows(m: Mapping[str, Any], profile: Profile | None) -> list[FeatureRow]:
    by_name = {f.name: f for f in profile.features} if profile is not None else {}
    derived = {  # part feature -> what it is, for datetime columns (the device derives it)
        f"{d['name']}_{p}": f"{p} of date column {d['name']} ({d['format']})"
        for d in m["input"].get("datetime", [])
        for p in d["parts"]
    }
    out = []
    for f in m["input"]["features"]:
        p = by_name.get(f["name"])
        if f["kind"] == "categorical":
            cats = list(f.get("categories", []))
            shown = ", ".join(cats[:6]) + (f", … ({len(cats)} in all)" if len(cats) > 6 else "")
            detail = f"{shown}; unseen → {f.get('unseen', 'error')}"
        elif isinstance(p, NumericProfile) and p.min is not None and p.max is not None:
            detail = f"{p.min:.4g} … {p.max:.4g}"
        else:
            detail = ""
        if f["name"] in derived:
            detail = derived[f["name"]] + (f"; {detail}" if detail else "")
        out.append(FeatureRow(f["name"], f["kind"], bool(f["nullable"]), p.missing_rate if p else None, detail))
    return out


def class_balance(m: Mapping[str, Any]) -> list[tuple[str, int, int]]:
    """``(class, train count, held-out count)`` per class, when the manifest records them."""
    counts = (m.get("evaluation") or {}).get("class_counts")
    classes = m["output"].get("classes")
    if not counts or not classes:
        return []
    return [(str(c), a, b) for c, a, b in zip(classes, counts["train"], counts["held_out"], strict=True)]


def metric_rows(m: Mapping[str, Any]) -> list[MetricRow]:
    """One row per recorded metric, with its gates (a multiclass ``recall_macro`` gate is ``recall``'s)."""
    from mlpack_edge.builder.metrics import metric_note

    gates = m.get("gates") or []
    task = str(m.get("task", ""))
    positive = (m.get("lineage") or {}).get("positive_class")
    recorded = m.get("metrics") or {}

    def judged_by(g: Mapping[str, Any]) -> str:
        metric = str(g.get("metric", ""))
        if metric not in recorded and metric.endswith("_macro"):
            return metric[: -len("_macro")]
        return metric

    return [
        MetricRow(
            k, v, tuple((g["gate"], bool(g["passed"])) for g in gates if judged_by(g) == k), metric_note(k, task, positive)
        )
        for k, v in sorted(recorded.items())
    ]


def class_rows(m: Mapping[str, Any]) -> list[ClassRow]:
    """Held-out precision/recall/F1/support per class (bundles built before it record none)."""
    return [
        ClassRow(str(c["class"]), c["precision"], c["recall"], c["f1"], int(c["support"]))
        for c in (m.get("evaluation") or {}).get("per_class") or []
    ]


def gates_passed(m: Mapping[str, Any]) -> tuple[int, int]:
    gates = m.get("gates") or []
    return sum(bool(g["passed"]) for g in gates), len(gates)


def parity_heading(m: Mapping[str, Any]) -> tuple[str, str]:
    """``(title, what was compared)`` for the parity section of the card and ``inspect``."""
    p = m.get("parity") or {}
    if str(p.get("status", "")).startswith("not run"):
        return "Parity: not run", f"{p['status'][len('not run: '):].capitalize()}."
    if p.get("proven") is False:
        return (
            "Parity: not proven",
            "This ONNX model was brought as it is and no reference outputs were given, so nothing shows it answers"
            " like the framework that trained it. Give [model] reference_outputs to prove it.",
        )
    if p.get("against"):
        return (
            "Parity: ONNX against the reference outputs",
            "The ONNX model (onnxruntime) against the outputs its own framework gave, on every row of the data.",
        )
    return (
        "Parity: ONNX against scikit-learn",
        "The exported model (onnxruntime) against the trained one, on the held-out rows and on probes "
        "built to break conversions.",
    )


def parity_chip(m: Mapping[str, Any]) -> tuple[str, bool | None]:
    """The card header's parity chip: text and state (``None``: neither passed nor failed)."""
    p = m.get("parity") or {}
    if str(p.get("status", "")).startswith("not run"):
        return "parity not run", None
    if p.get("proven") is False:
        return "parity not proven", None
    return ("parity passed", True) if p.get("passed") else ("parity FAILED", False)


def parity_rows(m: Mapping[str, Any]) -> list[Row]:
    p = m.get("parity") or {}
    if not p:
        return []
    if p.get("proven") is False:  # a bring-your-own ONNX model without reference outputs
        return [("result", str(p.get("status") or "not proven")), ("tolerance", f"{p['tolerance']:g}")]
    if p.get("against"):
        rows = [("compared with", f"{p['against']} ({p.get('reference', '')})"), ("data rows", str(p["rows"]))]
        if p.get("missing_rows"):
            rows.append(("missing rows", f"{p['missing_rows']} (rows with a missing value, compared too)"))
        if p.get("label_agreement") is not None:
            rows.append(("label agreement", share(p["label_agreement"])))
        return rows + [
            ("max abs diff", f"{p['max_abs_diff']:.3e}"),
            ("tolerance", f"{p['tolerance']:g}"),
            ("result", "passed" if p["passed"] else "FAILED"),
        ]
    rows = [
        ("held-out rows", str(p["rows"])),
        ("probe rows", f"{p['probe_rows']} (missing values, unseen categories, out of range)"),
    ]
    if p.get("missing_rows"):
        rows.append(("missing rows", f"{p['missing_rows']} (rows with a missing value, compared too)"))
    if p.get("label_agreement") is not None:
        rows.append(("label agreement", share(p["label_agreement"])))
    rows += [
        ("max abs diff", f"{p['max_abs_diff']:.3e}"),
        ("tolerance", f"{p['tolerance']:g}"),
        ("result", "passed" if p["passed"] else "FAILED"),
    ]
    return rows


def lineage_rows(m: Mapping[str, Any]) -> list[Row]:
    lin = m.get("lineage") or {}
    rows: list[Row] = []
    for key, label in (
        ("estimator", "estimator"),
        ("seed", "seed"),
        ("spec_sha256", "spec sha256"),
        ("data_sha256", "data sha256"),
        ("factory", "factory"),
        ("factory_sha256", "factory sha256"),
        ("onnx_file", "ONNX file"),
        ("onnx_sha256", "ONNX sha256"),
        ("reference_outputs", "reference outputs"),
        ("reference_sha256", "reference sha256"),
    ):
        if key in lin:
            rows.append((label, str(lin[key])))
    opset = (m.get("onnx") or {}).get("opset")
    if opset:
        rows.append(("ONNX opset", ", ".join(f"{k or 'ai.onnx'} {v}" for k, v in sorted(opset.items()))))
    rows += [(k, str(lin[k])) for k in VERSION_KEYS if k in lin]
    return rows


def target_rows(m: Mapping[str, Any]) -> list[Row]:
    """``("linux-x86_64", "glibc 2.30 or newer")`` per executable built with the bundle (``targets``).

    Empty for a bundle built without an executable (or before the floor was recorded).
    """
    rows: list[Row] = []
    for target, info in sorted((m.get("targets") or {}).items()):
        floor = (info or {}).get("glibc_floor")
        rows.append((str(target), f"glibc {floor} or newer" if floor else "glibc not measured"))
    return rows


def stat_table(columns: Mapping[str, Mapping[str, float]]) -> tuple[list[str], list[str]]:
    """``(column names, statistic names)`` of side-by-side summaries, train first, stats in reading order."""
    names = sorted(columns, key=lambda c: (c != "train", c))
    present = {s for c in names for s in columns[c]}
    return names, [s for s in STAT_ORDER if s in present] + sorted(present - set(STAT_ORDER))
