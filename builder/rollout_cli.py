"""``mlpack publish`` and ``mlpack rollout …``: thin faces of the collector's admin API."""

from __future__ import annotations

import functools
import json
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import click

from mlpack_edge._cli import MlpackGroup
from mlpack_edge.builder.remote import AdminClient, read_token_file

__all__ = ["publish", "rollout"]


def _client_options(fn: Callable[..., Any]) -> Callable[..., Any]:
    @click.option("--collector", "collector_url", required=True, envvar="MLPACK_COLLECTOR_URL", metavar="URL",
                  help="The collector's base URL ($MLPACK_COLLECTOR_URL).")
    @click.option("--admin-token-file", required=True, envvar="MLPACK_ADMIN_TOKEN_FILE",
                  type=click.Path(dir_okay=False, path_type=Path),
                  help="File holding an admin token from mlpack collector add-admin ($MLPACK_ADMIN_TOKEN_FILE).")
    @click.option("--ca-file", type=click.Path(dir_okay=False), help="CA (PEM) the collector's certificate chains to.")
    @functools.wraps(fn)
    def wrapper(collector_url: str, admin_token_file: Path, ca_file: str | None, **kw: Any) -> Any:
        return fn(client=AdminClient(collector_url, read_token_file(admin_token_file), ca_file), **kw)

    return wrapper


@click.command("publish")
@click.argument("bundle", type=click.Path(exists=True, file_okay=False, path_type=Path))
@_client_options
@click.option("--executable", type=click.Path(exists=True, dir_okay=False, path_type=Path),
              help="The build's device executable, whose frozen runtime devices on another runtime download "
              "[default: dist/<name>-<version>-<platform> beside BUNDLE, when there].")
@click.option("--bundle-only", is_flag=True, help="Publish without the runtime (devices keep the one they run).")
def publish(bundle: Path, client: AdminClient, executable: Path | None, bundle_only: bool) -> None:
    """Upload a signed bundle folder to the collector's release store (idempotent)."""
    from mlpack_edge.builder.publish import publish_build, sibling_executable

    if executable is not None and bundle_only:
        raise click.UsageError("give --executable or --bundle-only, not both")
    exe = None if bundle_only else executable or sibling_executable(bundle)
    done = publish_build(client, bundle, exe)
    release = done.release
    state = "published" if done.added else "already published"
    signer = f"signed by {release.get('signed_by')}" if release.get("signed_by") else "unsigned"
    runtime = ""
    if done.runtime:
        sent = f"{done.runtime_uploaded} bytes uploaded" if done.runtime_uploaded else "stored already"
        runtime = f"; runtime {done.runtime[:12]}, {sent}"
    click.echo(f"{state} {release.get('name')} {release.get('version')} ({str(release.get('hash'))[:12]}, "
               f"{release.get('size')} bytes, {signer}{runtime})")


@click.group("rollout", cls=MlpackGroup)
def rollout() -> None:
    """Roll a published release out to a model's devices in stages."""


@rollout.command("start")
@click.argument("model")
@click.argument("version")
@_client_options
@click.option("--stages", default="1,10,50,100", show_default=True,
              help="Cumulative percentages of the targeted devices, ending at 100.")
@click.option("--hold", default="2h", show_default=True,
              help="How long a stage's devices must report from the new build before the next stage.")
@click.option("--shadow", default="1h", show_default=True,
              help="How long a device runs the candidate beside the current model before switching.")
@click.option("--devices", help="Comma-separated device names to target (default: every device running MODEL).")
@click.option("--label", "labels", multiple=True, metavar="KEY=VALUE", help="Target devices with this label; repeatable.")
@click.option("--agreement-floor", default=0.98, show_default=True, type=click.FloatRange(0, 1),
              help="Least share of equal labels between candidate and current in the shadow phase.")
@click.option("--error-factor", default=2.0, show_default=True, type=click.FloatRange(min=1),
              help="Fail a stage when the candidate's error rate exceeds the current one's by this factor.")
@click.option("--p95-factor", default=1.5, show_default=True, type=click.FloatRange(min=1),
              help="Fail a stage when the candidate's p95 latency exceeds the current one's by this factor.")
def start(model: str, version: str, client: AdminClient, stages: str, hold: str, shadow: str, devices: str | None,
          labels: tuple[str, ...], agreement_floor: float, error_factor: float, p95_factor: float) -> None:
    """Start rolling MODEL VERSION (published before) out to its devices."""
    from mlpack_edge._rollout_plan import parse_duration, parse_labels, parse_stages

    if devices and labels:
        raise click.UsageError("give --devices or --label, not both")
    plan = {
        "stages": parse_stages(stages), "hold": parse_duration(hold, "--hold"),
        "shadow": parse_duration(shadow, "--shadow"),
        "devices": [d.strip() for d in devices.split(",") if d.strip()] if devices else [],
        "labels": parse_labels(labels), "agreement_floor": agreement_floor, "error_factor": error_factor,
        "p95_factor": p95_factor,
    }
    _show(client.start(model, version, plan))


@rollout.command("status")
@click.argument("model")
@_client_options
@click.option("--json", "as_json", is_flag=True, help="Print the collector's JSON document.")
def status(model: str, client: AdminClient, as_json: bool) -> None:
    """Per stage: devices updated / shadowing / failed / waiting."""
    doc = client.status(model)
    if as_json:
        click.echo(json.dumps(doc, indent=2, sort_keys=True))
    else:
        _show(doc)


def _action(name: str, help_text: str) -> click.Command:
    @rollout.command(name, help=help_text)
    @click.argument("model")
    @_client_options
    def command(model: str, client: AdminClient) -> None:
        _show(client.change(model, name))

    return command


_action("pause", "Stop offering the release to devices that have not started (those updated keep it).")
_action("resume", "Resume a paused rollout.")
_action("abort", "End the rollout; its devices roll back to their previous version.")


def _show(doc: dict[str, Any]) -> None:
    release = doc.get("release") or {}
    when = time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime(doc.get("created_at") or 0))
    click.echo(f"rollout {doc.get('id')} of {doc.get('model')} {release.get('version')} "
               f"({str(release.get('hash'))[:12]}), started {when} UTC: {doc.get('state')}, "
               f"stage {doc.get('stage')}/{len(doc.get('stages') or [])}, {doc.get('targets')} devices targeted")
    if doc.get("reason"):
        click.echo(f"  reason: {doc['reason']}")
    for st in doc.get("stages") or []:
        counts = ", ".join(f"{n} {k}" for k, n in sorted(st["counts"].items())) or "no devices"
        mark = "" if st["started"] else " (not started)"
        click.echo(f"  stage {st['stage']} {st['percent']:g}%{mark}: {counts}")
