"""Is a stage device healthy on the new build over a rollout's hold? (errors and drift)

A stage must not advance on "the devices run the new build" alone: a build that answers
more requests with an error, or whose inputs drift where the old build's did not, is what
a staged rollout exists to stop. This module judges one device from the collector's stored
windows, with the same drift verdict the device and the fleet page use
(:func:`mlpack_edge.collector.queries.drift_of`, i.e. ``monitor_agent.drift.classify``)
and the fleet page's "failing" rule when there is nothing to compare with.

* **New build**: the device's windows of the release *received* (collector clock) during
  the hold. None yet: the device keeps the stage waiting.
* **Previous build**: its windows of the model it ran last before the release, received in
  the ``BASELINE`` seconds before its first window of the release.
* **Errors**: the new build fails when its error count exceeds what ``max(base ·
  error_factor, base + 0.001)`` (the shadow phase's bound) allows on its requests by more
  than three Poisson standard deviations, ``base`` being the previous build's rate counted
  with one error more than seen (0 errors in 250 requests is not proof of a 0% build): a
  few unlucky errors are noise, not a regression. With no previous telemetry, when it is
  ``FAILING_RATE`` or more of at least ``FAILING_MIN_REQUESTS`` requests.
* **Latency**: the new build fails when its p95 request latency over the hold exceeds the
  previous build's by more than ``p95_factor`` (the plan's, as in the shadow phase) and by
  more than ``LATENCY_SLACK_S`` (sub-millisecond differences are scheduler noise on a busy
  device), both p95s from at least ``MIN_LATENCY_REQUESTS`` timed requests (fewer: no
  latency verdict, the error and drift checks still apply). The p95 comes from the windows'
  merged latency histograms (relative error under 1%), not from an average of per-window
  p95s.
* **Drift**: the new build's worst feature verdict fails when it is ``drift`` and the
  previous build's was not (``ok``, ``warn``, too little data, or no telemetry).
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from typing import Any

from mlpack_edge.collector.models import ModelInfo
from mlpack_edge.collector.queries import FAILING_MIN_REQUESTS, FAILING_RATE, drift_of
from mlpack_edge.collector.rollup import Rollup
from mlpack_edge.monitor_agent.drift import STATUSES
from mlpack_edge.monitor_agent.wire import Window

__all__ = ["BASELINE", "Health", "device_health", "MIN_LATENCY_REQUESTS", "LATENCY_SLACK_S"]

#: How far before its update a device's previous-build telemetry is looked at (seconds).
BASELINE = 86400.0
_RANK = {s: i for i, s in enumerate(STATUSES)}
#: Fewer timed requests than this on either build: no latency verdict.
MIN_LATENCY_REQUESTS = 50
#: A p95 worse by less than this (seconds) is not held against the new build.
LATENCY_SLACK_S = 0.0005


@dataclass(frozen=True)
class Health:
    """One device's verdict: ``waiting`` (no new-build window in the hold yet) or ``failure``
    (one line naming the metric and both values), neither when it is healthy."""

    waiting: bool = False
    failure: str | None = None
    metric: str | None = None


@dataclass
class _Summary:
    model: str
    requests: int
    errors: int
    drift: str | None  # worst feature status (None: no model info or no counts)
    feature: str | None
    psi: float | None
    p95: float | None = None  # seconds, from the merged latency histogram (None: no timed requests)
    timed: int = 0

    @property
    def rate(self) -> float:
        return self.errors / self.requests if self.requests else 0.0


def _summarise(storage: Any, model_hash: str, bodies: list[str]) -> _Summary:
    model: ModelInfo | None = storage.get_model(model_hash)
    total = Rollup()
    for body in bodies:
        w = Window.from_dict(json.loads(body))
        if model is not None:
            total.add_window(w, model.vector(w))
        else:
            total.requests += w.requests
            total.errors += sum(w.errors.values())
            for i, c in w.latency.buckets.items():
                total.latency[i] = total.latency.get(i, 0) + c
    status = feature = psi = None
    if model is not None and total.counts is not None:
        drift = drift_of(model, total.counts)
        scored = [(_RANK[v["status"]], v["psi"], k) for k, v in drift.items()
                  if k in model.features and v["status"] != "no-data"]
        if scored:
            _, psi, feature = max(scored)
            status = drift[feature]["status"]
    latency = total.histogram()
    return _Summary(model_hash, total.requests, total.errors, status, feature, psi, latency.quantile(0.95),
                    latency.count)


def _version(storage: Any, model_hash: str) -> str:
    m = storage.get_model(model_hash)
    return f"{m.version}" if m is not None else model_hash[:12]


def device_health(storage: Any, rollout: Any, device: str, updated_at: float, hold_start: float,
                  now: float) -> Health:
    """Judge ``device`` on the release of ``rollout`` from ``hold_start`` to ``now`` (module doc)."""
    received = storage.windows_received(device, hold_start, now + 1e-6)
    new = [body for model, body in received if model == rollout.release]
    if not new:
        return Health(waiting=True)
    after = _summarise(storage, rollout.release, new)
    before_rows = [(m, b) for m, b in storage.windows_received(device, updated_at - BASELINE, updated_at)
                   if m != rollout.release]
    before = None
    if before_rows:
        previous = before_rows[-1][0]
        before = _summarise(storage, previous, [b for m, b in before_rows if m == previous])
    factor = float(rollout.plan.get("error_factor", 2.0))
    new_v = _version(storage, rollout.release)
    if before is not None and before.requests:
        old_v = _version(storage, before.model)
        base = (before.errors + 1) / before.requests  # one error more than seen: 0 of 250 is not a 0% build
        allowed = after.requests * max(base * factor, base + 0.001)
        if after.errors > allowed + 3.0 * math.sqrt(allowed):
            return Health(failure=(f"error rate {after.rate:.1%} ({after.errors} of {after.requests} requests) on "
                                   f"{new_v} vs {before.rate:.1%} ({before.errors} of {before.requests}) on {old_v} "
                                   f"(error factor {factor:g})"), metric="error_rate")
    elif after.requests >= FAILING_MIN_REQUESTS and after.rate >= FAILING_RATE:
        return Health(failure=(f"error rate {after.rate:.1%} ({after.errors} of {after.requests} requests) on "
                               f"{new_v}, no telemetry from the previous build (failing at >= {FAILING_RATE:.0%} "
                               f"of >= {FAILING_MIN_REQUESTS} requests)"), metric="error_rate")
    p95_factor = float(rollout.plan.get("p95_factor", 1.5))
    if (before is not None and before.p95 and after.p95 and before.timed >= MIN_LATENCY_REQUESTS
            and after.timed >= MIN_LATENCY_REQUESTS and after.p95 > before.p95 * p95_factor
            and after.p95 - before.p95 > LATENCY_SLACK_S):
        return Health(failure=(f"p95 latency {after.p95 * 1e3:.2f} ms ({after.timed} requests) on {new_v} vs "
                               f"{before.p95 * 1e3:.2f} ms ({before.timed}) on {_version(storage, before.model)} "
                               f"(p95 factor {p95_factor:g})"), metric="p95_latency")
    if after.drift == "drift" and (before is None or before.drift != "drift"):
        was = before.drift if before is not None and before.drift else "no data"
        old = f"{was} on {_version(storage, before.model)}" if before is not None else was
        return Health(failure=(f"drift on {after.feature} (PSI {after.psi:.3f}) on {new_v} vs {old} "
                               "before the update"), metric="drift")
    return Health()
