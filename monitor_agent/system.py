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

    def once(self) -> SystemStats:
        """A first and only sample (a one-shot ``predict`` at exit), read from ``/proc`` without psutil.

        The same figures psutil gives for a first sample (process CPU since it started, RSS,
        machine CPU since the sampler was made, memory %, free disk), without its ~10 ms import
        on the exit path. Where ``/proc`` is missing or unreadable: :meth:`__call__`. It primes
        nothing, so it is for a sampler that samples once.
        """
        got = _proc_sample(self.state_dir, self._machine_ref) if self._proc is None else None
        return got if got is not None else self()

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


def _proc_sample(state_dir: Path, machine_ref: tuple[int, int] | None) -> SystemStats | None:
    """:meth:`SystemSampler.once` from ``/proc`` (Linux); ``None`` where it cannot be read."""
    if machine_ref is None:
        return None
    try:
        with open("/proc/self/stat", "rb") as fh:
            fields = fh.read().rsplit(b")", 1)[1].split()  # after the command name, which may hold spaces
        with open("/proc/self/statm", "rb") as fh:
            rss = float(int(fh.read().split()[1]) * os.sysconf("SC_PAGE_SIZE"))
        with open(_PROC_STAT, "rb") as fh:
            boot = next(int(line.split()[1]) for line in fh if line.startswith(b"btime "))
        with open("/proc/meminfo", "rb") as fh:
            info = {line.split(b":")[0]: int(line.split()[1]) for line in fh}
        total, available = info[b"MemTotal"], info[b"MemAvailable"]
    except (OSError, ValueError, IndexError, KeyError, StopIteration):
        return None
    ticks = os.sysconf("SC_CLK_TCK")
    started = boot + int(fields[19]) / ticks  # field 22, starttime: as psutil's create_time
    times = os.times()
    elapsed = max(time.time() - started, 0.01)
    try:
        st = os.statvfs(state_dir)
        disk_free: float | None = float(st.f_bavail * st.f_frsize)
    except OSError:
        disk_free = None
    return SystemStats(
        samples=1,
        proc_cpu=round(100.0 * (times.user + times.system) / elapsed, 1),
        proc_rss_sum=rss,
        proc_rss_max=rss,
        cpu=_busy_percent(machine_ref, _machine_jiffies()),
        mem=round(100.0 * (total - available) / total, 1) if total > 0 else 0.0,
        disk_free_min=disk_free,
    )
