"""How a batch reaches the collector: a one-method seam, with a stdlib implementation.

Tests inject their own :class:`Transport` to simulate outages, refusals and slow
collectors without a network; the device uses :class:`UrllibTransport` (stdlib only:
no third-party HTTP client on the device). A network failure raises
:class:`TransportError` — :class:`TlsError` when TLS itself failed (untrusted, expired or
wrong-host server certificate, client certificate refused); every HTTP reply, error
statuses included, is a :class:`Response`.

Redirects are never followed: a ``3xx`` is returned as it is, so an ``https://``
collector can never send the device's token and telemetry on to a plain ``http://`` one.

A refused client certificate: in TLS 1.3 the client finishes its handshake before the
server has checked the client's certificate, and Python servers (asyncio, uvloop) close
the connection without flushing the alert that would say why, so the agent just sees
the connection closed with no reply. When that happens with a client certificate
configured, one TLS 1.2 handshake (where the server decides inside the handshake) tells
a refused certificate from any other failure.
"""

from __future__ import annotations

import http.client
import socket
import ssl
import urllib.error
import urllib.request
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any, NamedTuple, Protocol
from urllib.parse import urlsplit

if TYPE_CHECKING:
    from mlpack_edge.monitor_agent.config import AgentConfig

__all__ = ["Response", "Transport", "Fetcher", "TransportError", "TlsError", "UrllibTransport", "transport_for"]


class Response(NamedTuple):
    status: int
    headers: Mapping[str, str]
    body: bytes


class TransportError(ConnectionError):
    """The request did not get an HTTP reply (refused, reset, timed out, DNS...)."""


class TlsError(TransportError):
    """The TLS handshake (or the TLS session) failed: nothing was delivered, nothing is lost."""


class Transport(Protocol):
    def send(self, url: str, body: bytes, headers: Mapping[str, str]) -> Response:
        """POST ``body`` to ``url``; raise :class:`TransportError` when no reply came back."""
        ...


class Fetcher(Protocol):
    """What a download needs (the update path); :class:`UrllibTransport` is one."""

    def get(self, url: str, headers: Mapping[str, str]) -> Response:
        """GET ``url``; raise :class:`TransportError` when no reply came back."""
        ...


#: How a connection closed under the request looks (a refused TLS 1.3 client certificate does too).
_CLOSED = (http.client.RemoteDisconnected, ConnectionResetError, BrokenPipeError, ssl.SSLEOFError)


class _NoRedirect(urllib.request.HTTPRedirectHandler):
    def redirect_request(self, *args: Any, **kwargs: Any) -> None:
        return None  # the 3xx reaches the caller as an HTTPError


class UrllibTransport:
    """POST with ``urllib``; ``timeout`` bounds connect and each read (seconds).

    ``context`` gives the TLS context for ``https://`` URLs (or a zero-argument callable
    making it on first use, so a plain-HTTP device never loads CA roots); its errors
    (:class:`~mlpack_edge.errors.AgentError`) propagate as they are.
    """

    def __init__(
        self,
        timeout: float = 30.0,
        context: ssl.SSLContext | Callable[[], ssl.SSLContext] | None = None,
        client_cert: bool = False,
    ) -> None:
        self.timeout = timeout
        self._context = context
        self._client_cert = client_cert  # the context presents one: diagnose closed connections
        self._openers: dict[bool, urllib.request.OpenerDirector] = {}

    def _opener(self, https: bool) -> urllib.request.OpenerDirector:
        opener = self._openers.get(https)
        if opener is None:
            handlers: list[Any] = [_NoRedirect()]
            if https:
                context = self._context() if callable(self._context) else self._context
                handlers.append(urllib.request.HTTPSHandler(context=context))
            opener = self._openers[https] = urllib.request.build_opener(*handlers)
        return opener

    def send(self, url: str, body: bytes, headers: Mapping[str, str]) -> Response:
        return self._open(urllib.request.Request(url, data=body, headers=dict(headers), method="POST"))

    def get(self, url: str, headers: Mapping[str, str]) -> Response:
        """GET ``url`` (a release download, a ``Range`` of one, the update poll): same TLS, no redirects."""
        return self._open(urllib.request.Request(url, headers=dict(headers), method="GET"))

    def _open(self, request: urllib.request.Request) -> Response:
        url = request.full_url
        opener = self._opener(urlsplit(url).scheme == "https")
        try:
            with opener.open(request, timeout=self.timeout) as reply:
                return Response(reply.status, {k.lower(): v for k, v in reply.headers.items()}, reply.read())
        except urllib.error.HTTPError as exc:
            with exc:
                data = exc.read() if exc.fp is not None else b""
                return Response(exc.code, {k.lower(): v for k, v in (exc.headers or {}).items()}, data)
        except urllib.error.URLError as exc:
            if isinstance(exc.reason, _CLOSED):
                self._diagnose_closed(url)
            if isinstance(exc.reason, ssl.SSLError):
                raise _tls_error(url, exc.reason) from None
            raise TransportError(f"{_host(url)}: {exc.reason}") from None
        except ssl.SSLError as exc:  # a TLS alert (or a closed TLS session) while sending or reading
            if isinstance(exc, _CLOSED):
                self._diagnose_closed(url)
            raise _tls_error(url, exc) from None
        except (OSError, socket.timeout, http.client.HTTPException) as exc:  # reset mid-reply, timeout while reading
            if isinstance(exc, _CLOSED):
                self._diagnose_closed(url)
            raise TransportError(f"{_host(url)}: {exc.__class__.__name__}: {exc}") from None

    def _diagnose_closed(self, url: str) -> None:
        """Raise :class:`TlsError` if the server refuses our client certificate (see the module doc)."""
        parts = urlsplit(url)
        if not (self._client_cert and parts.scheme == "https" and callable(self._context) and parts.hostname):
            return
        ctx = self._context()
        ctx.maximum_version = ssl.TLSVersion.TLSv1_2
        try:
            with socket.create_connection((parts.hostname, parts.port or 443), timeout=self.timeout) as sock:
                with ctx.wrap_socket(sock, server_hostname=parts.hostname):
                    return  # the handshake with our certificate passes: the closed connection was something else
        except ssl.SSLCertVerificationError as exc:
            raise _tls_error(url, exc) from None
        except ssl.SSLError as exc:
            if "PROTOCOL_VERSION" in (exc.reason or "").upper():  # a TLS 1.3-only server: cannot tell
                return
            raise TlsError(
                f"{_host(url)}: the collector refused the TLS handshake: client certificate not accepted "
                "(is it issued by the CA the collector trusts, and still valid?)"
            ) from None
        except OSError:
            return

    def __repr__(self) -> str:
        return f"UrllibTransport(timeout={self.timeout})"


def _tls_error(url: str, exc: ssl.SSLError) -> TlsError:
    from mlpack_edge.monitor_agent.tls import describe_tls_failure

    return TlsError(f"{_host(url)}: {describe_tls_failure(exc)}")


def transport_for(config: AgentConfig, timeout: float = 30.0) -> UrllibTransport:
    """The device's transport for ``config``: its CA file or the system roots, its client certificate."""

    def context() -> ssl.SSLContext:
        from mlpack_edge.monitor_agent.tls import client_context

        return client_context(config.ca_file, config.client_cert, config.client_key)

    return UrllibTransport(timeout, context, client_cert=bool(config.client_cert))


def _host(url: str) -> str:
    return urlsplit(url).netloc or url
