"""Charts as inline SVG, drawn server-side: pages and model cards need no script and no network.

Shared by the collector (fleet page) and the builder (model card), which must not import each other."""

from __future__ import annotations

import math
import time
from collections.abc import Sequence
from html import escape

__all__ = ["PALETTE", "line_chart"]

PALETTE = ("#1f77b4", "#d62728", "#2ca02c", "#9467bd", "#ff7f0e", "#17becf", "#8c564b", "#e377c2", "#7f7f7f", "#bcbd22")

Point = tuple[float, float | None]


def _nice_max(v: float) -> float:
    if v <= 0 or not math.isfinite(v):
        return 1.0
    exp = 10 ** math.floor(math.log10(v))
    for m in (1, 2, 2.5, 5, 10):
        if v <= m * exp:
            return m * exp
    return 10 * exp


def _fmt(v: float) -> str:
    if v == 0:
        return "0"
    if abs(v) >= 1000:
        return f"{v / 1000:g}k"
    return f"{v:.3g}"


def _time_label(t: float, span: float) -> str:
    return time.strftime("%H:%M" if span <= 2 * 86400 else "%d %b", time.gmtime(t))


def line_chart(
    chart_id: str,
    title: str,
    series: Sequence[tuple[str, Sequence[Point]]],
    x_range: tuple[float, float],
    unit: str = "",
    thresholds: Sequence[tuple[float, str]] = (),
    width: int = 560,
    height: int = 220,
) -> str:
    """An SVG line chart; ``None`` values break a line. ``thresholds`` draw dashed guides."""
    left, right, top, bottom = 52, 24, 26, 40
    pw, ph = width - left - right, height - top - bottom
    x0, x1 = x_range
    span = max(x1 - x0, 1.0)
    ys = [y for _, pts in series for _, y in pts if y is not None]
    ymax = _nice_max(max([*ys, *(t for t, _ in thresholds), 0.0]) * 1.05)

    def sx(x: float) -> float:
        return left + (x - x0) / span * pw

    def sy(y: float) -> float:
        return top + ph - min(y, ymax) / ymax * ph

    parts = [
        f'<svg xmlns="http://www.w3.org/2000/svg" class="chart" id="chart-{escape(chart_id)}" '
        f'data-chart="{escape(chart_id)}" viewBox="0 0 {width} {height}" width="{width}" height="{height}" role="img" '
        f'aria-label="{escape(title)}">',
        f"<title>{escape(title)}</title>",
        f'<text x="{left}" y="16" class="chart-title">{escape(title)}</text>',
    ]
    for i in range(5):
        v = ymax * i / 4
        y = sy(v)
        parts.append(f'<line x1="{left}" x2="{left + pw}" y1="{y:.1f}" y2="{y:.1f}" class="grid"/>')
        parts.append(f'<text x="{left - 6}" y="{y + 4:.1f}" class="tick" text-anchor="end">{_fmt(v)}{escape(unit)}</text>')
    for i in range(5):
        t = x0 + span * i / 4
        parts.append(
            f'<text x="{sx(t):.1f}" y="{top + ph + 16}" class="tick" text-anchor="middle">{_time_label(t, span)}</text>'
        )
    for k, (value, label) in enumerate(thresholds):
        y = sy(value)
        parts.append(f'<line x1="{left}" x2="{left + pw}" y1="{y:.1f}" y2="{y:.1f}" class="threshold"/>')
        lx = left + pw - 2 - 64 * k  # side by side, so close thresholds stay readable
        parts.append(f'<text x="{lx}" y="{y - 3:.1f}" class="tick" text-anchor="end">{escape(label)}</text>')
    if not ys:
        parts.append(f'<text x="{left + pw / 2}" y="{top + ph / 2}" class="empty" text-anchor="middle">no data in range</text>')
    legend_x = left
    for k, (name, pts) in enumerate(series):
        colour = PALETTE[k % len(PALETTE)]
        runs: list[list[str]] = [[]]
        for x, y in pts:
            if y is None:
                runs.append([])
            else:
                runs[-1].append(f"{sx(x):.1f},{sy(y):.1f}")
        for run in runs:
            if len(run) == 1:
                cx, cy = run[0].split(",")
                parts.append(f'<circle cx="{cx}" cy="{cy}" r="2.5" fill="{colour}" data-series="{escape(name)}"/>')
            elif run:
                parts.append(
                    f'<polyline fill="none" stroke="{colour}" stroke-width="1.8" points="{" ".join(run)}" '
                    f'data-series="{escape(name)}"/>'
                )
        ly = height - 8
        parts.append(f'<rect x="{legend_x}" y="{ly - 8}" width="10" height="10" fill="{colour}"/>')
        parts.append(f'<text x="{legend_x + 14}" y="{ly + 1}" class="legend">{escape(name)}</text>')
        legend_x += 24 + 7 * len(name)
    parts.append("</svg>")
    return "".join(parts)
