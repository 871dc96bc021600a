"""A ``datetime`` feature through a real build: the device derives the parts the model was trained on.

Training data covers 2012-2013; the device is asked about 2015-2016 dates (never seen in
training). Its answers must equal the fitted estimator's on the same parts computed by
pandas (an implementation independent of runtime/_datetime.py), through every input
path: dict rows, lists, a DataFrame with Timestamps, a CSV stream and HTTP.
"""

from __future__ import annotations

import io
import json
import threading
from pathlib import Path

import httpx
import numpy as np
import pandas as pd
import pytest

from mlpack_edge.builder import BuildResult, RecordingReporter, build
from mlpack_edge.errors import DataError, SpecError
from mlpack_edge.runtime import Model, PredictServer, ServeConfig, open_model
from mlpack_edge.runtime.io import predict_stream

PARTS = ["hour", "day_of_week", "month"]


def _spec(fmt: str = "", parts: str = '["hour", "day_of_week", "month"]') -> str:
    declared = f', format = "{fmt}"' if fmt else ""
    return f"""[model]
name = "dt"
version = "1.0.0"
task = "binary"
seed = 0

[data]
path = "data.csv"
target = "load"

[data.features]
when = {{ kind = "datetime", parts = {parts}{declared} }}
x = "numeric"

[estimator]
class = "HistGradientBoostingClassifier"
params = {{ max_iter = 40 }}
"""


def _stamps(start: str, n: int, seed: int) -> pd.DatetimeIndex:
    rng = np.random.default_rng(seed)
    return pd.Timestamp(start) + pd.to_timedelta(rng.integers(0, 2 * 365 * 24 * 60, n), unit="min")


def _data(n: int = 400) -> str:
    rng = np.random.default_rng(5)
    t = _stamps("2012-01-01", n, 5)
    busy = (t.hour >= 8) & (t.hour < 18) & (t.day_of_week < 5)
    y = np.where(busy ^ (rng.uniform(size=n) < 0.05), "busy", "quiet")
    when = [s.strftime("%Y/%m/%d %H:%M") if i % 37 else "NA" for i, s in enumerate(t)]
    return pd.DataFrame({"when": when, "x": np.round(rng.normal(size=n), 4), "load": y}).to_csv(index=False)


@pytest.fixture(scope="module")
def built(tmp_path_factory: pytest.TempPathFactory) -> tuple[BuildResult, list[tuple[str, ...]]]:
    root = tmp_path_factory.mktemp("datetime")
    (root / "data.csv").write_text(_data())
    (root / "mlpack.toml").write_text(_spec())
    rec = RecordingReporter()
    return build(root / "mlpack.toml", root / "dist", executable=False, reporter=rec), rec.events


@pytest.fixture(scope="module")
def model(built: tuple[BuildResult, object]) -> Model:
    return open_model(built[0].bundle_dir, threads=1)


@pytest.fixture(scope="module")
def unseen() -> pd.DataFrame:
    """2015-2016 rows (the model saw 2012-2013), one in ten without a date."""
    t = _stamps("2015-01-01", 120, 9)
    x = np.round(np.random.default_rng(9).normal(size=120), 4)
    when = pd.Series(t.strftime("%Y/%m/%d %H:%M"), dtype=object)
    when[::10] = "NA"
    return pd.DataFrame({"when": when, "x": x, "stamp": t})


def _expected(result: BuildResult, rows: pd.DataFrame) -> tuple[list[str], np.ndarray]:
    """The fitted estimator on parts pandas computes (NaN where the date is missing)."""
    gone = rows["when"] == "NA"
    t = rows["stamp"]
    x = np.column_stack(
        [
            np.where(gone, np.nan, t.dt.hour),
            np.where(gone, np.nan, t.dt.day_of_week),
            np.where(gone, np.nan, t.dt.month),
            rows["x"],
        ]
    ).astype(np.float32)
    return [str(v) for v in result.estimator.predict(x)], result.estimator.predict_proba(x)


def test_the_build_derives_the_declared_parts_and_records_them(built: tuple[BuildResult, list]) -> None:
    result, events = built
    m = result.manifest
    assert m["input"]["datetime"] == [{"name": "when", "format": "%Y/%m/%d %H:%M", "parts": PARTS, "nullable": True}]
    assert [f["name"] for f in m["input"]["features"]] == ["when_hour", "when_day_of_week", "when_month", "x"]
    assert ("info", "datetime when (%Y/%m/%d %H:%M) -> numeric when_hour, when_day_of_week, when_month") in events


def test_unseen_dates_predict_as_the_estimator_does(built: tuple[BuildResult, list], model: Model, unseen: pd.DataFrame) -> None:
    result = built[0]
    labels, proba = _expected(result, unseen)
    rows = unseen[["when", "x"]].to_dict("records")
    assert model.feature_names == ("when", "x")
    assert [str(v) for v in model.predict(rows)] == labels
    np.testing.assert_allclose(model.predict_proba(rows), proba, atol=1e-5)
    # lists in input order, one row at a time
    assert model.predict_one(list(rows[1].values())).label == labels[1]
    # a DataFrame holding Timestamps (missing as NaT)
    df = pd.DataFrame({"when": unseen["stamp"].where(unseen["when"] != "NA"), "x": unseen["x"]})
    assert [str(v) for v in model.predict(df)] == labels
    # a CSV stream
    out = io.StringIO()
    summary = predict_stream(model, io.StringIO(unseen[["when", "x"]].to_csv(index=False)), out, in_format="csv", out_format="jsonl")
    assert summary.failed == 0
    assert [json.loads(line)["label"] for line in out.getvalue().splitlines()] == labels


def test_http_takes_the_date_too(built: tuple[BuildResult, list], model: Model, unseen: pd.DataFrame) -> None:
    labels, _ = _expected(built[0], unseen)
    server = PredictServer(model, ServeConfig(port=0, max_batch_rows=1000))
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        with httpx.Client(base_url=server.url, timeout=30) as client:
            r = client.post("/predict", json=unseen[["when", "x"]].to_dict("records"))
            bad = client.post("/predict", json={"when": "2015-06-03", "x": 1.0})
    finally:
        server.shutdown()
    assert [p["label"] for p in r.json()["predictions"]] == labels
    assert bad.status_code == 422
    assert bad.json()["error"] == "field 'when': expected a date/time (%Y/%m/%d %H:%M), got '2015-06-03'"


def test_bad_dates_are_named_per_row(model: Model) -> None:
    batch = model.schema.rows([{"when": "2015/13/01 10:00", "x": 1.0}, {"when": "2015/06/01 10:00", "x": 1.0}], start=1)
    assert [str(e) for e in batch.errors] == [
        "row 1: field 'when': expected a date/time (%Y/%m/%d %H:%M), got '2015/13/01 10:00'"
    ]
    assert batch.rows == 1
    missing = model.schema.rows([{"x": 1.0}], start=1)
    assert [str(e) for e in missing.errors] == ["row 1: missing feature 'when'"]


@pytest.mark.parametrize(
    ("fmt", "texts", "expected"),
    [
        ("", ["2012-03-04T10:00:00", "2013-01-02T22:15:00"], "iso"),
        ("", ["1331200800", "1357164900"], "epoch"),
        ("%d.%m.%Y %H:%M", ["04.03.2012 10:00", "02.01.2013 22:15"], "%d.%m.%Y %H:%M"),
    ],
)
def test_formats_inferred_or_declared(tmp_path: Path, fmt: str, texts: list[str], expected: str) -> None:
    rows = "".join(f"{texts[i % 2]},{i},{'ab'[i % 2]}\n" for i in range(40))
    (tmp_path / "data.csv").write_text("when,x,load\n" + rows)
    (tmp_path / "mlpack.toml").write_text(_spec(fmt, '["hour"]').replace("HistGradientBoostingClassifier", "LogisticRegression").replace("params = { max_iter = 40 }", ""))
    result = build(tmp_path / "mlpack.toml", tmp_path / "dist", executable=False)
    assert result.manifest["input"]["datetime"][0]["format"] == expected
    model = open_model(result.bundle_dir)
    assert model.schema.rows([{"when": texts[0], "x": 1}]).errors == []


def test_no_known_format_is_one_line_naming_the_cell(tmp_path: Path) -> None:
    (tmp_path / "data.csv").write_text("when,x,load\n2012/01/01,1,a\n2012/01/02,2,b\n3 Jan 2012,3,a\n")
    (tmp_path / "mlpack.toml").write_text(_spec())
    with pytest.raises(DataError) as info:
        build(tmp_path / "mlpack.toml", tmp_path / "dist", executable=False)
    assert str(info.value) == (
        f"{tmp_path / 'data.csv'}: line 4: column 'when' is not a date/time in a format mlpack infers"
        " (got '3 Jan 2012'; tried ISO 8601, %Y/%m/%d, %Y/%m/%d %H:%M, %Y/%m/%d %H:%M:%S, epoch seconds);"
        " declare its format (data.features.when.format)"
    )


@pytest.mark.parametrize(
    ("parts", "expected"),
    [
        ('["hours"]', "data.features.when.parts: unknown part 'hours' (did you mean 'hour'? parts: year, month, day, day_of_week, day_of_year, hour, minute)"),
        ("[]", "data.features.when.parts: expected one or more distinct parts"),
    ],
)
def test_bad_parts_are_spec_errors(tmp_path: Path, parts: str, expected: str) -> None:
    (tmp_path / "data.csv").write_text(_data(40))
    (tmp_path / "mlpack.toml").write_text(_spec(parts=parts))
    with pytest.raises(SpecError) as info:
        build(tmp_path / "mlpack.toml", tmp_path / "dist", executable=False)
    assert str(info.value).endswith(expected)


def test_a_2d_object_array_in_input_order(built: tuple[BuildResult, list], model: Model, unseen: pd.DataFrame) -> None:
    labels, _ = _expected(built[0], unseen)
    X = unseen[["when", "x"]].to_numpy(dtype=object)
    assert [str(v) for v in model.predict(X)] == labels


def test_card_and_inspect_say_where_the_parts_come_from(built: tuple[BuildResult, list]) -> None:
    from click.testing import CliRunner

    from mlpack_edge.builder.inspect_cli import inspect_command

    result = built[0]
    card = (result.bundle_dir / "model_card.html").read_text()
    assert "hour of date column when (%Y/%m/%d %H:%M); 0 … 23" in card
    out = CliRunner().invoke(inspect_command, [str(result.bundle_dir)]).stdout
    assert "month of date column when (%Y/%m/%d %H:%M); 1 … 12" in out
