"""``mlpack inspect`` for a person: the card's facts as aligned plain text (no colour, pipe-safe)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

from mlpack_edge.builder import _facts as facts

if TYPE_CHECKING:
    from mlpack_edge.builder.inspect import Inspection

__all__ = ["render_text"]

_STATUS = {
    "ok": "ok",
    "modified": "MODIFIED (does not match the manifest)",
    "missing": "MISSING",
    "unlisted": "not in the manifest",
    "manifest": "manifest (its sha256 is the content hash)",
    "signature": "signature over manifest.json",
}


def _kv(rows: Sequence[facts.Row], indent: str = "  ") -> list[str]:
    width = max((len(k) for k, _ in rows), default=0)
    return [f"{indent}{k:<{width}}  {v}" for k, v in rows]


def _table(header: Sequence[str], rows: Sequence[Sequence[str]], right: Sequence[int] = ()) -> list[str]:
    widths = [max(len(str(r[i])) for r in [header, *rows]) for i in range(len(header))]

    def line(cells: Sequence[str]) -> str:
        out = [f"{c:>{w}}" if i in right else f"{c:<{w}}" for i, (c, w) in enumerate(zip(cells, widths, strict=True))]
        return "  " + "  ".join(out).rstrip()

    return [line(header), *(line(r) for r in rows)]


def _size(n: int) -> str:
    if n >= 1_000_000:
        return f"{n / 1e6:.1f} MB"
    if n >= 1000:
        return f"{n / 1e3:.1f} kB"
    return f"{n} B"


def render_text(ins: Inspection) -> str:
    m: Mapping[str, Any] = ins.manifest.data
    out = [
        f"{ins.manifest.name} {ins.manifest.version} · {facts.TASKS.get(ins.manifest.task, ins.manifest.task)} · {ins.kind}"
    ]
    out += _kv(
        [
            ("path", str(ins.path)),
            ("content hash", f"{ins.manifest.content_hash}  (sha256 of manifest.json: the model's stable identity)"),
            *[(k.lower(), v) for k, v in facts.intended_use(m)],
        ]
    )
    data = facts.data_rows(m)
    if data:
        out += ["", "Data", *_kv(data)]
    feats = facts.feature_rows(m, ins.profile)
    out += ["", f"Input: {len(feats)} features ({ins.manifest.layout} layout)"]
    out += _table(
        ["feature", "kind", "nullable", "missing", "categories / training range"],
        [
            [
                f.name,
                f.kind,
                "yes" if f.nullable else "no",
                facts.share(f.missing_rate) if f.missing_rate is not None else "—",
                f.detail,
            ]
            for f in feats
        ],
        right=(3,),
    )
    balance = facts.class_balance(m)
    if balance:
        out += ["", "Classes"] + _table(
            ["class", "train", "held out"], [[c, str(a), str(b)] for c, a, b in balance], (1, 2)
        )
    elif ins.manifest.classes:
        out += ["", "Classes: " + ", ".join(map(str, ins.manifest.classes))]
    ev = m.get("evaluation") or {}
    if ev.get("target"):
        out += ["", "Target"] + _stats(ev["target"])
    metrics = facts.metric_rows(m)
    if metrics:
        rows = [[r.label, facts.num(r.value), "; ".join(t for t, _ in r.gates), _verdict(r.gates)] for r in metrics]
        out += ["", "Metrics (held-out split)"] + _table(["metric", "value", "gate", "result"], rows, (1,))
        if ins.manifest.task == "multiclass":
            out += ["  macro: the unweighted mean over classes (gates: recall or recall_macro, etc.)"]
    per_class = facts.class_rows(m)
    if per_class:
        rows = [[c.label, facts.num(c.precision), facts.num(c.recall), facts.num(c.f1), str(c.support)] for c in per_class]
        out += ["", "Per class (held-out split)"]
        out += _table(["class", "precision", "recall", "f1", "support"], rows, right=(1, 2, 3, 4))
    if ev.get("confusion"):
        classes = [str(c) for c in ins.manifest.classes]
        rows = [[c, *map(str, row)] for c, row in zip(classes, ev["confusion"], strict=True)]
        out += ["", "Confusion matrix (rows: true class, columns: predicted)"]
        out += _table(["", *classes], rows, right=range(1, len(classes) + 1))
    if ev.get("residuals"):
        out += ["", "Residuals (true - predicted, held-out split)"] + _stats({"held_out": ev["residuals"]})
    for title, rows_ in (
        (facts.parity_heading(m)[0], facts.parity_rows(m)),
        ("Lineage", facts.lineage_rows(m)),
        ("Devices (from the manifest)", facts.target_rows(m)),
    ):
        if rows_:
            out += ["", title, *_kv(rows_)]
    out += ["", "Files"] + _table(
        ["file", "size", "status"], [[f.name, _size(f.size), _STATUS[f.status]] for f in ins.files], right=(1,)
    )
    sig = ins.signature
    out += ["", "Signature"]
    out += _kv(
        [
            ("manifest.sig", "present" if sig.present else "absent"),
            ("key id", sig.key_id or "—"),
            ("status", sig.detail),
        ]
    )
    if ins.executable is not None:
        x = ins.executable
        out += ["", "Executable"]
        out += _kv(
            [
                ("size", f"{_size(x.size)} ({x.size} bytes)"),
                ("target", x.target or "not recorded"),
                ("glibc", f"{x.glibc_floor} or newer" if x.glibc_floor else "not recorded"),
                ("sha256", f"{x.sha256}  (this file)"),
                ("runtime", f"{_size(x.runtime_size)}, sha256 {x.runtime_sha256}"),
                (
                    "",
                    "(from the trailer; names the frozen runtime, not the model; "
                    + ("the bytes match it)" if x.runtime_intact else "the bytes DO NOT match it)"),
                ),
                ("bundle", f"{_size(x.bundle_size)} appended zip, content hash {ins.manifest.content_hash[:16]}…"),
                ("stable hash", "the content hash names the model wherever it is packaged; the file and runtime"),
                ("", "sha256s repeat only for builds on the same machine (same Python, libraries, PyInstaller)"),
            ]
        )
    if ins.problems:
        out += ["", "Problems", *(f"  {p}" for p in ins.problems)]
    return "\n".join(out)


def _verdict(gates: Sequence[tuple[str, bool]]) -> str:
    if not gates:
        return ""
    return "pass" if all(ok for _, ok in gates) else "FAIL"


def _stats(columns: Mapping[str, Mapping[str, float]]) -> list[str]:
    names, stats = facts.stat_table(columns)
    rows = [[s, *(facts.stat(columns[c][s]) for c in names)] for s in stats]
    return _table(["", *(c.replace("_", " ") for c in names)], rows, right=range(1, len(names) + 1))
