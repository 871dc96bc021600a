"""Uploader against an injected transport: acknowledgement, backoff, dead letters, no leaks."""

from __future__ import annotations

import fcntl
import json
import logging
import os
import random
from pathlib import Path
from typing import Any

import pytest

from mlpack_edge.errors import AgentError
from mlpack_edge.monitor_agent.config import AgentConfig
from mlpack_edge.monitor_agent.outbox import Outbox
from mlpack_edge.monitor_agent.transport import Response, TransportError
from mlpack_edge.monitor_agent.uploader import BACKOFF_CAP, Backoff, SyncResult, Uploader
from mlpack_edge.monitor_agent.wire import Window

from .helpers import MODEL_HASH, T0, FakeCollector, fixed_sampler, unreachable

TOKEN = "tok-3f9a1c7e5b2d4a6f8e0c"
CONFIG = AgentConfig(collector_url="http://127.0.0.1:9", device_id="press-07", token=TOKEN)


WIRE = {"name": "churn", "version": "1.2.0", "profile": {"format": "mlpack.profile/1", "features": [], "prediction": None}}


def _box(path: Path, n: int) -> Outbox:
    box = Outbox.open(path)
    box.register_model(MODEL_HASH, WIRE, {})
    _add(box, n)
    return box


def _add(box: Outbox, n: int, first: int = 0) -> None:
    for i in range(first, first + n):
        w = Window(model=MODEL_HASH, seq=0, start=T0 + 60 * i, end=T0 + 60 * (i + 1), requests=1, rows=3)
        w.system.add(fixed_sampler())
        box.add_window(w)


def _carried_models(collector: FakeCollector) -> list[bool]:
    """Per request so far: did it carry the model's entry?"""
    return [MODEL_HASH in r["models"] for r in collector.requests]


def _uploader(box: Outbox, collector: Any, **kw: Any) -> Uploader:
    return Uploader(box, CONFIG, collector, random.Random(0), **kw)


def test_delivers_everything_once_in_gzip_batches(tmp_path: Path, collector: FakeCollector) -> None:
    with _box(tmp_path, 7) as box:
        result = _uploader(box, collector, max_windows=3).sync()
        assert (result.outcome, result.delivered, result.batches) == ("delivered", 7, 3)
        assert sorted(collector.windows) == [(s, s) for s in range(1, 8)]
        headers = collector.headers[0]
        assert headers["Content-Encoding"] == "gzip" and headers["Content-Type"] == "application/json"
        assert headers["Authorization"] == f"Bearer {TOKEN}"
        assert collector.requests[0]["device"] == "press-07"
        assert collector.requests[0]["models"][MODEL_HASH]["name"] == "churn"
        acc = box.accounting()
        assert (acc.delivered, acc.pending) == (7, 0) and acc.balanced
        assert collector.outbox_reports[-1]["produced"] == 7
        assert _uploader(box, collector).sync().outcome == "nothing"


def test_network_errors_and_5xx_keep_everything_for_later(tmp_path: Path, collector: FakeCollector) -> None:
    collector.script = [unreachable(), Response(503, {"Retry-After": "7"}, b'{"detail": "storage unavailable"}'),
                        Response(429, {}, b"slow down")]
    with _box(tmp_path, 2) as box:
        up = _uploader(box, collector)
        first = up.sync()
        assert (first.outcome, first.status, first.pending) == ("unreachable", None, 2)
        assert first.detail == "127.0.0.1:9: Connection refused"
        second = up.sync()
        assert (second.outcome, second.status, second.retry_after) == ("unreachable", 503, 7.0)
        assert second.detail == "HTTP 503: storage unavailable"
        assert up.sync().status == 429
        assert box.accounting().pending == 2 and not collector.windows
        assert up.sync().outcome == "delivered" and len(collector.windows) == 2


def test_a_lost_reply_leads_to_a_duplicate_not_a_second_copy(tmp_path: Path, collector: FakeCollector) -> None:
    def stored_then_cut(payload: dict[str, Any]) -> Response:
        collector.handle(payload)  # the collector commits...
        raise TransportError("127.0.0.1:9: connection reset")  # ...and the reply never arrives

    collector.script = [stored_then_cut]
    with _box(tmp_path, 3) as box:
        up = _uploader(box, collector)
        assert up.sync().outcome == "unreachable" and box.accounting().pending == 3
        result = up.sync()
        assert (result.outcome, result.delivered) == ("delivered", 3)
        assert len(collector.windows) == 3 and box.accounting().balanced
        # The model was stored with the first attempt, but the agent never heard so: sent again.
        assert _carried_models(collector) == [True, True]


def test_a_refused_window_is_isolated_and_dead_lettered(tmp_path: Path, collector: FakeCollector) -> None:
    def refuse_seq_4(payload: dict[str, Any]) -> Response:
        collector.script.insert(0, refuse_seq_4)  # stays in force for every request
        if any(w["seq"] == 4 for w in payload["windows"]):
            return Response(422, {}, b'{"detail": "windows[0].features.age: cannot merge 3 bins into 4"}')
        return collector.handle(payload)

    collector.script = [refuse_seq_4]
    with _box(tmp_path, 8) as box:
        result = _uploader(box, collector).sync()
        assert (result.outcome, result.delivered, result.dead_lettered) == ("refused", 7, 1)
        assert sorted(s for s, _ in collector.windows) == [1, 2, 3, 5, 6, 7, 8]
        (dead,) = box.dead_letters()
        assert (dead.seq, dead.status) == (4, 422)
        assert dead.reason == "HTTP 422: windows[0].features.age: cannot merge 3 bins into 4"
        acc = box.accounting()
        assert (acc.delivered, acc.dead_letter, acc.pending) == (7, 1, 0) and acc.balanced
        assert collector.outbox_reports[-1]["dead_letter"] == 1  # later batches reported it
        collector.script = []
        assert _uploader(box, collector).sync().outcome == "nothing"


def test_drops_are_reported_even_with_nothing_pending(tmp_path: Path, collector: FakeCollector) -> None:
    collector.script = [Response(422, {}, b"bad")]
    with _box(tmp_path, 1) as box:
        result = _uploader(box, collector).sync()
        # The refused window, then an empty batch that carries the counters to the collector.
        assert (result.outcome, result.dead_lettered, result.batches) == ("refused", 1, 2)
        assert collector.requests[-1]["windows"] == [] and collector.outbox_reports[-1]["dead_letter"] == 1
        assert not box.needs_report()


def test_bad_credentials_keep_windows_and_are_not_dead_letters(tmp_path: Path, collector: FakeCollector) -> None:
    collector.script = [Response(401, {}, b'{"detail": "Authorization: unknown, wrong or revoked device token"}')]
    with _box(tmp_path, 2) as box:
        result = _uploader(box, collector).sync()
        assert (result.outcome, result.status, result.dead_lettered) == ("refused", 401, 0)
        assert box.accounting().pending == 2 and box.dead_letters() == []


def test_unacknowledged_windows_stay(tmp_path: Path, collector: FakeCollector) -> None:
    collector.script = [Response(200, {}, b'{"stored": [1], "duplicates": []}'), Response(200, {}, b"not json")]
    with _box(tmp_path, 2) as box:
        up = _uploader(box, collector)
        up.sync(max_batches=1)
        assert [w.seq for w in box.pending_windows()] == [2]
        assert up.sync().outcome == "unreachable" and box.accounting().pending == 1


def test_backoff_is_exponential_with_full_jitter_and_a_cap() -> None:
    class Top(random.Random):
        def uniform(self, a: float, b: float) -> float:
            return b

    top = Backoff(Top())
    assert [top.failure() for _ in range(11)] == [1, 2, 4, 8, 16, 32, 64, 128, 256, 300, 300]
    top.success()
    assert top.failure() == 1
    assert top.failure(retry_after=30) == 30  # the server's wish wins over a shorter jitter
    assert Backoff(Top()).failure(retry_after=10_000) == BACKOFF_CAP
    jitter = Backoff(random.Random(1))
    delays = [jitter.failure() for _ in range(200)]
    assert all(0 <= d <= 300 for d in delays) and len(set(delays)) == 200
    assert min(delays[20:]) < 60 < max(delays[20:])  # full jitter: spread over [0, cap]


def test_run_loop_waits_by_outcome(tmp_path: Path, collector: FakeCollector) -> None:
    class Waiter:
        def __init__(self, rounds: int) -> None:
            self.delays: list[float] = []
            self.rounds = rounds

        def is_set(self) -> bool:
            return len(self.delays) >= self.rounds

        def wait(self, timeout: float | None = None) -> bool:
            assert timeout is not None
            self.delays.append(timeout)
            return self.is_set()

    class Top(random.Random):
        def uniform(self, a: float, b: float) -> float:
            return b

    collector.script = [unreachable(), unreachable(), unreachable(), Response(403, {}, b"")]
    with _box(tmp_path, 1) as box:
        waiter = Waiter(6)
        seen: list[SyncResult] = []
        Uploader(box, CONFIG, collector, Top()).run(waiter, 60.0, seen.append)
        assert waiter.delays == [1, 2, 4, BACKOFF_CAP, 60.0, 60.0]
        assert [r.outcome for r in seen] == ["unreachable"] * 3 + ["refused", "delivered", "nothing"]


def test_one_uploader_at_a_time(tmp_path: Path, collector: FakeCollector) -> None:
    with _box(tmp_path, 1) as box:
        fd = os.open(tmp_path / "upload.lock", os.O_RDWR | os.O_CREAT)
        fcntl.flock(fd, fcntl.LOCK_EX)
        try:
            assert _uploader(box, collector).sync().outcome == "busy"
        finally:
            os.close(fd)
        assert _uploader(box, collector).sync().outcome == "delivered"


def test_missing_settings_are_named(tmp_path: Path, collector: FakeCollector) -> None:
    with _box(tmp_path, 0) as box:
        up = Uploader(box, AgentConfig(collector_url="http://127.0.0.1:9"), collector)
        with pytest.raises(AgentError, match=r"^cannot upload: device_id, token not configured \(agent.json in "):
            up.sync()


def test_the_token_never_reaches_logs_reprs_or_messages(
    tmp_path: Path, collector: FakeCollector, caplog: pytest.LogCaptureFixture
) -> None:
    collector.script = [unreachable(), Response(500, {}, b"boom"), Response(401, {}, b"no"), Response(422, {}, b"bad")]
    with caplog.at_level(logging.DEBUG), _box(tmp_path, 1) as box:
        up = _uploader(box, collector)
        results = [up.sync() for _ in range(5)]
        texts = [caplog.text, repr(CONFIG), repr(up), str(CONFIG.public_dict())]
        texts += [r.summary() for r in results] + [r.detail for r in results]
    assert all(TOKEN not in t for t in texts)
    assert "Bearer" not in caplog.text


def test_the_model_travels_until_a_batch_carrying_it_is_acknowledged(tmp_path: Path, collector: FakeCollector) -> None:
    with _box(tmp_path, 7) as box:
        collector.script = [unreachable()]
        up = _uploader(box, collector, max_windows=3)
        assert up.sync().outcome == "unreachable"
        result = up.sync()
        assert (result.outcome, result.delivered, result.batches) == ("delivered", 7, 3)
        assert _carried_models(collector) == [True, True, False, False]
        assert box.known(CONFIG.ingest_url) == {MODEL_HASH}
        assert collector.requests[-1]["windows"] and "profile" not in json.dumps(collector.requests[-1])
    with _box(tmp_path, 0) as box:  # a restart (the model registered again) remembers it
        _add(box, 2, first=7)
        assert _uploader(box, collector).sync().delivered == 2
        assert _carried_models(collector)[-1] is False
    # Another collector URL starts from nothing.
    other = AgentConfig(collector_url="http://127.0.0.1:10/", device_id="press-07", token=TOKEN)
    fresh = FakeCollector()
    with _box(tmp_path, 0) as box:
        _add(box, 1, first=9)
        assert Uploader(box, other, fresh, random.Random(0)).sync().delivered == 1
        assert _carried_models(fresh) == [True]
        assert (box.known(CONFIG.ingest_url), box.known(other.ingest_url)) == (set(), {MODEL_HASH})
        assert len(collector.windows) + len(fresh.windows) == 10 and box.accounting().balanced


def test_a_collector_that_lost_the_model_gets_it_again_instead_of_dead_letters(
    tmp_path: Path, collector: FakeCollector
) -> None:
    with _box(tmp_path, 2) as box:
        up = _uploader(box, collector)
        assert up.sync().delivered == 2
        collector.models.clear()  # its database was reset
        _add(box, 3, first=2)
        result = up.sync()
        assert (result.outcome, result.delivered, result.dead_lettered, result.batches) == ("delivered", 3, 0, 2)
        assert _carried_models(collector) == [True, False, True]
        assert [len(r["windows"]) for r in collector.requests] == [2, 3, 3]  # the same windows, resent whole
        assert box.dead_letters() == [] and box.known(CONFIG.ingest_url) == {MODEL_HASH}
        acc = box.accounting()
        assert (acc.delivered, acc.pending, acc.dead_letter) == (5, 0, 0) and acc.balanced
        assert sorted(collector.windows) == [(s, s) for s in range(1, 6)]


def test_a_bad_window_sent_without_the_model_is_still_isolated_and_dead_lettered(
    tmp_path: Path, collector: FakeCollector
) -> None:
    with _box(tmp_path, 1) as box:
        up = _uploader(box, collector)
        assert up.sync().delivered == 1  # the collector knows the model now

        def refuse_seq_4(payload: dict[str, Any]) -> Response:
            collector.script.insert(0, refuse_seq_4)
            if any(w["seq"] == 4 for w in payload["windows"]):
                return Response(422, {}, b'{"error": "windows[0].rows: bad"}')
            return collector.handle(payload)

        collector.script = [refuse_seq_4]
        _add(box, 4, first=1)
        result = up.sync()
        assert (result.outcome, result.delivered, result.dead_lettered) == ("refused", 3, 1)
        assert [d.seq for d in box.dead_letters()] == [4]
        assert _carried_models(collector)[1:3] == [False, True]  # first the model came back, then halving
        acc = box.accounting()
        assert (acc.delivered, acc.dead_letter, acc.pending) == (4, 1, 0) and acc.balanced
