"""``/metrics`` in the Prometheus text format: fleet gauges and the collector's own counters.

Counters are per process (Prometheus sums them across the collectors behind a load
balancer); fleet gauges are computed from the database at scrape time, so every
process reports the same fleet.
"""

from __future__ import annotations

import threading
from collections import defaultdict
from collections.abc import Iterable
from typing import Any

__all__ = ["IngestCounters", "render"]


class IngestCounters:
    """Thread-safe counters of this process's ingest path."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.requests: dict[int, int] = defaultdict(int)
        self.windows: dict[str, int] = defaultdict(int)
        self.bytes_received = 0
        self.groups = 0
        self.group_batches = 0
        self.write_seconds = 0.0
        self.conflicts = 0

    def request(self, status: int, body_bytes: int) -> None:
        with self._lock:
            self.requests[status] += 1
            self.bytes_received += body_bytes

    def stored(self, stored: int, duplicates: int) -> None:
        with self._lock:
            self.windows["stored"] += stored
            self.windows["duplicate"] += duplicates

    def conflict(self) -> None:
        """An upload refused for replaying a stored window with other contents or bounds."""
        with self._lock:
            self.conflicts += 1

    def group(self, batches: int, seconds: float) -> None:
        with self._lock:
            self.groups += 1
            self.group_batches += batches
            self.write_seconds += seconds


def _esc(v: Any) -> str:
    return str(v).replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')


def _line(name: str, labels: dict[str, Any], value: float | int | None) -> str:
    lab = ",".join(f'{k}="{_esc(v)}"' for k, v in labels.items())
    val = "NaN" if value is None else repr(float(value)) if isinstance(value, float) else str(value)
    return f"{name}{{{lab}}} {val}" if lab else f"{name} {val}"


def _family(name: str, kind: str, help_text: str, samples: Iterable[tuple[dict[str, Any], float | int | None]]) -> list[str]:
    return [f"# HELP {name} {help_text}", f"# TYPE {name} {kind}", *(_line(name, lab, v) for lab, v in samples)]


def render(counters: IngestCounters, pending: int, fleet: dict[str, Any]) -> str:
    """The exposition text for ``counters`` and a :func:`~.queries.fleet_overview` result."""
    with counters._lock:
        req = dict(counters.requests)
        win = dict(counters.windows)
        nbytes, groups, gb, secs = counters.bytes_received, counters.groups, counters.group_batches, counters.write_seconds
        conflicts = counters.conflicts
    out: list[str] = []
    out += _family("mlpack_collector_ingest_requests_total", "counter", "Ingest requests by HTTP status.",
                   [({"code": c}, n) for c, n in sorted(req.items())])
    out += _family("mlpack_collector_ingest_windows_total", "counter", "Windows received, stored or acknowledged as duplicates.",
                   [({"result": k}, win.get(k, 0)) for k in ("stored", "duplicate")])
    out += _family("mlpack_collector_ingest_conflicts_total", "counter",
                   "Uploads refused (409) for replaying a stored window with other contents or bounds.", [({}, conflicts)])
    out += _family("mlpack_collector_ingest_bytes_total", "counter", "Request body bytes received on the ingest path.", [({}, nbytes)])
    out += _family("mlpack_collector_write_groups_total", "counter", "Write transactions (group commits).", [({}, groups)])
    out += _family("mlpack_collector_write_batches_total", "counter", "Batches written in group commits.", [({}, gb)])
    out += _family("mlpack_collector_write_seconds_total", "counter", "Time spent in write transactions.", [({}, round(secs, 6))])
    out += _family("mlpack_collector_write_queue", "gauge", "Batches waiting for the writer.", [({}, pending)])
    out += _family("mlpack_fleet_devices", "gauge", "Devices by status over the last 24 hours.",
                   [({"status": s}, n) for s, n in fleet["status_counts"].items()])
    out += _family("mlpack_fleet_device_last_seen_seconds", "gauge", "Epoch time of each device's last upload.",
                   [({"device": d["name"]}, d["last_seen"]) for d in fleet["devices"] if d["last_seen"] is not None])
    mrows, erows, lrows, drows = [], [], [], []
    for s in fleet["models"]:
        lab = {"model": s["model"]["name"], "version": s["model"]["version"], "hash": s["model"]["hash"][:12]}
        t = s["total"]
        mrows.append((lab, t["requests"]))
        erows.append((lab, t["error_rate"]))
        for q in ("p50", "p95", "p99"):
            v = t[f"{q}_ms"]
            lrows.append(({**lab, "quantile": f"0.{q[1:]}"}, None if v is None else v / 1000.0))
        for feat, d in t["drift"].items():
            drows.append(({**lab, "feature": feat}, d["psi"]))
    out += _family("mlpack_fleet_requests", "gauge", "Requests per model version over the last 24 hours.", mrows)
    out += _family("mlpack_fleet_error_rate", "gauge", "Error rate per model version over the last 24 hours.", erows)
    out += _family("mlpack_fleet_latency_seconds", "gauge", "Latency quantiles per model version over the last 24 hours.", lrows)
    out += _family("mlpack_fleet_feature_psi", "gauge", "PSI per feature (and prediction) over the last 24 hours.", drows)
    out += _family("mlpack_fleet_alerts", "gauge", "Open alerts by kind.",
                   [({"kind": k}, sum(1 for a in fleet["alerts"] if a["kind"] == k)) for k in ("drift", "error_rate", "silent", "dropped", "replay_conflict")])
    return "\n".join(out) + "\n"
