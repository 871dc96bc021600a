"""Input validation rules, one error per bad row naming the row and the field."""

from __future__ import annotations

import math

import numpy as np
import pytest

from mlpack_edge.errors import InputError
from mlpack_edge.runtime.manifest import Feature
from mlpack_edge.runtime.schema import Schema

NUMERIC = Schema([Feature("a", "numeric", False), Feature("b", "numeric", True)])
MIXED = Schema(
    [
        Feature("age", "numeric", False),
        Feature("income", "numeric", True),
        Feature("colour", "categorical", False, ("blue", "red"), "error"),
        Feature("size", "categorical", True, ("L", "S"), "missing"),
    ]
)
GOOD = {"age": 30, "income": 1.5, "colour": "red", "size": "L"}


def _messages(schema: Schema, rows: list, start: int | None = 0) -> list[str]:
    return [str(e) for e in schema.rows(rows, start).errors]


@pytest.mark.parametrize(
    ("row", "message"),
    [
        ({"income": 1, "colour": "red", "size": "L"}, "row 1: missing feature 'age'"),
        ({**GOOD, "zip": 1}, "row 1: unknown feature 'zip' (the model takes: age, income, colour, size)"),
        ({**GOOD, "age": "abc"}, "row 1: field 'age': expected a number, got 'abc'"),
        ({**GOOD, "age": True}, "row 1: field 'age': expected a number, got a boolean"),
        ({**GOOD, "age": [1]}, "row 1: field 'age': expected a number, got list"),
        ({**GOOD, "age": None}, "row 1: field 'age': is missing (null/NaN) but the feature is not nullable"),
        ({**GOOD, "age": float("nan")}, "row 1: field 'age': is missing (null/NaN) but the feature is not nullable"),
        ({**GOOD, "age": ""}, "row 1: field 'age': is missing (null/NaN) but the feature is not nullable"),
        ({**GOOD, "age": float("inf")}, "row 1: field 'age': expected a finite number within float32 range, got inf"),
        ({**GOOD, "age": 1e39}, "row 1: field 'age': expected a finite number within float32 range, got 1e+39"),
        ({**GOOD, "colour": "green"}, "row 1: field 'colour': category 'green' was not seen in training (expected one of 'blue', 'red')"),
        ({**GOOD, "colour": None}, "row 1: field 'colour': is missing (null/empty) but the feature is not nullable"),
        ({**GOOD, "colour": 1.5}, "row 1: field 'colour': expected a category (text), got float 1.5"),
        ([30, 1.5, "red"], "row 1: expected 4 values in manifest order, got 3"),
        (7, "row 1: expected an object (feature -> value) or a list of 4 values, got int"),
    ],
)
def test_each_rule_names_row_and_field(row: object, message: str) -> None:
    assert _messages(MIXED, [GOOD, row, GOOD], start=0) == [message]


def test_error_carries_row_and_field() -> None:
    (err,) = MIXED.rows([GOOD, {**GOOD, "income": "x"}], start=10).errors
    assert (err.row, err.field) == (11, "income")
    assert str(err) == "row 11: field 'income': expected a number, got 'x'"


def test_single_unnumbered_row() -> None:
    (err,) = MIXED.rows([{**GOOD, "age": "x"}], start=None).errors
    assert str(err) == "field 'age': expected a number, got 'x'"
    assert err.row is None


def test_bad_rows_do_not_lose_good_rows() -> None:
    rows = [GOOD, {**GOOD, "age": "x"}, {**GOOD, "age": 41, "colour": "blue"}, {**GOOD, "size": "XL"}]
    batch = MIXED.rows(rows)
    assert batch.ok.tolist() == [0, 2, 3]
    assert batch.numeric is not None and batch.numeric.dtype == np.float32
    assert batch.numeric[:, 0].tolist() == [30, 41, 30]
    # unseen "XL" under policy "missing": fed as "", original kept for monitoring
    assert batch.categorical[1] == ["L", "L", "XL"]
    assert batch.fed[1] == ["L", "L", ""]
    assert batch.categorical[0] == ["red", "blue", "red"]


def test_missing_values_are_nan_and_empty() -> None:
    batch = MIXED.rows([{"age": "3", "income": None, "colour": "red", "size": None}, [4, "", "blue", ""]])
    assert batch.errors == []
    assert batch.numeric is not None
    assert batch.numeric[0, 0] == 3 and math.isnan(batch.numeric[0, 1]) and math.isnan(batch.numeric[1, 1])
    assert batch.fed[1] == ["", ""]


def test_strings_are_parsed_and_ints_are_categories() -> None:
    schema = Schema([Feature("x", "numeric", False), Feature("k", "categorical", False, ("1", "2"))])
    batch = schema.rows([{"x": " 2.5 ", "k": 1}, {"x": "1e3", "k": "2"}])
    assert batch.errors == []
    assert batch.numeric is not None and batch.numeric[:, 0].tolist() == [2.5, 1000.0]
    assert batch.categorical[0] == ["1", "2"]


def test_columns_from_csv_strings() -> None:
    cols = [["30", "x", "", "41"], ["", "2", "1", "nan"], ["red", "red", "blue", "pink"], ["L", "", "S", "M"]]
    batch = MIXED.columns(cols, 4, start=1)
    assert [str(e) for e in batch.errors] == [
        "row 2: field 'age': expected a number, got 'x'",
        "row 3: field 'age': is missing (null/NaN) but the feature is not nullable",
        "row 4: field 'colour': category 'pink' was not seen in training (expected one of 'blue', 'red')",
    ]
    assert batch.ok.tolist() == [0]


def test_matrix_checks_nan_per_column() -> None:
    X = np.array([[1, np.nan], [np.nan, 2], [3, 4], [np.inf, 0]])
    batch = NUMERIC.matrix(X)
    assert batch.ok.tolist() == [0, 2]
    assert [str(e) for e in batch.errors] == [
        "row 1: field 'a': is missing (null/NaN) but the feature is not nullable",
        "row 3: field 'a': expected a finite number within float32 range, got inf",
    ]


def test_matrix_float64_beyond_float32_is_refused() -> None:
    batch = NUMERIC.matrix(np.array([[1e39, 0.0], [1.0, 2.0]]))
    assert [str(e) for e in batch.errors] == ["row 0: field 'a': expected a finite number within float32 range, got 1e+39"]


def test_matrix_wrong_width_is_one_error() -> None:
    with pytest.raises(InputError, match=r"^expected an array of shape \(n, 2\) in manifest order, got \(3, 3\)$"):
        NUMERIC.matrix(np.zeros((3, 3)))


@pytest.mark.filterwarnings("ignore:overflow encountered in cast")  # pytest shows warnings the module filters
def test_fast_row_only_accepts_plainly_valid_rows() -> None:
    row = np.array([1.0, 2.0], dtype=np.float32)
    x = NUMERIC.fast_row(row)
    assert x is not None and x.shape == (1, 2) and x.dtype == np.float32
    assert NUMERIC.fast_row({"a": 1, "b": 2.5}) is not None
    missing_ok = NUMERIC.fast_row({"a": 1, "b": None})  # b is nullable
    assert missing_ok is not None and math.isnan(missing_ok[0, 1])
    assert NUMERIC.fast_row(np.array([1.0, np.nan])) is not None
    for slow in (
        np.array([np.nan, 1.0]),  # a is not nullable: the full path explains
        np.array([np.inf, 1.0]),
        {"a": 1e39, "b": 1.0},  # beyond float32
        {"a": True, "b": 1.0},
        {"a": "1", "b": 1.0},
        {"a": 1, "c": 1.0},
        np.array([1, 2]),  # int dtype
        [1.0, 2.0],
    ):
        assert NUMERIC.fast_row(slow) is None, slow


def test_fast_columns_only_accepts_plainly_valid_rows() -> None:
    got = MIXED.fast_columns({**GOOD, "income": None})
    assert got is not None
    x, cats = got
    assert x.shape == (1, 2) and x[0, 0] == 30 and math.isnan(x[0, 1])
    assert cats == ("red", "L")
    for slow in (
        {**GOOD, "size": None},  # missing category: full path
        {**GOOD, "size": "XL"},  # unseen: full path applies the policy
        {**GOOD, "colour": 1},
        {**GOOD, "age": None},
        {**GOOD, "age": "30"},
        {k: v for k, v in GOOD.items() if k != "age"},
        [30, 1.5, "red", "L"],
    ):
        assert MIXED.fast_columns(slow) is None, slow


def test_fast_paths_agree_with_full_path() -> None:
    rng = np.random.default_rng(0)
    for i in range(50):
        row = {"a": float(rng.normal()), "b": None if i % 5 == 0 else float(rng.normal())}
        fast = NUMERIC.fast_row(row)
        full = NUMERIC.rows([row]).numeric
        assert fast is not None and full is not None
        assert np.array_equal(fast, full, equal_nan=True)
        mixed = {"age": row["a"], "income": row["b"], "colour": "blue", "size": "S"}
        got = MIXED.fast_columns(mixed)
        batch = MIXED.rows([mixed])
        assert got is not None and batch.numeric is not None
        assert np.array_equal(got[0], batch.numeric, equal_nan=True)
        assert list(got[1]) == [c[0] for c in batch.fed]


def test_dict_row_packs_plain_numbers_as_numpy_would() -> None:
    """struct's float32 packing must give numpy's cast bit for bit, in any key order."""
    wide = Schema([Feature(f"f{i}", "numeric", i % 2 == 0) for i in range(6)])
    rng = np.random.default_rng(3)
    for i in range(300):
        values = [float(v) for v in rng.normal(scale=10.0 ** rng.integers(-40, 38), size=6)]
        values[i % 6] = int(rng.integers(-(2**62), 2**62)) if i % 3 == 0 else values[i % 6]
        row = dict(zip(wide.names, values))
        if i % 2:  # another key order each time: the cached order must not leak between rows
            row = dict(sorted(row.items(), reverse=bool(i % 4 == 1)))
        x = wide.dict_row(row)
        assert x is not None and x.shape == (1, 6) and x.dtype == np.float32
        assert x.tobytes() == np.array([values], dtype=np.float32).tobytes()
        assert x.tobytes() == wide.rows([row]).numeric.tobytes()  # type: ignore[union-attr]


@pytest.mark.filterwarnings("ignore:overflow encountered in cast")
def test_dict_row_leaves_anything_unusual_to_the_full_path() -> None:
    assert NUMERIC.dict_row({"a": 1.0, "b": 2.0}) is not None
    assert NUMERIC.dict_row({"b": 2.0, "a": 1.0}).tolist() == [[1.0, 2.0]]  # type: ignore[union-attr]
    for slow in (
        {"a": 1.0, "b": None},  # missing: fast_row's numpy path makes it NaN
        {"a": float("nan"), "b": 1.0},
        {"a": float("inf"), "b": 1.0},
        {"a": 1e39, "b": 1.0},  # beyond float32
        {"a": 2**1100, "b": 1.0},
        {"a": True, "b": 1.0},  # bool and str would pack as numbers
        {"a": "1", "b": 1.0},
        {"a": np.array(1.0), "b": 1.0},
        {"a": 1.0},
        {"a": 1.0, "c": 1.0},
        {"a": 1.0, "b": 1.0, "c": 1.0},
    ):
        assert NUMERIC.dict_row(slow) is None, slow
        # ... where the numpy path takes it (a missing value) or the full path reads it
        # (text is a number there, as in a CSV) or explains it
        if slow == {"a": 1.0, "b": None}:
            assert NUMERIC.fast_row(slow) is not None
        else:
            assert NUMERIC.fast_row(slow) is None, slow
            assert NUMERIC.rows([slow]).errors or slow["a"] == "1", slow
    assert [str(e) for e in NUMERIC.rows([{"a": True, "b": 1.0}]).errors] == [
        "row 0: field 'a': expected a number, got a boolean"
    ]


@pytest.mark.parametrize("odd", [True, "2.5", None, 3, [1.0]])
def test_all_float_batch_and_one_other_value(odd: object) -> None:
    """Floats only take one list comparison of their types; one other value takes the
    general check, which names a bad row as before (and reads a good one the same)."""
    rows = [{"a": float(i), "b": i + 0.5} for i in range(5)]
    plain = NUMERIC.rows(rows)
    assert plain.errors == [] and plain.numeric.tolist() == [[float(i), i + 0.5] for i in range(5)]
    rows[3] = {"a": 3.0, "b": odd}
    messages = [str(e) for e in NUMERIC.rows(rows).errors]
    if odd is True:
        assert messages == ["row 3: field 'b': expected a number, got a boolean"]
    elif isinstance(odd, list):
        assert messages == ["row 3: field 'b': expected a number, got list"]
    else:
        got = NUMERIC.rows(rows)
        assert messages == [] and got.numeric[:, 0].tolist() == [0.0, 1.0, 2.0, 3.0, 4.0]
        assert np.isnan(got.numeric[3, 1]) if odd is None else got.numeric[3, 1] == float(odd)


def test_large_float_batch_takes_the_set_check() -> None:
    """Beyond a request-sized block the types are not listed (memory): same block, same errors."""
    from mlpack_edge.runtime import schema as schema_module

    n = schema_module._LISTED_TYPES // 2 + 1  # 2 numeric features: just over the limit
    rows = [{"a": float(i), "b": 0.5} for i in range(n)]
    assert NUMERIC.rows(rows).numeric[:, 0].tolist() == [float(i) for i in range(n)]
    rows[-1] = {"a": 1.0, "b": True}
    assert [str(e) for e in NUMERIC.rows(rows).errors] == [f"row {n - 1}: field 'b': expected a number, got a boolean"]
