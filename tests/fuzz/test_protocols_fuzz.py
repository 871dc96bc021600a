"""Property: MLflow's ``/invocations`` and KServe v2's ``infer`` answer any body below 500, in
their protocol's error shape, with one-line errors; a 200 is a well-formed answer.

Bodies are valid requests of each protocol with one place inside replaced, removed or
added (``mutated``), any JSON, damaged text, and for v2 a JSON header followed by raw
bytes under a random ``Inference-Header-Content-Length`` (Triton's binary extension).
Black box over HTTP against the real ``serve`` process of ``test_serve_fuzz``.
"""

from __future__ import annotations

import json
import math
from typing import Any

import httpx
from hypothesis import event, given
from hypothesis import strategies as st

from tests._proc import Started

from ._settings import fuzz
from .strategies import damaged, json_value, mutated
from .test_serve_fuzz import served  # noqa: F401 - the real serve process, shared

ROWS = [
    {"x1": 1.0, "x2": None, "colour": "red", "shape": "round"},
    {"x1": -0.5, "x2": 2.0, "colour": "blue", "shape": "square"},
]
COLUMNS = ["x1", "x2", "colour", "shape"]
MLFLOW = [
    {"dataframe_split": {"columns": COLUMNS, "data": [[r[c] for c in COLUMNS] for r in ROWS]}},
    {"dataframe_records": ROWS},
    {"instances": ROWS},
    {"inputs": {c: [r[c] for r in ROWS] for c in COLUMNS}, "params": {"probabilities": True}},
]
V2 = {"id": "1", "inputs": [
    {"name": c, "shape": [2, 1], "datatype": "BYTES" if c in ("colour", "shape") else "FP64", "data": [r[c] for r in ROWS]}
    for c in COLUMNS
], "outputs": [{"name": "label"}, {"name": "probabilities", "parameters": {"binary_data": False}}]}


def _one_line(text: Any) -> None:
    assert isinstance(text, str) and text.strip() and "\n" not in text, text


@st.composite
def mlflow_request(draw: st.DrawFn) -> tuple[bytes, str]:
    csv = "x1,x2,colour,shape\n1.0,,red,round\n-0.5,2.0,blue,square\n"
    kind = draw(st.sampled_from(["json", "json", "json", "csv", "any"]))
    if kind == "csv":
        return draw(damaged(csv)), draw(st.sampled_from(["text/csv", "text/csv; charset=utf-8", "text/csv; charset=latin-1"]))
    value = draw(json_value()) if kind == "any" else draw(mutated(draw(st.sampled_from(MLFLOW))))
    return draw(damaged(json.dumps(value))), draw(st.sampled_from(["application/json", "application/json; charset=utf-8", "text/plain"]))


@fuzz(examples=100)
@given(request=mlflow_request())
def test_invocations_answers_every_body_below_500(served: tuple[Started, httpx.Client], request: tuple[bytes, str]) -> None:  # noqa: F811
    _, client = served
    body, ctype = request
    r = client.post("/invocations", content=body, headers={"Content-Type": ctype})
    event(f"HTTP {r.status_code}")
    assert r.status_code in (200, 400, 413, 415), (r.status_code, r.text)
    payload = json.loads(r.content)
    if r.status_code == 200:
        assert isinstance(payload, dict) and list(payload) == ["predictions"] and isinstance(payload["predictions"], list)
    else:
        assert payload["error_code"] == "BAD_REQUEST", r.text
        _one_line(payload["message"])


@st.composite
def v2_request(draw: st.DrawFn) -> tuple[bytes, dict[str, str]]:
    value = draw(st.one_of(mutated(V2), json_value()))
    head = draw(damaged(json.dumps(value)))
    if not draw(st.booleans()):
        return head, {"Content-Type": "application/json"}
    tail = draw(st.binary(max_size=64))
    length = draw(st.one_of(st.just(str(len(head))), st.integers(-5, len(head) + len(tail) + 5).map(str),
                            st.text(st.characters(min_codepoint=33, max_codepoint=126), max_size=4)))
    return head + tail, {"Content-Type": "application/octet-stream", "Inference-Header-Content-Length": length}


@fuzz(examples=100)
@given(request=v2_request())
def test_v2_infer_answers_every_body_below_500(served: tuple[Started, httpx.Client], request: tuple[bytes, dict[str, str]]) -> None:  # noqa: F811
    _, client = served
    body, headers = request
    r = client.post("/v2/models/mixed/infer", content=body, headers=headers)
    event(f"HTTP {r.status_code}")
    assert r.status_code in (200, 400, 413), (r.status_code, r.text)
    if r.status_code != 200:
        payload = json.loads(r.content)
        assert list(payload) == ["error"], r.text
        _one_line(payload["error"])
        return
    length = r.headers.get("inference-header-content-length")
    head = json.loads(r.content[: int(length)] if length else r.content)
    assert head["model_name"] == "mixed" and head["outputs"]
    for out in head["outputs"]:
        size = math.prod(out["shape"])
        if "data" in out:
            assert len(out["data"]) == size, out
        else:
            assert out["parameters"]["binary_data_size"] >= 0
