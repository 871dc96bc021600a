"""Drift status on the device: recent windows against the reference profile, offline.

:func:`build_status` merges the windows of a period and scores every feature and the
predictions with :mod:`.drift` (PSI, JS, status from the manifest's thresholds), and
flags jumps the PSI cannot see: a missing rate above the profile's by more than
``missing_jump``, values outside the training range or unseen categories above
``out_of_range`` (each significantly so: a Poisson tail test at the drift test's level). Verdicts are sample-size aware (see :mod:`.drift`): each feature carries its chi-square
test (statistic, degrees of freedom, p-value against ``alpha`` over the number of
features and prediction) and its count ``n``; below ``min_count`` it says "not enough
data (n of N)" instead of a status. The same report feeds ``<model> status`` (text or ``--json``) and
the local ``/metrics`` endpoint (:func:`render_metrics`, Prometheus text format).
"""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

from mlpack_edge.monitor_agent._prom import family
from mlpack_edge.monitor_agent.drift import STATUSES, Thresholds, classify, present_count, rate_exceeds
from mlpack_edge.monitor_agent.histogram import ALPHA
from mlpack_edge.monitor_agent.profile import CategoricalProfile, FeatureProfile, Profile
from mlpack_edge.monitor_agent.wire import BinCounts, Window, merge_windows

__all__ = ["FeatureStatus", "StatusReport", "build_status", "render_text", "render_metrics", "reference_count", "verdict"]

_RANK = {s: i for i, s in enumerate(STATUSES)}
_CODE = {"no-data": -1, "not-enough-data": -2, "ok": 0, "warn": 1, "drift": 2}


@dataclass
class FeatureStatus:
    name: str
    kind: str
    count: int  # values present (binned)
    psi: float
    js: float
    status: str  # ok | warn | drift | not-enough-data | no-data (raised to warn by a flag)
    missing_rate: float | None
    reference_missing_rate: float
    out_of_range_rate: float | None  # numeric: below/above the training range; categorical: unseen
    flags: list[str] = field(default_factory=list)
    min_count: int = 0  # the fewest values for a verdict
    test: str = "chi2"  # two-sample Pearson chi-square on the (pooled) bin counts
    statistic: float | None = None
    df: int | None = None
    p_value: float | None = None
    alpha: float | None = None  # the level p_value is held against (alpha / number of tests)
    reference: list[float] = field(default_factory=list)  # reference shares per bin
    observed: list[int] = field(default_factory=list)  # observed counts per bin
    labels: list[str] = field(default_factory=list)  # bin labels (categories, or value ranges)


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
    thresholds: dict[str, float] | None = None
    #: Production KPIs from ground-truth feedback (:mod:`.kpi`); ``None`` when the model has
    #: no KPI reference and no labels arrived.
    production: dict[str, Any] | None = None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def reference_count(ref: FeatureProfile) -> int:
    """How many values the reference shares were computed from (the non-missing ones)."""
    return present_count(ref.count, ref.missing_rate)


def verdict(status: str, n: int, min_count: int) -> str:
    """The status as a user reads it: "not enough data (n of N)" instead of a bare code."""
    return f"not enough data ({n} of {min_count})" if status == "not-enough-data" else status


def bin_labels(ref: FeatureProfile) -> list[str]:
    """One label per bin: the category, or the value range of a numeric bin."""
    if isinstance(ref, CategoricalProfile):
        return list(ref.categories)
    e = [f"{x:.4g}" for x in ref.edges]
    if not e:
        return ["all"]
    return [f"< {e[0]}"] + [f"{a} – {b}" for a, b in zip(e, e[1:])] + [f">= {e[-1]}"]


def _score(ref: FeatureProfile, counts: BinCounts | None, thresholds: Thresholds, n_tests: int) -> FeatureStatus:
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
    score = classify(
        list(ref.shares),
        counts.bins,
        thresholds,
        reference_count=reference_count(ref),
        n_tests=n_tests,
        ordered=not isinstance(ref, CategoricalProfile),
    )
    # Flags are rates too: each must be significantly above its threshold (same level as
    # the drift test), so one odd value among a few dozen is not a warning.
    level = thresholds.alpha / max(1, n_tests)
    flags = []
    if missing_rate is not None and rate_exceeds(
        counts.missing, total, min(1.0, ref.missing_rate + thresholds.missing_jump), level
    ):
        flags.append("missing")
    if oor is not None and rate_exceeds(odd, seen, thresholds.out_of_range, level):
        flags.append("unseen" if isinstance(ref, CategoricalProfile) else "out-of-range")
    status = score.status
    if flags and total >= score.min_count and _RANK[status] < _RANK["warn"]:
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
        min_count=score.min_count,
        test=score.test,
        statistic=score.statistic,
        df=score.df,
        p_value=score.p_value,
        alpha=score.alpha,
        reference=[float(x) for x in ref.shares],
        observed=[int(x) for x in counts.bins],
        labels=bin_labels(ref),
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
    n_tests = len(profile.features) + (profile.prediction is not None)
    feats = [_score(f, merged.features.get(f.name), thresholds, n_tests) for f in profile.features]
    pred = None if profile.prediction is None else _score(profile.prediction, merged.predictions, thresholds, n_tests)
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
        thresholds=thresholds.to_dict(),
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


def _p(x: float | None) -> str:
    return "-" if x is None else f"{x:.2g}"


def _overall(r: StatusReport) -> str:
    if r.status != "not-enough-data":
        return r.status.upper()
    scored = r.features + ([r.prediction] if r.prediction else [])
    low = min((f for f in scored if f.status == "not-enough-data"), key=lambda f: f.count, default=None)
    return "NOT ENOUGH DATA" + ("" if low is None else f" ({low.count} of {low.min_count})")


def side_by_side(f: FeatureStatus) -> list[str]:
    """Reference and current distribution of one feature, bin by bin (shares, counts, bars)."""
    n = sum(f.observed)
    lines = [f"  {f.name}: reference vs current (n={n})"]
    width = max((len(lbl) for lbl in f.labels), default=3)
    width = min(max(width, 3), 28)
    for lbl, ref, obs in zip(f.labels, f.reference, f.observed):
        cur = obs / n if n else 0.0
        lines.append(
            f"    {lbl[:width]:<{width}} {100 * ref:>6.1f}% {'#' * round(20 * ref):<20} "
            f"{100 * cur:>6.1f}% {'#' * round(20 * cur):<20} ({obs})"
        )
    return lines


def render_text(report: StatusReport) -> str:
    """The human view of ``<model> status``."""
    r = report
    errors = " ".join(f"{k}={v}" for k, v in r.errors.items()) or "none"
    lines = [
        f"{r.name} {r.version}  model {r.model[:12]}  {_when(r.since)} -> {_when(r.until)} UTC",
        f"requests {r.requests}  rows {r.rows}  errors {errors}",
        f"latency p50 {_ms(r.latency['p50'])}  p95 {_ms(r.latency['p95'])}  p99 {_ms(r.latency['p99'])}"
        f"  (within {r.latency_error:.0%})",
        f"overall: {_overall(r)}",
    ]
    scored = r.features + ([r.prediction] if r.prediction else [])
    t = r.thresholds
    if t is not None:
        level = t["alpha"] / max(1, len(scored))
        lines.append(
            f"drift = PSI >= {t['psi_drift']:g} (warn {t['psi_warn']:g}) and chi-square p < {_p(level)} "
            f"(alpha {t['alpha']:g} over {len(scored)} tests); a verdict needs n >= {int(t['min_count'])}"
        )
    lines += [
        "",
        f"{'feature':<24} {'n':>8} {'psi':>7} {'js':>7} {'chi2':>8} {'df':>3} {'p':>8} "
        f"{'missing':>8} {'(ref)':>8} {'out/unseen':>10}  {'flags':<14} status",
    ]
    for f in scored:
        stat = "-" if f.statistic is None else f"{f.statistic:.1f}"
        lines.append(
            f"{f.name[:24]:<24} {f.count:>8} {f.psi:>7.3f} {f.js:>7.3f} {stat:>8} {f.df if f.df is not None else '-':>3} "
            f"{_p(f.p_value):>8} "
            f"{_pct(f.missing_rate):>8} {'(' + _pct(f.reference_missing_rate) + ')':>8} "
            f"{_pct(f.out_of_range_rate):>10}  {','.join(f.flags) or '-':<14} {verdict(f.status, f.count, f.min_count)}"
        )
    moved = [f for f in scored if f.status in ("drift", "warn") and f.observed]
    if moved:
        lines += ["", "drifted features (reference | current):"]
        for f in moved:
            lines += side_by_side(f)
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
    metric("mlpack_drift_status", "Drift status: -2 not enough data, -1 no data, 0 ok, 1 warn, 2 drift",
           [({"feature": f.name}, _CODE[f.status]) for f in feats])
    metric("mlpack_drift_p_value", "p-value of the chi-square test of the binned counts against the reference",
           [({"feature": f.name}, f.p_value) for f in feats])
    metric("mlpack_drift_count", "Values the drift verdict is based on", [({"feature": f.name}, f.count) for f in feats])
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
