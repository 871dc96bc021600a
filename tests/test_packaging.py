"""What users install: the wheel, built the way ``pip wheel .`` builds it.

Every test before this one ran against an editable install, which reads the source tree
directly; a wheel once shipped without ``collector.storage`` and without the fleet page's
template and nothing noticed. The fast test compares the wheel with the source tree; the
slow one installs it with its extras into a fresh virtual environment (its own
site-packages only: a missing dependency fails there) and runs a build, a collector with
a real agent upload, and the device executable's ``verify`` from it.
"""

from __future__ import annotations

import email.parser
import json
import os
import shutil
import signal
import subprocess
import sys
import time
import zipfile
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests._proc import start_and_wait

REPO = Path(__file__).resolve().parents[1]
#: source folder -> where its files land in the wheel
PARTS = {
    "mlpack_edge": "mlpack_edge",
    "builder": "mlpack_edge/builder",
    "runtime": "mlpack_edge/runtime",
    "monitor_agent": "mlpack_edge/monitor_agent",
    "collector": "mlpack_edge/collector",
}
_NOT_SOURCE = {"__pycache__", ".venv", "build", "dist", ".git", ".pytest_cache", ".mlpack-cache", ".mypy_cache"}


def _copy_ignore(folder: str, names: list[str]) -> set[str]:
    return {n for n in names if n in _NOT_SOURCE or n.endswith((".egg-info", ".pyc", ".db", ".db-wal", ".db-shm"))}


def _source_files() -> set[str]:
    """Every file of the five package folders, as the wheel path it must have."""
    expected = set()
    for folder, target in PARTS.items():
        for path in (REPO / folder).rglob("*"):
            rel = path.relative_to(REPO / folder)
            if path.is_file() and not _copy_ignore("", list(rel.parts)) and not any(p.startswith(".") for p in rel.parts):
                expected.add(f"{target}/{rel.as_posix()}")
    return expected


@pytest.fixture(scope="session")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """``pip wheel --no-deps`` of a clean copy of the tree (a checkout's stale ``build/``
    folder cannot hide or add anything)."""
    root = tmp_path_factory.mktemp("wheel")
    src = root / "src"
    shutil.copytree(REPO, src, ignore=_copy_ignore)
    out = root / "dist"
    proc = subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "--quiet", "--wheel-dir", str(out), str(src)],
        capture_output=True, text=True, timeout=600,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    (found,) = out.glob("mlpack_edge-*.whl")
    return found


def test_wheel_holds_every_module_and_data_file_of_the_source_tree(wheel: Path) -> None:
    with zipfile.ZipFile(wheel) as zf:
        names = set(zf.namelist())
        meta = email.parser.Parser().parsestr(zf.read(next(n for n in names if n.endswith(".dist-info/METADATA"))).decode())
        entry_points = zf.read(next(n for n in names if n.endswith(".dist-info/entry_points.txt"))).decode()
    shipped = {n for n in names if ".dist-info/" not in n}
    expected = _source_files()
    assert {"mlpack_edge/collector/storage/__init__.py", "mlpack_edge/collector/templates/page.html",
            "mlpack_edge/builder/card.css"} <= expected  # the walk above sees what broke before
    assert sorted(expected - shipped) == []
    assert sorted(shipped - expected) == []  # nothing else: no tests, no top-level 'runtime'
    assert {n.split("/")[0] for n in shipped} == {"mlpack_edge"}
    # The distribution's own name, and the command users type.
    assert meta["Name"] == "mlpack-edge"
    assert "mlpack = mlpack_edge.cli:main" in entry_points
    core = [r for r in meta.get_all("Requires-Dist") if "extra ==" not in r]
    assert sorted(r.split(">")[0].split("=")[0].strip() for r in core) == ["click", "numpy", "onnxruntime", "psutil"]


def _run(cmd: list[str], cwd: Path, env: dict[str, str], timeout: float = 600) -> subprocess.CompletedProcess[str]:
    proc = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout)
    assert proc.returncode == 0, f"{' '.join(cmd)} -> {proc.returncode}\n{proc.stdout}\n{proc.stderr}"
    return proc


@pytest.fixture(scope="session")
def installed(wheel: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Path, dict[str, str]]]:
    """A fresh venv (no system site-packages) with the wheel and its extras, and the
    environment to run it in: no PYTHONPATH, away from the checkout."""
    root = tmp_path_factory.mktemp("venv")
    venv = root / "venv"
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV", "PYTHONHOME")}
    env["PIP_DISABLE_PIP_VERSION_CHECK"] = "1"
    base = getattr(sys, "_base_executable", sys.executable)
    _run([base, "-m", "venv", str(venv)], root, env)
    _run([str(venv / "bin" / "python"), "-m", "pip", "install", "--quiet", f"{wheel}[all]"], root, env, timeout=1200)
    yield venv, env


@pytest.mark.slow
def test_installed_wheel_builds_an_example_serves_a_collector_and_verifies(
    installed: tuple[Path, dict[str, str]], tmp_path: Path
) -> None:
    venv, env = installed
    py, mlpack = str(venv / "bin" / "python"), str(venv / "bin" / "mlpack")
    where = _run([py, "-c", "import mlpack_edge; print(mlpack_edge.__file__)"], tmp_path, env)
    assert where.stdout.startswith(str(venv / "lib")), where.stdout  # the wheel, not the checkout
    assert "include-system-site-packages = false" in (venv / "pyvenv.cfg").read_text()

    # The README's first command, from the installed wheel.
    example = tmp_path / "breast_cancer"
    shutil.copytree(REPO / "examples" / "breast_cancer", example)
    built = _run([mlpack, "build", str(example / "mlpack.toml"), "--out", str(tmp_path / "dist"), "--json"], tmp_path, env)
    result = json.loads(built.stdout)
    exe = Path(result["executable"])
    assert exe.is_file() and os.access(exe, os.X_OK)

    # A collector from the same install (fleet page template, storage migrations, /docs assets).
    data_dir = tmp_path / "fleet"
    started = start_and_wait([mlpack, "collector", "serve", "--data-dir", str(data_dir), "--port", "0"],
                             "listening on ", stream="stdout", stderr=subprocess.STDOUT, cwd=tmp_path, env=env)
    assert started.line is not None, started.output()
    url = started.line.split()[2]
    try:
        token = _run([mlpack, "collector", "add-device", "wheel-01", "--data-dir", str(data_dir)], tmp_path, env).stdout.strip()
        (tmp_path / "wheel-01.token").write_text(token + "\n")
        # One real ingest: predict records a window, the agent uploads it.
        rows = tmp_path / "rows.csv"
        lines = (example / "breast_cancer.csv").read_text().splitlines()
        header = lines[0].split(",")
        keep = [i for i, h in enumerate(header) if h != "diagnosis"]
        rows.write_text("\n".join(",".join(line.split(",")[i] for i in keep) for line in lines[:41]) + "\n")
        state = tmp_path / "state"
        _run([str(exe), "predict", str(rows), "-o", str(tmp_path / "out.csv"), "--state-dir", str(state)], tmp_path, env)
        synced = _run([str(exe), "agent", "sync", "--state-dir", str(state), "--collector-url", url,
                       "--device-id", "wheel-01", "--token-file", str(tmp_path / "wheel-01.token")], tmp_path, env)
        assert synced.stdout.startswith("delivered 1 windows"), synced.stdout
        with httpx.Client(base_url=url, timeout=30) as client:
            devices = client.get("/api/v1/devices").json()["devices"]
            assert [(d["name"], d["rows"]) for d in devices] == [("wheel-01", 40)]
            page = client.get("/")
            assert page.status_code == 200 and "wheel-01" in page.text
            docs = client.get("/docs")
            assert docs.status_code == 200 and "swagger-ui" in docs.text
            asset = docs.text.split('src="')[1].split('"')[0]
            assert client.get(asset).status_code == 200, asset
            from prometheus_client.parser import text_string_to_metric_families

            status = {s.labels["status"]: s.value for f in text_string_to_metric_families(client.get("/metrics").text)
                      if f.name == "mlpack_fleet_device_status" for s in f.samples if s.labels["device"] == "wheel-01"}
            assert status[devices[0]["status"]] == 1.0 and sum(status.values()) == 1.0, status
    finally:
        started.proc.terminate()
        code, output = started.finish()
    assert code in (0, -signal.SIGTERM) and "Traceback" not in output, output  # uvicorn re-raises the SIGTERM

    verified = _run([str(exe), "verify"], tmp_path, env)
    assert verified.stdout.startswith("OK: breast-cancer 1.0.0"), verified.stdout
    version = _run([str(exe), "--version"], tmp_path, env).stdout.splitlines()
    assert version[:2] == ["breast-cancer 1.0.0", f"content hash {result['content_hash']}"], version
    assert version[2].startswith("runtime mlpack-edge 0.1.0 (onnxruntime "), version
    completion = _run([str(exe)], tmp_path, {**env, "_BREAST_CANCER_COMPLETE": "bash_complete",
                                             "COMP_WORDS": "breast-cancer ver", "COMP_CWORD": "1"})
    assert completion.stdout.split() == ["plain,verify"]


@pytest.mark.slow
def test_installs_beside_pypis_mlpack_the_cpp_librarys_binding(installed: tuple[Path, dict[str, str]], tmp_path: Path) -> None:
    """PyPI's ``mlpack`` (import mlpack) and ``mlpack-edge`` (import mlpack_edge) share no
    package and no command: both import, and ``mlpack`` stays this project's command."""
    venv, env = installed
    py = str(venv / "bin" / "python")
    _run([py, "-m", "pip", "install", "--quiet", "mlpack>=4"], tmp_path, env, timeout=1200)
    both = _run([py, "-c", "import mlpack, mlpack_edge; print(callable(mlpack.knn), mlpack_edge.__version__)"], tmp_path, env)
    assert both.stdout == "True 0.1.0\n"
    assert _run([str(venv / "bin" / "mlpack"), "--version"], tmp_path, env).stdout == "mlpack (mlpack-edge) 0.1.0\n"
