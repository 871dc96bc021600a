"""Shell completion as the README documents it (click's ``_<PROG>_COMPLETE``), lazy
subcommands included: completing them must not need them imported first."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest


def complete(cmd: list[str], var: str, words: str, cword: int) -> list[str]:
    env = {**os.environ, var: "bash_complete", "COMP_WORDS": words, "COMP_CWORD": str(cword)}
    out = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    return out.stdout.split()


def test_mlpack_completes_commands_subcommands_and_options() -> None:
    mlpack = Path(sys.executable).with_name("mlpack")
    if not mlpack.exists():
        pytest.skip("the mlpack console script is not installed next to this Python")
    source = subprocess.run([str(mlpack)], env={**os.environ, "_MLPACK_COMPLETE": "bash_source"},
                            capture_output=True, text=True, timeout=60)
    assert "complete -o nosort -F _mlpack_completion mlpack" in source.stdout
    assert complete([str(mlpack)], "_MLPACK_COMPLETE", "mlpack coll", 1) == ["plain,collector"]
    assert complete([str(mlpack)], "_MLPACK_COMPLETE", "mlpack collector li", 2) == ["plain,list-devices", "plain,list-webhooks"]
    assert "plain,--fail-on" not in complete([str(mlpack)], "_MLPACK_COMPLETE", "mlpack build --j", 2)
    assert complete([str(mlpack)], "_MLPACK_COMPLETE", "mlpack build --j", 2) == ["plain,--json"]


def test_the_device_command_completes_its_lazy_commands() -> None:
    cmd = [sys.executable, "-m", "mlpack_edge.runtime.cli"]  # prog name mlpack-device (the model's name when frozen)
    assert complete(cmd, "_MLPACK_DEVICE_COMPLETE", "mlpack-device st", 1) == ["plain,status"]
    assert complete(cmd, "_MLPACK_DEVICE_COMPLETE", "mlpack-device status --fail-on ", 3) == ["plain,drift", "plain,warn"]
