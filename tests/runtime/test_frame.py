"""pandas DataFrames through the Python API: coerced by the schema the way training read
its CSV, with pandas never imported by the runtime itself."""

from __future__ import annotations

import csv
import io
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from mlpack_edge.errors import InputError
from mlpack_edge.runtime import open_model
from tests.runtime.conftest import build_bundle

FIRMWARE = ["01", "1.2", "1.3", "2.0"]  # what a CSV holds; pandas reads 1.0, 1.2, 1.3, 2.0


def _rows(n: int, seed: int) -> str:
    rng = np.random.default_rng(seed)
    out = io.StringIO()
    w = csv.writer(out, lineterminator="\n")
    w.writerow(["temp", "firmware", "site", "fault"])
    for i in range(n):
        fw = FIRMWARE[int(rng.integers(4))]
        temp = rng.normal(40 + 10 * FIRMWARE.index(fw), 5)
        site = ["east", "west", "north"][int(rng.integers(3))]
        fault = "hot" if temp > 55 else "ok"
        w.writerow(["" if i % 17 == 0 else f"{temp:.3f}", "" if i % 23 == 0 else fw, site, fault])
    return out.getvalue()


@pytest.fixture(scope="module")
def bundle(tmp_path_factory: pytest.TempPathFactory) -> Path:
    extra = """
    [data.features]
    temp = "numeric"
    firmware = { kind = "categorical", unseen = "error" }
    site = { kind = "categorical", unseen = "missing" }
    """
    return build_bundle(tmp_path_factory.mktemp("frame"), "firmware", "binary", "fault", _rows(300, 0),
                        'class = "LogisticRegression"', extra)


@pytest.fixture(scope="module")
def test_csv(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("frame-data") / "rows.csv"
    path.write_text(_rows(120, 1))
    return path


def _as_text_rows(path: Path) -> list[dict[str, str]]:
    """What the device's own CSV reader sees: every cell as its text."""
    with path.open(newline="") as fh:
        return [{k: v for k, v in r.items() if k != "fault"} for r in csv.DictReader(fh)]


def test_a_dataframe_read_with_default_dtypes_predicts_what_the_csv_text_predicts(bundle: Path, test_csv: Path) -> None:
    model = open_model(bundle)
    assert model.manifest.features[1].categories == tuple(FIRMWARE)
    df = pd.read_csv(test_csv).drop(columns="fault")
    assert df["firmware"].dtype == np.float64 and 1.0 in set(df["firmware"])  # "01" and "2.0" lost their text
    expected = model.predict_rows(_as_text_rows(test_csv))
    assert expected.errors == []
    labels = model.predict(df)
    assert labels.tolist() == expected.labels.tolist()
    np.testing.assert_array_equal(model.predict_proba(df), expected.probabilities)
    # The same for pandas' nullable dtypes (Float64, string) and a category dtype.
    for variant in (df.convert_dtypes(), df.astype({"site": "category", "firmware": "category"})):
        np.testing.assert_array_equal(model.predict_proba(variant), expected.probabilities)
    # One row as a Series (df.iloc[i]) is one answer.
    for i in (0, 23, 46):  # row 0 and 23 hold missing values
        assert model.predict(df.iloc[i]) == expected.labels[i]
        assert model.predict_one(df.iloc[i]).label == expected.labels[i]


def test_columns_in_any_order_but_exactly_the_features(bundle: Path, test_csv: Path) -> None:
    model = open_model(bundle)
    df = pd.read_csv(test_csv)
    with pytest.raises(InputError) as info:
        model.predict(df)
    assert str(info.value) == "DataFrame: column 'fault' is not a feature of the model; pass df[model.feature_names]"
    with pytest.raises(InputError) as info:
        model.predict(df[["temp", "site"]])
    assert str(info.value) == "DataFrame: missing feature column 'firmware'"
    shuffled = df[["site", "temp", "firmware"]]
    np.testing.assert_array_equal(model.predict(shuffled), model.predict(df[list(model.feature_names)]))


def test_bad_values_are_named_by_row_and_field(bundle: Path) -> None:
    model = open_model(bundle)
    df = pd.DataFrame({"temp": [41.0, 50.0, np.nan], "firmware": [1.3, 3.5, 2.0], "site": ["east", "mars", "west"]})
    with pytest.raises(InputError) as info:
        model.predict(df)
    assert str(info.value) == (
        "row 1: field 'firmware': category '3.5' was not seen in training (expected one of '01', '1.2', '1.3', '2.0')"
    )
    result = model.predict_rows(df)  # the tolerant API keeps the good rows
    assert result.ok.tolist() == [0, 2] and [e.row for e in result.errors] == [1]
    gap = pd.DataFrame({"temp": [41.0], "firmware": [1.3], "site": [None]})  # site had no gaps in training
    with pytest.raises(InputError, match=r"^row 0: field 'site': is missing \(null/empty\) but the feature is not nullable$"):
        model.predict(gap)
    text = pd.DataFrame({"temp": ["41.5", "hot", None], "firmware": ["1.3", "2.0", "01"], "site": ["east"] * 3})
    with pytest.raises(InputError, match=r"^row 1: field 'temp': expected a number, got 'hot'$"):
        model.predict(text)
    flags = pd.DataFrame({"temp": [True], "firmware": ["1.3"], "site": ["east"]})
    with pytest.raises(InputError, match=r"^row 0: field 'temp': expected a number, got a boolean$"):
        model.predict(flags)


def test_the_runtime_never_imports_pandas_itself(bundle: Path) -> None:
    probe = (
        "import sys\n"
        "from mlpack_edge.runtime import open_model\n"
        f"m = open_model({str(bundle)!r})\n"
        "m.predict({'temp': 41.0, 'firmware': '1.3', 'site': 'east'})\n"
        "m.predict([{'temp': 41.0, 'firmware': '1.3', 'site': 'east'}])\n"
        "print('pandas' in sys.modules)\n"
    )
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=120)
    assert (out.returncode, out.stdout) == (0, "False\n"), out.stderr
