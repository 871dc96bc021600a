"""Streaming batch predict: formats, order, bad rows, header problems, bounded reading."""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from mlpack_edge.errors import InputError
from mlpack_edge.runtime import Model, open_model, predict_stream
from mlpack_edge.runtime.io import atomic_text_output, detect_format


@pytest.fixture(scope="module")
def mixed(mixed_bundle: Path) -> Model:
    return open_model(mixed_bundle)


CSV = "x1,x2,colour,shape\n1.5,,red,round\nabc,1,red,round\n-1,0.5,,square\n0,0,pink,round\n2,1,blue,square\n"


def _run(model: Model, text: str, **kw: object) -> tuple[str, object]:
    out = io.StringIO()
    kw.setdefault("in_format", "csv")
    kw.setdefault("out_format", "csv")
    summary = predict_stream(model, io.StringIO(text), out, **kw)  # type: ignore[arg-type]
    return out.getvalue(), summary


def test_csv_to_csv_keeps_order_and_reports_bad_rows(mixed: Model) -> None:
    text, summary = _run(mixed, CSV, chunk_rows=2)  # chunk boundaries fall between good and bad rows
    rows = list(csv.reader(io.StringIO(text)))
    assert rows[0] == ["label", "proba_A", "proba_B", "proba_C", "error"]
    assert len(rows) == 6
    assert [r[-1] for r in rows[1:]] == [
        "",
        "row 2: field 'x1': expected a number, got 'abc'",
        "",
        "row 4: field 'colour': category 'pink' was not seen in training (expected one of 'blue', 'green', 'red')",
        "",
    ]
    assert rows[2][:4] == ["", "", "", ""]
    expected = mixed.predict_proba(
        [
            {"x1": 1.5, "x2": None, "colour": "red", "shape": "round"},
            {"x1": -1, "x2": 0.5, "colour": None, "shape": "square"},
            {"x1": 2, "x2": 1, "colour": "blue", "shape": "square"},
        ]
    )
    got = np.array([[float(v) for v in rows[i][1:4]] for i in (1, 3, 5)])
    assert np.array_equal(got.astype(np.float32), expected)  # shortest repr reads back exactly
    assert [rows[i][0] for i in (1, 3, 5)] == [mixed.classes[int(np.argmax(p))] for p in expected]
    assert (summary.rows, summary.failed) == (5, 2)  # type: ignore[attr-defined]


def test_same_output_whatever_the_chunk_size(mixed: Model) -> None:
    assert _run(mixed, CSV, chunk_rows=1)[0] == _run(mixed, CSV, chunk_rows=1000)[0]


def test_jsonl_in_jsonl_out_with_kept_id(mixed: Model) -> None:
    lines = [
        {"id": "a", "x1": 1.5, "x2": None, "colour": "red", "shape": "round"},
        {"id": "b", "x1": 1.5},
    ]
    text = "\n".join(json.dumps(r) for r in lines) + "\n\nnot json\n"
    out, summary = _run(mixed, text, in_format="jsonl", out_format="jsonl", keep=["id"])
    got = [json.loads(line) for line in out.splitlines()]
    assert got[0]["id"] == "a" and set(got[0]) == {"id", "label", "probabilities"}
    assert got[1] == {"id": "b", "error": "row 2: missing features 'x2', 'colour', 'shape'", "row": 2, "field": "x2"}
    assert got[2]["id"] is None and got[2]["error"].startswith("row 3: not valid JSON (")
    assert (summary.rows, summary.failed) == (3, 2)  # type: ignore[attr-defined]


def test_csv_keep_column_and_jsonl_out(mixed: Model) -> None:
    text = "id,x1,x2,colour,shape\n7,1,2,red,round\n8,1,2,red\n"
    out, _ = _run(mixed, text, out_format="jsonl", keep=["id"])
    first, second = (json.loads(line) for line in out.splitlines())
    assert first["id"] == "7" and first["label"] in ("A", "B", "C")
    assert second == {"id": "8", "error": "row 2: expected 5 fields as in the CSV header, got 4", "row": 2, "field": None}


def test_regression_csv(regression_bundle: Path) -> None:
    model = open_model(regression_bundle)
    out, _ = _run(model, "x1,x2,x3\n1,2,\n0,0,0\n")
    rows = list(csv.reader(io.StringIO(out)))
    assert rows[0] == ["value", "error"]
    values = model.predict([[1, 2, None], [0, 0, 0]])
    assert [np.float32(r[0]) for r in rows[1:]] == values.tolist()


@pytest.mark.parametrize(
    ("text", "keep", "message"),
    [
        ("", (), "in.csv: empty input (expected a CSV header naming the features)"),
        ("x1,x2,colour\n1,2,red\n", (), "in.csv: the CSV header lacks feature 'shape'"),
        (
            "id,x1,x2,colour,shape\n",
            (),
            "in.csv: unknown CSV column 'id' (not a feature of the model; --keep copies a column to the output)",
        ),
        ("x1,x2,colour,shape,x1\n", (), "in.csv: duplicate column 'x1' in the CSV header"),
        ("x1,x2,colour,shape\n", ("id",), "in.csv: --keep column 'id' is not in the CSV header"),
    ],
)
def test_header_problems_fail_the_whole_input(mixed: Model, text: str, keep: tuple[str, ...], message: str) -> None:
    out = io.StringIO()
    with pytest.raises(InputError) as err:
        predict_stream(mixed, io.StringIO(text), out, in_format="csv", out_format="csv", keep=keep, where="in.csv")
    assert str(err.value) == message
    assert out.getvalue() == ""


def test_csv_syntax_error_names_the_line(mixed: Model) -> None:
    text = "x1,x2,colour,shape\n1,2,red,round\n1,2," + "r" * 200_000 + ",round\n"
    with pytest.raises(InputError, match=r"^in\.csv: line 3: field larger than field limit"):
        _run(mixed, text, where="in.csv")


@pytest.mark.parametrize("data", [b"x1,x2,colour,shape\n1,2,r\xe9d,round\n", b"x1,x2,col\xffour,shape\n"])
def test_text_that_is_not_utf8_is_one_error(mixed: Model, data: bytes) -> None:
    lines = io.TextIOWrapper(io.BytesIO(data), encoding="utf-8", newline="")
    with pytest.raises(InputError, match=r"^in\.csv: not UTF-8 text after row 0 \(invalid "):
        predict_stream(mixed, lines, io.StringIO(), in_format="csv", out_format="csv", where="in.csv")


def test_input_is_streamed_not_loaded(mixed: Model) -> None:
    """Output for the first chunk exists before the source has been read past the second."""
    out = io.StringIO()
    read = 0

    def lines() -> Iterator[str]:
        nonlocal read
        yield "x1,x2,colour,shape\n"
        for i in range(10_000):
            read = i + 1
            if i == 250:
                assert out.getvalue().count("\n") >= 101  # header + the first 100-row chunk already written
            yield f"{i % 7},1,red,round\n"

    summary = predict_stream(mixed, lines(), out, in_format="csv", out_format="csv", chunk_rows=100)
    assert summary.rows == 10_000 and read == 10_000
    assert out.getvalue().count("\n") == 10_001


def test_detect_format() -> None:
    assert detect_format("a.CSV", "{") == "csv"
    assert detect_format("a.jsonl", "x") == "jsonl"
    assert detect_format(None, '  {"a": 1}') == "jsonl"
    assert detect_format("data.txt", "a,b") == "csv"


def test_atomic_output_leaves_nothing_on_failure(tmp_path: Path) -> None:
    target = tmp_path / "out.csv"
    with pytest.raises(RuntimeError):
        with atomic_text_output(target) as fh:
            fh.write("partial")
            raise RuntimeError("boom")
    assert list(tmp_path.iterdir()) == []
    with atomic_text_output(target) as fh:
        fh.write("done\n")
    assert target.read_text() == "done\n"
    assert [p.name for p in tmp_path.iterdir()] == ["out.csv"]
