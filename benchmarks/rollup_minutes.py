"""What the fleet's minute roll-ups cost at ingest: ``apply_batches`` with and without them.

    .venv/bin/python benchmarks/rollup_minutes.py [--devices 50] [--rounds 8] [--repeats 3]

Short chart ranges read one point per minute: the collector keeps a minute roll-up for the
fleet (device ``"*"``) next to the hour and day ones; one device's minutes are summed from
its stored windows when its page asks. The baseline is the same ingest with the minute keys
dropped from the deltas (what the collector wrote before), interleaved in the same process,
on SQLite files, every device's batch in one transaction (as the server's writer groups
them). Reports µs per stored window, min and median over rounds.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path
from time import perf_counter

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from mlpack_edge.collector import ingest, open_storage  # noqa: E402
from mlpack_edge.collector.auth import hash_token  # noqa: E402
from mlpack_edge.collector.ingest import apply_batches, parse_batch  # noqa: E402
from mlpack_edge.collector.rollup import Rollup, RollupKey  # noqa: E402
from tests.collector.sim import SimDevice, make_profile, model_hash  # noqa: E402

Expand = Callable[[dict[RollupKey, Rollup]], dict[RollupKey, Rollup]]
WITH_MINUTES: Expand = ingest.expand_minutes


def without_minutes(deltas: dict[RollupKey, Rollup]) -> dict[RollupKey, Rollup]:
    return {k: v for k, v in WITH_MINUTES(deltas).items() if k[0] != "m"}


def run(expand: Expand, per_batch: int, db: Path, devices: int, rounds: int) -> list[float]:
    ingest.expand_minutes = expand  # the benchmark's own switch between the two layouts
    s = open_storage("sqlite:///" + str(db))
    try:
        profile = make_profile(n_numeric=20)
        h = model_hash("bench", "1")
        devs = [SimDevice(f"d{i}", profile, h, seed=i) for i in range(devices)]
        for d in devs:
            s.add_device(d.name, hash_token(d.name), 0.0)
        known: dict = {}
        t0 = 1_764_000_000.0
        out = []
        for r in range(rounds):
            batches = [
                parse_batch(d.batch([d.window(t0 + 60 * (r * per_batch + k)) for k in range(per_batch)], name="bench",
                                    version="1"), d.name, hash_token(d.name))
                for d in devs
            ]
            start = perf_counter()
            apply_batches(s, batches, known, t0)
            out.append((perf_counter() - start) / (devices * per_batch) * 1e6)
        return out[1:]  # the first round also learns the model
    finally:
        s.close()
        ingest.expand_minutes = WITH_MINUTES


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--devices", type=int, default=50)
    ap.add_argument("--rounds", type=int, default=8)
    ap.add_argument("--repeats", type=int, default=3)
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        for per_batch in (1, 10):
            base: list[float] = []
            mine: list[float] = []
            for i in range(args.repeats):
                base += run(without_minutes, per_batch, Path(tmp) / f"b{per_batch}-{i}.db", args.devices, args.rounds)
                mine += run(WITH_MINUTES, per_batch, Path(tmp) / f"m{per_batch}-{i}.db", args.devices, args.rounds)
            print(f"{per_batch:>2} window(s)/batch, {args.devices} devices: µs per window without minute roll-ups "
                  f"min {min(base):.0f} median {statistics.median(base):.0f}; with fleet minutes min {min(mine):.0f} "
                  f"median {statistics.median(mine):.0f} (x{statistics.median(mine) / statistics.median(base):.2f})")


if __name__ == "__main__":
    main()
