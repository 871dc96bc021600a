"""The shadow phase as telemetry: a ``shadow`` section of the regular windows (absent from every
other window, whose bodies stay byte-identical), filled from real models' comparisons, carried
through the collector's real ingest path (SQLite and PostgreSQL) and shown per device and per
stage in the rollout JSON and page."""

from __future__ import annotations

import json
import threading
import time
from pathlib import Path

import httpx
import pytest

from mlpack_edge.collector import apply_batches, parse_batch
from mlpack_edge.collector import rollout as ro
from mlpack_edge.collector.auth import hash_token
from mlpack_edge.collector.rollout_page import rollouts_page
from mlpack_edge.collector.storage._sql import SqlStorage
from mlpack_edge.monitor_agent.wire import Shadow, Window, WireError
from mlpack_edge.runtime.manifest import read_manifest
from mlpack_edge.runtime.server import PredictServer, ServeConfig
from mlpack_edge.runtime.shadow import ShadowStats, compare
from mlpack_edge.runtime.update import ServeUpdater, poll_offers
from tests.rollout.conftest import Bundles, Fleet
from tests.rollout.test_device_update import Device, device, publish_and_start  # noqa: F401  (fixture)
from tests.rollout.test_hold_health import _setup
from tests.rollout.test_plan import NEW, OLD, T0
from tests.rollout.test_shadow import model, rows


def _section(candidate: str = NEW, rows_: int = 100, agree: int = 90, p95_s: float = 0.004) -> Shadow:
    s = Shadow(candidate, inputs=rows_ + 2, rows=rows_, agree=agree, dropped=3, abs_diff_max=0.4,
               abs_diff_sum=0.05 * rows_)
    s.candidate_side.latency.add_many([p95_s] * rows_)
    s.current_side.latency.add_many([0.001] * rows_)
    s.candidate_side.errors = 2
    return s


def test_windows_without_the_section_are_unchanged_and_with_it_round_trip_and_merge() -> None:
    plain = Window(model=OLD, seq=3, start=T0, end=T0 + 60, requests=5, rows=5)
    assert "shadow" not in plain.to_dict()
    assert json.dumps(Window.from_dict(plain.to_dict()).to_dict()) == json.dumps(plain.to_dict())
    with_it = Window(model=OLD, seq=4, start=T0 + 60, end=T0 + 120, shadow=_section())
    back = Window.from_dict(json.loads(json.dumps(with_it.to_dict())))
    assert back.to_dict() == with_it.to_dict() and back.shadow is not None and back.shadow.agreement == 0.9
    plain.merge(back)
    plain.merge(Window.from_dict(with_it.to_dict()))
    assert plain.shadow is not None
    assert (plain.shadow.rows, plain.shadow.agree, plain.shadow.dropped) == (200, 180, 6)
    assert plain.shadow.abs_diff_max == 0.4 and plain.shadow.candidate_side.latency.count == 200
    other = Window(model=OLD, seq=5, start=T0 + 120, end=T0 + 180, shadow=_section(candidate="c" * 64))
    with pytest.raises(WireError, match=r"shadow\.candidate\.model: cannot merge candidate cccccccccccc"):
        plain.merge(other)


@pytest.mark.parametrize(("change", "message"), [
    ({"agree": 500}, r"window\.shadow: expected agree <= rows <= inputs, got 500, 100, 102"),
    ({"candidate": {"model": "nope"}}, r"window\.shadow\.candidate\.model: expected the candidate's sha256"),
    ({"abs_diff_max": -1.0}, r"window\.shadow\.abs_diff_max"),
    ({"current": {"errors": 0, "latency": {"index": [1], "counts": [1, 2]}}}, r"window\.shadow\.current\.latency"),
])
def test_a_malformed_section_is_refused_naming_the_field(change: dict, message: str) -> None:
    body = Window(model=OLD, seq=1, start=T0, end=T0 + 60, shadow=_section()).to_dict()
    body["shadow"] = {**body["shadow"], **change}
    with pytest.raises(WireError, match=message):
        Window.from_dict(body)


def test_each_take_hands_out_what_was_compared_since_the_last(bundles: Bundles, inverted: Path) -> None:
    v1, bad = model(bundles.v1), model(inverted)
    probe = rows(bundles.v1)
    stats = ShadowStats()
    compare(v1, bad, probe[:10], stats)
    first = stats.take("d" * 64)
    assert first is not None and (first.inputs, first.rows) == (10, 10)
    assert first.candidate_side.latency.count == first.current_side.latency.count == 10
    compare(v1, model(bundles.v1), probe[:6], stats)  # the same model: agrees, no difference
    second = stats.take("d" * 64)
    assert second is not None and (second.rows, second.agree, second.abs_diff_max) == (6, 6, 0.0)
    assert stats.take("d" * 64) is None  # nothing since
    assert first.agree + second.agree == stats.agree and stats.rows == 16  # the verdict still sees all of it
    assert first.abs_diff_max == stats.max_abs > 0.5


def _ingest(storage: SqlStorage, device: str, window: Window, now: float, audit: list | None = None) -> None:
    payload = {"schema": 1, "device": device, "models": {}, "windows": [window.to_dict()], "audit": audit or [],
               "outbox": {"produced": window.seq + 1, "merged": 0, "dropped": 0, "dropped_rows": 0}}
    batch = parse_batch(payload, device, hash_token(device))
    (ack,) = apply_batches(storage, [batch], {}, now)
    assert not hasattr(ack, "status"), ack
    ro.observe_audit(storage, device, batch.audit, now)


def test_the_collector_shows_shadow_windows_per_device_and_per_stage(storage: SqlStorage) -> None:
    sims, r, (first,) = _setup(storage)
    offered = [{"seq": 0, "time": T0 + 1001, "event": "update_offered",
                "detail": {"rollout": r.id, "version": "1.1.0", "hash": NEW}}]
    seq = sims[first].seq + 10
    _ingest(storage, first, Window(model=OLD, seq=seq, start=T0 + 1000, end=T0 + 1060, shadow=_section(rows_=100, agree=95)),
            T0 + 1060, offered)
    _ingest(storage, first, Window(model=OLD, seq=seq + 1, start=T0 + 1060, end=T0 + 1120,
                                   shadow=_section(rows_=100, agree=85, p95_s=0.006)), T0 + 1120)
    # a section about another candidate (an older rollout) is not this rollout's
    _ingest(storage, first, Window(model=OLD, seq=seq + 2, start=T0 + 1120, end=T0 + 1180,
                                   shadow=_section(candidate="e" * 64, agree=0)), T0 + 1180)
    doc = ro.status(storage, storage.rollouts("demo")[0])
    (dev,) = [d for d in doc["stages"][0]["devices"] if d["device"] == first]
    w = dev["shadow_windows"]
    assert (w["inputs"], w["rows"], w["agreement"], w["dropped"]) == (204, 200, 0.9, 6)
    assert w["max_abs_diff"] == 0.4 and w["mean_abs_diff"] == 0.05
    assert w["candidate_error_rate"] == round(4 / 204, 6)
    assert 5.9 < w["candidate_p95_ms"] < 6.1 and 0.99 < w["current_p95_ms"] < 1.01  # from the merged histograms
    assert doc["stages"][0]["shadow_windows"] == w  # one device in the stage
    assert doc["stages"][1]["shadow_windows"] is None  # not started
    page = rollouts_page([doc])
    assert "Window agreement" in page and "90.0 %" in page and "shadow windows: 200 rows" in page


def test_an_openapi_document_describes_the_figures() -> None:
    from mlpack_edge.collector import _rollout_openapi as api

    schema = api.RolloutStatus.model_json_schema()
    assert "ShadowWindows" in json.dumps(schema)
    assert set(api.ShadowWindows.model_fields) >= {"agreement", "max_abs_diff", "mean_abs_diff", "candidate_p95_ms"}


def test_serve_hands_its_live_shadow_to_the_outbox_as_windows(
        device: Device, fleet: Fleet, bundles: Bundles, inverted: Path) -> None:
    """``serve``'s updater (real server, real models, offers and download from a real collector): the
    candidate runs on the live requests, and each acknowledgement during the phase and its end hand
    what was compared since to the outbox as a window of the serving model (a ``shadow`` section
    only), every request counted once, compared or skipped. (The collector side of such windows:
    the test above, through the real ingest path.)"""
    served = PredictServer(model(bundles.v1), ServeConfig(port=0))
    threading.Thread(target=served.serve_forever, daemon=True).start()
    emitted: list[Window] = []
    now = [time.time()]
    updater = ServeUpdater(device.prefix / "gov", device.config, device.transport, lambda: served,
                           on_switch=lambda outcome: None, clock=lambda: now[0], emit=emitted.append)
    try:
        publish_and_start(fleet, inverted, "1.4.0", shadow=60, agreement_floor=0.9)
        offers = poll_offers(device.transport, fleet.url, device.headers)
        updater(offers)
        assert served.shadow is not None  # shadowing on the live requests
        probe = rows(bundles.v1)
        with httpx.Client(base_url=served.url, timeout=30) as c:
            for half in (probe[: len(probe) // 2], probe[len(probe) // 2:]):
                for r in half:
                    assert c.post("/predict", json=r).status_code == 200
                live = served.shadow
                deadline = time.time() + 30
                while live.stats.inputs + live.stats.dropped < sum(1 for _ in half) and time.time() < deadline:
                    time.sleep(0.02)
                updater(offers)  # an acknowledgement during the phase: the figures so far travel
                now[0] += 1
        now[0] += 60
        updater(offers)  # the phase is over: the rest travels, then the verdict
    finally:
        served.shutdown()
    assert served.shadow is None and len(emitted) >= 2
    assert {w.model for w in emitted} == {read_manifest(bundles.v1).content_hash}
    assert all(w.shadow is not None and w.shadow.candidate == read_manifest(inverted).content_hash and not w.requests
               for w in emitted)
    total = sum(w.shadow.inputs + w.shadow.dropped for w in emitted if w.shadow)
    assert total == len(probe)  # every live request was compared or counted as skipped, once
