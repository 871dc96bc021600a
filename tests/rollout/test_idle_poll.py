"""An idle ``serve`` (nothing to upload, so no acknowledgement to carry an offer) still learns
its rollout offer: the uploader falls back to the light poll ``GET /api/v1/updates`` after
``idle_poll`` seconds without an exchange, against a real collector, clock driven by the test."""

from __future__ import annotations

import socket
from pathlib import Path
from typing import Any

import pytest

from mlpack_edge.monitor_agent.config import AgentConfig
from mlpack_edge.monitor_agent.outbox import Outbox
from mlpack_edge.monitor_agent.transport import Response, UrllibTransport
from mlpack_edge.monitor_agent.uploader import Uploader
from tests.rollout.conftest import Bundles, Fleet
from tests.rollout.test_device_update import publish_and_start

pytestmark = pytest.mark.usefixtures("clean_env")


class Counting(UrllibTransport):
    """The real transport, counting the light polls it makes."""

    def __init__(self) -> None:
        super().__init__(timeout=30)
        self.polls = 0

    def get(self, url: str, headers: Any) -> Response:
        if url.endswith("/api/v1/updates"):
            self.polls += 1
        return super().get(url, headers)


class Clock:
    def __init__(self) -> None:
        self.t = 1000.0

    def __call__(self) -> float:
        return self.t


def _uploader(tmp_path: Path, url: str, token: str, seen: list[list[dict[str, Any]]]) -> tuple[Uploader, Counting, Clock]:
    config = AgentConfig(collector_url=url, device_id="press-01", token=token)
    box = Outbox.open(tmp_path / "state", config.cap_bytes)
    transport, clock = Counting(), Clock()
    return Uploader(box, config, transport, on_updates=seen.append, idle_poll=300.0, clock=clock), transport, clock


def test_an_idle_uploader_polls_for_its_offer_every_idle_period(fleet: Fleet, bundles: Bundles, tmp_path: Path) -> None:
    started = publish_and_start(fleet, bundles.v2, "1.1.0")
    seen: list[list[dict[str, Any]]] = []
    up, transport, clock = _uploader(tmp_path, fleet.url, fleet.token("press-01"), seen)
    try:
        first = up.sync()  # nothing to upload, never talked to the collector: poll now
        assert first.outcome == "nothing" and transport.polls == 1
        assert [(o["rollout"], o["action"], o["version"]) for o in seen[0]] == [(started["id"], "install", "1.1.0")]
        clock.t += 299
        up.sync()
        assert transport.polls == 1 and len(seen) == 1  # idle, but not for idle_poll yet
        clock.t += 1
        up.sync()
        assert transport.polls == 2 and len(seen) == 2
    finally:
        up.outbox.close()


def test_uploads_carry_offers_so_a_busy_uploader_does_not_poll(fleet: Fleet, bundles: Bundles, tmp_path: Path) -> None:
    publish_and_start(fleet, bundles.v2, "1.1.0")
    seen: list[list[dict[str, Any]]] = []
    up, transport, clock = _uploader(tmp_path, fleet.url, fleet.token("press-01"), seen)
    try:
        up.outbox.append_audit("serve_started", {"version": "1.0.0"})  # something to deliver
        result = up.sync()
        assert result.outcome == "delivered" and result.batches == 1
        assert transport.polls == 0 and seen[0][0]["action"] == "install"  # the acknowledgement carried it
        clock.t += 299
        assert up.sync().outcome == "nothing" and transport.polls == 0  # idle since the exchange: not long enough
        clock.t += 1
        up.sync()
        assert transport.polls == 1
    finally:
        up.outbox.close()


def test_a_collector_outage_during_an_idle_poll_is_unreachable_with_backoff(tmp_path: Path) -> None:
    with socket.socket() as s:  # a port nothing listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    seen: list[list[dict[str, Any]]] = []
    up, transport, clock = _uploader(tmp_path, f"http://127.0.0.1:{port}", "t" * 32, seen)
    try:
        result = up.sync()
        assert result.outcome == "unreachable" and transport.polls == 1 and not seen
        assert result.detail  # says why (connection refused)
        first = up.backoff.failure(result.retry_after)  # what run() does with an unreachable outcome
        assert 0 <= first <= up.backoff.cap
        up.sync()  # not answered: the next sync polls again (no idle wait after a failure)
        assert transport.polls == 2
    finally:
        up.outbox.close()
