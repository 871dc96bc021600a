"""The device command line through click: info, verify, predict; exit codes and exact errors."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner, Result

from mlpack_edge.cli import main
from mlpack_edge.runtime.cli import device_cli
from mlpack_edge.runtime.manifest import write_bundle

GOOD_CSV = "x1,x2,colour,shape\n1.5,,red,round\n-1,0.5,,square\n"
BAD_CSV = "x1,x2,colour,shape\n1.5,,red,round\nabc,1,red,round\n2,1,blue,square\n"


def _device(bundle: Path, *args: str, input: str | None = None, env: dict[str, str] | None = None) -> Result:
    """The device CLI on an unsigned test bundle; --allow-unsigned keeps the ad-hoc warning out of the output."""
    return CliRunner().invoke(main, ["device", "--bundle", str(bundle), "--allow-unsigned", *args], input=input, env=env)


def test_info_text_and_json(mixed_bundle: Path) -> None:
    r = _device(mixed_bundle, "info")
    assert r.exit_code == 0, r.output
    manifest = json.loads((mixed_bundle / "manifest.json").read_bytes())
    assert r.output.splitlines()[0] == "mixed 1.0.0 (multiclass classification)"
    assert "    colour  categorical [blue, green, red] (3 categories; unseen -> error), nullable" in r.output
    assert "  classes: A, B, C" in r.output
    r = _device(mixed_bundle, "info", "--json")
    assert r.exit_code == 0 and json.loads(r.output) == manifest


def test_verify_passes_on_a_good_bundle(binary_bundle: Path) -> None:
    r = _device(binary_bundle, "verify")
    assert r.exit_code == 0, r.output
    assert r.output.startswith(f"OK: binary 1.0.0 at {binary_bundle}: 4 files match the manifest; golden set: ")
    assert " rows agree (max abs diff " in r.output


def test_verify_refuses_a_tampered_bundle(binary_bundle: Path, tmp_path: Path) -> None:
    b = shutil.copytree(binary_bundle, tmp_path / "b")
    (b / "model_card.html").write_text("edited\n")
    r = _device(b, "verify")
    assert r.exit_code == 1
    assert r.output == f"Error: {b}: file model_card.html does not match its sha256 in the manifest (tampered or corrupt)\n"


def test_verify_fails_when_this_cpu_disagrees_with_the_golden_set(binary_bundle: Path, tmp_path: Path) -> None:
    manifest = json.loads((binary_bundle / "manifest.json").read_bytes())
    for key in ("format", "files"):
        manifest.pop(key)
    files = {p.name: p.read_bytes() for p in binary_bundle.iterdir() if p.name != "manifest.json"}
    golden = json.loads(files["golden.json"])
    golden["expected"]["probabilities"][0] = [p + 0.01 for p in golden["expected"]["probabilities"][0]]
    files["golden.json"] = json.dumps(golden).encode()
    b = write_bundle(tmp_path / "b", files, manifest)
    r = _device(b, "verify")
    assert r.exit_code == 1
    n = len(golden["rows"])
    assert r.output == (
        f"Error: binary 1.0.0 at {b}: 4 files match the manifest; golden set: 0 of {n} labels differ,"
        " max abs diff 1.00e-02 (tolerance 0.0001)\n"
    )


def test_predict_file_to_file(mixed_bundle: Path, tmp_path: Path) -> None:
    (tmp_path / "in.csv").write_text(GOOD_CSV)
    r = _device(mixed_bundle, "predict", str(tmp_path / "in.csv"), "-o", str(tmp_path / "out.csv"))
    assert r.exit_code == 0, r.output
    assert r.output == ""
    lines = (tmp_path / "out.csv").read_text().splitlines()
    assert lines[0] == "label,proba_A,proba_B,proba_C,error" and len(lines) == 3
    assert all(line.endswith(",") for line in lines[1:])  # empty error column


def test_predict_reads_a_csv_with_a_bom(mixed_bundle: Path, tmp_path: Path) -> None:
    (tmp_path / "in.csv").write_bytes(b"\xef\xbb\xbf" + GOOD_CSV.encode())  # as spreadsheet exports write it
    r = _device(mixed_bundle, "predict", str(tmp_path / "in.csv"))
    assert r.exit_code == 0, r.output
    assert len(r.stdout.splitlines()) == 3


def test_predict_stdin_to_stdout_sniffs_jsonl(binary_bundle: Path) -> None:
    r = _device(binary_bundle, "predict", input='{"a": 1, "b": 2, "c": null}\n')
    assert r.exit_code == 0, r.output
    out = json.loads(r.stdout)
    assert out["label"] in ("no", "yes") and set(out["probabilities"]) == {"no", "yes"}


def test_predict_with_bad_rows_exits_1_with_complete_output(mixed_bundle: Path, tmp_path: Path) -> None:
    (tmp_path / "in.csv").write_text(BAD_CSV)
    r = _device(mixed_bundle, "predict", str(tmp_path / "in.csv"), "-o", str(tmp_path / "out.csv"))
    assert r.exit_code == 1
    assert r.stderr == (
        "row 2: field 'x1': expected a number, got 'abc'\n"
        "Error: 1 of 3 rows failed validation (listed above and in the output's 'error')\n"
    )
    lines = (tmp_path / "out.csv").read_text().splitlines()
    assert len(lines) == 4 and lines[2] == ",,,,\"row 2: field 'x1': expected a number, got 'abc'\""


def test_predict_stderr_is_capped(binary_bundle: Path) -> None:
    r = _device(binary_bundle, "predict", "--format", "csv", input="a,b,c\n" + "x,1,1\n" * 25)
    assert r.exit_code == 1
    err = r.stderr.splitlines()
    assert len(err) == 22 and err[20] == "... and 5 more"
    assert err[21] == "Error: 25 of 25 rows failed validation (listed above and in the output's 'error')"


def test_predict_bad_header_leaves_no_output(mixed_bundle: Path, tmp_path: Path) -> None:
    (tmp_path / "in.csv").write_text("x1,colour\n1,red\n")
    r = _device(mixed_bundle, "predict", str(tmp_path / "in.csv"), "-o", str(tmp_path / "out.csv"))
    assert r.exit_code == 1
    assert r.output == f"Error: {tmp_path / 'in.csv'}: the CSV header lacks features 'x2', 'shape'\n"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["in.csv"]


def test_predict_missing_input_file(binary_bundle: Path, tmp_path: Path) -> None:
    r = _device(binary_bundle, "predict", str(tmp_path / "nope.csv"))
    assert r.exit_code == 1
    assert r.output == f"Error: Could not open file '{tmp_path / 'nope.csv'}': No such file or directory\n"


def test_no_bundle_is_a_usage_error() -> None:
    r = CliRunner().invoke(device_cli, ["info"], env={"MLPACK_BUNDLE": None})
    assert r.exit_code == 2
    assert r.output.endswith("Error: no bundle: pass --bundle PATH or set MLPACK_BUNDLE\n")


def test_bundle_from_environment(regression_bundle: Path) -> None:
    r = CliRunner().invoke(device_cli, ["predict", "--format", "csv"], input="x1,x2,x3\n1,2,3\n", env={"MLPACK_BUNDLE": str(regression_bundle)})
    assert r.exit_code == 0, r.output
    assert r.stdout.splitlines()[0] == "value,error"


def test_corrupt_bundle_is_one_line(binary_bundle: Path, tmp_path: Path) -> None:
    b = shutil.copytree(binary_bundle, tmp_path / "b")
    (b / "model.onnx").write_bytes((b / "model.onnx").read_bytes()[:100])
    r = _device(b, "predict", input="a,b,c\n1,2,3\n")
    assert r.exit_code == 1
    assert r.output == f"Error: {b}: file model.onnx does not match its sha256 in the manifest (tampered or corrupt)\n"


def test_help_lists_lazy_commands(binary_bundle: Path) -> None:
    r = _device(binary_bundle, "--help")
    assert r.exit_code == 0
    for name in ("predict", "serve", "info", "verify", "install", "rollback", "uninstall", "agent", "status"):
        assert f"  {name} " in r.output


def test_predict_feeds_the_monitoring_agent(mixed_bundle: Path, tmp_path: Path) -> None:
    state = tmp_path / "state"
    r = _device(mixed_bundle, "predict", "--format", "csv", "--state-dir", str(state), input=BAD_CSV)
    assert r.exit_code == 1
    r = _device(mixed_bundle, "status", "--json", "--state-dir", str(state))
    assert r.exit_code == 0, r.output
    report = json.loads(r.stdout)
    assert report["rows"] == 2 and report["errors"] == {"validation": 1}


def test_predict_does_not_import_server_or_agent(binary_bundle: Path, tmp_path: Path) -> None:
    """Start-up cost: batch predict without a state folder loads neither http.server nor the agent."""
    (tmp_path / "in.csv").write_text("a,b,c\n1,2,3\n")
    probe = (
        "import sys\n"
        "from mlpack_edge.runtime.cli import main\n"
        "try:\n"
        f"    main(['--bundle', {str(binary_bundle)!r}, 'predict', {str(tmp_path / 'in.csv')!r}])\n"
        "except SystemExit:\n"
        "    pass\n"
        "heavy = ['http.server', 'mlpack_edge.monitor_agent.agent', 'psutil', 'sklearn', 'pandas']\n"
        "print('LOADED', [m for m in heavy if m in sys.modules], file=sys.stderr)\n"
    )
    proc = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=60)
    assert "LOADED []" in proc.stderr, proc.stderr
    assert proc.stdout.splitlines()[0] == "label,proba_no,proba_yes,error"


@pytest.mark.parametrize("bundle_name", ["binary_bundle", "mixed_bundle", "regression_bundle"])
def test_verify_on_every_bundle_kind(bundle_name: str, request: pytest.FixtureRequest) -> None:
    r = _device(request.getfixturevalue(bundle_name), "verify")
    assert r.exit_code == 0, r.output


def test_predict_into_a_closed_pipe_stops_quietly(binary_bundle: Path, tmp_path: Path) -> None:
    (tmp_path / "in.csv").write_text("a,b,c\n" + "1,2,3\n" * 50_000)
    cmd = [sys.executable, "-m", "mlpack_edge.runtime.cli", "--bundle", str(binary_bundle), "predict", str(tmp_path / "in.csv")]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    assert proc.stdout is not None and proc.stderr is not None
    assert proc.stdout.readline() == b"label,proba_no,proba_yes,error\n"
    proc.stdout.close()  # like `| head -1`
    err = proc.stderr.read().decode()
    assert proc.wait(timeout=60) == 1
    assert "Traceback" not in err and "BrokenPipeError" not in err


def test_entry_point_ends_the_process_with_the_command_status(mixed_bundle: Path, tmp_path: Path) -> None:
    """``main()`` on the process's own argv skips interpreter teardown but keeps what a normal exit does:
    the exit status, complete output files, flushed stdout/stderr, ``atexit`` hooks."""
    (tmp_path / "in.csv").write_text(BAD_CSV)
    probe = (
        "import atexit, sys\n"
        "atexit.register(lambda: print('atexit hook ran', file=sys.stderr))\n"
        "class Teardown:\n"
        "    def __del__(self): print('interpreter teardown', file=sys.stderr)\n"
        "witness = Teardown()\n"
        "from mlpack_edge.runtime.cli import main\n"
        "main()\n"
        "print('not reached', file=sys.stderr)\n"
    )
    args = ["--bundle", str(mixed_bundle), "--allow-unsigned", "predict", str(tmp_path / "in.csv")]
    proc = subprocess.run([sys.executable, "-c", probe, *args, "-o", str(tmp_path / "out.csv")],
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 1, proc.stderr
    assert proc.stderr.splitlines() == [
        "row 2: field 'x1': expected a number, got 'abc'",
        "Error: 1 of 3 rows failed validation (listed above and in the output's 'error')",
        "atexit hook ran",
    ]
    assert len((tmp_path / "out.csv").read_text().splitlines()) == 4
    proc = subprocess.run([sys.executable, "-c", probe, *args], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 1 and len(proc.stdout.splitlines()) == 4  # stdout flushed before the end
    good = [sys.executable, "-c", probe, "--bundle", str(mixed_bundle), "--allow-unsigned", "info"]
    proc = subprocess.run(good, capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0 and proc.stdout.startswith("mixed 1.0.0")
    assert proc.stderr == "atexit hook ran\n"  # no "interpreter teardown", and main() did not return


def test_predict_with_monitoring_stores_its_window_at_exit(mixed_bundle: Path, tmp_path: Path) -> None:
    """One-shot predict: the agent loads SQLite and psutil only after the output is written, runs no
    thread, never loads the uploader or HTTP, and stores one window with one system sample."""
    state = tmp_path / "state"
    state.mkdir()
    (tmp_path / "in.csv").write_text(GOOD_CSV)
    probe = (
        "import sys, threading\n"
        "class Spy:\n"
        "    def __init__(self, inner): self.inner, self.loaded, self.threads = inner, None, None\n"
        "    def write(self, s):\n"
        "        self.loaded = [m for m in ('sqlite3', 'psutil') if m in sys.modules]\n"
        "        self.threads = sorted(t.name for t in threading.enumerate() if t.name.startswith('mlpack'))\n"
        "        return self.inner.write(s)\n"
        "    def __getattr__(self, name): return getattr(self.inner, name)\n"
        "sys.stdout = spy = Spy(sys.stdout)\n"
        "from mlpack_edge.runtime.cli import main\n"
        "try:\n"
        f"    main(['--bundle', {str(mixed_bundle)!r}, '--allow-unsigned', 'predict', '--state-dir', {str(state)!r},"
        f" {str(tmp_path / 'in.csv')!r}])\n"
        "except SystemExit as exc:\n"
        "    assert exc.code == 0, exc.code\n"
        "late = ['http.client', 'mlpack_edge.monitor_agent.uploader', 'mlpack_edge.monitor_agent.status']\n"
        "print('WRITING', spy.loaded, spy.threads, 'EXIT', [m for m in late if m in sys.modules], file=sys.stderr)\n"
    )
    proc = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=60)
    assert proc.stderr == "WRITING [] [] EXIT []\n"
    from mlpack_edge.monitor_agent.outbox import Outbox

    with Outbox.open(state) as box:
        assert [(w.rows, w.requests, w.system.samples) for w in box.pending_windows()] == [(2, 1, 1)]


def test_version_names_the_model_its_content_hash_and_the_runtime(binary_bundle: Path) -> None:
    import platform

    import onnxruntime

    from mlpack_edge import __version__
    from mlpack_edge.runtime.manifest import sha256_bytes

    r = _device(binary_bundle, "--version")
    assert r.exit_code == 0, r.output
    assert r.stdout == (
        "binary 1.0.0\n"
        f"content hash {sha256_bytes((binary_bundle / 'manifest.json').read_bytes())}\n"
        f"runtime mlpack-edge {__version__} (onnxruntime {onnxruntime.__version__}, Python {platform.python_version()})\n"
    )


def test_no_command_is_still_a_usage_error(binary_bundle: Path) -> None:
    r = _device(binary_bundle)
    assert r.exit_code == 2
    assert r.output.endswith("Error: Missing command.\n")
    r = CliRunner().invoke(device_cli, [])
    assert r.exit_code in (0, 2) and "Usage:" in r.output  # no arguments at all: the help, as before
