"""Cost of one alert evaluation (state tracking + delivery queue) on 1,000 devices.

    .venv/bin/python benchmarks/alert_evaluation.py [--backend sqlite|postgres|both] [--devices 1000] [--runs 7]

Seeds the database like ``collector_query.py`` (1,000 devices x 7 days of roll-ups, 5 %
drifting on one feature), registers two webhooks, then times in the same process:

* baseline: ``fleet_overview`` over the last 24 h — what the fleet page (and /metrics)
  computes anyway, and the input of the alert state;
* ``Alerter.check()`` when nothing changed (the steady state: every tick);
* ``Alerter.check()`` when every alert opens at once (the first evaluation: each alert
  inserted, a delivery rendered and queued per webhook), measured on a fresh copy of the
  state each run (alerts and deliveries deleted between runs).

Reports min and median; the machine is shared, so the ratio to the baseline is the figure.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from mlpack_edge.collector import fleet_overview, open_storage, time_range  # noqa: E402
from mlpack_edge.collector.alerts import Alerter  # noqa: E402
from mlpack_edge.collector.config import CollectorConfig  # noqa: E402

from collector_ingest import scratch_db  # noqa: E402  (same folder)
from collector_query import seed  # noqa: E402


def stats(times: list[float]) -> str:
    return f"min {min(times) * 1000:7.1f} ms, median {statistics.median(times) * 1000:7.1f} ms"


def run_backend(backend: str, n_devices: int, runs: int) -> None:
    with scratch_db(backend) as db_url:
        now = time.time()
        storage = open_storage(db_url)
        seed(storage, n_devices, now)
        if backend == "postgres":
            with storage.write() as tx:
                tx._c.execute("ANALYZE rollups")
        storage.add_webhook("http://127.0.0.1:9/a", "json", "s", now)
        storage.add_webhook("http://127.0.0.1:9/b", "alertmanager", None, now)
        alerter = Alerter(storage, CollectorConfig(db_url=db_url, clock=lambda: now))
        rng = time_range(None, None, now, 24)
        base: list[float] = []
        opening: list[float] = []
        steady: list[float] = []
        opened = 0
        for _ in range(runs):  # interleaved: baseline, first evaluation, steady evaluation
            t0 = time.perf_counter()
            fleet_overview(storage, rng, now)
            base.append(time.perf_counter() - t0)
            with storage.write() as tx:
                tx._exec("DELETE FROM deliveries")
                tx._exec("DELETE FROM alerts")
            t0 = time.perf_counter()
            opened = len(alerter.check())
            opening.append(time.perf_counter() - t0)
            t0 = time.perf_counter()
            assert alerter.check() == []
            steady.append(time.perf_counter() - t0)
        queued = len(storage.deliveries())
        print(f"[{backend}] {n_devices} devices, 24 h range, {runs} runs each, interleaved")
        print(f"[{backend}]   baseline fleet_overview          {stats(base)}")
        print(f"[{backend}]   check(), nothing changed         {stats(steady)}  "
              f"x{statistics.median(steady) / statistics.median(base):.2f} of baseline")
        print(f"[{backend}]   check(), {opened} alerts open      {stats(opening)}  "
              f"x{statistics.median(opening) / statistics.median(base):.2f} of baseline ({queued} deliveries queued)")
        storage.close()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--backend", choices=["sqlite", "postgres", "both"], default="both")
    ap.add_argument("--devices", type=int, default=1000)
    ap.add_argument("--runs", type=int, default=7)
    args = ap.parse_args()
    for backend in (["sqlite", "postgres"] if args.backend == "both" else [args.backend]):
        run_backend(backend, args.devices, args.runs)


if __name__ == "__main__":
    main()
