"""Configuration: install-time file, environment and flags, a token that never shows."""

from __future__ import annotations

import stat
from pathlib import Path

import pytest

from mlpack_edge.errors import AgentError
from mlpack_edge.monitor_agent.config import AgentConfig, load_config, write_config

TOKEN = "s3cr3t-token-value"


def test_written_config_round_trips_with_a_private_token_file(tmp_path: Path) -> None:
    cfg = AgentConfig("https://collector.example:8443", "press-07", TOKEN, 30.0, 1024 * 1024)
    path = write_config(tmp_path, cfg)
    assert path == tmp_path / "agent.json"
    assert TOKEN not in path.read_text()
    assert stat.S_IMODE((tmp_path / "agent.token").stat().st_mode) == 0o600
    assert load_config(tmp_path, environ={}) == cfg


def test_environment_overrides_file_and_flags_override_both(tmp_path: Path) -> None:
    write_config(tmp_path, AgentConfig("http://a.example", "dev-a", TOKEN))
    env = {"MLPACK_COLLECTOR_URL": "http://b.example", "MLPACK_WINDOW_SECONDS": "15", "MLPACK_OUTBOX_CAP": "2MB",
           "MLPACK_DEVICE_TOKEN": "env-token"}
    cfg = load_config(tmp_path, {"device_id": "dev-flag", "collector_url": None}, environ=env)
    assert (cfg.collector_url, cfg.device_id, cfg.token, cfg.window_seconds, cfg.cap_bytes) == (
        "http://b.example", "dev-flag", "env-token", 15.0, 2 * 1024 * 1024,
    )
    assert load_config(tmp_path / "nothing-here", environ={}) == AgentConfig()


def test_checkpoint_settings_come_from_the_environment_and_agent_json_names_them_only_when_changed(
    tmp_path: Path,
) -> None:
    cfg = load_config(tmp_path, environ={"MLPACK_CHECKPOINT_SECONDS": "0", "MLPACK_CHECKPOINT_ROWS": "20000"})
    assert (cfg.checkpoint_seconds, cfg.checkpoint_rows) == (0.0, 20000)
    write_config(tmp_path, AgentConfig(window_seconds=30))  # defaults: not written (an older agent reads it)
    assert "checkpoint" not in (tmp_path / "agent.json").read_text()
    changed = AgentConfig(window_seconds=30, checkpoint_seconds=2.0)
    write_config(tmp_path, changed)
    assert '"checkpoint_seconds": 2.0' in (tmp_path / "agent.json").read_text()
    assert load_config(tmp_path, environ={}) == changed


@pytest.mark.parametrize(
    ("env", "message"),
    [
        ({"MLPACK_COLLECTOR_URL": "ftp://x"}, "environment variable MLPACK_COLLECTOR_URL: collector_url must be an http(s) URL, got 'ftp://x'"),
        ({"MLPACK_WINDOW_SECONDS": "soon"}, "environment variable MLPACK_WINDOW_SECONDS window_seconds: expected a number of seconds, got 'soon'"),
        ({"MLPACK_WINDOW_SECONDS": "0.5"}, "environment variable MLPACK_WINDOW_SECONDS: window_seconds must be between 1 and 86400, got 0.5"),
        ({"MLPACK_OUTBOX_CAP": "lots"}, "environment variable MLPACK_OUTBOX_CAP cap_bytes: expected a size in bytes like 67108864 or 64MB, got 'lots'"),
        ({"MLPACK_OUTBOX_CAP": "1k"}, "environment variable MLPACK_OUTBOX_CAP: cap_bytes must be at least 131072, got 1024"),
        ({"MLPACK_CHECKPOINT_SECONDS": "0.01"}, "environment variable MLPACK_CHECKPOINT_SECONDS: checkpoint_seconds must be 0 (off) or between 0.05 and 3600, got 0.01"),
        ({"MLPACK_CHECKPOINT_SECONDS": "often"}, "environment variable MLPACK_CHECKPOINT_SECONDS checkpoint_seconds: expected a number of seconds, got 'often'"),
        ({"MLPACK_CHECKPOINT_ROWS": "0"}, "environment variable MLPACK_CHECKPOINT_ROWS: checkpoint_rows must be between 1 and 1000000000, got 0"),
        ({"MLPACK_CHECKPOINT_ROWS": "1e4"}, "environment variable MLPACK_CHECKPOINT_ROWS checkpoint_rows: expected a whole number of rows, got '1e4'"),
        ({"MLPACK_DEVICE_ID": "bad id!"}, "environment variable MLPACK_DEVICE_ID: device_id must be 1-128 letters, digits, '.', '_' or '-', got 'bad id!'"),
    ],
)
def test_bad_settings_name_their_source(tmp_path: Path, env: dict[str, str], message: str) -> None:
    with pytest.raises(AgentError) as err:
        load_config(tmp_path, environ=env)
    assert str(err.value) == message


def test_bad_file_is_named_and_the_token_is_never_echoed(tmp_path: Path) -> None:
    (tmp_path / "agent.json").write_text("{nope")
    with pytest.raises(AgentError, match=r"agent.json: not readable JSON \(JSONDecodeError\)$"):
        load_config(tmp_path, environ={})
    (tmp_path / "agent.json").write_text('{"colour": "red"}')
    with pytest.raises(AgentError, match=r"agent.json colour: unknown setting$"):
        load_config(tmp_path, environ={})
    with pytest.raises(AgentError) as err:
        load_config(tmp_path / "x", environ={"MLPACK_DEVICE_TOKEN": "has space " + TOKEN})
    assert TOKEN not in str(err.value)
    cfg = AgentConfig(token=TOKEN)
    assert TOKEN not in repr(cfg) and TOKEN not in str(cfg.public_dict()) and cfg.public_dict()["token"] == "set"
