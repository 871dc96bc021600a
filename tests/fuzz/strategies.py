"""Hypothesis strategies for what users feed mlpack: CSV/JSON Lines bytes, /predict bodies, ingest uploads.

Each strategy mixes three layers, so the fuzzers reach the deep paths as well as the
parsers: raw bytes; well-formed text whose values are wrong in every way (types,
numbers at the edges, unicode, missing or extra fields); and that text damaged at the
byte level (another encoding, an inserted byte, a cut).
"""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Mapping, Sequence
from typing import Any

from hypothesis import strategies as st

EDGE_TEXT = [
    "", " ", "1", "-0", "0.5", "1e308", "1e999", "-1e999", "nan", "NaN", "inf", "-Infinity", "NULL", "null", "None",
    " 1 ", "0x10", "1_000", "１２", "1,5", "٣", "true", "red", "blue", "green", "round", "square", "RED", "\u00a0",
    "é", "😀", "\x00", "\t", '"', "'", "\\", "a\nb", "a\rb", "=1+1", "0" * 400, "9" * 400,
]
#: Numbers JSON can carry (no NaN/inf: json.dumps would write non-standard tokens; those come as text).
JSON_NUMBERS = st.one_of(
    st.integers(), st.integers(min_value=-(2**70), max_value=2**70),
    st.floats(allow_nan=False, allow_infinity=False), st.floats(width=32, allow_nan=False, allow_infinity=False),
)
EDGE_NUMBERS = st.one_of(JSON_NUMBERS, st.floats(allow_nan=True, allow_infinity=True))


def cell_text() -> st.SearchStrategy[str]:
    return st.one_of(st.sampled_from(EDGE_TEXT), EDGE_NUMBERS.map(str), st.text(max_size=12))


def json_value(leaf_size: int = 12) -> st.SearchStrategy[Any]:
    leaves = st.one_of(st.none(), st.booleans(), JSON_NUMBERS,
                       st.sampled_from(EDGE_TEXT), st.text(max_size=leaf_size))
    return st.recursive(leaves, lambda kids: st.one_of(st.lists(kids, max_size=4),
                                                         st.dictionaries(st.text(max_size=8), kids, max_size=4)),
                        max_leaves=12)


#: Feature name -> values the model accepts for it (JSON types: numbers, category strings, None).
Valid = Mapping[str, Sequence[Any]]


def row_dict(features: Sequence[str], valid: Valid | None = None) -> st.SearchStrategy[dict[str, Any]]:
    """A row object: some features, values of any type, perhaps unknown keys; or, given
    ``valid``, often a row the model accepts (so predictions get formatted and written too)."""
    value = st.one_of(json_value(), st.sampled_from(EDGE_TEXT), JSON_NUMBERS)
    wild = st.builds(
        lambda known, extra: {**known, **extra},
        st.fixed_dictionaries({}, optional={f: value for f in features}),
        st.dictionaries(st.text(max_size=8), value, max_size=2),
    )
    if not valid:
        return wild
    good = st.fixed_dictionaries({f: st.sampled_from(list(valid[f])) for f in features if f in valid})
    return st.one_of(wild, good)


def _as_cell(value: Any) -> str:
    return "" if value is None else repr(value) if isinstance(value, float) else str(value)


@st.composite
def damaged(draw: st.DrawFn, text: str) -> bytes:
    """``text`` as bytes: UTF-8 (with or without BOM) or another encoding, maybe with a byte inserted or cut."""
    encoding = draw(st.sampled_from(["utf-8", "utf-8", "utf-8", "utf-8-sig", "utf-16", "latin-1", "cp1252"]))
    data = text.encode(encoding, errors="replace")
    edit = draw(st.sampled_from(["none", "none", "insert", "cut", "flip"]))
    if data and edit != "none":
        at = draw(st.integers(0, len(data) - 1))
        if edit == "insert":
            data = data[:at] + draw(st.binary(min_size=1, max_size=3)) + data[at:]
        elif edit == "cut":
            data = data[:at]
        else:
            data = data[:at] + bytes([data[at] ^ draw(st.integers(1, 255))]) + data[at + 1 :]
    return data


@st.composite
def csv_text(draw: st.DrawFn, features: Sequence[str], valid: Valid | None = None) -> str:
    names = list(draw(st.permutations(list(features))))
    shape = draw(st.sampled_from(["ok", "ok", "drop", "extra", "dup", "none"]))
    if shape == "drop" and names:
        names.pop(draw(st.integers(0, len(names) - 1)))
    elif shape == "extra":
        names.insert(draw(st.integers(0, len(names))), draw(st.sampled_from(["id", "", "x1 ", "Unnamed: 0"])))
    elif shape == "dup" and names:
        names.append(names[0])
    header = names if shape != "none" else []
    rows = draw(st.lists(st.lists(cell_text(), min_size=0, max_size=len(features) + 2), max_size=12))
    if valid and header and draw(st.booleans()):  # rows the model accepts, some of them
        good = [[_as_cell(draw(st.sampled_from(list(valid[n])))) if n in valid else draw(cell_text()) for n in header]
                for _ in range(draw(st.integers(1, 8)))]
        rows = [r for pair in zip(good, rows + [None] * len(good)) for r in pair if r is not None]
    rows = [r if draw(st.booleans()) else (r + [""] * len(header))[: len(header)] for r in rows]
    eol = draw(st.sampled_from(["\n", "\r\n", "\r"]))
    if draw(st.booleans()):
        out = io.StringIO()
        writer = csv.writer(out, lineterminator=eol, quoting=draw(st.sampled_from([csv.QUOTE_MINIMAL, csv.QUOTE_ALL])))
        if header:
            writer.writerow(header)
        writer.writerows(rows)
        return out.getvalue()
    lines = ([",".join(header)] if header else []) + [",".join(r) for r in rows]  # naive: quotes left unbalanced
    return eol.join(lines) + draw(st.sampled_from(["", eol]))


@st.composite
def jsonl_text(draw: st.DrawFn, features: Sequence[str], valid: Valid | None = None) -> str:
    lines = draw(st.lists(st.one_of(
        st.tuples(row_dict(features, valid), st.booleans()).map(lambda t: json.dumps(t[0], ensure_ascii=t[1])),
        json_value().map(json.dumps),
        st.sampled_from(["", "   ", "{", "[" * 3000, '{"x1": NaN}', '{"x1": 1e999}', "{'x1': 1}", "null", "\x00"]),
        st.text(max_size=30),
    ), max_size=12))
    return draw(st.sampled_from(["\n", "\r\n"])).join(lines) + draw(st.sampled_from(["", "\n"]))


def input_bytes(features: Sequence[str], valid: Valid | None = None) -> st.SearchStrategy[bytes]:
    """What ``predict`` may be handed: near-CSV, near-JSON Lines, or anything at all."""
    return st.one_of(
        csv_text(features, valid).flatmap(damaged),
        jsonl_text(features, valid).flatmap(damaged),
        st.binary(max_size=600),
    )


def predict_bodies(features: Sequence[str], valid: Valid | None = None) -> st.SearchStrategy[bytes]:
    """``POST /predict`` bodies: a row, a batch, any JSON, damaged JSON, raw bytes."""
    row = row_dict(features, valid)
    rows = st.one_of(row, st.lists(st.one_of(row, json_value()), max_size=8))
    text = st.one_of(
        rows.map(json.dumps), json_value().map(json.dumps),
        st.sampled_from(["", "{", "[" * 5000 + "]" * 5000, '{"x1": NaN}', "[1e999]", '{"x1": -Infinity}', "\ufeff{}"]),
    )
    return st.one_of(text.flatmap(damaged), st.binary(max_size=400))


@st.composite
def mutated(draw: st.DrawFn, value: Any, depth: int = 0) -> Any:
    """``value`` with one place somewhere inside replaced, removed or added (or left as is)."""
    if depth > 6 or draw(st.integers(0, 4)) == 0:
        return draw(json_value()) if depth else value
    if isinstance(value, dict) and value:
        key = draw(st.sampled_from(sorted(value)))
        out = dict(value)
        action = draw(st.sampled_from(["into", "into", "replace", "drop", "add"]))
        if action == "into":
            out[key] = draw(mutated(value[key], depth + 1))
        elif action == "replace":
            out[key] = draw(st.one_of(json_value(), JSON_NUMBERS))
        elif action == "drop":
            del out[key]
        else:
            out[draw(st.text(max_size=8))] = draw(json_value())
        return out
    if isinstance(value, list) and value:
        i = draw(st.integers(0, len(value) - 1))
        out_list = list(value)
        action = draw(st.sampled_from(["into", "into", "drop", "dup"]))
        if action == "into":
            out_list[i] = draw(mutated(value[i], depth + 1))
        elif action == "drop":
            del out_list[i]
        else:
            out_list.append(out_list[i])
        return out_list
    return draw(st.one_of(json_value(), JSON_NUMBERS))
