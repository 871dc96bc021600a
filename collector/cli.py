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
@click.option("--alert-interval", default=30.0, show_default=True, type=click.FloatRange(min=0.1),
              help="Seconds between alert evaluations with no upload (an upload triggers one sooner, at most "
              "every 5 s or this, whichever is less).")
@click.option("--webhook-timeout", default=5.0, show_default=True, type=click.FloatRange(min=0.1, max=300),
              help="Seconds one webhook attempt may take before it counts as failed.")
@click.option("--webhook-backoff", default=5.0, show_default=True, type=click.FloatRange(min=0.01),
              help="Seconds before the first retry of a failed delivery (doubling, at most 15 min).")
@click.option("--external-url", default="", metavar="URL",
              help="This collector's address as webhook receivers should link to it [default: where it listens].")
@click.option("--release-dir", type=click.Path(file_okay=False, path_type=Path),
              help="Where published bundles are kept [default: a 'releases' folder next to the SQLite database].")
@click.option("--allow-unsigned-releases", is_flag=True,
              help="Accept unsigned bundles from mlpack publish (development fleets; devices still apply their own trust).")
@click.option("--viewer-token-file", type=click.Path(dir_okay=False, path_type=Path),
              help="Require this token (or an admin token) for the fleet page and read API; set it when listening "
              "beyond 127.0.0.1.")
def serve(db_url: str, host: str, port: int, silent_after: float, max_body: int, log_level: str, access_log: bool,
          tls_cert: str | None, tls_key: str | None, tls_client_ca: str | None, device_auth: str, min_labels: int,
          alert_interval: float, webhook_timeout: float, webhook_backoff: float, external_url: str,
          release_dir: Path | None, allow_unsigned_releases: bool, viewer_token_file: Path | None) -> None:
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
                             kpi_min_labels=min_labels,
                             alert_interval=alert_interval, alert_min_interval=min(5.0, alert_interval),
                             webhook_timeout=webhook_timeout, webhook_backoff=webhook_backoff,
                             external_url=external_url,
                             release_dir=release_dir, allow_unsigned_releases=allow_unsigned_releases,
                             viewer_token_hash=_viewer_hash(viewer_token_file))
    run(config, host, port, log_level=log_level, access_log=access_log,
        announce=lambda line: click.echo(line) or sys.stdout.flush(), tls=tls,
        warn=lambda line: click.echo(line, err=True))


def _viewer_hash(path: Path | None) -> str | None:
    if path is None:
        return None
    from mlpack_edge.collector.auth import hash_token

    try:
        token = path.read_text(encoding="utf-8").strip()
    except OSError as exc:
        raise click.BadParameter(f"{path}: cannot read ({exc.strerror})", param_hint="--viewer-token-file") from None
    if len(token) < 16:
        raise click.BadParameter(f"{path}: a viewer token needs at least 16 characters (e.g. python -c "
                                 "'import secrets; print(secrets.token_urlsafe(32))')", param_hint="--viewer-token-file")
    return hash_token(token)


@collector.command("add-device")
@_db_options
@click.argument("name")
@click.option("--cert", "certs", multiple=True, type=click.Path(dir_okay=False),
              help="The device's client certificate (PEM or DER) for mutual TLS; repeatable.")
@click.option("--label", "labels", multiple=True, metavar="KEY=VALUE",
              help="A label rollouts can target (mlpack rollout start --label KEY=VALUE); repeatable.")
def add_device(db_url: str, name: str, certs: tuple[str, ...], labels: tuple[str, ...]) -> None:
    """Register a device and print its upload token (shown only this once)."""
    token = admin.add_device(db_url, name, certs, admin.parse_labels(labels))
    click.echo(token)
    for cert in admin.device_certs(db_url, name):
        click.echo(f"client certificate {cert.subject} (sha256 {cert.fingerprint[:16]}…) registered", err=True)
    click.echo(f"device {name} registered; store this token now, it is not shown again", err=True)


@collector.command("label-device")
@_db_options
@click.argument("name")
@click.argument("labels", nargs=-1, metavar="KEY=VALUE...")
def label_device(db_url: str, name: str, labels: tuple[str, ...]) -> None:
    """Replace a device's labels (none given: remove them)."""
    parsed = admin.parse_labels(labels, "label")
    admin.set_labels(db_url, name, parsed)
    shown = ", ".join(f"{k}={v}" for k, v in sorted(parsed.items())) or "no labels"
    click.echo(f"device {name}: {shown}")


@collector.command("add-admin")
@_db_options
@click.argument("name")
def add_admin(db_url: str, name: str) -> None:
    """Register an administrator and print its token (publish, rollout; shown only this once)."""
    token = admin.add_admin(db_url, name)
    click.echo(token)
    click.echo(f"admin {name} registered; store this token now (mode 0600), it is not shown again", err=True)


@collector.command("revoke-admin")
@_db_options
@click.argument("name")
def revoke_admin(db_url: str, name: str) -> None:
    """Refuse an administrator's token from now on."""
    admin.revoke_admin(db_url, name)
    click.echo(f"admin {name} revoked")


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


@collector.command("alerts")
@_db_options
@click.option("--state", type=click.Choice(["all", "open", "resolved"]), default="all", show_default=True)
@click.option("--limit", type=click.IntRange(1, 10000), default=50, show_default=True, help="Newest first, at most this many.")
@click.option("--json", "as_json", is_flag=True,
              help='Print {"alerts": [{id, kind, severity, state, device, model, feature, message, opened_at, '
              'resolved_at, deliveries}]} (errors as JSON too).')
def alerts(db_url: str, state: str, limit: int, as_json: bool) -> None:
    """Alert history: when each alert opened and resolved, and whether webhooks got it."""
    try:
        rows = admin.alert_history(db_url, state, limit)
    except MlpackError as exc:
        if as_json:
            echo_json_error(exc)
        raise
    if as_json:
        click.echo(json.dumps({"alerts": [{**a.to_dict(), "deliveries": d} for a, d in rows]}, indent=2, sort_keys=True))
        return
    if not rows:
        click.echo("no alerts recorded")
        return

    def when(t: float | None) -> str:
        return time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime(t)) if t else "-"

    click.echo(f"{'ID':>4} {'KIND':<16} {'STATE':<8} {'OPENED (UTC)':<19} {'RESOLVED (UTC)':<19} {'SENT':>5} MESSAGE")
    for a, sent in rows:
        ok = sum(1 for d in sent if d["state"] == "delivered")
        click.echo(f"{a.id:>4} {a.kind:<16} {a.state:<8} {when(a.opened_at):<19} {when(a.resolved_at):<19} "
                   f"{f'{ok}/{len(sent)}':>5} {a.message}")


@collector.command("add-webhook")
@_db_options
@click.argument("url")
@click.option("--format", "fmt", type=click.Choice(["json", "alertmanager"]), default="json", show_default=True,
              help="json: mlpack's alert body; alertmanager: Prometheus Alertmanager's webhook body (version 4).")
@click.option("--secret-file", type=click.Path(dir_okay=False), default=None,
              help="File holding a secret: requests then carry X-Mlpack-Signature: sha256=HMAC-SHA256(secret, body).")
def add_webhook(db_url: str, url: str, fmt: str, secret_file: str | None) -> None:
    """Send every alert transition (opened, resolved) to URL, with retries."""
    from mlpack_edge.collector.webhooks import public_url

    hook = admin.add_webhook(db_url, url, fmt, secret_file)
    signed = ", signed (X-Mlpack-Signature)" if secret_file else ""
    click.echo(f"webhook {hook} added: {public_url(url)} ({fmt}{signed}); running collectors use it from their next alert")


@collector.command("set-webhooks")
@_db_options
@click.argument("file", type=click.Path(dir_okay=False))
def set_webhooks(db_url: str, file: str) -> None:
    """Make the webhooks exactly those listed in a TOML file (for configuration management).

    \b
    [[webhook]]
    url = "https://ci.example.org/hooks/retrain"
    format = "alertmanager"          # or "json" (default)
    secret_file = "retrain.secret"   # optional, relative to FILE

    Unchanged webhooks are kept (with their pending deliveries); the rest are removed or added.
    """
    kept, added, removed = admin.set_webhooks(db_url, file)
    show = lambda ids: ", ".join(map(str, ids)) or "none"  # noqa: E731
    click.echo(f"webhooks: kept {show(kept)}; added {show(added)}; removed {show(removed)}")


@collector.command("test-webhook")
@_db_options
@click.argument("webhook_id", metavar="ID", type=click.IntRange(min=1))
@click.option("--timeout", default=5.0, show_default=True, type=click.FloatRange(min=0.1, max=300),
              help="Seconds to wait for the answer.")
def test_webhook(db_url: str, webhook_id: int, timeout: float) -> None:
    """Send a test alert (kind 'test', firing, signed like real ones) to a webhook now; exit 1 unless it answers 2xx."""
    from mlpack_edge.collector.webhooks import public_url
    from mlpack_edge.errors import CollectorError

    hook, status, error, seconds = admin.test_webhook(db_url, webhook_id, timeout)
    where = f"webhook {hook.id} ({public_url(hook.url)}, {hook.format})"
    if error is not None:
        raise CollectorError(f"{where}: {error} after {seconds:.2f} s")
    click.echo(f"{where}: HTTP {status} in {seconds:.2f} s")


@collector.command("remove-webhook")
@_db_options
@click.argument("webhook_id", metavar="ID", type=click.IntRange(min=1))
def remove_webhook(db_url: str, webhook_id: int) -> None:
    """Stop sending alerts to a webhook (its pending deliveries are cancelled)."""
    admin.remove_webhook(db_url, webhook_id)
    click.echo(f"webhook {webhook_id} removed")


@collector.command("list-webhooks")
@_db_options
@click.option("--json", "as_json", is_flag=True, help="Print {\"webhooks\": [...]} (errors as JSON too).")
def list_webhooks(db_url: str, as_json: bool) -> None:
    """List webhooks with their delivery counts."""
    from mlpack_edge.collector.webhooks import public_url

    try:
        hooks, counts = admin.list_webhooks(db_url)
    except MlpackError as exc:
        if as_json:
            echo_json_error(exc)
        raise
    rows = [
        {"id": h.id, "url": public_url(h.url), "format": h.format, "signed": bool(h.secret), "created_at": h.created_at,
         "removed_at": h.removed_at, **{k: counts.get(h.id, {}).get(k, 0) for k in ("delivered", "pending", "failed")}}
        for h in hooks
    ]
    if as_json:
        click.echo(json.dumps({"webhooks": rows}, indent=2, sort_keys=True))
        return
    if not rows:
        click.echo("no webhooks (add one with: mlpack collector add-webhook URL)")
        return
    click.echo(f"{'ID':>3} {'FORMAT':<12} {'SIGNED':<6} {'STATE':<8} {'SENT':>5} {'PEND':>5} {'FAIL':>5} URL")
    for r in rows:
        state = "removed" if r["removed_at"] else "active"
        click.echo(f"{r['id']:>3} {r['format']:<12} {'yes' if r['signed'] else 'no':<6} {state:<8} "
                   f"{r['delivered']:>5} {r['pending']:>5} {r['failed']:>5} {r['url']}")


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
