"""The servers a user would write instead of ``mlpack serve``, for ``serve_throughput.py``.

    python benchmarks/_serve_baselines.py uvicorn|stdlib MODEL.onnx PORT

Both answer ``POST /predict`` with one JSON row ``{feature: value}`` (``{"label",
"probabilities"}``) or a JSON array of rows (``{"predictions": [...]}``), feeding the
same ONNX file to onnxruntime with one intra-op thread, as ``serve`` does:

* ``uvicorn``: a Starlette app under uvicorn, 1 worker, uvloop + httptools (what
  ``pip install uvicorn[standard]`` picks), access log off; the prediction runs inline in
  the ``async`` endpoint (no thread pool hop) — the fastest way to write it.
* ``stdlib``: ``http.server.ThreadingHTTPServer``, HTTP/1.1 keep-alive, ``TCP_NODELAY``.

No validation beyond what the conversion needs (missing numbers become NaN): these are the
floors a hand-written server reaches, not equivalents of ``serve``'s checks.
"""

from __future__ import annotations

import json
import sys
from typing import Any

import numpy as np
import onnxruntime as ort


class _Predictor:
    def __init__(self, onnx_path: str) -> None:
        options = ort.SessionOptions()
        options.intra_op_num_threads = 1
        options.inter_op_num_threads = 1
        self.sess = ort.InferenceSession(onnx_path, options, providers=["CPUExecutionProvider"])
        inputs = self.sess.get_inputs()
        self.matrix = inputs[0].name if len(inputs) == 1 else None
        self.inputs = [(i.name, i.type == "tensor(string)") for i in inputs]
        self.width = inputs[0].shape[1] if self.matrix else 1
        self.features: list[str] = []  # matrix input: the column order, from the first request

    def _feeds(self, rows: list[dict[str, Any]]) -> dict[str, np.ndarray]:
        if self.matrix is not None:
            if not self.features:
                self.features = list(rows[0])
            f = self.features
            x = np.array([[np.nan if r.get(k) is None else r[k] for k in f] for r in rows], dtype=np.float32)
            return {self.matrix: x}
        feeds = {}
        for name, text in self.inputs:
            if text:
                feeds[name] = np.array([["" if r.get(name) is None else str(r[name])] for r in rows], dtype=object)
            else:
                feeds[name] = np.array([[np.nan if r.get(name) is None else r[name]] for r in rows], dtype=np.float32)
        return feeds

    @staticmethod
    def batch_reply(labels: np.ndarray, probabilities: np.ndarray) -> dict[str, Any]:
        return {"predictions": [{"label": lab, "probabilities": p}
                                for lab, p in zip(labels.tolist(), probabilities.tolist())]}

    def predict(self, payload: Any) -> dict[str, Any]:
        rows = payload if isinstance(payload, list) else [payload]
        labels, probabilities = self.sess.run(None, self._feeds(rows))
        if isinstance(payload, list):
            return self.batch_reply(labels, probabilities)
        return {"label": labels.tolist()[0], "probabilities": probabilities[0].tolist()}


def run_uvicorn(onnx_path: str, port: int) -> None:
    import uvicorn
    from starlette.applications import Starlette
    from starlette.requests import Request
    from starlette.responses import JSONResponse
    from starlette.routing import Route

    model = _Predictor(onnx_path)

    async def predict(request: Request) -> JSONResponse:
        return JSONResponse(model.predict(await request.json()))

    app = Starlette(routes=[Route("/predict", predict, methods=["POST"])])
    uvicorn.run(app, host="127.0.0.1", port=port, workers=1, loop="uvloop", http="httptools",
                log_level="warning", access_log=False)


def run_stdlib(onnx_path: str, port: int) -> None:
    from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

    model = _Predictor(onnx_path)

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"
        disable_nagle_algorithm = True

        def do_POST(self) -> None:
            body = self.rfile.read(int(self.headers["Content-Length"]))
            out = json.dumps(model.predict(json.loads(body))).encode()
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(out)))
            self.end_headers()
            self.wfile.write(out)

        def log_message(self, *args: Any) -> None:
            pass

    class Server(ThreadingHTTPServer):
        daemon_threads = True

    Server(("127.0.0.1", port), Handler).serve_forever()


if __name__ == "__main__":
    kind, path, port = sys.argv[1], sys.argv[2], int(sys.argv[3])
    {"uvicorn": run_uvicorn, "stdlib": run_stdlib}[kind](path, port)
