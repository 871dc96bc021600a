"""Prometheus text for ``serve``'s ``GET /metrics``: request counts, rows, latency, model info.

Kept dependency-free (no prometheus_client on the device): a handful of counters and
one fixed-bucket histogram behind a lock, rendered in text exposition format 0.0.4.
When the monitoring agent runs, its drift metrics are appended by the server.
"""

from __future__ import annotations

import bisect
import threading
import time
from collections import Counter

__all__ = ["ServeMetrics", "CONTENT_TYPE"]

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
#: Upper bounds (seconds) of the request-latency histogram: 100 µs .. 5 s.
BUCKETS = (0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0)


def _label(value: str) -> str:
    return value.replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')


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
        name, version, digest = (_label(x) for x in self._info)
        out = [
            "# HELP mlpack_model_info The model this process serves.",
            "# TYPE mlpack_model_info gauge",
            f'mlpack_model_info{{name="{name}",version="{version}",content_hash="{digest}"}} 1',
            "# HELP mlpack_start_time_seconds When this process started (Unix time).",
            "# TYPE mlpack_start_time_seconds gauge",
            f"mlpack_start_time_seconds {self._started:.3f}",
            "# HELP mlpack_http_requests_total HTTP requests by endpoint and status code.",
            "# TYPE mlpack_http_requests_total counter",
        ]
        out += [f'mlpack_http_requests_total{{endpoint="{_label(e)}",code="{c}"}} {n}' for (e, c), n in requests]
        out += [
            "# HELP mlpack_rows_total Rows received by /predict: predicted, or refused by input validation.",
            "# TYPE mlpack_rows_total counter",
            f'mlpack_rows_total{{outcome="predicted"}} {rows.get("predicted", 0)}',
            f'mlpack_rows_total{{outcome="invalid"}} {rows.get("invalid", 0)}',
            "# HELP mlpack_predict_duration_seconds Time to answer a /predict request (parse, validate, infer, encode).",
            "# TYPE mlpack_predict_duration_seconds histogram",
        ]
        cumulative = 0
        for bound, n in zip([*BUCKETS, float("inf")], buckets):
            cumulative += n
            le = "+Inf" if bound == float("inf") else repr(bound)
            out.append(f'mlpack_predict_duration_seconds_bucket{{le="{le}"}} {cumulative}')
        out.append(f"mlpack_predict_duration_seconds_sum {total:.6f}")
        out.append(f"mlpack_predict_duration_seconds_count {cumulative}")
        return "\n".join(out) + "\n"
