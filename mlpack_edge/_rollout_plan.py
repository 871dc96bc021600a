"""Parsing what a rollout is asked for (durations, stages, labels), shared by the workstation
client (``mlpack rollout``) and the collector, neither of which may import the other."""

from __future__ import annotations

import re
from collections.abc import Sequence

from mlpack_edge.errors import CollectorError

__all__ = ["parse_duration", "parse_stages", "parse_labels"]

_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(ms|s|m|h|d)?\s*$")
_UNITS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0, None: 1.0}


def parse_duration(text: str, what: str) -> float:
    """``90``, ``30s``, ``15m``, ``2h``, ``1d`` -> seconds; one-line error naming ``what``."""
    m = _DURATION.match(str(text))
    if not m:
        raise CollectorError(f"{what}: expected a duration such as 90s, 15m, 2h or 1d, got {text!r}")
    return float(m.group(1)) * _UNITS[m.group(2)]


def parse_stages(text: str | Sequence[float]) -> list[float]:
    """``"1,10,50,100"`` -> increasing percentages ending at 100."""
    parts = text.split(",") if isinstance(text, str) else list(text)
    try:
        stages = [float(p) for p in parts]
    except (TypeError, ValueError):
        raise CollectorError(f"--stages: expected percentages such as 1,10,50,100, got {text!r}") from None
    if not stages or any(not 0 < s <= 100 for s in stages):
        raise CollectorError(f"--stages: each stage is a percentage in (0, 100], got {text!r}")
    if any(b <= a for a, b in zip(stages, stages[1:])):
        raise CollectorError(f"--stages: percentages must increase, got {text!r}")
    if stages[-1] != 100:
        raise CollectorError(f"--stages: the last stage must be 100 (every targeted device), got {text!r}")
    return stages


def parse_labels(items: Sequence[str], option: str = "--label") -> dict[str, str]:
    """``["site=plant-a", "line=2"]`` -> a dict; one-line error naming the bad item."""
    out: dict[str, str] = {}
    for item in items:
        key, sep, value = item.partition("=")
        key, value = key.strip(), value.strip()
        if not sep or not key or not value or len(key) > 64 or len(value) > 128:
            raise CollectorError(f"{option} {item!r}: expected KEY=VALUE (key up to 64, value up to 128 characters)")
        out[key] = value
    return out
