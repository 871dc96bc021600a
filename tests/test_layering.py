"""The device side must import and run without the training stack.

Runs in a subprocess whose import system refuses scikit-learn, skl2onnx, onnx, pandas
and scipy, the way a device without them would.
"""

from __future__ import annotations

import subprocess
import sys
import textwrap

BLOCKED = ("sklearn", "skl2onnx", "onnx", "pandas", "scipy", "mlpack_edge.builder", "mlpack_edge.collector")

_PROBE = textwrap.dedent(
    """
    import importlib.abc, sys
    BLOCKED = {blocked!r}

    class Block(importlib.abc.MetaPathFinder):
        def find_spec(self, name, path=None, target=None):
            if any(name == b or name.startswith(b + ".") for b in BLOCKED):
                raise ImportError("blocked on a device: " + name)
            return None

    sys.meta_path.insert(0, Block())
    import pkgutil, mlpack_edge
    import mlpack_edge.runtime, mlpack_edge.monitor_agent
    for pkg in (mlpack_edge.runtime, mlpack_edge.monitor_agent):
        for info in pkgutil.walk_packages(pkg.__path__, pkg.__name__ + "."):
            importlib.import_module(info.name)
    leaked = sorted(m for m in sys.modules if any(m == b or m.startswith(b + ".") for b in BLOCKED))
    print("LEAKED", leaked)
    core = sorted(m.split(".")[1] for m in sys.modules if m.count(".") == 1 and m.startswith("mlpack_edge."))
    print("CORE", " ".join(core))
    """
)


def test_runtime_and_agent_import_without_training_stack() -> None:
    proc = subprocess.run(
        [sys.executable, "-c", _PROBE.format(blocked=BLOCKED)],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stderr
    assert "LEAKED []" in proc.stdout
    # Whatever of the top package the device side imports must be frozen into the executable.
    from mlpack_edge.builder._freeze import _CORE

    core = next(line for line in proc.stdout.splitlines() if line.startswith("CORE ")).split()[1:]
    frozen = {name.removesuffix(".py") for name in _CORE} | {"runtime", "monitor_agent"}
    assert set(core) <= frozen, f"the device imports mlpack_edge.{set(core) - frozen} which the freeze leaves out"


def test_block_really_blocks() -> None:
    """Guard against a probe that passes because the block does nothing."""
    probe = _PROBE.format(blocked=BLOCKED) + "\nimport sklearn\n"
    proc = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=120)
    assert proc.returncode != 0
    assert "blocked on a device: sklearn" in proc.stderr
