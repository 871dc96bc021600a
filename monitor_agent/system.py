"""System samples: how loaded the device is while it serves the model.

One sample = process CPU % and RSS, machine CPU % and memory %, free bytes on the
state dir's disk; it becomes a :class:`~mlpack_edge.monitor_agent.wire.SystemStats` with
``samples = 1`` so windows add them up (averages are ``sum / samples``).

CPU percentages cover the time since the previous sample; the first sample covers the
time since the process started (its own CPU) and since the sampler was made (the
machine's). On Linux every sample is read from ``/proc`` (the figures psutil gives, see
``tests/monitor_agent/test_system.py``): psutil is imported only where ``/proc`` cannot
be read, because its import is ~5-10 ms on a one-shot ``predict``'s exit path and about
0.5 MB that a long-running ``serve`` would hold for nothing.
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
        self._proc: Any = None  # psutil.Process: only where /proc cannot be read
        self._machine_ref = _machine_jiffies()  # None where there is no /proc/stat
        self._proc_ref: tuple[float, float] | None = None  # (CPU seconds, wall time) at the last /proc sample

    def once(self) -> SystemStats:
        """A first and only sample (a one-shot ``predict`` at exit): the same as the first call."""
        return self()

    def __call__(self) -> SystemStats:
        if self._proc is None and self._machine_ref is not None:
            got = _proc_sample(self.state_dir, self._machine_ref, self._proc_ref)
            if got is not None:
                sample, self._machine_ref, self._proc_ref = got
                return sample
        return self._psutil_sample()

    def _psutil_sample(self) -> SystemStats:
        """Where ``/proc`` is missing or unreadable (not Linux)."""
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


def _proc_sample(
    state_dir: Path, machine_ref: tuple[int, int], proc_ref: tuple[float, float] | None
) -> tuple[SystemStats, tuple[int, int], tuple[float, float]] | None:
    """A sample from ``/proc`` (Linux) and the references for the next one; ``None`` where it
    cannot be read. ``proc_ref`` ``None``: the process's CPU since it started (psutil's
    ``create_time``), else since ``proc_ref``'s (CPU seconds, wall time), as ``cpu_percent``."""
    try:
        with open("/proc/self/statm", "rb") as fh:
            rss = float(int(fh.read().split()[1]) * os.sysconf("SC_PAGE_SIZE"))
        with open("/proc/meminfo", "rb") as fh:
            info = {}
            for line in fh:  # the first three lines hold both figures
                key, _, rest = line.partition(b":")
                info[key] = int(rest.split()[0])
                if b"MemAvailable" in info:
                    break
        total, available = info[b"MemTotal"], info[b"MemAvailable"]
        machine = _machine_jiffies()
        if machine is None:
            return None
        times = os.times()
        now = time.time()
        cpu_s = times.user + times.system
        if proc_ref is None:
            with open("/proc/self/stat", "rb") as fh:
                fields = fh.read().rsplit(b")", 1)[1].split()  # after the command name, which may hold spaces
            with open(_PROC_STAT, "rb") as fh:
                boot = next(int(line.split()[1]) for line in fh if line.startswith(b"btime "))
            started = boot + int(fields[19]) / os.sysconf("SC_CLK_TCK")  # field 22, starttime: as psutil's create_time
            proc_cpu = round(100.0 * cpu_s / max(now - started, 0.01), 1)
        else:
            elapsed = now - proc_ref[1]
            proc_cpu = round(100.0 * (cpu_s - proc_ref[0]) / elapsed, 1) if elapsed > 0 else 0.0
    except (OSError, ValueError, IndexError, KeyError, StopIteration):
        return None
    try:
        st = os.statvfs(state_dir)
        disk_free: float | None = float(st.f_bavail * st.f_frsize)
    except OSError:
        disk_free = None
    sample = SystemStats(
        samples=1,
        proc_cpu=proc_cpu,
        proc_rss_sum=rss,
        proc_rss_max=rss,
        cpu=_busy_percent(machine_ref, machine),
        mem=round(100.0 * (total - available) / total, 1) if total > 0 else 0.0,
        disk_free_min=disk_free,
    )
    return sample, machine, (cpu_s, now)
