"""The fleet web page: server-rendered HTML with inline SVG charts, nothing fetched from elsewhere.

Three views over the same query results the JSON API returns: the fleet (alerts,
charts per model version, the device table), one device, one model version.
"""

from __future__ import annotations

from collections.abc import Sequence
from html import escape
from importlib import resources
from string import Template
from typing import Any
from urllib.parse import quote

from mlpack_edge.collector._fmt import duration, utc
from mlpack_edge._svg import line_chart

__all__ = ["fleet_page", "device_page", "model_page", "alerts_page", "not_found_page", "SHOWN_ALERTS"]

_TEMPLATE = Template(resources.files("mlpack_edge.collector").joinpath("templates/page.html").read_text("utf-8"))
_RANGES = (("6 h", 6), ("24 h", 24), ("7 days", 168))


def _render(title: str, body: str, hours: float | None) -> str:
    links = " ".join(
        f'<a href="?hours={h}">{label}</a>' if hours != h else f"<strong>{label}</strong>" for label, h in _RANGES
    )
    nav = (f'<a href="/">Fleet</a> <a href="/alerts">Alerts</a> <span>Range: {links}</span> <a href="/rollouts">Rollouts</a> '
           '<a href="/docs">API</a> <a href="/metrics">Metrics</a>')
    return _TEMPLATE.substitute(title=escape(title), heading=escape(title), nav=nav, body=body)


def _ago(s: float | None) -> str:
    return "never" if s is None else f"{duration(s)} ago"


def _status(s: str) -> str:
    return f'<span class="status status-{escape(s)}">{escape(s)}</span>'


def _pct(v: float) -> str:
    return f"{v * 100:.2f} %"


def _num(v: float | None, digits: int = 2) -> str:
    return "–" if v is None else f"{v:.{digits}f}"


def _model_label(m: dict[str, Any] | None) -> str:
    if not m:
        return '<span class="muted">–</span>'
    return f'<a href="/models/{m["hash"]}">{escape(m["name"])} {escape(m["version"])}</a>'


def _device_link(name: str) -> str:
    return f'<a href="/devices/{quote(name)}">{escape(name)}</a>'


#: Alerts listed on the fleet page (critical first); the rest are counted and linked. At
#: 10,000 devices 5 % drifting is 500 alerts, 87 KB of a 155 KB page.
SHOWN_ALERTS = 50


def _alerts(alerts: Sequence[dict[str, Any]]) -> str:
    if not alerts:
        return '<section id="alerts"><h2>Alerts</h2><p class="muted">No alerts in this range.</p></section>'
    items = "".join(
        f'<li class="alert alert-{a["severity"]}" data-kind="{a["kind"]}" data-feature="{escape(a["feature"] or "")}">'
        f'<strong>{escape(a["kind"])}</strong> — {escape(a["message"])}</li>'
        for a in alerts[:SHOWN_ALERTS]
    )
    more = len(alerts) - SHOWN_ALERTS
    rest = (f'<p class="muted more-alerts">… and {more:,} more: the <a href="/alerts">alert history</a>, or every one '
            'in <a href="/api/v1/fleet">/api/v1/fleet</a></p>') if more > 0 else ""
    return f'<section id="alerts"><h2>Alerts ({len(alerts):,})</h2><ul class="alerts">{items}</ul>{rest}</section>'


def _charts(series_list: Sequence[dict[str, Any]], rng: dict[str, int], prefix: str, per_feature: bool) -> str:
    """Latency, throughput, error rate and drift charts; one line per model version, or per
    feature (``per_feature``) when the page is about one model."""
    xr = (float(rng["from"]), float(rng["to"]))
    step = series_list[0]["range"]["bucket"] if series_list else rng["bucket"]

    def pts(s: dict[str, Any], key: str, scale: float = 1.0) -> list[tuple[float, float | None]]:
        return [(p["t"] + step / 2, None if p.get(key) is None else p[key] * scale) for p in s["points"]]

    def label(s: dict[str, Any]) -> str:
        return f'{s["model"]["name"]} {s["model"]["version"]}'

    per_hour = {60: "per minute", 3600: "per hour"}.get(step, "per day")
    if per_feature and series_list:
        s = series_list[0]
        lat = [("p50", pts(s, "p50_ms")), ("p95", pts(s, "p95_ms")), ("p99", pts(s, "p99_ms"))]
        worst = sorted(s["total"]["drift"].items(), key=lambda kv: -kv[1]["psi"])[:8]
        drift = [(name, [(p["t"] + step / 2, p.get("psi", {}).get(name)) for p in s["points"]]) for name, _ in worst]
        t = s["model"]["thresholds"]
    else:
        lat = [(label(s), pts(s, "p95_ms")) for s in series_list]
        drift = [(label(s), pts(s, "max_psi")) for s in series_list]
        t = series_list[0]["model"]["thresholds"] if series_list else {"psi_warn": 0.1, "psi_drift": 0.2}
    charts = [
        line_chart(f"{prefix}latency", "Latency p95 (ms)" if not per_feature else "Latency (ms)", lat, xr, " ms"),
        line_chart(f"{prefix}throughput", f"Throughput (requests {per_hour})", [(label(s), pts(s, "requests")) for s in series_list], xr),
        line_chart(f"{prefix}errors", "Error rate (%)", [(label(s), pts(s, "error_rate", 100.0)) for s in series_list], xr, " %"),
        line_chart(
            f"{prefix}drift",
            "Drift: PSI per feature" if per_feature else "Drift: worst feature PSI",
            drift,
            xr,
            thresholds=[(t["psi_warn"], f"warn {t['psi_warn']}"), (t["psi_drift"], f"drift {t['psi_drift']}")],
        ),
    ]
    return f'<div class="charts">{"".join(charts)}</div>'


_SEVERITY = {s: i for i, s in enumerate(("failing", "drift", "warn", "silent", "ok", "idle", "never", "revoked"))}


def _device_rows(rows: Sequence[dict[str, Any]], with_model: bool = True) -> str:
    """The device table, worst first: failing, drifting, warned and silent devices lead."""
    out = []
    for d in sorted(rows, key=lambda r: (_SEVERITY.get(r["status"], 99), r["name"])):
        w = d["worst"]
        worst = "–" if not w else f'<span class="feature">{escape(w["feature"])}</span> {w["psi"]:.3f} {_verdict(w)}'
        dropped = (d["outbox"] or {}).get("dropped", 0)
        out.append(
            f'<tr class="row-{d["status"]}" data-device="{escape(d["name"])}" data-status="{d["status"]}">'
            f"<td>{_device_link(d['name'])}</td><td>{_status(d['status'])}</td>"
            + (f"<td>{_model_label(d['model'])}</td>" if with_model else "")
            + f'<td title="{utc(d["last_seen"])}">{_ago(d["silent_for"])}</td>'
            f'<td class="num">{d["requests"]:,}</td><td class="num">{d["rows"]:,}</td>'
            f'<td class="num">{_pct(d["error_rate"])}</td><td>{worst}</td><td class="num">{dropped}</td></tr>'
        )
    head = (
        "<tr><th>Device</th><th>Status</th>"
        + ("<th>Model</th>" if with_model else "")
        + '<th>Last seen</th><th class="num">Requests</th><th class="num">Rows</th>'
        '<th class="num">Error rate</th><th>Worst feature (PSI)</th><th class="num">Dropped</th></tr>'
    )
    return f'<table class="devices">{head}{"".join(out)}</table>'


def _verdict(d: dict[str, Any]) -> str:
    if d["status"] == "not-enough-data":
        return f'{_status(d["status"])} <span class="muted">({d["n"]:,} of {d["min_count"]:,})</span>'
    return _status(d["status"])


def _p(v: float | None) -> str:
    return "–" if v is None else f"{v:.2g}"


def _side_by_side(name: str, d: dict[str, Any]) -> str:
    """Reference and current share per bin of one feature, as two bars per row."""
    b = d.get("bins")
    if not b:
        return ""
    n = sum(b["observed"]) or 1
    rows = "".join(
        f'<tr><td>{escape(lbl)}</td>'
        f'<td class="num">{100 * ref:.1f} %</td><td class="bar"><span class="bar-ref" style="width:{100 * ref:.1f}%"></span></td>'
        f'<td class="num">{100 * obs / n:.1f} %</td><td class="bar"><span class="bar-cur" style="width:{100 * obs / n:.1f}%"></span></td>'
        f'<td class="num">{obs:,}</td></tr>'
        for lbl, ref, obs in zip(b["labels"], b["reference"], b["observed"])
    )
    return (
        f'<figure class="bins" data-feature="{escape(name)}"><figcaption>{escape(name)}: reference vs current '
        f'(PSI {d["psi"]:.3f}, chi-square {_num(d["statistic"], 1)} on {d["df"]} df, p {_p(d["p_value"])}, n {d["n"]:,})'
        '</figcaption><table class="bins"><tr><th>Bin</th><th class="num">Reference</th><th></th>'
        f'<th class="num">Current</th><th></th><th class="num">Count</th></tr>{rows}</table></figure>'
    )


def _drift_table(drift: dict[str, dict[str, Any]]) -> str:
    """PSI/JS (effect sizes), the chi-square test and n per feature; drifted features side by side."""
    rows = "".join(
        f'<tr data-feature="{escape(name)}" data-status="{d["status"]}"><td>{escape(name)}</td>'
        f'<td class="num">{d["psi"]:.4f}</td><td class="num">{d["js"]:.4f}</td>'
        f'<td class="num">{_num(d["statistic"], 1)}</td><td class="num">{"–" if d["df"] is None else d["df"]}</td>'
        f'<td class="num">{_p(d["p_value"])}</td><td>{_verdict(d)}</td>'
        f'<td class="num">{d["observed"]:,}</td><td class="num">{d.get("missing", 0):,}</td>'
        f'<td class="num">{d.get("below", 0):,}</td><td class="num">{d.get("above", 0):,}</td>'
        f'<td class="num">{d.get("unseen", 0):,}</td></tr>'
        for name, d in sorted(drift.items(), key=lambda kv: -kv[1]["psi"])
    )
    alpha = next((d["alpha"] for d in drift.values() if d.get("alpha") is not None), None)
    note = (
        '<p class="muted">Drift: PSI at its threshold <em>and</em> a two-sample chi-square test of the binned counts '
        f"against the reference significant at p &lt; {_p(alpha)} (family-wise alpha over {len(drift)} tests).</p>"
    )
    moved = "".join(_side_by_side(name, d) for name, d in drift.items() if d["status"] in ("drift", "warn"))
    return (
        note + '<table class="drift"><tr><th>Feature</th><th class="num">PSI</th><th class="num">JS</th>'
        '<th class="num">Chi-square</th><th class="num">df</th><th class="num">p</th><th>Status</th>'
        '<th class="num">Observed</th><th class="num">Missing</th><th class="num">Below</th><th class="num">Above</th>'
        f'<th class="num">Unseen</th></tr>{rows}</table>' + moved
    )


def _stats_line(t: dict[str, Any]) -> str:
    return (
        f'<p class="chips"><span>{t["requests"]:,} requests</span><span>{t["rows"]:,} rows</span>'
        f'<span>error rate {_pct(t["error_rate"])}</span><span>p50 {_num(t["p50_ms"], 3)} ms</span>'
        f'<span>p95 {_num(t["p95_ms"], 3)} ms</span><span>p99 {_num(t["p99_ms"], 3)} ms</span></p>'
    )


def fleet_page(data: dict[str, Any], hours: float | None) -> str:
    counts = " ".join(f"{_status(s)} {n}" for s, n in data["status_counts"].items() if n)
    rng = data["range"]
    models = "".join(
        f"<tr><td>{_model_label(s['model'])}</td><td><code>{s['model']['hash'][:12]}</code></td>"
        f'<td class="num">{s["total"]["requests"]:,}</td><td class="num">{s["total"]["rows"]:,}</td>'
        f'<td class="num">{_pct(s["total"]["error_rate"])}</td><td class="num">{_num(s["total"]["p50_ms"], 3)}</td>'
        f'<td class="num">{_num(s["total"]["p95_ms"], 3)}</td><td class="num">{_num(s["total"]["p99_ms"], 3)}</td>'
        + (
            f'<td>{escape(s["total"]["worst"]["feature"])} {s["total"]["worst"]["psi"]:.3f} {_status(s["total"]["worst"]["status"])}</td>'
            if s["total"]["worst"]
            else "<td>–</td>"
        )
        + "</tr>"
        for s in data["models"]
    )
    paging = data.get("paging") or {"page": 1, "pages": 1, "per_page": len(data["devices"]), "total": len(data["devices"])}
    body = (
        f'<p class="muted">{utc(rng["from"])} – {utc(rng["to"])} · {paging["total"]:,} devices · {counts}</p>'
        + _alerts(data["alerts"])
        + f'<section id="charts"><h2>Fleet over time</h2>{_charts(data["models"], rng, "fleet-", False)}</section>'
        + '<section id="models"><h2>Model versions</h2><table class="models"><tr><th>Model</th><th>Hash</th>'
        '<th class="num">Requests</th><th class="num">Rows</th><th class="num">Error rate</th><th class="num">p50 ms</th>'
        f'<th class="num">p95 ms</th><th class="num">p99 ms</th><th>Worst feature (PSI)</th></tr>{models}</table></section>'
        + _production(data.get("production") or [], "fleet-wide", rng)
        + f'<section id="fleet"><h2>Devices</h2>{_pager(paging, hours)}{_device_rows(data["devices"])}</section>'
    )
    return _render("mlpack fleet", body, hours)


def _pager(paging: dict[str, int], hours: float | None) -> str:
    """"Devices 101–200 of 10,000, worst first" and links to the neighbouring pages (the range kept)."""
    n, pages, size, total = paging["page"], paging["pages"], paging["per_page"], paging["total"]
    if total <= size and n == 1:
        return ""
    first, last = (n - 1) * size + 1, min(n * size, total)
    keep = f"hours={hours:g}&amp;" if hours is not None else ""

    def link(to: int, label: str) -> str:
        return f'<a rel="{label}" href="?{keep}page={to}&amp;per_page={size}">{label}</a>'

    shown = f"Devices {first:,}–{last:,} of {total:,}, worst first" if first <= total else f"No devices on page {n} of {pages}"
    nav = " ".join(
        x for x in (link(1, "first") if n > 2 else "", link(n - 1, "prev") if n > 1 else "",
                    link(n + 1, "next") if n < pages else "", link(pages, "last") if n < pages - 1 else "") if x
    )
    return f'<p class="pager" data-page="{n}" data-pages="{pages}">{shown} · page {n} of {pages} {nav}</p>'


_GATE_STATUS = {"pass": "ok", "fail": "drift", "insufficient": "idle", "not measurable": "idle"}


def _kpi_block(k: dict[str, Any]) -> str:
    """One scope's KPIs: feedback counts, per-class/macro table or MAE/RMSE, gates against build."""
    fb = k["feedback"]
    parts = [
        f'<p class="muted">{fb["labels"]:,} labels: {fb["matched"]:,} matched, {fb["unmatched"]:,} unmatched, '
        f'{fb["late"]:,} late, {fb["duplicate"]:,} duplicate, {fb["unknown_label"]:,} unknown label</p>'
    ]
    if k.get("task") == "regression":
        parts.append(f'<p>MAE {_num(k.get("mae"), 4)} · RMSE {_num(k.get("rmse"), 4)} · bias {_num(k.get("bias"), 4)} '
                     f'(n {k.get("labelled", 0):,})</p>')
    elif "per_class" in k:
        rows = "".join(
            f'<tr><td>{escape(c)}</td><td class="num">{v["precision"]:.4f}</td><td class="num">{v["recall"]:.4f}</td>'
            f'<td class="num">{v["f1"]:.4f}</td><td class="num">{v["support"]:,}</td></tr>'
            for c, v in k["per_class"].items()
        )
        mac = k["macro"]
        rows += (f'<tr><td><strong>macro</strong></td><td class="num">{_num(mac["precision"], 4)}</td>'
                 f'<td class="num">{_num(mac["recall"], 4)}</td><td class="num">{_num(mac["f1"], 4)}</td>'
                 f'<td class="num">{k["labelled"]:,}</td></tr>')
        parts.append(
            f'<p>accuracy {_num(k.get("accuracy"), 4)} (n {k["labelled"]:,})</p><table class="kpi"><tr><th>Class</th>'
            f'<th class="num">Precision</th><th class="num">Recall</th><th class="num">F1</th><th class="num">Support</th></tr>'
            f"{rows}</table>"
        )
    gates = "".join(
        f'<tr><td><code>{escape(str(g["gate"]))}</code></td><td>{escape(g["measured_as"])}</td>'
        f'<td class="num">{_num(g["production"], 4)}</td>'
        f'<td class="num">{_ci(g["interval"])}</td>'
        f'<td class="num">{g["n"]:,}</td><td class="num">{_num(g["build"], 4)}</td><td class="num">{g["threshold"]:g}</td>'
        f'<td>{_status(_GATE_STATUS.get(g["status"], "idle"))} {escape(g["status"])}</td></tr>'
        for g in k.get("gates") or []
    )
    if gates:
        parts.append(
            '<table class="gates"><tr><th>Gate</th><th>Measured as</th><th class="num">Production</th>'
            '<th class="num">95 % CI</th><th class="num">n</th><th class="num">Build</th><th class="num">Threshold</th>'
            f"<th>Status</th></tr>{gates}</table>"
        )
    return "".join(parts)


def _ci(interval: Sequence[float] | None) -> str:
    return "–" if not interval else f"{interval[0]:.4f} – {interval[1]:.4f}"


def _production_chart(e: dict[str, Any], rng: dict[str, int] | None, chart_id: str) -> str:
    """Each measurable gate's production value per bucket, its threshold dashed."""
    gates = [g for g in e["kpi"].get("gates") or [] if g["status"] != "not measurable"]
    if rng is None or not gates or not e.get("series"):
        return ""
    step = rng["bucket"]
    lines = [(str(g["gate"]), [(p["t"] + step / 2, p.get(g["gate"])) for p in e["series"]]) for g in gates]
    return line_chart(chart_id, "Gate metrics in production", lines, (float(rng["from"]), float(rng["to"])),
                      thresholds=[(float(g["threshold"]), str(g["gate"])) for g in gates])


def _production(entries: Sequence[dict[str, Any]], scope: str, rng: dict[str, int] | None = None) -> str:
    """The production KPI section (fleet, device and model pages)."""
    if not entries:
        return ('<section id="production"><h2>Production KPIs</h2>'
                '<p class="muted">No ground-truth labels in this range.</p></section>')
    parts = []
    for e in entries:
        k = e["kpi"]
        parts.append(f'<h3>{_model_label(e["model"])} · {escape(scope)} · gates need at least {k["min_labels"]:,} labels</h3>'
                     + _kpi_block(k) + _production_chart(e, rng, f'kpi-{e["model"]["hash"][:12]}'))
    return '<section id="production"><h2>Production KPIs</h2>' + "".join(parts) + "</section>"


def device_page(data: dict[str, Any], hours: float | None) -> str:
    d = data["device"]
    parts = [
        f'<p>{_status(d["status"])} · model {_model_label(d["model"])} · last seen {_ago(d["silent_for"])} '
        f'({utc(d["last_seen"])})</p>'
    ]
    if d["outbox"]:
        ob = ", ".join(f"{escape(k)} {v}" for k, v in sorted(d["outbox"].items()))
        parts.append(f'<p class="muted">Outbox on the device: {ob}</p>')
    for i, s in enumerate(data["models"]):
        m = s["model"]
        parts.append(
            f'<section class="model-series"><h2>{_model_label(m)} on this device</h2>{_stats_line(s["total"])}'
            f'{_charts([s], data["range"], f"m{i}-", True)}{_drift_table(s["total"]["drift"])}</section>'
        )
    if not data["models"]:
        parts.append('<section><p class="muted">No windows from this device in the range.</p></section>')
    parts.append(_production(data.get("production") or [], "this device", data["range"]))
    audit = "".join(
        f'<tr{_AUDIT_ROW.get(str(a["event"]), "")}><td class="num">{"collector" if a["seq"] is None else a["seq"]}</td>'
        f'<td>{utc(a.get("time"))}</td>'
        f'<td>{escape(str(a["event"]))}</td><td class="detail">{_audit_detail(a.get("detail"))}</td></tr>'
        for a in data["audit"]
    )
    parts.append(
        '<section id="audit"><h2>Audit events</h2>'
        + (f'<table><tr><th class="num">Seq</th><th>Time</th><th>Event</th><th>Detail</th></tr>{audit}</table>'
           if audit else '<p class="muted">No audit events from this device.</p>')
        + "</section>"
    )
    return _render(f"Device {d['name']}", "".join(parts), hours)


#: Audit events that mean a model was refused or failed on the device: marked like a drifting row.
_AUDIT_ROW = {e: ' class="row-drift"' for e in ("refused", "verify_failed", "fallback", "replay_refused")}


def _audit_detail(detail: Any) -> str:
    """``key value · key value`` of an event's detail (versions, key ids, the one-line reason)."""
    if not isinstance(detail, dict):
        return "" if detail is None else escape(str(detail))
    shown = [(k, v) for k, v in sorted(detail.items()) if v is not None and v != []]
    return " · ".join(
        f'{escape(str(k))} <code>{escape(", ".join(map(str, v)) if isinstance(v, list) else str(v))}</code>'
        for k, v in shown
    )


def model_page(data: dict[str, Any], hours: float | None) -> str:
    s = data["series"]
    m = s["model"]
    body = (
        f'<p><code>{m["hash"]}</code> · drift thresholds PSI warn {m["thresholds"]["psi_warn"]}, '
        f'drift {m["thresholds"]["psi_drift"]}, test alpha {m["thresholds"].get("alpha", 0.005)}, '
        f'verdict from n &ge; {m["thresholds"].get("min_count", 20)}</p>'
        f'<section><h2>Fleet</h2>{_stats_line(s["total"])}{_charts([s], s["range"], "model-", True)}</section>'
        f'<section><h2>Drift per feature</h2>{_drift_table(s["total"]["drift"])}</section>'
        + _production(data.get("production") or [], "fleet-wide", s["range"])
        + f'<section><h2>Devices on this model</h2>{_device_rows(data["devices"], with_model=False)}</section>'
    )
    return _render(f"Model {m['name']} {m['version']}", body, hours)


def _delivery(d: dict[str, Any]) -> str:
    when = utc(d["delivered_at"]) if d["state"] == "delivered" else (
        f'next {utc(d["next_at"])}' if d["state"] == "pending" else "")
    err = f' · <span class="muted">{escape(d["last_error"])}</span>' if d["last_error"] else ""
    status = f' · HTTP {d["last_status"]}' if d["last_status"] else ""
    return (f'<li data-state="{d["state"]}">webhook {d["webhook"]} · {d["event"]} · '
            f'{_chip(d["state"])} · {d["attempts"]} attempt{"s" if d["attempts"] != 1 else ""}'
            f'{status} · {when}{err}</li>')


#: Alert and delivery states drawn with the device status colours.
_CHIP = {"critical": "drift", "warning": "warn", "resolved": "ok", "delivered": "ok", "pending": "warn",
         "failed": "drift", "cancelled": "idle"}


def _chip(state: str) -> str:
    return f'<span class="status status-{_CHIP.get(state, "idle")}">{escape(state)}</span>'


#: Open alerts are marked like drifting (critical) or warning device rows.
_ALERT_ROW = {("open", "critical"): ' class="row-drift"', ("open", "warning"): ' class="row-warn"'}


def alerts_page(data: dict[str, Any], webhooks: Sequence[dict[str, Any]], state: str) -> str:
    """Alert history (opened/resolved, newest first) with each alert's webhook deliveries."""
    rows = "".join(
        f'<tr id="alert-{a["id"]}"{_ALERT_ROW.get((a["state"], a["severity"]), "")} data-kind="{escape(a["kind"])}" '
        f'data-state="{a["state"]}"><td class="num">{a["id"]}</td><td>{escape(a["kind"])}</td>'
        f'<td>{_chip(a["severity"] if a["state"] == "open" else "resolved")}</td>'
        f'<td>{_device_link(a["device"]) if a["device"] else "–"}</td>'
        f'<td class="detail">{escape(a["message"])}</td><td>{utc(a["opened_at"])}</td>'
        f'<td>{utc(a["resolved_at"]) if a["resolved_at"] else "–"}</td>'
        f'<td class="detail"><ul style="list-style: none; padding: 0; margin: 0">'
        f'{"".join(_delivery(d) for d in a["deliveries"])}</ul></td></tr>'
        for a in data["alerts"]
    )
    links = " ".join(f'<a href="?state={s}">{s}</a>' if s != state else f"<strong>{s}</strong>"
                     for s in ("all", "open", "resolved"))
    hooks = "".join(
        f'<tr data-webhook="{h["id"]}"><td class="num">{h["id"]}</td><td><code>{escape(h["url"])}</code></td>'
        f'<td>{h["format"]}</td><td>{"yes" if h["signed"] else "no"}</td>'
        f'<td>{"removed " + utc(h["removed_at"]) if h["removed_at"] else "active"}</td>'
        f'<td class="num">{h["delivered"]}</td><td class="num">{h["pending"]}</td><td class="num">{h["failed"]}</td></tr>'
        for h in webhooks
    )
    body = (
        f'<section id="alert-history"><h2>Alert history</h2><p>Show: {links}</p>'
        + (f'<table class="alerts"><tr><th class="num">#</th><th>Kind</th><th>State</th><th>Device</th><th>Message</th>'
           f'<th>Opened (UTC)</th><th>Resolved (UTC)</th><th>Deliveries</th></tr>{rows}</table>'
           if rows else '<p class="muted">No alerts recorded.</p>')
        + '</section><section id="webhooks"><h2>Webhooks</h2>'
        + (f'<table><tr><th class="num">#</th><th>URL</th><th>Format</th><th>Signed</th><th>State</th>'
           f'<th class="num">Delivered</th><th class="num">Pending</th><th class="num">Failed</th></tr>{hooks}</table>'
           if hooks else '<p class="muted">No webhooks (mlpack collector add-webhook URL).</p>')
        + "</section>"
    )
    return _render("mlpack alerts", body, None)


def not_found_page(what: str) -> str:
    return _render("Not found", f"<section><p>{escape(what)}</p></section>", None)
