"""``status`` and ``agent sync|config`` through click, as the device command runs them."""

from __future__ import annotations

import json
import random
import socket
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from mlpack_edge.monitor_agent.agent import Agent, ModelInfo
from mlpack_edge.monitor_agent.cli import agent, status
from mlpack_edge.monitor_agent.config import AgentConfig, write_config

from .helpers import FakeClock, FakeCollector, fixed_sampler, traffic


@dataclass
class Obj:
    """What the runtime's device group puts on ``ctx.obj``."""

    state_dir: Path | None
    info: ModelInfo | None = None

    def model_info(self) -> ModelInfo:
        assert self.info is not None
        return self.info


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _record(state: Path, model: ModelInfo, windows: int, shift: float = 0.0) -> None:
    clock = FakeClock(time.time() - 60 * (windows + 1))
    a = Agent.open(model, state, AgentConfig(), clock=clock, transport=FakeCollector(), rng=random.Random(0),
                   sampler=fixed_sampler)
    rng = np.random.default_rng(0)
    for _ in range(windows):
        a.recorder.record(*traffic(rng, 200, shift), 0.003)
        clock.advance(60)
        a.tick()
    a.outbox.close()


def test_status_human_and_json(tmp_path: Path, model: ModelInfo) -> None:
    _record(tmp_path, model, 3, shift=12.0)
    runner = CliRunner()
    res = runner.invoke(status, [], obj=Obj(tmp_path, model))
    assert res.exit_code == 0, res.output
    lines = res.output.splitlines()
    assert lines[0].startswith("churn 1.2.0  model abababababab  ")
    assert lines[1].startswith("requests 3  rows 600  errors none")
    assert "overall: DRIFT" in lines
    age = next(line for line in lines if line.startswith("age "))
    assert age.endswith(" drift")
    assert "outbox: 3 pending, 0 delivered, 0 merged, 0 dropped, 0 dead-letter (of 3 produced)" in res.output
    res = runner.invoke(status, ["--json", "--state-dir", str(tmp_path)])  # model from the outbox itself
    assert res.exit_code == 0, res.output
    data = json.loads(res.output)
    assert (data["name"], data["rows"], data["status"]) == ("churn", 600, "drift")
    assert {f["name"] for f in data["features"]} == {"age", "income", "colour", "score"}
    assert data["prediction"]["name"] == "prediction" and data["outbox"]["pending"] == 3


def test_status_fail_on_exits_7_at_or_above_the_level_after_printing(tmp_path: Path, model: ModelInfo) -> None:
    drifting, steady = tmp_path / "drifting", tmp_path / "steady"
    _record(drifting, model, 3, shift=12.0)
    _record(steady, model, 3)
    runner = CliRunner()
    calm = json.loads(runner.invoke(status, ["--json"], obj=Obj(steady, model)).stdout)["status"]
    assert calm in ("ok", "warn")  # 600 unshifted rows: sampling noise may reach warn, never drift
    cases = [(drifting, "drift", 7), (drifting, "warn", 7), (steady, "drift", 0), (steady, "warn", 7 if calm == "warn" else 0)]
    for state, fail_on, code in cases:
        res = runner.invoke(status, ["--fail-on", fail_on], obj=Obj(state, model))
        assert res.exit_code == code, (state.name, fail_on, res.output)
        assert f"overall: {'DRIFT' if state is drifting else calm.upper()}" in res.stdout.splitlines()
        assert res.stderr == ""
    res = runner.invoke(status, ["--fail-on", "drift", "--json"], obj=Obj(drifting, model))
    assert res.exit_code == 7 and json.loads(res.stdout)["status"] == "drift"
    res = runner.invoke(status, [], obj=Obj(drifting, model))
    assert res.exit_code == 0  # without --fail-on the status is reported, not judged
    res = runner.invoke(status, ["--fail-on", "sometimes"], obj=Obj(drifting, model))
    assert res.exit_code == 2 and "'sometimes' is not one of 'drift', 'warn'" in res.stderr


def test_status_errors_are_one_line(tmp_path: Path) -> None:
    runner = CliRunner()
    res = runner.invoke(status, ["--state-dir", str(tmp_path)])
    assert res.exit_code == 1
    assert res.output == f"Error: {tmp_path}: no telemetry recorded here yet (no outbox.sqlite)\n"
    res = runner.invoke(status, ["--state-dir", str(tmp_path), "--json"])
    assert (res.exit_code, res.stderr) == (1, f"Error: {tmp_path}: no telemetry recorded here yet (no outbox.sqlite)\n")
    assert json.loads(res.stdout) == {
        "ok": False,
        "error": {"type": "AgentError", "message": f"{tmp_path}: no telemetry recorded here yet (no outbox.sqlite)"},
    }
    res = runner.invoke(status, [], obj=Obj(None))
    assert res.exit_code == 2 and "no model state folder: pass --state-dir" in res.output


def test_sync_exit_codes_without_a_collector(tmp_path: Path, model: ModelInfo) -> None:
    runner = CliRunner()
    res = runner.invoke(agent, ["sync"], obj=Obj(tmp_path))
    assert res.exit_code == 1
    assert "Error: cannot upload: collector_url, device_id, token not configured" in res.output
    write_config(tmp_path, AgentConfig(f"http://127.0.0.1:{_closed_port()}", "press-07", "tok"))
    res = runner.invoke(agent, ["sync"], obj=Obj(tmp_path))
    assert (res.exit_code, res.output) == (3, "nothing to deliver\n")
    _record(tmp_path, model, 2)
    res = runner.invoke(agent, ["sync"], obj=Obj(tmp_path))
    assert res.exit_code == 4
    assert res.output.startswith("collector unreachable, 2 windows kept for later (127.0.0.1:")


def test_config_shows_the_effective_settings_without_the_token(tmp_path: Path) -> None:
    write_config(tmp_path, AgentConfig("http://collector.local", "press-07", "very-secret"))
    token_file = tmp_path / "other.token"
    token_file.write_text("another-secret\n")
    res = CliRunner().invoke(
        agent, ["config", "--json", "--device-id", "press-08", "--token-file", str(token_file), "--cap", "1MB"],
        obj=Obj(tmp_path), env={"MLPACK_WINDOW_SECONDS": "30"},
    )
    assert res.exit_code == 0, res.output
    assert json.loads(res.output) == {
        "cap_bytes": 1048576, "collector_url": "http://collector.local", "device_id": "press-08",
        "token": "set", "window_seconds": 30.0,
    }
    assert "secret" not in res.output


@pytest.mark.parametrize("cmd", [["sync"], ["run"], ["config"]])
def test_agent_commands_need_a_state_dir(cmd: list[str]) -> None:
    res = CliRunner().invoke(agent, cmd, obj=Obj(None))
    assert res.exit_code == 2 and "no model state folder" in res.output
