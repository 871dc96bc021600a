"""Ingest served ahead of FastAPI's stack (:mod:`mlpack_edge.collector._fast_route`): the
route's replies, errors and documentation stay what FastAPI gave."""

from __future__ import annotations

from pathlib import Path

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, Response
from starlette.testclient import TestClient

from mlpack_edge.collector import CollectorConfig, create_app
from mlpack_edge.collector._fast_route import route_first
from mlpack_edge.collector.storage.sqlite import SqliteStorage
from mlpack_edge.errors import StorageError


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
    with TestClient(_app(seen), raise_server_exceptions=False) as client:
        r = client.post("/hot", content=b"abc")
        assert (r.status_code, r.json()) == (200, {"got": "abc"})
        assert seen == []
        assert client.get("/hot").status_code == 405  # other methods: FastAPI's answer
        assert seen == ["middleware GET /hot"]
        assert "/hot" in client.get("/openapi.json").json()["paths"]
        r = client.post("/hot", content=b"mapped")
        assert (r.status_code, r.json()) == (409, {"error": "mapped"})
        r = client.post("/hot", content=b"bug")
        assert (r.status_code, r.text) == (500, "Internal Server Error")


def test_an_unexpected_error_is_raised_again_for_the_server_to_log() -> None:
    with TestClient(_app([])) as client:
        try:
            client.post("/hot", content=b"bug")
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
        client = TestClient(create_app(storage, CollectorConfig(db_url=url)))
        r = client.post("/api/v1/ingest", content=b"{}", headers={"Authorization": "Bearer mlpk_x"})
        assert (r.status_code, r.json(), r.headers["retry-after"]) == (
            503, {"error": "collector: storage unavailable, retry later"}, "5")
        r = client.post("/api/v1/ingest", content=b"{}")
        assert (r.status_code, r.json()) == (401, {"error": "Authorization: expected 'Bearer <device token>'"})
        assert client.get("/api/v1/ingest").status_code == 405
    finally:
        storage.close()
