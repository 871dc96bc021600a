"""The device executable the chaos tests kill: the breast-cancer example, built once per session.

It is built with the session's runtime cache (tests/conftest.py), which other slow tests
that build executables share, so a whole run freezes the runtime once for all of them.
"""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from types import ModuleType

import pytest

ROOT = Path(__file__).resolve().parents[2]


def chaos_module() -> ModuleType:
    """``benchmarks/chaos.py``: the test runs the benchmark's own harness, scaled down."""
    name = "mlpack_benchmarks_chaos"
    if name not in sys.modules:
        spec = importlib.util.spec_from_file_location(name, ROOT / "benchmarks" / "chaos.py")
        assert spec is not None and spec.loader is not None
        module = importlib.util.module_from_spec(spec)
        sys.modules[name] = module
        spec.loader.exec_module(module)
    return sys.modules[name]


@pytest.fixture(scope="session")
def device_exe(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return chaos_module().build_example(tmp_path_factory.mktemp("chaos-build"))
