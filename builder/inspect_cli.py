"""``mlpack inspect PATH``: parse the arguments, call :func:`mlpack_edge.builder.inspect.inspect_path`, print.

Exit codes: 0 the bundle or executable is intact; 1 it is not a bundle/executable, or a
file, the signature or the runtime is damaged (everything is still printed, then one
``Error:`` line names the first problem); 2 a usage error. With ``--json`` a JSON
document goes to stdout in every case: the inspection (intact or damaged), or
``{"ok": false, "error": {"type", "message"}}`` when PATH cannot be inspected at all, so a
pipeline can always read why.
"""

from __future__ import annotations

import json
from pathlib import Path

import click

from mlpack_edge._cli import echo_json_error, fail
from mlpack_edge.errors import IntegrityError, MlpackError

__all__ = ["inspect_command"]


@click.command("inspect")
@click.argument("path", metavar="BUNDLE|EXECUTABLE", type=click.Path(path_type=Path))
@click.option(
    "--trust-key",
    "trust_keys",
    multiple=True,
    type=click.Path(path_type=Path, dir_okay=False),
    help="Public key file; a signature by any other key is reported as a problem. Repeatable.",
)
@click.option("--json", "as_json", is_flag=True, help="Print one JSON document (for scripts).")
def inspect_command(path: Path, trust_keys: tuple[Path, ...], as_json: bool) -> None:
    """Show what a bundle folder or a device executable holds, without running it.

    Name, version, owner and intended use, the content hash, features, classes, metrics
    and gates, parity, lineage, every file with its size and integrity, the signature,
    and for an executable its frozen runtime and appended bundle.
    """
    from mlpack_edge.builder._inspect_text import render_text
    from mlpack_edge.builder.inspect import inspect_path

    try:
        result = inspect_path(path, trust_keys)
    except MlpackError as exc:
        if as_json:
            echo_json_error(exc)
        raise fail(exc) from None
    if as_json:
        click.echo(json.dumps(result.to_dict(), indent=2, sort_keys=True))
    else:
        click.echo(render_text(result))
    if result.problems:
        raise fail(IntegrityError(result.problems[0]))
