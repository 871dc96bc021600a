"""What the build read as missing, the device reads as missing: R-style ``NA`` cells.

``data/r_export.csv`` is written the way R's ``write.csv(df, row.names = FALSE)`` writes
a frame: quoted header and strings, ``NA`` unquoted for a missing number or string. The
build reads ``NA`` as missing (``[data] missing``); the bundle carries that list
(``input.missing``), and every input path on the device (CSV, JSON Lines, HTTP, the
Python API with dicts and with a DataFrame) reads those cells as missing too, so each
row of the training file itself predicts, exactly as the fitted estimator predicts it.
"""

from __future__ import annotations

import csv
import io
import json
import shutil
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pandas as pd
import pytest

from mlpack_edge.builder import BuildResult, build
from mlpack_edge.builder.byo import all_rows
from mlpack_edge.builder.data import load_data
from mlpack_edge.builder.spec import DEFAULT_MISSING, load_spec
from mlpack_edge.errors import InputError
from mlpack_edge.runtime import Model, PredictServer, ServeConfig, open_model
from mlpack_edge.runtime.io import predict_stream
from mlpack_edge.runtime.manifest import Feature
from mlpack_edge.runtime.schema import Schema

from .conftest import spec_text

R_EXPORT = Path(__file__).parent / "data" / "r_export.csv"
FEATURES = ["x1", "x2", "colour", "shape"]


@pytest.fixture(scope="module")
def built(tmp_path_factory: pytest.TempPathFactory) -> BuildResult:
    root = tmp_path_factory.mktemp("r-export")
    shutil.copy(R_EXPORT, root / "data.csv")
    spec = spec_text(
        "multiclass",
        "label",
        'class = "LogisticRegression"\nparams = { max_iter = 500 }',
        '[preprocess]\nnumeric = { impute = "median", scale = true }\n',
    )
    (root / "mlpack.toml").write_text(spec)
    return build(root / "mlpack.toml", root / "dist", executable=False)


@pytest.fixture(scope="module")
def model(built: BuildResult) -> Model:
    return open_model(built.bundle_dir, threads=1)


@pytest.fixture(scope="module")
def expected(built: BuildResult) -> tuple[list[str], np.ndarray]:
    """The fitted estimator's labels and probabilities for every row of the file, in file order."""
    spec = load_spec(built.bundle_dir.parent.parent / "mlpack.toml")
    ds = load_data(spec.data, spec.model.task, spec.model.seed)
    frame = all_rows(ds, spec.data)
    return [str(v) for v in built.estimator.predict(frame)], built.estimator.predict_proba(frame)


def _cells() -> list[dict[str, str]]:
    """The training file's rows as text, target dropped (as a device would receive them)."""
    with open(R_EXPORT, newline="") as fh:
        return [{k: v for k, v in r.items() if k != "label"} for r in csv.DictReader(fh)]


def _check(labels: list[Any], probabilities: np.ndarray, expected: tuple[list[str], np.ndarray]) -> None:
    assert [str(v) for v in labels] == expected[0]
    np.testing.assert_allclose(probabilities, expected[1], atol=1e-5)


def test_the_fixture_has_na_cells_in_both_kinds() -> None:
    rows = _cells()
    assert sum(r["x2"] == "NA" for r in rows) >= 5
    assert sum(r["colour"] == "NA" for r in rows) >= 5


def test_the_manifest_records_what_the_build_read_as_missing(built: BuildResult, model: Model) -> None:
    assert built.manifest["input"]["missing"] == list(DEFAULT_MISSING)
    assert model.manifest.missing == DEFAULT_MISSING
    colour = next(f for f in built.manifest["input"]["features"] if f["name"] == "colour")
    assert "NA" not in colour["categories"] and colour["nullable"] is True


def test_csv_stream_predicts_every_training_row(model: Model, expected: tuple[list[str], np.ndarray]) -> None:
    lines = R_EXPORT.read_text().splitlines()
    dropped = "".join(line.rsplit(",", 1)[0] + "\n" for line in lines)  # the target is the last column
    out = io.StringIO()
    summary = predict_stream(model, io.StringIO(dropped), out, in_format="csv", out_format="csv")
    assert summary.failed == 0 and summary.rows == len(lines) - 1
    got = list(csv.DictReader(io.StringIO(out.getvalue())))
    assert all(r["error"] == "" for r in got)
    proba = np.array([[float(r[f"proba_{c}"]) for c in model.classes] for r in got])
    _check([r["label"] for r in got], proba, expected)


def test_jsonl_stream_predicts_every_training_row(model: Model, expected: tuple[list[str], np.ndarray]) -> None:
    rows = [{k: (v if k in ("colour", "shape") or v == "NA" else float(v)) for k, v in r.items()} for r in _cells()]
    lines = "".join(json.dumps(r) + "\n" for r in rows)
    out = io.StringIO()
    summary = predict_stream(model, io.StringIO(lines), out, in_format="jsonl", out_format="jsonl")
    assert summary.failed == 0
    got = [json.loads(line) for line in out.getvalue().splitlines()]
    proba = np.array([[g["probabilities"][str(c)] for c in model.classes] for g in got])
    _check([g["label"] for g in got], proba, expected)


def test_python_api_dicts_and_dataframe(model: Model, expected: tuple[list[str], np.ndarray]) -> None:
    rows = _cells()
    _check(list(model.predict(rows)), model.predict_proba(rows), expected)
    # pandas told to keep the text: "NA" arrives as the string "NA"
    df = pd.read_csv(R_EXPORT, keep_default_na=False, dtype=str)[FEATURES]
    _check(list(model.predict(df)), model.predict_proba(df), expected)
    # one row with a missing token, through the single-row path
    one = next(r for r in rows if r["x2"] == "NA")
    assert model.predict_one(one).label == expected[0][rows.index(one)]


@pytest.fixture(scope="module")
def server(model: Model) -> Iterator[PredictServer]:
    s = PredictServer(model, ServeConfig(port=0, max_batch_rows=1000))
    threading.Thread(target=s.serve_forever, daemon=True).start()
    yield s
    s.shutdown()


def test_http_predicts_every_training_row(server: PredictServer, model: Model, expected: tuple[list[str], np.ndarray]) -> None:
    with httpx.Client(base_url=server.url, timeout=30) as client:
        r = client.post("/predict", json=_cells())
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["failed"] == 0
    results = body["predictions"]
    proba = np.array([[res["probabilities"][str(c)] for c in model.classes] for res in results])
    _check([res["label"] for res in results], proba, expected)


# ---------------------------------------------------------------------------- the schema's rules

TOKENS = ("", "NA", "-999", "inf")
SCHEMA = Schema(
    [
        Feature("n", "numeric", True),
        Feature("strict", "numeric", False),
        Feature("c", "categorical", True, ("a", "b")),
    ],
    TOKENS,
)


def _one(n: Any, strict: Any = 1.0, c: Any = "a") -> Any:
    return SCHEMA.rows([{"n": n, "strict": strict, "c": c}], start=1)


@pytest.mark.parametrize("text", ["NA", " NA ", "-999", "inf", "", "  "])
def test_a_token_is_missing_in_a_numeric_text_cell(text: str) -> None:
    batch = SCHEMA.columns([[text, "2.5"], ["1", "1"], ["a", "a"]], 2)
    assert not batch.errors
    assert np.isnan(batch.numeric[0, 0]) and batch.numeric[1, 0] == 2.5


def test_a_number_like_token_matches_text_only() -> None:
    # the text "-999.0" is not the token "-999"; a JSON number -999 is a number
    batch = SCHEMA.columns([["-999.0", "-999"], ["1", "1"], ["a", "a"]], 2)
    assert batch.numeric[0, 0] == -999.0 and np.isnan(batch.numeric[1, 0])
    assert _one(-999).numeric[0, 0] == -999.0
    assert np.isnan(_one("-999").numeric[0, 0])


def test_a_token_is_missing_in_a_categorical_cell() -> None:
    batch = SCHEMA.rows([{"n": 1, "strict": 1, "c": "NA"}, {"n": 1, "strict": 1, "c": " NA"}])
    assert not batch.errors
    assert list(batch.categorical[0]) == ["", ""] and list(batch.fed[0]) == ["", ""]


def test_a_token_in_a_non_nullable_feature_is_refused_as_missing() -> None:
    batch = _one(1.0, strict="NA")
    assert [str(e) for e in batch.errors] == ["row 1: field 'strict': is missing (null/NaN) but the feature is not nullable"]


def test_other_text_is_still_refused() -> None:
    batch = _one("N.A.")
    assert [str(e) for e in batch.errors] == ["row 1: field 'n': expected a number, got 'N.A.'"]
    cat = _one(1.0, c="na")
    assert [str(e) for e in cat.errors] == [
        "row 1: field 'c': category 'na' was not seen in training (expected one of 'a', 'b')"
    ]


def test_a_bundle_without_the_list_keeps_reading_only_blanks_as_missing() -> None:
    old = Schema([Feature("n", "numeric", True)])
    batch = old.columns([["", "NA"]], 2, start=1)
    assert np.isnan(batch.numeric[0, 0])
    assert [str(e) for e in batch.errors] == ["row 2: field 'n': expected a number, got 'NA'"]
    assert isinstance(batch.errors[0], InputError)
