"""Simulated devices for the collector tests: real profiles, real binning, real wire windows.

Rows are drawn from known distributions and binned with the very functions a device
uses (:mod:`mlpack_edge.monitor_agent.profile`), so a shifted device really drifts.
"""

from __future__ import annotations

import gzip
import hashlib
import json
from typing import Any

import numpy as np

from mlpack_edge.monitor_agent.histogram import LatencyHistogram
from mlpack_edge.monitor_agent.profile import Profile, bin_categorical, bin_numeric, build_profile
from mlpack_edge.monitor_agent.wire import BinCounts, SystemStats, Window

COLOURS = ["blue", "green", "red"]


def make_profile(n_numeric: int = 3, seed: int = 0) -> Profile:
    rng = np.random.default_rng(seed)
    feats: list[tuple[str, Any, Any]] = [(f"x{i}", "numeric", rng.normal(0, 1, 2000)) for i in range(n_numeric)]
    feats.append(("colour", "categorical", list(rng.choice(COLOURS, 2000, p=[0.5, 0.3, 0.2]))))
    preds = rng.choice(["0", "1"], 2000, p=[0.6, 0.4])
    return build_profile(feats, ("categorical", list(preds), ["0", "1"]))


def model_hash(name: str, version: str) -> str:
    return hashlib.sha256(f"{name}-{version}".encode()).hexdigest()


class SimDevice:
    """Produces consecutive one-minute windows; ``shift`` moves x0 by that many sd."""

    def __init__(self, name: str, profile: Profile, model: str, seed: int = 1, shift: float = 0.0,
                 error_rate: float = 0.0) -> None:
        self.name = name
        self.profile = profile
        self.model = model
        self.rng = np.random.default_rng(seed)
        self.shift = shift
        self.error_rate = error_rate
        self.latency_scale = 1.0  # multiplies the ~2 ms request latency (a slower build)
        self.seq = 0

    def window(self, start: float, rows: int = 50) -> Window:
        feats: dict[str, BinCounts] = {}
        for f in self.profile.features:
            if f.kind == "numeric":
                x = self.rng.normal(self.shift if f.name == "x0" else 0.0, 1.0, rows)
                b = bin_numeric(np.asarray(f.edges), x, f.min, f.max)
                feats[f.name] = BinCounts(b.counts.tolist(), b.missing, b.below, b.above, 0)
            else:
                vals = list(self.rng.choice(COLOURS, rows, p=[0.5, 0.3, 0.2]))
                c = bin_categorical({k: i for i, k in enumerate(f.categories)}, vals)
                feats[f.name] = BinCounts(c.counts.tolist(), c.missing, 0, 0, c.unseen)
        pred = self.profile.prediction
        assert pred is not None and pred.kind == "categorical"
        pc = bin_categorical({k: i for i, k in enumerate(pred.categories)}, list(self.rng.choice(["0", "1"], rows, p=[0.6, 0.4])))
        lat = LatencyHistogram()
        lat.add_many(self.rng.lognormal(np.log(0.002 * self.latency_scale), 0.3, rows).tolist())
        errors = int(self.rng.binomial(rows, self.error_rate)) if self.error_rate else 0
        w = Window(
            model=self.model, seq=self.seq, start=start, end=start + 60, requests=rows, rows=rows,
            errors={"validation": errors} if errors else {}, latency=lat, features=feats,
            predictions=BinCounts(pc.counts.tolist(), pc.missing, 0, 0, pc.unseen),
            system=SystemStats(samples=6, proc_cpu=30.0, proc_rss_sum=3e8, proc_rss_max=5e7, cpu=120.0, mem=300.0,
                               disk_free_min=1e10),
        )
        self.seq += 1
        return w

    def batch(self, windows: list[Window], name: str = "demo", version: str = "1.0.0",
              include_model: bool = True, **extra: Any) -> dict[str, Any]:
        out: dict[str, Any] = {
            "schema": 1,
            "device": self.name,
            "models": {self.model: {"name": name, "version": version, "profile": self.profile.to_dict()}} if include_model else {},
            "windows": [w.to_dict() for w in windows],
            "audit": [],
            "outbox": {"produced": self.seq, "merged": 0, "dropped": 0, "dropped_rows": 0},
        }
        out.update(extra)
        return out


def gz(payload: Any) -> bytes:
    return gzip.compress(json.dumps(payload).encode("utf-8"))
