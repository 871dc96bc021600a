"""``serve``'s own HTTP/1.1 loop (runtime/_http.py) over raw sockets: what clients other than httpx do."""

from __future__ import annotations

import json
import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from mlpack_edge.runtime import Model, PredictServer, ServeConfig, open_model

ROW = {"x1": 1.0, "x2": None, "colour": "red", "shape": "round"}


@pytest.fixture(scope="module")
def model(mixed_bundle: Path) -> Model:
    return open_model(mixed_bundle, threads=1)


def _start(model: Model, **config: object) -> PredictServer:
    server = PredictServer(model, ServeConfig(port=0, **config))  # type: ignore[arg-type]
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server


@pytest.fixture(scope="module")
def server(model: Model) -> Iterator[PredictServer]:
    s = _start(model, timeout_s=1.0)
    yield s
    s.shutdown()


def _post(body: bytes, extra: str = "", version: str = "HTTP/1.1") -> bytes:
    return (f"POST /predict {version}\r\nHost: x\r\nContent-Type: application/json\r\n{extra}"
            f"Content-Length: {len(body)}\r\n\r\n").encode() + body


def _read_reply(s: socket.socket, buf: bytearray) -> tuple[str, dict[str, str], bytes]:
    """One response off ``s`` (what follows it stays in ``buf``)."""
    while b"\r\n\r\n" not in buf:
        chunk = s.recv(65536)
        assert chunk, f"connection closed after {bytes(buf)!r}"
        buf += chunk
    head, _, rest = bytes(buf).partition(b"\r\n\r\n")
    lines = head.decode().split("\r\n")
    headers = {k.lower(): v.strip() for k, _, v in (line.partition(":") for line in lines[1:])}
    n = int(headers["content-length"])
    while len(rest) < n:
        chunk = s.recv(65536)
        assert chunk
        rest += chunk
    buf[:] = rest[n:]
    return lines[0], headers, rest[:n]


def test_pipelined_requests_are_answered_in_order(server: PredictServer, model: Model) -> None:
    rows = [{**ROW, "x1": i / 3} for i in range(6)]
    with socket.create_connection(("127.0.0.1", server.port), timeout=5) as s:
        s.sendall(b"".join(_post(json.dumps(r).encode()) for r in rows) + b"GET /health HTTP/1.1\r\nHost: x\r\n\r\n")
        buf = bytearray()
        labels = [json.loads(_read_reply(s, buf)[2])["label"] for _ in rows]
        status, _, body = _read_reply(s, buf)
    assert labels == [model.predict_one(r).label for r in rows]
    assert status == "HTTP/1.1 200 OK" and json.loads(body)["status"] == "ok"


def test_bodies_larger_than_the_receive_buffer_pipelined_then_closed(server: PredictServer, model: Model) -> None:
    """Bodies of several receive buffers (runtime._http reads a full buffer's rest at once),
    two pipelined in one send and the write side closed after them: both answered, in order."""
    from mlpack_edge.runtime._http import _RECV

    batches = [[{**ROW, "x1": (i + k) / 7} for i in range(int(2.5 * _RECV) // len(json.dumps(ROW)))] for k in range(2)]
    bodies = [json.dumps(b).encode() for b in batches]
    assert all(len(b) > 2 * _RECV for b in bodies)
    with socket.create_connection(("127.0.0.1", server.port), timeout=5) as s:
        s.sendall(b"".join(_post(b) for b in bodies))
        s.shutdown(socket.SHUT_WR)
        buf = bytearray()
        replies = [json.loads(_read_reply(s, buf)[2]) for _ in bodies]
    for batch, reply in zip(batches, replies):
        assert [p["label"] for p in reply["predictions"]] == model.predict_rows(batch).labels.tolist()


def test_a_body_arriving_in_pieces_and_expect_100_continue(server: PredictServer) -> None:
    body = json.dumps([ROW] * 3).encode()
    with socket.create_connection(("127.0.0.1", server.port), timeout=5) as s:
        s.sendall(_post(b"", "Expect: 100-continue\r\n").replace(b"Content-Length: 0", f"Content-Length: {len(body)}".encode()))
        assert s.recv(4096) == b"HTTP/1.1 100 Continue\r\n\r\n"
        for i in range(0, len(body), 7):
            s.sendall(body[i : i + 7])
            time.sleep(0.002)
        status, headers, reply = _read_reply(s, bytearray())
    assert status == "HTTP/1.1 200 OK" and headers["content-type"] == "application/json"
    assert json.loads(reply)["failed"] == 0


def test_http_1_0_closes_unless_asked_to_keep_alive(server: PredictServer) -> None:
    with socket.create_connection(("127.0.0.1", server.port), timeout=5) as s:
        s.sendall(b"GET /health HTTP/1.0\r\n\r\n")
        reply = b"".join(iter(lambda: s.recv(4096), b""))  # the server closes
    assert reply.startswith(b"HTTP/1.1 200 OK\r\n") and b"\r\nConnection: close\r\n" in reply
    with socket.create_connection(("127.0.0.1", server.port), timeout=5) as s:
        buf = bytearray()
        for _ in range(2):
            s.sendall(b"GET /health HTTP/1.0\r\nConnection: keep-alive\r\n\r\n")
            assert _read_reply(s, buf)[0] == "HTTP/1.1 200 OK"


@pytest.mark.parametrize(
    ("request_bytes", "status"),
    [
        (b"NONSENSE\r\n\r\n", "400 Bad Request"),
        (b"GET /health HTTP/2.0\r\n\r\n", "400 Bad Request"),
        (b"GET /health HTTP/1.1\r\nno colon here\r\n\r\n", "400 Bad Request"),
        (b"GET /health HTTP/1.1\r\n" + b"X-A: b\r\n" * 101 + b"\r\n", "431 Request Header Fields Too Large"),
        (b"GET /health HTTP/1.1\r\nX-Big: " + b"a" * 70000 + b"\r\n\r\n", "431 Request Header Fields Too Large"),
    ],
    ids=["request-line", "version", "header-line", "too-many-headers", "head-too-large"],
)
def test_malformed_requests_get_an_answer_and_a_close(server: PredictServer, request_bytes: bytes, status: str) -> None:
    with socket.create_connection(("127.0.0.1", server.port), timeout=5) as s:
        s.sendall(request_bytes)
        reply = b"".join(iter(lambda: s.recv(4096), b"")).decode()
    assert reply.startswith(f"HTTP/1.1 {status}\r\n") and "\r\nConnection: close\r\n" in reply
    assert json.loads(reply.partition("\r\n\r\n")[2])["error"]


def test_a_client_that_sends_half_a_body_and_stops_is_dropped(server: PredictServer) -> None:
    with socket.create_connection(("127.0.0.1", server.port), timeout=5) as s:
        s.sendall(_post(b'{"x1": 1.0')[:-2].replace(b"Content-Length: 10", b"Content-Length: 50"))
        t0 = time.monotonic()
        assert s.recv(4096) == b""  # closed by the server's timeout (1 s here), no answer
        assert 0.5 < time.monotonic() - t0 < 5


def test_half_close_before_the_body_ends_is_a_400(server: PredictServer) -> None:
    with socket.create_connection(("127.0.0.1", server.port), timeout=5) as s:
        s.sendall(_post(b"{}").replace(b"Content-Length: 2", b"Content-Length: 20"))
        s.shutdown(socket.SHUT_WR)
        reply = b"".join(iter(lambda: s.recv(4096), b"")).decode()
    assert reply.startswith("HTTP/1.1 400 ") and "request body ended before Content-Length bytes" in reply


def test_a_large_answer_to_a_slow_reader_arrives_whole(model: Model) -> None:
    server = _start(model, max_batch_rows=20_000, max_body_bytes=8 << 20)
    try:
        rows = [{**ROW, "x1": i / 7} for i in range(8000)]
        with socket.create_connection(("127.0.0.1", server.port), timeout=10) as s:
            s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
            s.sendall(_post(json.dumps(rows).encode()))
            time.sleep(0.3)  # the server's socket buffer fills: the rest goes out as the reader drains it
            status, _, body = _read_reply(s, bytearray())
            predictions = json.loads(body)["predictions"]
            s.sendall(b"GET /health HTTP/1.1\r\nHost: x\r\n\r\n")  # the connection is still usable
            assert _read_reply(s, bytearray())[0] == "HTTP/1.1 200 OK"
        assert status == "HTTP/1.1 200 OK" and len(predictions) == 8000
        assert predictions[4321]["label"] == model.predict_one(rows[4321]).label
    finally:
        server.shutdown()
