"""A rollout's shadow figures from the devices' telemetry windows (the ``shadow`` section).

While ``serve`` runs a rollout's candidate beside the serving model it sends the comparison
as a ``shadow`` section of its regular telemetry windows
(:class:`~mlpack_edge.monitor_agent.wire.Shadow`), stored with the window bodies like
every other section. Here they are read back for one device since the rollout started
(windows of other candidates ignored) and merged: agreement, max/mean absolute score
difference, both models' p95 latency and errors, skipped samples. A stage's figures are
its devices' merged. The ``update_shadow`` audit event still carries the final verdict;
these show the phase while it runs, and from the collector's own store.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from typing import Any

from mlpack_edge.monitor_agent.wire import Shadow, WireError

__all__ = ["device_shadow", "merged", "figures"]

_MARK = '"shadow":'


def device_shadow(storage: Any, candidate: str, device: str, since: float, until: float) -> Shadow | None:
    """``device``'s shadow sections for ``candidate`` received in ``[since, until)``, merged."""
    total: Shadow | None = None
    for _, body in storage.windows_received(device, since, until):
        if _MARK not in body:  # most windows: no parse
            continue
        try:
            raw = json.loads(body).get("shadow")
            section = Shadow.from_dict(raw, "shadow") if raw is not None else None
        except (ValueError, WireError):
            continue
        if section is None or section.candidate != candidate:
            continue
        if total is None:
            total = Shadow(candidate)
        total.add(section)
    return total


def merged(sections: Iterable[Shadow | None]) -> Shadow | None:
    total: Shadow | None = None
    for s in sections:
        if s is None:
            continue
        if total is None:
            total = Shadow(s.candidate)
        total.add(s)
    return total


def figures(s: Shadow | None) -> dict[str, Any] | None:
    """The JSON face: agreement, score differences, both p95s (ms), error rates, skipped samples."""
    if s is None:
        return None

    def p95_ms(side: Any) -> float | None:
        q = side.latency.quantile(0.95)
        return None if q is None else round(q * 1000, 4)

    n = max(1, s.inputs)
    return {
        "inputs": s.inputs, "rows": s.rows,
        "agreement": None if s.agreement is None else round(s.agreement, 6),
        "max_abs_diff": round(s.abs_diff_max, 6), "mean_abs_diff": round(s.abs_diff_sum / max(1, s.rows), 6),
        "candidate_p95_ms": p95_ms(s.candidate_side), "current_p95_ms": p95_ms(s.current_side),
        "candidate_error_rate": round(s.candidate_side.errors / n, 6),
        "current_error_rate": round(s.current_side.errors / n, 6),
        "dropped": s.dropped,
    }
