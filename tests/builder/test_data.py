"""The data stage: kinds, missing values, the split, and every way a CSV can be wrong."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from mlpack_edge.builder.data import load_data
from mlpack_edge.builder.spec import DataSpec, FeatureSpec
from mlpack_edge.errors import DataError

from .conftest import mixed_rows


def _spec(tmp_path: Path, text: str, **kw: object) -> DataSpec:
    path = tmp_path / "data.csv"
    path.write_text(text)
    kw.setdefault("target", "y")
    return DataSpec(path=path, path_text="data.csv", **kw)  # type: ignore[arg-type]


def _error(tmp_path: Path, text: str, task: str = "binary", **kw: object) -> str:
    spec = _spec(tmp_path, text, **kw)
    with pytest.raises(DataError) as info:
        load_data(spec, task, 0)
    return str(info.value).replace(str(spec.path), "data.csv")


def test_inferred_kinds_missing_values_and_categories(tmp_path: Path) -> None:
    ds = load_data(_spec(tmp_path, mixed_rows(), target="label"), "classification", 0)
    assert ds.task == "multiclass" and ds.classes == ("A", "B", "C")
    assert ds.inferred and ds.ignored == ()
    assert [(f.name, f.kind, f.nullable) for f in ds.features] == [
        ("x1", "numeric", False),
        ("x2", "numeric", True),
        ("colour", "categorical", True),
        ("shape", "categorical", False),
    ]
    colour = ds.features[2]
    assert colour.categories == ("blue", "green", "red") and colour.unseen == "error"
    # numeric: float32 with NaN; categorical: str with "" for missing (what ONNX gets)
    assert ds.x_train["x2"].dtype == np.float32 and ds.x_train["x2"].isna().any()
    assert set(ds.x_train["colour"]) == {"", "blue", "green", "red"}
    assert len(ds.x_train) == 192 and len(ds.x_test) == 48 and ds.rows == 240


def test_split_is_seeded_and_stratified(tmp_path: Path) -> None:
    spec = _spec(tmp_path, mixed_rows(), target="label")
    a, b, c = load_data(spec, "multiclass", 0), load_data(spec, "multiclass", 0), load_data(spec, "multiclass", 1)
    assert a.x_test.equals(b.x_test) and not a.x_test.equals(c.x_test)
    full = np.concatenate([a.y_train, a.y_test])
    for cls in a.classes:  # each class keeps its share in the held-out split (within one row)
        assert abs((a.y_test == cls).sum() - 0.2 * (full == cls).sum()) <= 1


def test_declared_features_keep_codes_as_text(tmp_path: Path) -> None:
    text = "id,code,n,y\n" + "".join(f"{i},00{i % 3},{i},{'ab'[i % 2]}\n" for i in range(20))
    ds = load_data(
        _spec(tmp_path, text, features=(FeatureSpec("code", "categorical", None, "missing"), FeatureSpec("n"))),
        "binary",
        0,
    )
    assert [(f.name, f.kind) for f in ds.features] == [("code", "categorical"), ("n", "numeric")]
    assert ds.features[0].categories == ("000", "001", "002") and ds.features[0].unseen == "missing"
    assert ds.ignored == ("id",) and not ds.inferred


def test_exclude_and_integer_labels(tmp_path: Path) -> None:
    text = "id,a,y\n" + "".join(f"{i},{i * 0.5},{i % 2}\n" for i in range(20))
    ds = load_data(_spec(tmp_path, text, exclude=("id",)), "binary", 0)
    assert [f.name for f in ds.features] == ["a"] and ds.classes == (0, 1)
    assert ds.y_train.dtype == np.int64


def test_labels_that_only_look_alike_stay_distinct(tmp_path: Path) -> None:
    text = "a,y\n" + "".join(f"{i},{['01', '1'][i % 2]}\n" for i in range(20))
    assert load_data(_spec(tmp_path, text), "binary", 0).classes == ("01", "1")


def test_declared_nullable_without_missing_values(tmp_path: Path) -> None:
    text = "a,y\n" + "".join(f"{i},{i % 2}\n" for i in range(20))
    ds = load_data(_spec(tmp_path, text, features=(FeatureSpec("a", None, True),)), "binary", 0)
    assert ds.features[0].nullable and ds.features[0].kind == "numeric"


def test_regression_target(tmp_path: Path) -> None:
    text = "a,y\n" + "".join(f"{i},{i * 1.5}\n" for i in range(20))
    ds = load_data(_spec(tmp_path, text), "regression", 0)
    assert ds.classes == () and ds.y_train.dtype == np.float64 and not ds.stratified


@pytest.mark.parametrize(
    ("text", "kw", "task", "expected"),
    [
        ("", {}, "binary", "data.csv: the file is empty (expected a CSV with a header row)"),
        ("a,y\n", {}, "binary", "data.csv: has a header but no data rows"),
        ("a,b\n1,2\n", {}, "binary", "data.csv: target column 'y' not found (columns: a, b)"),
        ("a,yy\n1,2\n", {}, "binary", "data.csv: target column 'y' not found (did you mean 'yy'?)"),
        (
            "age,y\n1,a\n",
            {"features": (FeatureSpec("agee"),)},
            "binary",
            "data.csv: feature 'agee' (data.features) not found (did you mean 'age'?)",
        ),
        (
            "a,y\n1,x\n2,y\nabc,x\n",
            {"features": (FeatureSpec("a", "numeric"),)},
            "binary",
            "data.csv: line 4: column 'a' expects a number, got 'abc'",
        ),
        (
            "a,y\n1,x\ninf,y\n",
            {"features": (FeatureSpec("a", "numeric"),)},
            "binary",
            "data.csv: line 3: column 'a' expects a number, got 'inf'",
        ),
        (
            "a,y\n1,x\n2,x\n3,x\n",
            {},
            "binary",
            "data.csv: target 'y' has a single class ('x'); classification needs at least two",
        ),
        (
            "a,y\n1,x\n2,y\n3,z\n",
            {},
            "binary",
            "data.csv: task is binary but target 'y' has 3 classes (x, y, z); use task = \"multiclass\"",
        ),
        ("a,y\n1,x\n2,\n", {}, "binary", "data.csv: line 3: target 'y' is missing (1 row without a target;"
            " leave them out with [data] drop_missing_target = true)"),
        ("a,y\n1,x\n2,\n3,NA\n", {}, "binary", "data.csv: line 3: target 'y' is missing (2 rows without a target;"
            " leave them out with [data] drop_missing_target = true)"),
        (
            "a,y\n1,2\n2,oops\n",
            {},
            "regression",
            "data.csv: line 3: target 'y' must be a number for regression, got 'oops'",
        ),
        ("a,a,y\n1,2,3\n", {}, "binary", "data.csv: column 'a' appears twice in the header"),
        (
            "a,b,y\n1,,x\n2,,y\n",
            {},
            "binary",
            "data.csv: column 'b' has no values (every row is missing); exclude it (data.exclude)",
        ),
        (
            "a,y\n1,x\n,y\n",
            {"features": (FeatureSpec("a", None, False),)},
            "binary",
            "data.csv: line 3: column 'a' is missing but the feature is declared nullable = false",
        ),
        (
            "a,y\n" + "1,x\n" * 5 + "2,y\n",
            {},
            "binary",
            "data.csv: class 'y' of the target has only 1 row; a stratified split needs at least 2 per class",
        ),
        ("y\n1\n2\n", {}, "binary", "data.csv: no feature columns besides the target 'y'"),
        (
            "a,y\n1,2\n",
            {"exclude": ("id",)},
            "binary",
            "data.csv: excluded column 'id' (data.exclude) not found (columns: a, y)",
        ),
        (
            'a,y\n1,2\n"3,4\n',
            {},
            "binary",
            "data.csv: not a valid CSV (Error tokenizing data. C error: EOF inside string starting at row 2)",
        ),
    ],
)
def test_bad_data(tmp_path: Path, text: str, kw: dict[str, object], task: str, expected: str) -> None:
    assert _error(tmp_path, text, task, **kw) == expected


def test_missing_file(tmp_path: Path) -> None:
    spec = DataSpec(path=tmp_path / "nope.csv", path_text="nope.csv", target="y")
    with pytest.raises(DataError) as info:
        load_data(spec, "binary", 0)
    assert str(info.value) == f"{tmp_path / 'nope.csv'}: data file not found (data.path is relative to the spec)"


def test_drop_missing_target_leaves_those_rows_out_and_counts_them(tmp_path: Path) -> None:
    rows = "".join(f"{i},{'ab'[i % 2] if i % 7 else ('NA' if i % 2 else '')}\n" for i in range(1, 41))
    text = "x,y\n" + rows
    kept = [i for i in range(1, 41) if i % 7]
    ds = load_data(_spec(tmp_path, text, drop_missing_target=True), "binary", 0)
    assert ds.dropped_target == 40 - len(kept) == 5 and ds.rows == len(kept)
    assert sorted(np.concatenate([ds.x_train["x"], ds.x_test["x"]]).tolist()) == kept
    assert set(ds.classes) == {"a", "b"}


def test_after_dropping_errors_still_name_the_file_line(tmp_path: Path) -> None:
    # line 2 has no target (dropped); line 4's x is bad: the message says line 4, not 3
    text = "x,y\n1,\n2,a\nbad,b\n3,a\n4,b\n"
    declared = (FeatureSpec("x", "numeric"),)
    assert _error(tmp_path, text, drop_missing_target=True, features=declared) == (
        "data.csv: line 4: column 'x' expects a number, got 'bad'"
    )


def test_dropping_every_row_is_an_error(tmp_path: Path) -> None:
    assert _error(tmp_path, "x,y\n1,\n2,NA\n", drop_missing_target=True) == (
        "data.csv: every row's target 'y' is missing; nothing to train on"
    )


def test_drop_missing_target_through_a_build(tmp_path: Path) -> None:
    from mlpack_edge.builder import RecordingReporter, build

    from .conftest import binary_rows, spec_text

    text = binary_rows().splitlines()
    for i in (3, 10, 50):  # blank out three targets
        text[i] = text[i].rsplit(",", 1)[0] + ","
    (tmp_path / "data.csv").write_text("\n".join(text) + "\n")
    (tmp_path / "mlpack.toml").write_text(spec_text().replace('target = "y"', 'target = "y"\ndrop_missing_target = true'))
    rec = RecordingReporter()
    result = build(tmp_path / "mlpack.toml", tmp_path / "dist", executable=False, reporter=rec)
    summary = next(e[3] for e in rec.events if e[:2] == ("finished", "data"))
    assert summary.startswith("157 rows (3 without a target left out), 3 features; 125 train / 32 held out")
    assert result.manifest["lineage"]["dropped_missing_target"] == 3
    assert result.manifest["lineage"]["rows"] == 157
