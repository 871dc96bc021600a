"""The device command: ``<model> predict | serve | info | verify`` (+ install, agent, status).

The same click group runs as ``mlpack device --bundle DIR ...`` on a workstation and as
the frozen executable ``<model> ...`` on a device, where the bundle is the one shipped
with it (:func:`mlpack.runtime.embedded.embedded_bundle`). Each command parses its
options, calls one library function and formats the result; imports are lazy so
``predict`` starts about as fast as ``import numpy, onnxruntime`` allows.

Exit codes: 0 success; 1 a domain failure (one line on stderr: bad bundle, bad input
file, a port in use, a failed self-test, or — for ``predict`` — any row that failed
validation, the output still being complete); 2 a usage error.

Monitoring: ``serve`` and ``predict`` feed the monitoring agent when the model has a
state folder — ``--state-dir`` / ``$MLPACK_STATE_DIR`` (the installed service sets it),
the ``state`` folder of an installed version, or an existing
``~/.local/state/mlpack/<name>`` — and the bundle has a reference profile.
``--no-monitor`` turns it off.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click

from mlpack._cli import MlpackGroup
from mlpack.errors import MlpackError

if TYPE_CHECKING:
    from mlpack.monitor_agent.agent import Agent, ModelInfo
    from mlpack.runtime.bundle import Bundle
    from mlpack.runtime.model import Model

__all__ = ["device_cli", "main"]

_LAZY = {
    "install": ("mlpack.runtime.install_cli:install", "Install this model on this machine (versioned, atomic)."),
    "rollback": ("mlpack.runtime.install_cli:rollback", "Switch back to the previously installed version."),
    "uninstall": ("mlpack.runtime.install_cli:uninstall", "Remove this model's installed versions."),
    "agent": ("mlpack.monitor_agent.cli:agent", "Deliver recorded telemetry to the collector."),
    "status": ("mlpack.monitor_agent.cli:status", "Drift, errors and latency recorded on this device."),
}
_STATE_ROOT = Path("~/.local/state/mlpack")


class DeviceContext:
    """What the device commands share: where the bundle is, opened at most once.

    ``state_dir`` and ``model_info`` are what ``mlpack.monitor_agent.cli`` looks for.
    """

    def __init__(self, explicit: Path | None) -> None:
        self.explicit = explicit
        self._bundle: Bundle | None = None
        self._embedded = False

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
            from mlpack.runtime.bundle import Bundle

            self._bundle = Bundle.open(self.bundle_path())
        return self._bundle

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
        installed = Path(bundle.location).parent.parent / "state"  # <prefix>/<name>/<version>/bundle
        if self._embedded and installed.is_dir():
            return installed
        return _STATE_ROOT.expanduser() / bundle.manifest.name

    def model_info(self) -> ModelInfo:
        from mlpack.monitor_agent.agent import ModelInfo

        bundle = self.bundle()
        return ModelInfo.from_bundle_bytes(bundle.manifest.raw, bundle.read("profile.json"), bundle.location)


@click.group(
    cls=MlpackGroup,
    lazy=_LAZY,
    context_settings={"help_option_names": ["-h", "--help"]},
)
@click.option(
    "--bundle",
    type=click.Path(exists=True, path_type=Path),
    envvar="MLPACK_BUNDLE",
    help="Bundle folder or archive [default: the one shipped with this executable; $MLPACK_BUNDLE].",
)
@click.pass_context
def device_cli(ctx: click.Context, bundle: Path | None) -> None:
    """Run this model offline: batch predict, local HTTP serve, self-checks, install."""
    ctx.obj = DeviceContext(bundle)


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
    from mlpack.runtime._describe import describe_manifest

    click.echo(describe_manifest(bundle.manifest, bundle.location))


@device_cli.command("verify")
@_threads_option
@click.pass_obj
def verify(obj: DeviceContext, threads: int | None) -> None:
    """Check every file against the manifest, then replay the golden set on this CPU."""
    from mlpack.errors import ParityError
    from mlpack.runtime.model import Model
    from mlpack.runtime.selftest import self_test

    report = self_test(Model(obj.bundle(), threads=threads))
    if not report.passed:
        raise ParityError(report.describe())
    click.echo(f"OK: {report.describe()}")


# ---------------------------------------------------------------------------- predict


@device_cli.command("predict")
@click.argument("input_path", metavar="[INPUT]", default="-", type=click.Path(dir_okay=False, allow_dash=True))
@click.option("-o", "--output", default="-", type=click.Path(dir_okay=False, allow_dash=True), help="Output file [stdout].")
@click.option("--format", "in_format", type=click.Choice(["csv", "jsonl"]), help="Input format [from the suffix, else sniffed].")
@click.option("--output-format", type=click.Choice(["csv", "jsonl"]), help="Output format [as the input].")
@click.option("--keep", multiple=True, metavar="COLUMN", help="Copy an input column (an id) to the output; repeatable.")
@click.option("--chunk-rows", type=click.IntRange(min=1), default=2048, show_default=True, help="Rows per inference call.")
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
    threads: int | None,
    state_dir: Path | None,
    no_monitor: bool,
) -> None:
    """Predict each row of INPUT (CSV or JSON Lines; default stdin), streaming.

    One output row per input row, in order: the prediction columns, then 'error' (empty
    for a good row). Bad rows are also listed on stderr, numbered from 1 (the CSV header
    is not a row); if any row failed, the exit code is 1 — the output is still complete.
    """
    from mlpack.runtime.io import detect_format, predict_stream
    from mlpack.runtime.session import batch_threads

    report = _ErrorEcho()
    with _serving_model(obj, threads or batch_threads(), state_dir, no_monitor) as (model, _agent):
        with _input_lines(input_path) as lines:
            first = next(lines, "")
            fmt = in_format or detect_format(None if input_path == "-" else input_path, first)
            try:
                with _output_stream(output) as out:
                    summary = predict_stream(
                        model, _prepend(first, lines), out, in_format=fmt, out_format=output_format or fmt,
                        keep=keep, chunk_rows=chunk_rows, where=input_path if input_path != "-" else "stdin",
                        on_error=report,
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
    """Text lines of a file or stdin (UTF-8, a leading BOM dropped, newlines kept for csv)."""

    def __init__(self, path: str) -> None:
        self.path = path

    def __enter__(self) -> Iterator[str]:
        if self.path == "-":
            import io

            self._fh = io.TextIOWrapper(sys.stdin.buffer, encoding="utf-8-sig", newline="")
        else:
            try:
                self._fh = open(self.path, encoding="utf-8-sig", newline="")  # noqa: SIM115 - closed in __exit__
            except OSError as exc:
                raise click.FileError(self.path, exc.strerror) from None
        return iter(self._fh)

    def __exit__(self, *exc: object) -> None:
        if self.path != "-":
            self._fh.close()
        else:
            self._fh.detach()


class _output_stream:
    """stdout, or a file that only appears once complete."""

    def __init__(self, path: str) -> None:
        self.path = path

    def __enter__(self) -> Any:
        if self.path == "-":
            return sys.stdout
        from mlpack.runtime.io import atomic_text_output

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
    threads: int | None,
    state_dir: Path | None,
    no_monitor: bool,
) -> None:
    """Answer POST /predict (a row or a batch), GET /health, /info, /metrics over HTTP."""
    import signal

    from mlpack.runtime.server import PredictServer, ServeConfig

    config = ServeConfig(host, port, max_body_bytes, max_batch_rows, max_connections)
    with _serving_model(obj, threads, state_dir, no_monitor) as (model, agent):
        server = PredictServer(model, config, extra_metrics=agent.metrics_text if agent is not None else None)
        if host not in ("127.0.0.1", "localhost", "::1"):
            click.echo(f"note: listening on {host}: other machines can query this model", err=True)
        click.echo(f"serving {model.name} {model.version} on {server.url} (Ctrl-C to stop)", err=True)

        def stop(signum: int, frame: Any) -> None:
            raise KeyboardInterrupt

        signal.signal(signal.SIGTERM, stop)
        try:
            server.serve_forever()
        except KeyboardInterrupt:
            pass
        finally:
            server.shutdown()
    click.echo("stopped", err=True)


# ---------------------------------------------------------------------------- monitoring


class _serving_model:
    """``(model, agent)``: the opened model, fed to the monitoring agent when it has a state folder."""

    def __init__(self, obj: DeviceContext, threads: int | None, state_dir: Path | None, no_monitor: bool) -> None:
        self.obj, self.threads, self.state_dir, self.no_monitor = obj, threads, state_dir, no_monitor
        self.agent: Agent | None = None

    def __enter__(self) -> tuple[Model, Agent | None]:
        from mlpack.runtime.model import Model

        bundle = self.obj.bundle()
        self.agent = None if self.no_monitor else _open_agent(self.obj, bundle, self.state_dir)
        try:
            model = Model(bundle, threads=self.threads, recorder=self.agent.recorder if self.agent else None)
        except BaseException:
            if self.agent is not None:
                self.agent.stop()  # closes the outbox it opened
            raise
        if self.agent is not None:
            self.agent.start()
        return model, self.agent

    def __exit__(self, *exc: object) -> None:
        if self.agent is not None:
            self.agent.stop()


def _open_agent(obj: DeviceContext, bundle: Bundle, state_dir: Path | None) -> Agent | None:
    """The agent for ``bundle``, or ``None`` when this model was never set up for monitoring here."""
    if "profile.json" not in bundle.manifest.files:
        return None
    state = state_dir
    if state is None:
        state = obj.state_dir
        if state is None or not state.is_dir():
            return None  # never configured here: do not litter a workstation with state folders
    from mlpack.monitor_agent.agent import Agent

    try:
        return Agent.open(obj.model_info(), state)
    except MlpackError as exc:
        click.echo(f"warning: monitoring is off ({exc})", err=True)
        return None


# ---------------------------------------------------------------------------- entry point


def main(argv: list[str] | None = None) -> None:
    """Entry point of the device executable: ``prog_name`` is the model's name."""
    prog = "mlpack-device"
    try:
        found = _embedded_bundle()
        if found is not None:
            from mlpack.runtime.manifest import read_manifest

            prog = read_manifest(found).name
    except MlpackError:
        pass
    device_cli.main(args=argv, prog_name=prog)


def _embedded_bundle() -> Path | None:
    """The bundle shipped with a frozen executable; ``None`` for plain Python.

    ``embedded_bundle()`` answers ``None`` unless frozen anyway; not importing it then
    spares plain-Python start-up its zipfile/lzma/bz2 imports.
    """
    if not getattr(sys, "frozen", False):
        return None
    try:
        from mlpack.runtime.embedded import embedded_bundle
    except ImportError:
        return None
    found = embedded_bundle()
    return Path(found) if found is not None else None


if __name__ == "__main__":  # pragma: no cover
    main()
