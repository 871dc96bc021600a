"""Property: the collector's ingest answers every upload below 500 with one-line JSON errors,
and stores a batch whole or not at all.

Black box against a real collector process on SQLite: raw bytes, any JSON, and valid
batches with one place mutated anywhere inside (a count, a seq, a bin list, a model
profile...), gzip or not, with good and bad credentials. Afterwards the collector has
logged no traceback, and for the device every stored window is counted in the roll-ups
exactly once (a half-applied batch would break that).
"""

from __future__ import annotations

import gzip
import json
import time
import uuid
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from hypothesis import event, given
from hypothesis import strategies as st

from mlpack_edge.collector import admin, open_storage
from tests.collector.process import Collector, start_collector, stop_collector
from tests.collector.sim import SimDevice, make_profile, model_hash

from ._settings import fuzz
from .strategies import damaged, json_value, mutated

OK_STATUSES = (200, 400, 401, 409, 413, 415, 422)


@pytest.fixture(scope="module")
def fleet(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Collector, str, str, dict[str, Any]]]:
    db = "sqlite:///" + str(tmp_path_factory.mktemp("ingest-fuzz") / "collector.db")
    collector = start_collector(db)
    name = f"fuzz-{uuid.uuid4().hex[:8]}"
    token = admin.add_device(db, name)
    dev = SimDevice(name, make_profile(), model_hash("fuzz", "1.0.0"))
    start = time.time() - 7200
    template = dev.batch([dev.window(start + 60 * i) for i in range(3)], name="fuzz")
    try:
        yield collector, name, token, template
        _check_collector(collector, name)
    finally:
        stop_collector(collector)
    output = "".join(collector.output)
    assert "Traceback" not in output and "unexpected failure" not in output, output


def _check_collector(collector: Collector, device: str) -> None:
    with collector.client() as cl:
        assert cl.get("/healthz").status_code == 200
        assert cl.get(f"/devices/{device}").status_code == 200  # the page renders whatever was stored
        assert cl.get(f"/api/v1/devices/{device}").status_code == 200  # and the typed JSON API describes it
        assert cl.get("/api/v1/alerts").status_code == 200
    s = open_storage(collector.db_url, migrate=False)
    try:
        rows = s._query("SELECT seq, seq_last FROM windows WHERE device = ?", (device,))
        counted = sum(int(r[3]) for r in s.rollups("h", 0, 2**40, device=device, columns="windows"))
    finally:
        s.close()
    assert counted == sum(b - a + 1 for a, b in rows), "a batch was half applied"


@st.composite
def uploads(draw: st.DrawFn, template: dict[str, Any]) -> tuple[bytes, str | None]:
    kind = draw(st.sampled_from(["mutated", "mutated", "mutated", "json", "bytes", "damaged"]))
    if kind == "bytes":
        raw = draw(st.binary(max_size=500))
    elif kind == "json":
        raw = json.dumps(draw(json_value())).encode()
    elif kind == "damaged":
        raw = draw(damaged(json.dumps(draw(mutated(template)))))
    else:
        raw = json.dumps(draw(mutated(template))).encode()
    encoding = draw(st.sampled_from(["gzip", "gzip", None, "identity", "br", "gzip-truncated"]))
    if encoding == "gzip":
        return gzip.compress(raw, mtime=0), "gzip"
    if encoding == "gzip-truncated":
        data = gzip.compress(raw, mtime=0)
        return data[: draw(st.integers(0, len(data)))], "gzip"
    return raw, encoding


@fuzz(examples=100)
@given(data=st.data())
def test_ingest_answers_every_upload_below_500_and_stores_whole_batches(
    fleet: tuple[Collector, str, str, dict[str, Any]], data: st.DataObject
) -> None:
    collector, _, token, template = fleet
    body, encoding = data.draw(uploads(template), label="upload")
    auth = data.draw(st.sampled_from([f"Bearer {token}"] * 6 + [None, "Bearer", f"bearer {token}", "Bearer x" * 3, token]),
                     label="authorization")
    headers = {"Content-Type": "application/json"}
    if encoding:
        headers["Content-Encoding"] = encoding
    if auth is not None:
        headers["Authorization"] = auth
    with httpx.Client(base_url=collector.url, timeout=30) as cl:
        r = cl.post("/api/v1/ingest", content=body, headers=headers)
    event(f"HTTP {r.status_code}")
    assert r.status_code in OK_STATUSES, (r.status_code, r.text)
    payload = r.json()
    if r.status_code == 200:
        assert set(payload) == {"stored", "duplicates"}
        assert all(isinstance(s, int) for s in payload["stored"] + payload["duplicates"])
    else:
        assert isinstance(payload.get("error"), str) and payload["error"].strip(), r.text
        assert "\n" not in payload["error"], r.text
