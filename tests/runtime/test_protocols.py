"""``serve`` speaks MLflow's scoring protocol and KServe's Open Inference Protocol v2.

Real servers on 127.0.0.1 over real bundles. Requests are the published wire formats:
the MLflow payloads are those of MLflow's "Deploy MLflow models" docs (``dataframe_split``,
``dataframe_records``, ``instances``, ``inputs``, CSV), the v2 ones those of KServe's
"Open Inference Protocol (V2)" page, and ``tritonclient[http]`` (NVIDIA's client for the
same protocol, binary tensor extension included) is driven as its users drive it.
Every answer is compared with the model's own Python API on the same rows, and checked
against ``/openapi.json``.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest

from mlpack_edge.runtime import Model, PredictServer, ServeConfig, open_model

ROWS = [
    {"x1": 1.0, "x2": None, "colour": "red", "shape": "round"},
    {"x1": -0.5, "x2": 2.0, "colour": "blue", "shape": "square"},
    {"x1": 0.25, "x2": -1.0, "colour": None, "shape": "round"},
]
COLUMNS = ["x1", "x2", "colour", "shape"]


class CountingRecorder:
    """The monitoring hook (``Recorder``), counting what the agent would receive."""

    def __init__(self) -> None:
        self.rows = 0
        self.errors: dict[str, int] = {}

    def record(self, numeric: Any, categorical: Any, predictions: np.ndarray, latency_s: float, requests: int = 1) -> None:
        self.rows += len(predictions)

    def record_error(self, kind: str, count: int) -> None:
        self.errors[kind] = self.errors.get(kind, 0) + count


def _serve(model: Model, **config: Any) -> PredictServer:
    server = PredictServer(model, ServeConfig(port=0, **config))
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server


@pytest.fixture(scope="module")
def recorder() -> CountingRecorder:
    return CountingRecorder()


@pytest.fixture(scope="module")
def model(mixed_bundle: Path, recorder: CountingRecorder) -> Model:
    return open_model(mixed_bundle, threads=1, recorder=recorder)


@pytest.fixture(scope="module")
def server(model: Model) -> Iterator[PredictServer]:
    s = _serve(model, max_batch_rows=50)
    yield s
    s.shutdown()


@pytest.fixture
def client(server: PredictServer) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=server.url, timeout=10) as c:
        yield c


@pytest.fixture(scope="module")
def openapi(server: PredictServer) -> dict[str, Any]:
    return httpx.get(server.url + "/openapi.json").json()


def conforms(doc: dict[str, Any], path: str, method: str, r: httpx.Response) -> None:
    """The response's status is documented for the operation and its JSON body fits the schema."""
    from jsonschema import Draft202012Validator

    responses = doc["paths"][path][method]["responses"]
    assert str(r.status_code) in responses, f"{method.upper()} {path}: undocumented status {r.status_code}"
    content = responses[str(r.status_code)]["content"]
    ctype = r.headers["content-type"].split(";")[0]
    assert ctype in content, f"{method.upper()} {path}: undocumented content type {ctype}"
    if ctype == "application/json":
        pointer = "#/paths/" + path.replace("~", "~0").replace("/", "~1") + f"/{method}/responses/{r.status_code}/content/application~1json/schema"
        Draft202012Validator({**doc, "$ref": pointer}).validate(r.json())


def expected_labels(model: Model, rows: Sequence[dict[str, Any]]) -> list[Any]:
    return [model.predict_one(r).label for r in rows]


# ---------------------------------------------------------------------------- MLflow


def test_mlflow_dataframe_split(client: httpx.Client, model: Model, openapi: dict[str, Any]) -> None:
    # As in MLflow's docs: df.to_dict(orient="split"), here with its index and columns out of order.
    order = ["shape", "x1", "colour", "x2"]
    payload = {"dataframe_split": {"index": [0, 1, 2], "columns": order, "data": [[r[c] for c in order] for r in ROWS]}}
    r = client.post("/invocations", json=payload)
    assert r.status_code == 200, r.text
    assert r.json() == {"predictions": expected_labels(model, ROWS)}
    conforms(openapi, "/invocations", "post", r)


@pytest.mark.parametrize(
    "payload",
    [
        {"dataframe_records": ROWS},
        {"instances": ROWS},
        {"instances": [[r[c] for c in COLUMNS] for r in ROWS]},
        {"inputs": {c: [r[c] for r in ROWS] for c in COLUMNS}},
        {"inputs": [[r[c] for c in COLUMNS] for r in ROWS]},
        {"dataframe_split": {"data": [[r[c] for c in COLUMNS] for r in ROWS]}},  # no columns: manifest order
    ],
    ids=["records", "instances-objects", "instances-lists", "inputs-columns", "inputs-rows", "split-no-columns"],
)
def test_mlflow_json_formats(client: httpx.Client, model: Model, payload: dict[str, Any]) -> None:
    r = client.post("/invocations", json=payload)
    assert (r.status_code, r.json()) == (200, {"predictions": expected_labels(model, ROWS)})


# What MLflow 3.18's own client sends (mlflow.pyfunc.scoring_server.client.ScoringServerClient.invoke,
# through mlflow.utils.proto_json_utils.dump_input_data), recorded byte for byte for a pandas
# DataFrame of ROWS and for a dict of numpy arrays: note the NaN literals, which is how it
# writes a missing value (pandas' to_json), numeric or categorical.
MLFLOW_CLIENT_BODIES = [
    b'{"dataframe_split": {"index": [0, 1, 2], "columns": ["x1", "x2", "colour", "shape"], "data": [[1.0, NaN, "red",'
    b' "round"], [-0.5, 2.0, "blue", "square"], [0.25, -1.0, NaN, "round"]]}}',
    b'{"inputs": {"x1": [1.0], "x2": [NaN], "colour": ["red"], "shape": ["round"]}}',
]


@pytest.mark.parametrize("body", MLFLOW_CLIENT_BODIES, ids=["dataframe", "dict-of-arrays"])
def test_mlflow_client_bodies(client: httpx.Client, model: Model, body: bytes) -> None:
    r = client.post("/invocations", content=body, headers={"Content-Type": "application/json"})
    n = body.count(b"round") + body.count(b"square")
    assert (r.status_code, r.json()) == (200, {"predictions": expected_labels(model, ROWS[:n])})


def test_mlflow_one_row_of_scalars(client: httpx.Client, model: Model) -> None:
    r = client.post("/invocations", json={"inputs": ROWS[0]})
    assert r.json() == {"predictions": expected_labels(model, ROWS[:1])}


def test_mlflow_csv_as_pandas_writes_it(client: httpx.Client, model: Model) -> None:
    # df.to_csv() writes the index as a leading unnamed column; a missing value is an empty cell.
    csv = ",x1,x2,colour,shape\n0,1.0,,red,round\n1,-0.5,2.0,blue,square\n2,0.25,-1.0,,round\n"
    r = client.post("/invocations", content=csv, headers={"Content-Type": "text/csv"})
    assert (r.status_code, r.json()) == (200, {"predictions": expected_labels(model, ROWS)})
    r = client.post("/invocations", content="x1,x2,colour,shape\n1.0,,red,round\n", headers={"Content-Type": "text/csv; charset=utf-8"})
    assert r.json() == {"predictions": expected_labels(model, ROWS[:1])}


def test_mlflow_probabilities_on_request(client: httpx.Client) -> None:
    r = client.post("/invocations", json={"dataframe_records": ROWS, "params": {"probabilities": True}})
    batch = client.post("/predict", json=ROWS).json()["predictions"]
    assert r.json() == {"predictions": batch}


def test_mlflow_regression(regression_bundle: Path) -> None:
    model = open_model(regression_bundle, threads=1)
    rows = [{"x1": 0.5, "x2": -1.0, "x3": None}, {"x1": 2.0, "x2": 0.0, "x3": 1.5}]
    server = _serve(model)
    try:
        r = httpx.post(server.url + "/invocations", json={"dataframe_records": rows})
        assert r.json() == {"predictions": pytest.approx([model.predict(x) for x in rows], abs=1e-6)}
    finally:
        server.shutdown()


@pytest.mark.parametrize(
    ("content", "ctype", "status", "message"),
    [
        (json.dumps({"dataframe_records": [ROWS[0], {**ROWS[0], "x1": "?"}, ROWS[0]]}), "application/json", 400,
         "row 1: field 'x1': expected a number, got '?' (1 of 3 rows invalid; nothing predicted)"),
        (json.dumps({"dataframe_split": {"columns": ["x1", "x2", "colour"], "data": [[1, 2, "red"]]}}), "application/json", 400,
         "dataframe_split.columns: missing feature 'shape'"),
        (json.dumps({"instances": [{**ROWS[0], "colour": "pink"}]}), "application/json", 400,
         "row 0: field 'colour': category 'pink' was not seen in training (expected one of 'blue', 'green', 'red')"),
        (json.dumps({"dataframe_records": ROWS, "instances": ROWS}), "application/json", 400,
         "expected a JSON object with exactly one of 'dataframe_split', 'dataframe_records', 'instances', 'inputs';"
         " got 'dataframe_records', 'instances'"),
        (json.dumps(ROWS[0]), "application/json", 400,
         "expected a JSON object with exactly one of 'dataframe_split', 'dataframe_records', 'instances', 'inputs';"
         " got 'x1', 'x2', 'colour', 'shape'; POST one row {feature: value} to /predict"),
        (json.dumps({"inputs": [1.0, 2.0]}), "application/json", 400,
         "inputs: expected a list of rows (objects, or lists of 4 values in manifest order), got a list of single values"),
        ("x1,x2,colour\n1,2,red\n", "text/csv", 400, "CSV body: the CSV header lacks feature 'shape'"),
        ("x1,x2,colour,shape\n1,2,red\n", "text/csv", 400,
         "row 1: expected 4 fields as in the CSV header, got 3"),
        ("{}", "application/x-www-form-urlencoded", 415,
         "Content-Type must be application/json or text/csv, got 'application/x-www-form-urlencoded'"),
        (json.dumps({"dataframe_records": [ROWS[0]] * 51}), "application/json", 413, "batch of 51 rows exceeds the limit of 50"),
    ],
    ids=["bad-row", "missing-column", "unseen", "two-formats", "plain-row", "flat-list", "csv-header", "csv-short", "form", "too-many"],
)
def test_mlflow_errors(
    client: httpx.Client, openapi: dict[str, Any], content: str, ctype: str, status: int, message: str
) -> None:
    r = client.post("/invocations", content=content, headers={"Content-Type": ctype})
    assert (r.status_code, r.json()) == (status, {"error_code": "BAD_REQUEST", "message": message})
    conforms(openapi, "/invocations", "post", r)


def test_predict_names_the_right_endpoint(client: httpx.Client) -> None:
    r = client.post("/predict", json={"dataframe_split": {"columns": COLUMNS, "data": [[1, 2, "red", "round"]]}})
    assert (r.status_code, r.json()) == (400, {"error": "this is an MLflow scoring request ('dataframe_split'): POST it"
                                                " to /invocations (/predict takes one row {feature: value} or a list of rows)"})
    r = client.post("/predict", json={"inputs": [{"name": "x1", "shape": [1], "datatype": "FP32", "data": [1.0]}]})
    assert (r.status_code, r.json()) == (400, {"error": "this is a KServe v2 inference request: POST it to"
                                                " /v2/models/mixed/infer (/predict takes one row {feature: value} or a list of rows)"})
    r = client.post("/predict", content="x1,x2,colour,shape\n1,2,red,round\n", headers={"Content-Type": "text/csv"})
    assert (r.status_code, r.json()) == (400, {"error": "/predict takes JSON; POST CSV to /invocations (MLflow's"
                                                " protocol, Content-Type: text/csv)"})
    r = client.post("/predict", json={"x1": 1.0})  # a real row that lacks features still says so
    assert r.status_code == 422 and r.json()["error"].startswith("missing features 'x2', 'colour', 'shape'")


def test_each_protocol_points_to_the_other(client: httpx.Client) -> None:
    r = client.post("/invocations", json={"inputs": v2_inputs(ROWS)})
    assert (r.status_code, r.json()) == (400, {"error_code": "BAD_REQUEST", "message": "this is a KServe v2 inference"
                                                " request: POST it to /v2/models/mixed/infer"})
    r = client.post("/v2/models/mixed/infer", json={"dataframe_records": ROWS})
    assert (r.status_code, r.json()) == (400, {"error": "this is an MLflow scoring request ('dataframe_records'):"
                                                " POST it to /invocations"})


def test_mlflow_ping(client: httpx.Client) -> None:
    assert client.get("/ping").status_code == 200  # MLflow's client waits on it


# ---------------------------------------------------------------------------- KServe v2


def v2_inputs(rows: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    """One tensor per feature, as KServe's docs write them (shape [N, 1], flat data)."""
    out = []
    for c in COLUMNS:
        datatype = "BYTES" if c in ("colour", "shape") else "FP64"
        out.append({"name": c, "shape": [len(rows), 1], "datatype": datatype, "data": [r[c] for r in rows]})
    return out


def test_v2_health_and_metadata(client: httpx.Client, model: Model, openapi: dict[str, Any]) -> None:
    for path, body in [("/v2/health/live", {"live": True}), ("/v2/health/ready", {"ready": True})]:
        r = client.get(path)
        assert (r.status_code, r.json()) == (200, body)
        conforms(openapi, path, "get", r)
    assert client.get("/v2").json()["extensions"] == ["binary_tensor_data"]
    r = client.get("/v2/models/mixed")
    conforms(openapi, "/v2/models/{model_name}", "get", r)
    meta = r.json()
    assert meta["name"] == "mixed" and meta["versions"] == ["1.0.0"]
    assert [(t["name"], t["datatype"], t["shape"]) for t in meta["inputs"]] == [
        ("x1", "FP32", [-1, 1]), ("x2", "FP32", [-1, 1]), ("colour", "BYTES", [-1, 1]), ("shape", "BYTES", [-1, 1])
    ]
    assert meta["outputs"] == [
        {"name": "label", "datatype": "BYTES", "shape": [-1]},
        {"name": "probabilities", "datatype": "FP32", "shape": [-1, len(model.classes)]},
    ]
    assert client.get("/v2/models/mixed/versions/1.0.0").json() == meta
    r = client.get("/v2/models/mixed/ready")
    assert (r.status_code, r.json()) == (200, {"name": "mixed", "ready": True})
    r = client.get("/v2/models/other/ready")
    assert (r.status_code, r.json()) == (404, {"error": "model 'other' is not served here (this is 'mixed' version '1.0.0')"})
    conforms(openapi, "/v2/models/{model_name}/ready", "get", r)
    assert client.get("/v2/models/mixed/versions/2.0.0").status_code == 404


def test_v2_infer(client: httpx.Client, model: Model, openapi: dict[str, Any]) -> None:
    r = client.post("/v2/models/mixed/infer", json={"id": "42", "inputs": v2_inputs(ROWS)})
    assert r.status_code == 200, r.text
    conforms(openapi, "/v2/models/{model_name}/infer", "post", r)
    body = r.json()
    assert (body["model_name"], body["model_version"], body["id"]) == ("mixed", "1.0.0", "42")
    out = {o["name"]: o for o in body["outputs"]}
    assert out["label"] == {"name": "label", "datatype": "BYTES", "shape": [3], "data": expected_labels(model, ROWS)}
    assert (out["probabilities"]["datatype"], out["probabilities"]["shape"]) == ("FP32", [3, 3])
    expected = np.stack([model.predict_proba(row) for row in ROWS]).reshape(-1)
    np.testing.assert_allclose(out["probabilities"]["data"], expected, rtol=1e-6)


def test_v2_shapes_datatypes_and_a_chosen_output(client: httpx.Client, model: Model) -> None:
    inputs = [{**t, "shape": [3], "datatype": {"FP64": "FP32"}.get(t["datatype"], t["datatype"])} for t in v2_inputs(ROWS)]
    inputs[0]["data"] = [[1.0], [-0.5], [0.25]]  # nested data, row-major, is the same tensor
    inputs[0]["shape"] = [3, 1]
    r = client.post("/v2/models/mixed/versions/1.0.0/infer", json={"inputs": inputs, "outputs": [{"name": "label"}]})
    assert r.json()["outputs"] == [{"name": "label", "datatype": "BYTES", "shape": [3], "data": expected_labels(model, ROWS)}]
    r = client.post("/v2/models/mixed/infer", json={"inputs": inputs, "outputs": []})  # found by the fuzz test
    assert [o["name"] for o in r.json()["outputs"]] == ["label", "probabilities"]


@pytest.mark.parametrize(
    ("mutate", "status", "error"),
    [
        (lambda p: p["inputs"].pop(), 400, "missing input tensor 'shape'"),
        (lambda p: p["inputs"][0].update(name="X"), 400,
         "unknown input 'X' (the model takes one tensor per feature: x1, x2, colour, shape)"),
        (lambda p: p["inputs"][2].update(datatype="FP32"), 400,
         "input 'colour': feature 'colour' is categorical: send BYTES (text), not FP32"),
        (lambda p: p["inputs"][0].update(datatype="BYTES"), 400,
         "input 'x1': feature 'x1' is numeric: send FP32, FP64 or INT64, not BYTES"),
        (lambda p: p["inputs"][1].update(shape=[2, 1]), 400, "input 'x2': shape [2, 1] holds 2 values, 'data' has 3"),
        (lambda p: p["inputs"][1].update(shape=[1, 3]), 400, "input 'x2': shape must be [N] or [N, 1] (one value per row), got [1, 3]"),
        (lambda p: p["inputs"][0]["data"].__setitem__(2, "?"), 400,
         "row 2: field 'x1': expected a number, got '?' (1 of 3 rows invalid; nothing predicted)"),
        (lambda p: p["inputs"][0].update(datatype="FP128"), 400,
         "input 'x1': datatype must be one of BOOL, UINT8, UINT16, UINT32, UINT64, INT8, INT16, INT32, INT64, FP16,"
         " FP32, FP64, BYTES, got 'FP128'"),
        (lambda p: p.update(outputs=[{"name": "proba"}]), 400, "unknown output 'proba' (the model gives: label, probabilities)"),
        (lambda p: p["inputs"][0].update(datatype={}), 400,  # found by schemathesis: was a 500
         "input 'x1': datatype must be one of BOOL, UINT8, UINT16, UINT32, UINT64, INT8, INT16, INT32, INT64, FP16,"
         " FP32, FP64, BYTES, got {}"),
        (lambda p: p.pop("inputs"), 400, "'inputs': expected a non-empty list of tensors {name, datatype, shape, data}"),
    ],
    ids=["missing", "unknown", "bytes-expected", "number-expected", "count", "wide", "bad-row", "datatype", "output",
         "datatype-object", "no-inputs"],
)
def test_v2_errors(client: httpx.Client, openapi: dict[str, Any], mutate: Any, status: int, error: str) -> None:
    payload = {"inputs": v2_inputs(ROWS)}
    mutate(payload)
    r = client.post("/v2/models/mixed/infer", json=payload)
    assert (r.status_code, r.json()) == (status, {"error": error})
    conforms(openapi, "/v2/models/{model_name}/infer", "post", r)


def test_v2_unknown_model_and_methods(client: httpx.Client) -> None:
    r = client.post("/v2/models/iris/infer", json={"inputs": v2_inputs(ROWS)})
    assert (r.status_code, r.json()) == (404, {"error": "model 'iris' is not served here (this is 'mixed' version '1.0.0')"})
    r = client.get("/v2/models/mixed/infer")
    assert r.status_code == 405 and r.headers["allow"] == "POST"
    r = client.post("/v2/models/mixed")
    assert r.status_code == 405 and r.headers["allow"] == "GET"
    assert client.get("/v2/models/mixed/explain").status_code == 404
    for method in ("TRACE", "QUERY", "OPTIONS"):  # http.server would answer 501 with an HTML page
        r = client.request(method, "/v2/health/live")
        assert (r.status_code, r.headers["allow"], r.json()) == (405, "GET", {"error": f"{method} is not allowed on /v2/health/live (use GET)"})


def test_v2_one_matrix_tensor_for_an_all_numeric_model(binary_bundle: Path) -> None:
    model = open_model(binary_bundle, threads=1)
    x = np.array([[0.1, 1.0, 2.0], [1.5, -0.3, np.nan]])
    server = _serve(model)
    try:
        data = [[None if np.isnan(v) else v for v in row] for row in x.tolist()]
        payload = {"inputs": [{"name": "input-0", "shape": [2, 3], "datatype": "FP32", "data": data}]}
        r = httpx.post(f"{server.url}/v2/models/{model.name}/infer", json=payload)
        assert r.status_code == 200, r.text
        out = {o["name"]: o for o in r.json()["outputs"]}
        assert out["label"]["data"] == list(model.predict(x.astype(np.float32)))
        np.testing.assert_allclose(out["probabilities"]["data"], model.predict_proba(x).reshape(-1), rtol=1e-6)
    finally:
        server.shutdown()


def test_v2_regression_value(regression_bundle: Path) -> None:
    model = open_model(regression_bundle, threads=1)
    server = _serve(model)
    try:
        payload = {"inputs": [{"name": n, "shape": [2], "datatype": "FP64", "data": v}
                              for n, v in (("x1", [0.5, 2.0]), ("x2", [-1.0, 0.0]), ("x3", [None, 1.5]))]}
        r = httpx.post(f"{server.url}/v2/models/reg/infer", json=payload)
        assert r.json()["outputs"][0]["name"] == "value"
        rows = [{"x1": 0.5, "x2": -1.0, "x3": None}, {"x1": 2.0, "x2": 0.0, "x3": 1.5}]
        assert r.json()["outputs"][0]["data"] == pytest.approx([model.predict(x) for x in rows], abs=1e-6)
    finally:
        server.shutdown()


# ---------------------------------------------------------------------------- tritonclient


def test_tritonclient_binary_and_json(server: PredictServer, model: Model) -> None:
    http = pytest.importorskip("tritonclient.http")
    client = http.InferenceServerClient(server.url.removeprefix("http://"))
    assert client.is_server_live() and client.is_server_ready() and client.is_model_ready("mixed")
    meta = client.get_model_metadata("mixed", "1.0.0")
    inputs, arrays = [], []
    for t in meta["inputs"]:  # built from the metadata, as a generic v2 client does
        values = [[r[t["name"]] if r[t["name"]] is not None else (np.nan if t["datatype"] == "FP32" else "")] for r in ROWS]
        arr = np.array(values, dtype=np.float32 if t["datatype"] == "FP32" else object)
        i = http.InferInput(t["name"], list(arr.shape), t["datatype"])
        i.set_data_from_numpy(arr)  # binary_data=True: Triton's binary tensor extension
        inputs.append(i)
        arrays.append(arr)
    expected = model.predict_proba(ROWS)  # the same three rows in one batch, as the server runs them
    labels = [x.encode() for x in expected_labels(model, ROWS)]
    binary = client.infer("mixed", inputs)  # no outputs named: all, in binary
    assert binary.get_response()["outputs"][1]["parameters"] == {"binary_data_size": expected.size * 4}
    assert binary.as_numpy("label").tolist() == labels
    np.testing.assert_array_equal(binary.as_numpy("probabilities"), expected)
    json_inputs = []
    for i, arr in zip(inputs, arrays):
        j = http.InferInput(i.name(), list(arr.shape), i.datatype())
        j.set_data_from_numpy(arr, binary_data=False)  # JSON data; "" is a missing category
        json_inputs.append(j)
    as_json = client.infer("mixed", json_inputs, model_version="1.0.0",
                           outputs=[http.InferRequestedOutput("probabilities", binary_data=False)])
    assert [o["name"] for o in as_json.get_response()["outputs"]] == ["probabilities"]
    np.testing.assert_allclose(as_json.as_numpy("probabilities"), expected, rtol=1e-6)
    with pytest.raises(Exception, match=r"\[404\] model 'nope' is not served here"):
        client.infer("nope", inputs)


# ---------------------------------------------------------------------------- monitoring, metrics, OpenAPI


def test_every_protocol_feeds_the_monitor_and_metrics(mixed_bundle: Path) -> None:
    recorder = CountingRecorder()
    model = open_model(mixed_bundle, threads=1, recorder=recorder)
    server = _serve(model)
    try:
        with httpx.Client(base_url=server.url) as c:
            c.post("/predict", json=ROWS)
            c.post("/invocations", json={"dataframe_records": ROWS})
            c.post("/v2/models/mixed/infer", json={"inputs": v2_inputs(ROWS)})
            c.post("/invocations", json={"dataframe_records": [ROWS[0], {**ROWS[0], "x1": "?"}]})
            assert (recorder.rows, recorder.errors) == (9, {"validation": 1})
            metrics = c.get("/metrics").text
        assert 'mlpack_rows_total{outcome="predicted"} 9' in metrics
        assert 'mlpack_rows_total{outcome="invalid"} 1' in metrics
        assert 'mlpack_http_requests_total{endpoint="/invocations",code="200"} 1' in metrics
        assert 'mlpack_http_requests_total{endpoint="/invocations",code="400"} 1' in metrics
        assert 'mlpack_http_requests_total{endpoint="/v2/models/{name}/infer",code="200"} 1' in metrics
        assert "mlpack_predict_duration_seconds_count 4" in metrics
    finally:
        server.shutdown()


def test_openapi_document_is_valid_and_covers_every_endpoint(openapi: dict[str, Any]) -> None:
    validator = pytest.importorskip("openapi_spec_validator")
    validator.validate(openapi)
    assert set(openapi["paths"]) == {
        "/predict", "/feedback", "/health", "/info", "/metrics", "/openapi.json", "/invocations", "/ping", "/v2", "/v2/health/live",
        "/v2/health/ready", "/v2/models/{model_name}", "/v2/models/{model_name}/versions/{model_version}",
        "/v2/models/{model_name}/ready", "/v2/models/{model_name}/versions/{model_version}/ready",
        "/v2/models/{model_name}/infer", "/v2/models/{model_name}/versions/{model_version}/infer",
    }
    row = openapi["components"]["schemas"]["Row"]
    assert row["required"] == COLUMNS and row["properties"]["colour"]["enum"] == ["blue", "green", "red", None]


def test_predict_health_info_responses_conform(client: httpx.Client, openapi: dict[str, Any]) -> None:
    for method, path, kwargs in [
        ("post", "/predict", {"json": ROWS[0]}),
        ("post", "/predict", {"json": [ROWS[0], {**ROWS[0], "x1": "?"}]}),
        ("post", "/predict", {"json": {**ROWS[0], "colour": "pink"}}),
        ("post", "/predict", {"content": b"{nope"}),
        ("get", "/health", {}),
        ("get", "/info", {}),
        ("get", "/metrics", {}),
        ("get", "/v2", {}),
    ]:
        conforms(openapi, path, method, client.request(method.upper(), path, **kwargs))


def test_v2_integer_classes_decode_with_tritonclient() -> None:
    """INT64 labels (a model whose classes are integers), binary and JSON, read back by tritonclient's own decoder."""
    http = pytest.importorskip("tritonclient.http")
    from mlpack_edge.runtime import _v2
    from mlpack_edge.runtime.schema import Schema

    labels = np.array([1, 0, 2], dtype=np.int64)
    proba = np.array([[0.1, 0.8, 0.1], [0.7, 0.2, 0.1], [0.0, 0.25, 0.75]], dtype=np.float32)
    batch = Schema(()).columns([], 3)
    for binary in (True, False):
        request = _v2.InferRequest("7", batch, (("label", binary), ("probabilities", binary)))
        body, header_length = _v2.infer_response(request, "m", "1", (0, 1, 2), {"label": labels, "probabilities": proba})
        assert (header_length is not None) == binary
        result = http.InferResult.from_response_body(body, header_length=header_length)
        assert result.get_output("label")["datatype"] == "INT64"
        np.testing.assert_array_equal(result.as_numpy("label"), labels)
        np.testing.assert_array_equal(result.as_numpy("probabilities"), proba)
        assert result.get_response()["id"] == "7"


def test_with_the_agent_protocol_predictions_have_ids_that_feedback_joins(mixed_bundle: Path, tmp_path: Path) -> None:
    from mlpack_edge.monitor_agent.agent import Agent, ModelInfo
    from mlpack_edge.monitor_agent.config import AgentConfig
    from mlpack_edge.monitor_agent.wire import SystemStats
    from mlpack_edge.runtime.bundle import Bundle

    agent = Agent.open(ModelInfo.from_bundle_dir(mixed_bundle), tmp_path, AgentConfig(), sampler=SystemStats)
    model = Model(Bundle.open(mixed_bundle), threads=1, recorder=agent.recorder)
    agent.start()
    server = PredictServer(model, ServeConfig(port=0), feedback=agent)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        with httpx.Client(base_url=server.url, timeout=10) as c:
            doc = c.get("/openapi.json").json()
            r = c.post("/invocations", json={"dataframe_records": ROWS})
            conforms(doc, "/invocations", "post", r)
            mlflow = r.json()
            assert mlflow["predictions"] == expected_labels(model, ROWS) and len(set(mlflow["ids"])) == 3
            meta = c.get("/v2/models/mixed").json()
            assert meta["outputs"][-1] == {"name": "id", "datatype": "BYTES", "shape": [-1]}
            r = c.post("/v2/models/mixed/infer", json={"inputs": v2_inputs(ROWS)})
            conforms(doc, "/v2/models/{model_name}/infer", "post", r)
            out = {o["name"]: o for o in r.json()["outputs"]}
            v2_ids = out["id"]["data"]
            assert len(v2_ids) == 3 and not set(v2_ids) & set(mlflow["ids"])
            labels = expected_labels(model, ROWS)
            r = c.post("/feedback", json=[{"id": i, "label": y} for i, y in zip(mlflow["ids"] + v2_ids, labels * 2)])
            conforms(doc, "/feedback", "post", r)
            assert r.json()["counts"] == {"matched": 6}
    finally:
        server.shutdown()
        agent.stop()


def test_capture_samples_protocol_rows_too(mixed_bundle: Path, tmp_path: Path) -> None:
    from mlpack_edge.monitor_agent.agent import Agent, ModelInfo
    from mlpack_edge.monitor_agent.config import AgentConfig
    from mlpack_edge.monitor_agent.outbox import Outbox
    from mlpack_edge.monitor_agent.wire import SystemStats
    from mlpack_edge.runtime.bundle import Bundle

    config = AgentConfig(capture_rate=1.0, capture_max_rows_per_day=100)
    agent = Agent.open(ModelInfo.from_bundle_dir(mixed_bundle), tmp_path, config, sampler=SystemStats)
    model = Model(Bundle.open(mixed_bundle), threads=1, recorder=agent.recorder)
    agent.start()
    server = PredictServer(model, ServeConfig(port=0), feedback=agent)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        with httpx.Client(base_url=server.url, timeout=10) as c:
            ids = c.post("/invocations", json={"dataframe_records": ROWS}).json()["ids"]
            out = c.post("/v2/models/mixed/infer", json={"inputs": v2_inputs(ROWS)}).json()["outputs"]
            ids += next(o["data"] for o in out if o["name"] == "id")
    finally:
        server.shutdown()
        agent.stop()
    with Outbox.open(tmp_path) as box:
        samples = [x for w in box.pending_windows() for x in (w.samples or [])]
    assert sorted(x["id"] for x in samples) == sorted(ids)
    by_id = {x["id"]: x["row"] for x in samples}
    assert [by_id[i] for i in ids] == ROWS * 2  # the rows as parsed (missing as null), from either protocol
