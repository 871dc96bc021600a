"""Device certificates in the collector's database, on SQLite and PostgreSQL (migration + queries)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from mlpack_edge.collector import admin, open_storage
from mlpack_edge.errors import CollectorError
from tests.collector.process import pg_schema

from .conftest import Pki


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def db(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    if request.param == "sqlite":
        yield "sqlite:///" + str(tmp_path / "c.db")
        return
    with pg_schema() as url:
        yield url


def test_fingerprints_map_to_devices_until_revoked(db: str, pki: Pki) -> None:
    admin.add_device(db, "device-a", [pki.device_a.cert, pki.device_a.cert])  # the same file twice: one entry
    admin.add_device(db, "device-b")
    admin.add_device_certs(db, "device-b", [pki.device_b.cert])
    certs = {c.device: c for c in admin.device_certs(db)}
    assert sorted(certs) == ["device-a", "device-b"] and len(admin.device_certs(db, "device-a")) == 1
    s = open_storage(db)
    try:
        assert s.device_for_cert(certs["device-a"].fingerprint) == ("device-a", False)
        assert s.device_for_cert("0" * 64) is None
        s.revoke_device("device-a", 1.0)
        assert s.device_for_cert(certs["device-a"].fingerprint) == ("device-a", True)
        assert s.device_for_cert(certs["device-b"].fingerprint) == ("device-b", False)
    finally:
        s.close()
    with pytest.raises(CollectorError, match="is already registered to device 'device-b'$"):
        admin.add_device(db, "device-c", [pki.device_b.cert])
    assert "device-c" not in {d.name for d in admin.list_devices(db)}  # refused as a whole
