"""Drift status on the device: recent windows against the reference profile, offline.

:func:`build_status` merges the windows of a period and scores every feature and the
predictions with :mod:`.drift` (PSI, JS, status from the manifest's thresholds), and
flags jumps the PSI cannot see: a missing rate above the profile's by more than
``missing_jump``, values outside the training range or unseen categories above
``out_of_range``. The same report feeds ``<model> status`` (text or ``--json``) and
the local ``/metrics`` endpoint (:func:`render_metrics`, Prometheus text format).
"""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

from mlpack_edge.monitor_agent._prom import family
from mlpack_edge.monitor_agent.drift import Thresholds, classify
from mlpack_edge.monitor_agent.histogram import ALPHA
from mlpack_edge.monitor_agent.profile import CategoricalProfile, FeatureProfile, Profile
from mlpack_edge.monitor_agent.wire import BinCounts, Window, merge_windows

__all__ = ["FeatureStatus", "StatusReport", "build_status", "render_text", "render_metrics"]

_RANK = {"no-data": 0, "ok": 1, "warn": 2, "drift": 3}
_CODE = {"no-data": -1, "ok": 0, "warn": 1, "drift": 2}


@dataclass
class FeatureStatus:
    name: str
    kind: str
    count: int  # values present (binned)
    psi: float
    js: float
    status: str  # ok | warn | drift | no-data (PSI grade, raised to warn by a flag)
    missing_rate: float | None
    reference_missing_rate: float
    out_of_range_rate: float | None  # numeric: below/above the training range; categorical: unseen
    flags: list[str] = field(default_factory=list)


@dataclass
class StatusReport:
    model: str
    name: str
    version: str
    since: float
    until: float
    windows: int
    requests: int
    rows: int
    errors: dict[str, int]
    latency: dict[str, float | None]  # p50/p95/p99 seconds, within ``latency_error``
    latency_error: float
    features: list[FeatureStatus]
    prediction: FeatureStatus | None
    status: str
    outbox: dict[str, int] | None = None
    #: Production KPIs from ground-truth feedback (:mod:`.kpi`); ``None`` when the model has
    #: no KPI reference and no labels arrived.
    production: dict[str, Any] | None = None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def _score(ref: FeatureProfile, counts: BinCounts | None, thresholds: Thresholds) -> FeatureStatus:
    counts = counts or BinCounts([0] * ref.n_bins)
    present = counts.total
    if isinstance(ref, CategoricalProfile):
        seen = present + counts.unseen
        odd = counts.unseen
    else:
        seen = present
        odd = counts.below + counts.above
    total = seen + counts.missing
    missing_rate = counts.missing / total if total else None
    oor = odd / seen if seen else None
    score = classify(list(ref.shares), counts.bins, thresholds)
    flags = []
    if missing_rate is not None and missing_rate - ref.missing_rate > thresholds.missing_jump:
        flags.append("missing")
    if oor is not None and oor > thresholds.out_of_range:
        flags.append("unseen" if isinstance(ref, CategoricalProfile) else "out-of-range")
    status = score.status
    if flags and _RANK[status] < _RANK["warn"]:
        status = "warn"
    return FeatureStatus(
        name=ref.name,
        kind=ref.kind,
        count=present,
        psi=score.psi,
        js=score.js,
        status=status,
        missing_rate=missing_rate,
        reference_missing_rate=ref.missing_rate,
        out_of_range_rate=oor,
        flags=flags,
    )


def build_status(
    model: str,
    name: str,
    version: str,
    profile: Profile,
    thresholds: Thresholds,
    windows: Sequence[Window],
    since: float,
    until: float | None = None,
    outbox: dict[str, int] | None = None,
    kpi_ref: Mapping[str, Any] | None = None,
    min_labels: int | None = None,
) -> StatusReport:
    """Score the merged ``windows`` of ``model`` (all between ``since`` and ``until``)."""
    from mlpack_edge.monitor_agent.kpi import DEFAULT_MIN_LABELS, production_kpis

    until = time.time() if until is None else until
    merged = merge_windows(windows) if windows else Window(model=model, seq=0, start=since, end=until)
    feats = [_score(f, merged.features.get(f.name), thresholds) for f in profile.features]
    pred = None if profile.prediction is None else _score(profile.prediction, merged.predictions, thresholds)
    ranks = [f.status for f in feats] + ([pred.status] if pred else [])
    overall = max(ranks, key=_RANK.__getitem__, default="no-data")
    lat = merged.latency
    return StatusReport(
        model=model,
        name=name,
        version=version,
        since=since,
        until=until,
        windows=sum(w.merged_count for w in windows),
        requests=merged.requests,
        rows=merged.rows,
        errors=dict(sorted(merged.errors.items())),
        latency={f"p{int(q * 100)}": lat.quantile(q) for q in (0.5, 0.95, 0.99)},
        latency_error=ALPHA,
        features=feats,
        prediction=pred,
        status=overall,
        outbox=outbox,
        production=production_kpis(merged.feedback, kpi_ref, DEFAULT_MIN_LABELS if min_labels is None else min_labels)
        if kpi_ref is not None or merged.feedback is not None
        else None,
    )


# --------------------------------------------------------------------------- rendering


def _pct(x: float | None) -> str:
    return "-" if x is None else f"{100 * x:.1f}%"


def _ms(x: float | None) -> str:
    return "-" if x is None else f"{x * 1000:.3g} ms"


def _when(t: float) -> str:
    return time.strftime("%Y-%m-%d %H:%M", time.gmtime(t))


def render_text(report: StatusReport) -> str:
    """The human view of ``<model> status``."""
    r = report
    errors = " ".join(f"{k}={v}" for k, v in r.errors.items()) or "none"
    lines = [
        f"{r.name} {r.version}  model {r.model[:12]}  {_when(r.since)} -> {_when(r.until)} UTC",
        f"requests {r.requests}  rows {r.rows}  errors {errors}",
        f"latency p50 {_ms(r.latency['p50'])}  p95 {_ms(r.latency['p95'])}  p99 {_ms(r.latency['p99'])}"
        f"  (within {r.latency_error:.0%})",
        f"overall: {r.status.upper()}",
        "",
        f"{'feature':<24} {'n':>8} {'psi':>7} {'js':>7}  {'status':<8} {'missing':>8} {'(ref)':>8} {'out/unseen':>10}  flags",
    ]
    for f in r.features + ([r.prediction] if r.prediction else []):
        lines.append(
            f"{f.name[:24]:<24} {f.count:>8} {f.psi:>7.3f} {f.js:>7.3f}  {f.status:<8} "
            f"{_pct(f.missing_rate):>8} {'(' + _pct(f.reference_missing_rate) + ')':>8} "
            f"{_pct(f.out_of_range_rate):>10}  {','.join(f.flags) or '-'}"
        )
    if r.production is not None:
        lines += ["", *render_production(r.production)]
    if r.outbox is not None:
        o = r.outbox
        lines += [
            "",
            f"outbox: {o['pending']} pending, {o['delivered']} delivered, {o['merged']} merged, "
            f"{o['dropped']} dropped, {o['dead_letter']} dead-letter (of {o['produced']} produced)",
        ]
    return "\n".join(lines)


def render_metrics(report: StatusReport) -> str:
    """Prometheus text exposition of a status report (for the device's ``/metrics``)."""
    r = report
    base = {"model": r.name, "version": r.version}
    out: list[str] = []

    def metric(name: str, help_text: str, samples: list[tuple[dict[str, str], float | int | None]]) -> None:
        out.extend(family(name, "gauge", help_text, [({**base, **labels}, v) for labels, v in samples]))

    feats = r.features
    metric("mlpack_drift_psi", "PSI of recent traffic against the reference profile",
           [({"feature": f.name}, f.psi) for f in feats])
    metric("mlpack_drift_js", "Jensen-Shannon divergence (bits) against the reference profile",
           [({"feature": f.name}, f.js) for f in feats])
    metric("mlpack_drift_status", "Drift status: -1 no data, 0 ok, 1 warn, 2 drift",
           [({"feature": f.name}, _CODE[f.status]) for f in feats])
    metric("mlpack_feature_missing_rate", "Share of missing values", [({"feature": f.name}, f.missing_rate) for f in feats])
    metric("mlpack_feature_out_of_range_rate", "Share outside the training range, or unseen categories",
           [({"feature": f.name}, f.out_of_range_rate) for f in feats])
    if r.prediction is not None:
        p = r.prediction
        metric("mlpack_prediction_psi", "PSI of predictions against the reference", [({}, p.psi)])
        metric("mlpack_prediction_js", "Jensen-Shannon divergence of predictions", [({}, p.js)])
        metric("mlpack_prediction_drift_status", "Prediction drift status", [({}, _CODE[p.status])])
    metric("mlpack_drift_overall_status", "Worst drift status over features and predictions", [({}, _CODE[r.status])])
    metric("mlpack_recent_requests", "Requests in the status period", [({}, r.requests)])
    metric("mlpack_recent_rows", "Rows in the status period", [({}, r.rows)])
    metric("mlpack_recent_errors", "Failed requests in the status period",
           [({"kind": k}, v) for k, v in r.errors.items()])
    metric("mlpack_recent_latency_seconds", f"Request latency quantiles (relative error {r.latency_error})",
           [({"quantile": str(int(q[1:]) / 100)}, v) for q, v in r.latency.items()])
    if r.outbox is not None:
        metric("mlpack_outbox_windows", "Telemetry windows by where they went",
               [({"state": k}, v) for k, v in r.outbox.items() if k != "dropped_rows"])
    if r.production is not None:
        prod = r.production
        metric("mlpack_feedback_labels", "Ground-truth labels in the status period by outcome",
               [({"outcome": k}, v) for k, v in prod["feedback"].items() if k != "labels"])
        gates = [g for g in prod.get("gates") or [] if g["production"] is not None]
        metric("mlpack_production_gate_value", "A gate's metric measured on labelled production traffic",
               [({"gate": str(g["gate"])}, g["production"]) for g in gates])
        metric("mlpack_production_gate_failing", "1 when a gate fails with at least min_labels labels behind it",
               [({"gate": str(g["gate"])}, int(g["status"] == "fail")) for g in gates])
    return "\n".join(out) + "\n"


def _num(x: Any) -> str:
    return "-" if x is None else f"{x:.4f}"


def render_production(p: Mapping[str, Any]) -> list[str]:
    """Production KPIs as text lines (``status``)."""
    fb = p["feedback"]
    lines = [
        f"production (ground truth): {fb['labels']} labels, {fb['matched']} matched, {fb['unmatched']} unmatched,"
        f" {fb['late']} late, {fb['duplicate']} duplicate, {fb['unknown_label']} unknown label"
    ]
    if p.get("task") == "regression":
        lines.append(f"  mae {_num(p.get('mae'))}  rmse {_num(p.get('rmse'))}  bias {_num(p.get('bias'))}  (n {p.get('labelled', 0)})")
    elif "per_class" in p:
        lines.append(f"  accuracy {_num(p.get('accuracy'))}  macro precision {_num(p['macro']['precision'])}"
                     f"  macro recall {_num(p['macro']['recall'])}  macro f1 {_num(p['macro']['f1'])}  (n {p['labelled']})")
        lines.append(f"  {'class':<20} {'precision':>9} {'recall':>9} {'f1':>9} {'support':>8}")
        for c, v in p["per_class"].items():
            lines.append(f"  {c[:20]:<20} {v['precision']:>9.4f} {v['recall']:>9.4f} {v['f1']:>9.4f} {v['support']:>8}")
    for g in p.get("gates") or []:
        ci = g["interval"]
        interval = f"  95% CI [{ci[0]:.4f}, {ci[1]:.4f}]" if ci else ""
        lines.append(
            f"  gate {g['gate']}: production {_num(g['production'])} (n {g['n']}){interval}, build {_num(g['build'])}"
            f" -> {g['status'].upper()}"
        )
    return lines
