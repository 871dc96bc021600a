"""Alerts reach webhooks from a real collector process (SQLite and PostgreSQL).

A real ``mlpack collector serve`` with a short ``--silent-after``, a real device upload,
and a real HTTP receiver on 127.0.0.1: the silent-device alert opens on the collector's
own tick (no upload), is delivered once per webhook, resolves on the next upload and is
delivered once more; a receiver answering 500 or hanging gets the same body again later
and ingest keeps answering meanwhile; the history is in the API and on the page.
"""

from __future__ import annotations

import hmac
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from mlpack_edge.collector import admin, open_storage
from tests.collector.process import Collector, pg_schema, start_collector, stop_collector
from tests.collector.receiver import Received, receiver
from tests.collector.sim import gz

from .test_api import post

FAST = ("--silent-after", "1.5", "--alert-interval", "0.3", "--webhook-timeout", "1", "--webhook-backoff", "0.3")


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def fresh_db(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    if request.param == "sqlite":
        yield "sqlite:///" + str(tmp_path / "collector.db")
    else:
        with pg_schema() as url:
            yield url


def _history(c: Collector) -> list[dict]:
    with c.client() as cl:
        r = cl.get("/api/v1/alerts/history")
    assert r.status_code == 200, r.text
    return r.json()["alerts"]


def _wait(pred, timeout: float = 30.0, what: str = "condition"):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        got = pred()
        if got:
            return got
        time.sleep(0.1)
    raise AssertionError(f"timed out waiting for {what}")


def _upload(c: Collector, dev, token: str) -> None:
    r = post(c, token, gz(dev.batch([dev.window(time.time() - 30, rows=5000)])))  # enough rows not to drift by chance
    assert r.status_code == 200, r.text


def _for(requests: list[Received], device: str) -> list[Received]:
    out = []
    for r in requests:
        body = r.json()
        alert = body.get("alert") or {"device": body["alerts"][0]["labels"].get("device")}
        if alert["device"] == device:
            out.append(r)
    return out


def test_an_alert_fires_once_and_resolves_once_at_every_webhook(fresh_db: str, profile, demo_hash, tmp_path: Path) -> None:
    (tmp_path / "secret").write_text("hook-secret\n")
    with receiver() as plain, receiver() as am:
        admin.add_webhook(fresh_db, plain.url, "json", tmp_path / "secret")
        admin.add_webhook(fresh_db, am.url, "alertmanager")
        c = start_collector(fresh_db, *FAST)
        try:
            dev, token = c.device(profile, demo_hash)
            _upload(c, dev, token)
            # silent after 1.5 s: the collector's tick opens it, nobody uploads
            (firing,) = plain.wait_for(1)
            assert firing.json()["event"] == "firing" and firing.json()["alert"]["device"] == dev.name
            assert hmac.compare_digest(firing.headers["x-mlpack-signature"],
                                       "sha256=" + hmac.new(b"hook-secret", firing.body, "sha256").hexdigest())
            (am_firing,) = am.wait_for(1)
            assert am_firing.json()["status"] == "firing" and am_firing.json()["version"] == "4"
            assert "x-mlpack-signature" not in am_firing.headers
            time.sleep(1.0)  # more ticks while it stays silent: nothing more is sent
            assert len(plain.requests) == 1 and len(am.requests) == 1

            _upload(c, dev, token)  # it is back: resolved after this ingest
            firing2, resolved = plain.wait_for(2)
            assert firing2 is firing and resolved.json()["event"] == "resolved"
            assert resolved.json()["alert"]["id"] == firing.json()["alert"]["id"]
            am_resolved = am.wait_for(2)[1].json()
            assert am_resolved["status"] == "resolved" and am_resolved["alerts"][0]["endsAt"] != "0001-01-01T00:00:00Z"

            # the receiver has answered; the collector records that right after
            (alert,) = _wait(lambda: [a for a in _history(c) if a["device"] == dev.name and a["state"] == "resolved"
                                      and all(d["state"] == "delivered" for d in a["deliveries"])], what="recorded")
            assert alert["kind"] == "silent" and alert["opened_at"] < alert["resolved_at"]
            assert sorted((d["event"], d["state"], d["attempts"]) for d in alert["deliveries"]) == [
                ("firing", "delivered", 1), ("firing", "delivered", 1), ("resolved", "delivered", 1), ("resolved", "delivered", 1)]
            with c.client() as cl:
                page = cl.get("/alerts").text
                hooks = cl.get("/api/v1/webhooks").json()["webhooks"]
            assert f'id="alert-{alert["id"]}"' in page and 'data-state="resolved"' in page
            assert [(h["format"], h["signed"], h["failed"]) for h in hooks] == [("json", True, 0), ("alertmanager", False, 0)]
        finally:
            stop_collector(c)
        # (it went silent again meanwhile: whatever was sent, each delivery reached its receiver exactly once)
        _each_delivered_once(fresh_db, {1: plain, 2: am})


def _each_delivered_once(db_url: str, receivers: dict) -> None:
    s = open_storage(db_url, migrate=False)
    try:
        rows = s.deliveries()
    finally:
        s.close()
    for hook, rx in receivers.items():
        got = [int(r.headers["x-mlpack-delivery"]) for r in rx.requests if r.answered == 200]
        assert len(got) == len(set(got))
        assert sorted(got) == sorted(d["id"] for d in rows if d["webhook"] == hook and d["state"] == "delivered")


def test_a_webhook_answering_500_then_200_gets_the_alert_once(fresh_db: str, profile, demo_hash) -> None:
    with receiver([500, 500]) as rx:
        admin.add_webhook(fresh_db, rx.url, "json")
        c = start_collector(fresh_db, *FAST)
        try:
            dev, token = c.device(profile, demo_hash)
            _upload(c, dev, token)
            first, second, third = rx.wait_for(3)
            assert [r.answered for r in (first, second, third)] == [500, 500, 200]
            assert first.body == second.body == third.body  # the same delivery, the same bytes
            assert len({r.headers["x-mlpack-delivery"] for r in (first, second, third)}) == 1
            (alert,) = _wait(lambda: [a for a in _history(c) if a["deliveries"] and
                                      a["deliveries"][0]["state"] == "delivered"], what="delivered")
            (d,) = alert["deliveries"]
            assert (d["attempts"], d["last_status"], d["last_error"]) == (3, 200, None)
            with c.client() as cl:
                text = cl.get("/metrics").text
            assert 'mlpack_webhook_deliveries{format="json",state="delivered",webhook="1"} 1.0' in text
            assert 'mlpack_webhook_deliveries{format="json",state="pending",webhook="1"} 0.0' in text
            time.sleep(1.0)
            assert _attempts(rx.requests)[first.headers["x-mlpack-delivery"]] == [500, 500, 200]  # nothing after the success
        finally:
            stop_collector(c)


def _attempts(requests: list[Received]) -> dict[str, list]:
    """delivery id -> what the receiver answered to each attempt, in order."""
    out: dict[str, list] = {}
    for r in requests:
        out.setdefault(r.headers["x-mlpack-delivery"], []).append(r.answered)
    return out


def test_a_hanging_webhook_times_out_is_retried_and_never_blocks_ingest(fresh_db: str, profile, demo_hash) -> None:
    with receiver(["hang"]) as rx:
        admin.add_webhook(fresh_db, rx.url, "alertmanager")
        c = start_collector(fresh_db, *FAST[:-4], "--webhook-timeout", "5", "--webhook-backoff", "0.3")
        try:
            dev, token = c.device(profile, demo_hash)
            other, other_token = c.device(profile, demo_hash, seed=2)
            _upload(c, dev, token)
            (hung,) = rx.wait_for(1)  # the first attempt hangs; the collector gives it 5 s
            hung_at = time.monotonic()
            _upload(c, other, other_token)
            # ingest answered long before that attempt could have timed out
            assert time.monotonic() - hung_at < 3.5 and len(rx.requests) == 1
            delivery = hung.headers["x-mlpack-delivery"]
            _wait(lambda: _attempts(rx.requests)[delivery][-1] == 200, what="the retry")
            assert _attempts(rx.requests)[delivery] == ["hang", 200]
            (alert,) = _wait(lambda: [a for a in _history(c) if a["device"] == dev.name and a["deliveries"]
                                      and a["deliveries"][0]["state"] == "delivered"], what="delivered")
            assert alert["deliveries"][0]["attempts"] == 2
        finally:
            rx.release.set()
            stop_collector(c)


@pytest.mark.postgres
def test_two_collector_processes_on_one_database_send_each_transition_once(pg_url_fresh: str, profile, demo_hash) -> None:
    with receiver() as rx:
        admin.add_webhook(pg_url_fresh, rx.url, "json")
        a = start_collector(pg_url_fresh, *FAST)
        b = start_collector(pg_url_fresh, *FAST)
        try:
            dev, token = a.device(profile, demo_hash)
            _upload(a, dev, token)
            rx.wait_for(1)
            _upload(b, dev, token)
            rx.wait_for(2)
            time.sleep(1.5)  # both processes keep ticking (and it goes silent again)
            per_alert: dict[int, list[str]] = {}
            for r in _for(rx.requests, dev.name):
                per_alert.setdefault(r.json()["alert"]["id"], []).append(r.json()["event"])
            first = min(per_alert)
            assert per_alert[first] == ["firing", "resolved"]
            assert all(events in (["firing"], ["firing", "resolved"]) for events in per_alert.values()), per_alert
        finally:
            stop_collector(a)
            stop_collector(b)
        _each_delivered_once(pg_url_fresh, {1: rx})


@pytest.fixture
def pg_url_fresh() -> Iterator[str]:
    pytest.importorskip("psycopg")
    with pg_schema() as url:
        yield url


pytestmark = pytest.mark.filterwarnings("ignore::ResourceWarning")


def test_a_pending_delivery_survives_a_kill_9_of_the_collector(fresh_db: str, profile, demo_hash) -> None:
    with receiver([500] * 1000) as rx:
        admin.add_webhook(fresh_db, rx.url, "json")
        c = start_collector(fresh_db, *FAST)
        dev, token = c.device(profile, demo_hash)
        _upload(c, dev, token)
        first = rx.wait_for(2)[0]  # the firing alert, refused twice so far
        delivery = first.headers["x-mlpack-delivery"]
        c.proc.kill()  # SIGKILL: no shutdown, whatever was in memory is gone
        c.proc.wait(timeout=30)
        with rx.arrived:
            rx.script.clear()  # the receiver recovers while the collector is down
        c = start_collector(fresh_db, *FAST)
        try:
            _wait(lambda: 200 in _attempts(rx.requests)[delivery], what="the delivery after the restart")
            time.sleep(1.0)
            answers = _attempts(rx.requests)[delivery]
            assert answers.count(200) == 1 and set(answers[:-1]) == {500}
            mine = [r.json()["alert"]["id"] for r in rx.requests if r.json()["alert"]["device"] == dev.name]
            assert len(set(mine)) == 1  # still the one episode: the restart opened nothing again
        finally:
            stop_collector(c)


def test_test_webhook_sends_a_signed_test_alert_and_says_what_came_back(tmp_path: Path) -> None:
    from click.testing import CliRunner

    from mlpack_edge.cli import main

    db = "sqlite:///" + str(tmp_path / "collector.db")
    (tmp_path / "secret").write_text("t-secret\n")
    with receiver([503]) as rx:
        admin.add_webhook(db, rx.url, "alertmanager", tmp_path / "secret")
        bad = CliRunner().invoke(main, ["collector", "test-webhook", "1", "--db", db])
        assert bad.exit_code == 1 and bad.stderr.startswith(
            f"Error: webhook 1 ({rx.url}, alertmanager): HTTP 503: {{\"error\": \"receiver says no\"}} after "), bad.stderr
        ok = CliRunner().invoke(main, ["collector", "test-webhook", "1", "--db", db])
        assert ok.exit_code == 0 and ok.stdout.startswith(f"webhook 1 ({rx.url}, alertmanager): HTTP 200 in "), ok.output
        body = rx.requests[1].body
        assert rx.requests[1].headers["x-mlpack-signature"] == "sha256=" + hmac.new(b"t-secret", body, "sha256").hexdigest()
        sent = rx.requests[1].json()
        assert sent["status"] == "firing" and sent["alerts"][0]["labels"]["alertname"] == "MlpackTest"
    missing = CliRunner().invoke(main, ["collector", "test-webhook", "7", "--db", db])
    assert (missing.exit_code, missing.stderr) == (1, "Error: webhook 7: no such active webhook (see list-webhooks)\n")
    s = open_storage(db, migrate=False)
    try:
        assert s.alert_history() == [] and s.deliveries() == []  # nothing stored
    finally:
        s.close()


def test_a_production_gate_breach_reaches_the_webhook_once_and_its_resolution_once(fresh_db: str, profile) -> None:
    from tests.collector.sim import model_hash
    from tests.collector.test_kpis import KPI, _feedback

    h = model_hash("kpi", "1.0.0")
    with receiver() as rx:
        admin.add_webhook(fresh_db, rx.url, "alertmanager")
        c = start_collector(fresh_db, "--alert-interval", "0.3", "--webhook-backoff", "0.3")
        try:
            dev, token = c.device(profile, h)

            def upload(confusion: list[list[int]]) -> None:
                w = dev.window(time.time() - 120, rows=5000)
                w.feedback = _feedback(confusion)
                batch = dev.batch([w], name="kpi", version="1.0.0")
                batch["models"][h].update({"kpi": KPI})
                assert post(c, token, gz(batch)).status_code == 200

            def fleet_gate() -> list[dict]:
                out = []
                for r in rx.requests:
                    a = r.json()["alerts"][0]
                    if a["labels"]["kind"] == "production_gate" and "device" not in a["labels"]:
                        out.append(r.json())
                return out

            upload([[300, 20], [30, 120]])  # recall 120/150 = 0.80 < gate 0.9
            (firing,) = _wait(fleet_gate, what="the production_gate alert")
            a = firing["alerts"][0]
            assert (firing["status"], a["labels"]["alertname"], a["labels"]["model_name"], a["labels"]["feature"]) == (
                "firing", "MlpackProductionGate", "kpi", "recall")
            time.sleep(1.0)
            assert len(fleet_gate()) == 1  # held open over several evaluations: sent once
            upload([[0, 0], [0, 3000]])  # the range's recall is now 3120/3150: the gate passes
            _wait(lambda: len(fleet_gate()) == 2, what="the resolution")
            time.sleep(1.0)
            events = [b["status"] for b in fleet_gate()]
            assert events == ["firing", "resolved"]
            assert fleet_gate()[1]["alerts"][0]["fingerprint"] == a["fingerprint"]
        finally:
            stop_collector(c)
