"""Every lazily registered command resolves and shows its help.

The top-level ``mlpack`` group and the device group name their subcommands as
``"module:attribute"`` strings; a renamed module or attribute would only fail when a
user runs that command. Here every one of them is loaded and asked for ``--help``.
"""

from __future__ import annotations

import click
import pytest
from click.testing import CliRunner

from mlpack_edge._cli import MlpackGroup
from mlpack_edge.cli import main
from mlpack_edge.runtime.cli import device_cli


GROUPS = {"mlpack": main, "device": device_cli}


@pytest.mark.parametrize(
    ("group", "name"), [(g, n) for g, cmd in GROUPS.items() for n in sorted(cmd.lazy)]
)
def test_lazy_subcommand_resolves(group: str, name: str) -> None:
    cli = GROUPS[group]
    assert isinstance(cli, MlpackGroup)
    cmd = cli.get_command(click.Context(cli), name)
    assert isinstance(cmd, click.Command)
    result = CliRunner().invoke(cli, [name, "--help"])
    assert result.exit_code == 0, result.output
    assert "Usage:" in result.output


def test_top_level_help_lists_every_command() -> None:
    result = CliRunner().invoke(main, ["--help"])
    assert result.exit_code == 0
    for name in main.lazy:
        assert f"  {name} " in result.output
