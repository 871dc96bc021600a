"""Run the collector under uvicorn and say where it listens.

The socket is bound here (``--port 0`` picks a free port), so the line
``listening on http://HOST:PORT`` printed once the server accepts connections tells a
supervisor or a test exactly where to connect.
"""

from __future__ import annotations

import logging
import socket
from collections.abc import Callable

import uvicorn

from mlpack_edge.collector.app import create_app
from mlpack_edge.collector.config import CollectorConfig
from mlpack_edge.collector.storage import open_storage
from mlpack_edge.errors import ServeError

__all__ = ["serve", "bind"]


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


def serve(
    config: CollectorConfig,
    host: str = "127.0.0.1",
    port: int = 8470,
    log_level: str = "warning",
    access_log: bool = False,
    announce: Callable[[str], None] = print,
) -> None:
    """Open (and migrate) the database, then serve until SIGINT/SIGTERM; queued batches are
    written before the process exits."""
    storage = open_storage(config.db_url)
    try:
        sock = bind(host, port)
        bound = sock.getsockname()[1]
        shown = f"[{host}]" if ":" in host else host
        app = create_app(storage, config)

        class _Server(uvicorn.Server):
            async def startup(self, sockets: list[socket.socket] | None = None) -> None:
                await super().startup(sockets=sockets)
                if not self.should_exit:
                    announce(f"listening on http://{shown}:{bound} (database {storage.describe()})")

        logging.basicConfig(level=log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s")
        server = _Server(
            uvicorn.Config(app, log_level=log_level, access_log=access_log, lifespan="on", timeout_graceful_shutdown=10)
        )
        server.run(sockets=[sock])
    finally:
        storage.close()
