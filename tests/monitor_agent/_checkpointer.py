"""A child process for the checkpoint tests: records, checkpoints, then waits to be killed.

``python -m tests.monitor_agent._checkpointer STATE MODE CHUNKS ROWS [AFTER]``

* ``serve``: an eager agent (as ``serve`` opens it); ``CHUNKS`` records of ``ROWS`` rows,
  then one :meth:`Agent.checkpoint` (what the tick thread does), then ``AFTER`` more rows
  that no checkpoint covers.
* ``predict``: a deferred agent (as a one-shot ``predict``), ``CHUNKS`` records of
  ``ROWS`` rows with the fake clock moving 0.2 s per chunk, so ``record`` checkpoints on
  its own every 0.5 s; then ``AFTER`` more rows.
* ``closing`` / ``closing-no-checkpoint``: as ``serve`` (checkpoints off in the second),
  then the window's end passes and the tick closes it on a slow disk: the transaction
  storing it hangs before its commit, and ``closing`` is printed -- the moment the
  parent kills it (the window closed on its boundary, its write still in flight).

Prints ``ready <rows recorded> <rows checkpointed>`` on stderr, then sleeps until killed.
The fake clock starts at ``T0``; windows are 3600 s long so nothing closes on its own.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

import numpy as np

from mlpack_edge.monitor_agent.agent import Agent, ModelInfo
from mlpack_edge.monitor_agent.config import AgentConfig

from .helpers import MODEL_HASH, FakeClock, fixed_sampler, make_profile, traffic


def main(argv: list[str]) -> int:
    state, mode, chunks, rows = argv[0], argv[1], int(argv[2]), int(argv[3])
    after = int(argv[4]) if len(argv) > 4 else 0
    clock = FakeClock()
    every = 0 if mode == "closing-no-checkpoint" else 0.5
    config = AgentConfig(window_seconds=3600, checkpoint_seconds=every, checkpoint_rows=10**6)
    agent = Agent.open(ModelInfo(MODEL_HASH, "churn", "1.2.0", make_profile()), Path(state), config, clock=clock,
                       sampler=fixed_sampler, deferred=mode == "predict")
    agent.recorder.auto_roll = mode == "predict"  # serve: only the tick closes windows and checkpoints
    rng = np.random.default_rng(7)
    recorded = 0
    for _ in range(chunks):
        if mode == "predict":
            clock.advance(0.2)
        agent.recorder.record(*traffic(rng, rows), 0.002)
        recorded += rows
    if mode != "predict":
        agent.checkpoint() if every else None
    checkpointed = (agent.recorder.snapshot().rows if every else 0) if mode != "predict" else _last_checkpoint(agent)
    for _ in range(after):
        agent.recorder.record(*traffic(rng, 1), 0.002)
        recorded += 1
    if mode.startswith("closing"):
        from mlpack_edge.monitor_agent.outbox import Outbox

        insert = Outbox._insert_window

        def slow_disk(self: Outbox, conn: object, window: object) -> int:
            seq = insert(self, conn, window)  # type: ignore[arg-type]
            print(f"ready {recorded} {checkpointed}", file=sys.stderr, flush=True)  # closed, not committed
            time.sleep(600)
            return seq

        Outbox._insert_window = slow_disk  # type: ignore[method-assign]
        clock.advance(3600)
        agent.tick()
        return 1
    print(f"ready {recorded} {checkpointed}", file=sys.stderr, flush=True)
    time.sleep(600)
    return 1


def _last_checkpoint(agent: Agent) -> int:
    """Rows in this process's checkpoint row, read back from the outbox."""
    assert agent._owner is not None
    conn = agent.outbox._conn
    assert conn is not None
    (rows,) = conn.execute("SELECT rows FROM checkpoints WHERE owner = ?", (agent._owner.name,)).fetchone()
    return int(rows)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
