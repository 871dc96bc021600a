"""A small single-threaded HTTP/1.1 server (``selectors``): what ``serve`` needs, and no more.

Why not ``http.server``: it gives every connection a thread, and a request's Python work
holds the GIL anyway, so 16 keep-alive clients meant 16 threads taking turns at the GIL
(plus the monitoring agent's), which is what the tail latency measured. A single-row
prediction costs tens of microseconds; answering it inline, on the thread that read it,
is cheaper than handing it anywhere. One thread also means one malloc arena and no
thread stacks, which is what the idle and loaded memory measured.

What it does: HTTP/1.1 keep-alive (and pipelining, answered in order), HTTP/1.0 with
``Connection: keep-alive``, ``Expect: 100-continue``, bodies only with a
``Content-Length`` (the application decides about oversized or chunked ones from the
headers, before the body is read), a cap on open connections (``503`` beyond), a
per-connection idle timeout, and a ``shutdown`` from any thread that returns once the
loop has stopped. Responses leave in one ``send`` with ``TCP_NODELAY`` set.

The application is one callable, ``handle(request) -> Response``, called on the loop's
thread; :class:`Request` carries the parsed head, and ``needs_body`` lets the application
refuse a body (411/413) without reading it.
"""

from __future__ import annotations

import errno
import logging
import selectors
import socket
import threading
import time
from collections.abc import Callable, Mapping
from typing import Any

__all__ = ["Headers", "Request", "Response", "HttpServer", "REASONS"]

log = logging.getLogger("mlpack_edge.runtime.server")

MAX_HEAD_BYTES = 65536  # request line + headers, as http.server's line limit
MAX_HEADERS = 100
_RECV = 1 << 16

REASONS = {
    100: "Continue", 200: "OK", 400: "Bad Request", 404: "Not Found", 405: "Method Not Allowed",
    409: "Conflict", 411: "Length Required", 413: "Payload Too Large", 415: "Unsupported Media Type",
    422: "Unprocessable Entity", 431: "Request Header Fields Too Large", 500: "Internal Server Error",
    503: "Service Unavailable", 505: "HTTP Version Not Supported",
}


_DAYS = ("Mon", "Tue", "Wed", "Thu", "Fri", "Sat", "Sun")
_MONTHS = ("Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec")


def _http_date(t: float) -> str:
    """RFC 9110's IMF-fixdate (``email.utils.formatdate(usegmt=True)`` without importing ``email``)."""
    g = time.gmtime(t)
    return f"{_DAYS[g.tm_wday]}, {g.tm_mday:02d} {_MONTHS[g.tm_mon - 1]} {g.tm_year} {g.tm_hour:02d}:{g.tm_min:02d}:{g.tm_sec:02d} GMT"


class Headers(dict[str, str]):
    """Request headers by lower-cased name; ``get`` takes any case (as ``email.message`` does)."""

    def get(self, name: str, default: Any = None) -> Any:  # type: ignore[override]
        return dict.get(self, name.lower(), default)


class Request:
    """One request's head (and, once read, its body)."""

    __slots__ = ("method", "target", "path", "version", "headers", "body", "keep_alive")

    def __init__(self, method: str, target: str, version: str, headers: Headers) -> None:
        self.method = method
        self.target = target
        self.path = target.split("?", 1)[0]
        self.version = version
        self.headers = headers
        self.body = b""
        conn = (headers.get("connection") or "").lower()
        if version == "HTTP/1.1":
            self.keep_alive = "close" not in conn
        else:
            self.keep_alive = "keep-alive" in conn


#: (status, body, content type, extra headers or None, close the connection after it)
Response = tuple[int, bytes, str, "Mapping[str, str] | None", bool]


class _Conn:
    __slots__ = ("sock", "buf", "out", "last", "pending", "need", "closing", "continued")

    def __init__(self, sock: socket.socket, now: float) -> None:
        self.sock = sock
        self.buf = bytearray()
        self.out = bytearray()  # what a full socket buffer did not take yet
        self.last = now
        self.pending: Request | None = None  # a request whose body is still arriving
        self.need = 0  # bytes of body (and its head) the pending request waits for
        self.closing = False  # close once ``out`` is sent
        self.continued = False


class HttpServer:
    """Listen on ``address``; ``serve_forever`` answers with ``handle`` (see the module doc).

    ``body_allowed(request)`` runs once a head is parsed: ``None`` to read the body (its
    ``Content-Length``, 0 if none), or a :data:`Response` to answer without reading it.
    """

    def __init__(
        self,
        address: tuple[str, int],
        handle: Callable[[Request], Response],
        body_allowed: Callable[[Request], Response | None],
        *,
        max_connections: int,
        timeout_s: float,
        busy: Callable[[], bytes],
        server_name: str = "mlpack",
        backlog: int = 128,
    ) -> None:
        family = socket.AF_INET6 if ":" in address[0] else socket.AF_INET
        sock = socket.socket(family, socket.SOCK_STREAM)
        try:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as http.server: restart without TIME_WAIT trouble
            sock.bind(address)
            sock.listen(backlog)
        except BaseException:
            sock.close()
            raise
        sock.setblocking(False)
        self.socket = sock
        self.server_address = sock.getsockname()
        self._handle = handle
        self._body_allowed = body_allowed
        self._max_connections = max_connections
        self._timeout = timeout_s
        self._busy = busy
        self._server = server_name
        self._conns: dict[int, _Conn] = {}
        self._sel = selectors.DefaultSelector()
        self._wake_r, self._wake_w = socket.socketpair()
        self._wake_r.setblocking(False)
        self._wake_w.setblocking(False)
        self._stop = False
        self._stopped = threading.Event()
        self._stopped.set()  # not running
        self._date = b""
        self._rbuf = bytearray(_RECV)  # one receive buffer: recv(n) would allocate n bytes per call
        self._rview = memoryview(self._rbuf)
        self._date_at = -1
        self._prefix: dict[tuple[int, str], bytes] = {}

    # ------------------------------------------------------------------ life

    def serve_forever(self, poll_interval: float = 0.5) -> None:
        """Answer until :meth:`shutdown`; the caller's thread runs every request."""
        self._stopped.clear()
        try:
            sel = self._sel
            sel.register(self.socket, selectors.EVENT_READ, None)
            sel.register(self._wake_r, selectors.EVENT_READ, self._wake_r)
            swept = time.monotonic()
            while not self._stop:
                events = sel.select(poll_interval)
                for key, mask in events:
                    data = key.data
                    if data is None:
                        self._accept()
                    elif data is self._wake_r:
                        try:
                            self._wake_r.recv(512)
                        except OSError:
                            pass
                    else:
                        if mask & selectors.EVENT_WRITE:
                            self._flush(data)
                        if mask & selectors.EVENT_READ and data.sock.fileno() >= 0:
                            self._read(data)
                now = time.monotonic()
                if now - swept >= 1.0:
                    swept = now
                    self._sweep(now)
        finally:
            self._close_all()
            self._stopped.set()

    def shutdown(self) -> None:
        """Stop :meth:`serve_forever` (from another thread); returns once it has (or at once if it does not run)."""
        self._stop = True
        try:
            self._wake_w.send(b"x")
        except OSError:
            pass
        self._stopped.wait()

    def server_close(self) -> None:
        for s in (self.socket, self._wake_r, self._wake_w):
            s.close()
        self._sel.close()

    # ------------------------------------------------------------------ connections

    def _accept(self) -> None:
        while True:
            try:
                sock, _ = self.socket.accept()
            except (BlockingIOError, InterruptedError):
                return
            except OSError as exc:  # out of descriptors, a reset before accept: try on the next wake-up
                if exc.errno not in (errno.ECONNABORTED, errno.EPROTO):
                    log.warning("accept failed: %s", exc)
                return
            if len(self._conns) >= self._max_connections:
                try:
                    sock.setblocking(False)
                    sock.send(self._busy())
                    sock.shutdown(socket.SHUT_WR)
                except OSError:
                    pass
                sock.close()
                continue
            sock.setblocking(False)
            try:
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            except OSError:
                pass
            conn = _Conn(sock, time.monotonic())
            self._conns[sock.fileno()] = conn
            self._sel.register(sock, selectors.EVENT_READ, conn)

    def _close(self, conn: _Conn) -> None:
        fd = conn.sock.fileno()
        if fd >= 0:
            self._conns.pop(fd, None)
            try:
                self._sel.unregister(conn.sock)
            except (KeyError, ValueError):
                pass
        conn.sock.close()

    def _close_all(self) -> None:
        for conn in list(self._conns.values()):
            if conn.out:  # an answer the client has not taken yet: give it a moment
                try:
                    conn.sock.settimeout(1.0)
                    conn.sock.sendall(conn.out)
                except OSError:
                    pass
            self._close(conn)
        for s in (self.socket, self._wake_r):
            try:
                self._sel.unregister(s)
            except (KeyError, ValueError):
                pass

    def _sweep(self, now: float) -> None:
        """Drop connections idle (or stalled mid-request) for longer than the timeout."""
        limit = now - self._timeout
        for conn in [c for c in self._conns.values() if c.last < limit]:
            self._close(conn)

    def _read(self, conn: _Conn) -> None:
        try:
            n = conn.sock.recv_into(self._rbuf)
        except (BlockingIOError, InterruptedError):
            return
        except OSError:
            self._close(conn)
            return
        if not n:  # the client closed (or half-closed) its side
            if conn.pending is not None and not conn.closing:
                self._respond(conn, conn.pending, (400, b'{"error": "request body ended before Content-Length bytes"}',
                                                   "application/json", None, True))
            if conn.out:
                conn.closing = True  # send what is left first
            else:
                self._close(conn)
            return
        conn.last = time.monotonic()
        if conn.closing:
            return  # answered for the last time: ignore what else arrives
        conn.buf += self._rview[:n]
        while n == _RECV:  # a full buffer (a large body): take the rest now, not after another select
            try:
                n = conn.sock.recv_into(self._rbuf)
            except OSError:  # nothing more yet, or trouble the next read reports
                break
            conn.buf += self._rview[:n]  # n == 0 (the client closed): the next select reads that again
        self._process(conn)

    def _process(self, conn: _Conn) -> None:
        buf = conn.buf
        while not conn.closing:
            req = conn.pending
            if req is None:
                end = buf.find(b"\r\n\r\n")
                if end < 0:
                    if len(buf) > MAX_HEAD_BYTES:
                        self._fail(conn, 431, "request head too large")
                    return
                if end > MAX_HEAD_BYTES:
                    self._fail(conn, 431, "request head too large")
                    return
                req = self._parse_head(conn, bytes(buf[:end]))
                if req is None:
                    return
                del buf[: end + 4]
                refused = self._body_allowed(req)
                if refused is not None:
                    self._respond(conn, req, refused)
                    continue
                raw = req.headers.get("content-length")
                conn.need = int(raw) if raw else 0  # body_allowed vetted it
                if req.headers.get("transfer-encoding"):  # a body we cannot delimit: answer, then close
                    req.keep_alive = False
                conn.pending = req
                conn.continued = False
            if len(buf) < conn.need:
                if not conn.continued and req.version == "HTTP/1.1" and (req.headers.get("expect") or "").lower() == "100-continue":
                    conn.continued = True
                    self._send(conn, b"HTTP/1.1 100 Continue\r\n\r\n")
                return
            # One copy: bytes(buf[:n]) made a bytearray first (an 80 kB body: ~32 us against ~2 us).
            req.body = bytes(memoryview(buf)[: conn.need])  # the view is gone before the del below
            del buf[: conn.need]
            conn.pending = None
            try:
                reply = self._handle(req)
            except Exception:  # a bug, not the client's fault: answer 500, keep serving
                log.exception("%s %s failed", req.method, req.path)
                reply = (500, b'{"error": "internal error"}', "application/json", None, False)
            self._respond(conn, req, reply)

    def _parse_head(self, conn: _Conn, head: bytes) -> Request | None:
        try:
            text = head.decode("iso-8859-1")
            lines = text.split("\r\n")
            method, target, version = lines[0].split(" ")
            if not version.startswith("HTTP/1.") or not target or not method.isalpha():
                raise ValueError(lines[0])
            if len(lines) > MAX_HEADERS + 1:
                self._fail(conn, 431, "too many headers")
                return None
            headers = Headers()
            for line in lines[1:]:
                name, sep, value = line.partition(":")
                if not sep or not name or name[-1] in " \t":
                    raise ValueError(line)
                headers[name.lower()] = value.strip()
        except ValueError:
            self._fail(conn, 400, "malformed request")
            return None
        return Request(method, target, version, headers)

    def _fail(self, conn: _Conn, status: int, message: str) -> None:
        body = b'{"error": "' + message.encode() + b'"}'
        self._send(conn, self._head(status, "application/json", len(body), None, True) + body)
        conn.closing = True
        if not conn.out:
            self._close(conn)

    # ------------------------------------------------------------------ responses

    def _respond(self, conn: _Conn, req: Request, reply: Response) -> None:
        status, body, ctype, extra, close = reply
        close = close or not req.keep_alive
        self._send(conn, self._head(status, ctype, len(body), extra, close) + body)
        if close:
            conn.closing = True
            conn.pending = None
            if not conn.out:
                self._close(conn)

    def _head(self, status: int, ctype: str, length: int, extra: Mapping[str, str] | None, close: bool) -> bytes:
        now = int(time.time())
        if now != self._date_at:  # the status line, Server, Date and Content-Type, made once a second
            self._date_at = now
            self._date = f"\r\nServer: {self._server}\r\nDate: {_http_date(now)}\r\n".encode()
            self._prefix.clear()
        prefix = self._prefix.get((status, ctype))
        if prefix is None:
            prefix = self._prefix[(status, ctype)] = b"".join(
                (f"HTTP/1.1 {status} {REASONS.get(status, '')}".encode(), self._date, f"Content-Type: {ctype}\r\n".encode())
            )
        head = prefix + b"Content-Length: %d\r\n" % length
        if extra:
            head += "".join(f"{k}: {v}\r\n" for k, v in extra.items()).encode()
        return head + (b"Connection: close\r\n\r\n" if close else b"\r\n")

    def _send(self, conn: _Conn, data: bytes) -> None:
        if conn.out:
            conn.out += data
            return
        try:
            sent = conn.sock.send(data)
        except (BlockingIOError, InterruptedError):
            sent = 0
        except OSError:  # the client is gone
            conn.closing = True
            self._close(conn)
            return
        if sent < len(data):
            conn.out += data[sent:]
            self._sel.modify(conn.sock, selectors.EVENT_READ | selectors.EVENT_WRITE, conn)

    def _flush(self, conn: _Conn) -> None:
        try:
            sent = conn.sock.send(conn.out)
        except (BlockingIOError, InterruptedError):
            return
        except OSError:
            self._close(conn)
            return
        del conn.out[:sent]
        conn.last = time.monotonic()
        if not conn.out:
            if conn.closing:
                self._close(conn)
                return
            self._sel.modify(conn.sock, selectors.EVENT_READ, conn)
            if conn.buf and conn.pending is None:
                self._process(conn)
