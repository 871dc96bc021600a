"""Alert state and webhook delivery, in process: a real database, a real HTTP receiver, a moved clock.

The alert evaluation (:class:`Alerter`) and the delivery queue (:class:`Dispatcher`) are
driven directly with an injected clock, so a device goes silent and a retry comes due
without waiting. The same paths inside a real collector process are in
``test_alert_webhooks.py``.
"""

from __future__ import annotations

import hmac
import json
from pathlib import Path

import pytest

from mlpack_edge.collector.alerts import CONDITIONS, AlertContext, Alerter, Firing, fleet_alerts
from mlpack_edge.collector.config import CollectorConfig
from mlpack_edge.collector.queries import time_range
from mlpack_edge.collector.delivery import Dispatcher, RetryPolicy
from mlpack_edge.collector.webhooks import check_url, read_secret, signature
from mlpack_edge.errors import CollectorError
from tests.collector.receiver import receiver

T0 = 1_790_000_000.0


class Clock:
    def __init__(self, t: float) -> None:
        self.t = t

    def __call__(self) -> float:
        return self.t



def _seen(storage, name: str, t: float) -> None:
    with storage.write() as tx:
        tx.touch_device(name, t, None, None, None)


def test_a_silent_device_opens_an_alert_on_the_tick_without_any_ingest_and_resolves_once(storage) -> None:
    clock = Clock(T0)
    config = CollectorConfig(db_url=storage.url, silent_after=600.0, clock=clock)
    storage.add_device("edge-1", "h" * 64, T0 - 10)
    _seen(storage, "edge-1", T0)
    hook = storage.add_webhook("http://127.0.0.1:9/hook", "json", None, T0)
    alerter = Alerter(storage, config)

    assert alerter.check() == []  # seen just now
    clock.t = T0 + 601  # nobody uploads; the tick alone sees the device go silent
    (opened,) = alerter.check()
    assert (opened.event, opened.alert.kind, opened.alert.device, opened.alert.opened_at) == ("firing", "silent", "edge-1", T0 + 601)
    clock.t = T0 + 900
    assert alerter.check() == []  # still silent: no second transition, the message follows the duration
    (row,) = storage.alert_history()
    assert (row.state, row.opened_at, row.checked_at) == ("open", T0 + 601, T0 + 900)
    assert row.message.startswith("edge-1: silent for ")

    _seen(storage, "edge-1", T0 + 950)  # it uploads again
    clock.t = T0 + 960
    (resolved,) = alerter.check()
    assert (resolved.event, resolved.alert.id, resolved.alert.resolved_at) == ("resolved", opened.alert.id, T0 + 960)
    assert alerter.check() == []
    (row,) = storage.alert_history()
    assert (row.opened_at, row.resolved_at) == (T0 + 601, T0 + 960)
    # one delivery per transition for the webhook, firing before resolved
    sent = sorted(storage.deliveries(), key=lambda d: d["id"])
    assert [(d["webhook"], d["alert"], d["event"], d["state"]) for d in sent] == [
        (hook, row.id, "firing", "pending"), (hook, row.id, "resolved", "pending")]
    # and it opens again, as a new episode, when it goes silent again
    clock.t = T0 + 950 + 601
    (again,) = alerter.check()
    assert again.event == "firing" and again.alert.id != row.id
    assert [a.state for a in storage.alert_history()] == ["open", "resolved"]


def test_conditions_are_a_list_another_source_appends_to(storage) -> None:
    clock = Clock(T0)
    config = CollectorConfig(db_url=storage.url, clock=clock)
    breach = {"on": True}

    def gate_breach(ctx: AlertContext) -> list[Firing]:
        assert ctx.now == clock.t and ctx.storage is storage and ctx.overview(time_range(None, None, ctx.now))["devices"] == []
        return [Firing("gate_breach", "critical", "demo 1.0.0: recall 0.71 < gate 0.80", model="a" * 64)] if breach["on"] else []

    CONDITIONS.append(gate_breach)
    try:
        alerter = Alerter(storage, config)  # the module list, as the collector uses it
        (t,) = alerter.check()
        assert (t.event, t.alert.kind, t.alert.model) == ("firing", "gate_breach", "a" * 64)
        breach["on"] = False
        clock.t += 60
        assert [x.event for x in alerter.check()] == ["resolved"]
    finally:
        CONDITIONS.remove(gate_breach)
    assert CONDITIONS == [fleet_alerts]


def test_a_failing_condition_leaves_the_state_as_it_was(storage) -> None:
    clock = Clock(T0)
    config = CollectorConfig(db_url=storage.url, clock=clock)
    calls = {"n": 0}

    def flaky(ctx: AlertContext) -> list[Firing]:
        calls["n"] += 1
        if calls["n"] == 2:
            raise RuntimeError("database hiccup")
        return [Firing("drift", "critical", "x0 drifted", model="b" * 64, feature="x0")]

    alerter = Alerter(storage, config, conditions=[flaky])
    assert [t.event for t in alerter.check()] == ["firing"]
    alerter._safe_check()  # raises inside: logged, counted, nothing resolved
    assert alerter.failures == 1
    assert [a.state for a in storage.alert_history()] == ["open"]
    assert alerter.check() == []


def _one_alert(storage, fmt: str = "json", secret: str | None = None, url: str = "",
               holds: dict[str, bool] | None = None) -> tuple[Alerter, Clock]:
    """A webhook and one open alert (while ``holds["on"]``)."""
    clock = Clock(T0)
    holds = holds if holds is not None else {"on": True}
    storage.add_webhook(url, fmt, secret, T0)
    alerter = Alerter(storage, CollectorConfig(db_url=storage.url, clock=clock, external_url="http://127.0.0.1:8470"),
                      conditions=[lambda ctx: [Firing("silent", "warning", "edge-1: silent for 2 h", device="edge-1")]
                                  if holds["on"] else []])
    alerter.check()
    return alerter, clock


def test_500_then_success_is_delivered_once_after_a_backoff(storage) -> None:
    with receiver([500]) as rx:
        _, clock = _one_alert(storage, url=rx.url)
        d = Dispatcher(storage, RetryPolicy(timeout=2.0, backoff=30.0), clock)
        try:
            assert d.run_once() == 1
            (row,) = storage.deliveries()
            assert (row["state"], row["attempts"], row["last_status"], row["next_at"]) == ("pending", 1, 500, T0 + 30.0)
            assert "receiver says no" in row["last_error"]
            assert d.run_once() == 0  # not due before its backoff
            clock.t = T0 + 30.0
            assert d.run_once() == 1
            assert d.run_once() == 0
        finally:
            d.stop()
        (row,) = storage.deliveries()
        assert (row["state"], row["attempts"], row["last_status"], row["last_error"], row["delivered_at"]) == (
            "delivered", 2, 200, None, T0 + 30.0)
        answered = [r.answered for r in rx.requests]
        assert answered == [500, 200]  # exactly one success
        assert rx.requests[0].body == rx.requests[1].body  # a retry sends the same bytes
        assert rx.requests[0].headers["x-mlpack-delivery"] == rx.requests[1].headers["x-mlpack-delivery"]


def test_a_hanging_receiver_times_out_and_is_retried(storage) -> None:
    with receiver(["hang"]) as rx:
        _, clock = _one_alert(storage, url=rx.url)
        d = Dispatcher(storage, RetryPolicy(timeout=0.5, backoff=10.0), clock)
        try:
            d.run_once()  # returns after the timeout, not when the receiver lets go
            (row,) = storage.deliveries()
            assert (row["state"], row["attempts"], row["last_status"], row["last_error"]) == (
                "pending", 1, None, "no answer within 0.5 s")
            clock.t += 10.0
            d.run_once()
        finally:
            d.stop()
        (row,) = storage.deliveries()
        assert (row["state"], row["attempts"]) == ("delivered", 2)
        assert [r.answered for r in rx.requests] == ["hang", 200]


def test_a_delivery_gives_up_after_max_attempts_and_says_why(storage) -> None:
    with receiver([503, 503, 503]) as rx:
        _, clock = _one_alert(storage, url=rx.url)
        d = Dispatcher(storage, RetryPolicy(timeout=2.0, backoff=1.0, max_backoff=2.0, max_attempts=3), clock)
        try:
            for _ in range(3):
                d.run_once()
                clock.t += 2.0
            assert d.run_once() == 0
        finally:
            d.stop()
        (row,) = storage.deliveries()
        assert (row["state"], row["attempts"], row["last_status"]) == ("failed", 3, 503)
        assert len(rx.requests) == 3


def test_hmac_signature_and_the_alertmanager_shape(storage, tmp_path: Path) -> None:
    (tmp_path / "secret").write_text("s3cret-value\n")
    secret = read_secret(tmp_path / "secret")
    with receiver() as rx:
        holds = {"on": True}
        alerter, clock = _one_alert(storage, "alertmanager", secret, rx.url, holds)
        d = Dispatcher(storage, RetryPolicy(timeout=2.0), clock)
        try:
            d.run_once()
            holds["on"] = False  # the condition stops holding
            clock.t = T0 + 120
            alerter.check()
            d.run_once()
        finally:
            d.stop()
        firing, resolved = (r.json() for r in rx.requests)
        for r in rx.requests:
            expected = "sha256=" + hmac.new(b"s3cret-value", r.body, "sha256").hexdigest()
            assert hmac.compare_digest(r.headers["x-mlpack-signature"], expected)
            assert r.headers["x-mlpack-signature"] == signature(secret, r.body)
        assert firing["version"] == "4" and firing["status"] == "firing" and resolved["status"] == "resolved"
        (a,) = firing["alerts"]
        assert a["labels"] == {"alertname": "MlpackSilent", "kind": "silent", "severity": "warning", "source": "mlpack",
                               "device": "edge-1"}
        assert a["annotations"]["summary"] == "edge-1: silent for 2 h"
        assert (a["startsAt"], a["endsAt"]) == ("2026-09-21T14:13:20.000Z", "0001-01-01T00:00:00Z")
        (b,) = resolved["alerts"]
        assert (b["startsAt"], b["endsAt"], b["fingerprint"]) == ("2026-09-21T14:13:20.000Z", "2026-09-21T14:15:20.000Z",
                                                                 a["fingerprint"])
        assert firing["externalURL"] == "http://127.0.0.1:8470" and a["generatorURL"].endswith("/alerts#alert-1")
        assert firing["groupKey"] == resolved["groupKey"]


def test_bad_webhook_settings_are_one_line_errors(tmp_path: Path) -> None:
    for url in ("ftp://host/x", "http://", "not a url", "http://host:99999/x"):
        with pytest.raises(CollectorError, match=r"webhook URL .*expected|port"):
            check_url(url)
    (tmp_path / "empty").write_text("\n")
    (tmp_path / "two").write_text("a\nb\n")
    for name in ("empty", "two", "missing"):
        with pytest.raises(CollectorError, match=rf"--secret-file .*{name}: (expected one line|cannot read)"):
            read_secret(tmp_path / name)


def test_json_body(storage) -> None:
    with receiver() as rx:
        _, clock = _one_alert(storage, url=rx.url)
        d = Dispatcher(storage, RetryPolicy(timeout=2.0), clock)
        try:
            d.run_once()
        finally:
            d.stop()
        (r,) = rx.requests
        assert "x-mlpack-signature" not in r.headers
        assert json.loads(r.body) == {
            "schema": "mlpack.alert/1", "event": "firing",
            "alert": {"id": 1, "kind": "silent", "severity": "warning", "state": "open", "model": None,
                      "model_name": None, "model_version": None, "device": "edge-1", "feature": None,
                      "message": "edge-1: silent for 2 h", "opened_at": T0, "resolved_at": None,
                      "url": "http://127.0.0.1:8470/alerts#alert-1"},
        }


def test_a_condition_must_name_a_known_severity_and_a_plain_kind() -> None:
    with pytest.raises(ValueError, match=r"alert 'gate_breach': severity 'info', expected one of critical, warning"):
        Firing("gate_breach", "info", "x")
    with pytest.raises(ValueError, match=r"alert kind 'a\|b'"):
        Firing("a|b", "warning", "x")


def test_resolved_alerts_are_pruned_after_the_retention(storage) -> None:
    clock = Clock(T0)
    holds = {"on": True}
    storage.add_webhook("http://127.0.0.1:9/a", "json", None, T0)
    config = CollectorConfig(db_url=storage.url, clock=clock, alert_retention_days=1.0)
    alerter = Alerter(storage, config, conditions=[
        lambda ctx: [Firing("drift", "critical", "x0", model="c" * 64, feature="x0")] if holds["on"] else []])
    alerter.check()
    holds["on"] = False
    clock.t += 60
    alerter.check()  # resolved at T0 + 60
    holds["on"] = True
    clock.t = T0 + 86400 + 30
    alerter.check()  # opens again; the first episode is not a day old yet
    assert [a.state for a in storage.alert_history()] == ["open", "resolved"]
    clock.t = T0 + 86400 + 3700  # an hour later: the first episode ended more than a day ago
    alerter.check()
    (left,) = storage.alert_history()
    assert left.state == "open" and left.opened_at == T0 + 86400 + 30
    assert {d["alert"] for d in storage.deliveries()} == {left.id}


def test_a_stale_evaluation_from_a_slower_process_is_dropped(storage) -> None:
    hook = storage.add_webhook("http://127.0.0.1:9/a", "json", None, T0)
    silent = Firing("silent", "warning", "edge-1: silent", device="edge-1")
    assert [t.event for t in storage.record_alerts([silent], T0, lambda h, a, e: "{}")] == ["firing"]
    # process B started evaluating at T0+20 (after an upload) and records first: resolved
    assert [t.event for t in storage.record_alerts([], T0 + 20, lambda h, a, e: "{}")] == ["resolved"]
    # process A started at T0+10, before the upload, and finishes later: its view is stale
    assert storage.record_alerts([silent], T0 + 10, lambda h, a, e: "{}") == []
    assert [(a.state, a.resolved_at) for a in storage.alert_history()] == [("resolved", T0 + 20)]
    assert len(storage.deliveries()) == 2 and hook == 1


def test_a_hanging_webhook_holds_only_its_share_of_the_workers(storage) -> None:
    clock = Clock(T0)
    with receiver(["hang"] * 10) as slow, receiver() as fast:
        storage.add_webhook(slow.url, "json", None, T0)
        storage.add_webhook(fast.url, "json", None, T0)
        alerter = Alerter(storage, CollectorConfig(db_url=storage.url, clock=clock), conditions=[
            lambda ctx: [Firing("silent", "warning", f"edge-{i}: silent", device=f"edge-{i}") for i in range(6)]])
        assert len(alerter.check()) == 6  # 6 deliveries per webhook
        d = Dispatcher(storage, RetryPolicy(timeout=3.0), clock, workers=4)
        try:
            d.start()  # the thread: it never waits for a batch of attempts to finish
            slow.wait_for(2)
            fast.wait_for(6, timeout=2.5)  # all six got through while the two slow ones still hang
            assert len(slow.requests) == 2
        finally:
            slow.release.set()
            d.stop()
