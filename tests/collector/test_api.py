"""The HTTP API against a real collector process, once on SQLite and once on PostgreSQL."""

from __future__ import annotations

import gzip
import json
import time

import pytest

from mlpack_edge.collector import admin, open_storage
from mlpack_edge.collector.storage import LATEST
from mlpack_edge.monitor_agent.wire import merge_windows
from tests.collector.process import Collector
from tests.collector.sim import gz, make_profile, model_hash


def post(c: Collector, token: str | None, body: bytes, encoding: str | None = "gzip", **headers: str):
    h = dict(headers)
    if token is not None:
        h["Authorization"] = f"Bearer {token}"
    if encoding:
        h["Content-Encoding"] = encoding
    with c.client() as cl:
        return cl.post("/api/v1/ingest", content=body, headers=h)


def stored_windows(c: Collector, device: str) -> int:
    s = open_storage(c.db_url, migrate=False)
    try:
        return s.window_count(device)
    finally:
        s.close()


def test_batch_is_stored_once_and_a_replay_is_acknowledged(collector, profile, demo_hash) -> None:
    dev, token = collector.device(profile, demo_hash)
    now = time.time()
    windows = [dev.window(now - 900 + 60 * i) for i in range(5)]
    body = gz(dev.batch(windows))
    first = post(collector, token, body)
    assert first.status_code == 200, first.text
    assert first.json() == {"stored": [0, 1, 2, 3, 4], "duplicates": []}
    again = post(collector, token, body)
    assert again.status_code == 200
    assert again.json() == {"stored": [], "duplicates": [0, 1, 2, 3, 4]}
    assert stored_windows(collector, dev.name) == 5
    # plain JSON (identity encoding) is accepted too
    more = post(collector, token, json.dumps(dev.batch([dev.window(now - 600)])).encode(), encoding=None)
    assert more.json() == {"stored": [5], "duplicates": []}

    with collector.client() as cl:
        detail = cl.get(f"/api/v1/devices/{dev.name}").json()
    total = detail["models"][0]["total"]
    assert total["requests"] == sum(w.requests for w in windows) + 50 == 300
    assert total["windows"] == 6
    assert detail["device"]["requests"] == total["requests"]
    assert detail["device"]["model"]["hash"] == demo_hash
    assert detail["device"]["status"] == "ok"


def test_stats_are_the_merge_of_the_stored_windows(collector, profile) -> None:
    h = model_hash("merge-check", "2.0.0")
    dev, token = collector.device(profile, h, seed=7)
    now = time.time()
    windows = [dev.window(now - 3000 + 60 * i, rows=40) for i in range(8)]
    assert post(collector, token, gz(dev.batch(windows, name="merge-check", version="2.0.0"))).status_code == 200
    with collector.client() as cl:
        m = cl.get(f"/api/v1/models/{h}").json()
    merged = merge_windows(windows)
    total = m["series"]["total"]
    assert total["requests"] == merged.requests == 320
    assert total["p99_ms"] == pytest.approx(merged.latency.quantile(0.99) * 1000, rel=1e-6)
    assert total["p50_ms"] == pytest.approx(merged.latency.quantile(0.5) * 1000, rel=1e-6)
    for name, counts in merged.features.items():
        assert total["drift"][name]["observed"] == sum(counts.bins)
        assert total["drift"][name]["above"] == counts.above
    assert [d["name"] for d in m["devices"]] == [dev.name]


def test_drifting_device_is_flagged_and_the_other_is_not(collector, profile) -> None:
    h = model_hash("drift-check", "1.0.0")
    steady, t1 = collector.device(profile, h, seed=3)
    shifted, t2 = collector.device(profile, h, seed=4, shift=2.0)
    now = time.time()
    for dev, tok in ((steady, t1), (shifted, t2)):
        body = gz(dev.batch([dev.window(now - 1800 + 60 * i) for i in range(10)], name="drift-check"))
        assert post(collector, tok, body).status_code == 200
    with collector.client() as cl:
        rows = {d["name"]: d for d in cl.get("/api/v1/devices").json()["devices"]}
        alerts = cl.get("/api/v1/alerts").json()["alerts"]
    assert rows[shifted.name]["status"] == "drift"
    assert rows[shifted.name]["worst"]["feature"] == "x0"
    assert rows[steady.name]["status"] == "ok"
    assert rows[steady.name]["worst"]["psi"] < 0.1
    mine = [a for a in alerts if a["device"] == shifted.name and a["kind"] == "drift"]
    assert mine and mine[0]["feature"] == "x0"
    assert not [a for a in alerts if a["device"] == steady.name]
    assert "chi-square p " in mine[0]["message"] and "n 500)" in mine[0]["message"]


def test_drifted_features_show_the_test_and_both_distributions_side_by_side(collector, profile) -> None:
    h = model_hash("side-by-side", "1.0.0")
    shifted, tok = collector.device(profile, h, seed=5, shift=1.0)
    few, tok2 = collector.device(profile, h, seed=6)
    now = time.time()
    assert post(collector, tok, gz(shifted.batch([shifted.window(now - 600 + 60 * i) for i in range(6)], name="side-by-side"))).status_code == 200
    assert post(collector, tok2, gz(few.batch([few.window(now - 300, rows=12)], name="side-by-side"))).status_code == 200
    with collector.client() as cl:
        detail = cl.get(f"/api/v1/devices/{shifted.name}").json()
        page = cl.get(f"/devices/{shifted.name}").text
        small = cl.get(f"/api/v1/devices/{few.name}").json()
        small_page = cl.get(f"/devices/{few.name}").text
    x0 = detail["models"][0]["total"]["drift"]["x0"]
    assert (x0["status"], x0["test"], x0["n"]) == ("drift", "chi2", 300)
    assert x0["p_value"] < x0["alpha"] == pytest.approx(0.005 / 5)  # 3 numeric + colour + prediction
    bins = x0["bins"]
    assert len(bins["labels"]) == len(bins["reference"]) == len(bins["observed"]) == 10
    assert sum(bins["observed"]) == 300 and sum(bins["reference"]) == pytest.approx(1.0)
    assert bins["observed"][-1] > 3 * 300 * bins["reference"][-1]  # moved up: the top bin fills
    assert '<figure class="bins" data-feature="x0">' in page
    assert '<figure class="bins" data-feature="x1">' not in page  # only drifted features
    assert f"n {x0['n']:,})" in page
    assert small["device"]["worst"]["status"] == "not-enough-data" and small["device"]["worst"]["n"] == 12
    assert "(12 of 20)" in small_page


def test_audit_rows_are_idempotent_and_outbox_stats_are_the_latest(collector, profile, demo_hash) -> None:
    dev, token = collector.device(profile, demo_hash)
    audit = [{"seq": 1, "time": time.time(), "event": "install", "detail": {"version": "1.0.0"}}]
    b1 = dev.batch([], audit=audit, outbox={"produced": 10, "merged": 0, "dropped": 0, "dropped_rows": 0})
    for _ in range(2):
        assert post(collector, token, gz(b1)).json() == {"stored": [], "duplicates": []}
    b2 = dev.batch([], outbox={"produced": 20, "merged": 4, "dropped": 3, "dropped_rows": 150})
    assert post(collector, token, gz(b2)).status_code == 200
    with collector.client() as cl:
        detail = cl.get(f"/api/v1/devices/{dev.name}").json()
        alerts = cl.get("/api/v1/alerts").json()["alerts"]
    assert [(a["seq"], a["event"]) for a in detail["audit"]] == [(1, "install")]
    assert detail["device"]["outbox"] == {"produced": 20, "merged": 4, "dropped": 3, "dropped_rows": 150}
    assert any(a["kind"] == "dropped" and a["device"] == dev.name and "3 windows dropped" in a["message"] for a in alerts)


def _negative(batch: dict) -> dict:
    batch["windows"][0]["features"]["x0"]["bins"][0] = -1
    return batch


def _few_bins(batch: dict) -> dict:
    batch["windows"][0]["features"]["x0"]["bins"] = batch["windows"][0]["features"]["x0"]["bins"][:-1]
    return batch


def _unknown_model(batch: dict) -> dict:
    batch["models"] = {}
    batch["windows"][0]["model"] = "f" * 64
    return batch


def _latency_not_object(batch: dict) -> dict:
    batch["windows"][0]["latency"] = [1, 2]
    return batch


def _huge_number(batch: dict) -> dict:
    batch["windows"][0]["system"]["cpu"] = 10**400  # parsed as an int too large for a float
    return batch


def _bad_schema(batch: dict) -> dict:
    batch["schema"] = 2
    return batch


def _unknown_feature(batch: dict) -> dict:
    batch["windows"][0]["features"]["nope"] = {"bins": [1]}
    return batch


@pytest.mark.parametrize(
    ("mutate", "status", "message"),
    [
        (_bad_schema, 422, "schema: unsupported version 2, expected 1"),
        (_negative, 422, "windows[0].features.x0.bins[0]: counts must be non-negative, got -1"),
        (_few_bins, 422, "windows[0].features.x0.bins: expected 10 bins (the model's profile), got 9"),
        (_unknown_feature, 422, "windows[0].features.nope: not a feature of model demo 1.0.0"),
        (_unknown_model, 422, "windows[0].model: unknown model ffffffffffff; send it in the batch's models section or register the bundle with add-model"),
        (_latency_not_object, 422, "windows[0].latency: expected an object"),
        (_huge_number, 422, "windows[0].system.cpu: expected a finite number"),
    ],
    ids=["schema", "negative", "bins", "feature", "unknown-model", "latency-list", "huge-number"],
)
def test_schema_violations_are_422_and_store_nothing(collector, profile, demo_hash, mutate, status, message) -> None:
    dev, token = collector.device(profile, demo_hash)
    batch = mutate(dev.batch([dev.window(time.time() - 120)]))
    r = post(collector, token, gz(batch))
    assert (r.status_code, r.json()) == (status, {"error": message})
    assert stored_windows(collector, dev.name) == 0


def test_malformed_bodies_are_400(collector, profile, demo_hash) -> None:
    dev, token = collector.device(profile, demo_hash)
    r = post(collector, token, gzip.compress(b'{"schema": 1,'))
    assert (r.status_code, r.json()["error"]) == (400, "body: not valid JSON (Expecting property name enclosed in double quotes at line 1 column 14)")
    r = post(collector, token, b"not gzip at all")
    assert r.status_code == 400 and r.json()["error"].startswith("body: not valid gzip")
    r = post(collector, token, gzip.compress(b"{}")[:-6])
    assert (r.status_code, r.json()["error"]) == (400, "body: truncated gzip stream")
    r = post(collector, token, b"{}", encoding="br")
    assert (r.status_code, r.json()["error"]) == (415, "Content-Encoding: 'br' is not supported, use gzip or identity")
    assert stored_windows(collector, dev.name) == 0


def test_oversize_bodies_and_gzip_bombs_are_413(collector, profile, demo_hash) -> None:
    dev, token = collector.device(profile, demo_hash)
    big = b"x" * (4 * 1024 * 1024 + 1)
    r = post(collector, token, big, encoding=None)
    assert (r.status_code, r.json()["error"]) == (413, f"body: {len(big)} bytes is more than the {4 * 1024 * 1024} allowed")
    bomb = gzip.compress(b"[" + b" " * (64 * 1024 * 1024) + b"]", 9)
    assert len(bomb) < 200_000
    r = post(collector, token, bomb)
    assert (r.status_code, r.json()["error"]) == (413, f"body: inflates to more than {32 * 1024 * 1024} bytes")
    assert stored_windows(collector, dev.name) == 0


def test_tokens_are_checked_and_devices_cannot_write_for_each_other(collector, profile, demo_hash) -> None:
    alice, alice_token = collector.device(profile, demo_hash)
    bob, bob_token = collector.device(profile, demo_hash)
    body = gz(alice.batch([alice.window(time.time() - 60)]))
    cases = [
        (None, "Authorization: expected 'Bearer <device token>'"),
        ("mlpk_wrong", "Authorization: unknown, wrong or revoked device token"),
        (bob_token, f"device: the token does not belong to device {alice.name!r}"),
    ]
    for token, message in cases:
        r = post(collector, token, body)
        assert (r.status_code, r.json()) == (401, {"error": message})
    admin.revoke_device(collector.db_url, alice.name)
    r = post(collector, alice_token, body)
    assert (r.status_code, r.json()) == (401, {"error": "Authorization: unknown, wrong or revoked device token"})
    assert stored_windows(collector, alice.name) == 0
    with collector.client() as cl:
        rows = {d["name"]: d for d in cl.get("/api/v1/devices").json()["devices"]}
    assert rows[alice.name]["status"] == "revoked"
    assert rows[bob.name]["status"] == "never"


def test_a_token_revoked_after_it_was_cached_is_refused_by_the_write(collector, profile, demo_hash) -> None:
    """The token -> device cache outlives a device's upload interval (minutes); revoking the
    device still refuses its next upload at once: the write transaction checks the token
    against the device's row again, with the same 401."""
    dev, token = collector.device(profile, demo_hash)
    assert post(collector, token, gz(dev.batch([dev.window(time.time() - 120)]))).status_code == 200
    admin.revoke_device(collector.db_url, dev.name)
    r = post(collector, token, gz(dev.batch([dev.window(time.time() - 60)])))
    assert (r.status_code, r.json()) == (401, {"error": "Authorization: unknown, wrong or revoked device token"})
    assert stored_windows(collector, dev.name) == 1


def test_overlapping_window_with_other_bounds_is_409(collector, profile, demo_hash) -> None:
    dev, token = collector.device(profile, demo_hash)
    now = time.time()
    w0, w1, w2 = (dev.window(now - 300 + 60 * i) for i in range(3))
    assert post(collector, token, gz(dev.batch([w0, w1]))).status_code == 200
    merged = merge_windows([w1, w2])  # seq 1-2: overlaps the stored seq 1
    r = post(collector, token, gz(dev.batch([w2.__class__.from_dict(merged.to_dict())])))
    assert (r.status_code, r.json()) == (
        409,
        {"error": f"windows[0]: seq 1-2 overlaps the stored window seq 1-1 of device {dev.name} with different bounds"},
    )
    assert stored_windows(collector, dev.name) == 2


def test_a_conflicting_model_under_a_known_hash_is_refused(collector, demo_hash) -> None:
    other = make_profile(n_numeric=2, seed=5)
    dev, token = collector.device(other, demo_hash)
    first, tok0 = collector.device(make_profile(), demo_hash)
    assert post(collector, tok0, gz(first.batch([first.window(time.time() - 60)]))).status_code == 200
    r = post(collector, token, gz(dev.batch([dev.window(time.time() - 60)])))
    assert (r.status_code, r.json()) == (
        422, {"error": f"models.{demo_hash[:12]}: conflicts with the stored model demo 1.0.0 (same content hash)"}
    )


def test_query_parameters_are_validated(collector) -> None:
    with collector.client() as cl:
        r = cl.get("/api/v1/fleet", params={"from": "yesterday"})
        assert (r.status_code, r.json()) == (422, {"error": "from: expected epoch seconds or an ISO 8601 time, got 'yesterday'"})
        r = cl.get("/api/v1/fleet", params={"from": "2026-01-02T00:00:00", "to": "2026-01-01T00:00:00"})
        assert (r.status_code, r.json()) == (422, {"error": "range: 'from' must be before 'to' and span at most 400 days"})
        r = cl.get("/api/v1/fleet", params={"hours": "-3"})
        assert r.status_code == 422 and r.json()["error"].startswith("hours: ")
        r = cl.get("/api/v1/devices/nobody")
        assert (r.status_code, r.json()) == (404, {"error": "device 'nobody' is not registered"})
        r = cl.get("/devices/nobody")
        assert r.status_code == 404 and "No device named" in r.text


def test_metrics_openapi_and_health(collector, profile, demo_hash) -> None:
    dev, token = collector.device(profile, demo_hash)
    assert post(collector, token, gz(dev.batch([dev.window(time.time() - 60)]))).status_code == 200
    with collector.client() as cl:
        text = cl.get("/metrics").text
        spec = cl.get("/openapi.json").json()
        health = cl.get("/healthz").json()
    from prometheus_client.parser import text_string_to_metric_families

    samples = {(s.name, tuple(sorted(s.labels.items()))): s.value
               for family in text_string_to_metric_families(text) for s in family.samples}
    assert samples[("mlpack_collector_ingest_requests_total", (("code", "200"),))] >= 1
    assert ("mlpack_fleet_device_last_seen_seconds", (("device", dev.name),)) in samples
    assert any(name == "mlpack_fleet_feature_psi" and dict(labels)["model"] == "demo" and dict(labels)["version"] == "1.0.0"
               for name, labels in samples)
    body = spec["paths"]["/api/v1/ingest"]["post"]["requestBody"]["content"]["application/json"]["schema"]
    assert {"schema", "device", "models", "windows", "audit", "outbox"} <= set(body["properties"])
    assert set(spec["paths"]["/api/v1/ingest"]["post"]["responses"]) >= {"200", "400", "401", "409", "413", "422", "503"}
    assert health["ok"] is True and health["schema_version"] == LATEST


def test_error_rate_jumps_are_alerted_for_the_fleet_and_the_device(collector, profile) -> None:
    h = model_hash("error-jump", "1.0.0")
    fleet = [collector.device(profile, h, seed=20 + i) for i in range(3)]
    now = time.time()
    hour = now // 3600 * 3600
    for k, (dev, token) in enumerate(fleet):
        early = [dev.window(hour - 2 * 3600 + 60 * i) for i in range(3)]
        dev.error_rate = 0.6 if k == 0 else 0.0
        late = [dev.window(hour + 60 * i) for i in range(3)]
        assert post(collector, token, gz(dev.batch(early + late, name="error-jump"))).status_code == 200
    with collector.client() as cl:
        alerts = [a for a in cl.get("/api/v1/alerts").json()["alerts"] if a["model"] == h and a["kind"] == "error_rate"]
    fleet_alert = [a for a in alerts if a["device"] is None]
    assert len(fleet_alert) == 1
    assert fleet_alert[0]["message"].startswith("error-jump 1.0.0: error rate jumped to ")
    assert fleet_alert[0]["message"].endswith("(earlier in range 0.0%)")
    assert [a["device"] for a in alerts if a["device"]] == [fleet[0][0].name]
    # the failing device is not "ok" in the table, the API or the page
    with collector.client() as cl:
        rows = {d["name"]: d for d in cl.get("/api/v1/devices").json()["devices"]}
        page = cl.get(f"/devices/{fleet[0][0].name}").text
    assert rows[fleet[0][0].name]["error_rate"] > 0.2 and rows[fleet[0][0].name]["status"] == "failing"
    assert [rows[d.name]["status"] for d, _ in fleet[1:]] == ["ok", "ok"]
    assert '<span class="status status-failing">failing</span>' in page


def test_short_ranges_chart_minutes_and_long_ranges_hours(collector, profile) -> None:
    h = model_hash("minutes", "1.0.0")
    dev, tok = collector.device(profile, h, seed=9)
    now = time.time()
    minute = now // 60 * 60
    starts = [minute - 60 * k for k in (50, 30, 29, 3)]  # four distinct minutes in the last hour
    assert post(collector, tok, gz(dev.batch([dev.window(t + 1) for t in sorted(starts)], name="minutes"))).status_code == 200
    with collector.client() as cl:
        short = cl.get(f"/api/v1/models/{h}", params={"hours": 6}).json()["series"]
        long = cl.get(f"/api/v1/models/{h}", params={"hours": 24}).json()["series"]
        mine = cl.get(f"/api/v1/devices/{dev.name}", params={"hours": 2}).json()["models"][0]
        page = cl.get(f"/models/{h}", params={"hours": 6}).text
    assert short["range"]["bucket"] == 60 and mine["range"]["bucket"] == 60
    assert [p["t"] for p in short["points"]] == sorted(int(t) for t in starts)
    assert [p["t"] for p in mine["points"]] == sorted(int(t) for t in starts)
    assert [p["requests"] for p in short["points"]] == [50, 50, 50, 50]
    assert long["range"]["bucket"] == 3600
    assert sum(p["requests"] for p in long["points"]) == 200 and len(long["points"]) <= 2
    assert short["total"]["requests"] == long["total"]["requests"] == 200
    assert "Throughput (requests per minute)" in page
