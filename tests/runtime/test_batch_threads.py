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


def _sysfs(root: Path, siblings: dict[int, str]) -> Path:
    """A fake /sys/devices/system/cpu: ``cpuN/topology/thread_siblings_list`` per CPU."""
    for cpu, text in siblings.items():
        topology = root / f"cpu{cpu}" / "topology"
        topology.mkdir(parents=True)
        (topology / "thread_siblings_list").write_text(text + "\n")
    return root


def test_large_batches_get_one_thread_per_physical_core_as_a_default_session(tmp_path: Path) -> None:
    # 2 cores with 2 SMT threads each, numbered as Linux does (siblings 0 and 2, 1 and 3)
    sysfs = _sysfs(tmp_path, {0: "0,2", 1: "1,3", 2: "0,2", 3: "1,3"})
    assert batch_threads(cpus=[0, 1, 2, 3], sysfs=sysfs) == 2  # not 4: a default InferenceSession runs 2
    assert batch_threads(cpus=[0, 2], sysfs=sysfs) == 1  # pinned to both halves of one core
    assert batch_threads(cpus=[0, 1], sysfs=sysfs) == 2
    assert batch_threads(cpus=[3], sysfs=sysfs) == 1


def test_without_a_cpu_topology_every_usable_cpu_is_a_core(tmp_path: Path) -> None:
    assert batch_threads(cpus=[0, 1, 2], sysfs=tmp_path / "missing") == 3
    assert batch_threads(cpus=[], sysfs=tmp_path) == 1
