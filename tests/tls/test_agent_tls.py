"""The agent against a real HTTPS collector process: trust, refusals, nothing lost, no plain-HTTP fallback."""

from __future__ import annotations

import http.server
import json
import threading
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from click.testing import CliRunner, Result

from mlpack_edge.collector import admin, open_storage
from mlpack_edge.monitor_agent import cli as agent_cli
from mlpack_edge.monitor_agent.cli import SYNC_EXIT_CODES, agent
from mlpack_edge.monitor_agent.outbox import Outbox
from mlpack_edge.monitor_agent.transport import UrllibTransport
from tests.collector.process import Collector

from .conftest import Pki, record


class Obj:
    def __init__(self, state: Path) -> None:
        self.state_dir = state


NO_SSL_ENV = {"SSL_CERT_FILE": None, "SSL_CERT_DIR": None, "MLPACK_CA_FILE": None}


def sync(state: Path, *args: str | Path) -> Result:
    return CliRunner().invoke(agent, ["sync", *map(str, args)], obj=Obj(state), env=NO_SSL_ENV)


def pending(state: Path) -> int:
    with Outbox.open(state) as box:
        return box.accounting().pending


def stored(c: Collector, device: str) -> int:
    """Windows the collector's database holds for ``device``."""
    s = open_storage(c.db_url)
    try:
        return s.window_count(device)
    finally:
        s.close()


@pytest.fixture
def device(tmp_path: Path) -> Callable[[Collector, str], tuple[Path, Path]]:
    """``device(collector, name)``: a registered device's token file and a state folder with 4 windows."""

    def make(c: Collector, name: str, *certs: Path) -> tuple[Path, Path]:
        token_file = tmp_path / f"{name}.token"
        token_file.write_text(admin.add_device(c.db_url, name, certs) + "\n")
        state = tmp_path / f"state-{name}"
        record(state, 4)
        return token_file, state

    return make


def test_tls_exit_code_is_documented() -> None:
    assert SYNC_EXIT_CODES["tls"] == 6
    assert "\n6     TLS failure: " in (agent_cli.__doc__ or "")


def test_untrusted_until_the_fleet_ca_is_given_then_everything_is_delivered_once(
    pki: Pki, https_collector: Callable[..., Collector], device: Callable[..., tuple[Path, Path]]
) -> None:
    c = https_collector(pki.server)
    token, state = device(c, "press-07")
    base = ("--collector-url", c.url, "--device-id", "press-07", "--token-file", token)
    res = sync(state, *base)  # the system's roots only: this machine does not know the fleet CA
    assert res.exit_code == 6, res.output
    host = c.url.removeprefix("https://")
    assert res.stderr.splitlines()[-1].startswith(
        f"TLS failure talking to the collector, 4 windows kept ({host}: server certificate is not signed by a trusted"
        " CA: give the fleet's CA with --ca-file ("  # then OpenSSL's words, e.g. "unable to get local issuer certificate"
    )
    assert (pending(state), stored(c, "press-07")) == (4, 0)
    res = sync(state, *base, "--ca-file", pki.stranger_ca)  # trusting another CA does not help
    assert res.exit_code == 6 and "not signed by a trusted CA" in res.output
    res = sync(state, *base, "--ca-file", pki.ca)
    assert (res.exit_code, res.output) == (0, "delivered 4 windows and 0 audit events in 1 batches\n")
    assert (pending(state), stored(c, "press-07")) == (0, 4)
    res = sync(state, *base, "--ca-file", pki.ca)
    assert (res.exit_code, stored(c, "press-07")) == (3, 4)


@pytest.mark.parametrize(
    ("which", "reason"),
    [
        ("expired", "server certificate has expired (certificate has expired)"),
        ("wrong_host", "server certificate is for another host (IP address mismatch, certificate is not valid for '127.0.0.1'.)"),
    ],
)
def test_expired_and_wrong_host_certificates_keep_the_outbox(
    pki: Pki, https_collector: Callable[..., Collector], device: Callable[..., tuple[Path, Path]],
    which: str, reason: str,
) -> None:
    c = https_collector(getattr(pki, which))
    token, state = device(c, "press-07")
    res = sync(state, "--collector-url", c.url, "--device-id", "press-07", "--token-file", token, "--ca-file", pki.ca)
    assert res.exit_code == 6, res.output
    host = c.url.removeprefix("https://")
    assert res.stderr.splitlines()[-1] == f"TLS failure talking to the collector, 4 windows kept ({host}: {reason})"
    assert (pending(state), stored(c, "press-07")) == (4, 0)


def test_https_to_a_plain_http_port_is_a_tls_failure_not_a_fallback(tmp_path: Path, device: Callable[..., tuple[Path, Path]], pki: Pki) -> None:
    from tests.collector.process import start_collector, stop_collector

    c = start_collector("sqlite:///" + str(tmp_path / "plain.db"))
    try:
        token, state = device(c, "press-07")
        url = c.url.replace("http://", "https://")
        res = sync(state, "--collector-url", url, "--device-id", "press-07", "--token-file", token, "--ca-file", pki.ca)
        assert res.exit_code == 6, res.output
        assert "the collector did not answer in TLS: is it serving plain HTTP on this port?" in res.stderr
        assert (pending(state), stored(c, "press-07")) == (4, 0)
    finally:
        stop_collector(c)


def test_plain_http_to_another_machine_is_refused_at_upload_time(tmp_path: Path) -> None:
    state = tmp_path / "state"
    record(state, 1)
    token = tmp_path / "t"
    token.write_text("tok\n")
    res = sync(state, "--collector-url", "http://collector.example:8470", "--device-id", "d", "--token-file", token)
    assert (res.exit_code, res.output) == (
        1,
        "Error: collector_url http://collector.example:8470: plain HTTP to another machine sends the device token and"
        " telemetry unencrypted; use https:// or allow it explicitly with --allow-insecure-http\n",
    )
    assert pending(state) == 1
    # Allowed explicitly: it tries (and finds nothing there: .invalid never resolves).
    res = sync(state, "--collector-url", "http://collector.invalid:8470", "--device-id", "d", "--token-file", token,
               "--allow-insecure-http")
    assert res.exit_code == 4, res.output
    assert pending(state) == 1


def test_agent_config_save_copies_the_ca_and_checks_the_url(tmp_path: Path, pki: Pki) -> None:
    state = tmp_path / "state"
    runner = CliRunner()
    res = runner.invoke(agent, ["config", "--save", "--json", "--collector-url", "https://collector.example",
                                "--ca-file", str(pki.ca)], obj=Obj(state), env=NO_SSL_ENV)
    assert res.exit_code == 0, res.output
    shown = json.loads(res.output)
    assert shown["ca_file"] == str(state / "tls" / "ca.pem")
    assert (state / "tls" / "ca.pem").read_bytes() == pki.ca.read_bytes()
    assert json.loads((state / "agent.json").read_text())["ca_file"] == str(state / "tls" / "ca.pem")
    res = runner.invoke(agent, ["config", "--save", "--collector-url", "http://collector.example"], obj=Obj(state))
    assert res.exit_code == 1
    assert res.output.startswith("Error: collector_url http://collector.example: plain HTTP to another machine")
    assert json.loads((state / "agent.json").read_text())["collector_url"] == "https://collector.example"  # unchanged
    res = runner.invoke(agent, ["config", "--save", "--ca-file", str(pki.server.key)], obj=Obj(state))
    assert (res.exit_code, res.output) == (1, f"Error: --ca-file {pki.server.key}: no PEM certificate in it\n")


class _Redirector(http.server.BaseHTTPRequestHandler):
    def do_POST(self) -> None:  # noqa: N802
        self.send_response(302)
        self.send_header("Location", "http://127.0.0.1:9/api/v1/ingest")
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def redirector() -> Iterator[str]:
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Redirector)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}/api/v1/ingest"
    server.shutdown()
    server.server_close()


def test_redirects_are_never_followed(redirector: str) -> None:
    reply = UrllibTransport(timeout=5).send(redirector, b"{}", {"Authorization": "Bearer secret"})
    assert (reply.status, reply.headers["location"]) == (302, "http://127.0.0.1:9/api/v1/ingest")
