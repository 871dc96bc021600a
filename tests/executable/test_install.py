"""install / rollback / uninstall on a fake frozen layout (real files, real subprocess verify)."""

from __future__ import annotations

import json
import os
import stat
import threading
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from mlpack_edge.errors import InstallError
from mlpack_edge.monitor_agent.config import AgentConfig
from mlpack_edge.runtime.install import Payload, install, installed_versions, rollback, uninstall

from .conftest import UNSIGNED_OK, FakeSystemd

MakePayload = Callable[..., Payload]


def _entries(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir())


def _install_all(make_payload: MakePayload, prefix: Path, systemd: FakeSystemd, *versions: str) -> None:
    for version in versions:
        install(make_payload(version), prefix, trust=UNSIGNED_OK, systemd=systemd)


def test_install_lays_out_a_version_verified_in_place_then_switches(
    make_payload: MakePayload, tmp_path: Path, no_systemd: FakeSystemd
) -> None:
    prefix = tmp_path / "opt"
    result = install(make_payload("1.0.0", appended=True), prefix, trust=UNSIGNED_OK, systemd=no_systemd)

    model = prefix / "toy"
    assert result.status == "installed"
    assert result.path == model / "1.0.0"
    assert os.readlink(model / "current") == "1.0.0"  # relative: the prefix can move
    assert not (model / "previous").exists()
    version = model / "1.0.0"
    assert _entries(version) == ["_internal", "bundle", "toy"]
    assert _entries(version / "_internal") == ["libfake.so", "libfake.so.1", "pkg"]  # launcher data left out
    assert os.readlink(version / "_internal" / "libfake.so.1") == "libfake.so"
    assert _entries(version / "bundle") == ["manifest.json", "model.onnx"]
    assert os.access(version / "toy", os.X_OK)
    assert stat.S_IMODE((version / "_internal" / "libfake.so").stat().st_mode) == 0o644
    assert stat.S_IMODE(version.stat().st_mode) == 0o755
    assert (model / "state").is_dir()
    assert _entries(model) == [".lock", "1.0.0", "current", "mlpack-toy.service", "state", "trust"]  # no temp leftovers


def test_unit_runs_current_serve_with_the_state_dir(make_payload: MakePayload, tmp_path: Path, no_systemd: FakeSystemd) -> None:
    result = install(make_payload("1.0.0"), tmp_path / "opt", trust=UNSIGNED_OK, systemd=no_systemd)
    model = tmp_path / "opt" / "toy"
    assert result.unit == model / "mlpack-toy.service"
    text = result.unit.read_text()
    assert f'ExecStart="{model}/current/toy" serve\n' in text
    assert f'Environment="MLPACK_STATE_DIR={model}/state"\n' in text
    assert "WantedBy=multi-user.target" in text
    assert result.notes == [
        f"trust: trusted keys: none; unsigned bundles allowed ({model}/trust)",
        "systemd is not running here: service mlpack-toy.service left disabled"
        f" (on a systemd machine: systemctl enable --now {model}/mlpack-toy.service)",
    ]


def test_verify_runs_in_the_staging_folder_before_the_version_exists(
    make_payload: MakePayload, tmp_path: Path, no_systemd: FakeSystemd
) -> None:
    seen: list[tuple[Path, bool, bool]] = []

    def verifier(folder: Path, name: str) -> None:
        final = tmp_path / "opt" / "toy" / "1.0.0"
        seen.append((folder, final.exists(), (tmp_path / "opt" / "toy" / "current").exists()))
        assert (folder / name).is_file() and (folder / "bundle" / "manifest.json").is_file()

    install(make_payload("1.0.0"), tmp_path / "opt", verifier=verifier, trust=UNSIGNED_OK, systemd=no_systemd)
    [(folder, final_existed, current_existed)] = seen
    assert folder.parent == tmp_path / "opt" / "toy" and folder.name.startswith(".1.0.0.")
    assert not final_existed and not current_existed


def test_same_version_twice_is_a_no_op(make_payload: MakePayload, tmp_path: Path, no_systemd: FakeSystemd) -> None:
    prefix = tmp_path / "opt"
    install(make_payload("1.0.0"), prefix, trust=UNSIGNED_OK, systemd=no_systemd)
    before = (prefix / "toy" / "1.0.0" / "toy").stat().st_mtime_ns
    calls: list[Path] = []
    again = install(
        make_payload("1.0.0", appended=True), prefix, verifier=lambda f, n: calls.append(f), systemd=no_systemd
    )  # no trust given: the installed policy is kept
    assert again.status == "unchanged"
    assert calls == []
    assert (prefix / "toy" / "1.0.0" / "toy").stat().st_mtime_ns == before
    assert os.readlink(prefix / "toy" / "current") == "1.0.0"


def test_same_version_with_other_content_is_refused(make_payload: MakePayload, tmp_path: Path, no_systemd: FakeSystemd) -> None:
    prefix = tmp_path / "opt"
    install(make_payload("1.0.0"), prefix, trust=UNSIGNED_OK, systemd=no_systemd)
    with pytest.raises(InstallError) as err:
        install(make_payload("1.0.0", model=b"retrained"), prefix, trust=UNSIGNED_OK, systemd=no_systemd)
    assert str(err.value) == (
        f"version 1.0.0 is already installed at {prefix / 'toy' / '1.0.0'} with different content;"
        " give the new model a new version"
    )


def test_failed_verify_keeps_the_previous_version_current(
    make_payload: MakePayload, tmp_path: Path, no_systemd: FakeSystemd
) -> None:
    prefix = tmp_path / "opt"
    install(make_payload("1.0.0"), prefix, trust=UNSIGNED_OK, systemd=no_systemd)
    with pytest.raises(InstallError) as err:
        install(make_payload("2.0.0", model=b"broken", appended=True), prefix, trust=UNSIGNED_OK, systemd=no_systemd)
    assert str(err.value) == (
        "verify failed: golden set: 3 of 3 labels differ, max abs diff 9.10e-01 (tolerance 0.0001);"
        " toy 1.0.0 stays current"
    )
    model = prefix / "toy"
    assert os.readlink(model / "current") == "1.0.0"
    assert _entries(model) == [".lock", "1.0.0", "current", "mlpack-toy.service", "state", "trust"]


def test_tampered_bundle_is_refused_before_anything_is_copied(
    make_payload: MakePayload, tmp_path: Path, no_systemd: FakeSystemd
) -> None:
    payload = make_payload("1.0.0")
    (payload.bundle / "model.onnx").write_bytes(b"tampered")
    with pytest.raises(InstallError) as err:
        install(payload, tmp_path / "opt", trust=UNSIGNED_OK, systemd=no_systemd)
    assert str(err.value) == (
        f"not installed: {payload.bundle}: file model.onnx does not match its sha256 in the manifest"
        " (tampered or corrupt)"
    )
    assert not (tmp_path / "opt").exists()


def test_interrupted_install_leaves_nothing_behind(make_payload: MakePayload, tmp_path: Path, no_systemd: FakeSystemd) -> None:
    def crash(folder: Path, name: str) -> None:
        raise KeyboardInterrupt  # power cut / Ctrl-C in the middle of the install

    with pytest.raises(KeyboardInterrupt):
        install(make_payload("1.0.0"), tmp_path / "opt", verifier=crash, trust=UNSIGNED_OK, systemd=no_systemd)
    assert _entries(tmp_path / "opt" / "toy") == [".lock"]


def test_leftovers_of_a_killed_install_are_cleared_by_the_next(
    make_payload: MakePayload, tmp_path: Path, no_systemd: FakeSystemd
) -> None:
    model = tmp_path / "opt" / "toy"
    (model / ".2.0.0.k1ll3d.tmp" / "_internal").mkdir(parents=True)  # SIGKILL mid-copy: no cleanup ran
    install(make_payload("1.0.0"), tmp_path / "opt", trust=UNSIGNED_OK, systemd=no_systemd)
    assert _entries(model) == [".lock", "1.0.0", "current", "mlpack-toy.service", "state", "trust"]


def test_rollback_swaps_current_and_previous(make_payload: MakePayload, tmp_path: Path, no_systemd: FakeSystemd) -> None:
    prefix = tmp_path / "opt"
    install(make_payload("1.0.0"), prefix, trust=UNSIGNED_OK, systemd=no_systemd)
    second = install(make_payload("2.0.0"), prefix, trust=UNSIGNED_OK, systemd=no_systemd)
    assert (second.status, second.previous) == ("installed", "1.0.0")
    assert installed_versions(prefix, "toy") == ("2.0.0", "1.0.0", ["1.0.0", "2.0.0"])

    back = rollback(prefix, "toy", systemd=no_systemd)
    assert (back.version, back.previous) == ("1.0.0", "2.0.0")
    assert installed_versions(prefix, "toy") == ("1.0.0", "2.0.0", ["1.0.0", "2.0.0"])
    rollback(prefix, "toy", systemd=no_systemd)
    assert installed_versions(prefix, "toy")[:2] == ("2.0.0", "1.0.0")


def test_rollback_without_a_previous_version(make_payload: MakePayload, tmp_path: Path, no_systemd: FakeSystemd) -> None:
    prefix = tmp_path / "opt"
    install(make_payload("1.0.0"), prefix, trust=UNSIGNED_OK, systemd=no_systemd)
    with pytest.raises(InstallError) as err:
        rollback(prefix, "toy", systemd=no_systemd)
    assert str(err.value) == f"toy: no previous version under {prefix / 'toy'} to roll back to"
    with pytest.raises(InstallError) as err:
        rollback(prefix, "other", systemd=no_systemd)
    assert str(err.value) == f"other is not installed under {prefix}"


def test_reinstalling_the_previous_version_switches_back_to_it(
    make_payload: MakePayload, tmp_path: Path, no_systemd: FakeSystemd
) -> None:
    prefix = tmp_path / "opt"
    _install_all(make_payload, prefix, no_systemd, "1.0.0", "2.0.0")
    result = install(make_payload("1.0.0"), prefix, trust=UNSIGNED_OK, systemd=no_systemd)
    assert (result.status, result.previous) == ("switched", "2.0.0")
    assert installed_versions(prefix, "toy")[:2] == ("1.0.0", "2.0.0")


def test_only_current_and_previous_versions_are_kept(make_payload: MakePayload, tmp_path: Path, no_systemd: FakeSystemd) -> None:
    prefix = tmp_path / "opt"
    _install_all(make_payload, prefix, no_systemd, "1.0.0", "2.0.0")
    result = install(make_payload("3.0.0"), prefix, trust=UNSIGNED_OK, systemd=no_systemd)
    assert "removed old version 1.0.0" in result.notes
    assert installed_versions(prefix, "toy") == ("3.0.0", "2.0.0", ["2.0.0", "3.0.0"])


def test_current_link_never_disappears_while_switching(
    make_payload: MakePayload, tmp_path: Path, no_systemd: FakeSystemd
) -> None:
    prefix = tmp_path / "opt"
    _install_all(make_payload, prefix, no_systemd, "1.0.0", "2.0.0")
    link = prefix / "toy" / "current"
    stop = threading.Event()
    seen: set[str] = set()
    broken: list[str] = []

    def watch() -> None:
        while not stop.is_set():
            try:
                target = os.readlink(link)
            except OSError as exc:
                broken.append(repr(exc))
                continue
            seen.add(target)
            if not (link / "toy").is_file():
                broken.append(f"current -> {target} has no launcher")

    watcher = threading.Thread(target=watch)
    watcher.start()
    try:
        for _ in range(30):
            rollback(prefix, "toy", verifier=lambda f, n: None, systemd=no_systemd)
    finally:
        stop.set()
        watcher.join()
    assert broken == []
    assert seen == {"1.0.0", "2.0.0"}


def test_prefix_under_a_file_is_a_one_line_error(make_payload: MakePayload, tmp_path: Path, no_systemd: FakeSystemd) -> None:
    blocker = tmp_path / "not-a-dir"
    blocker.write_text("x")
    with pytest.raises(InstallError) as err:
        install(make_payload("1.0.0"), blocker / "opt", trust=UNSIGNED_OK, systemd=no_systemd)
    assert str(err.value) == f"cannot write to {blocker / 'opt'}: Not a directory"


@pytest.fixture
def unwritable_prefix(tmp_path: Path) -> Iterator[Path]:
    """A read-only folder; root writes through permissions, so it gets sysfs (EPERM even for root)."""
    if os.geteuid() == 0:
        yield Path("/sys/mlpack-test-prefix")
        return
    prefix = tmp_path / "ro"
    prefix.mkdir()
    prefix.chmod(0o555)
    yield prefix
    prefix.chmod(0o755)


def test_unwritable_prefix_is_a_one_line_error(
    make_payload: MakePayload, unwritable_prefix: Path, no_systemd: FakeSystemd
) -> None:
    with pytest.raises(InstallError) as err:
        install(make_payload("1.0.0"), unwritable_prefix, trust=UNSIGNED_OK, systemd=no_systemd)
    assert str(err.value) == (
        f"cannot write to {unwritable_prefix}: permission denied (run as root or pass --prefix DIR)"
    )
    assert not (unwritable_prefix / "toy").exists()


def test_uninstall_removes_versions_but_keeps_state(make_payload: MakePayload, tmp_path: Path, no_systemd: FakeSystemd) -> None:
    prefix = tmp_path / "opt"
    _install_all(make_payload, prefix, no_systemd, "1.0.0", "2.0.0")
    (prefix / "toy" / "state" / "outbox.db").write_bytes(b"unsent telemetry")
    result = uninstall(prefix, "toy", systemd=no_systemd)
    assert _entries(prefix / "toy") == ["state"]
    assert result.notes == [f"kept {prefix / 'toy' / 'state'} (agent config, unsent telemetry); --purge removes it"]
    with pytest.raises(InstallError) as err:
        uninstall(prefix, "toy", systemd=no_systemd)
    assert str(err.value) == f"toy is not installed under {prefix}"
    uninstall(prefix, "toy", purge=True, systemd=no_systemd)
    assert not (prefix / "toy").exists()


def test_systemd_enable_only_when_asked_and_running(make_payload: MakePayload, tmp_path: Path) -> None:
    prefix = tmp_path / "opt"
    systemd = FakeSystemd(running=True)
    install(make_payload("1.0.0"), prefix, trust=UNSIGNED_OK, systemd=systemd)
    install(make_payload("2.0.0"), prefix, trust=UNSIGNED_OK, systemd=systemd, enable=True)
    rollback(prefix, "toy", systemd=systemd)
    uninstall(prefix, "toy", systemd=systemd)
    unit = str(prefix / "toy" / "mlpack-toy.service")
    assert systemd.calls == [
        ("try-restart", "mlpack-toy.service"),
        ("enable", "--now", unit),
        ("try-restart", "mlpack-toy.service"),
        ("disable", "--now", "mlpack-toy.service"),
    ]


def test_agent_config_goes_to_the_state_folder(make_payload: MakePayload, tmp_path: Path, no_systemd: FakeSystemd) -> None:
    prefix = tmp_path / "opt"
    config = AgentConfig(collector_url="https://collector.example", device_id="dev-1", token="s3cret")
    result = install(make_payload("1.0.0"), prefix, trust=UNSIGNED_OK, systemd=no_systemd, agent_config=config)
    state = prefix / "toy" / "state"
    assert json.loads((state / "agent.json").read_text())["device_id"] == "dev-1"
    assert (state / "agent.token").read_text().strip() == "s3cret"
    assert stat.S_IMODE((state / "agent.token").stat().st_mode) == 0o600
    assert not any("s3cret" in note for note in result.notes)


def test_model_name_that_cannot_be_a_folder_is_refused(
    make_bundle: Callable[..., Path], fake_runtime: Path, tmp_path: Path, no_systemd: FakeSystemd
) -> None:
    from mlpack_edge.runtime.embedded import LAUNCHER_DATA_NAME

    bundle = make_bundle("current")
    with pytest.raises(InstallError) as err:
        payload = Payload(fake_runtime / LAUNCHER_DATA_NAME, fake_runtime, bundle)
        install(payload, tmp_path / "opt", trust=UNSIGNED_OK, systemd=no_systemd)
    assert str(err.value) == "manifest version 'current' cannot name a folder (letters, digits, '.', '_', '+', '-')"
