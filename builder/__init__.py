"""The workstation side: a spec and a CSV in, a gated, proven, deterministic bundle out.

    from mlpack_edge.builder import build, load_spec, BuildResult
    result = build("examples/breast_cancer/mlpack.toml", executable=False)
    result.bundle_dir, result.manifest["metrics"], result.stages

Attributes load on first use, so ``mlpack build --help`` (and anything else that only
touches this package) does not pay for importing scikit-learn, skl2onnx and pandas.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

__all__ = [
    "build",
    "load_spec",
    "BuildResult",
    "Spec",
    "Reporter",
    "ConsoleReporter",
    "NullReporter",
    "RecordingReporter",
]

_WHERE = {
    "build": "mlpack_edge.builder.pipeline",
    "BuildResult": "mlpack_edge.builder.pipeline",
    "load_spec": "mlpack_edge.builder.spec",
    "Spec": "mlpack_edge.builder.spec",
    "Reporter": "mlpack_edge.builder.progress",
    "ConsoleReporter": "mlpack_edge.builder.progress",
    "NullReporter": "mlpack_edge.builder.progress",
    "RecordingReporter": "mlpack_edge.builder.progress",
}

if TYPE_CHECKING:
    from mlpack_edge.builder.pipeline import BuildResult, build
    from mlpack_edge.builder.progress import ConsoleReporter, NullReporter, RecordingReporter, Reporter
    from mlpack_edge.builder.spec import Spec, load_spec


def __getattr__(name: str) -> Any:
    if name in _WHERE:
        return getattr(importlib.import_module(_WHERE[name]), name)
    raise AttributeError(f"module 'mlpack_edge.builder' has no attribute {name!r}")
