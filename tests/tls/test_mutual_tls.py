"""The collector over HTTPS with device certificates: real processes, the agent's real transport."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest
from click.testing import CliRunner, Result

from mlpack_edge.cli import main
from mlpack_edge.collector import admin, open_storage
from mlpack_edge.errors import CollectorError
from mlpack_edge.monitor_agent.cli import agent
from tests.collector.process import Collector

from .conftest import Pair, Pki, record

NO_SSL_ENV = {"SSL_CERT_FILE": None, "SSL_CERT_DIR": None, "MLPACK_CA_FILE": None}


class Obj:
    def __init__(self, state: Path) -> None:
        self.state_dir = state


def sync(c: Collector, state: Path, device: str, pki: Pki, cert: Pair | None = None, token: Path | None = None) -> Result:
    args = ["sync", "--collector-url", c.url, "--device-id", device, "--ca-file", str(pki.ca)]
    if cert is not None:
        args += ["--client-cert", str(cert.cert), "--client-key", str(cert.key)]
    if token is not None:
        args += ["--token-file", str(token)]
    return CliRunner().invoke(agent, args, obj=Obj(state), env=NO_SSL_ENV)


def stored(c: Collector, device: str) -> int:
    s = open_storage(c.db_url)
    try:
        return s.window_count(device)
    finally:
        s.close()


def states(tmp_path: Path, *names: str) -> dict[str, Path]:
    out = {}
    for name in names:
        out[name] = tmp_path / f"state-{name}"
        record(out[name], 3)
    return out


@pytest.fixture(autouse=True)
def _private_keys_0600(pki: Pki) -> None:
    for pair in (pki.device_a, pki.device_b, pki.stranger):
        pair.key.chmod(0o600)


def last_line(res: Result) -> str:
    return res.stderr.splitlines()[-1]


def test_certificate_auth_accepts_the_known_device_and_refuses_every_other_certificate(
    tmp_path: Path, pki: Pki, https_collector: Callable[..., Collector]
) -> None:
    c = https_collector(pki.server, "--tls-client-ca", str(pki.ca), "--device-auth", "cert")
    admin.add_device(c.db_url, "device-a", [pki.device_a.cert])
    admin.add_device(c.db_url, "device-c")  # a device with a token only
    st = states(tmp_path, "a", "b", "stranger", "none", "claim")

    res = sync(c, st["a"], "device-a", pki, pki.device_a)  # no token at all: the certificate is the credential
    assert (res.exit_code, res.output) == (0, "delivered 3 windows and 0 audit events in 1 batches\n")
    assert stored(c, "device-a") == 3

    res = sync(c, st["b"], "device-b", pki, pki.device_b)  # issued by the fleet CA, never registered
    assert res.exit_code == 5
    assert last_line(res).startswith("collector refused the upload, 3 windows kept (HTTP 401: client certificate ")
    assert last_line(res).endswith("…: not registered to any device (mlpack collector add-device NAME --cert FILE))")

    res = sync(c, st["stranger"], "device-a", pki, pki.stranger)  # same subject, another CA: the handshake fails
    assert res.exit_code == 6, res.output
    host = c.url.removeprefix("https://")
    assert last_line(res) == (
        f"TLS failure talking to the collector, 3 windows kept ({host}: the collector refused the TLS handshake: client"
        " certificate not accepted (is it issued by the CA the collector trusts, and still valid?))"
    )

    res = sync(c, st["none"], "device-c", pki, token=_token_file(tmp_path, c, "device-d"))  # token, no certificate
    assert (res.exit_code, last_line(res)) == (5, "collector refused the upload, 3 windows kept (HTTP 401: client "
                                                   "certificate: this collector authenticates devices by TLS client "
                                                   "certificate and none was presented)")

    res = sync(c, st["claim"], "device-c", pki, pki.device_a)  # device-a's certificate, another device's name
    assert (res.exit_code, last_line(res)) == (5, "collector refused the upload, 3 windows kept (HTTP 401: device: "
                                                   "the client certificate does not belong to device 'device-c')")
    assert [stored(c, d) for d in ("device-a", "device-b", "device-c")] == [3, 0, 0]

    admin.revoke_device(c.db_url, "device-a")
    record(st["a"], 2)
    res = sync(c, st["a"], "device-a", pki, pki.device_a)
    assert res.exit_code == 5
    assert "device 'device-a' is revoked" in last_line(res)
    assert stored(c, "device-a") == 3


def _token_file(tmp_path: Path, c: Collector, name: str) -> Path:
    path = tmp_path / f"{name}.token"
    path.write_text(admin.add_device(c.db_url, name) + "\n")
    return path


def test_both_needs_the_token_and_the_certificate_of_the_same_device(
    tmp_path: Path, pki: Pki, https_collector: Callable[..., Collector]
) -> None:
    c = https_collector(pki.server, "--tls-client-ca", str(pki.ca), "--device-auth", "both")
    token_a = tmp_path / "a.token"
    token_a.write_text(admin.add_device(c.db_url, "device-a", [pki.device_a.cert]))
    admin.add_device(c.db_url, "device-b", [pki.device_b.cert])
    st = states(tmp_path, "a")
    res = sync(c, st["a"], "device-a", pki, pki.device_b, token_a)
    assert (res.exit_code, last_line(res)) == (5, "collector refused the upload, 3 windows kept (HTTP 401: client "
                                                   "certificate: belongs to device 'device-b', not to the token's device)")
    res = sync(c, st["a"], "device-a", pki, None, token_a)
    assert res.exit_code == 5 and "none was presented" in last_line(res)
    res = sync(c, st["a"], "device-a", pki, pki.device_a, token_a)
    assert (res.exit_code, stored(c, "device-a")) == (0, 3)


def test_token_fleets_keep_working_when_the_collector_asks_for_certificates(
    tmp_path: Path, pki: Pki, https_collector: Callable[..., Collector]
) -> None:
    c = https_collector(pki.server, "--tls-client-ca", str(pki.ca))  # --device-auth token (default)
    st = states(tmp_path, "t")
    res = sync(c, st["t"], "device-t", pki, token=_token_file(tmp_path, c, "device-t"))
    assert (res.exit_code, stored(c, "device-t")) == (0, 3)


def test_add_device_and_add_cert_refusals_are_one_line(tmp_path: Path, pki: Pki) -> None:
    db = "sqlite:///" + str(tmp_path / "c.db")
    runner = CliRunner()

    def run(*args: str | Path) -> Result:
        return runner.invoke(main, ["collector", *map(str, args), "--db", db])

    res = run("add-device", "device-a", "--cert", pki.device_a.cert)
    assert res.exit_code == 0, res.output
    assert res.stdout.startswith("mlpk_") and len(res.stdout.splitlines()) == 1
    assert res.stderr.splitlines()[0].startswith("client certificate CN=device-a,O=mlpack fleet (sha256 ")
    [cert] = admin.device_certs(db, "device-a")
    assert cert.subject == "CN=device-a,O=mlpack fleet" and len(cert.fingerprint) == 64
    cases = [
        (("add-device", "device-x", "--cert", tmp_path / "missing.pem"),
         f"Error: --cert {tmp_path / 'missing.pem'}: cannot read (No such file or directory)"),
        (("add-device", "device-x", "--cert", pki.device_a.key),
         f"Error: --cert {pki.device_a.key}: not a PEM or DER X.509 certificate"),
        (("add-device", "device-x", "--cert", pki.device_a.cert),
         f"Error: certificate {cert.fingerprint[:16]}… (CN=device-a,O=mlpack fleet) is already registered to device 'device-a'"),
        (("add-cert", "nobody", pki.device_b.cert), "Error: device 'nobody' is not registered (see list-devices)"),
    ]
    for args, message in cases:
        res = run(*args)
        assert (res.exit_code, res.output) == (1, message + "\n"), args
    res = run("add-device", "device-x", "--cert", pki.expired.cert)
    assert res.exit_code == 1 and res.output.startswith(f"Error: --cert {pki.expired.cert}: certificate CN=localhost,")
    assert " expired on " in res.output
    assert [d.name for d in admin.list_devices(db)] == ["device-a"]  # nothing half-registered
    res = run("add-cert", "device-a", pki.device_b.cert)
    assert (res.exit_code, res.output.split(" (sha256")[0]) == (0, "client certificate CN=device-b,O=mlpack fleet")
    admin.revoke_device(db, "device-a")
    with pytest.raises(CollectorError, match=r"^device 'device-a' is revoked \(add it under a new name\)$"):
        admin.add_device_certs(db, "device-a", [pki.stranger.cert])


def test_serve_refuses_bad_tls_files_in_one_line(tmp_path: Path, pki: Pki) -> None:
    runner = CliRunner()
    db = "sqlite:///" + str(tmp_path / "c.db")

    def serve(*args: str | Path) -> Result:
        return runner.invoke(main, ["collector", "serve", "--port", "0", "--db", db, *map(str, args)])

    cases = [
        (("--tls-cert", tmp_path / "none.pem", "--tls-key", pki.server.key),
         f"Error: --tls-cert {tmp_path / 'none.pem'}: cannot read (No such file or directory)"),
        (("--tls-cert", pki.server.cert, "--tls-key", pki.device_a.key),
         f"Error: --tls-key {pki.device_a.key}: does not belong to the certificate in {pki.server.cert}"),
        (("--tls-cert", pki.server.cert, "--tls-key", pki.server.key, "--tls-client-ca", pki.server.key),
         f"Error: --tls-client-ca {pki.server.key}: no PEM certificate in it"),
    ]
    for args, message in cases:
        res = serve(*args)
        assert (res.exit_code, res.output) == (1, message + "\n"), args
    res = serve("--tls-key", pki.server.key)
    assert res.exit_code == 2 and "--tls-key and --tls-client-ca need --tls-cert" in res.output
    res = serve("--tls-cert", pki.server.cert, "--tls-key", pki.server.key, "--device-auth", "cert")
    assert res.exit_code == 2 and "--device-auth cert needs --tls-client-ca" in res.output
    assert not (tmp_path / "c.db").exists()  # refused before the database was opened


def test_listening_beyond_loopback_without_tls_warns(tmp_path: Path) -> None:
    # The database cannot be reached, so the command stops right after the warning, before listening.
    res = CliRunner().invoke(main, ["collector", "serve", "--host", "0.0.0.0", "--port", "0",
                                    "--db", "postgresql://postgres@127.0.0.1:1/none"])
    assert res.exit_code == 1
    assert res.stderr.splitlines()[0] == (
        "warning: listening on 0.0.0.0 without TLS: device tokens and telemetry cross the network in clear text; "
        "pass --tls-cert/--tls-key, or keep the collector on 127.0.0.1 behind a TLS reverse proxy"
    )
    res = CliRunner().invoke(main, ["collector", "serve", "--port", "0", "--db", "postgresql://postgres@127.0.0.1:1/none"])
    assert res.exit_code == 1 and "warning" not in res.output  # loopback: no warning


def test_an_expired_server_certificate_is_announced_at_start(pki: Pki, https_collector: Callable[..., Collector]) -> None:
    c = https_collector(pki.expired)
    assert any(line.startswith(f"warning: --tls-cert {pki.expired.cert}: expired on ") for line in c.output), c.output
