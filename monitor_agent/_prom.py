"""The device's one Prometheus text formatter (exposition format 0.0.4), for ``serve``'s
``/metrics`` (:mod:`mlpack_edge.runtime.metrics`) and the drift status exporter
(:func:`mlpack_edge.monitor_agent.status.render_metrics`).

Why not ``prometheus_client`` here, as on the collector: importing it costs ~50 ms and
pulls in ~110 standard-library modules (http.server, email, ssl, urllib, wsgiref) that the
device never otherwise loads, into an executable whose budget is 36 MB and whose
start-up is measured; the device only ever *writes* a handful of families, which takes
the few lines below. Its output is checked with ``prometheus_client``'s own parser in
the tests.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence

__all__ = ["CONTENT_TYPE", "Sample", "family", "lines", "histogram", "label_value", "number"]

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
#: One sample: its labels (in the order given) and its value; ``None`` values are skipped.
Sample = tuple[Mapping[str, object], float | int | None]


def label_value(value: object) -> str:
    """A label value escaped as the text format requires (backslash, quote, newline)."""
    return str(value).replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')


def number(value: float | int) -> str:
    """Integers as written, floats exactly (shortest repr), non-finite as NaN/+Inf/-Inf."""
    if isinstance(value, bool):
        return str(int(value))
    if isinstance(value, int):
        return str(value)
    v = float(value)
    if math.isnan(v):
        return "NaN"
    if math.isinf(v):
        return "+Inf" if v > 0 else "-Inf"
    return repr(v)


def _help(name: str, kind: str, help_text: str) -> list[str]:
    text = help_text.replace("\\", "\\\\").replace("\n", " ")
    return [f"# HELP {name} {text}", f"# TYPE {name} {kind}"]


def family(name: str, kind: str, help_text: str, samples: Iterable[Sample]) -> list[str]:
    """``# HELP``/``# TYPE`` lines and one line per sample of a counter or gauge ``name``
    (a counter's name ends in ``_total``)."""
    return _help(name, kind, help_text) + lines(name, samples)


def lines(name: str, samples: Iterable[Sample]) -> list[str]:
    """Sample lines only (for the ``_bucket``/``_sum``/``_count`` lines of a histogram)."""
    out = []
    for labels, value in samples:
        if value is None:
            continue
        if labels:
            body = ",".join(f'{k}="{label_value(v)}"' for k, v in labels.items())
            out.append(f"{name}{{{body}}} {number(value)}")
        else:
            out.append(f"{name} {number(value)}")
    return out


def histogram(name: str, help_text: str, bounds: Sequence[float], cumulative: Sequence[int], total: float,
              labels: Mapping[str, object] | None = None) -> list[str]:
    """A histogram family: ``cumulative[i]`` observations <= ``bounds[i]``, the last for +Inf."""
    base = dict(labels or {})
    out = _help(name, "histogram", help_text)
    les = [repr(float(b)) for b in bounds] + ["+Inf"]
    out += lines(f"{name}_bucket", [({**base, "le": le}, n) for le, n in zip(les, cumulative)])
    out += lines(f"{name}_sum", [(base, total)])
    out += lines(f"{name}_count", [(base, cumulative[-1] if cumulative else 0)])
    return out
