"""Run request threads against an agent-like thread that rolls windows, with the GIL
switching every few bytecodes, so the races between appending rows and taking them
happen within a test's second instead of once a week in production."""

from __future__ import annotations

import sys
import threading
from collections.abc import Callable

__all__ = ["race"]


def race(work: Callable[[int], None], workers: int, tick: Callable[[], None], switch_s: float = 1e-6) -> None:
    """``work(k)`` on ``workers`` threads while ``tick()`` runs in a loop on another, until
    every worker is done; the interpreter's switch interval is restored afterwards."""
    done = threading.Event()

    def ticker() -> None:
        while not done.is_set():
            tick()

    threads = [threading.Thread(target=work, args=(k,)) for k in range(workers)]
    agent = threading.Thread(target=ticker)
    interval = sys.getswitchinterval()
    sys.setswitchinterval(switch_s)
    try:
        agent.start()
        for t in threads:
            t.start()
        for t in threads:
            t.join()
    finally:
        done.set()
        agent.join()
        sys.setswitchinterval(interval)
