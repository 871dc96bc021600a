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
out is turned into a reply by the app's own handler for its class (``app.exception_handlers``,
looked up along the exception's MRO as Starlette's exception middleware does), anything else
is a 500 (and raised again, so the server logs it, as Starlette's error middleware does). The
app's own middleware is skipped too: the collector's only one (the viewer token) never
guards a POST; one that must see uploads has to be added here as well.
"""

from __future__ import annotations

import inspect
from collections.abc import Awaitable, Callable
from typing import Any

from fastapi import FastAPI, Request
from fastapi.responses import PlainTextResponse, Response

__all__ = ["route_first"]

Scope = dict[str, Any]


def _app_handler(app: FastAPI, exc: Exception) -> Callable[[Request, Exception], Any] | None:
    """The app's handler for ``exc``'s class or its nearest base (500 and ``Exception`` excluded:
    those are the error middleware's, which answers 500 and raises again)."""
    for cls in type(exc).__mro__:
        if cls is Exception:
            return None
        found = app.exception_handlers.get(cls)
        if found is not None:
            return found  # type: ignore[no-any-return]
    return None


def route_first(
    app: FastAPI,
    method: str,
    path: str,
    handler: Callable[[Request], Awaitable[Response]],
) -> None:
    """Serve ``method path`` with ``handler`` before ``app``'s middleware stack; an exception it
    raises gets the app's own handler for it (none: a 500)."""
    build = app.build_middleware_stack

    def build_stack() -> Any:
        stack = build()

        async def dispatch(scope: Scope, receive: Any, send: Any) -> None:
            if (scope["type"] != "http" or scope["path"] != path or scope["method"] != method
                    or scope.get("root_path")):
                await stack(scope, receive, send)
                return
            request = Request(scope, receive, send)
            try:
                reply = await handler(request)
            except Exception as exc:
                on_error = _app_handler(app, exc)
                if on_error is None:
                    await PlainTextResponse("Internal Server Error", status_code=500)(scope, receive, send)
                    raise
                mapped = on_error(request, exc)
                reply = await mapped if inspect.isawaitable(mapped) else mapped
            await reply(scope, receive, send)

        return dispatch

    app.build_middleware_stack = build_stack  # type: ignore[method-assign]
