"""Hypothesis settings shared by the fuzz tests: bounded and reproducible by default.

``MLPACK_FUZZ=deep`` runs many more random examples (nothing is derandomized then) for a
longer hunt on a workstation; the default keeps the fast tier quick and every CI run
identical (``derandomize``) with no example database written into the working tree.
"""

from __future__ import annotations

import os

from hypothesis import HealthCheck, settings

DEEP = os.environ.get("MLPACK_FUZZ", "").lower() == "deep"

_COMMON = dict(
    database=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow, HealthCheck.data_too_large],
    print_blob=True,
)


def fuzz(examples: int, deadline_ms: int = 10_000) -> settings:
    """``examples`` per run (x25 with ``MLPACK_FUZZ=deep``); one example may take ``deadline_ms``.

    The deadline is generous because the machine running CI is shared; it still catches
    an input that makes a request or a predict pathologically slow.
    """
    if DEEP:
        return settings(max_examples=examples * 25, deadline=None, derandomize=False, **_COMMON)
    return settings(max_examples=examples, deadline=deadline_ms, derandomize=True, **_COMMON)
