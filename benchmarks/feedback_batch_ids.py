"""What the monitoring agent's prediction ids cost a batch request, per request, off the HTTP path.

    .venv/bin/python benchmarks/feedback_batch_ids.py [--bundle DIR] [--batch 100] [--requests 3000]
        [--max-pending 1000000] [--rounds 3]

``serve`` with the agent on gives every row of a batch request an id and remembers its
class code for the feedback join. This drives that path directly, as ``serve`` does, for
the fleet_faults example (4 classes) unless ``--bundle`` names another:

* request thread: ``Agent.new_ids(batch)`` then ``Agent.remember(ids, codes)``;
* tick thread: the drain the agent asks for (its wake event set: ``TICK_DRAIN_ROWS``),
  ``FeedbackStore.remember_many`` and the SQLite transaction that writes the blocks.

Two store states: *fresh* (an empty ``feedback.sqlite``) and *full* (``--max-pending``
predictions already pending, so every drain also evicts the oldest: the steady state of a
long-running ``serve``; ``--max-pending`` defaults to the agent's 1,000,000). Reported: CPU
(``time.process_time``) per request of each part, min and median over ``--rounds``. Run under
``valgrind --tool=callgrind`` with ``--rounds 1`` for instruction counts.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
from feedback import _bundle  # benchmarks/ is sys.path[0] when run as a script


def one_round(bundle: Path, work: Path, batch: int, requests: int, fill: int, max_pending: int) -> tuple[float, float]:
    """CPU seconds per request: (request thread, tick thread's drains), after ``fill`` rows pending."""
    from mlpack_edge.monitor_agent.agent import TICK_DRAIN_ROWS, Agent, ModelInfo
    from mlpack_edge.monitor_agent.config import AgentConfig

    state = Path(tempfile.mkdtemp(dir=work))
    agent = Agent.open(ModelInfo.from_bundle_dir(bundle), state, AgentConfig(feedback_max_pending=max_pending),
                       sampler=None)
    agent._started = True  # remember() buffers and wakes the tick, as under serve; the drains run here
    agent._drain_rows = TICK_DRAIN_ROWS
    codes = np.random.default_rng(0).integers(0, 4, batch)
    store = agent.feedback
    for _ in range(fill // 10_000):  # pending rows, in blocks as batches leave them
        store.remember_many(agent.model.content_hash,
                            [(agent.new_ids(batch), codes, time.time()) for _ in range(10_000 // batch)])
        store.flush()
    clock, wake = time.process_time, agent._wake
    front = back = 0.0
    for _ in range(requests):
        t0 = clock()
        agent.remember(agent.new_ids(batch), codes.copy())  # model.codes makes a fresh array a request
        t1 = clock()
        front += t1 - t0
        if wake.is_set():
            wake.clear()
            agent._drain_remembered()
            back += clock() - t1
    t1 = clock()
    agent._drain_remembered()
    back += clock() - t1
    agent._started = False
    agent.stop()
    return front / requests, back / requests


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--bundle")
    ap.add_argument("--batch", type=int, default=100)
    ap.add_argument("--requests", type=int, default=3000)
    ap.add_argument("--max-pending", type=int, default=1_000_000)
    ap.add_argument("--rounds", type=int, default=3)
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        bundle = _bundle(args.bundle, work, "fleet_faults")
        for name, fill in (("fresh", 0), ("full", args.max_pending)):
            runs = [one_round(bundle, work, args.batch, args.requests, fill, args.max_pending) for _ in range(args.rounds)]
            for part, values in (("request thread", [r[0] for r in runs]), ("tick thread", [r[1] for r in runs])):
                us = [v * 1e6 for v in values]
                print(f"{name:5} store, batch {args.batch}: {part:14} min {min(us):7.1f} / median "
                      f"{statistics.median(us):7.1f} us CPU a request")


if __name__ == "__main__":
    main()
