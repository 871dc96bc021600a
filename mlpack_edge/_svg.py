"""Charts as inline SVG, drawn server-side: pages and model cards need no script and no network.

Shared by the collector (fleet page) and the builder (model card), which must not import
each other. Output is a pure function of the arguments: coordinates are printed with a
fixed number of decimals, so the same data gives byte-identical SVG (the model card is
hashed into the bundle manifest). Every chart is an ``<svg class="chart" id="chart-ID"
data-chart="ID">`` whose styling comes from :data:`CHART_CSS` (or the page's own CSS).
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Sequence
from html import escape
from itertools import pairwise

__all__ = [
    "PALETTE",
    "CHART_CSS",
    "line_chart",
    "bar_chart",
    "histogram",
    "heatmap",
    "box_chart",
]

PALETTE = ("#1f77b4", "#d62728", "#2ca02c", "#9467bd", "#ff7f0e", "#17becf", "#8c564b", "#e377c2", "#7f7f7f", "#bcbd22")

#: The classes the charts use, for a page that does not define them itself.
CHART_CSS = """
svg.chart { background: #fff; max-width: 100%; height: auto; }
svg .grid { stroke: #e5e8ec; stroke-width: 1; }
svg .axis { stroke: #8c959f; stroke-width: 1; }
svg .threshold { stroke: #c62828; stroke-dasharray: 4 3; stroke-width: 1; }
svg .tick, svg .legend, svg .label { font-size: 10px; fill: #57606a; }
svg .cell { font-size: 11px; fill: #1b1f24; }
svg .cell.dark { fill: #fff; }
svg .chart-title { font-size: 12px; font-weight: 600; fill: #1b1f24; }
svg .empty { font-size: 12px; fill: #8c959f; }
"""

Point = tuple[float, float | None]


def _nice_max(v: float) -> float:
    if v <= 0 or not math.isfinite(v):
        return 1.0
    exp = 10.0 ** math.floor(math.log10(v))
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


def _open(chart_id: str, title: str, width: int, height: int, title_x: float) -> list[str]:
    return [
        (
            f'<svg xmlns="http://www.w3.org/2000/svg" class="chart" id="chart-{escape(chart_id)}" '
            f'data-chart="{escape(chart_id)}" viewBox="0 0 {width} {height}" width="{width}" height="{height}" '
            f'role="img" aria-label="{escape(title)}">'
        ),
        f"<title>{escape(title)}</title>",
        f'<text x="{title_x}" y="16" class="chart-title">{escape(title)}</text>',
    ]


def _clip(text: str, chars: int) -> str:
    return text if len(text) <= chars else text[: max(chars - 1, 1)] + "…"


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
    """An SVG line chart over time; ``None`` values break a line. ``thresholds`` draw dashed guides."""
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

    parts = _open(chart_id, title, width, height, left)
    for i in range(5):
        v = ymax * i / 4
        y = sy(v)
        parts.append(f'<line x1="{left}" x2="{left + pw}" y1="{y:.1f}" y2="{y:.1f}" class="grid"/>')
        parts.append(
            f'<text x="{left - 6}" y="{y + 4:.1f}" class="tick" text-anchor="end">{_fmt(v)}{escape(unit)}</text>'
        )
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
        parts.append(
            f'<text x="{left + pw / 2}" y="{top + ph / 2}" class="empty" text-anchor="middle">no data in range</text>'
        )
    legend_x = left
    for k, (name, pts) in enumerate(series):
        colour = PALETTE[k % len(PALETTE)]
        runs: list[list[str]] = [[]]
        for at, level in pts:
            if level is None:
                runs.append([])
            else:
                runs[-1].append(f"{sx(at):.1f},{sy(level):.1f}")
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


def _percent(v: float) -> str:
    return f"{v * 100:.1f}%"


def bar_chart(
    chart_id: str,
    title: str,
    labels: Sequence[str],
    series: Sequence[tuple[str, Sequence[float]]],
    value_text: Callable[[float], str] = _percent,
    width: int = 300,
    bar: int = 12,
) -> str:
    """Horizontal bars, one row per label, one bar per series (e.g. train and held-out shares).

    The height follows the number of rows, so long category lists stay legible; each bar
    carries its value as text and as a ``<title>`` tooltip.
    """
    label_chars = max(4, min(18, max((len(lb) for lb in labels), default=4)))
    left, right, top = 12 + 6 * label_chars, 44, 26
    legend = 16 if len(series) > 1 else 0
    row = bar * len(series) + 6
    height = top + row * max(len(labels), 1) + 8 + legend
    pw = width - left - right
    vmax = max([v for _, vals in series for v in vals] + [0.0])
    scale = pw / vmax if vmax > 0 else 0.0
    parts = _open(chart_id, title, width, height, 6)
    parts.append(f'<line x1="{left}" x2="{left}" y1="{top - 2}" y2="{top + row * len(labels)}" class="axis"/>')
    for i, label in enumerate(labels):
        y0 = top + i * row
        parts.append(
            f'<text x="{left - 4}" y="{y0 + row / 2 + 3:.1f}" class="label" text-anchor="end">'
            f"{escape(_clip(label, label_chars))}</text>"
        )
        for k, (name, vals) in enumerate(series):
            v = vals[i]
            y = y0 + 3 + k * bar
            w = v * scale
            tip = f"{label}: {value_text(v)}" + (f" ({name})" if len(series) > 1 else "")
            parts.append(
                f'<rect x="{left}" y="{y}" width="{w:.1f}" height="{bar - 1}" fill="{PALETTE[k % len(PALETTE)]}" '
                f'data-label="{escape(label)}" data-series="{escape(name)}"><title>{escape(tip)}</title></rect>'
            )
            parts.append(f'<text x="{left + w + 3:.1f}" y="{y + bar - 3}" class="tick">{escape(value_text(v))}</text>')
    if not labels:
        parts.append(f'<text x="{left + pw / 2}" y="{top + 6}" class="empty" text-anchor="middle">no values</text>')
    if legend:
        lx = left
        for k, (name, _) in enumerate(series):
            parts.append(
                f'<rect x="{lx}" y="{height - 14}" width="10" height="10" fill="{PALETTE[k % len(PALETTE)]}"/>'
            )
            parts.append(f'<text x="{lx + 14}" y="{height - 5}" class="legend">{escape(name)}</text>')
            lx += 24 + 7 * len(name)
    parts.append("</svg>")
    return "".join(parts)


def histogram(
    chart_id: str,
    title: str,
    edges: Sequence[float],
    shares: Sequence[float],
    width: int = 300,
    height: int = 130,
) -> str:
    """Bins of any widths (``len(edges) == len(shares) + 1``), e.g. a profile's quantile bins.

    Quantile bins hold similar shares but differ in width, so each bar's *area* is its
    share: the shape of the distribution shows, not the binning. A bin of zero width (a
    value many rows share, e.g. a 0/1 flag) has no honest density, so then every bin is
    drawn at equal width with its share as height. Tooltips give each bin's range and share.
    """
    left, right, top, bottom = 10, 10, 24, 22
    pw, ph = width - left - right, height - top - bottom
    parts = _open(chart_id, title, width, height, 6)
    lo, hi = (edges[0], edges[-1]) if edges else (0.0, 0.0)
    if not shares or not hi > lo:
        text = "no values" if not shares or sum(shares) == 0 else f"every value is {lo:.4g}"
        parts.append(
            f'<text x="{width / 2}" y="{top + ph / 2}" class="empty" text-anchor="middle">{escape(text)}</text>'
        )
        parts.append("</svg>")
        return "".join(parts)
    bounds = list(pairwise(edges))
    if all(b > a for a, b in bounds):
        heights = [s / (b - a) for s, (a, b) in zip(shares, bounds, strict=True)]
        xs = [(left + (a - lo) / (hi - lo) * pw, left + (b - lo) / (hi - lo) * pw) for a, b in bounds]
    else:
        heights = list(shares)
        xs = [(left + i * pw / len(shares), left + (i + 1) * pw / len(shares)) for i in range(len(shares))]
    hmax = max(heights) or 1.0
    base = top + ph
    for s, h, (x0, x1), (a, b) in zip(shares, heights, xs, bounds, strict=True):
        bar = h / hmax * ph
        rng = f"{a:.4g}" if a == b else f"[{a:.4g}, {b:.4g})"
        parts.append(
            f'<rect x="{x0:.1f}" y="{base - bar:.1f}" width="{x1 - x0:.1f}" height="{bar:.1f}" fill="{PALETTE[0]}" '
            f'stroke="#fff" stroke-width="0.5"><title>{escape(f"{rng}: {_percent(s)}")}</title></rect>'
        )
    parts.append(f'<line x1="{left}" x2="{left + pw}" y1="{base}" y2="{base}" class="axis"/>')
    parts.append(f'<text x="{left}" y="{base + 14}" class="tick">{lo:.4g}</text>')
    parts.append(f'<text x="{left + pw}" y="{base + 14}" class="tick" text-anchor="end">{hi:.4g}</text>')
    parts.append("</svg>")
    return "".join(parts)


def heatmap(
    chart_id: str,
    title: str,
    row_labels: Sequence[str],
    col_labels: Sequence[str],
    counts: Sequence[Sequence[int]],
    axes: tuple[str, str] = ("true", "predicted"),
    cell: int = 52,
) -> str:
    """A matrix of counts (e.g. a confusion matrix), each cell shaded by its share of its row."""
    label_chars = max(3, min(14, max((len(lb) for lb in row_labels), default=3)))
    left, top = 26 + 6 * label_chars, 54
    width = left + cell * len(col_labels) + 10
    height = top + cell * len(row_labels) + 10
    parts = _open(chart_id, title, max(width, 12 + 7 * len(title)), height, 6)
    parts.append(
        f'<text x="{left + cell * len(col_labels) / 2:.1f}" y="32" class="label" text-anchor="middle">'
        f"{escape(axes[1])}</text>"
    )
    cy = top + cell * len(row_labels) / 2
    parts.append(
        f'<text x="10" y="{cy:.1f}" class="label" transform="rotate(-90 10 {cy:.1f})" text-anchor="middle">'
        f"{escape(axes[0])}</text>"
    )
    for j, label in enumerate(col_labels):
        parts.append(
            f'<text x="{left + cell * j + cell / 2:.1f}" y="{top - 6}" class="label" text-anchor="middle">'
            f"{escape(_clip(label, 8))}</text>"
        )
    for i, (label, row) in enumerate(zip(row_labels, counts, strict=True)):
        y = top + cell * i
        parts.append(
            f'<text x="{left - 4}" y="{y + cell / 2 + 4:.1f}" class="label" text-anchor="end">'
            f"{escape(_clip(label, label_chars))}</text>"
        )
        total = sum(row)
        for j, n in enumerate(row):
            share = n / total if total else 0.0
            # white -> PALETTE[0] (31, 119, 180) by share of the row
            r, g, b = (round(255 - (255 - c) * share) for c in (31, 119, 180))
            x = left + cell * j
            tip = f"{axes[0]} {label}, {axes[1]} {col_labels[j]}: {n} ({_percent(share)} of the row)"
            parts.append(
                f'<rect x="{x}" y="{y}" width="{cell - 2}" height="{cell - 2}" fill="#{r:02x}{g:02x}{b:02x}" '
                f'data-row="{i}" data-col="{j}"><title>{escape(tip)}</title></rect>'
            )
            cls = "cell dark" if share > 0.55 else "cell"
            parts.append(
                f'<text x="{x + cell / 2 - 1:.1f}" y="{y + cell / 2 + 3:.1f}" class="{cls}" '
                f'text-anchor="middle">{n}</text>'
            )
    parts.append("</svg>")
    return "".join(parts)


Box = tuple[float, float, float, float, float, float, float]  # x_lo, x_hi, p05, p25, median, p75, p95


def box_chart(
    chart_id: str,
    title: str,
    boxes: Sequence[Box],
    x_label: str,
    width: int = 560,
    height: int = 240,
) -> str:
    """One box per x range (whiskers p05–p95, box p25–p75, median line) around a zero line.

    Used for binned residual plots: a model that is right on average keeps the medians
    on zero in every range of its output.
    """
    left, right, top, bottom = 52, 16, 26, 40
    pw, ph = width - left - right, height - top - bottom
    parts = _open(chart_id, title, width, height, left)
    if not boxes:
        parts.append(f'<text x="{width / 2}" y="{top + ph / 2}" class="empty" text-anchor="middle">no values</text>')
        parts.append("</svg>")
        return "".join(parts)
    x0, x1 = min(b[0] for b in boxes), max(b[1] for b in boxes)
    xspan = (x1 - x0) or 1.0
    ymax = _nice_max(max(max(abs(b[2]), abs(b[6])) for b in boxes) * 1.05)

    def sx(x: float) -> float:
        return left + (x - x0) / xspan * pw

    def sy(y: float) -> float:
        return top + ph / 2 - max(-ymax, min(y, ymax)) / ymax * (ph / 2)

    for i in range(5):
        v = ymax * (i - 2) / 2
        y = sy(v)
        parts.append(f'<line x1="{left}" x2="{left + pw}" y1="{y:.1f}" y2="{y:.1f}" class="grid"/>')
        parts.append(f'<text x="{left - 6}" y="{y + 4:.1f}" class="tick" text-anchor="end">{_fmt(v)}</text>')
    parts.append(f'<line x1="{left}" x2="{left + pw}" y1="{sy(0):.1f}" y2="{sy(0):.1f}" class="axis"/>')
    for k in range(5):
        x = x0 + xspan * k / 4
        parts.append(f'<text x="{sx(x):.1f}" y="{top + ph + 14}" class="tick" text-anchor="middle">{_fmt(x)}</text>')
    parts.append(
        f'<text x="{left + pw / 2}" y="{height - 6}" class="label" text-anchor="middle">{escape(x_label)}</text>'
    )
    colour = PALETTE[0]
    for lo, hi, p05, p25, med, p75, p95 in boxes:
        a, b = sx(lo), sx(hi)
        mid = (a + b) / 2
        w = max((b - a) * 0.7, 3.0)
        tip = f"{_fmt(lo)} to {_fmt(hi)}: median {_fmt(med)}, p25–p75 {_fmt(p25)}…{_fmt(p75)}, p5–p95 {_fmt(p05)}…{_fmt(p95)}"
        parts.append(f'<line x1="{mid:.1f}" x2="{mid:.1f}" y1="{sy(p95):.1f}" y2="{sy(p05):.1f}" stroke="{colour}"/>')
        parts.append(
            f'<rect x="{mid - w / 2:.1f}" y="{sy(p75):.1f}" width="{w:.1f}" height="{max(sy(p25) - sy(p75), 1.0):.1f}" '
            f'fill="{colour}" fill-opacity="0.35" stroke="{colour}"><title>{escape(tip)}</title></rect>'
        )
        parts.append(
            f'<line x1="{mid - w / 2:.1f}" x2="{mid + w / 2:.1f}" y1="{sy(med):.1f}" y2="{sy(med):.1f}" '
            f'stroke="{PALETTE[1]}" stroke-width="2"/>'
        )
    parts.append("</svg>")
    return "".join(parts)
