"""The device command: ``<model> predict | serve | info | verify`` (+ install, agent, status).

The same click group runs as ``mlpack device --bundle DIR ...`` on a workstation and as
the frozen executable ``<model> ...`` on a device, where the bundle is the one shipped
with it (:func:`mlpack_edge.runtime.embedded.embedded_bundle`). Each command parses its
options, calls one library function and formats the result; imports are lazy so
``predict`` starts about as fast as ``import numpy, onnxruntime`` allows.

Exit codes: 0 success; 1 a domain failure (one line on stderr: bad bundle, bad input
file, a port in use, a failed self-test, or — for ``predict`` — any row that failed
validation, the output still being complete); 2 a usage error.

Trust (see :mod:`mlpack_edge.runtime._trust`): an installed model always enforces the trust
its ``install`` wrote; an ad-hoc run enforces ``--trust-key`` / ``$MLPACK_TRUSTED_KEYS``
when given, and otherwise checks a signature for integrity and runs an unsigned bundle
with a one-line warning. ``serve`` also replays the golden set before it listens; an
installed ``current`` version that fails either check hands over to ``previous``
(:mod:`mlpack_edge.runtime._fallback`). Failures of an installed model are audit events.

Monitoring: ``serve`` and ``predict`` feed the monitoring agent when the model has a
state folder — ``--state-dir`` / ``$MLPACK_STATE_DIR`` (the installed service sets it),
the ``state`` folder of an installed version, or an existing
``~/.local/state/mlpack/<name>`` — and the bundle has a reference profile.
``--no-monitor`` turns it off. ``predict`` runs the agent one-shot (no thread; its window
is stored at exit), ``serve`` runs its tick and upload threads.

Start-up (benchmarks/executable.py): only what a command uses is imported, and the
executable's entry point ends the process without interpreter teardown (:func:`main`).
"""

from __future__ import annotations

import os
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click

from mlpack_edge._cli import MlpackGroup
from mlpack_edge.errors import MlpackError

if TYPE_CHECKING:
    from mlpack_edge.monitor_agent.agent import Agent, ModelInfo
    from mlpack_edge.runtime._fallback import Fallback, Installed
    from mlpack_edge.runtime._trust import TrustPolicy
    from mlpack_edge.runtime.bundle import Bundle
    from mlpack_edge.runtime.model import Model
    from mlpack_edge.runtime.selftest import SelfTest

__all__ = ["device_cli", "main"]

_LAZY = {
    "install": ("mlpack_edge.runtime.install_cli:install", "Install this model on this machine (versioned, atomic)."),
    "rollback": ("mlpack_edge.runtime.install_cli:rollback", "Switch back to the previously installed version."),
    "uninstall": ("mlpack_edge.runtime.install_cli:uninstall", "Remove this model's installed versions."),
    "update": ("mlpack_edge.runtime.update_cli:update", "Install what a collector rollout offers this device."),
    "agent": ("mlpack_edge.monitor_agent.cli:agent", "Deliver recorded telemetry to the collector."),
    "status": ("mlpack_edge.monitor_agent.cli:status", "Drift, errors, latency and production KPIs recorded on this device."),
    "feedback": ("mlpack_edge.monitor_agent.cli:feedback", "Join ground-truth labels (CSV) to earlier predictions."),
}
_STATE_ROOT = Path("~/.local/state/mlpack")


class DeviceContext:
    """What the device commands share: where the bundle is, opened at most once.

    ``state_dir`` and ``model_info`` are what ``mlpack_edge.monitor_agent.cli`` looks for.
    """

    def __init__(
        self,
        explicit: Path | None,
        trust_keys: tuple[Path, ...] = (),
        allow_unsigned: bool = False,
        trust_on_command_line: bool = False,
    ) -> None:
        self.explicit = explicit
        self.trust_keys = trust_keys
        self.allow_unsigned = allow_unsigned
        self.trust_on_command_line = trust_on_command_line
        self._bundle: Bundle | None = None
        self._embedded = False
        self._installed: Installed | None = None

    def bundle_path(self) -> Path:
        if self.explicit is not None:
            return self.explicit
        found = _embedded_bundle()
        if found is None:
            raise click.UsageError("no bundle: pass --bundle PATH or set MLPACK_BUNDLE")
        self._embedded = True
        return Path(found)

    def bundle(self) -> Bundle:
        """The bundle, opened and verified (the one integrity check) on first use."""
        if self._bundle is None:
            from mlpack_edge.runtime._fallback import installed_launcher, running_launcher
            from mlpack_edge.runtime.bundle import Bundle

            path = self.bundle_path()
            self._installed = installed_launcher(path, running_launcher())
            # A downloaded (onefile) executable unpacks its bundle into a private temp folder:
            # name the file the user ran instead. An installed one has a real bundle folder.
            meipass = getattr(sys, "_MEIPASS", None)
            onefile = self._embedded and meipass is not None and path.parent == Path(meipass)
            label = f"{sys.executable} (embedded bundle)" if onefile else None
            try:
                self._bundle = Bundle.open(path, trust=self._trust(path), label=label)
            except MlpackError as exc:
                self.record_failure(exc)
                raise
            check = self._bundle.signature
            if check is not None and not check.signed and not check.policy.enforced and not self.allow_unsigned:
                click.echo(
                    f"warning: {self._bundle.location} is unsigned and no trust is configured; running it anyway"
                    " (enforce with --trust-key KEY.pub or $MLPACK_TRUSTED_KEYS; installed models always enforce)",
                    err=True,
                )
        return self._bundle

    def _trust(self, path: Path) -> TrustPolicy | None:
        """The trust given here; ``None`` leaves it to the installed trust or ``$MLPACK_TRUSTED_KEYS``."""
        from mlpack_edge.runtime._trust import TrustPolicy, installed_trust_dir

        trust_dir = installed_trust_dir(path)
        if trust_dir is not None:
            if self.trust_on_command_line:
                raise click.UsageError(
                    f"{path} is installed: its trust is set by install ({trust_dir}); to change it,"
                    " re-run install with --trust-key KEY.pub or --allow-unsigned"
                )
            return None
        if self.trust_keys:
            return TrustPolicy.from_key_files(self.trust_keys, self.allow_unsigned)
        return TrustPolicy.ad_hoc() if self.allow_unsigned else None

    @property
    def installed(self) -> Installed | None:
        """This process as an installed version's launcher (after :meth:`bundle` was tried)."""
        return self._installed

    def record_failure(self, exc: MlpackError) -> None:
        """An installed version failed a check: an audit event for the collector."""
        if self._installed is not None:
            reason = " ".join(str(exc).split())
            _audit(self._installed.state_dir, "verify_failed", {"version": self._installed.version, "reason": reason})

    @property
    def state_dir(self) -> Path | None:
        """``$MLPACK_STATE_DIR``, else an installed version's ``state``, else ~/.local/state/mlpack/<name>."""
        env = os.environ.get("MLPACK_STATE_DIR")
        if env:
            return Path(env)
        try:
            bundle = self.bundle()
        except (MlpackError, click.UsageError):
            return None
        installed = self.bundle_path().parent.parent / "state"  # <prefix>/<name>/<version>/bundle
        if self._embedded and installed.is_dir():
            return installed
        return _STATE_ROOT.expanduser() / bundle.manifest.name

    def model_info(self) -> ModelInfo:
        from mlpack_edge.monitor_agent.agent import ModelInfo

        bundle = self.bundle()
        return ModelInfo.from_bundle_bytes(bundle.manifest.raw, bundle.read("profile.json"), bundle.location)


@click.group(
    cls=MlpackGroup,
    lazy=_LAZY,
    context_settings={"help_option_names": ["-h", "--help"]},
    invoke_without_command=True,  # for --version alone; no command otherwise is a usage error
    no_args_is_help=True,
)
@click.option(
    "--bundle",
    type=click.Path(exists=True, path_type=Path),
    envvar="MLPACK_BUNDLE",
    help="Bundle folder or archive [default: the one shipped with this executable; $MLPACK_BUNDLE].",
)
@click.option(
    "--trust-key",
    "trust_keys",
    multiple=True,
    type=click.Path(dir_okay=False, path_type=Path),
    envvar="MLPACK_TRUSTED_KEYS",
    help="Run only bundles signed by this public key; repeatable [$MLPACK_TRUSTED_KEYS, ':'-separated]."
    " Not for installed models: their trust is set by install.",
)
@click.option(
    "--allow-unsigned",
    is_flag=True,
    help="With --trust-key: also run unsigned bundles. Alone: run an unsigned bundle without the warning.",
)
@click.option(
    "--version",
    "show_version",
    is_flag=True,
    help="Print the model's name and version, its content hash and the runtime's version, and exit.",
)
@click.pass_context
def device_cli(
    ctx: click.Context, bundle: Path | None, trust_keys: tuple[Path, ...], allow_unsigned: bool, show_version: bool
) -> None:
    """Run this model offline: batch predict, local HTTP serve, self-checks, install.

    Installed models run only bundles their install trusts. Elsewhere, --trust-key
    enforces a signer; without it a signature is checked for integrity only and an
    unsigned bundle runs with a warning (fine for development, not for devices).
    """
    from click.core import ParameterSource

    on_command_line = any(
        ctx.get_parameter_source(p) == ParameterSource.COMMANDLINE for p in ("trust_keys", "allow_unsigned")
    )
    ctx.obj = DeviceContext(bundle, trust_keys, allow_unsigned, on_command_line)
    if ctx.invoked_subcommand not in ("predict", "serve"):  # those two resume once their model is open
        from mlpack_edge.runtime._startup import resume_gc

        resume_gc()
    if show_version:
        click.echo(_version_text(ctx.obj))
        ctx.exit(0)
    if ctx.invoked_subcommand is None:
        raise click.UsageError("Missing command.")


def _version_text(obj: DeviceContext) -> str:
    """Three lines: ``NAME VERSION``, the content hash (sha256 of manifest.json), the runtime.

    Read from the manifest without verifying the bundle (``verify`` does that), so it
    answers fast and even for a damaged copy.
    """
    import platform

    import onnxruntime

    from mlpack_edge import __version__
    from mlpack_edge.runtime.bundle import Bundle

    manifest = Bundle.open(obj.bundle_path(), verify=False).manifest
    return (
        f"{manifest.name} {manifest.version}\n"
        f"content hash {manifest.content_hash}\n"
        f"runtime mlpack-edge {__version__} (onnxruntime {onnxruntime.__version__}, Python {platform.python_version()})"
    )


def _threads_option(f: Callable[..., Any]) -> Callable[..., Any]:
    return click.option(
        "--threads",
        type=click.IntRange(min=1),
        envvar="MLPACK_THREADS",
        help="onnxruntime intra-op threads [predict: one per usable core; serve, verify: 1; $MLPACK_THREADS].",
    )(f)


def _monitor_options(f: Callable[..., Any]) -> Callable[..., Any]:
    f = click.option("--no-monitor", is_flag=True, help="Do not feed the monitoring agent.")(f)
    return click.option(
        "--state-dir",
        type=click.Path(file_okay=False, path_type=Path),
        envvar="MLPACK_STATE_DIR",
        help="The model's state folder (agent config, telemetry outbox) [$MLPACK_STATE_DIR].",
    )(f)


# ---------------------------------------------------------------------------- info / verify


@device_cli.command("info")
@click.option("--json", "as_json", is_flag=True, help="Print manifest.json as it is.")
@click.pass_obj
def info(obj: DeviceContext, as_json: bool) -> None:
    """What this model is: name, version, task, features, classes, metrics, files."""
    bundle = obj.bundle()
    if as_json:
        click.echo(bundle.manifest.raw.decode("utf-8"), nl=False)
        return
    from mlpack_edge.runtime._describe import describe_manifest

    click.echo(describe_manifest(bundle.manifest, bundle.location))
    if bundle.signature is not None:
        click.echo(f"signature: {bundle.signature.describe()}")


@device_cli.command("verify")
@_threads_option
@click.pass_obj
def verify(obj: DeviceContext, threads: int | None) -> None:
    """Check the signature and every file against the manifest, then replay the golden set on this CPU."""
    report = _self_test(obj, threads)
    signature = obj.bundle().signature
    click.echo(f"OK: {report.describe()}" + (f"; {signature.describe()}" if signature is not None else ""))


def _self_test(obj: DeviceContext, threads: int | None) -> SelfTest:
    """Integrity (in ``obj.bundle()``) and the golden replay; a failure is recorded, then raised."""
    from mlpack_edge.errors import ParityError
    from mlpack_edge.runtime.model import Model
    from mlpack_edge.runtime.selftest import self_test

    bundle = obj.bundle()
    try:
        report = self_test(Model(bundle, threads=threads))  # no recorder: probes are not traffic
        if not report.passed:
            raise ParityError(report.describe())
    except MlpackError as exc:
        obj.record_failure(exc)
        raise
    return report


# ---------------------------------------------------------------------------- predict


@device_cli.command("predict")
@click.argument("input_path", metavar="[INPUT]", default="-", type=click.Path(dir_okay=False, allow_dash=True))
@click.option("-o", "--output", default="-", type=click.Path(dir_okay=False, allow_dash=True), help="Output file [stdout].")
@click.option("--format", "in_format", type=click.Choice(["csv", "jsonl"]), help="Input format [from the suffix, else sniffed].")
@click.option("--output-format", type=click.Choice(["csv", "jsonl"]), help="Output format [as the input].")
@click.option("--keep", multiple=True, metavar="COLUMN", help="Copy an input column (an id) to the output; repeatable.")
@click.option("--chunk-rows", type=click.IntRange(min=1), default=2048, show_default=True, help="Rows per inference call.")
@click.option("--id-column", metavar="COLUMN", help="With monitoring: the input column holding each row's id for"
              " `feedback` (copied to the output) [default: an id is generated, in an 'id' column].")
@_threads_option
@_monitor_options
@click.pass_obj
def predict(
    obj: DeviceContext,
    input_path: str,
    output: str,
    in_format: str | None,
    output_format: str | None,
    keep: tuple[str, ...],
    chunk_rows: int,
    id_column: str | None,
    threads: int | None,
    state_dir: Path | None,
    no_monitor: bool,
) -> None:
    """Predict each row of INPUT (CSV or JSON Lines; default stdin), streaming.

    One output row per input row, in order: the prediction columns, then 'error' (empty
    for a good row). Bad rows are also listed on stderr, numbered from 1 (the CSV header
    is not a row); if any row failed, the exit code is 1 — the output is still complete.
    With monitoring, each predicted row also gets an id (see `feedback`).
    """
    from mlpack_edge.runtime.io import detect_format, predict_stream
    from mlpack_edge.runtime.session import batch_threads

    report = _ErrorEcho()
    with _serving_model(obj, threads or batch_threads(), state_dir, no_monitor, one_shot=True) as (model, _agent):
        with _input_lines(input_path) as lines:
            first = next(lines, "")
            fmt = in_format or detect_format(None if input_path == "-" else input_path, first)
            try:
                with _output_stream(output) as out:
                    summary = predict_stream(
                        model, _prepend(first, lines), out, in_format=fmt, out_format=output_format or fmt,
                        keep=keep, chunk_rows=chunk_rows, where=input_path if input_path != "-" else "stdin",
                        on_error=report, feedback=_agent, id_column=id_column,
                    )
            except BrokenPipeError:  # `predict big.csv | head`: the reader left; stop quietly
                os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
                raise SystemExit(1) from None
    if summary.failed:
        report.flush_more()
        raise click.ClickException(
            f"{summary.failed} of {summary.rows} rows failed validation (listed above and in the output's 'error')"
        )


class _ErrorEcho:
    """Bad rows to stderr, one line each, the first ``limit`` of them (a 1 GB file can be all bad)."""

    def __init__(self, limit: int = 20) -> None:
        self.limit = limit
        self.seen = 0

    def __call__(self, err: Exception) -> None:
        self.seen += 1
        if self.seen <= self.limit:
            click.echo(str(err), err=True)

    def flush_more(self) -> None:
        if self.seen > self.limit:
            click.echo(f"... and {self.seen - self.limit} more", err=True)


def _prepend(first: str, rest: Iterator[str]) -> Iterator[str]:
    if first:
        yield first
    yield from rest


class _input_lines:
    """Text lines of a file or stdin: strict UTF-8 (a leading BOM dropped), newlines kept for csv.

    Bytes that are not UTF-8, wherever they are, end in one line naming the file and the
    byte offset (:func:`mlpack_edge.runtime.io.utf8_lines`).
    """

    def __init__(self, path: str) -> None:
        self.path = path

    def __enter__(self) -> Iterator[str]:
        from mlpack_edge.runtime.io import utf8_lines

        if self.path == "-":
            if sys.stdin is None:  # started with stdin closed
                raise click.UsageError("no input: stdin is closed; name an INPUT file")
            self._fh = sys.stdin.buffer
        else:
            try:
                self._fh = open(self.path, "rb")  # noqa: SIM115 - closed in __exit__
            except OSError as exc:
                raise click.FileError(self.path, exc.strerror) from None
        return utf8_lines(self._fh, "stdin" if self.path == "-" else self.path)

    def __exit__(self, *exc: object) -> None:
        if self.path != "-":
            self._fh.close()


class _output_stream:
    """stdout, or a file that only appears once complete."""

    def __init__(self, path: str) -> None:
        self.path = path

    def __enter__(self) -> Any:
        if self.path == "-":
            return sys.stdout
        from mlpack_edge.runtime.io import atomic_text_output

        self._cm = atomic_text_output(self.path)
        try:
            return self._cm.__enter__()
        except OSError as exc:
            raise click.FileError(self.path, exc.strerror) from None

    def __exit__(self, *exc: Any) -> bool | None:
        if self.path == "-":
            sys.stdout.flush()
            return None
        try:
            return self._cm.__exit__(*exc)
        except OSError as err:
            raise click.FileError(self.path, err.strerror) from None


# ---------------------------------------------------------------------------- serve


@device_cli.command("serve")
@click.option("--host", default="127.0.0.1", show_default=True, envvar="MLPACK_HOST", help="Address to listen on.")
@click.option("--port", type=click.IntRange(0, 65535), default=8000, show_default=True, envvar="MLPACK_PORT", help="0: any free port.")
@click.option("--max-body-bytes", type=click.IntRange(min=1), default=1 << 20, show_default=True)
@click.option("--max-batch-rows", type=click.IntRange(min=1), default=10_000, show_default=True)
@click.option("--max-connections", type=click.IntRange(min=1), default=64, show_default=True)
@click.option("--id-column", metavar="FIELD", help="A row field to use as the prediction id (removed before"
              " predicting) [default: an id is generated].")
@_threads_option
@_monitor_options
@click.pass_obj
def serve(
    obj: DeviceContext,
    host: str,
    port: int,
    max_body_bytes: int,
    max_batch_rows: int,
    max_connections: int,
    id_column: str | None,
    threads: int | None,
    state_dir: Path | None,
    no_monitor: bool,
) -> None:
    """Answer POST /predict (a row or a batch), POST /feedback, GET /health, /info, /metrics over HTTP.

    Also MLflow's scoring protocol (POST /invocations) and KServe's Open Inference
    Protocol v2 (/v2/...); GET /openapi.json describes every endpoint.

    Before listening, the bundle is verified and its golden set replayed; an installed
    version that fails hands over to the previously installed one (see /health).
    """
    from mlpack_edge.runtime.server import PredictServer, ServeConfig, limit_malloc_arenas

    limit_malloc_arenas()  # before any request thread: see its docstring for what it saves
    config = ServeConfig(host, port, max_body_bytes, max_batch_rows, max_connections, id_field=id_column)
    fallback = _checked_start(obj, threads)
    switched: list[str] = []
    servers: list[PredictServer] = []
    with _serving_model(obj, threads, state_dir, no_monitor,
                        before_start=lambda agent: _follow_rollouts(obj, agent, switched, servers)) as (model, agent):
        server = PredictServer(
            model,
            config,
            extra_metrics=agent.metrics_text if agent is not None else None,
            health={"fallback": fallback.to_dict()} if fallback is not None else None,
            feedback=agent,
        )
        servers.append(server)
        if agent is not None:
            # The agent's tick thread (prediction ids into SQLite, binning) is the only other
            # thread wanting the GIL; at the default 5 ms switch interval each hand-back kept
            # requests waiting up to 5 ms. 1 ms: single-row p99 medians 113 -> 24, 196 -> 77,
            # 54 -> 34 ms in three interleaved runs (serve_throughput.py), CPU per request unchanged.
            sys.setswitchinterval(0.001)
        if fallback is not None:
            click.echo(
                f"fallback: serving {model.name} {model.version} because {fallback.from_version} failed its check"
                f" at start ({fallback.reason})",
                err=True,
            )
        if host not in ("127.0.0.1", "localhost", "::1"):
            click.echo(f"note: listening on {host}: other machines can query this model", err=True)
        click.echo(f"serving {model.name} {model.version} on {server.url} (Ctrl-C to stop)", err=True)
        _release_free_heap()
        try:
            server.serve_until_signal()  # SIGTERM (the service manager) or SIGINT (Ctrl-C)
        finally:
            server.shutdown()
    click.echo("stopped", err=True)
    if switched and obj.installed is not None:  # a rollout switched current: serve it (systemd restarts by itself)
        from mlpack_edge.runtime.update import restart_into

        launcher = obj.installed.model_dir / "current" / obj.installed.launcher_name
        click.echo(f"restarting into {launcher}", err=True)
        restart_into(launcher, sys.argv[1:])


def _release_free_heap() -> None:
    """Hand the C heap's free pages back to the OS once the model is loaded (glibc ``malloc_trim``).

    Opening the bundle and the onnxruntime session frees more than it keeps (fleet_faults'
    HistGradientBoosting: ~5 MB of a 38 MB idle ``serve``), and glibc keeps freed pages in
    the heap; a long-running server would hold them for nothing. No-op where there is no glibc.
    """
    import ctypes

    try:
        ctypes.CDLL(None).malloc_trim(0)
    except (OSError, AttributeError):
        pass


def _follow_rollouts(obj: DeviceContext, agent: Agent | None, switched: list[str], servers: list[Any]) -> None:
    """Apply the collector's rollout offers from the upload thread; ``switched`` fills in (and
    serve stops) once ``current`` was switched. Only an installed model that uploads takes part."""
    installed = obj.installed
    if agent is None or installed is None or not agent.config.can_upload:
        return
    from mlpack_edge.runtime.update import ServeUpdater

    def on_switch(outcome: Any) -> None:
        click.echo(f"update: {outcome.detail}", err=True)
        if os.environ.get("INVOCATION_ID"):  # under systemd: install restarted the service already
            return
        switched.append(outcome.detail)
        import signal  # here: the module's enums cost every start-up ~0.4 ms

        os.kill(os.getpid(), signal.SIGTERM)  # the graceful stop path: requests finish, the window is stored

    uploader = agent.uploader
    uploader.on_updates = ServeUpdater(installed.model_dir, agent.config, uploader.transport,
                                       lambda: servers[0] if servers else None, on_switch,
                                       emit=agent.outbox.add_window)


def _checked_start(obj: DeviceContext, threads: int | None) -> Fallback | None:
    """Verify and self-test before listening; an installed ``current`` that fails falls back.

    Returns why this version serves as a fallback (``None``: it is the current one). A
    fallback never falls back again.
    """
    from mlpack_edge.runtime._fallback import Fallback, exec_previous, previous_launcher

    arrived = Fallback.from_env()
    try:
        _self_test(obj, threads)
    except MlpackError as exc:
        installed = obj.installed
        target = previous_launcher(installed) if installed is not None and arrived is None else None
        if installed is None or target is None:
            raise
        reason = " ".join(str(exc).split())
        previous = target.parent.name
        detail = {"from_version": installed.version, "to_version": previous, "reason": reason}
        _audit(installed.state_dir, "fallback", detail)
        click.echo(
            f"fallback: {installed.version} failed its check at start ({reason}); serving previous version {previous}",
            err=True,
        )
        try:
            exec_previous(target, Fallback(installed.version, reason), sys.argv[1:])  # no return
        except OSError as err:
            click.echo(f"fallback failed: cannot start {target} ({err.strerror or err})", err=True)
        raise
    return arrived


def _audit(state_dir: Path, event: str, detail: dict[str, Any]) -> None:
    from mlpack_edge.runtime._audit import record

    warning = record(state_dir, event, detail)
    if warning is not None:
        click.echo(warning, err=True)


# ---------------------------------------------------------------------------- monitoring


class _serving_model:
    """``(model, agent)``: the opened model, fed to the monitoring agent when it has a state folder.

    ``one_shot`` (batch ``predict``): the agent runs no threads and touches the disk only
    when it stores a window (at exit, for a short run): see :mod:`mlpack_edge.monitor_agent.agent`.
    """

    def __init__(
        self, obj: DeviceContext, threads: int | None, state_dir: Path | None, no_monitor: bool, one_shot: bool = False,
        before_start: Callable[[Agent | None], Any] | None = None,
    ) -> None:
        self.obj, self.threads, self.state_dir, self.no_monitor = obj, threads, state_dir, no_monitor
        self.one_shot = one_shot
        self.before_start = before_start  # sees the agent before its threads run (serve's rollout hook)
        self.agent: Agent | None = None

    def __enter__(self) -> tuple[Model, Agent | None]:
        from mlpack_edge.runtime.model import Model

        bundle = self.obj.bundle()
        self.agent = None if self.no_monitor else _open_agent(self.obj, bundle, self.state_dir, self.one_shot)
        try:
            model = Model(bundle, threads=self.threads, recorder=self.agent.recorder if self.agent else None)
        except BaseException:
            if self.agent is not None:
                self.agent.stop()  # closes the outbox it opened
            raise
        if self.before_start is not None:
            self.before_start(self.agent)
        if self.agent is not None and not self.one_shot:
            self.agent.start()
        from mlpack_edge.runtime._startup import resume_gc

        resume_gc(collect=not self.one_shot)  # start-up is over (see _startup): a server keeps no start-up cycles
        return model, self.agent

    def __exit__(self, *exc: object) -> None:
        if self.agent is not None:
            self.agent.stop()


def _open_agent(obj: DeviceContext, bundle: Bundle, state_dir: Path | None, one_shot: bool) -> Agent | None:
    """The agent for ``bundle``, or ``None`` when this model was never set up for monitoring here."""
    if "profile.json" not in bundle.manifest.files:
        return None
    state = state_dir
    if state is None:
        state = obj.state_dir
        if state is None or not state.is_dir():
            return None  # never configured here: do not litter a workstation with state folders
    from mlpack_edge.monitor_agent.agent import Agent

    try:
        return Agent.open(obj.model_info(), state, deferred=one_shot)
    except MlpackError as exc:
        click.echo(f"warning: monitoring is off ({exc})", err=True)
        return None


# ---------------------------------------------------------------------------- entry point


def main(argv: list[str] | None = None) -> None:
    """Entry point of the device executable: ``prog_name`` is the model's name.

    Called with the process's own command line (``argv`` is ``None``: the executable,
    ``python -m mlpack_edge.runtime.cli``), the process ends as soon as the command is done,
    without tearing the interpreter down (:func:`_end_process`). With an explicit
    ``argv`` it raises ``SystemExit`` like any click command, for callers that go on.
    """
    prog = "mlpack-device"
    try:
        found = _embedded_bundle()
        if found is not None:
            from mlpack_edge.runtime.manifest import read_manifest

            prog = read_manifest(found).name
    except MlpackError:
        pass
    if argv is not None:
        device_cli.main(args=argv, prog_name=prog)
        return
    try:
        device_cli.main(prog_name=prog)
    except SystemExit as exc:
        _end_process(exc.code)
        raise


def _end_process(code: object) -> None:
    """Flush, run the ``atexit`` hooks, and leave with ``os._exit``: no interpreter teardown.

    Tearing down numpy, onnxruntime and their thread pools at exit costs ~30-40 ms, as
    much as everything mlpack adds to a one-row ``predict`` (benchmarks/executable.py).
    Nothing is lost by skipping it: every command has closed what it wrote (output files
    are complete and renamed, the agent's outbox closed) before it returns, ``atexit``
    hooks still run (``logging.shutdown``), and stdout/stderr are flushed here. Returns
    (the caller then exits normally) while a non-daemon thread still runs, which a normal
    exit would wait for.
    """
    import atexit
    import threading

    if any(t.is_alive() and not t.daemon for t in threading.enumerate() if t is not threading.main_thread()):
        return
    if code is None:
        status = 0
    elif isinstance(code, int):
        status = code
    else:  # sys.exit("message"): printed, status 1, as Python does
        print(code, file=sys.stderr)
        status = 1
    atexit._run_exitfuncs()
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except (OSError, ValueError):  # a closed pipe (`| head`) or closed stream
            status = status or 120  # what Python's own exit reports when stdout cannot be flushed
    os._exit(status)


def _embedded_bundle() -> Path | None:
    """The bundle shipped with a frozen executable; ``None`` for plain Python.

    ``embedded_bundle()`` answers ``None`` unless frozen anyway; not importing it then
    spares plain-Python start-up its zipfile/lzma/bz2 imports.
    """
    if not getattr(sys, "frozen", False):
        return None
    try:
        from mlpack_edge.runtime.embedded import embedded_bundle
    except ImportError:
        return None
    found = embedded_bundle()
    return Path(found) if found is not None else None


if __name__ == "__main__":  # pragma: no cover
    main()
