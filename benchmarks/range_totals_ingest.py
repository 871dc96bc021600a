"""What keeping the running totals (migration 9) costs at ingest: ``apply_batches`` with and without.

    .venv/bin/python benchmarks/range_totals_ingest.py [--backend sqlite|postgres|both] [--devices 50] [--rounds 8] [--repeats 3]

Every ingest transaction adds each device's hourly delta to its last-24-h and last-7-days
totals (:func:`mlpack_edge.collector.storage._range_totals.share`: a read of the two
ranges, then two more roll-up rows a device, merged like the others). The baseline is the
same ingest with ``share`` returning nothing (what the collector wrote before schema 9),
interleaved in the same process on fresh databases (wall and this process's CPU time: on
SQLite that includes the database's work), every device's batch in one
transaction (as the server's writer groups them). Windows are stamped in the last hours,
so they fall in both ranges. Reports µs per stored window, min and median over rounds.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from pathlib import Path
from time import perf_counter, process_time

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

from mlpack_edge.collector import open_storage  # noqa: E402
from mlpack_edge.collector.auth import hash_token  # noqa: E402
from mlpack_edge.collector.ingest import apply_batches, parse_batch  # noqa: E402
from mlpack_edge.collector.storage import _sql  # noqa: E402
from tests.collector.sim import SimDevice, make_profile, model_hash  # noqa: E402

from collector_ingest import scratch_db  # noqa: E402  (same folder)

SHARE = _sql._range_totals.share


def run(with_totals: bool, per_batch: int, backend: str, devices: int, rounds: int) -> list[tuple[float, float]]:
    with scratch_db(backend) as url:
        s = open_storage(url)
        _sql._range_totals.share = SHARE if with_totals else (lambda tx, deltas: {})  # the benchmark's own switch
        try:
            profile = make_profile(n_numeric=20)
            h = model_hash("bench", "1")
            devs = [SimDevice(f"d{i}", profile, h, seed=i) for i in range(devices)]
            for d in devs:
                s.add_device(d.name, hash_token(d.name), 0.0)
            known: dict = {}
            now = time.time()
            t0 = now - 60.0 * (rounds * per_batch + 10)  # in both ranges the totals cover
            out = []
            for r in range(rounds):
                batches = [
                    parse_batch(d.batch([d.window(t0 + 60 * (r * per_batch + k)) for k in range(per_batch)],
                                        name="bench", version="1"), d.name, hash_token(d.name))
                    for d in devs
                ]
                start, cpu = perf_counter(), process_time()
                apply_batches(s, batches, known, now)
                n = devices * per_batch
                out.append(((perf_counter() - start) / n * 1e6, (process_time() - cpu) / n * 1e6))
            if with_totals:  # the totals did see the windows
                got = s.range_totals(*_sql._range_totals.window(24, now), counts=False)
                assert got is not None and sum(r[2] for r in got) == devices * per_batch * rounds, got
            return out[1:]  # the first round also learns the model
        finally:
            _sql._range_totals.share = SHARE
            s.close()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--backend", choices=["sqlite", "postgres", "both"], default="sqlite")
    ap.add_argument("--devices", type=int, default=50)
    ap.add_argument("--rounds", type=int, default=8)
    ap.add_argument("--repeats", type=int, default=3)
    args = ap.parse_args()
    for backend in (["sqlite", "postgres"] if args.backend == "both" else [args.backend]):
        for per_batch in (1, 10):
            base: list[tuple[float, float]] = []
            mine: list[tuple[float, float]] = []
            for _ in range(args.repeats):
                base += run(False, per_batch, backend, args.devices, args.rounds)
                mine += run(True, per_batch, backend, args.devices, args.rounds)
            for i, what in ((0, "wall"), (1, "CPU of this process")):
                b, m = [x[i] for x in base], [x[i] for x in mine]
                print(f"[{backend}] {per_batch:>2} window(s)/batch, {args.devices} devices, µs per window ({what}): without "
                      f"totals min {min(b):.0f} median {statistics.median(b):.0f}; with totals min {min(m):.0f} median "
                      f"{statistics.median(m):.0f} (x{statistics.median(m) / statistics.median(b):.2f} median, "
                      f"x{min(m) / min(b):.2f} min); load {os.getloadavg()[0]:.1f}")


if __name__ == "__main__":
    main()
