"""``<model> status`` and ``<model> agent sync|run|config`` on the device.

The device command line (``mlpack_edge.runtime.cli``) registers :data:`status` and
:data:`agent` lazily and hands over what it opened through ``ctx.obj``: any object with
a ``state_dir`` attribute (the model's state folder) and optionally ``model_info``
(a :class:`~mlpack_edge.monitor_agent.agent.ModelInfo`, or a zero-argument callable giving
one). ``--state-dir`` / ``--bundle`` override it, so the commands also run on their own.

``agent sync`` exit codes (for cron and systemd timers):

====  =====================================================================
0     delivered: the collector acknowledged everything that was pending
3     nothing to deliver (or another process is uploading right now)
4     collector unreachable or busy (network error, 5xx, 429): kept for later
5     collector refused: bad token or URL (401/403/404), or windows it rejected
      were moved to the dead-letter table
6     TLS failure: the server certificate is untrusted, expired or for another
      host, the collector does not speak TLS there, or it refused the client
      certificate; everything is kept, and nothing is ever retried over plain HTTP
1     configuration or outbox error (message on stderr), e.g. no CA roots found,
      an unreadable key file, plain http:// to another machine; 2 usage error
====  =====================================================================

``status`` exit codes:

====  =====================================================================
0     the report was printed (and, with ``--fail-on``, overall is below it)
7     ``--fail-on drift``: overall is DRIFT; ``--fail-on warn``: WARN or DRIFT
      (the report is still printed in full first; 7, not any ``agent sync`` code)
1     no telemetry here or an outbox error (with ``--json`` also as
      ``{"ok": false, "error": {...}}`` on stdout); 2 usage error
====  =====================================================================
"""

from __future__ import annotations

import json
import logging
import signal
import sys
import threading
import time
from pathlib import Path
from typing import Any

import click

from mlpack_edge._cli import MlpackGroup, echo_json_error, fail
from mlpack_edge.errors import AgentError, MlpackError
from mlpack_edge.monitor_agent import _spool
from mlpack_edge.monitor_agent.agent import ModelInfo
from mlpack_edge.monitor_agent.config import AgentConfig, load_config, read_token_file
from mlpack_edge.monitor_agent.drift import Thresholds
from mlpack_edge.monitor_agent.feedback import DB_NAME as FEEDBACK_DB
from mlpack_edge.monitor_agent.feedback import FeedbackStore
from mlpack_edge.monitor_agent.outbox import Outbox
from mlpack_edge.monitor_agent.profile import Profile
from mlpack_edge.monitor_agent.status import StatusReport, build_status, render_text
from mlpack_edge.monitor_agent.uploader import SyncResult, Uploader
from mlpack_edge.monitor_agent.wire import Window

__all__ = ["agent", "status", "SYNC_EXIT_CODES", "STATUS_FAIL_EXIT"]

SYNC_EXIT_CODES = {"delivered": 0, "nothing": 3, "busy": 3, "unreachable": 4, "refused": 5, "tls": 6}
#: ``status --fail-on LEVEL`` exits with this when the overall status reached LEVEL (distinct
#: from every ``agent sync`` code, so a script running both can tell them apart).
STATUS_FAIL_EXIT = 7
_LEVEL = {"no-data": 0, "not-enough-data": 0, "ok": 0, "warn": 1, "drift": 2}

_state_option = click.option(
    "--state-dir",
    type=click.Path(file_okay=False, path_type=Path),
    envvar="MLPACK_STATE_DIR",
    help="The model's state folder (outbox, agent.json). Default: the one of the opened model.",
)
_bundle_option = click.option(
    "--bundle",
    type=click.Path(exists=True, file_okay=False, path_type=Path),
    help="A bundle folder, to score status against its profile (default: the opened model).",
)


def _state_dir(ctx: click.Context, explicit: Path | None) -> Path:
    if explicit is not None:
        return explicit
    found = getattr(ctx.obj, "state_dir", None)
    if found is None:
        raise click.UsageError("no model state folder: pass --state-dir (or run as '<model> ...')")
    return Path(found)


def _model_info(ctx: click.Context, bundle: Path | None) -> ModelInfo | None:
    if bundle is not None:
        return ModelInfo.from_bundle_dir(bundle)
    info = getattr(ctx.obj, "model_info", None)
    return info() if callable(info) else info


def _config(state: Path, **flags: Any) -> AgentConfig:
    return load_config(state, _overrides(**flags))


def _overrides(collector_url: str | None, device_id: str | None, token_file: Path | None,
               window_seconds: float | None, cap: str | None, ca_file: Path | None = None,
               client_cert: Path | None = None, client_key: Path | None = None,
               allow_insecure_http: bool = False) -> dict[str, Any]:
    token = None if token_file is None else read_token_file(token_file)
    return {"collector_url": collector_url, "device_id": device_id, "token": token,
            "window_seconds": window_seconds, "cap_bytes": cap,
            "ca_file": _path(ca_file), "client_cert": _path(client_cert), "client_key": _path(client_key),
            "allow_insecure_http": allow_insecure_http or None}


def _path(p: Path | None) -> str | None:
    return None if p is None else str(p.absolute())


def _config_options(f: Any) -> Any:
    for opt in reversed([
        click.option("--collector-url", help="Collector base URL (overrides agent.json / MLPACK_COLLECTOR_URL)."),
        click.option("--device-id", help="This device's id (overrides agent.json / MLPACK_DEVICE_ID)."),
        click.option("--token-file", type=click.Path(dir_okay=False, path_type=Path),
                     help="File holding the device token (never pass a token as an argument)."),
        click.option("--window-seconds", type=float, help="Telemetry window length."),
        click.option("--cap", help="Outbox size cap, e.g. 64MB."),
        click.option("--ca-file", type=click.Path(dir_okay=False, path_type=Path),
                     help="CA certificate(s) (PEM) the collector's certificate must chain to, instead of the system's."),
        click.option("--client-cert", type=click.Path(dir_okay=False, path_type=Path),
                     help="This device's certificate (PEM) for mutual TLS; with --client-key."),
        click.option("--client-key", type=click.Path(dir_okay=False, path_type=Path),
                     help="Its private key (unencrypted PEM, mode 0600)."),
        click.option("--allow-insecure-http", is_flag=True, default=False,
                     help="Allow a plain http:// collector on another machine (token and telemetry unencrypted)."),
    ]):
        f = opt(f)
    return f


# ---------------------------------------------------------------------------- status


@click.command("status")
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output (errors too, as JSON on stdout).")
@click.option("--hours", type=click.FloatRange(min=0, min_open=True), default=24.0, show_default=True,
              help="How far back to look (whole hours of closed windows, plus open windows).")
@click.option("--fail-on", type=click.Choice(["drift", "warn"]), default=None,
              help=f"Exit {STATUS_FAIL_EXIT} when the overall status is DRIFT (drift) or WARN/DRIFT (warn), "
              "after printing the report: for cron and scripts.")
@click.option("--min-labels", type=click.IntRange(min=1), default=None,
              help="Labelled predictions a production gate needs before it can fail [default: 100].")
@_state_option
@_bundle_option
@click.pass_context
def status(ctx: click.Context, as_json: bool, hours: float, fail_on: str | None, min_labels: int | None,
           state_dir: Path | None, bundle: Path | None) -> None:
    """Drift, errors and latency of recent traffic, from the device's own records (offline).

    Exit codes: 0 printed; 7 the overall status reached --fail-on; 1 no telemetry or an
    outbox error; 2 usage.
    """
    try:  # a lone command (not under an MlpackGroup) keeps the one-line error contract too
        report = _status(ctx, hours, state_dir, bundle, min_labels)
    except MlpackError as exc:
        if as_json:
            echo_json_error(exc)
        raise fail(exc) from None
    click.echo(json.dumps(report.to_dict(), indent=2, sort_keys=True) if as_json else render_text(report))
    if fail_on is not None and _LEVEL[report.status] >= _LEVEL[fail_on]:
        ctx.exit(STATUS_FAIL_EXIT)


def _status(ctx: click.Context, hours: float, state_dir: Path | None, bundle: Path | None,
            min_labels: int | None = None) -> StatusReport:
    state = _state_dir(ctx, state_dir)
    info = _model_info(ctx, bundle)
    if not (state / "outbox.sqlite").exists() and not _spool.waiting(state, "window"):
        raise AgentError(f"{state}: no telemetry recorded here yet (no outbox.sqlite)")
    now = time.time()
    with Outbox.open(state) as box:
        if info is None:
            info = _only_model(box, state)
        windows = box.recent(info.content_hash, now - hours * 3600)
        if (state / FEEDBACK_DB).exists():  # labels joined but not handed to the outbox yet
            store = FeedbackStore(state)
            try:
                unsent = store.unsent(info.content_hash)
            finally:
                store.close()
            if unsent is not None:
                windows.append(Window(model=info.content_hash, seq=0, start=now, end=now, feedback=unsent))
        report = build_status(
            info.content_hash, info.name, info.version, info.profile, info.thresholds, windows,
            now - hours * 3600, now, box.accounting().to_dict(), info.kpi, min_labels,
        )
    return report


def _only_model(box: Outbox, state: Path) -> ModelInfo:
    models = box.models()
    if len(models) != 1:
        raise AgentError(
            f"{state}: {len(models)} models recorded here; pass --bundle to choose one"
            if models else f"{state}: no model registered in the outbox yet"
        )
    ((content_hash, body),) = models.items()
    wire = body["wire"]
    kpi = wire.get("kpi")
    return ModelInfo(
        content_hash, wire["name"], wire["version"], Profile.from_dict(wire["profile"], f"{state}/outbox.sqlite"),
        Thresholds.from_dict(body.get("thresholds")),
        classes=tuple(kpi["classes"]) if kpi and kpi.get("task") != "regression" else None, kpi=kpi,
    )


# ---------------------------------------------------------------------------- feedback


@click.command("feedback")
@click.argument("labels", type=click.Path(dir_okay=False, allow_dash=True))
@click.option("--id-column", required=True, metavar="COLUMN", help="The column holding the prediction id.")
@click.option("--label-column", required=True, metavar="COLUMN", help="The column holding the true label (a number for regression).")
@click.option("--json", "as_json", is_flag=True, help="Machine-readable summary (errors too, as JSON on stdout).")
@_state_option
@_bundle_option
@click.pass_context
def feedback(ctx: click.Context, labels: str, id_column: str, label_column: str, as_json: bool,
             state_dir: Path | None, bundle: Path | None) -> None:
    """Join ground-truth LABELS (a CSV file, '-' for stdin) to earlier predictions of this model.

    Each label is counted once: matched (joined), duplicate (the id already has one; the
    first wins), late (older than the join window), unmatched (no such prediction here) or
    unknown_label (not a class of the model / not a number). The counts travel to the
    collector with the telemetry. A malformed file counts nothing.
    """
    try:
        counts = _feedback(ctx, labels, id_column, label_column, state_dir, bundle)
    except MlpackError as exc:
        if as_json:
            echo_json_error(exc)
        raise fail(exc) from None
    if as_json:
        click.echo(json.dumps(counts, sort_keys=True))
    else:
        click.echo(", ".join(f"{counts[k]} {k.replace('_', ' ')}" for k in ("matched", "duplicate", "late", "unmatched", "unknown_label"))
                   + f" (of {counts['labels']} labels)")


def _feedback(ctx: click.Context, path: str, id_column: str, label_column: str, state_dir: Path | None,
              bundle: Path | None) -> dict[str, int]:
    from mlpack_edge.monitor_agent.agent import Agent
    from mlpack_edge.monitor_agent.feedback import read_labels

    state = _state_dir(ctx, state_dir)
    info = _model_info(ctx, bundle)
    if info is None:
        raise AgentError("feedback needs the model: run it as '<model> feedback' or pass --bundle")
    if info.kpi is None:
        raise AgentError(f"{info.name} {info.version}: the manifest does not say what its labels are (task, classes)")
    items = read_labels(path, id_column, label_column, regression=info.classes is None)
    agent = Agent.open(info, state, deferred=True)
    try:
        outcomes = agent.add_labels(items)
    finally:
        agent.stop()
    counts = {k: 0 for k in ("matched", "duplicate", "late", "unmatched", "unknown_label")}
    for o in outcomes:
        counts[o] += 1
    counts["labels"] = len(outcomes)
    return counts


# ---------------------------------------------------------------------------- agent


@click.group("agent", cls=MlpackGroup)
def agent() -> None:
    """Deliver recorded telemetry to the collector (see 'agent sync --help' for exit codes)."""


@agent.command("sync")
@_state_option
@_config_options
@click.pass_context
def sync(ctx: click.Context, state_dir: Path | None, **flags: Any) -> None:
    """Upload what is pending once, then exit: 0 delivered, 3 nothing to do, 4 collector
    unreachable, 5 refused, 6 TLS failure (see the module doc)."""
    state = _state_dir(ctx, state_dir)
    config = _config(state, **flags)
    with Outbox.open(state, config.cap_bytes) as box:
        result = Uploader(box, config).sync()
    click.echo(result.summary(), err=result.outcome not in ("delivered", "nothing"))
    ctx.exit(SYNC_EXIT_CODES[result.outcome])


@agent.command("run")
@_state_option
@_config_options
@click.option("--interval", type=click.FloatRange(min=1), help="Seconds between uploads when healthy [window].")
@click.pass_context
def run(ctx: click.Context, state_dir: Path | None, interval: float | None, **flags: Any) -> None:
    """Upload in the foreground until interrupted (SIGINT/SIGTERM), backing off while offline."""
    state = _state_dir(ctx, state_dir)
    config = _config(state, **flags)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s", stream=sys.stderr)
    stop = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: stop.set())

    def report(result: SyncResult) -> None:
        if result.outcome != "nothing":
            logging.getLogger("mlpack_edge.monitor_agent").info("%s", result.summary())

    with Outbox.open(state, config.cap_bytes) as box:
        uploader = Uploader(box, config)
        uploader.check_configured()
        uploader.run(stop, interval or config.window_seconds, report)


@agent.command("config")
@_state_option
@_config_options
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
@click.option("--save", is_flag=True,
              help="Write the flags' settings into the state folder (agent.json; TLS files copied into tls/).")
@click.pass_context
def config_command(ctx: click.Context, state_dir: Path | None, as_json: bool, save: bool, **flags: Any) -> None:
    """Show the effective agent configuration (file < environment < flags); the token is never shown.

    With --save the file and flag settings (not the environment's) are checked and stored:
    e.g. '--ca-file fleet-ca.pem --save' makes the agent trust the fleet's private CA.
    """
    state = _state_dir(ctx, state_dir)
    if save:  # then show what was stored (copies in tls/), with the environment on top
        _save(state, flags)
        shown = load_config(state).public_dict()
    else:
        shown = _config(state, **flags).public_dict()
    if as_json:
        click.echo(json.dumps(shown, indent=2, sort_keys=True))
    else:
        for key, value in shown.items():
            click.echo(f"{key:<15} {'-' if value is None else value}")


def _save(state: Path, flags: dict[str, Any]) -> None:
    """File settings + flags, checked (files readable, key matches, no plain HTTP elsewhere), then written."""
    from mlpack_edge.monitor_agent.config import write_config
    from mlpack_edge.monitor_agent.tls import check_tls_files

    saved = load_config(state, _overrides(**flags), environ={})
    saved.check_transport()
    check_tls_files(saved.ca_file, saved.client_cert, saved.client_key)
    state.mkdir(parents=True, exist_ok=True)
    write_config(state, saved)
