"""Prometheus text for ``serve``'s ``GET /metrics``: request counts, rows, latency, model info.

Kept dependency-free (no prometheus_client on the device, see
:mod:`mlpack_edge.monitor_agent._prom`, the formatter shared with the drift status
exporter): a handful of counters and one fixed-bucket histogram behind a lock, rendered
in text exposition format 0.0.4. When the monitoring agent runs, its drift metrics are
appended by the server.
"""

from __future__ import annotations

import bisect
import threading
import time
from collections import Counter
from itertools import accumulate

from mlpack_edge.monitor_agent._prom import CONTENT_TYPE, family, histogram

__all__ = ["ServeMetrics", "CONTENT_TYPE"]

#: Upper bounds (seconds) of the request-latency histogram: 100 µs .. 5 s.
BUCKETS = (0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0)


class ServeMetrics:
    """Thread-safe counters of one serving process."""

    def __init__(self, name: str, version: str, content_hash: str) -> None:
        self._info = (name, version, content_hash)
        self._lock = threading.Lock()
        self._requests: Counter[tuple[str, int]] = Counter()
        self._rows: Counter[str] = Counter()
        self._buckets = [0] * (len(BUCKETS) + 1)
        self._latency_sum = 0.0
        self._started = time.time()

    def request(self, endpoint: str, status: int, seconds: float | None = None) -> None:
        """Count one HTTP request; ``seconds`` (predict only) goes into the latency histogram."""
        with self._lock:
            self._requests[(endpoint, status)] += 1
            if seconds is not None:
                self._buckets[bisect.bisect_left(BUCKETS, seconds)] += 1
                self._latency_sum += seconds

    def rows(self, predicted: int, invalid: int) -> None:
        with self._lock:
            self._rows["predicted"] += predicted
            self._rows["invalid"] += invalid

    def render(self) -> str:
        with self._lock:
            requests = sorted(self._requests.items())
            rows = dict(self._rows)
            buckets = list(self._buckets)
            total = self._latency_sum
        name, version, digest = self._info
        out = family("mlpack_model_info", "gauge", "The model this process serves.",
                     [({"name": name, "version": version, "content_hash": digest}, 1)])
        out += family("mlpack_start_time_seconds", "gauge", "When this process started (Unix time).",
                      [({}, round(self._started, 3))])
        out += family("mlpack_http_requests_total", "counter", "HTTP requests by endpoint and status code.",
                      [({"endpoint": e, "code": c}, n) for (e, c), n in requests])
        out += family("mlpack_rows_total", "counter",
                      "Rows received by /predict, /invocations and v2 infer: predicted, or refused by input validation.",
                      [({"outcome": k}, rows.get(k, 0)) for k in ("predicted", "invalid")])
        out += histogram("mlpack_predict_duration_seconds",
                         "Time to answer a prediction request (/predict, /invocations, v2 infer: parse, validate, infer, encode).",
                         BUCKETS, list(accumulate(buckets)), round(total, 6))
        return "\n".join(out) + "\n"
