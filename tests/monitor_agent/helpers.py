"""Test helpers shared by the agent's tests and their child processes (no pytest imports)."""

from __future__ import annotations

import gzip
import json
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from mlpack_edge.monitor_agent.profile import Profile, build_profile
from mlpack_edge.monitor_agent.transport import Response, TransportError
from mlpack_edge.monitor_agent.wire import SystemStats, validate_batch

MODEL_HASH = "ab" * 32
T0 = 1_764_000_000.0  # a multiple of 60 and of 3600


class FakeClock:
    """A clock tests move by hand: ``clock()`` reads it, ``clock.advance(s)`` moves it."""

    def __init__(self, now: float = T0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


@dataclass
class FakeCollector:
    """An in-memory collector behind the Transport seam.

    It validates every batch with the shared wire schema, learns the models batches
    carry, stores windows by (seq, seq_last) and answers like the real one
    (stored/duplicates; 422 for a window of a model it does not know; ``models.clear()``
    is a database reset). ``script`` holds replies (or exceptions) to use instead, one
    per request, before it behaves normally again.
    """

    models: dict[str, dict[str, Any]] = field(default_factory=dict)
    windows: dict[tuple[int, int], dict[str, Any]] = field(default_factory=dict)
    audit: dict[int, dict[str, Any]] = field(default_factory=dict)
    requests: list[dict[str, Any]] = field(default_factory=list)
    headers: list[Mapping[str, str]] = field(default_factory=list)
    script: list[Response | Exception | Callable[[dict[str, Any]], Response]] = field(default_factory=list)
    outbox_reports: list[dict[str, int]] = field(default_factory=list)

    def send(self, url: str, body: bytes, headers: Mapping[str, str]) -> Response:
        payload = json.loads(gzip.decompress(body))
        self.requests.append(payload)
        self.headers.append(dict(headers))
        if self.script:
            step = self.script.pop(0)
            if isinstance(step, Exception):
                raise step
            if callable(step):
                return step(payload)
            return step
        return self.handle(payload)

    def handle(self, payload: dict[str, Any]) -> Response:
        """What a correct collector does with a batch."""
        device, models, windows, audit, outbox = validate_batch(payload)
        for i, w in enumerate(windows):
            if w.model not in models and w.model not in self.models:
                error = f"windows[{i}].model: unknown model {w.model[:12]}; send it in the batch's models section"
                return Response(422, {}, json.dumps({"error": error}).encode())
        self.models.update(models)
        stored, dups = [], []
        for w in windows:
            key = (w.seq, w.seq_last)
            if key in self.windows:
                dups.append(w.seq)
            else:
                assert not any(a <= w.seq_last and w.seq <= b for a, b in self.windows), "overlapping range"
                self.windows[key] = w.to_dict()
                stored.append(w.seq)
        for a in audit:
            self.audit.setdefault(a["seq"], a)
        self.outbox_reports.append(outbox)
        return Response(200, {}, json.dumps({"stored": stored, "duplicates": dups}).encode())


def unreachable() -> TransportError:
    return TransportError("127.0.0.1:9: Connection refused")


def make_profile(seed: int = 0) -> Profile:
    rng = np.random.default_rng(seed)
    n = 2000
    age = rng.normal(40, 10, n)
    age[:40] = np.nan
    return build_profile(
        [
            ("age", "numeric", age),
            ("income", "numeric", rng.lognormal(10, 1, n)),
            ("colour", "categorical", rng.choice(["blue", "red", "green"], n, p=[0.5, 0.3, 0.2]).tolist()),
            ("score", "numeric", rng.uniform(0, 1, n)),
        ],
        prediction=("categorical", rng.choice(["no", "yes", "maybe"], n).tolist(), ["maybe", "no", "yes"]),
    )


def traffic(rng: np.random.Generator, n: int, shift: float = 0.0) -> tuple[np.ndarray, list[list[str]], np.ndarray]:
    """``n`` rows in the recorder's layout: numeric [n, 3] (age, income, score), colour, class index."""
    numeric = np.column_stack(
        [rng.normal(40 + shift, 10, n), rng.lognormal(10, 1, n), rng.uniform(0, 1, n)]
    )
    colour = rng.choice(["blue", "red", "green", "", "purple"], n, p=[0.5, 0.25, 0.15, 0.05, 0.05]).tolist()
    return numeric, [colour], rng.integers(0, 3, n)


def fixed_sampler() -> SystemStats:
    return SystemStats(samples=1, proc_cpu=5.0, proc_rss_sum=1e8, proc_rss_max=1e8, cpu=20.0, mem=40.0,
                       disk_free_min=1e10)
