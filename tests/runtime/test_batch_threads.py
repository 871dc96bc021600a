"""Large batches run on one thread per usable core unless the caller chose threads."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from mlpack_edge.runtime import open_model
from mlpack_edge.runtime.model import BATCH_THREADS_ROWS
from mlpack_edge.runtime.session import batch_threads


def _rows(bundle: Path, n: int) -> list[dict]:
    golden = json.loads((bundle / "golden.json").read_bytes())
    inputs = golden["rows"]
    return [inputs[i % len(inputs)] for i in range(n)]


@pytest.mark.parametrize("name", ["binary_bundle", "mixed_bundle", "regression_bundle"])
def test_a_large_batch_gives_the_same_answers_as_one_thread(name: str, request: pytest.FixtureRequest) -> None:
    bundle = request.getfixturevalue(name)
    rows = _rows(bundle, BATCH_THREADS_ROWS + 7)
    default, single = open_model(bundle), open_model(bundle, threads=1)
    assert default.threads == 1  # single rows and small requests stay on one thread
    assert default.large_batch_threads == max(1, batch_threads())
    assert single.large_batch_threads == 1
    got, want = default.predict(rows), single.predict(rows)
    assert np.array_equal(got, want)
    if default.task != "regression":
        np.testing.assert_allclose(default.predict_proba(rows), single.predict_proba(rows), rtol=0, atol=1e-6)
    # the large-batch session spins, as a default InferenceSession does; the single-row one never
    key = "session.intra_op.allow_spinning"
    assert default._session.get_session_options().get_session_config_entry(key) == "0"
    if batch_threads() > 1:
        assert default._batch_session.get_session_options().get_session_config_entry(key) == "1"
    assert single._batch_session is None  # threads chosen: one session, no spinning
    # a small batch and a single row after a large one still agree
    assert np.array_equal(default.predict(rows[:3]), single.predict(rows[:3]))
    assert default.predict(rows[0]) == single.predict(rows[0])
