"""runtime/_datetime.py: formats, parts and missing values, checked against pandas' own date parts."""

from __future__ import annotations

import math
from datetime import datetime, timezone

import numpy as np
import pandas as pd
import pytest

from mlpack_edge.runtime._datetime import PARTS, derive, infer_format, parse

STAMPS = pd.to_datetime(["2012-01-01 00:00", "2012-02-29 23:59", "2016-12-31 12:30", "2024-07-15 08:05"])


def _pandas_parts(stamps: pd.DatetimeIndex) -> np.ndarray:
    """The same parts computed by pandas, an implementation independent of ours."""
    return np.column_stack(
        [stamps.year, stamps.month, stamps.day, stamps.day_of_week, stamps.day_of_year, stamps.hour, stamps.minute]
    ).astype(np.float64)


@pytest.mark.parametrize(
    ("fmt", "texts"),
    [
        ("iso", [s.isoformat() for s in STAMPS]),
        ("iso", [s.strftime("%Y-%m-%d %H:%M") for s in STAMPS]),
        ("%Y/%m/%d %H:%M", [s.strftime("%Y/%m/%d %H:%M") for s in STAMPS]),
        ("epoch", [str(int(s.tz_localize("UTC").timestamp())) for s in STAMPS]),
    ],
)
def test_every_part_agrees_with_pandas(fmt: str, texts: list[str]) -> None:
    parts, problems = derive(texts, fmt, PARTS)
    assert problems == {}
    np.testing.assert_array_equal(parts, _pandas_parts(STAMPS))


def test_epoch_numbers_and_datetime_objects_are_taken_as_they_are() -> None:
    seconds = [s.tz_localize("UTC").timestamp() for s in STAMPS]
    np.testing.assert_array_equal(derive(seconds, "epoch", PARTS)[0], _pandas_parts(STAMPS))
    np.testing.assert_array_equal(derive(list(STAMPS), "%Y/%m/%d", PARTS)[0], _pandas_parts(STAMPS))


def test_an_offset_keeps_the_wall_clock_as_written() -> None:
    parts, _ = derive(["2012-01-01T23:30:00+05:00", "2012-01-01T23:30:00Z"], "iso", ("day", "hour"))
    assert parts.tolist() == [[1.0, 23.0], [1.0, 23.0]]


def test_missing_values_give_nan_parts_and_bad_ones_a_problem() -> None:
    values = ["2012/01/01", None, float("nan"), pd.NaT, " NA ", "", "2012-01-01", 5]
    parts, problems = derive(values, "%Y/%m/%d", ("year",), missing=("", "NA"))
    assert parts[0, 0] == 2012 and all(math.isnan(v) for v in parts[1:6, 0])
    assert problems == {
        6: "expected a date/time (%Y/%m/%d), got '2012-01-01'",
        7: "expected a date/time (%Y/%m/%d), got int 5",
    }


@pytest.mark.parametrize(
    ("cells", "expected"),
    [
        (["2012-01-01", "2013-05-06T10:00:00"], "iso"),
        (["2012/01/01", "2013/05/06"], "%Y/%m/%d"),
        (["2012/01/01 10:00", "2013/05/06 11:30"], "%Y/%m/%d %H:%M"),
        (["1325376000", "1325379600.5"], "epoch"),
    ],
)
def test_formats_are_inferred(cells: list[str], expected: str) -> None:
    assert infer_format(cells) == (expected, None)


def test_no_format_fits_names_the_furthest_failing_cell() -> None:
    assert infer_format(["2012/01/01", "2012/01/02", "01.03.2012"]) == (None, 2)


def test_epoch_out_of_range_is_refused() -> None:
    with pytest.raises(ValueError, match=r"^expected a date/time \(epoch seconds\), got '1e20'$"):
        parse("1e20", "epoch")
    assert parse("0", "epoch") == datetime(1970, 1, 1, tzinfo=timezone.utc)


@pytest.mark.parametrize("fmt", ["%Y/%m/%d", "%Y/%m/%d %H:%M", "%Y/%m/%d %H:%M:%S"])
def test_the_fast_path_reads_exactly_what_strptime_reads(fmt: str) -> None:
    """Common slash formats skip strptime; valid or not, the outcome must be strptime's."""
    import itertools

    texts = [
        datetime(2000, 1, 1).strftime(fmt).replace("2000/01/01", f"{y}/{m:02d}/{d:02d}").replace("00:00", f"{h:02d}:{mi:02d}")
        for y, m, d, h, mi in itertools.product([1999, 2012, 2024], range(0, 14), range(0, 33), [0, 23, 24], [0, 59, 60])
    ] + ["2012/1/3", "2012/01/03 1:05", "٢٠١٢/01/03", " 2012/01/03 ", "2012/02/30", "2012/01/03 10:00:61"]
    for text in texts:
        try:
            expected: object = datetime.strptime(text.strip(), fmt)
        except ValueError:
            expected = ValueError
        try:
            got: object = parse(text, fmt)
        except ValueError:
            got = ValueError
        assert got == expected, text
