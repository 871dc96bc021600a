"""The frozen entry point pauses garbage collection for start-up only (mlpack_edge.runtime._startup)."""

from __future__ import annotations

import gc
import subprocess
import sys
from pathlib import Path

from mlpack_edge.runtime import _startup

GOOD_CSV = "x1,x2,colour,shape\n1.5,,red,round\n-1,0.5,,square\n"

# Runs run() on the given argv; reports whether any collection ran before start-up's objects
# were frozen, whether the collector was on at the first write to stdout (the output comes
# after start-up), and the collector's state at exit.
_PROBE = (
    "import atexit, gc, sys\n"
    "seen = []\n"
    "gc.callbacks.append(lambda phase, info: phase == 'start' and seen.append(gc.get_freeze_count() > 0))\n"
    "class Spy:\n"
    "    def __init__(self, inner): self.inner, self.first = inner, None\n"
    "    def write(self, s):\n"
    "        if self.first is None: self.first = gc.isenabled()\n"
    "        return self.inner.write(s)\n"
    "    def __getattr__(self, name): return getattr(self.inner, name)\n"
    "sys.stdout = spy = Spy(sys.stdout)\n"
    "atexit.register(lambda: print('BEFORE FREEZE', seen.count(False), 'FIRST', spy.first,"
    " 'EXIT', gc.isenabled(), gc.get_freeze_count() > 0, file=sys.stderr))\n"
    "from mlpack_edge.runtime._startup import run\n"
    "seen.clear()  # from here on: what run() does\n"
    "run()\n"
)


def _run(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-c", _PROBE, *args], capture_output=True, text=True, timeout=120)


def test_predict_starts_without_collections_and_streams_with_the_collector_on(
    mixed_bundle: Path, tmp_path: Path
) -> None:
    (tmp_path / "in.csv").write_text(GOOD_CSV)
    state = tmp_path / "state"
    state.mkdir()
    proc = _run("--bundle", str(mixed_bundle), "--allow-unsigned", "predict", "--state-dir", str(state),
                str(tmp_path / "in.csv"))
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.splitlines()[0].startswith("id,")  # monitored: each row got an id
    assert len(proc.stdout.splitlines()) == 3
    # No collection during start-up; the collector back on (start-up frozen) before the output.
    assert proc.stderr.splitlines()[-1] == "BEFORE FREEZE 0 FIRST True EXIT True True", proc.stderr
    from mlpack_edge.monitor_agent.outbox import Outbox

    with Outbox.open(state) as box:  # the window was stored at exit, as without the pause
        assert [w.rows for w in box.pending_windows()] == [2]


def test_other_commands_resume_the_collector_before_they_run(mixed_bundle: Path) -> None:
    proc = _run("--bundle", str(mixed_bundle), "--allow-unsigned", "info")
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.startswith("mixed 1.0.0")
    assert proc.stderr.splitlines()[-1].endswith("EXIT True True"), proc.stderr


def test_resume_gc_is_a_no_op_unless_run_paused_the_collector() -> None:
    assert gc.isenabled() and not _startup._paused
    before = gc.get_freeze_count()
    _startup.resume_gc(collect=True)
    assert gc.isenabled() and gc.get_freeze_count() == before


def test_resume_gc_collects_freezes_and_enables_once() -> None:
    gc.disable()
    _startup._paused = True
    try:
        cycle: list[object] = []
        cycle.append(cycle)
        del cycle
        _startup.resume_gc(collect=True)
        assert gc.isenabled() and not _startup._paused
        assert gc.get_freeze_count() > 0
        assert gc.collect() == 0  # the cycle went before the freeze, not into the permanent generation
    finally:
        gc.unfreeze()
        gc.enable()
        _startup._paused = False
