"""System samples (psutil): how loaded the device is while it serves the model.

One sample = process CPU % and RSS, machine CPU % and memory %, free bytes on the
state dir's disk; it becomes a :class:`~mlpack.monitor_agent.wire.SystemStats` with
``samples = 1`` so windows add them up (averages are ``sum / samples``).
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

import psutil

from mlpack.monitor_agent.wire import SystemStats

__all__ = ["SystemSampler", "Sampler", "DEFAULT_SAMPLE_SECONDS"]

DEFAULT_SAMPLE_SECONDS = 10.0

Sampler = Callable[[], SystemStats]


class SystemSampler:
    """Samples this process and the machine; CPU percentages are since the previous sample."""

    def __init__(self, state_dir: str | os.PathLike[str]) -> None:
        self.state_dir = Path(state_dir)
        self._proc = psutil.Process()
        self._proc.cpu_percent(None)  # the first call only sets the reference point
        psutil.cpu_percent(None)

    def __call__(self) -> SystemStats:
        with self._proc.oneshot():
            proc_cpu = self._proc.cpu_percent(None)
            rss = float(self._proc.memory_info().rss)
        try:
            disk_free: float | None = float(psutil.disk_usage(str(self.state_dir)).free)
        except OSError:
            disk_free = None
        return SystemStats(
            samples=1,
            proc_cpu=proc_cpu,
            proc_rss_sum=rss,
            proc_rss_max=rss,
            cpu=psutil.cpu_percent(None),
            mem=psutil.virtual_memory().percent,
            disk_free_min=disk_free,
        )
