"""System samples with the real psutil and /proc: sane values, CPU since the process started, a cheap sampler."""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

from mlpack_edge.monitor_agent.system import SystemSampler, _busy_percent, _machine_jiffies


def test_samples_are_sane(tmp_path: Path) -> None:
    sampler = SystemSampler(tmp_path)
    end = time.process_time() + 0.2
    while time.process_time() < end:  # burn CPU: the first sample counts it (since the process started)
        pass
    first, second = sampler(), sampler()
    for s in (first, second):
        assert s.samples == 1
        assert s.proc_rss_sum == s.proc_rss_max > 10e6  # python + numpy at least
        assert 0.0 <= s.cpu <= 100.0 and 0.0 < s.mem < 100.0
        assert s.disk_free_min is not None and s.disk_free_min > 0
    assert first.proc_cpu > 0.0  # psutil's own first cpu_percent() would say 0.0


def test_a_missing_state_dir_has_no_disk_figure(tmp_path: Path) -> None:
    assert SystemSampler(tmp_path / "gone")().disk_free_min is None


def test_machine_cpu_share_counts_like_psutil() -> None:
    assert _busy_percent((100, 1000), (130, 1100)) == 30.0
    assert _busy_percent((100, 1000), (100, 1000)) == 0.0  # no tick elapsed
    assert _busy_percent((100, 1000), None) == 0.0
    busy, total = _machine_jiffies() or (0, 0)  # this test machine is Linux
    assert 0 < busy < total


def test_sampling_on_linux_does_not_import_psutil(tmp_path: Path) -> None:
    """Every sample comes from /proc: psutil (~0.5 MB, ~10 ms) is never loaded by a serving process."""
    probe = (
        "import sys\n"
        "from mlpack_edge.monitor_agent.system import SystemSampler\n"
        f"s = SystemSampler({str(tmp_path)!r})\n"
        "print('psutil' in sys.modules, end=' ')\n"
        "a, b = s(), s()\n"
        "print('psutil' in sys.modules, a.samples + b.samples)\n"
    )
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=60, check=True)
    assert out.stdout == "False False 2\n"


def test_later_samples_count_cpu_since_the_previous_one_like_psutil(tmp_path: Path) -> None:
    """The second /proc sample's process CPU % covers the time since the first, as psutil's ``cpu_percent``."""
    import psutil

    sampler = SystemSampler(tmp_path)
    proc = psutil.Process()
    sampler()
    proc.cpu_percent(None)
    end = time.process_time() + 0.3
    while time.process_time() < end:  # one core busy: close to 100% (less on a loaded machine)
        pass
    got = sampler()
    expected = proc.cpu_percent(None)
    # How close to 100% the busy loop gets depends on the machine's load; that the figure
    # covers the interval since the first sample is what psutil's agrees with.
    assert got.proc_cpu > 0.0
    assert abs(got.proc_cpu - expected) < 15.0  # a few µs apart, 10 ms tick resolution
    assert abs(got.mem - psutil.virtual_memory().percent) < 5.0
    assert abs(got.proc_rss_max - proc.memory_info().rss) < 8e6
    time.sleep(0.3)
    idle = sampler()  # asleep since: below the busy figure
    assert idle.proc_cpu < max(got.proc_cpu, 5.0)


def test_a_single_sample_from_proc_agrees_with_psutil(tmp_path: Path) -> None:
    """``once`` (a one-shot predict's exit sample) reads /proc itself; its figures are psutil's."""
    import psutil

    end = time.process_time() + 0.2
    while time.process_time() < end:  # CPU since the process started must show
        pass
    got = SystemSampler(tmp_path).once()
    proc = psutil.Process()
    times = proc.cpu_times()
    expected_cpu = 100.0 * (times.user + times.system) / max(time.time() - proc.create_time(), 0.01)
    assert got.samples == 1 and got.proc_cpu > 0.0
    assert abs(got.proc_cpu - expected_cpu) < 10.0  # a few ms apart, 10 ms tick resolution
    assert abs(got.proc_rss_max - proc.memory_info().rss) < 8e6 and got.proc_rss_sum == got.proc_rss_max
    assert abs(got.mem - psutil.virtual_memory().percent) < 5.0
    assert got.disk_free_min is not None and abs(got.disk_free_min - psutil.disk_usage(str(tmp_path)).free) < 1e8
    assert 0.0 <= got.cpu <= 100.0
    assert SystemSampler(tmp_path / "gone").once().disk_free_min is None


def test_a_single_sample_does_not_import_psutil(tmp_path: Path) -> None:
    probe = (
        "import sys\n"
        "from mlpack_edge.monitor_agent.system import SystemSampler\n"
        f"s = SystemSampler({str(tmp_path)!r}).once()\n"
        "print('psutil' in sys.modules, s.samples, s.proc_rss_max > 1e6)\n"
    )
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=60, check=True)
    assert out.stdout == "False 1 True\n"
