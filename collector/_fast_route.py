"""One route served ahead of FastAPI's middleware, routing and dependency solving.

Ingest is the collector's hot path: every device posts a batch a minute. Through
FastAPI a request passes ~10 ASGI layers (error and exception middleware, the router
matching each route in turn, ``solve_dependencies`` building a sub-response and reading
cookies and query parameters) before a handler that takes the raw :class:`Request`
anyway; measured under load that was ~100 µs of CPU per upload, more than the JSON
decoding of the body. :func:`route_first` hands ``POST /api/v1/ingest`` to its handler
directly; the route stays registered, so the OpenAPI document and every other method
on the path (405) are what they were.

What the layers skipped did for this route is done here: an exception the handler lets
out is turned into a reply by ``on_error`` (the app's handler for it), anything else is a
500 (and raised again, so the server logs it, as Starlette's error middleware does). The
app's own middleware is skipped too: the collector's only one (the viewer token) never
guards a POST; one that must see uploads has to be added here as well.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

from fastapi import FastAPI, Request
from fastapi.responses import PlainTextResponse, Response

__all__ = ["route_first"]

Scope = dict[str, Any]


def route_first(
    app: FastAPI,
    method: str,
    path: str,
    handler: Callable[[Request], Awaitable[Response]],
    on_error: Callable[[Exception], Response | None],
) -> None:
    """Serve ``method path`` with ``handler`` before ``app``'s middleware stack; ``on_error``
    maps an exception the handler raised to a reply (``None``: a 500)."""
    build = app.build_middleware_stack

    def build_stack() -> Any:
        stack = build()

        async def dispatch(scope: Scope, receive: Any, send: Any) -> None:
            if (scope["type"] != "http" or scope["path"] != path or scope["method"] != method
                    or scope.get("root_path")):
                await stack(scope, receive, send)
                return
            try:
                reply = await handler(Request(scope, receive, send))
            except Exception as exc:
                mapped = on_error(exc)
                if mapped is None:
                    await PlainTextResponse("Internal Server Error", status_code=500)(scope, receive, send)
                    raise
                reply = mapped
            await reply(scope, receive, send)

        return dispatch

    app.build_middleware_stack = build_stack  # type: ignore[method-assign]
