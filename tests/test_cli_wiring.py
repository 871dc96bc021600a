"""Every lazily registered command resolves and shows its help.

The top-level ``mlpack`` group and the device group name their subcommands as
``"module:attribute"`` strings; a renamed module or attribute would only fail when a
user runs that command. Here every one of them is loaded and asked for ``--help``.
"""

from __future__ import annotations

import click
import pytest
from click.testing import CliRunner

from mlpack._cli import MlpackGroup
from mlpack.cli import main
from mlpack.runtime.cli import device_cli


def _lazy(group: MlpackGroup) -> list[str]:
    return sorted(group.lazy)


@pytest.mark.parametrize("name", _lazy(main))
def test_mlpack_subcommand_resolves(name: str) -> None:
    cmd = main.get_command(click.Context(main), name)
    assert isinstance(cmd, click.Command)
    result = CliRunner().invoke(main, [name, "--help"])
    assert result.exit_code == 0, result.output
    assert "Usage:" in result.output


@pytest.mark.parametrize("name", _lazy(device_cli))
def test_device_subcommand_resolves(name: str) -> None:
    cmd = device_cli.get_command(click.Context(device_cli), name)
    assert isinstance(cmd, click.Command)
    result = CliRunner().invoke(device_cli, [name, "--help"])
    assert result.exit_code == 0, result.output
    assert "Usage:" in result.output


def test_top_level_help_lists_every_command() -> None:
    result = CliRunner().invoke(main, ["--help"])
    assert result.exit_code == 0
    for name in main.lazy:
        assert f"  {name} " in result.output
