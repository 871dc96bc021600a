"""Run the collector under uvicorn and say where it listens.

The socket is bound here (``--port 0`` picks a free port), so the line
``listening on http(s)://HOST:PORT`` printed once the server accepts connections tells a
supervisor or a test exactly where to connect.

HTTPS: :class:`TlsFiles` (certificate, key, and for mutual TLS the CA that issues device
certificates) are checked here first, so a missing file or a key that does not match is
one line, not a traceback. With a client CA the server *asks* for a certificate
(``CERT_OPTIONAL``: a certificate that does not verify fails the handshake, none at all
is allowed, so the fleet page still opens in a browser); ingest then requires one when
devices authenticate by certificate. uvicorn (0.55) does not hand the peer certificate to
the application, so :func:`_tls_protocol` adds the ASGI TLS extension
(``scope["extensions"]["tls"]["client_cert_chain"]``) from the connection's
``ssl_object``; a uvicorn that fills it in itself wins.

Listening beyond loopback without TLS prints a warning: device tokens and telemetry
would cross the network in clear text (or put a TLS reverse proxy in front, see README).
"""

from __future__ import annotations

import dataclasses
import gc
import ipaddress
import logging
import socket
import ssl
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import uvicorn

from mlpack_edge.collector.app import create_app
from mlpack_edge.collector.config import CollectorConfig
from mlpack_edge.collector.storage import open_storage
from mlpack_edge.errors import ServeError

__all__ = ["serve", "bind", "TlsFiles", "server_context", "is_loopback_host"]


@dataclass(frozen=True)
class TlsFiles:
    """PEM files for HTTPS: the server's certificate (chain), its key, the device CA (mutual TLS)."""

    cert: str
    key: str | None = None  # None: the key is in ``cert``
    client_ca: str | None = None


def server_context(tls: TlsFiles) -> ssl.SSLContext:
    """The server's TLS context (TLS >= 1.2), or a one-line :class:`ServeError` naming the file."""
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    for option, path in (("--tls-cert", tls.cert), ("--tls-key", tls.key), ("--tls-client-ca", tls.client_ca)):
        if path is not None:
            try:
                with open(path, "rb") as fh:
                    fh.read(1)
            except OSError as exc:
                raise ServeError(f"{option} {path}: cannot read ({exc.strerror or exc})") from None

    def no_passphrase() -> bytes:
        raise ServeError(f"--tls-key {tls.key or tls.cert}: the key is encrypted; give an unencrypted key (mode 0600)")

    try:
        ctx.load_cert_chain(tls.cert, tls.key, password=no_passphrase)
    except ssl.SSLError as exc:
        if "KEY_VALUES_MISMATCH" in (exc.reason or "").upper():
            raise ServeError(f"--tls-key {tls.key}: does not belong to the certificate in {tls.cert}") from None
        what = f"{tls.cert} + {tls.key}" if tls.key else tls.cert
        raise ServeError(f"--tls-cert/--tls-key {what}: not a PEM certificate and private key ({exc.reason or exc})") from None
    if tls.client_ca is not None:
        try:
            ctx.load_verify_locations(cafile=tls.client_ca)
        except ssl.SSLError:
            raise ServeError(f"--tls-client-ca {tls.client_ca}: no PEM certificate in it") from None
        ctx.verify_mode = ssl.CERT_OPTIONAL
    return ctx


def is_loopback_host(host: str) -> bool:
    if host.lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def bind(host: str, port: int) -> socket.socket:
    """A listening socket on ``host:port`` or a one-line :class:`ServeError`."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    # proto=IPPROTO_TCP matters: asyncio sets TCP_NODELAY only on sockets that say so, and
    # without it every keep-alive reply waits ~40 ms for a delayed ACK (Nagle).
    sock = socket.socket(family, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((host, port))
        sock.listen(2048)
    except OSError as exc:
        sock.close()
        raise ServeError(f"cannot listen on {host}:{port} ({exc.strerror or exc})") from None
    sock.set_inheritable(True)
    return sock


def _warn(line: str) -> None:
    print(line, file=sys.stderr, flush=True)


def serve(
    config: CollectorConfig,
    host: str = "127.0.0.1",
    port: int = 8470,
    log_level: str = "warning",
    access_log: bool = False,
    announce: Callable[[str], None] = print,
    tls: TlsFiles | None = None,
    warn: Callable[[str], None] = _warn,
) -> None:
    """Open (and migrate) the database, then serve until SIGINT/SIGTERM; queued batches are
    written before the process exits."""
    if config.device_auth != "token" and (tls is None or tls.client_ca is None):
        raise ServeError(f"device auth {config.device_auth!r} needs HTTPS with --tls-client-ca (the CA of device certificates)")
    if tls is not None:
        server_context(tls)  # every file checked before the database is opened
        for line in _expiry_warnings(tls.cert):
            warn(line)
    elif not is_loopback_host(host):
        warn(
            f"warning: listening on {host} without TLS: device tokens and telemetry cross the network in clear "
            "text; pass --tls-cert/--tls-key, or keep the collector on 127.0.0.1 behind a TLS reverse proxy"
        )
    storage = open_storage(config.db_url)
    try:
        sock = bind(host, port)
        bound = sock.getsockname()[1]
        shown = f"[{host}]" if ":" in host else host
        scheme = "https" if tls is not None else "http"
        if not config.external_url:
            config = dataclasses.replace(config, external_url=f"{scheme}://{shown}:{bound}")
        app = create_app(storage, config)

        class _Server(uvicorn.Server):
            async def startup(self, sockets: list[socket.socket] | None = None) -> None:
                await super().startup(sockets=sockets)
                if not self.should_exit:
                    announce(f"listening on {scheme}://{shown}:{bound} (database {storage.describe()})")

        logging.basicConfig(level=log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s")
        options: dict[str, Any] = {}
        if tls is not None:
            options = {
                "ssl_certfile": tls.cert,
                "ssl_keyfile": tls.key,
                "ssl_ca_certs": tls.client_ca,
                "ssl_cert_reqs": ssl.CERT_OPTIONAL if tls.client_ca else ssl.CERT_NONE,
                "ssl_ciphers": None,  # OpenSSL's defaults, not uvicorn's legacy "TLSv1" list
                "http": _tls_protocol(),
            }
        server = _Server(
            uvicorn.Config(app, log_level=log_level, access_log=access_log, lifespan="on", timeout_graceful_shutdown=10,
                           **options)
        )
        # Start-up's objects (FastAPI, pydantic, psycopg, numpy: ~10^5) live as long as the process:
        # frozen, the collections that ingest's garbage sets off no longer walk them every time.
        gc.collect()
        gc.freeze()
        server.run(sockets=[sock])
    finally:
        storage.close()


def _expiry_warnings(cert_path: str, now: float | None = None) -> list[str]:
    """A warning when the server's own certificate is expired or not valid yet (devices would refuse it)."""
    try:
        from cryptography import x509
    except ImportError:  # pragma: no cover - the collector extra installs it
        return []
    try:
        with open(cert_path, "rb") as fh:
            cert = x509.load_pem_x509_certificates(fh.read())[0]
    except (OSError, ValueError, IndexError):
        return []
    now = time.time() if now is None else now
    if cert.not_valid_after_utc.timestamp() < now:
        return [f"warning: --tls-cert {cert_path}: expired on {cert.not_valid_after_utc:%Y-%m-%d}; devices will refuse it"]
    if cert.not_valid_before_utc.timestamp() > now:
        return [f"warning: --tls-cert {cert_path}: not valid before {cert.not_valid_before_utc:%Y-%m-%d %H:%M} UTC"]
    return []


_TLS_VERSIONS = {"TLSv1.2": 0x0303, "TLSv1.3": 0x0304}


def _tls_protocol() -> type:
    """uvicorn's HTTP protocol, adding the ASGI TLS extension (client certificate) to each request."""
    from uvicorn.protocols.http.auto import AutoHTTPProtocol

    class TlsScopeProtocol(AutoHTTPProtocol):  # type: ignore[misc, valid-type]
        def connection_made(self, transport: Any) -> None:
            super().connection_made(transport)
            ssl_object = transport.get_extra_info("ssl_object")
            if ssl_object is None:
                return
            der = ssl_object.getpeercert(binary_form=True)
            tls = {
                "server_cert": None,
                "client_cert_chain": [ssl.DER_cert_to_PEM_cert(der)] if der else [],
                "client_cert_name": None,
                "client_cert_error": None,
                "tls_version": _TLS_VERSIONS.get(ssl_object.version() or ""),
                "cipher_suite": None,
            }
            inner = self.app

            async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
                extensions = scope.get("extensions") or {}
                if "tls" not in extensions:
                    scope["extensions"] = {**extensions, "tls": tls}
                await inner(scope, receive, send)

            self.app = app

    return TlsScopeProtocol
