"""Property: ``POST /predict`` on any body answers below 500 with JSON, and every error is one line.

Black box over HTTP against a real ``serve`` process (the whole command: bundle verified,
golden set replayed, real sockets), so it holds whatever the server looks like inside.
Afterwards the process is still serving and has printed no traceback.
"""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from hypothesis import event, given
from hypothesis import strategies as st

from tests._proc import Started, start_and_wait

from ._settings import fuzz
from .strategies import predict_bodies

CONTENT_TYPES = [None, "application/json", "application/json; charset=utf-8", "text/plain", "application/x-ndjson", "\x7f"]


@pytest.fixture(scope="module")
def served(fuzz_bundle: Path) -> Iterator[tuple[Started, httpx.Client]]:
    started = start_and_wait(
        [sys.executable, "-m", "mlpack_edge.cli", "device", "--bundle", str(fuzz_bundle), "--allow-unsigned",
         "serve", "--port", "0", "--no-monitor", "--max-batch-rows", "50"],
        "serving ",
        env={k: v for k, v in os.environ.items() if not k.startswith("MLPACK_")},
    )
    assert started.line is not None, started.output()
    url = started.line.split(" on ")[1].split()[0]
    with httpx.Client(base_url=url, timeout=30) as client:
        yield started, client
        assert client.get("/health").status_code == 200  # still serving after everything it was sent
    started.proc.terminate()
    code, output = started.finish()
    assert "Traceback" not in output, output
    assert code == 0, output


def check_json_reply(r: httpx.Response) -> object:
    """Below 500, JSON, and an error is ``{"error": one line, ...}``."""
    assert r.status_code < 500, (r.status_code, r.text)
    payload = json.loads(r.content)
    if r.status_code >= 400:
        assert isinstance(payload, dict) and isinstance(payload.get("error"), str), r.text
        assert "\n" not in payload["error"] and payload["error"].strip(), r.text
    return payload


@fuzz(examples=100)
@given(data=st.data())
def test_predict_answers_every_body_below_500_with_one_line_errors(
    served: tuple[Started, httpx.Client], features: list[str], valid: dict[str, list[object]], data: st.DataObject
) -> None:
    _, client = served
    body = data.draw(predict_bodies(features, valid), label="body")
    ctype = data.draw(st.sampled_from(CONTENT_TYPES), label="content-type")
    r = client.post("/predict", content=body, headers={"Content-Type": ctype} if ctype else {})
    event(f"HTTP {r.status_code}")
    payload = check_json_reply(r)
    assert r.status_code in (200, 400, 413, 415, 422), (r.status_code, r.text)
    if r.status_code == 200 and isinstance(payload, dict) and "predictions" in payload:
        errors = [p["error"] for p in payload["predictions"] if isinstance(p, dict) and "error" in p]
        assert payload["failed"] == len(errors)
        assert all(isinstance(e, str) and "\n" not in e for e in errors)


@pytest.mark.parametrize(
    "body",
    ['{"x1": 1, "colour": "r\xe9d"}'.encode("latin-1"), '{"x1": 1}'.encode("utf-16"), b"\xff\xfe\x00garbage"],
    ids=["latin-1", "utf-16", "garbage"],
)
def test_a_body_that_is_not_utf8_json_is_a_one_line_4xx(served: tuple[Started, httpx.Client], body: bytes) -> None:
    _, client = served
    r = client.post("/predict", content=body, headers={"Content-Type": "application/json"})
    check_json_reply(r)
    assert r.status_code in (400, 422), r.text
