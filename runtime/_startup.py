"""The frozen executable's entry point: start-up with the cyclic garbage collector paused.

A device command's start-up (click, numpy, onnxruntime, the bundle, the agent) creates
~25,000 objects that live as long as the process, and almost no cyclic garbage (~200
objects at the end of a one-row ``predict``). CPython's collector still runs ~50
collections over them on the way: ~25 M instructions (callgrind), ~4 % of a one-row
``predict`` and more than the whole monitoring agent's exit path costs
(benchmarks/executable.py measures it against ``python -c 'import numpy, onnxruntime'``).

:func:`run` pauses the collector before the first import of the command line.
:func:`resume_gc` ends the pause: ``predict`` and ``serve`` call it once the model (and
the agent) are open, before the first row is read; every other command before it runs.
It freezes what start-up created (``gc.freeze``: a permanent generation no collection
scans, so the first collection after start-up does not walk all of it either) and turns
the collector back on, so a long stream or a server collects its own garbage as before.
``serve`` collects first (``collect=True``): a long-running process should not keep
start-up's few cycles for its lifetime. Outside :func:`run` (``python -m``, the
library, tests) :func:`resume_gc` does nothing: only the entry point pauses the collector.
"""

from __future__ import annotations

import gc

__all__ = ["run", "resume_gc"]

_paused = False


def run() -> None:
    """Run the device command line (``sys.argv``) with the collector paused for start-up."""
    global _paused
    if gc.isenabled():
        gc.disable()
        _paused = True
    from mlpack_edge.runtime.cli import main

    main()


def resume_gc(collect: bool = False) -> None:
    """Start-up is over: freeze its objects and turn the collector back on (once; no-op unless paused)."""
    global _paused
    if not _paused:
        return
    _paused = False
    if collect:
        gc.collect()
    gc.freeze()
    gc.enable()
