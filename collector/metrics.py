"""``/metrics`` through ``prometheus_client``: the collector's own counters and fleet gauges.

Each app gets its own :class:`~prometheus_client.CollectorRegistry` (several apps in one
process, as in tests, never share counters). Two kinds of series:

* ingest counters (requests by status, windows stored or duplicate, bytes, write
  groups) are per process, kept by ``prometheus_client`` counters;
* fleet gauges are computed from the database at scrape time by :class:`FleetCollector`,
  so every collector process on one database reports the same fleet, including one
  status series per device and its worst feature's PSI (a Grafana alert on "device X
  drifting" is ``mlpack_fleet_device_status{status="drift"} == 1``).

Several processes on one PostgreSQL database are several scrape targets (Prometheus
adds the ``instance`` label): sum the counters across them, and read fleet gauges from
any one (``max by (...)``), since each reports the whole fleet. ``prometheus_client``'s
multi-process mode is for workers forked behind one port sharing a metrics folder,
which ``mlpack collector serve`` does not do: it runs one process per port.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Gauge,
    disable_created_metrics,
    generate_latest,
)
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from mlpack_edge.collector.queries import STATUS_ORDER

__all__ = ["CONTENT_TYPE", "IngestCounters", "FleetCollector", "Metrics"]

# Counters' ``*_created`` timestamps double the series for no use here (process start time
# is what they would say). A process-wide switch: the collector's process is its own.
disable_created_metrics()

CONTENT_TYPE = CONTENT_TYPE_LATEST
_ALERT_KINDS = ("drift", "error_rate", "silent", "dropped", "replay_conflict")


class IngestCounters:
    """Counters of this process's ingest path (thread-safe: ``prometheus_client`` locks)."""

    def __init__(self, registry: CollectorRegistry) -> None:
        self.requests = Counter("mlpack_collector_ingest_requests", "Ingest requests by HTTP status.", ["code"],
                                registry=registry)
        self.windows = Counter("mlpack_collector_ingest_windows",
                               "Windows received, stored or acknowledged as duplicates.", ["result"], registry=registry)
        self.bytes_received = Counter("mlpack_collector_ingest_bytes",
                                      "Request body bytes received on the ingest path.", registry=registry)
        self.groups = Counter("mlpack_collector_write_groups", "Write transactions (group commits).", registry=registry)
        self.group_batches = Counter("mlpack_collector_write_batches", "Batches written in group commits.",
                                     registry=registry)
        self.write_seconds = Counter("mlpack_collector_write_seconds", "Time spent in write transactions.",
                                     registry=registry)
        for result in ("stored", "duplicate"):
            self.windows.labels(result=result)  # both series exist from the start (0, not absent)
        self.conflicts = Counter("mlpack_collector_ingest_conflicts",
                                 "Uploads refused (409) for replaying a stored window with other contents or bounds.",
                                 registry=registry)

    def request(self, status: int, body_bytes: int) -> None:
        self.requests.labels(code=str(status)).inc()
        self.bytes_received.inc(body_bytes)

    def stored(self, stored: int, duplicates: int) -> None:
        self.windows.labels(result="stored").inc(stored)
        self.windows.labels(result="duplicate").inc(duplicates)

    def conflict(self) -> None:
        """An upload refused for replaying a stored window with other contents or bounds."""
        self.conflicts.inc()

    def group(self, batches: int, seconds: float) -> None:
        self.groups.inc()
        self.group_batches.inc(batches)
        self.write_seconds.inc(seconds)


def _gauge(name: str, doc: str, labels: list[str]) -> GaugeMetricFamily:
    return GaugeMetricFamily(name, doc, labels=labels)


class FleetCollector(Collector):
    """Fleet gauges from a :func:`~.queries.fleet_overview` result, computed at scrape time."""

    def __init__(self, overview: Callable[[], dict[str, Any]]) -> None:
        self._overview = overview

    def describe(self) -> list[Metric]:
        return []  # nothing to check at registration (and no database query then)

    def collect(self) -> Iterator[Metric]:
        fleet = self._overview()
        devices = _gauge("mlpack_fleet_devices", "Devices by status over the last 24 hours.", ["status"])
        for status, n in fleet["status_counts"].items():
            devices.add_metric([status], n)
        yield devices

        status = _gauge("mlpack_fleet_device_status",
                        "1 for each device's current status (revoked, never, silent, failing, drift, warn, ok, idle), else 0.",
                        ["device", "status"])
        seen = _gauge("mlpack_fleet_device_last_seen_seconds", "Epoch time of each device's last upload.", ["device"])
        worst = _gauge("mlpack_fleet_device_drift_psi",
                       "PSI of each device's most drifted feature over the last 24 hours (its current model).",
                       ["device", "model", "version", "feature"])
        requests = _gauge("mlpack_fleet_device_requests", "Requests per device over the last 24 hours.", ["device"])
        errors = _gauge("mlpack_fleet_device_error_rate", "Error rate per device over the last 24 hours.", ["device"])
        for d in fleet["devices"]:
            name = d["name"]
            for s in STATUS_ORDER:
                status.add_metric([name, s], 1.0 if d["status"] == s else 0.0)
            if d["last_seen"] is not None:
                seen.add_metric([name], d["last_seen"])
            if d["worst"] is not None and d["model"] is not None:
                m = d["model"]
                worst.add_metric([name, m["name"], m["version"], d["worst"]["feature"]], d["worst"]["psi"])
            requests.add_metric([name], d["requests"])
            errors.add_metric([name], d["error_rate"])
        yield from (status, seen, worst, requests, errors)

        labels = ["model", "version", "hash"]
        mreq = _gauge("mlpack_fleet_requests", "Requests per model version over the last 24 hours.", labels)
        merr = _gauge("mlpack_fleet_error_rate", "Error rate per model version over the last 24 hours.", labels)
        mlat = _gauge("mlpack_fleet_latency_seconds", "Latency quantiles per model version over the last 24 hours.",
                      [*labels, "quantile"])
        mpsi = _gauge("mlpack_fleet_feature_psi", "PSI per feature (and prediction) over the last 24 hours.",
                      [*labels, "feature"])
        for s in fleet["models"]:
            lab = [s["model"]["name"], s["model"]["version"], s["model"]["hash"][:12]]
            t = s["total"]
            mreq.add_metric(lab, t["requests"])
            merr.add_metric(lab, t["error_rate"])
            for q in ("p50", "p95", "p99"):
                v = t[f"{q}_ms"]
                if v is not None:
                    mlat.add_metric([*lab, f"0.{q[1:]}"], v / 1000.0)
            for feat, d in t["drift"].items():
                mpsi.add_metric([*lab, feat], d["psi"])
        yield from (mreq, merr, mlat, mpsi)

        alerts = _gauge("mlpack_fleet_alerts", "Open alerts by kind.", ["kind"])
        for kind in _ALERT_KINDS:
            alerts.add_metric([kind], sum(1 for a in fleet["alerts"] if a["kind"] == kind))
        yield alerts


class Metrics:
    """One app's registry: ingest counters, the writer's queue and the fleet gauges."""

    def __init__(self, overview: Callable[[], dict[str, Any]], pending: Callable[[], int]) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        self.ingest = IngestCounters(self.registry)
        queue = Gauge("mlpack_collector_write_queue", "Batches waiting for the writer.", registry=self.registry)
        queue.set_function(lambda: float(pending()))
        self.registry.register(FleetCollector(overview))

    def render(self) -> bytes:
        return generate_latest(self.registry)
