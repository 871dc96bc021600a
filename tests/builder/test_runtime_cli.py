"""``mlpack runtime list`` / ``freeze`` and ``build --floor``: arguments and the cache listing."""

from __future__ import annotations

import json
from pathlib import Path

from click.testing import CliRunner

from mlpack_edge.cli import main


def _entry(cache: Path, key: str, floor: str, glibc: str, size: int) -> None:
    entry = cache / "runtime" / key
    entry.mkdir(parents=True)
    (entry / "mlpack-device").write_bytes(b"\0" * size)
    info = {"key": key, "platform": "linux-x86_64", "floor": floor, "glibc_floor": glibc,
            "versions": {"python": "3.11.2 (main)", "onnxruntime": "1.32.0"}}
    (entry / "key.json").write_text(json.dumps(info))


def test_list_empty_cache_says_how_to_make_one(tmp_path: Path) -> None:
    result = CliRunner().invoke(main, ["runtime", "list", "--cache-dir", str(tmp_path)])
    assert result.exit_code == 0
    assert result.stdout == ""
    assert "mlpack runtime freeze" in result.stderr


def test_list_shows_target_floor_glibc_and_size(tmp_path: Path) -> None:
    _entry(tmp_path, "aaaa", "glibc-2.31", "2.29", 2_000_000)
    _entry(tmp_path, "bbbb", "host", "2.36", 3_000_000)
    (tmp_path / "runtime" / "half-built").mkdir()  # no key.json: not listed
    result = CliRunner().invoke(main, ["runtime", "list", "--cache-dir", str(tmp_path)])
    assert result.exit_code == 0, result.output
    lines = result.stdout.splitlines()
    assert lines[0].split() == ["inputs", "hash", "target", "floor", "glibc", "python", "size"]
    assert sorted(line.split()[:6] for line in lines[1:]) == [
        ["aaaa", "linux-x86_64", "glibc-2.31", "2.29", "3.11.2", "2.0"],
        ["bbbb", "linux-x86_64", "host", "2.36", "3.11.2", "3.0"],
    ]
    as_json = json.loads(CliRunner().invoke(main, ["runtime", "list", "--cache-dir", str(tmp_path), "--json"]).stdout)
    assert {r["key"]: r["glibc_floor"] for r in as_json} == {"aaaa": "2.29", "bbbb": "2.36"}


def test_unknown_floor_is_a_usage_error(tmp_path: Path) -> None:
    for argv in (["build", str(tmp_path), "--floor", "glibc-2.17"], ["runtime", "freeze", "--floor", "musl"]):
        result = CliRunner().invoke(main, argv)
        assert result.exit_code == 2, result.output
        assert "--floor" in result.output
