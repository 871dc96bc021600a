"""The collector as a service people run: ``/metrics`` read by prometheus_client's own
parser, per-device gauges, the shipped Grafana dashboard and alert rules against real
series, ``/docs`` with no network, a typed OpenAPI document with its bearer scheme, and
the systemd unit's command actually serving."""

from __future__ import annotations

import json
import os
import re
import shlex
import signal
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from click.testing import CliRunner
from prometheus_client.parser import text_string_to_metric_families

from mlpack_edge.cli import main
from mlpack_edge.collector import admin
from tests._proc import start_and_wait
from tests._services import require_chromium
from tests.collector.process import Collector, start_collector, stop_collector
from tests.collector.sim import SimDevice, gz, make_profile, model_hash

REPO = Path(__file__).resolve().parents[2]
MONITORING = REPO / "examples" / "monitoring"


def batch(dev: SimDevice, windows: int, now: float) -> bytes:
    return gz(dev.batch([dev.window(now - 3 * 3600 + 600 * k) for k in range(windows)]))


def post(c: Collector, body: bytes, token: str) -> httpx.Response:
    return httpx.post(f"{c.url}/api/v1/ingest", content=body, timeout=30,
                      headers={"Authorization": f"Bearer {token}", "Content-Encoding": "gzip"})


@pytest.fixture(scope="module")
def fleet(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Collector, dict[str, Any]]]:
    """A collector with a steady device, a drifting one and one that never uploaded."""
    c = start_collector("sqlite:///" + str(tmp_path_factory.mktemp("service") / "collector.db"))
    try:
        profile, h, now = make_profile(), model_hash("demo", "1.0.0"), time.time()
        steady, t1 = c.device(profile, h, seed=1)
        drifting, t2 = c.device(profile, h, seed=2, shift=2.5)
        c.device(profile, h, seed=3)  # registered, silent
        assert post(c, batch(steady, 12, now), t1).status_code == 200
        shifted = batch(drifting, 12, now)
        assert post(c, shifted, t2).status_code == 200
        assert post(c, shifted, t2).status_code == 200  # a replay: 12 duplicates
        assert post(c, batch(steady, 1, now), "mlpk_not-a-token").status_code == 401
        yield c, {"steady": steady.name, "drifting": drifting.name}
    finally:
        stop_collector(c)


def scrape(c: Collector) -> tuple[dict[str, Any], dict[tuple[str, tuple[tuple[str, str], ...]], float], str]:
    r = httpx.get(f"{c.url}/metrics", timeout=30)
    assert r.status_code == 200
    families = {f.name: f for f in text_string_to_metric_families(r.text)}
    samples = {(s.name, tuple(sorted(s.labels.items()))): s.value for f in families.values() for s in f.samples}
    return families, samples, r.headers["content-type"]


def test_metrics_parse_with_prometheus_client_and_carry_per_device_status_and_drift(fleet) -> None:
    c, names = fleet
    families, samples, content_type = scrape(c)
    assert content_type.startswith("text/plain; version=")
    assert families["mlpack_collector_ingest_requests"].type == "counter"
    assert samples[("mlpack_collector_ingest_requests_total", (("code", "200"),))] == 3
    assert samples[("mlpack_collector_ingest_requests_total", (("code", "401"),))] == 1
    assert samples[("mlpack_collector_ingest_windows_total", (("result", "stored"),))] == 24
    assert samples[("mlpack_collector_ingest_windows_total", (("result", "duplicate"),))] == 12
    devices = {d["name"]: d for d in httpx.get(f"{c.url}/api/v1/devices", timeout=30).json()["devices"]}
    assert devices[names["drifting"]]["status"] == "drift"
    for name, row in devices.items():
        states = {s: samples[("mlpack_fleet_device_status", (("device", name), ("status", s)))]
                  for s in ("revoked", "never", "silent", "drift", "warn", "ok", "idle")}
        assert states == {s: float(s == row["status"]) for s in states}, name  # exactly one 1 per device
        worst = [(dict(k[1]), v) for k, v in samples.items()
                 if k[0] == "mlpack_fleet_device_drift_psi" and dict(k[1])["device"] == name]
        if row["worst"] is None:
            assert worst == []
        else:
            assert worst == [({"device": name, "feature": row["worst"]["feature"], "model": "demo", "version": "1.0.0"},
                              row["worst"]["psi"])]
    assert samples[("mlpack_fleet_devices", (("status", "drift"),))] == 1
    assert samples[("mlpack_fleet_devices", (("status", "never"),))] == 1


_METRIC = re.compile(r"\b(mlpack_[a-z_]+)")
_BY = re.compile(r"by \(([^)]*)\)")
_MATCHER = re.compile(r"([a-z_]+)=~?\"")


def _check_queries(exprs: list[str], samples: dict[tuple[str, tuple[tuple[str, str], ...]], float]) -> None:
    labels_of: dict[str, set[str]] = {}
    for name, labels in samples:
        labels_of.setdefault(name, set()).update(k for k, _ in labels)
    for expr in exprs:
        metrics = _METRIC.findall(expr)
        assert metrics, expr
        for m in metrics:
            assert m in labels_of, f"{expr}: no series {m} in the collector's /metrics"
        known = set().union(*(labels_of[m] for m in metrics)) | {"instance", "job"}
        used = {x.strip() for group in _BY.findall(expr) for x in group.split(",") if x.strip()}
        used |= set(_MATCHER.findall(expr))
        assert used <= known, f"{expr}: labels {used - known} are not on {metrics}"


def test_grafana_dashboard_and_alert_rules_query_series_the_collector_exports(fleet) -> None:
    c, _ = fleet
    _, samples, _ = scrape(c)
    dashboard = json.loads((MONITORING / "grafana-dashboard.json").read_text())
    exprs = [t["expr"] for p in dashboard["panels"] for t in p["targets"]]
    assert len(exprs) >= 10 and dashboard["uid"] == "mlpack-fleet"
    assert dashboard["templating"]["list"][0]["query"] == "label_values(mlpack_fleet_device_status, device)"
    _check_queries([e.replace("$device", ".*") for e in exprs], samples)
    rules = re.findall(r"^\s+expr: (.+)$", (MONITORING / "prometheus-alerts.yml").read_text(), re.M)
    assert len(rules) == 3
    _check_queries(rules, samples)


def test_docs_load_every_asset_from_the_collector_itself(fleet) -> None:
    c, _ = fleet
    with httpx.Client(base_url=c.url, timeout=30) as client:
        for page in ("/docs", "/redoc"):
            html = client.get(page).text
            urls = re.findall(r"""(?:src|href)=["']([^"']+)["']""", html)
            assert urls and all(u.startswith("/") and not u.startswith("//") for u in urls), (page, urls)
            assert "http://" not in html and "https://" not in html, page
            for u in urls:
                r = client.get(u)
                assert r.status_code == 200 and len(r.content) > 1000, u
        assert '"validatorUrl": null' in client.get("/docs").text


def test_openapi_has_typed_replies_documented_errors_and_the_bearer_scheme(fleet) -> None:
    c, _ = fleet
    with httpx.Client(base_url=c.url, timeout=30) as client:
        doc = client.get("/openapi.json").json()
        trace = client.request("TRACE", "/api/v1/fleet")
        # a path served by two routes (list and publish) allows both methods, not the first route's only
        options = client.request("OPTIONS", "/api/v1/releases")
    assert doc["components"]["securitySchemes"]["deviceToken"] == {
        "type": "http", "scheme": "bearer",
        "description": "A device token from `mlpack collector add-device NAME` (shown once; stored as a hash).",
    }
    assert doc["paths"]["/api/v1/ingest"]["post"]["security"] == [{"deviceToken": []}]
    schemas = doc["components"]["schemas"]
    for path, ops in doc["paths"].items():
        if "get" not in ops or not path.startswith(("/api/", "/healthz")):
            continue
        if path == "/api/v1/releases/{content_hash}/bundle":  # a file download (application/gzip, Range)
            assert "application/gzip" in ops["get"]["responses"]["200"]["content"]
            continue
        if path == "/api/v1/runtimes/{runtime_sha256}":  # a file download too (a frozen runtime, Range)
            assert "application/octet-stream" in ops["get"]["responses"]["200"]["content"]
            continue
        reply = ops["get"]["responses"]["200"]["content"]["application/json"]["schema"]
        target = schemas[reply["$ref"].rsplit("/", 1)[1]]
        assert target["type"] == "object" and target["properties"], path
        if "{" in path:
            assert ops["get"]["responses"]["404"]["content"]["application/json"]["schema"] == {
                "$ref": "#/components/schemas/ErrorReply"}
    device_row = schemas["DeviceRow"]["properties"]
    assert set(device_row["status"]["enum"]) == {"revoked", "never", "silent", "failing", "drift", "warn", "ok", "idle"}
    assert (trace.status_code, trace.headers.get("allow"), trace.json()) == (405, "GET", {"error": "Method Not Allowed"})
    assert (options.status_code, options.headers.get("allow")) == (405, "GET, POST")


def test_install_service_writes_a_unit_whose_command_serves_the_collector(tmp_path: Path) -> None:
    units, data = tmp_path / "units", tmp_path / "data"
    r = CliRunner().invoke(main, ["collector", "install-service", "--data-dir", str(data), "--unit-dir", str(units),
                                  "--port", "0", "--user", "mlpack", "--no-enable"])
    assert r.exit_code == 0, r.output
    unit = units / "mlpack-collector.service"
    assert r.stdout.startswith(f"wrote {unit} (mode 0600")
    assert unit.stat().st_mode & 0o777 == 0o600
    text = unit.read_text()
    fields = dict(line.split("=", 1) for line in text.splitlines() if "=" in line and not line.startswith("#"))
    assert fields["User"] == "mlpack" and fields["Restart"] == "on-failure" and fields["KillSignal"] == "SIGTERM"
    env_name, env_value = shlex.split(fields["Environment"])[0].split("=", 1)
    db_url = "sqlite:///" + str((data / "collector.db").resolve())
    assert (env_name, env_value) == ("MLPACK_COLLECTOR_DB", db_url)
    command = shlex.split(fields["ExecStart"].replace("%%", "%").replace("$$", "$"))
    assert command[1:5] == ["-m", "mlpack_edge.cli", "collector", "serve"] and db_url not in fields["ExecStart"]
    # What systemd would run, with the environment the unit gives it.
    started = start_and_wait(command, "listening on ", stream="stdout", stderr=subprocess.STDOUT,
                             env={**os.environ, env_name: env_value})
    assert started.line is not None, started.output()
    try:
        assert f"(database {data / 'collector.db'})" in started.line
        token = admin.add_device(env_value, "svc-01")
        dev = SimDevice("svc-01", make_profile(), model_hash("demo", "1.0.0"))
        url = started.line.split()[2]
        reply = httpx.post(f"{url}/api/v1/ingest", content=gz(dev.batch([dev.window(time.time() - 60)])), timeout=30,
                           headers={"Authorization": f"Bearer {token}", "Content-Encoding": "gzip"})
        assert reply.json() == {"stored": [0], "duplicates": []}
    finally:
        started.proc.send_signal(signal.SIGTERM)
        code, output = started.finish()
    # uvicorn ends by re-raising the SIGTERM it handled, once queued batches are written:
    # systemd counts a SIGTERM death as a clean stop.
    assert code in (0, -signal.SIGTERM), output
    assert "Traceback" not in output


@pytest.mark.slow
@pytest.mark.browser
def test_docs_render_in_chromium_with_no_network(fleet, tmp_path: Path) -> None:
    c, _ = fleet
    binary = require_chromium()
    # Every host name but 127.0.0.1 fails to resolve: a CDN script would not load.
    proc = subprocess.run(
        [binary, "--headless", "--no-sandbox", "--disable-gpu", "--no-first-run", "--disable-background-networking",
         "--host-resolver-rules=MAP * ~NOTFOUND, EXCLUDE 127.0.0.1", f"--user-data-dir={tmp_path / 'chrome'}",
         "--virtual-time-budget=15000", "--dump-dom", f"{c.url}/docs"],
        capture_output=True, text=True, timeout=120,
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    dom = proc.stdout
    assert 'class="swagger-ui"' in dom, dom[:2000]
    for path in ("/api/v1/ingest", "/api/v1/fleet", "/api/v1/devices/{name}", "/metrics"):
        assert f'data-path="{path}"' in dom, path


@pytest.mark.parametrize(("device_auth", "security"), [
    ("token", [{"deviceToken": []}]),
    ("cert", [{"deviceCertificate": []}]),
    ("both", [{"deviceToken": [], "deviceCertificate": []}]),
])
def test_ingest_security_follows_device_auth(tmp_path: Path, device_auth: str, security: list[dict[str, list[str]]]) -> None:
    from mlpack_edge.collector import CollectorConfig, create_app, open_storage

    url = "sqlite:///" + str(tmp_path / "c.db")
    storage = open_storage(url)
    try:
        doc = create_app(storage, CollectorConfig(db_url=url, device_auth=device_auth)).openapi()
    finally:
        storage.close()
    assert doc["paths"]["/api/v1/ingest"]["post"]["security"] == security
    assert doc["components"]["securitySchemes"]["deviceCertificate"]["type"] == "mutualTLS"
