"""Alert state: which alerts hold now, and the transitions (opened/resolved) that follow.

Alerts come from a list of *conditions* (:data:`CONDITIONS`): each is a function of an
:class:`AlertContext` returning the :class:`Firing` alerts that hold at ``ctx.now``.
The fleet's own (drift, error-rate jump, silent device, dropped telemetry, refused
replays) are one condition, :func:`fleet_alerts`, the same list the fleet page shows.
Another source of alerts (a production gate breach, a halted rollout) plugs in by
appending a condition::

    from mlpack_edge.collector.alerts import CONDITIONS, Firing
    CONDITIONS.append(lambda ctx: [Firing("rollout_halt", "critical", "…", model=h)])

(or by passing ``conditions=`` to :class:`Alerter`). The collector hands the Alerter its
own overview function, so alerts are computed with exactly the page's settings. The subject of an alert is its
``(kind, model, device, feature)``; an alert is *opened* when its subject starts to hold
and *resolved* when it stops, each exactly once (:meth:`Storage.record_alerts`), and
every transition is queued for every webhook in the same transaction.

:class:`Alerter` evaluates after ingest (woken by the writer, at most once per
``alert_min_interval``) and on a periodic tick, so a device going silent opens an alert
with no upload at all. Its clock is the config's, so a test moves time instead of waiting.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from mlpack_edge.collector.config import CollectorConfig
from mlpack_edge.collector.models import ModelInfo
from mlpack_edge.collector.queries import TimeRange, fleet_overview, time_range
from mlpack_edge.collector.storage import AlertRow, Firing, Storage, Transition, WebhookRow
from mlpack_edge.collector.webhooks import render_payload

__all__ = ["AlertContext", "Condition", "CONDITIONS", "Firing", "fleet_alerts", "firing_now", "Alerter"]

log = logging.getLogger("mlpack_edge.collector.alerts")


#: The fleet overview over a time range, as the page and the JSON API compute it.
Overview = Callable[[TimeRange], dict[str, Any]]


@dataclass(frozen=True)
class AlertContext:
    """What a condition may look at: the database, the collector's settings, the time, and
    the fleet overview exactly as the page and API compute it (same settings)."""

    storage: Storage
    config: CollectorConfig
    now: float
    overview: Overview


#: A source of alerts: the alerts that hold at ``ctx.now``.
Condition = Callable[[AlertContext], Iterable[Firing]]


def fleet_alerts(ctx: AlertContext) -> list[Firing]:
    """The fleet page's alerts over the last ``alert_range_hours`` (drift, error-rate
    jumps, silent devices, dropped telemetry, refused replays, production gate breaches)."""
    data = ctx.overview(time_range(None, None, ctx.now, ctx.config.alert_range_hours))
    return [Firing(a["kind"], a["severity"], a["message"], a.get("model"), a.get("device"), a.get("feature"))
            for a in data["alerts"]]


#: The conditions every :class:`Alerter` evaluates unless given its own list.
CONDITIONS: list[Condition] = [fleet_alerts]


def firing_now(ctx: AlertContext, conditions: Sequence[Condition]) -> list[Firing]:
    """Every condition's alerts, one per subject (the first condition to name it wins)."""
    seen: dict[str, Firing] = {}
    for cond in conditions:
        for f in cond(ctx):
            seen.setdefault(f.key, f)
    return list(seen.values())


class Alerter:
    """Evaluates the conditions and records transitions; a thread does it on a tick and
    shortly after ingest."""

    def __init__(
        self,
        storage: Storage,
        config: CollectorConfig,
        conditions: Sequence[Condition] | None = None,
        on_transitions: Callable[[list[Transition]], None] | None = None,
        overview: Overview | None = None,
    ) -> None:
        self._storage = storage
        self._config = config
        self._overview = overview or self._default_overview
        self._conditions = conditions
        self._on_transitions = on_transitions
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="mlpack-collector-alerts", daemon=True)
        self._pruned_at = float("-inf")
        self.failures = 0  # evaluations that raised (logged; the alert state is left as it was)

    def _default_overview(self, rng: TimeRange) -> dict[str, Any]:
        c = self._config
        return fleet_overview(self._storage, rng, c.clock(), c.silent_after, c.error_jump_factor,
                              c.error_jump_min_rate, c.error_jump_min_requests, c.kpi_min_labels)

    def check(self) -> list[Transition]:
        """Evaluate now (by the config's clock) and record what changed."""
        now = self._config.clock()
        ctx = AlertContext(self._storage, self._config, now, self._overview)
        firing = firing_now(ctx, CONDITIONS if self._conditions is None else self._conditions)
        models = {m.hash: m for m in self._storage.models()}
        external = self._config.external_url

        def payload(hook: WebhookRow, alert: AlertRow, event: str) -> str:
            return render_payload(hook, alert, event, models.get(alert.model or ""), external)

        changes = self._storage.record_alerts(firing, now, payload)
        if now - self._pruned_at >= 3600.0:  # hourly is plenty for a retention counted in days
            self._storage.prune_alerts(now - self._config.alert_retention_days * 86400.0)
            self._pruned_at = now
        if changes and self._on_transitions is not None:
            self._on_transitions(changes)
        return changes

    def wake(self) -> None:
        """Ask for an evaluation soon (called after each ingest commit; never blocks)."""
        self._wake.set()

    def start(self) -> None:
        self._thread.start()

    def stop(self, timeout: float = 10.0) -> None:
        self._stop.set()
        self._wake.set()
        if self._thread.is_alive():
            self._thread.join(timeout)

    def _run(self) -> None:
        c = self._config
        while not self._stop.is_set():
            self._safe_check()
            # after a check: at least ``alert_min_interval`` before the next, at most ``alert_interval``
            if self._stop.wait(c.alert_min_interval):
                return
            self._wake.wait(max(0.0, c.alert_interval - c.alert_min_interval))
            self._wake.clear()

    def _safe_check(self) -> None:
        try:
            self.check()
        except Exception as exc:  # a failing condition or database must not end the thread
            self.failures += 1
            log.warning("alerts: evaluation failed, state left as it was: %s", exc)


def alert_dict(a: AlertRow, deliveries: Sequence[dict[str, Any]] = (), models: dict[str, ModelInfo] | None = None) -> dict[str, Any]:
    """An alert as the API and page show it: its episode and its deliveries."""
    m = (models or {}).get(a.model or "")
    return {
        **a.to_dict(),
        "model_name": m.name if m else None,
        "model_version": m.version if m else None,
        "deliveries": list(deliveries),
    }
