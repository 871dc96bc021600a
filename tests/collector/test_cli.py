"""``mlpack collector`` administration commands and ``serve`` start-up errors."""

from __future__ import annotations

import hashlib
import json
import re
import socket
import subprocess
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner

from mlpack_edge.cli import main
from mlpack_edge.collector import open_storage
from mlpack_edge.collector.auth import hash_token
from mlpack_edge.runtime.manifest import write_bundle
from tests.collector.sim import make_profile


def run(*args: str):
    return CliRunner().invoke(main, ["collector", *args], catch_exceptions=False)


def make_bundle(folder: Path, version: str = "1.0.0") -> Path:
    profile = make_profile()
    manifest = {
        "name": "demo", "version": version, "task": "binary",
        "input": {"layout": "matrix", "features": [{"name": f"x{i}", "kind": "numeric", "nullable": False} for i in range(3)]},
        "output": {"classes": [0, 1], "label": "label", "probabilities": "probabilities"},
        "onnx": {"file": "model.onnx", "opset": {"": 18}, "inputs": [{"name": "X", "dtype": "float32", "width": 3}]},
        "drift": {"psi_warn": 0.05, "psi_drift": 0.3},
    }
    files = {"model.onnx": b"not really onnx", "profile.json": json.dumps(profile.to_dict()).encode()}
    return write_bundle(folder, files, manifest)


def test_add_device_prints_a_token_once_and_stores_only_its_hash(tmp_path: Path) -> None:
    result = run("add-device", "press-07", "--data-dir", str(tmp_path))
    assert result.exit_code == 0, result.output
    token = result.stdout.strip()
    assert re.fullmatch(r"mlpk_[A-Za-z0-9_-]{43}", token)
    assert "store this token now, it is not shown again" in result.stderr
    stored = b"".join(p.read_bytes() for p in tmp_path.glob("collector.db*"))
    assert stored and token.encode() not in stored
    s = open_storage("sqlite:///" + str(tmp_path / "collector.db"))
    try:
        assert s.device_for_token(hash_token(token)) == "press-07"
    finally:
        s.close()

    again = run("add-device", "press-07", "--data-dir", str(tmp_path))
    assert again.exit_code == 1
    assert again.stderr == "Error: device 'press-07' already exists (revoke-device and add it under a new name)\n"


def test_list_and_revoke_devices(tmp_path: Path) -> None:
    d = ["--data-dir", str(tmp_path)]
    assert run("list-devices", *d).stdout == "no devices registered (add one with: mlpack collector add-device NAME)\n"
    run("add-device", "a", *d)
    run("add-device", "b", *d)
    assert run("revoke-device", "a", *d).stdout == "device a revoked\n"
    lines = run("list-devices", *d).stdout.splitlines()
    assert lines[0].split() == ["DEVICE", "STATE", "LAST", "SEEN", "(UTC)", "MODEL"]
    assert lines[1].split() == ["a", "revoked", "never", "-"]
    assert lines[2].split() == ["b", "active", "never", "-"]
    missing = run("revoke-device", "zz", *d)
    assert (missing.exit_code, missing.stderr) == (1, "Error: device 'zz' is not registered (see list-devices)\n")
    listed = run("list-devices", "--json", *d)
    assert listed.exit_code == 0, listed.output
    devices = json.loads(listed.stdout)["devices"]
    assert [(x["name"], x["revoked"], x["last_seen"], x["last_model"]) for x in devices] == [
        ("a", True, None, None), ("b", False, None, None)]
    assert devices[0]["revoked_at"] >= devices[0]["created_at"] > 0 and devices[1]["revoked_at"] is None


def test_list_devices_json_prints_errors_as_json(tmp_path: Path) -> None:
    bad = run("list-devices", "--json", "--db", "mysql://x")
    message = "--db: unsupported URL scheme in 'mysql', expected postgresql:// or sqlite:///"
    assert (bad.exit_code, bad.stderr) == (1, f"Error: {message}\n")
    assert json.loads(bad.stdout) == {"ok": False, "error": {"type": "CollectorError", "message": message}}


def test_bad_device_name_and_db_url(tmp_path: Path) -> None:
    bad = run("add-device", "no spaces", "--data-dir", str(tmp_path))
    assert bad.exit_code == 1
    assert bad.stderr.startswith("Error: device name 'no spaces' is not allowed")
    url = run("list-devices", "--db", "mysql://x")
    assert (url.exit_code, url.stderr) == (1, "Error: --db: unsupported URL scheme in 'mysql', expected postgresql:// or sqlite:///\n")


def test_add_model_from_a_bundle(tmp_path: Path) -> None:
    bundle = make_bundle(tmp_path / "demo-1.0.0")
    d = ["--data-dir", str(tmp_path / "data")]
    first = run("add-model", str(bundle), *d)
    assert first.exit_code == 0, first.output
    h = hashlib.sha256((bundle / "manifest.json").read_bytes()).hexdigest()
    assert first.stdout == f"model demo 1.0.0 ({h[:12]}) added\n"
    assert run("add-model", str(bundle), *d).stdout == f"model demo 1.0.0 ({h[:12]}) already known\n"
    s = open_storage("sqlite:///" + str(tmp_path / "data" / "collector.db"))
    try:
        m = s.get_model(h)
        assert m is not None and m.source == "bundle"
        assert (m.thresholds.psi_warn, m.thresholds.psi_drift) == (0.05, 0.3)
        assert [f["name"] for f in m.profile["features"]] == ["x0", "x1", "x2", "colour"]
    finally:
        s.close()


def test_add_model_refuses_a_tampered_bundle(tmp_path: Path) -> None:
    bundle = make_bundle(tmp_path / "demo-1.0.0")
    (bundle / "profile.json").write_text("{}")
    r = run("add-model", str(bundle), "--data-dir", str(tmp_path / "data"))
    assert r.exit_code == 1
    assert r.stderr == f"Error: {bundle}: file profile.json does not match its sha256 in the manifest (tampered or corrupt)\n"


def test_serve_reports_a_busy_port_in_one_line(tmp_path: Path) -> None:
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        proc = subprocess.run(
            [sys.executable, "-m", "mlpack_edge.cli", "collector", "serve", "--data-dir", str(tmp_path), "--port", str(port)],
            capture_output=True, text=True, timeout=60,
        )
    assert proc.returncode == 1
    assert proc.stderr.startswith(f"Error: cannot listen on 127.0.0.1:{port} (")
    assert "Traceback" not in proc.stderr


@pytest.mark.parametrize("args", [["serve", "--port", "70000"], ["add-device"]])
def test_usage_errors_exit_2(args: list[str]) -> None:
    assert run(*args).exit_code == 2


def test_webhooks_add_list_remove_and_bad_input(tmp_path: Path) -> None:
    d = ["--data-dir", str(tmp_path)]
    assert run("list-webhooks", *d).stdout == "no webhooks (add one with: mlpack collector add-webhook URL)\n"
    (tmp_path / "secret").write_text("a-secret\n")
    added = run("add-webhook", "https://ci.example.org/hooks/retrain?token=t0ps3cret", "--format", "alertmanager",
                "--secret-file", str(tmp_path / "secret"), *d)
    assert added.exit_code == 0, added.output
    assert added.stdout == ("webhook 1 added: https://ci.example.org/hooks/retrain?… (alertmanager, signed "
                            "(X-Mlpack-Signature)); running collectors use it from their next alert\n")
    assert run("add-webhook", "http://127.0.0.1:9000/a", *d).exit_code == 0
    lines = run("list-webhooks", *d).stdout.splitlines()
    assert [ln.split() for ln in lines] == [
        ["ID", "FORMAT", "SIGNED", "STATE", "SENT", "PEND", "FAIL", "URL"],
        ["1", "alertmanager", "yes", "active", "0", "0", "0", "https://ci.example.org/hooks/retrain?…"],
        ["2", "json", "no", "active", "0", "0", "0", "http://127.0.0.1:9000/a"],
    ]
    assert "t0ps3cret" not in run("list-webhooks", "--json", *d).stdout
    assert run("remove-webhook", "1", *d).stdout == "webhook 1 removed\n"
    again = run("remove-webhook", "1", *d)
    assert (again.exit_code, again.stderr) == (1, "Error: webhook 1: no such active webhook (see list-webhooks)\n")
    hooks = json.loads(run("list-webhooks", "--json", *d).stdout)["webhooks"]
    assert [(h["id"], h["signed"], h["removed_at"] is not None) for h in hooks] == [(1, True, True), (2, False, False)]

    bad = run("add-webhook", "ftp://example.org/x", *d)
    assert (bad.exit_code, bad.stderr) == (1, "Error: webhook URL 'ftp://example.org/x': expected http://HOST[:PORT]/PATH or https://…\n")
    (tmp_path / "empty").write_text("\n")
    empty = run("add-webhook", "http://127.0.0.1:9000/a", "--secret-file", str(tmp_path / "empty"), *d)
    assert (empty.exit_code, empty.stderr) == (1, f"Error: --secret-file {tmp_path / 'empty'}: expected one line of 1 to 4096 characters\n")
    usage = run("add-webhook", "http://127.0.0.1:9000/a", "--format", "slack", *d)
    assert usage.exit_code == 2 and "'slack' is not one of 'json', 'alertmanager'" in usage.stderr
    assert len(json.loads(run("list-webhooks", "--json", *d).stdout)["webhooks"]) == 2  # nothing half-added


def test_set_webhooks_from_a_file_adds_keeps_and_removes(tmp_path: Path) -> None:
    d = ["--data-dir", str(tmp_path)]
    (tmp_path / "ci.secret").write_text("ci-secret\n")
    conf = tmp_path / "webhooks.toml"
    conf.write_text('[[webhook]]\nurl = "https://ci.example.org/hooks/retrain"\nformat = "alertmanager"\n'
                    'secret_file = "ci.secret"\n\n[[webhook]]\nurl = "http://127.0.0.1:9000/a"\n')
    assert run("add-webhook", "http://127.0.0.1:9999/old", *d).exit_code == 0
    first = run("set-webhooks", str(conf), *d)
    assert (first.exit_code, first.stdout) == (0, "webhooks: kept none; added 2, 3; removed 1\n")
    again = run("set-webhooks", str(conf), *d)
    assert again.stdout == "webhooks: kept 2, 3; added none; removed none\n"  # idempotent
    (tmp_path / "ci.secret").write_text("rotated\n")
    rotated = run("set-webhooks", str(conf), *d)
    assert rotated.stdout == "webhooks: kept 3; added 4; removed 2\n"  # a new secret is a new webhook
    hooks = json.loads(run("list-webhooks", "--json", *d).stdout)["webhooks"]
    assert [(h["id"], h["format"], h["signed"]) for h in hooks if h["removed_at"] is None] == [
        (3, "json", False), (4, "alertmanager", True)]

    for text, message in (
        ('[[webhook]]\nurl = "ftp://x/y"\n', "webhook 1: webhook URL 'ftp://x/y': expected"),
        ('[[webhook]]\nurl = "http://a/b"\nformat = "slack"\n', "webhook 1: format 'slack': expected one of json, alertmanager"),
        ('[[webhook]]\nurl = "http://a/b"\nsecret_file = "nope"\n', "webhook 1: secret_file "),
        ('[[webhook]]\nurl = "http://a/b"\nretries = 3\n', "webhook 1: unknown key 'retries'"),
        ('[[webhook]]\nformat = "json"\n', "webhook 1: 'url' is required"),
        ("[[webhook]\n", "not valid TOML"),
        ('hooks = 1\n', "unknown key 'hooks'; expected [[webhook]] tables"),
    ):
        conf.write_text(text)
        bad = run("set-webhooks", str(conf), *d)
        assert bad.exit_code == 1 and bad.stderr.startswith(f"Error: {conf}: ") and message in bad.stderr, bad.stderr
        assert len(bad.stderr.splitlines()) == 1
    after = json.loads(run("list-webhooks", "--json", *d).stdout)["webhooks"]
    assert after == hooks  # nothing changed by a bad file


def test_alerts_lists_the_history_with_deliveries(tmp_path: Path) -> None:
    from mlpack_edge.collector.storage import Firing

    d = ["--data-dir", str(tmp_path)]
    assert run("alerts", *d).stdout == "no alerts recorded\n"
    s = open_storage("sqlite:///" + str(tmp_path / "collector.db"))
    try:
        s.add_webhook("http://127.0.0.1:9/a", "json", None, 1.0)
        silent = Firing("silent", "warning", "edge-1: silent for 2 h", device="edge-1")
        drift = Firing("drift", "critical", "edge-2: x0 drifted", model="a" * 64, device="edge-2", feature="x0")
        s.record_alerts([silent], 1_800_000_000.0, lambda h, a, e: "{}")
        s.record_alerts([drift], 1_800_000_600.0, lambda h, a, e: "{}")  # silent resolves, drift opens
        (due,) = [x for x in s.due_deliveries(1_800_000_700.0) if x.event == "firing" and x.alert == 1]
        assert s.claim_delivery(due.id, 1_800_000_700.0, 1_800_000_710.0)
        s.finish_delivery(due.id, 1_800_000_701.0, 200, None, None)
    finally:
        s.close()
    lines = run("alerts", *d).stdout.splitlines()
    assert lines[0].split() == ["ID", "KIND", "STATE", "OPENED", "(UTC)", "RESOLVED", "(UTC)", "SENT", "MESSAGE"]
    assert lines[1].split() == ["2", "drift", "open", "2027-01-15", "08:10:00", "-", "0/1", "edge-2:", "x0", "drifted"]
    assert lines[2].split() == ["1", "silent", "resolved", "2027-01-15", "08:00:00", "2027-01-15", "08:10:00", "1/2",
                                "edge-1:", "silent", "for", "2", "h"]
    only_open = json.loads(run("alerts", "--state", "open", "--json", *d).stdout)["alerts"]
    assert [(a["id"], a["kind"], a["state"], a["feature"], [x["event"] for x in a["deliveries"]]) for a in only_open] == [
        (2, "drift", "open", "x0", ["firing"])]
