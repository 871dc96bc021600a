"""The install commands as a user meets them: exit codes and one-line messages."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import click
from click.testing import CliRunner

from mlpack_edge._cli import MlpackGroup
from mlpack_edge.runtime.install import Payload, install

from .conftest import UNSIGNED_OK, FakeSystemd

_LAZY = {
    name: (f"mlpack_edge.runtime.install_cli:{name}", f"{name} help")
    for name in ("install", "rollback", "uninstall")
}


@click.group(cls=MlpackGroup, lazy=_LAZY)
def device() -> None:
    """Stands in for the device group that registers these commands lazily."""


def _run(*args: str) -> tuple[int, str]:
    result = CliRunner().invoke(device, list(args))
    return result.exit_code, result.output


def test_install_from_plain_python_is_refused() -> None:
    code, out = _run("install", "--prefix", "/nonexistent")
    assert (code, out) == (
        1,
        "Error: install runs from a device executable (dist/<name>-<version>-<platform>), not from plain Python\n",
    )


def test_bad_agent_settings_fail_before_anything_is_installed(tmp_path: Path) -> None:
    code, out = _run("install", "--prefix", str(tmp_path), "--collector-url", "ftp://x")
    assert (code, out) == (1, "Error: agent settings: collector_url must be an http(s) URL, got 'ftp://x'\n")
    code, out = _run("install", "--prefix", str(tmp_path), "--token-file", str(tmp_path / "missing"))
    assert code == 1
    assert out == f"Error: --token-file {tmp_path / 'missing'}: cannot read (No such file or directory)\n"
    assert list(tmp_path.iterdir()) == []


def test_rollback_and_uninstall_by_name(
    make_payload: Callable[..., Payload], tmp_path: Path, no_systemd: FakeSystemd
) -> None:
    prefix = tmp_path / "opt"
    install(make_payload("1.0.0"), prefix, trust=UNSIGNED_OK, systemd=no_systemd)
    install(make_payload("2.0.0"), prefix, trust=UNSIGNED_OK, systemd=no_systemd)
    code, out = _run("rollback", "--prefix", str(prefix), "--name", "toy")
    assert code == 0, out
    assert out.splitlines()[0] == "rolled back toy to 1.0.0 (was 2.0.0)"
    code, out = _run("uninstall", "--prefix", str(prefix), "--name", "toy", "--purge")
    assert (code, out.splitlines()[0]) == (0, f"uninstalled toy from {prefix / 'toy'}")
    assert not (prefix / "toy").exists()


def test_rollback_of_a_model_not_installed(tmp_path: Path) -> None:
    code, out = _run("rollback", "--prefix", str(tmp_path), "--name", "toy")
    assert (code, out) == (1, f"Error: toy is not installed under {tmp_path}\n")


def test_rollback_without_name_outside_an_executable(tmp_path: Path) -> None:
    code, out = _run("rollback", "--prefix", str(tmp_path))
    assert (code, out) == (1, "Error: not running from a device executable: pass --name\n")


def test_prefix_from_the_environment(make_payload: Callable[..., Payload], tmp_path: Path, no_systemd: FakeSystemd) -> None:
    prefix = tmp_path / "opt"
    install(make_payload("1.0.0"), prefix, trust=UNSIGNED_OK, systemd=no_systemd)
    result = CliRunner().invoke(device, ["uninstall", "--name", "toy"], env={"MLPACK_PREFIX": str(prefix)})
    assert result.exit_code == 0, result.output
    assert (prefix / "toy").is_dir() and not (prefix / "toy" / "current").exists()
