"""Collector CPU per upload in-process, per stage and back-end: where a process's time goes.

    .venv/bin/python benchmarks/collector_cpu.py [--backend sqlite|postgres|both] [--rounds 5] [--group 16]
                                                 [--profile N] [--windows 1]

Builds the bodies wrk sends in ``collector_ingest.py`` (plain JSON, 1-window uploads of a
20-feature model, a new seq per upload, 100 devices, each device's first batch carrying
the models section), then per round decodes, checks and writes 2,000 of them in groups of
``--group`` uploads from as many devices (what the writer thread groups under load).
Reports the *process* CPU (``time.process_time``: this Python process only, not the
PostgreSQL server) per upload of each stage, min / median over rounds, next to the wall
time of the write stage (wall minus CPU there is time spent waiting for the database) and,
for PostgreSQL, the CPU of the server process serving the writer connection (``/proc``).
CPU time is what bounds how many uploads one collector process can take, and what a
second process on the same cores competes for, so it is the figure to lower.

``--profile N`` prints cProfile's top N functions (by own time) of the write stage.
"""

from __future__ import annotations

import argparse
import cProfile
import io
import json
import os
import pstats
import statistics
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from collector_ingest import DEVICES, _load, make_model, scratch_db, window_dict  # noqa: E402

from mlpack_edge.collector import Ack, admin, apply_batches, decode_body, open_storage, parse_batch  # noqa: E402
from mlpack_edge.collector.auth import hash_token  # noqa: E402

PER_ROUND = 2000


def run(backend: str, rounds: int, group: int, per_batch: int, profile: int) -> dict[str, list[float]]:
    """µs of process CPU per upload for each stage (and the write stage's wall time), one figure per round."""
    out: dict[str, list[float]] = {"decode": [], "parse": [], "write_cpu": [], "write_wall": [], "server_cpu": []}
    with scratch_db(backend) as url:
        open_storage(url).close()
        h, entry = make_model()
        names = [f"c{i:03d}" for i in range(DEVICES)]
        ths = {n: hash_token(admin.add_device(url, n)) for n in names}
        rng = np.random.default_rng(1)
        tmpls = [window_dict(h, entry["profile"], 0, time.time() - 1800, rng) for _ in range(per_batch)]

        def body(n: str, seq: int, models: bool) -> bytes:
            ws = [dict(t, seq=seq + j, seq_last=seq + j) for j, t in enumerate(tmpls)]
            return json.dumps({"schema": 1, "device": n, "models": {h: entry} if models else {}, "windows": ws,
                               "audit": [], "outbox": {"produced": 1, "merged": 0, "dropped": 0, "dropped_rows": 0}}
                              ).encode()

        storage = open_storage(url, migrate=False)
        known: dict = {}
        first = [parse_batch(decode_body(body(n, 0, True), None, 1 << 25), n, ths[n]) for n in names]
        apply_batches(storage, first, known, time.time())
        seq = per_batch
        server = _server_pid(storage)
        prof = cProfile.Profile(time.process_time) if profile else None
        for _ in range(rounds):
            reps = PER_ROUND // DEVICES
            raw = [(n, body(n, seq + r * per_batch, False)) for r in range(reps) for n in names]
            seq += reps * per_batch
            c0 = time.process_time()
            payloads = [(n, decode_body(b, None, 1 << 25)) for n, b in raw]
            c1 = time.process_time()
            batches = [parse_batch(p, n, ths[n]) for n, p in payloads]
            c2 = time.process_time()
            w0, s0 = time.perf_counter(), _cpu_of(server)
            outs = []
            if prof:
                prof.enable()
            for i in range(0, len(batches), group):
                outs += apply_batches(storage, batches[i : i + group], known, time.time())
            if prof:
                prof.disable()
            c3, w1, s1 = time.process_time(), time.perf_counter(), _cpu_of(server)
            assert all(isinstance(o, Ack) and len(o.stored) == per_batch for o in outs), outs[:1]
            n = len(batches) / 1e6
            out["decode"].append((c1 - c0) / n)
            out["parse"].append((c2 - c1) / n)
            out["write_cpu"].append((c3 - c2) / n)
            out["write_wall"].append((w1 - w0) / n)
            out["server_cpu"].append((s1 - s0) / n)
        storage.close()
    if prof:
        s = io.StringIO()
        st = pstats.Stats(prof, stream=s).sort_stats("tottime")
        st.print_stats(profile)
        st.print_callers("iterencode|raw_decode|_dump_list")
        print(f"[{backend}] cProfile of the write stage ({rounds} rounds of {PER_ROUND} uploads), by own time:")
        print("\n".join(s.getvalue().splitlines()[4:]))
    return out


def _server_pid(storage: object) -> int | None:
    """The PostgreSQL backend process serving the writer connection (``None`` for SQLite)."""
    if getattr(storage, "dialect", "") != "postgres":
        return None
    with storage.write() as tx:  # type: ignore[attr-defined]
        return int(tx._c.execute("SELECT pg_backend_pid()").fetchone()[0])


def _cpu_of(pid: int | None) -> float:
    """User + system CPU seconds of process ``pid`` so far (0 without one)."""
    if pid is None:
        return 0.0
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--backend", choices=["sqlite", "postgres", "both"], default="both")
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--group", type=int, default=16, help="uploads per write transaction")
    ap.add_argument("--windows", type=int, default=1, help="windows per upload")
    ap.add_argument("--profile", type=int, default=0, help="print cProfile's top N functions of the write stage")
    args = ap.parse_args()
    for backend in (["sqlite", "postgres"] if args.backend == "both" else [args.backend]):
        r = run(backend, args.rounds, args.group, args.windows, args.profile)
        shown = ", ".join(f"{k} {min(v):.0f} / {statistics.median(v):.0f}" for k, v in r.items())
        print(f"[{backend}] µs per {args.windows}-window upload, groups of {args.group}, min / median of "
              f"{args.rounds} rounds: {shown} ({_load()})", flush=True)


if __name__ == "__main__":
    main()
