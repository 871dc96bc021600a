"""A real webhook receiver on 127.0.0.1 for the alert delivery tests.

It answers each request by the next entry of a script (an HTTP status, or ``"hang"``:
hold the request until released), then 200 once the script is used up, and records
every request (headers, raw body, what it answered).
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

__all__ = ["Received", "Receiver", "receiver"]


@dataclass
class Received:
    path: str
    headers: dict[str, str]
    body: bytes
    answered: int | str

    def json(self) -> Any:
        return json.loads(self.body)


@dataclass
class Receiver:
    url: str
    script: list[int | str]
    requests: list[Received] = field(default_factory=list)
    release: threading.Event = field(default_factory=threading.Event)
    arrived: threading.Condition = field(default_factory=threading.Condition)

    def wait_for(self, n: int, timeout: float = 30.0) -> list[Received]:
        """Block until ``n`` requests have arrived (fails after ``timeout``)."""
        deadline = time.monotonic() + timeout
        with self.arrived:
            while len(self.requests) < n:
                left = deadline - time.monotonic()
                if left <= 0:
                    raise AssertionError(f"receiver: {len(self.requests)} requests after {timeout} s, wanted {n}: "
                                         f"{[r.answered for r in self.requests]}")
                self.arrived.wait(left)
            return list(self.requests)


@contextmanager
def receiver(script: Sequence[int | str] = ()) -> Iterator[Receiver]:
    state: Receiver

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:  # noqa: N802 - http.server's name
            body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
            with state.arrived:
                answer: int | str = state.script.pop(0) if state.script else 200
                state.requests.append(Received(self.path, {k.lower(): v for k, v in self.headers.items()}, body, answer))
                state.arrived.notify_all()
            if answer == "hang":
                state.release.wait(60)
                return  # the connection closes without an answer
            out = b'{"ok": true}' if answer == 200 else b'{"error": "receiver says no"}'
            self.send_response(int(answer))
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(out)))
            self.end_headers()
            self.wfile.write(out)

        def log_message(self, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    server.daemon_threads = True
    state = Receiver(f"http://127.0.0.1:{server.server_address[1]}/hook", list(script))
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield state
    finally:
        state.release.set()
        server.shutdown()
        server.server_close()
