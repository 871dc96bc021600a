"""The onnxruntime session: options chosen on purpose, created once per model.

Measured on the 2-core reference machine (benchmarks/predict_latency.py, the machine
shared and noisy, so trust the ratios more than the numbers):

* one row: 1 intra-op thread is never slower, and for a tree ensemble it is twice as
  fast (RandomForest 100 trees: ~5 µs vs ~10 µs with 2 threads — waking a worker
  costs more than the work it takes over);
* large batches: 2 threads help when the model has the work to split (RandomForest,
  100k rows: ~1.6x faster; a linear model gains little, memory-bound);
* spinning: with it on, a row every millisecond costs ~730 µs of CPU per call (a worker
  spins between requests, burning a core the HTTP threads need) vs ~35 µs off; but on a
  batch of thousands of rows it is what a default ``InferenceSession`` gains over a
  non-spinning 2-thread session (each parallel section's workers are awake already), and
  the tail it spins after the call is a small part of the call.

So :class:`~mlpack_edge.runtime.model.Model` and ``serve`` default to **1** thread (single
rows; ``serve`` gets its parallelism from concurrent requests), batch ``predict``
defaults to one thread per usable physical core (:func:`batch_threads`, the count a default
``InferenceSession`` picks) on a second session that spins, and the single-row session
never spins. ``--threads`` / ``threads=`` override
(one session, no spinning). Graph optimisation is done once, at load.
"""

from __future__ import annotations

import functools
import os
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

import numpy as np
import onnxruntime as ort

from mlpack_edge.errors import BundleError

__all__ = ["DEFAULT_THREADS", "batch_threads", "session_options", "create_session", "runner", "bound_row", "first_line"]

#: Intra-op threads for single rows and small requests (see the module doc).
DEFAULT_THREADS = 1


_SYS_CPU = Path("/sys/devices/system/cpu")


def batch_threads(cpus: Iterable[int] | None = None, sysfs: Path = _SYS_CPU) -> int:
    """Threads for large batches: the physical cores among this process's usable CPUs.

    A default ``InferenceSession`` (the goal's baseline) runs one thread per physical core:
    SMT siblings share one core's units, and with spinning on a sibling's spin slows the
    thread doing the work. Counting only the CPUs this process may run on (``cpus``, default
    its affinity) keeps a container pinned to fewer CPUs from oversubscribing them, which the
    default does not. Cores are told apart by ``cpuN/topology/thread_siblings_list`` under
    ``sysfs``; without it each usable CPU counts as a core.
    """
    if cpus is None:
        try:
            cpus = os.sched_getaffinity(0)
        except AttributeError:  # pragma: no cover - not on Linux
            return max(1, os.cpu_count() or 1)
    usable = list(cpus)
    cores: set[str] = set()
    for cpu in usable:
        try:
            cores.add((sysfs / f"cpu{cpu}" / "topology" / "thread_siblings_list").read_text().strip())
        except OSError:
            return max(1, len(usable))
    return max(1, len(cores))


def session_options(threads: int | None = None, spinning: bool = False) -> ort.SessionOptions:
    """Session options for ``threads`` intra-op threads (``None``: :data:`DEFAULT_THREADS`).

    ``spinning`` is on only for the session that runs large batches (see the module's notes).
    """
    n = DEFAULT_THREADS if threads is None else threads
    if n < 1:
        raise ValueError(f"threads must be at least 1, got {n}")
    so = ort.SessionOptions()
    so.intra_op_num_threads = n
    so.inter_op_num_threads = 1
    so.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    so.log_severity_level = 3  # errors only: warnings about the graph are not the user's business
    so.add_session_config_entry("session.intra_op.allow_spinning", "1" if spinning else "0")
    return so


def create_session(model: bytes, where: str, threads: int | None = None, *, spinning: bool = False) -> ort.InferenceSession:
    """An onnxruntime session on the CPU for the model bytes; a bad model is a ``BundleError``."""
    try:
        return ort.InferenceSession(model, session_options(threads, spinning), providers=["CPUExecutionProvider"])
    except Exception as exc:  # onnxruntime raises its own pybind exception types
        raise BundleError(f"{where}: onnxruntime cannot load the model ({first_line(exc)})") from None


def first_line(exc: BaseException) -> str:
    """onnxruntime's messages run over many lines; ours are one."""
    text = str(exc).strip()
    return text.splitlines()[0] if text else exc.__class__.__name__


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


def bound_row(
    session: ort.InferenceSession, input_name: str, width: int, output_name: str, n_out: int
) -> tuple[Callable[[], None], np.ndarray, np.ndarray]:
    """A float32 ``[1, width]`` input array, a float32 ``[1, n_out]`` output array, and a
    call that runs ``session`` from the first into the second (an ``IOBinding``).

    Of a single row's ``run``, a quarter is outside the model: reading the feeds dict,
    wrapping the input array, turning the output into a new numpy array. Bound once to
    arrays we own, the same run skips all three (callgrind, the 30-feature logistic
    regression: ~31.5k instructions instead of ~42.3k for ``_sess.run`` of the same
    output). The caller writes the row into the input array, calls, and copies the output
    out before the next call: the arrays are shared state, so one set per thread in flight.
    The call is a ``functools.partial`` of the private binding call (no Python frame),
    or of the public ``run_with_iobinding`` where the private one is missing.
    """
    x = np.zeros((1, width), np.float32)
    out = np.zeros((1, n_out), np.float32)
    binding = session.io_binding()
    binding.bind_ortvalue_input(input_name, ort.OrtValue.ortvalue_from_numpy(x))
    binding.bind_output(output_name, "cpu", 0, np.float32, [1, n_out], out.ctypes.data)
    inner = getattr(getattr(session, "_sess", None), "run_with_iobinding", None)
    # The call keeps the binding; the binding's Python wrapper keeps the OrtValue over x; the
    # caller keeps out (and x too, to write into it).
    run = functools.partial(session.run_with_iobinding, binding) if inner is None else functools.partial(inner, binding._iobinding, None)
    run.binding = binding  # type: ignore[attr-defined]  # the Python wrapper owns the OrtValue that keeps x alive
    return run, x, out
