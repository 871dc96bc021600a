"""The rollout view of the fleet page: each rollout's stages, devices per state, shadow agreement
and the reason for any halt, from the same documents ``GET /api/v1/rollouts`` returns."""

from __future__ import annotations

from collections.abc import Sequence
from html import escape
from typing import Any

from mlpack_edge.collector._fmt import utc
from mlpack_edge.collector.page import _device_link, _render, _status

__all__ = ["rollouts_page"]

_STATE_CLASS = {"active": "ok", "completed": "ok", "paused": "warn", "failed": "drift", "aborted": "warn"}


def _agreement(v: float | None) -> str:
    return "–" if v is None else f"{v * 100:.1f} %"


def _ms(v: float | None) -> str:
    return "–" if v is None else f"{v:.2f}"


def _live(w: dict[str, Any] | None) -> str:
    """The shadow figures from telemetry windows: rows, agreement, score diffs, both p95s."""
    if not w:
        return '<td class="num">–</td>' * 5
    return (f'<td class="num">{w["rows"]}</td><td class="num">{_agreement(w["agreement"])}</td>'
            f'<td class="num">{w["max_abs_diff"]:.3g} / {w["mean_abs_diff"]:.3g}</td>'
            f'<td class="num">{_ms(w["candidate_p95_ms"])} / {_ms(w["current_p95_ms"])}</td>'
            f'<td class="num">{w["dropped"]}</td>')


def _stage(st: dict[str, Any]) -> str:
    counts = ", ".join(f"{n} {escape(k)}" for k, n in sorted(st["counts"].items())) or "no devices"
    devices = "".join(
        f"<tr><td>{_device_link(d['device'])}</td><td>{escape(d['state'])}</td>"
        f"<td>{'–' if d['since'] is None else utc(d['since'])}</td>"
        f"<td class=\"num\">{_agreement((d['detail'].get('shadow') or {}).get('agreement'))}</td>"
        f"{_live(d.get('shadow_windows'))}"
        f"<td>{escape(str(d['detail'].get('reason') or ''))}</td></tr>"
        for d in st["devices"]
    )
    mark = "" if st["started"] else ' <span class="muted">(not started)</span>'
    live = st.get("shadow_windows")
    windows = "" if not live else (
        f" · shadow windows: {live['rows']} rows, agreement {_agreement(live['agreement'])}, max/mean abs diff "
        f"{live['max_abs_diff']:.3g}/{live['mean_abs_diff']:.3g}, p95 {_ms(live['candidate_p95_ms'])} vs "
        f"{_ms(live['current_p95_ms'])} ms")
    return (f"<h4>Stage {st['stage']} · {st['percent']:g} %{mark} · {counts} · lowest shadow agreement "
            f"{_agreement(st.get('agreement'))}{windows}</h4>"
            + (f"<table><tr><th>Device</th><th>State</th><th>Since</th><th class=\"num\">Agreement</th>"
               f"<th class=\"num\">Shadow rows</th><th class=\"num\">Window agreement</th>"
               f"<th class=\"num\">Abs diff max / mean</th><th class=\"num\">p95 ms candidate / current</th>"
               f"<th class=\"num\">Skipped</th>"
               f"<th>Reason</th></tr>{devices}</table>" if devices else ""))


def rollouts_page(rollouts: Sequence[dict[str, Any]]) -> str:
    if not rollouts:
        body = ('<p class="muted">No rollouts yet: <code>mlpack publish BUNDLE</code>, then '
                "<code>mlpack rollout start MODEL VERSION</code>.</p>")
        return _render("Rollouts", body, None)
    parts = []
    for r in rollouts:
        rel = r["release"]
        halt = f'<p class="alert">Halted: {escape(r["reason"])}</p>' if r.get("reason") else ""
        parts.append(
            f'<section class="rollout" id="{escape(r["id"])}"><h2>{escape(r["model"])} {escape(str(rel.get("version")))} '
            f'{_status(_STATE_CLASS.get(r["state"], "warn"))} {escape(r["state"])}</h2>'
            f'<p class="muted">{escape(r["id"])} · started {utc(r["created_at"])} · stage {r["stage"]} of '
            f'{len(r["stages"])} · {r["targets"]} devices targeted · hold {r["plan"]["hold"]:g} s · shadow '
            f'{r["plan"]["shadow"]:g} s · agreement floor {r["plan"]["agreement_floor"]:g}</p>{halt}'
            + "".join(_stage(st) for st in r["stages"]) + "</section>"
        )
    return _render("Rollouts", "".join(parts), None)
