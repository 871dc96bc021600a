"""How a batch reaches the collector: a one-method seam, with a stdlib implementation.

Tests inject their own :class:`Transport` to simulate outages, refusals and slow
collectors without a network; the device uses :class:`UrllibTransport` (stdlib only:
no third-party HTTP client on the device). A network failure raises
:class:`TransportError`; every HTTP reply, error statuses included, is a :class:`Response`.
"""

from __future__ import annotations

import http.client
import socket
import urllib.error
import urllib.request
from collections.abc import Mapping
from typing import NamedTuple, Protocol
from urllib.parse import urlsplit

__all__ = ["Response", "Transport", "TransportError", "UrllibTransport"]


class Response(NamedTuple):
    status: int
    headers: Mapping[str, str]
    body: bytes


class TransportError(ConnectionError):
    """The request did not get an HTTP reply (refused, reset, timed out, DNS...)."""


class Transport(Protocol):
    def send(self, url: str, body: bytes, headers: Mapping[str, str]) -> Response:
        """POST ``body`` to ``url``; raise :class:`TransportError` when no reply came back."""
        ...


class UrllibTransport:
    """POST with ``urllib``; ``timeout`` bounds connect and each read (seconds)."""

    def __init__(self, timeout: float = 30.0) -> None:
        self.timeout = timeout

    def send(self, url: str, body: bytes, headers: Mapping[str, str]) -> Response:
        request = urllib.request.Request(url, data=body, headers=dict(headers), method="POST")
        try:
            with urllib.request.urlopen(request, timeout=self.timeout) as reply:
                return Response(reply.status, {k.lower(): v for k, v in reply.headers.items()}, reply.read())
        except urllib.error.HTTPError as exc:
            with exc:
                data = exc.read() if exc.fp is not None else b""
                return Response(exc.code, {k.lower(): v for k, v in (exc.headers or {}).items()}, data)
        except urllib.error.URLError as exc:
            raise TransportError(f"{_host(url)}: {exc.reason}") from None
        except (OSError, socket.timeout, http.client.HTTPException) as exc:  # reset mid-reply, timeout while reading
            raise TransportError(f"{_host(url)}: {exc.__class__.__name__}: {exc}") from None

    def __repr__(self) -> str:
        return f"UrllibTransport(timeout={self.timeout})"


def _host(url: str) -> str:
    return urlsplit(url).netloc or url
