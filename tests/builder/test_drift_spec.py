"""``[drift] alpha`` and ``min_count``: parsed, checked, and carried to the device's thresholds."""

from __future__ import annotations

from pathlib import Path

import pytest

from mlpack_edge.builder.spec import load_spec
from mlpack_edge.errors import SpecError
from mlpack_edge.monitor_agent.drift import Thresholds

from .conftest import spec_text


def _spec(tmp_path: Path, drift: str):
    (tmp_path / "data.csv").write_text("a,y\n1,0\n2,1\n")
    path = tmp_path / "mlpack.toml"
    path.write_text(spec_text(extra=f"[drift]\n{drift}"))
    return load_spec(path)


def test_alpha_and_min_count_reach_the_manifest_only_when_set(tmp_path: Path) -> None:
    spec = _spec(tmp_path, "alpha = 0.01\nmin_count = 50\n")
    section = spec.drift.manifest_section()
    assert section == {"psi_warn": 0.1, "psi_drift": 0.2, "alpha": 0.01, "min_count": 50}
    t = Thresholds.from_dict(section)  # what the agent and the collector read from the manifest
    assert (t.alpha, t.min_count, t.psi_drift) == (0.01, 50, 0.2)
    plain = _spec(tmp_path, "psi_drift = 0.3\n").drift.manifest_section()
    assert plain == {"psi_warn": 0.1, "psi_drift": 0.3}  # manifests without them stay as they were
    assert (Thresholds.from_dict(plain).alpha, Thresholds.from_dict(plain).min_count) == (0.005, 20)


@pytest.mark.parametrize(
    ("drift", "expected"),
    [
        ("alpha = 1.5\n", "drift.alpha: expected a number between 0 and 1 (exclusive), got 1.5"),
        ("alpha = 0\n", "drift.alpha: expected a number between 0 and 1 (exclusive), got 0"),
        ("min_count = 0\n", "drift.min_count: expected a positive integer, got 0"),
        ("min_count = 2.5\n", "drift.min_count: expected an integer, got 2.5"),
    ],
)
def test_bad_values_name_the_key(tmp_path: Path, drift: str, expected: str) -> None:
    with pytest.raises(SpecError) as err:
        _spec(tmp_path, drift)
    assert str(err.value).endswith(expected)
