"""What every mlpack command line shares: lazy subcommands and the error contract.

Library code raises :class:`mlpack_edge.errors.MlpackError`; :class:`MlpackGroup` is the only
place it becomes a one-line ``click.ClickException`` (exit 1). Usage mistakes stay
click's (exit 2). A command with ``--json`` prints :func:`error_document` on stdout
before failing, so a script that reads stdout learns why as well as that it failed. Subcommands are imported only when run, so ``mlpack build`` never
pays for the collector's web stack and the device CLI starts fast.
"""

from __future__ import annotations

import importlib
import json
from collections.abc import Mapping
from typing import Any

import click

from mlpack_edge.errors import MlpackError

__all__ = ["MlpackGroup", "fail", "error_document", "echo_json_error"]


def error_document(exc: MlpackError, **extra: Any) -> dict[str, Any]:
    """``{"ok": false, "error": {"type", "message"}, ...extra}``: the ``--json`` face of a failure."""
    message = " ".join(str(exc).split("\n")).strip() or exc.__class__.__name__
    return {"ok": False, "error": {"type": type(exc).__name__, "message": message}, **extra}


def echo_json_error(exc: MlpackError, **extra: Any) -> None:
    """Print :func:`error_document` on stdout (the one-line ``Error:`` still goes to stderr)."""
    click.echo(json.dumps(error_document(exc, **extra), indent=2, sort_keys=True))


def fail(exc: MlpackError) -> click.ClickException:
    """The CLI face of a library error: its one-line message, exit code 1."""
    message = " ".join(str(exc).split("\n")).strip() or exc.__class__.__name__
    err = click.ClickException(message)
    err.exit_code = exc.exit_code
    return err


class MlpackGroup(click.Group):
    """A click group with ``lazy`` subcommands: name -> ``("module:attribute", short help)``.

    ``--help`` lists lazy commands from their short help without importing them.
    """

    def __init__(
        self, *args: Any, lazy: Mapping[str, tuple[str, str]] | None = None, **kwargs: Any
    ) -> None:
        super().__init__(*args, **kwargs)
        self.lazy = dict(lazy or {})

    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted(set(super().list_commands(ctx)) | set(self.lazy))

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        if cmd_name in self.lazy and cmd_name not in self.commands:
            module_name, attr = self.lazy[cmd_name][0].split(":")
            command = getattr(importlib.import_module(module_name), attr)
            self.add_command(command, cmd_name)
        return super().get_command(ctx, cmd_name)

    def format_commands(self, ctx: click.Context, formatter: click.HelpFormatter) -> None:
        rows = []
        for name in self.list_commands(ctx):
            if name in self.commands:
                cmd = self.commands[name]
                if cmd.hidden:
                    continue
                rows.append((name, cmd.get_short_help_str(limit=formatter.width)))
            else:
                rows.append((name, self.lazy[name][1]))
        if rows:
            with formatter.section("Commands"):
                formatter.write_dl(rows)

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except MlpackError as exc:
            raise fail(exc) from None
