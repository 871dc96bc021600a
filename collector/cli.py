"""``mlpack collector …``: serve, and administer devices and models."""

from __future__ import annotations

import functools
import json
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import click

from mlpack_edge._cli import MlpackGroup, echo_json_error
from mlpack_edge.collector import admin
from mlpack_edge.collector.config import DEFAULT_DATA_DIR, CollectorConfig, resolve_db_url
from mlpack_edge.collector.service import DEFAULT_UNIT_DIR
from mlpack_edge.errors import MlpackError

__all__ = ["collector"]


def _db_options(fn: Callable[..., Any]) -> Callable[..., Any]:
    @click.option("--db", "db", metavar="URL", envvar="MLPACK_COLLECTOR_DB",
                  help="postgresql://… or sqlite:///path (default: a SQLite file in --data-dir).")
    @click.option("--data-dir", type=click.Path(file_okay=False), default=None,
                  help=f"Folder of the embedded SQLite database [default: {DEFAULT_DATA_DIR}].")
    @functools.wraps(fn)
    def wrapper(db: str | None, data_dir: str | None, **kw: Any) -> Any:
        try:
            db_url = resolve_db_url(db, data_dir)
        except MlpackError as exc:
            if kw.get("as_json"):
                echo_json_error(exc)
            raise
        return fn(db_url=db_url, **kw)

    return wrapper


@click.group(cls=MlpackGroup)
def collector() -> None:
    """Run and administer the fleet collector."""


@collector.command()
@_db_options
@click.option("--host", default="127.0.0.1", show_default=True, help="Address to listen on (0.0.0.0 exposes it).")
@click.option("--port", default=8470, show_default=True, type=click.IntRange(0, 65535), help="Port; 0 picks a free one.")
@click.option("--silent-after", default=3600.0, show_default=True, type=click.FloatRange(min=1),
              help="Seconds without an upload before a device is shown as silent.")
@click.option("--max-body", default=4 * 1024 * 1024, show_default=True, type=click.IntRange(min=1024),
              help="Largest request body accepted, in bytes (as sent, before gunzip).")
@click.option("--log-level", default="warning", show_default=True,
              type=click.Choice(["debug", "info", "warning", "error"]))
@click.option("--access-log/--no-access-log", default=False, show_default=True, help="Log every request (never tokens).")
@click.option("--tls-cert", type=click.Path(dir_okay=False), help="Serve HTTPS with this certificate (PEM, chain first to last).")
@click.option("--tls-key", type=click.Path(dir_okay=False), help="Its private key (PEM, unencrypted) if not in --tls-cert.")
@click.option("--tls-client-ca", type=click.Path(dir_okay=False),
              help="CA (PEM) that issues device certificates: ask devices for one (mutual TLS).")
@click.option("--device-auth", type=click.Choice(["token", "cert", "both"]), default="token", show_default=True,
              help="How devices prove who they are: bearer token, TLS client certificate (add-device --cert), or both.")
@click.option("--min-labels", default=100, show_default=True, type=click.IntRange(min=1),
              help="Labelled predictions a production gate needs over the range before it can raise an alert.")
def serve(db_url: str, host: str, port: int, silent_after: float, max_body: int, log_level: str, access_log: bool,
          tls_cert: str | None, tls_key: str | None, tls_client_ca: str | None, device_auth: str, min_labels: int) -> None:
    """Serve ingest, the JSON API, the fleet page and /metrics.

    \b
    HTTPS: --tls-cert FILE --tls-key FILE; mutual TLS adds --tls-client-ca FILE and
    --device-auth cert|both. Beyond 127.0.0.1 without TLS a warning is printed (or keep
    the collector on loopback behind a TLS reverse proxy: see the README).
    """
    from mlpack_edge.collector.server import TlsFiles
    from mlpack_edge.collector.server import serve as run

    if tls_cert is None and (tls_key or tls_client_ca):
        raise click.UsageError("--tls-key and --tls-client-ca need --tls-cert")
    if device_auth != "token" and tls_client_ca is None:
        raise click.UsageError(f"--device-auth {device_auth} needs --tls-client-ca (and --tls-cert/--tls-key)")
    tls = TlsFiles(tls_cert, tls_key, tls_client_ca) if tls_cert else None
    config = CollectorConfig(db_url=db_url, silent_after=silent_after, max_body_bytes=max_body, device_auth=device_auth,
                             kpi_min_labels=min_labels)
    run(config, host, port, log_level=log_level, access_log=access_log,
        announce=lambda line: click.echo(line) or sys.stdout.flush(), tls=tls,
        warn=lambda line: click.echo(line, err=True))


@collector.command("add-device")
@_db_options
@click.argument("name")
@click.option("--cert", "certs", multiple=True, type=click.Path(dir_okay=False),
              help="The device's client certificate (PEM or DER) for mutual TLS; repeatable.")
def add_device(db_url: str, name: str, certs: tuple[str, ...]) -> None:
    """Register a device and print its upload token (shown only this once)."""
    token = admin.add_device(db_url, name, certs)
    click.echo(token)
    for cert in admin.device_certs(db_url, name):
        click.echo(f"client certificate {cert.subject} (sha256 {cert.fingerprint[:16]}…) registered", err=True)
    click.echo(f"device {name} registered; store this token now, it is not shown again", err=True)


@collector.command("add-cert")
@_db_options
@click.argument("name")
@click.argument("cert", type=click.Path(dir_okay=False))
def add_cert(db_url: str, name: str, cert: str) -> None:
    """Register another client certificate for a device (e.g. a renewed one)."""
    for c in admin.add_device_certs(db_url, name, [cert]):
        click.echo(f"client certificate {c.subject} (sha256 {c.fingerprint[:16]}…) registered to device {name}")


@collector.command("revoke-device")
@_db_options
@click.argument("name")
def revoke_device(db_url: str, name: str) -> None:
    """Refuse all further uploads from a device (its data stays)."""
    admin.revoke_device(db_url, name)
    click.echo(f"device {name} revoked")


@collector.command("list-devices")
@_db_options
@click.option("--json", "as_json", is_flag=True,
              help='Print {"devices": [{name, revoked, created_at, revoked_at, last_seen, last_model, last_seq}]}'
              " (times in epoch seconds; errors as JSON too).")
def list_devices(db_url: str, as_json: bool) -> None:
    """List registered devices with their state and last upload."""
    try:
        rows = admin.list_devices(db_url)
    except MlpackError as exc:
        if as_json:
            echo_json_error(exc)
        raise
    if as_json:
        devices = [
            {"name": d.name, "revoked": d.revoked, "created_at": d.created_at, "revoked_at": d.revoked_at,
             "last_seen": d.last_seen, "last_model": d.last_model, "last_seq": d.last_seq}
            for d in rows
        ]
        click.echo(json.dumps({"devices": devices}, indent=2, sort_keys=True))
        return
    if not rows:
        click.echo("no devices registered (add one with: mlpack collector add-device NAME)")
        return
    click.echo(f"{'DEVICE':<24} {'STATE':<8} {'LAST SEEN (UTC)':<20} MODEL")
    for d in rows:
        seen = time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime(d.last_seen)) if d.last_seen else "never"
        click.echo(f"{d.name:<24} {'revoked' if d.revoked else 'active':<8} {seen:<20} {(d.last_model or '-')[:12]}")


@collector.command("add-model")
@_db_options
@click.argument("bundle", type=click.Path(exists=True, file_okay=False))
def add_model(db_url: str, bundle: str) -> None:
    """Teach the collector a model (and its reference profile) from a bundle folder."""
    model, added = admin.add_model(db_url, bundle)
    state = "added" if added else "already known"
    click.echo(f"model {model.name} {model.version} ({model.hash[:12]}) {state}")


@collector.command("export-samples")
@_db_options
@click.argument("model")
@click.option("-o", "--output", required=True, type=click.Path(dir_okay=False), help="CSV file to write.")
@click.option("--all", "include_unlabelled", is_flag=True, help="Also rows without a label (empty target cell).")
def export_samples(db_url: str, model: str, output: str, include_unlabelled: bool) -> None:
    """Export the rows devices captured for MODEL (hash or NAME:VERSION) as a CSV in the training columns.

    Captured rows are real inputs: personal data. Capture is off unless a device sets capture_rate.
    """
    info, n = admin.export_samples(db_url, model, output, include_unlabelled)
    click.echo(f"wrote {n} rows of {info.name} {info.version} to {output}")


@collector.command("install-service")
@_db_options
@click.option("--host", default="127.0.0.1", show_default=True, help="Address the service listens on.")
@click.option("--port", default=8470, show_default=True, type=click.IntRange(0, 65535), help="Port of the service.")
@click.option("--silent-after", default=3600.0, show_default=True, type=click.FloatRange(min=1),
              help="Seconds without an upload before a device is shown as silent.")
@click.option("--user", help="Run the service as this user (recommended: a dedicated one) [default: root].")
@click.option("--unit-dir", type=click.Path(file_okay=False, path_type=Path), default=str(DEFAULT_UNIT_DIR),
              show_default=True, help="Where the unit file goes.")
@click.option("--name", default="mlpack-collector", show_default=True, help="Unit name (NAME.service).")
@click.option("--enable/--no-enable", default=True, show_default=True,
              help="Reload systemd and enable --now the service (when systemd runs here).")
def install_service(db_url: str, host: str, port: int, silent_after: float, user: str | None, unit_dir: Path,
                    name: str, enable: bool) -> None:
    """Write a systemd unit that runs this collector installation (and start it).

    The unit runs `mlpack collector serve` with this environment's Python, restarts it on
    failure and passes the database URL in its environment, not on the command line. Run
    it once per collector process (several on one PostgreSQL database: one per port/host).
    """
    from mlpack_edge.collector.service import ServiceSpec, write_unit
    from mlpack_edge.runtime.install import SystemctlSystemd

    path = write_unit(ServiceSpec(db_url, host, port, user, silent_after), unit_dir, name)
    click.echo(f"wrote {path} (mode 0600: it holds the database URL)")
    systemd = SystemctlSystemd()
    if not enable:
        click.echo(f"not enabled; to start it: systemctl daemon-reload && systemctl enable --now {name}")
    elif not systemd.running():
        click.echo(f"systemd is not running here: {name} left disabled "
                   f"(on a systemd machine: systemctl daemon-reload && systemctl enable --now {name})")
    else:
        systemd.run("daemon-reload")
        systemd.run("enable", "--now", f"{name}.service")
        click.echo(f"{name} enabled and started (journalctl -u {name} shows where it listens)")
