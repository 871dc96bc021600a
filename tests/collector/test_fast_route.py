"""Ingest served ahead of FastAPI's stack (:mod:`mlpack_edge.collector._fast_route`): the
route's replies, errors and documentation stay what FastAPI gave."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import httpx
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, Response

from mlpack_edge.collector import CollectorConfig, create_app
from mlpack_edge.collector._fast_route import route_first
from mlpack_edge.collector.storage.sqlite import SqliteStorage
from mlpack_edge.errors import StorageError


def _calls(app: FastAPI, *calls: tuple[Any, ...], raise_errors: bool = True) -> list[httpx.Response]:
    """Requests through the app's ASGI interface, in order (httpx's ASGI transport: Starlette's
    TestClient over httpx is deprecated)."""

    async def go() -> list[httpx.Response]:
        transport = httpx.ASGITransport(app=app, raise_app_exceptions=raise_errors)
        async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
            out = []
            for method, path, body, *headers in calls:
                kw: dict[str, Any] = {"headers": headers[0]} if headers else {}
                out.append(await client.request(method, path, content=body, **kw))
            return out

    return asyncio.run(go())


def _app(seen: list[str]) -> FastAPI:
    app = FastAPI()

    @app.middleware("http")
    async def mark(request: Request, call_next):  # type: ignore[no-untyped-def]
        seen.append(f"middleware {request.method} {request.url.path}")
        return await call_next(request)

    @app.post("/hot")
    async def hot(request: Request) -> Response:
        body = await request.body()
        if body == b"mapped":
            raise KeyError("mapped")
        if body == b"bug":
            raise RuntimeError("bug")
        return JSONResponse({"got": body.decode()})

    @app.exception_handler(LookupError)  # KeyError's base: found along the MRO, as Starlette does
    async def mapped(_: Request, exc: Exception) -> Response:
        return JSONResponse({"error": "mapped"}, status_code=409)

    route_first(app, "POST", "/hot", hot)
    return app


def test_the_route_skips_the_stack_and_everything_else_goes_through_it() -> None:
    seen: list[str] = []
    app = _app(seen)
    (r,) = _calls(app, ("POST", "/hot", b"abc"))
    assert (r.status_code, r.json()) == (200, {"got": "abc"})
    assert seen == []
    (r,) = _calls(app, ("GET", "/hot", None))
    assert r.status_code == 405  # other methods: FastAPI's answer
    assert seen == ["middleware GET /hot"]
    (r,) = _calls(app, ("GET", "/openapi.json", None))
    assert "/hot" in r.json()["paths"]
    mapped, bug = _calls(app, ("POST", "/hot", b"mapped"), ("POST", "/hot", b"bug"), raise_errors=False)
    assert (mapped.status_code, mapped.json()) == (409, {"error": "mapped"})
    assert (bug.status_code, bug.text) == (500, "Internal Server Error")


def test_an_unexpected_error_is_raised_again_for_the_server_to_log() -> None:
    try:
        _calls(_app([]), ("POST", "/hot", b"bug"))
    except RuntimeError as exc:
        assert str(exc) == "bug"
    else:
        raise AssertionError("the handler's exception was swallowed")


class _DownStorage(SqliteStorage):
    """A database that fails the token lookup (the first query of an upload)."""

    def device_for_token(self, token_hash: str) -> str | None:
        raise StorageError("collector.db: database is locked")


def test_ingest_answers_503_with_retry_after_when_the_database_fails(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path}/collector.db"
    storage = _DownStorage(url)
    storage.migrate()
    try:
        down, anonymous, get = _calls(
            create_app(storage, CollectorConfig(db_url=url)),
            ("POST", "/api/v1/ingest", b"{}", {"Authorization": "Bearer mlpk_x"}),
            ("POST", "/api/v1/ingest", b"{}"),
            ("GET", "/api/v1/ingest", None),
        )
        assert (down.status_code, down.json(), down.headers["retry-after"]) == (
            503, {"error": "collector: storage unavailable, retry later"}, "5")
        assert (anonymous.status_code, anonymous.json()) == (
            401, {"error": "Authorization: expected 'Bearer <device token>'"})
        assert get.status_code == 405
    finally:
        storage.close()
