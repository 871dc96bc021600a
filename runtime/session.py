"""The onnxruntime session: options chosen on purpose, created once per model.

Measured on the 2-core reference machine (benchmarks/predict_latency.py): a single row
costs the same with 1 or 2 intra-op threads (the work is too small to split), while a
100k-row batch of a tree ensemble runs ~1.7x faster on 2 threads. So the default is one
intra-op thread per usable core, with spinning switched off: a device that answers one
request now and then should not have idle worker threads burning a core after each
call (spinning buys a little batch throughput at that price). Graph optimisation is
done once, at session creation.
"""

from __future__ import annotations

import os
from typing import Any

import onnxruntime as ort

from mlpack.errors import BundleError

__all__ = ["default_threads", "session_options", "create_session", "runner"]


def default_threads() -> int:
    """Usable cores of this process (its CPU affinity, not the machine's count)."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # pragma: no cover - not on Linux
        return max(1, os.cpu_count() or 1)


def session_options(threads: int | None = None) -> ort.SessionOptions:
    """Session options for ``threads`` intra-op threads (``None``: one per usable core)."""
    n = default_threads() if threads is None else threads
    if n < 1:
        raise ValueError(f"threads must be at least 1, got {n}")
    so = ort.SessionOptions()
    so.intra_op_num_threads = n
    so.inter_op_num_threads = 1
    so.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    so.log_severity_level = 3  # errors only: warnings about the graph are not the user's business
    so.add_session_config_entry("session.intra_op.allow_spinning", "0")
    return so


def create_session(model: bytes, where: str, threads: int | None = None) -> ort.InferenceSession:
    """An onnxruntime session on the CPU for the model bytes; a bad model is a ``BundleError``."""
    try:
        return ort.InferenceSession(model, session_options(threads), providers=["CPUExecutionProvider"])
    except Exception as exc:  # onnxruntime raises its own pybind exception types
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else exc.__class__.__name__
        raise BundleError(f"{where}: onnxruntime cannot load the model ({first})") from None


def runner(session: ort.InferenceSession) -> Any:
    """``run(output_names, feeds, None)`` with the least overhead available.

    ``InferenceSession._sess.run`` is the C++ binding behind the public ``run``; calling it
    directly skips ~1 µs of Python argument checks per call, about a quarter of a
    single-row linear model's whole cost. Our feeds are validated and typed before they
    get here, so those checks have nothing to add. It is private API, so if a future
    onnxruntime lacks it we fall back to the public ``run``.
    """
    inner = getattr(session, "_sess", None)
    fast = getattr(inner, "run", None)
    if fast is not None:
        return fast
    return session.run  # pragma: no cover - an onnxruntime without the private binding
