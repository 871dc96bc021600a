"""``mlpack build``: parse the arguments, call :func:`mlpack.builder.build`, show the result.

Imports nothing heavy at module level: ``mlpack build --help`` must not load
scikit-learn. Errors are the library's :class:`~mlpack.errors.MlpackError`, shown as one
line with exit code 1; with ``--json`` a JSON result is printed on stdout first, so a CI
pipeline can read why a build failed as well as that it failed.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import click

from mlpack._cli import fail
from mlpack.errors import GateError, MlpackError

__all__ = ["build"]


@click.command("build")
@click.argument("spec", required=False, default="mlpack.toml", type=click.Path(path_type=Path))
@click.option(
    "-o",
    "--out",
    "out_dir",
    type=click.Path(path_type=Path, file_okay=False),
    help="Folder for the bundle and executable  [default: ./dist]",
)
@click.option("--no-executable", is_flag=True, help="Write the bundle only; do not freeze the device executable.")
@click.option("--json", "as_json", is_flag=True, help="Print one JSON result on stdout (for CI) instead of progress.")
@click.option("-q", "--quiet", is_flag=True, help="Print nothing but errors.")
def build(spec: Path, out_dir: Path | None, no_executable: bool, as_json: bool, quiet: bool) -> None:
    """Train, gate, convert and bundle the model described by SPEC.

    SPEC is a spec file or a folder holding mlpack.toml (default: ./mlpack.toml).
    The bundle goes to OUT/<name>-<version>/; a failed build writes nothing.
    """
    from mlpack.builder import pipeline, progress

    reporter: Any
    if as_json:
        reporter = progress.RecordingReporter()
    elif quiet:
        reporter = progress.NullReporter()
    else:
        reporter = progress.ConsoleReporter()
        click.echo(f"mlpack build {spec}")
    try:
        result = pipeline.build(spec, out_dir, executable=not no_executable, reporter=reporter)
    except MlpackError as exc:
        if as_json:
            click.echo(json.dumps(_failure(exc, reporter.stages()), indent=2, sort_keys=True))
        raise fail(exc) from None
    if as_json:
        click.echo(json.dumps(result.to_dict(), indent=2, sort_keys=True))
    elif not quiet:
        click.echo(f"built {result.bundle_dir} (manifest sha256 {result.content_hash[:16]})")
        if result.executable is not None:
            click.echo(f"device executable {result.executable}")


def _failure(exc: MlpackError, stages: list[dict[str, object]]) -> dict[str, Any]:
    error: dict[str, Any] = {"type": type(exc).__name__, "message": str(exc)}
    if isinstance(exc, GateError):
        error["failures"] = [{"gate": g, "value": v} for g, v in exc.failures]
    return {"ok": False, "error": error, "stages": stages}
