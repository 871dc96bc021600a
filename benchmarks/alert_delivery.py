"""Ingest latency while every webhook delivery hangs, against a collector with no webhook.

    .venv/bin/python benchmarks/alert_delivery.py [--backend sqlite|postgres] [--devices 40] [--rounds 200]

Two real ``mlpack collector serve`` processes on the same machine, each with its own
database: A has a webhook whose receiver (on 127.0.0.1) never answers, so each of A's
delivery attempts runs into its 5 s timeout and is retried; B has no webhook (the
baseline). Both get ``--silent-after 1 --alert-interval 0.5``, so alerts open (silent
devices) and resolve (their next upload) all the time and A's delivery queue is never
empty. Uploads (one new window each, gzip, a real device token) alternate between A and
B, and each upload's round trip is timed. Reports min, median and p95 per collector, and
how many deliveries A attempted and has pending by the end.
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from mlpack_edge.collector import admin, open_storage  # noqa: E402
from tests.collector.sim import SimDevice, gz, make_profile, model_hash  # noqa: E402

from collector_ingest import scratch_db  # noqa: E402  (same folder)


def hanging_receiver() -> tuple[ThreadingHTTPServer, threading.Event, list[int]]:
    release = threading.Event()
    hits: list[int] = []

    class Hang(BaseHTTPRequestHandler):
        def do_POST(self) -> None:  # noqa: N802
            hits.append(1)
            release.wait(120)

        def log_message(self, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Hang)
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server, release, hits


def start(db_url: str) -> tuple[subprocess.Popen[str], str]:
    proc = subprocess.Popen([sys.executable, "-m", "mlpack_edge.cli", "collector", "serve", "--db", db_url, "--port", "0",
                             "--silent-after", "1", "--alert-interval", "0.5", "--webhook-timeout", "5",
                             "--webhook-backoff", "1"], stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    assert proc.stdout is not None
    return proc, proc.stdout.readline().split()[2]


def pct(xs: list[float], q: float) -> float:
    s = sorted(xs)
    return s[min(len(s) - 1, int(q * len(s)))]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--backend", choices=["sqlite", "postgres"], default="sqlite")
    ap.add_argument("--devices", type=int, default=40)
    ap.add_argument("--rounds", type=int, default=200)
    args = ap.parse_args()
    profile, model = make_profile(), model_hash("demo", "1.0.0")
    server, release, hits = hanging_receiver()
    with scratch_db(args.backend) as db_a, scratch_db(args.backend) as db_b:
        admin.add_webhook(db_a, f"http://127.0.0.1:{server.server_address[1]}/hook", "alertmanager")
        fleets = {}
        for label, db in (("A", db_a), ("B", db_b)):
            devs = []
            for i in range(args.devices):
                name = f"d{i:03d}"
                devs.append((SimDevice(name, profile, model, seed=i), admin.add_device(db, name)))
            fleets[label] = devs
        procs = {label: start(db) for label, db in (("A", db_a), ("B", db_b))}
        times: dict[str, list[float]] = {"A": [], "B": []}
        try:
            clients = {label: httpx.Client(base_url=url, timeout=60) for label, (_, url) in procs.items()}
            for label in ("A", "B"):  # every device uploads once, then goes silent: alerts open
                for dev, token in fleets[label]:
                    body = gz(dev.batch([dev.window(time.time() - 60, rows=2000)]))
                    clients[label].post("/api/v1/ingest", content=body, headers={
                        "Authorization": f"Bearer {token}", "Content-Encoding": "gzip"}).raise_for_status()
            time.sleep(3)
            for r in range(args.rounds):
                for label in (("A", "B") if r % 2 == 0 else ("B", "A")):
                    dev, token = fleets[label][r % args.devices]
                    body = gz(dev.batch([dev.window(time.time() - 60, rows=2000)], include_model=False))
                    t0 = time.perf_counter()
                    clients[label].post("/api/v1/ingest", content=body, headers={
                        "Authorization": f"Bearer {token}", "Content-Encoding": "gzip"}).raise_for_status()
                    times[label].append(time.perf_counter() - t0)
                time.sleep(0.02)
            for c in clients.values():
                c.close()
        finally:
            for proc, _ in procs.values():  # before the receiver lets go: no quick failures at the end
                proc.terminate()
                proc.wait(timeout=60)
            release.set()
            server.shutdown()
        s = open_storage(db_a, migrate=False)
        try:
            rows = s.deliveries()
            alerts = len(s.alert_history(limit=100000))
        finally:
            s.close()
    attempts = sum(d["attempts"] for d in rows)
    pending = sum(1 for d in rows if d["state"] == "pending")
    print(f"[{args.backend}] {args.rounds} uploads to each collector, alternating; {args.devices} devices each; "
          f"machine shared (load average {open('/proc/loadavg').read().split()[0]})")
    for label, what in (("A", "webhook that never answers"), ("B", "no webhook (baseline)")):
        xs = [t * 1000 for t in times[label]]
        print(f"[{args.backend}]   {label} {what:<28} upload min {min(xs):6.2f} ms, median {statistics.median(xs):6.2f} ms, "
              f"p95 {pct(xs, 0.95):6.2f} ms")
    ratio = statistics.median(times["A"]) / statistics.median(times["B"])
    print(f"[{args.backend}]   median A/B x{ratio:.2f}; A: {alerts} alert episodes, {len(rows)} deliveries, {attempts} "
          f"attempts (the receiver saw {len(hits)}), {pending} still pending, none delivered")


if __name__ == "__main__":
    main()
