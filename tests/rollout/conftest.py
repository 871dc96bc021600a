"""Rollout fixtures: signed bundles (the governance ones), a real collector process with an
admin and devices, and a storage on SQLite or PostgreSQL for the state machine."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from mlpack_edge.collector import admin
from tests.collector.process import Collector, pg_schema, start_collector, stop_collector
from tests.governance.conftest import (  # noqa: F401  (fixtures re-used here)
    Bundles,
    Keys,
    NoSystemd,
    bundles,
    clean_env,
    copy_bundle,
    keys,
    make_payload,
    trusting,
)


@dataclass
class Fleet:
    """A running collector with one admin token and two device tokens (in files)."""

    collector: Collector
    data_dir: Path
    admin_file: Path
    device_files: dict[str, Path]

    @property
    def url(self) -> str:
        return self.collector.url

    def token(self, who: str) -> str:
        path = self.admin_file if who == "admin" else self.device_files[who]
        return path.read_text().strip()


def start_fleet(root: Path, *extra: str, devices: tuple[str, ...] = ("press-01", "press-02"),
                db_url: str | None = None) -> Fleet:
    """A collector process on ``db_url`` (default: a SQLite file in ``root/fleet``), its releases in
    ``root/fleet/releases`` whatever the database."""
    data = root / "fleet"
    data.mkdir(parents=True)
    db_url = db_url or "sqlite:///" + str(data / "collector.db")
    admin_file = root / "admin.token"
    admin_file.write_text(admin.add_admin(db_url, "ops") + "\n")
    files = {}
    for d in devices:
        files[d] = root / f"{d}.token"
        files[d].write_text(admin.add_device(db_url, d, labels={"site": "a"}) + "\n")
    return Fleet(start_collector(db_url, "--release-dir", str(data / "releases"), *extra), data, admin_file, files)


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def fleet(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Fleet]:
    """A real collector process on SQLite, and on a fresh PostgreSQL schema."""
    with contextlib.ExitStack() as stack:
        url = stack.enter_context(pg_schema()) if request.param == "postgres" else None
        f = start_fleet(tmp_path, db_url=url)
        try:
            yield f
        finally:
            stop_collector(f.collector)



@pytest.fixture(scope="session")
def inverted(tmp_path_factory: pytest.TempPathFactory, keys: Keys) -> Path:
    """gov 1.4.0, signed by the trusted signer, trained on the same rows with every label
    inverted: it passes its own build and golden set, and disagrees with 1.0.0 on almost
    every row (what only a shadow phase can catch)."""
    from mlpack_edge.builder import build
    from tests._data import binary_rows, spec_text

    root = tmp_path_factory.mktemp("gov-inverted")
    lines = binary_rows(n=120, seed=4).splitlines()
    flipped = [lines[0]] + [ln.rsplit(",", 1)[0] + "," + ("no" if ln.endswith("yes") else "yes") for ln in lines[1:]]
    (root / "data.csv").write_text("\n".join(flipped) + "\n", encoding="utf-8")
    (root / "mlpack.toml").write_text(spec_text(name="gov", version="1.4.0"), encoding="utf-8")
    return build(root / "mlpack.toml", root / "dist", executable=False, sign_key=keys.signer.private).bundle_dir
