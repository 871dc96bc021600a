"""The real device executable, used as an engineer would: build, inspect, run, install, roll back.

The session fixture ``built`` (conftest) builds two versions of the breast-cancer example
through ``mlpack build`` with an empty runtime cache of its own; everything else runs the
files it produced.
"""

from __future__ import annotations

import csv
import inspect
import io
import json
import os
import queue
import re
import subprocess
import threading
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import IO

import click
import numpy as np
import pytest

from mlpack_edge.builder.executable import build_executable, executable_contents
from mlpack_edge.runtime.embedded import open_appended
from mlpack_edge.runtime.manifest import read_manifest, write_bundle
from mlpack_edge.runtime.model import open_model

from ._builds import Built, assert_reused

pytestmark = pytest.mark.slow

NAME = "breast-cancer"
FORBIDDEN = {"sklearn", "scipy", "pandas", "onnx", "skl2onnx", "joblib", "threadpoolctl"}


def _run(*cmd: object, env: dict[str, str] | None = None, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    base = {k: v for k, v in os.environ.items() if not k.startswith("MLPACK_")}
    return subprocess.run(
        [str(c) for c in cmd], capture_output=True, text=True, timeout=300, env={**base, **(env or {})}, cwd=cwd
    )


def _parsed(csv_text: str) -> tuple[list[str], np.ndarray]:
    rows = list(csv.DictReader(io.StringIO(csv_text)))
    assert all(r["error"] == "" for r in rows)
    proba = np.array([[np.float32(r["proba_benign"]), np.float32(r["proba_malignant"])] for r in rows])
    return [r["label"] for r in rows], proba


def _python_api(bundle: Path, rows_csv: Path) -> tuple[list[str], np.ndarray]:
    """What the Python API says for the same rows: the reference the executables must match."""
    model = open_model(bundle)
    with open(rows_csv, newline="") as fh:
        rows = [{k: float(v) for k, v in r.items()} for r in csv.DictReader(fh)]
    return [str(x) for x in model.predict(rows)], np.asarray(model.predict_proba(rows), dtype=np.float32)


@pytest.fixture(scope="module")
def installed(built: Built, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Version 1.0.0 installed under a prefix of its own; returns the prefix."""
    prefix = tmp_path_factory.mktemp("prefix")
    proc = _run(built.v1, "install", "--prefix", prefix, "--allow-unsigned")  # these builds are unsigned
    assert proc.returncode == 0, proc.stderr
    return prefix


def test_build_freezes_once_then_appends(built: Built) -> None:
    infos = [e[1] for e in built.events if e[0] == "info"]
    assert "freezing the device runtime (first build with this runtime, cached afterwards)…" in infos, infos
    stage = next(e for e in built.events if e[0] == "finished" and e[1] == "executable")
    assert re.search(r"\(\d+\.\d MB\)$", stage[3]), stage
    assert_reused([e[1] for e in built.rebuild_events if e[0] == "info"], built.material)
    one, two = open_appended(built.v1), open_appended(built.v2)
    assert (one.runtime_sha256, one.runtime_size) == (two.runtime_sha256, two.runtime_size)  # same cached runtime
    assert built.v1.name == f"{NAME}-1.0.0-{built.v1.name.split('-', 3)[3]}"


def test_contents_hold_runtime_and_bundle_but_no_training_stack(built: Built) -> None:
    names = executable_contents(built.v1)
    tops = {re.split(r"[/.!]", n.removeprefix("_onedir_launcher!"))[0] for n in names}
    assert not tops & FORBIDDEN, sorted(tops & FORBIDDEN)
    assert not [n for n in names if re.search(r"mlpack_edge[/.](builder|collector)", n)]
    assert any(n.startswith("onnxruntime/capi/onnxruntime_pybind11_state") for n in names)
    assert "mlpack_edge/runtime/install.pyc" in names and "mlpack_edge/monitor_agent/agent.pyc" in names
    assert any(n.startswith("_onedir_launcher!") for n in names)
    assert {"bundle/manifest.json", "bundle/model.onnx", "bundle/golden.json"} <= set(names)


def test_onefile_info_verify_predict(built: Built) -> None:
    info = _run(built.v1, "info", "--json")
    assert info.returncode == 0, info.stderr
    assert info.stdout.encode() == (built.bundle1 / "manifest.json").read_bytes()
    verify = _run(built.v1, "verify")
    assert verify.returncode == 0, verify.stderr
    assert verify.stdout.startswith(f"OK: {NAME} 1.0.0 at {built.v1} (embedded bundle): ") and "golden set:" in verify.stdout
    assert "_MEI" not in verify.stdout + verify.stderr  # the temp unpack folder is never what a user is shown
    predict = _run(built.v1, "predict", built.rows_csv)
    assert predict.returncode == 0, predict.stderr
    labels, proba = _parsed(predict.stdout)
    want_labels, want_proba = _python_api(built.bundle1, built.rows_csv)
    assert labels == want_labels
    assert np.array_equal(proba, want_proba)


def _commands(cmd: click.Command, ctx: click.Context, path: tuple[str, ...] = ()) -> Iterator[tuple[tuple[str, ...], click.Command]]:
    """Every command of the device CLI with its argv path (groups and their subcommands)."""
    yield path, cmd
    if isinstance(cmd, click.Group):
        for name in cmd.list_commands(ctx):
            sub = cmd.get_command(ctx, name)
            assert sub is not None, name
            yield from _commands(sub, click.Context(sub, parent=ctx, info_name=name), (*path, name))


def test_frozen_help_keeps_every_command_description(built: Built, installed: Path) -> None:
    """The runtime is frozen at -OO (no docstrings), but click's --help is made of them: each survives.

    Both the onefile and the installed launcher are the same frozen modules; the installed
    one is asked for every command (group, subcommand) and must print the first paragraph
    of that command's docstring as the source checkout has it.
    """
    from mlpack_edge.runtime.cli import device_cli

    launcher = installed / NAME / "current" / NAME
    found = list(_commands(device_cli, click.Context(device_cli, info_name=NAME)))
    assert {("predict",), ("serve",), ("install",), ("update",), ("agent", "sync")} <= {p for p, _ in found}
    for path, cmd in found:
        first = " ".join(inspect.cleandoc(cmd.help or "").split("\n\n")[0].split())
        assert first, f"{' '.join(path) or 'the group'} has no docstring in the source checkout"
        for exe in (launcher, built.v1) if path in ((), ("predict",)) else (launcher,):
            proc = _run(exe, *path, "--help")
            assert proc.returncode == 0, proc.stderr
            assert first in " ".join(proc.stdout.split()), f"{exe.name} {' '.join(path)} --help lost: {first!r}"


def test_installed_version_runs_without_unpacking(built: Built, installed: Path, tmp_path: Path) -> None:
    model_dir = installed / NAME
    assert os.readlink(model_dir / "current") == "1.0.0"
    assert sorted(p.name for p in (model_dir / "1.0.0").iterdir()) == sorted(["_internal", "bundle", NAME])
    internal = set(os.listdir(model_dir / "1.0.0" / "_internal"))
    assert any(n.startswith("libpython") for n in internal)
    assert not {"_onedir_launcher", "_mlpack_bundle"} & internal  # download-only parts stay behind
    scratch = tmp_path / "tmp"
    scratch.mkdir()
    proc = _run(model_dir / "current" / NAME, "predict", built.rows_csv, env={"TMPDIR": str(scratch)})
    assert proc.returncode == 0, proc.stderr
    # A onefile unpacks itself into $TMPDIR/_MEIxxxxxx (onnxruntime's own .ses file is fine).
    assert [p.name for p in scratch.iterdir() if p.name.startswith("_MEI")] == []
    assert _parsed(proc.stdout)[0] == _python_api(built.bundle1, built.rows_csv)[0]
    assert np.array_equal(_parsed(proc.stdout)[1], _python_api(built.bundle1, built.rows_csv)[1])


class _Stderr:
    """A child's stderr, drained by a thread: every wait on it has a deadline and nothing blocks the child."""

    def __init__(self, proc: subprocess.Popen[str]) -> None:
        assert proc.stderr is not None
        self.seen: list[str] = []
        self._lines: queue.Queue[str] = queue.Queue()
        threading.Thread(target=self._drain, args=(proc.stderr,), daemon=True).start()

    def _drain(self, stream: IO[str]) -> None:
        for line in stream:
            self._lines.put(line)
        self._lines.put("")  # end of stream

    def next_line(self, timeout: float) -> str:
        """The next line ("" at the end); fails the test after ``timeout`` seconds of silence."""
        try:
            line = self._lines.get(timeout=timeout)
        except queue.Empty:
            pytest.fail(f"nothing more on stderr within {timeout:g} s; so far: {''.join(self.seen)!r}")
        self.seen.append(line)
        return line

    def rest(self, timeout: float = 30) -> str:
        """Every line up to the end of the stream (once the child has exited)."""
        return "".join(iter(lambda: self.next_line(timeout), ""))


def test_installed_serve_answers_over_http(built: Built, installed: Path) -> None:
    """The installed launcher listens, answers, and stops cleanly on SIGTERM (what systemd sends).

    Waits are bounded but generous (a loaded 2-core machine starts the runtime in ~1 s,
    not 30): a child that never says it listens, or still runs after SIGTERM, fails the
    test with its stderr instead of hanging it.
    """
    exe = installed / NAME / "current" / NAME
    env = {k: v for k, v in os.environ.items() if not k.startswith("MLPACK_")}
    proc = subprocess.Popen([str(exe), "serve", "--port", "0"], stderr=subprocess.PIPE, text=True, env=env)
    stderr = _Stderr(proc)
    try:
        line = stderr.next_line(timeout=60)
        match = re.fullmatch(rf"serving {NAME} 1\.0\.0 on (http://127\.0\.0\.1:\d+) \(Ctrl-C to stop\)\n", line)
        assert match, f"expected the listening line first, got {line!r}"
        url = match.group(1)
        assert urllib.request.urlopen(url + "/health", timeout=30).status == 200
        with open(built.rows_csv, newline="") as fh:
            row = {k: float(v) for k, v in next(csv.DictReader(fh)).items()}
        request = urllib.request.Request(url + "/predict", json.dumps(row).encode(), {"Content-Type": "application/json"})
        answer = json.loads(urllib.request.urlopen(request, timeout=30).read())
        labels, proba = _python_api(built.bundle1, built.rows_csv)
        assert answer["label"] == labels[0]
        assert np.float32(answer["probabilities"]["malignant"]) == proba[0, 1]
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
    after = stderr.rest()
    assert proc.returncode == 0, f"exit {proc.returncode} after SIGTERM (-9: still serving 60 s on); stderr: {after!r}"
    assert after == "stopped\n"


def test_upgrade_rollback_reinstall_uninstall(built: Built, tmp_path: Path) -> None:
    prefix = tmp_path / "opt"
    current = prefix / NAME / "current" / NAME
    assert _run(built.v1, "install", "--prefix", prefix, "--allow-unsigned").returncode == 0
    up = _run(built.v2, "install", "--prefix", prefix)
    assert up.returncode == 0, up.stderr
    assert up.stdout.splitlines()[0] == f"installed {NAME} 1.1.0 at {prefix / NAME / '1.1.0'}; now current (previous: 1.0.0)"
    p2 = _parsed(_run(current, "predict", built.rows_csv).stdout)[1]
    assert not np.array_equal(p2, _python_api(built.bundle1, built.rows_csv)[1])  # really the other model

    back = _run(current, "rollback", "--prefix", prefix)
    assert back.returncode == 0, back.stderr
    assert back.stdout.splitlines()[0] == f"rolled back {NAME} to 1.0.0 (was 1.1.0)"
    assert np.array_equal(_parsed(_run(current, "predict", built.rows_csv).stdout)[1], _python_api(built.bundle1, built.rows_csv)[1])

    again = _run(built.v1, "install", "--prefix", prefix)
    assert (again.returncode, again.stdout) == (
        0, f"{NAME} 1.0.0 already installed at {prefix / NAME / '1.0.0'}\n  unsigned (allowed by the trust policy)\n"
    )

    gone = _run(current, "uninstall", "--prefix", prefix)
    assert gone.returncode == 0, gone.stderr
    assert sorted(p.name for p in (prefix / NAME).iterdir()) == ["state"]


def _broken_golden_exe(built: Built, work: Path) -> Path:
    """Version 1.2.0: intact files (digests match) but a golden set this model cannot reproduce."""
    manifest = read_manifest(built.bundle1)
    files = {n: (built.bundle1 / n).read_bytes() for n in manifest.files}
    golden = json.loads(files["golden.json"])
    golden["expected"]["labels"] = ["benign" if x == "malignant" else "malignant" for x in golden["expected"]["labels"]]
    files["golden.json"] = json.dumps(golden).encode()
    body = {k: v for k, v in manifest.data.items() if k not in ("format", "files")}
    body["version"] = "1.2.0"
    bundle = write_bundle(work / "bad-golden", files, body)
    return build_executable(bundle, work / "dist-bad", check=False, cache_dir=built.cache)


def test_failed_verify_leaves_the_previous_version_serving(built: Built, installed: Path, tmp_path: Path) -> None:
    bad = _broken_golden_exe(built, tmp_path)
    proc = _run(bad, "install", "--prefix", installed)
    assert proc.returncode == 1
    assert proc.stdout == ""
    assert re.fullmatch(
        rf"Error: verify failed: {NAME} 1\.2\.0 at {re.escape(str(installed / NAME / '1.2.0'))}/bundle: .*"
        rf"golden set: \d+ of \d+ labels differ.*; {NAME} 1\.0\.0 stays current\n",
        proc.stderr,
    ), proc.stderr
    assert os.readlink(installed / NAME / "current") == "1.0.0"
    assert not (installed / NAME / "1.2.0").exists()
    assert not [p for p in (installed / NAME).iterdir() if p.name.endswith(".tmp")]


def test_truncated_download_is_refused_in_one_line(built: Built, tmp_path: Path) -> None:
    exe = tmp_path / built.v1.name
    exe.write_bytes(built.v1.read_bytes()[:-100])
    exe.chmod(0o755)
    proc = _run(exe, "install", "--prefix", tmp_path / "opt")
    assert proc.returncode == 1
    assert proc.stderr == (
        f"Error: not installed: {exe}: the appended bundle is truncated or is not an mlpack bundle"
        " (no mlpack.appended/1 trailer)\n"
    )
    assert not (tmp_path / "opt" / NAME / "current").exists()


def test_corrupted_bundle_inside_the_executable_is_refused(built: Built, tmp_path: Path) -> None:
    data = bytearray(built.v1.read_bytes())
    appended = open_appended(built.v1)
    with __import__("zipfile").ZipFile(built.v1) as zf:
        member = zf.getinfo("model.onnx")
    data[member.header_offset + 30 + len("model.onnx") + 5] ^= 0xFF  # inside model.onnx's data
    exe = tmp_path / built.v1.name
    exe.write_bytes(bytes(data))
    exe.chmod(0o755)
    assert appended.runtime_size < member.header_offset
    for command in (["verify"], ["install", "--prefix", str(tmp_path / "opt")]):
        proc = _run(exe, *command)
        assert proc.returncode == 1, command
        assert proc.stderr.count("\n") == 1 and proc.stderr.startswith("Error: "), proc.stderr
        assert "model.onnx" in proc.stderr
    assert not (tmp_path / "opt" / NAME / "current").exists()


def test_unwritable_prefix_through_the_executable(built: Built, tmp_path: Path) -> None:
    if os.geteuid() == 0:
        prefix = Path("/sys/mlpack-test-prefix")  # EPERM even for root
    else:
        prefix = tmp_path / "ro"
        prefix.mkdir()
        prefix.chmod(0o555)
    proc = _run(built.v1, "install", "--prefix", prefix, "--allow-unsigned")
    assert (proc.returncode, proc.stderr) == (
        1, f"Error: cannot write to {prefix}: permission denied (run as root or pass --prefix DIR)\n"
    )


def test_a_glibc_older_than_the_floor_is_refused_in_one_line(built: Built, installed: Path, tmp_path: Path) -> None:
    """A copy whose marker asks for a glibc one minor above this machine's stands in for an older device."""
    import shutil

    from mlpack_edge.builder._bootloader import marker_floor, with_floor
    from mlpack_edge.builder.inspect import inspect_path

    have = os.confstr("CS_GNU_LIBC_VERSION").split()[1]  # "glibc 2.36"
    major, minor = have.split(".")[:2]
    above = f"{major}.{int(minor) + 1}"
    refusal = f"mlpack: this executable needs glibc {above} or newer; this system has glibc {have}\n"
    data = built.v1.read_bytes()
    floor = inspect_path(built.v1).executable.glibc_floor  # type: ignore[union-attr]
    assert marker_floor(data) == floor  # the freeze set the marker to the measured floor
    download = tmp_path / "download"
    for marker, ok in ((above, False), (have, True)):
        download.write_bytes(with_floor(data, marker))
        download.chmod(0o755)
        # (install of a copy that starts must fail anyway: the trailer's runtime sha256 no longer matches)
        install = [] if ok else [["install", "--prefix", tmp_path / "prefix", "--allow-unsigned"]]
        for argv in [["info"], ["verify"], *install]:
            proc = _run(download, *argv)
            if ok:
                assert proc.returncode == 0, (argv, proc.stderr)
            else:
                assert (proc.returncode, proc.stdout, proc.stderr) == (1, "", refusal), argv
                assert not (tmp_path / "prefix").exists()
    installed_copy = Path(shutil.copytree((installed / NAME / "1.0.0"), tmp_path / "installed", symlinks=True))
    launcher = installed_copy / NAME
    assert marker_floor(launcher.read_bytes()) == floor  # the launcher an install unpacks is marked too
    launcher.write_bytes(with_floor(launcher.read_bytes(), above))
    for argv in (["info"], ["predict", built.rows_csv]):
        proc = _run(launcher, *argv)
        assert (proc.returncode, proc.stdout, proc.stderr) == (1, "", refusal), argv
