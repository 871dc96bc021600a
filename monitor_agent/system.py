"""System samples (psutil): how loaded the device is while it serves the model.

One sample = process CPU % and RSS, machine CPU % and memory %, free bytes on the
state dir's disk; it becomes a :class:`~mlpack_edge.monitor_agent.wire.SystemStats` with
``samples = 1`` so windows add them up (averages are ``sum / samples``).

CPU percentages cover the time since the previous sample; the first sample covers the
time since the process started (its own CPU) and since the sampler was made (the
machine's). Making a sampler costs one read of ``/proc/stat``: psutil (~5-10 ms to
import) is loaded by the first sample, so a one-shot ``predict`` that samples once at
exit does not pay for it before its first prediction.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from mlpack_edge.monitor_agent.wire import SystemStats

__all__ = ["SystemSampler", "Sampler", "DEFAULT_SAMPLE_SECONDS"]

DEFAULT_SAMPLE_SECONDS = 10.0

Sampler = Callable[[], SystemStats]

_PROC_STAT = "/proc/stat"


class SystemSampler:
    """Samples this process and the machine; CPU percentages are since the previous sample."""

    def __init__(self, state_dir: str | os.PathLike[str]) -> None:
        self.state_dir = Path(state_dir)
        self._proc: Any = None  # psutil.Process, made by the first sample
        self._machine_ref = _machine_jiffies()  # None where there is no /proc/stat

    def __call__(self) -> SystemStats:
        import psutil

        first = self._proc is None
        if first:
            self._proc = psutil.Process()
        with self._proc.oneshot():
            proc_cpu = _since_start(self._proc) if first else self._proc.cpu_percent(None)
            rss = float(self._proc.memory_info().rss)
        if first and self._machine_ref is not None:
            cpu = _busy_percent(self._machine_ref, _machine_jiffies())
            psutil.cpu_percent(None)  # later samples: since this one
        else:
            cpu = psutil.cpu_percent(None)
        try:
            disk_free: float | None = float(psutil.disk_usage(str(self.state_dir)).free)
        except OSError:
            disk_free = None
        return SystemStats(
            samples=1,
            proc_cpu=proc_cpu,
            proc_rss_sum=rss,
            proc_rss_max=rss,
            cpu=cpu,
            mem=psutil.virtual_memory().percent,
            disk_free_min=disk_free,
        )


def _since_start(proc: Any) -> float:
    """This process's CPU % (of one core, as psutil counts it) since it started; primes ``cpu_percent``."""
    times = proc.cpu_times()
    proc.cpu_percent(None)  # reference point for the next sample
    elapsed = max(time.time() - proc.create_time(), 0.01)  # create_time has a 10 ms resolution
    return round(100.0 * (times.user + times.system) / elapsed, 1)


def _machine_jiffies() -> tuple[int, int] | None:
    """(busy, total) CPU time of the machine from ``/proc/stat``, counted as psutil counts it."""
    try:
        with open(_PROC_STAT, "rb") as fh:
            values = [int(v) for v in fh.readline().split()[1:]]
    except (OSError, ValueError):
        return None
    # user nice system idle iowait irq softirq steal [guest guest_nice]: guest time is
    # already inside user and nice; idle and iowait are not busy.
    total = sum(values[:8])
    return total - values[3] - (values[4] if len(values) > 4 else 0), total


def _busy_percent(before: tuple[int, int], after: tuple[int, int] | None) -> float:
    if after is None or after[1] <= before[1]:
        return 0.0  # no tick elapsed (psutil answers 0.0 then too)
    busy = min(max(after[0] - before[0], 0), after[1] - before[1])
    return round(100.0 * busy / (after[1] - before[1]), 1)
