"""Production KPIs at the collector: merged ground-truth counts per version, per device, over time.

Devices join labels to their predictions and upload counts (the window's ``feedback``
section, :mod:`mlpack_edge.monitor_agent.wire`); ingest copies each section into the
``feedback`` table. Here they are added up -- per model version fleet-wide, per device
on that version, and per chart bucket -- and judged by :mod:`mlpack_edge.monitor_agent.kpi`
(the same code as ``<model> status`` on the device) against the version's gates and the
values measured at build time (``model_kpi``, from the manifest).

A gate that fails over the range with at least ``min_labels`` labelled predictions
behind it is a ``production_gate`` alert: *critical* when the 95 % Wilson interval
lies wholly on the failing side, *warning* otherwise (or when the metric has no
single-denominator interval: macro and F1 values).
"""

from __future__ import annotations

import json
from collections import defaultdict
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from mlpack_edge.monitor_agent.kpi import DEFAULT_MIN_LABELS, production_kpis
from mlpack_edge.monitor_agent.wire import Feedback

if TYPE_CHECKING:
    from mlpack_edge.collector.models import ModelInfo
    from mlpack_edge.collector.queries import TimeRange
    from mlpack_edge.collector.storage import Storage

__all__ = ["production", "gate_alerts"]


def production(
    storage: Storage,
    rng: TimeRange,
    models: Mapping[str, ModelInfo],
    *,
    model: str | None = None,
    device: str | None = None,
    min_labels: int = DEFAULT_MIN_LABELS,
) -> list[dict[str, Any]]:
    """One entry per model version with labels in ``rng`` (or a KPI reference and ``model`` asked for).

    ``{"model": {hash, name, version}, "kpi": {...fleet-wide...}, "devices": {name: {...}},
    "series": [{"t", "labelled", "<gate metric>": value, ...}]}``.
    """
    refs = storage.model_kpis()
    total: dict[str, Feedback] = {}
    per_device: dict[str, dict[str, Feedback]] = defaultdict(dict)
    per_bucket: dict[str, dict[int, Feedback]] = defaultdict(dict)
    for dev, h, start, body in storage.feedback(rng.start, rng.end, model=model, device=device):
        fb = Feedback.from_dict(json.loads(body), "feedback")
        _add(total, h, fb)
        _add(per_device[h], dev, fb)
        _add(per_bucket[h], int(start // rng.bucket) * rng.bucket, fb)
    hashes = set(total) | ({model} if model is not None and model in refs else set())
    out = []
    for h in hashes:
        m = models.get(h)
        if m is None:
            continue
        ref = refs.get(h)
        kpi = production_kpis(total.get(h), ref, min_labels)
        series = []
        for t in sorted(per_bucket.get(h, {})):
            k = production_kpis(per_bucket[h][t], ref, min_labels)
            point: dict[str, Any] = {"t": t, "labelled": k.get("labelled", 0), "labels": k["feedback"]["labels"]}
            for g in k["gates"]:
                point[g["gate"]] = g["production"]
            series.append(point)
        out.append({
            "model": {"hash": h, "name": m.name, "version": m.version},
            "kpi": kpi,
            "devices": {d: production_kpis(fb, ref, min_labels) for d, fb in sorted(per_device.get(h, {}).items())},
            "series": series,
        })
    out.sort(key=lambda e: (e["model"]["name"], e["model"]["version"], e["model"]["hash"]))
    return out


def _add(into: dict[Any, Feedback], key: Any, fb: Feedback) -> None:
    mine = into.get(key)
    if mine is None:
        into[key] = mine = Feedback()
    mine.add(fb)


def _breach_message(label: str, g: Mapping[str, Any]) -> str:
    ci = g["interval"]
    interval = f", 95% CI [{ci[0]:.3f}, {ci[1]:.3f}]" if ci else ""
    build = f"; {g['build']:.3f} at build" if isinstance(g.get("build"), (int, float)) else ""
    return (
        f"{label}: production {g['measured_as']} {g['production']:.3f} (n {g['n']}{interval}) fails gate "
        f"{g['gate']}{build}"
    )


def gate_alerts(entries: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """``production_gate`` alerts for the failing gates of :func:`production` entries (fleet-wide and per device)."""
    alerts: list[dict[str, Any]] = []
    for e in entries:
        m = e["model"]
        label = f"{m['name']} {m['version']}"
        scopes = [(None, e["kpi"])] + list(e["devices"].items())
        for dev, kpi in scopes:
            for g in kpi.get("gates") or []:
                if g["status"] != "fail":
                    continue
                alerts.append({
                    "severity": "critical" if g["certain"] else "warning",
                    "kind": "production_gate",
                    "model": m["hash"],
                    "device": dev,
                    "feature": g["metric"],
                    "message": _breach_message(label if dev is None else f"{dev} on {label}", g),
                })
    return alerts
