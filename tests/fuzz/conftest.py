"""The fuzz tests' model: the runtime tests' mixed bundle (numeric with gaps, categoricals with
'unseen -> error' and 'unseen -> missing', columns layout), built once per session."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests._data import mixed_rows
from tests.runtime.conftest import build_bundle


@pytest.fixture(scope="session")
def fuzz_bundle(tmp_path_factory: pytest.TempPathFactory) -> Path:
    extra = """
    [data.features]
    x1 = "numeric"
    x2 = "numeric"
    colour = { kind = "categorical", nullable = true, unseen = "error" }
    shape = { kind = "categorical", unseen = "missing" }
    """
    return build_bundle(
        tmp_path_factory.mktemp("fuzz") / "mixed", "mixed", "multiclass", "label", mixed_rows(n=300, seed=2),
        'class = "LogisticRegression"\nparams = { max_iter = 500 }', extra,
    )


@pytest.fixture(scope="session")
def features(fuzz_bundle: Path) -> list[str]:
    manifest = json.loads((fuzz_bundle / "manifest.json").read_bytes())
    return [f["name"] for f in manifest["input"]["features"]]


@pytest.fixture(scope="session")
def valid(fuzz_bundle: Path) -> dict[str, list[object]]:
    """Per feature, values the model accepts (numbers; categories; None where nullable)."""
    return valid_values(fuzz_bundle)


def valid_values(bundle: Path) -> dict[str, list[object]]:
    manifest = json.loads((bundle / "manifest.json").read_bytes())
    out: dict[str, list[object]] = {}
    for f in manifest["input"]["features"]:
        values: list[object] = list(f.get("categories", [])) if f["kind"] == "categorical" else [0.0, 1.5, -3.25, 1e3, 17.0]
        out[f["name"]] = values + ([None] if f["nullable"] else [])
    return out
