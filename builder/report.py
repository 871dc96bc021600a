"""The human-readable build report (``report.md``) shipped in every bundle.

It is rendered from the manifest (plus the confusion matrix or residuals, which the
manifest does not carry), so it cannot disagree with it. It is listed in the
manifest's ``files`` and must be deterministic: no timings, no dates, no paths but
the data file as the spec names it.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from mlpack.builder.metrics import Evaluation

__all__ = ["render_report"]

_TASK = {"binary": "Binary classification", "multiclass": "Multiclass classification", "regression": "Regression"}


def render_report(manifest: Mapping[str, Any], evaluation: Evaluation) -> str:
    m = manifest
    lin = m["lineage"]
    out: list[str] = [f"# {m['name']} {m['version']} — build report", ""]
    out.append(f"{_TASK[m['task']]} · estimator `{lin['estimator']}` · seed {lin['seed']}")
    for key, label in (("description", "Description"), ("owner", "Owner"), ("intended_use", "Intended use")):
        if m.get(key):
            out += ["", f"**{label}:** {m[key]}"]
    out += ["", "## Data", ""]
    out += _table(
        ["", ""],
        [
            ["file", f"`{lin['data_path']}` (sha256 `{lin['data_sha256'][:16]}…`)"],
            ["target", f"`{lin['target']}`"],
            [
                "rows",
                f"{lin['rows']}: {lin['train_rows']} train, {lin['test_rows']} held out"
                f"{' (stratified)' if m['task'] != 'regression' else ''}",
            ],
        ],
    )
    out += ["", f"## Input ({m['input']['layout']} layout)", ""]
    out += _table(
        ["feature", "kind", "nullable", "categories", "unseen"],
        [
            [
                f"`{f['name']}`",
                f["kind"],
                "yes" if f["nullable"] else "no",
                _cats(f.get("categories")),
                f.get("unseen", ""),
            ]
            for f in m["input"]["features"]
        ],
    )
    out += ["", "## Metrics (held-out split)", ""]
    out += _table(["metric", "value"], [[k, _num(v)] for k, v in m["metrics"].items()])
    out += ["", "## Gates", ""]
    if m["gates"]:
        out += _table(
            ["gate", "measured", "result"],
            [[f"`{g['gate']}`", _num(g["value"]), "pass" if g["passed"] else "FAIL"] for g in m["gates"]],
        )
    else:
        out.append("No gates in the spec.")
    if evaluation.confusion is not None:
        classes = [str(c) for c in m["output"]["classes"]]
        out += ["", "## Confusion matrix (rows: true class, columns: predicted)", ""]
        out += _table(
            [""] + classes, [[c] + [str(v) for v in row] for c, row in zip(classes, evaluation.confusion, strict=True)]
        )
    if evaluation.residuals is not None:
        out += ["", "## Residuals (true - predicted, held-out split)", ""]
        out += _table(["statistic", "value"], [[k, _num(v)] for k, v in evaluation.residuals.items()])
    p = m["parity"]
    out += ["", "## Parity: ONNX (onnxruntime) against scikit-learn", ""]
    rows = [
        ["rows", f"{p['rows']} held-out + {p['probe_rows']} probes (missing values, unseen categories, out of range)"],
        ["max abs diff", f"{p['max_abs_diff']:.3e} (tolerance {p['tolerance']:g})"],
        ["result", "passed" if p["passed"] else "FAILED"],
    ]
    if p.get("label_agreement") is not None:
        rows.insert(1, ["label agreement", f"{p['label_agreement']:.2%}"])
    out += _table(["", ""], rows)
    opset = ", ".join(f"{k or 'ai.onnx'} {v}" for k, v in sorted(m["onnx"]["opset"].items()))
    out += ["", "## Lineage", ""]
    versions = [
        [k, str(lin[k])] for k in ("python", "mlpack", "sklearn", "skl2onnx", "onnx", "onnxruntime", "numpy", "pandas")
    ]
    out += _table(
        ["", ""],
        [["spec sha256", f"`{lin['spec_sha256']}`"], ["data sha256", f"`{lin['data_sha256']}`"], ["ONNX opset", opset]]
        + versions,
    )
    return "\n".join(out) + "\n"


def _table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> list[str]:
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    lines += ["| " + " | ".join(cell.replace("|", "\\|") for cell in row) + " |" for row in rows]
    return lines


def _num(v: float | None) -> str:
    return "undefined" if v is None else f"{v:.4f}"


def _cats(categories: Sequence[str] | None) -> str:
    if not categories:
        return ""
    shown = ", ".join(categories[:8])
    return shown + (f", … ({len(categories)} in all)" if len(categories) > 8 else "")
