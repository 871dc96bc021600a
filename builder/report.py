"""The model card (``model_card.html``) shipped in every bundle.

One self-contained HTML file: inline CSS, inline SVG charts, no script, no fonts or
images from the network, so it opens on an air-gapped laptop. It is rendered from the
manifest (with its ``evaluation`` section) and the reference profile only, so it cannot
disagree with what the device runs. It is listed in the manifest's ``files`` and hashed
like every other file, so it must be deterministic: no timings, no dates, no absolute
paths, stable ordering — the same build gives the same bytes.

A signature (``manifest.sig``) is made over ``manifest.json`` *after* the card is
written; the card is covered by it through its digest but cannot contain it. The card
therefore states what the builder was told (``signing_key_id``), and ``mlpack inspect``
checks what is actually there.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from html import escape
from importlib import resources
from typing import Any

from mlpack_edge.builder import _facts as facts
from mlpack_edge.builder._card_eval import evaluation_section
from mlpack_edge.monitor_agent.profile import CategoricalProfile, FeatureProfile, NumericProfile, Profile

from mlpack_edge._svg import CHART_CSS, bar_chart, box_chart, heatmap, histogram

__all__ = ["CARD_FILE", "render_card", "evaluation_section"]

CARD_FILE = "model_card.html"
#: Categorical charts show this many categories by share; the rest are summed as "other".
TOP_CATEGORIES = 12

_CSS = resources.files("mlpack_edge.builder").joinpath("card.css").read_text("utf-8")


def render_card(
    manifest: Mapping[str, Any], profile: Profile | None, *, signing_key_id: str | None = None, failed: bool = False
) -> str:
    """The card's HTML for a bundle about to be written (``files`` may be absent from ``manifest``).

    ``signing_key_id`` is the id of the key the bundle will be signed with, or ``None`` for
    an unsigned build. ``failed``: the report of a build that failed a gate (no bundle:
    ``manifest`` is what the build knew when it stopped); the header says so.
    """
    m = manifest
    title = f"{m['name']} {m['version']}" + (" (FAILED build)" if failed else "")
    body = [
        _header(m, signing_key_id, failed),
        _intended_use(m),
        _data(m, profile),
        _metrics(m),
        _errors(m),
        _distributions(profile),
        _predictions(m, profile),
        _section(
            "parity",
            facts.parity_heading(m)[0],
            _facts_table(facts.parity_rows(m), "parity"),
            facts.parity_heading(m)[1],
        ),
        _section("lineage", "Lineage", _facts_table(facts.lineage_rows(m), "lineage")),
        _devices(m),
        "" if failed else _signature(signing_key_id),
    ]
    version = (m.get("lineage") or {}).get("mlpack", "")
    return (
        "<!DOCTYPE html>\n"
        '<html lang="en">\n<head>\n<meta charset="utf-8">\n'
        '<meta name="viewport" content="width=device-width, initial-scale=1">\n'
        f"<title>Model card: {escape(title)}</title>\n"
        f"<style>{_CSS}{CHART_CSS}</style>\n</head>\n<body>\n<main>\n"
        + "\n".join(body)
        + f"\n<footer>Rendered by mlpack {escape(str(version))} from manifest.json and profile.json of this bundle. "
        "No dates or timings by design: the same build gives the same card.</footer>\n"
        "</main>\n</body>\n</html>\n"
    )


# --------------------------------------------------------------------------- sections


def _devices(m: Mapping[str, Any]) -> str:
    """Which devices the executables start on: below the floor they refuse in one line."""
    rows = facts.target_rows(m)
    if not rows:
        return ""
    lead = "The executable refuses to start, in one line naming both versions, on an older glibc."
    return _section("devices", "Devices", _facts_table(rows, "devices"), lead)


def _section(sid: str, title: str, content: str, lead: str = "") -> str:
    intro = f'<p class="lead">{escape(lead)}</p>' if lead else ""
    return f'<section id="{sid}">\n<h2>{escape(title)}</h2>\n{intro}{content}\n</section>'


def _facts_table(rows: Sequence[facts.Row], group: str) -> str:
    if not rows:
        return '<p class="muted">Not recorded in this bundle.</p>'
    cells = "".join(
        f'<tr data-fact="{escape(label)}"><th>{escape(label)}</th><td>{escape(value)}</td></tr>'
        for label, value in rows
    )
    return f'<table class="facts" data-group="{group}">{cells}</table>'


def _chip(name: str, text: str, ok: bool | None) -> str:
    cls = {True: "ok", False: "bad", None: "neutral"}[ok]
    return f'<span class="chip {cls}" data-chip="{name}">{escape(text)}</span>'


def _header(m: Mapping[str, Any], signing_key_id: str | None, failed: bool = False) -> str:
    ok, total = facts.gates_passed(m)
    chips = [
        _chip("gates", f"gates {ok}/{total} passed" if total else "no gates", ok == total if total else None),
        _chip("parity", *facts.parity_chip(m)),
        _chip("build", "build FAILED: no bundle", False)
        if failed
        else _chip(
            "signature",
            f"signed: key {signing_key_id}" if signing_key_id else "unsigned",
            True if signing_key_id else None,
        ),
    ]
    banner = (
        '<p class="banner" id="failed-build">This build failed its gates: this is its report, not a bundle;'
        " nothing was written that a device could install. The failed gates are in Metrics and gates.</p>\n"
        if failed
        else ""
    )
    estimator = (m.get("lineage") or {}).get("estimator", "")
    return (
        f'<header>\n<h1>{escape(m["name"])} <span class="version">{escape(m["version"])}</span></h1>\n'
        f'<p class="subtitle" data-fact="task">{escape(facts.TASKS.get(m["task"], m["task"]))}'
        f"{' · ' + escape(estimator) if estimator else ''}</p>\n"
        f'<p class="chips">{"".join(chips)}</p>\n{banner}</header>'
    )


def _intended_use(m: Mapping[str, Any]) -> str:
    rows = facts.intended_use(m)
    if not rows:
        content = '<p class="muted">The spec gives no description, owner or intended use ([model] in mlpack.toml).</p>'
    else:
        content = _facts_table(rows, "intended-use")
    return _section("intended-use", "Intended use", content)


def _data(m: Mapping[str, Any], profile: Profile | None) -> str:
    parts = [_facts_table(facts.data_rows(m), "data")]
    rows = []
    for f in facts.feature_rows(m, profile):
        missing = facts.share(f.missing_rate) if f.missing_rate is not None else "—"
        rows.append(
            f'<tr data-feature="{escape(f.name)}"><td><code>{escape(f.name)}</code></td><td>{f.kind}</td>'
            f'<td>{"yes" if f.nullable else "no"}</td><td class="num" data-missing="{f.missing_rate}">{missing}</td>'
            f"<td>{escape(f.detail)}</td></tr>"
        )
    parts.append(
        f"<h3>Input: {len(rows)} features ({escape(m['input']['layout'])} layout)</h3>"
        '<table class="grid" id="features"><thead><tr><th>feature</th><th>kind</th><th>nullable</th>'
        "<th>missing (train)</th><th>categories / training range</th></tr></thead><tbody>"
        + "".join(rows)
        + "</tbody></table>"
    )
    balance = facts.class_balance(m)
    if balance:
        train_n, test_n = sum(b[1] for b in balance) or 1, sum(b[2] for b in balance) or 1
        labels = [c for c, _, _ in balance]
        chart = bar_chart(
            "class-balance",
            "Share of rows by class",
            labels,
            [("train", [a / train_n for _, a, _ in balance]), ("held out", [b / test_n for _, _, b in balance])],
            width=420,
        )
        cells = "".join(
            f'<tr data-class="{escape(c)}"><td>{escape(c)}</td><td class="num">{a}</td><td class="num">{b}</td></tr>'
            for c, a, b in balance
        )
        table = (
            '<table class="grid" id="class-counts"><thead><tr><th>class</th><th>train</th><th>held out</th></tr></thead>'
            f"<tbody>{cells}</tbody></table>"
        )
        parts.append(f'<h3>Class balance</h3><div class="pair">{chart}{table}</div>')
    target = (m.get("evaluation") or {}).get("target")
    if target:
        parts.append("<h3>Target</h3>" + _stats_table("target", target))
    return _section("data", "Data", "".join(parts))


def _stats_table(tid: str, columns: Mapping[str, Mapping[str, float]]) -> str:
    """Summary statistics side by side (e.g. train and held-out), one row per statistic."""
    names, stats = facts.stat_table(columns)
    head = "".join(f"<th>{escape(c.replace('_', ' '))}</th>" for c in names)
    body = "".join(
        f'<tr data-stat="{s}"><th>{s}</th>'
        + "".join(f'<td class="num" data-value="{columns[c][s]!r}">{facts.stat(columns[c][s])}</td>' for c in names)
        + "</tr>"
        for s in stats
    )
    return f'<table class="grid" id="{tid}"><thead><tr><th></th>{head}</tr></thead><tbody>{body}</tbody></table>'


def _metrics(m: Mapping[str, Any]) -> str:
    rows = []
    for r in facts.metric_rows(m):
        gates = "<br>".join(f"<code>{escape(text)}</code>" for text, _ in r.gates) or '<span class="muted">—</span>'
        if not r.gates:
            verdict = '<span class="muted">no gate</span>'
        elif all(passed for _, passed in r.gates):
            verdict = '<span class="pass">pass</span>'
        else:
            verdict = '<span class="fail">FAIL</span>'
        note = f' <span class="muted">({escape(r.note)})</span>' if r.note else ""
        rows.append(
            f'<tr data-metric="{escape(r.metric)}"><td>{escape(r.metric)}{note}</td>'
            f'<td class="num" data-value="{r.value!r}">{facts.num(r.value)}</td><td>{gates}</td><td>{verdict}</td></tr>'
        )
    table = (
        '<table class="grid" id="metrics-table"><thead><tr><th>metric</th><th>held-out value</th><th>gate</th>'
        f"<th>result</th></tr></thead><tbody>{''.join(rows)}</tbody></table>"
    )
    lead = "Measured on the held-out split; a failed gate stops the build."
    if m.get("task") == "multiclass":
        lead += (
            " Precision, recall and F1 are macro averages: the unweighted mean over classes (a gate may"
            " name them recall_macro etc.); ROC AUC is one-vs-rest, macro."
        )
    return _section("metrics", "Metrics and gates", table + _class_table(m), lead)


def _class_table(m: Mapping[str, Any]) -> str:
    """Held-out precision/recall/F1/support of every class ("" when the bundle records none)."""
    rows = facts.class_rows(m)
    if not rows:
        return ""
    body = "".join(
        f'<tr data-class="{escape(c.label)}"><td>{escape(c.label)}</td>'
        + "".join(f'<td class="num">{facts.num(v)}</td>' for v in (c.precision, c.recall, c.f1))
        + f'<td class="num">{c.support}</td></tr>'
        for c in rows
    )
    return (
        "<h3>Per class (held-out split)</h3>"
        '<table class="grid" id="per-class-table"><thead><tr><th>class</th><th>precision</th><th>recall</th>'
        f"<th>f1</th><th>support</th></tr></thead><tbody>{body}</tbody></table>"
    )


def _errors(m: Mapping[str, Any]) -> str:
    ev = m.get("evaluation") or {}
    if ev.get("confusion"):
        classes = [str(c) for c in m["output"]["classes"]]
        chart = heatmap("confusion", "Confusion matrix (held-out counts)", classes, classes, ev["confusion"])
        return _section(
            "confusion",
            "Confusion matrix",
            chart,
            "Rows are the true class, columns the predicted one; shading is the share of the row.",
        )
    if ev.get("residual_bins") is not None:
        boxes = [
            (b["pred_min"], b["pred_max"], b["p05"], b["p25"], b["median"], b["p75"], b["p95"])
            for b in ev["residual_bins"]
        ]
        chart = box_chart("residuals", "Residuals (true − predicted) by predicted value", boxes, "predicted value")
        summary = _stats_table("residual-summary", {"held_out": ev.get("residuals") or {}})
        return _section(
            "residuals",
            "Residuals",
            f'<div class="pair">{chart}{summary}</div>',
            "Each box covers one range of the predicted value (held-out rows): whiskers p5–p95, "
            "box p25–p75, red line the median. Boxes centred on zero mean no bias in that range.",
        )
    return _section("errors", "Errors", '<p class="muted">Not recorded in this bundle.</p>')


def _feature_chart(chart_id: str, title: str, f: FeatureProfile) -> str:
    if isinstance(f, NumericProfile):
        if f.min is None or f.max is None:
            return histogram(chart_id, title, [], [])
        return histogram(chart_id, title, [f.min, *f.edges, f.max], list(f.shares))
    assert isinstance(f, CategoricalProfile)
    order = sorted(range(len(f.categories)), key=lambda i: (-f.shares[i], f.categories[i]))
    shown = order[:TOP_CATEGORIES]
    labels = [f.categories[i] for i in shown]
    values = [f.shares[i] for i in shown]
    if len(order) > TOP_CATEGORIES:
        labels.append(f"other ({len(order) - TOP_CATEGORIES})")
        values.append(sum(f.shares[i] for i in order[TOP_CATEGORIES:]))
    return bar_chart(chart_id, title, labels, [("train", values)])


def _distributions(profile: Profile | None) -> str:
    if profile is None:
        return _section("distributions", "Reference distributions", '<p class="muted">No profile in this bundle.</p>')
    figures = []
    for i, f in enumerate(profile.features):
        missing = f" · {facts.share(f.missing_rate)} missing" if f.missing_rate else ""
        chart = _feature_chart(f"feature-{i}", f.name, f)
        figures.append(
            f'<figure data-feature="{escape(f.name)}" data-kind="{f.kind}">{chart}'
            f"<figcaption>{f.kind}, {f.count} training rows{missing}</figcaption></figure>"
        )
    return _section(
        "distributions",
        "Reference distributions (training split)",
        f'<div class="small-multiples">{"".join(figures)}</div>',
        "What devices compare live inputs against for drift (profile.json). Numeric bins are quantiles of the "
        "training values, drawn so that a bar's area is its share (equal widths where many rows share one value).",
    )


def _predictions(m: Mapping[str, Any], profile: Profile | None) -> str:
    pred = profile.prediction if profile is not None else None
    if pred is None:
        return _section("predictions", "Prediction distribution", '<p class="muted">Not recorded in this bundle.</p>')
    if isinstance(pred, CategoricalProfile):
        series = [("predicted", list(pred.shares))]
        balance = facts.class_balance(m)
        if balance and [c for c, _, _ in balance] == list(pred.categories):
            total = sum(b for _, _, b in balance) or 1
            series.append(("true", [b / total for _, _, b in balance]))
        chart = bar_chart("prediction", "Held-out predictions by class", list(pred.categories), series, width=420)
    else:
        chart = _feature_chart("prediction", "Held-out predicted values", pred)
    return _section(
        "predictions",
        "Prediction distribution",
        chart,
        f"The model's outputs on the {pred.count} held-out rows: the reference for output drift on devices.",
    )


def _signature(signing_key_id: str | None) -> str:
    if signing_key_id:
        text = (
            f"Signed at build time with Ed25519 key <code>{escape(signing_key_id)}</code>: manifest.sig holds a "
            "signature over manifest.json, which lists this card's sha256, so the signature covers this card too."
        )
    else:
        text = (
            "Built without a signing key: the bundle has no manifest.sig, and devices refuse it unless "
            "unsigned bundles are explicitly allowed."
        )
    note = (
        "The card cannot contain the signature (it is hashed into the manifest that is signed). "
        "Check what a copy actually carries with <code>mlpack inspect BUNDLE</code>."
    )
    return _section("signature", "Signature", f'<p data-fact="signature">{text}</p><p class="muted">{note}</p>')
