"""Cost of prediction ids and the feedback join: serve p50, memory and disk per pending
prediction, telemetry bytes per feedback window.

    .venv/bin/python benchmarks/feedback.py [--bundle DIR] [--blocks 12] [--requests 300]

1. Single-row ``POST /predict`` over keep-alive HTTP on 127.0.0.1, the monitoring agent on
   in both arms: *baseline* = no ids (``PredictServer(feedback=None)``), *ids* = every
   reply carries an id and the prediction is remembered for the join. The two servers run
   in this process, in alternating blocks, so the machine's load hits both alike; the
   per-block p50 is reported as min and median over blocks.
2. Memory per pending prediction before the tick writes it (tracemalloc over 100,000
   ``Agent.remember`` calls), and disk per pending prediction in ``feedback.sqlite``
   after they are written (file size / rows).
3. Bytes a feedback window adds to the telemetry: as the outbox stores it (zlib JSON) and
   as an upload carries it (gzip JSON), for a 2-class, a 10-class and a regression model.
"""

from __future__ import annotations

import argparse
import gzip
import http.client
import json
import os
import statistics
import tempfile
import threading
import time
import tracemalloc
import zlib
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]


def _rows(n: int) -> list[dict[str, float]]:
    lines = (ROOT / "examples" / "breast_cancer" / "breast_cancer.csv").read_text().splitlines()
    header = lines[0].split(",")
    out = []
    for line in lines[1 : n + 1]:
        values = dict(zip(header, line.split(",")))
        values.pop("diagnosis")
        out.append({k: float(v) for k, v in values.items()})
    return out


def _bundle(arg: str | None, work: Path, example: str = "breast_cancer") -> Path:
    """``--bundle`` if given, else ``example`` built (no executable) under ``work``."""
    if arg:
        return Path(arg)
    from mlpack_edge.builder import build

    return build(ROOT / "examples" / example / "mlpack.toml", work / "dist", executable=False).bundle_dir


def _block(conn: http.client.HTTPConnection, bodies: list[bytes]) -> float:
    lat = []
    for body in bodies:
        t0 = time.perf_counter()
        conn.request("POST", "/predict", body, {"Content-Type": "application/json"})
        r = conn.getresponse()
        r.read()
        lat.append(time.perf_counter() - t0)
        assert r.status == 200
    return statistics.median(lat)


def serve_p50(bundle: Path, work: Path, blocks: int, requests: int) -> dict[str, list[float]]:
    from mlpack_edge.monitor_agent.agent import Agent, ModelInfo
    from mlpack_edge.monitor_agent.config import AgentConfig
    from mlpack_edge.monitor_agent.wire import SystemStats
    from mlpack_edge.runtime import Bundle, Model, PredictServer, ServeConfig

    info = ModelInfo.from_bundle_dir(bundle)
    out: dict[str, list[float]] = {"baseline": [], "ids": []}
    servers, agents = {}, []
    for arm in out:
        state = work / f"state-{arm}"
        state.mkdir()
        agent = Agent.open(info, state, AgentConfig(), sampler=SystemStats)
        agent.start()
        agents.append(agent)
        model = Model(Bundle.open(bundle), threads=1, recorder=agent.recorder)
        server = PredictServer(model, ServeConfig(port=0), feedback=agent if arm == "ids" else None)
        threading.Thread(target=server.serve_forever, daemon=True).start()
        servers[arm] = server
    rows = _rows(requests)
    bodies = [json.dumps(r).encode() for r in rows]
    conns = {arm: http.client.HTTPConnection("127.0.0.1", s.port) for arm, s in servers.items()}
    for arm in out:  # warm-up
        _block(conns[arm], bodies[:50])
    for b in range(blocks):
        order = list(out) if b % 2 == 0 else list(reversed(out))
        for arm in order:
            out[arm].append(_block(conns[arm], bodies))
    for s in servers.values():
        s.shutdown()
    for a in agents:
        a.stop()
    return out


def pending_costs(bundle: Path, work: Path, n: int = 100_000) -> dict[str, float]:
    from mlpack_edge.monitor_agent.agent import Agent, ModelInfo
    from mlpack_edge.monitor_agent.config import AgentConfig

    info = ModelInfo.from_bundle_dir(bundle)
    state = work / "state-mem"
    state.mkdir()
    agent = Agent.open(info, state, AgentConfig(), sampler=None)
    agent._started = True  # keep remember() buffering (as under serve): measure the buffer alone
    one = (0.0,)
    tracemalloc.start()
    before = tracemalloc.take_snapshot()
    for _ in range(n):
        agent.remember(agent.new_ids(1), one)
    after = tracemalloc.take_snapshot()
    mem = sum(s.size_diff for s in after.compare_to(before, "filename"))
    tracemalloc.stop()
    agent._drain_remembered()
    agent.feedback._conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    disk = sum(os.path.getsize(p) for p in state.glob("feedback.sqlite*"))
    agent._started = False
    agent.stop()
    return {"memory_bytes_per_pending": mem / n, "disk_bytes_per_pending": disk / n}


def window_bytes() -> dict[str, dict[str, int]]:
    from mlpack_edge.monitor_agent.wire import Feedback, Residuals, Window

    rng = np.random.default_rng(0)
    out = {}
    for name, fb in (
        ("2 classes", Feedback(confusion=rng.integers(0, 5000, (2, 2)).tolist())),
        ("10 classes", Feedback(confusion=rng.integers(0, 5000, (10, 10)).tolist())),
        ("regression", Feedback(residuals=Residuals())),
    ):
        if fb.residuals is not None:
            errs = np.abs(rng.normal(0, 3, 5000))
            fb.residuals.count, fb.residuals.sum, fb.residuals.sum_sq = 5000, 12.345678, float((errs**2).sum())
            fb.residuals.abs_sum = float(errs.sum())
            fb.residuals.abs_error.add_array(errs)
            fb.matched = 5000
        else:
            fb.matched = int(np.sum(fb.confusion))
        fb.unmatched, fb.late, fb.duplicate, fb.unknown_label = 12, 3, 7, 1
        fb.labels = fb.matched + 23
        w = Window(model="0" * 64, seq=123456, start=1.7e9, end=1.7e9 + 59.87, feedback=fb)
        text = json.dumps(w.to_dict(), separators=(",", ":")).encode()
        section = json.dumps(fb.to_dict(), separators=(",", ":")).encode()
        out[name] = {"window_packed": len(zlib.compress(text, 1)), "window_gzip": len(gzip.compress(text)),
                     "section_json": len(section)}
    return out


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--bundle")
    ap.add_argument("--blocks", type=int, default=12)
    ap.add_argument("--requests", type=int, default=300)
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        bundle = _bundle(args.bundle, work)
        p50 = serve_p50(bundle, work, args.blocks, args.requests)
        for arm, v in p50.items():
            print(f"serve single-row p50 [{arm}]: min {min(v) * 1e6:.0f} us, median {statistics.median(v) * 1e6:.0f} us"
                  f" ({len(v)} blocks of {args.requests})")
        ratio = [i / b for i, b in zip(p50["ids"], p50["baseline"])]
        print(f"ids/baseline p50 ratio per block: min {min(ratio):.3f}, median {statistics.median(ratio):.3f}")
        print("pending prediction:", {k: round(v, 1) for k, v in pending_costs(bundle, work).items()})
        for name, b in window_bytes().items():
            print(f"feedback window, {name}: {b}")


if __name__ == "__main__":
    main()
