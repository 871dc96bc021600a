"""A child process for the SIGKILL tests: records and uploads windows as fast as it can.

``python -m tests.monitor_agent._killable STATE URL DEVICE TOKEN RUN JOURNAL [--final]``

Every window the outbox has committed is appended to JOURNAL as ``seq rows`` (after the
commit returned, so a line always means a durable window); ``write``/``upload``/
``uploaded`` mark what it was doing, so the parent can tell where each kill landed. Every few windows it syncs
with the real collector. The parent kills it with SIGKILL at a random moment. With
``--final`` it only syncs until nothing is left, then exits 0.
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np

from mlpack_edge.monitor_agent.agent import Agent, ModelInfo
from mlpack_edge.monitor_agent.config import AgentConfig
from mlpack_edge.monitor_agent.wire import Window

from .helpers import MODEL_HASH, T0, FakeClock, fixed_sampler, make_profile, traffic


def main(argv: list[str]) -> int:
    state, url, device, token, run, journal_path = argv[:6]
    config = AgentConfig(collector_url=url, device_id=device, token=token)
    clock = FakeClock(T0 + int(run) * 10_000_000)
    agent = Agent.open(ModelInfo(MODEL_HASH, "churn", "1.2.0", make_profile()), Path(state), config,
                       clock=clock, sampler=fixed_sampler)
    if "--final" in argv:
        for _ in range(100):
            result = agent.sync()
            if result.outcome == "nothing":
                return 0
            if result.outcome not in ("delivered",):
                print(result.summary(), file=sys.stderr)
                return 1
        return 1
    journal = open(journal_path, "a", encoding="utf-8")  # noqa: SIM115 - lives until the kill
    store = agent.outbox.add_window

    def note(line: str) -> None:
        journal.write(line + "\n")
        journal.flush()  # in the page cache: survives SIGKILL of this process

    def committed(window: Window) -> None:
        store(window)
        note(f"{window.seq} {window.rows}")

    agent.recorder.on_window = committed
    rng = np.random.default_rng(int(run))
    note(f"run {run}")
    print("ready", file=sys.stderr, flush=True)  # the parent times most kills from here
    n = 0
    while True:
        agent.recorder.record(*traffic(rng, int(rng.integers(1, 20))), 0.001)
        clock.advance(60)
        note("write")
        agent.tick()  # closes the window: the outbox transaction
        n += 1
        if n % 4 == 0:
            note("upload")
            agent.sync()
            note("uploaded")


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
