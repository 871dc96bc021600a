"""An optional viewer token for the fleet page and the read API.

Off by default: on 127.0.0.1 only people on the machine can read the fleet. A collector
that listens beyond loopback should set one (``serve --viewer-token-file FILE``): then the
page and every read route (``GET /``, ``/devices/…``, ``/models/…``, ``/rollouts``,
``/metrics``, ``/api/v1/{devices,models,fleet,alerts,rollouts,releases}``) need
``Authorization: Bearer <viewer or admin token>``, or the ``mlpack_viewer`` cookie, which
opening any page once with ``?token=<viewer token>`` sets (HttpOnly, SameSite=Strict).
Ingest, the device routes (updates, downloads) and the admin routes keep their own
credentials; ``/healthz`` stays open for load balancers.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from http.cookies import SimpleCookie
from urllib.parse import parse_qs

from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from mlpack_edge.collector.auth import bearer_token, hash_token, token_matches

__all__ = ["COOKIE", "guarded", "viewer_middleware"]

COOKIE = "mlpack_viewer"
_PREFIXES = ("/devices/", "/models/", "/api/v1/devices", "/api/v1/models", "/api/v1/fleet", "/api/v1/alerts",
             "/api/v1/rollouts", "/api/v1/releases")
_EXACT = ("/", "/rollouts", "/metrics")


def guarded(method: str, path: str) -> bool:
    """Whether a request reads fleet data the viewer token protects."""
    if method not in ("GET", "HEAD"):
        return False
    if path.startswith("/api/v1/releases/") and path.endswith("/bundle"):
        return False  # devices download with their own token
    return path in _EXACT or path.startswith(_PREFIXES)


def viewer_middleware(viewer_hash: str, is_admin: Callable[[str], bool]
                      ) -> Callable[[Request, Callable[[Request], Awaitable[Response]]], Awaitable[Response]]:
    async def check(request: Request, call_next: Callable[[Request], Awaitable[Response]]) -> Response:
        if not guarded(request.method, request.url.path):
            return await call_next(request)
        offered = bearer_token(request.headers.get("authorization"))
        from_query = (parse_qs(request.url.query).get("token") or [None])[0]
        cookie = SimpleCookie(request.headers.get("cookie") or "").get(COOKIE)
        for token in (offered, from_query, cookie.value if cookie else None):
            if token and (token_matches(hash_token(token), viewer_hash) or is_admin(hash_token(token))):
                reply = await call_next(request)
                if token == from_query:
                    reply.set_cookie(COOKIE, token, httponly=True, samesite="strict")
                return reply
        return JSONResponse({"error": "this collector's fleet view needs a viewer token: Authorization: Bearer "
                                      "<token>, or open the page once with ?token=<token>"}, status_code=401)

    return check
