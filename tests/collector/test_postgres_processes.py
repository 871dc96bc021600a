"""Two collector processes side by side on one PostgreSQL database."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator

import httpx
import pytest

from mlpack_edge.collector import admin, open_storage
from mlpack_edge.collector.rollup import FLEET
from mlpack_edge.collector.storage.migrations import MIGRATIONS
from tests.collector.process import pg_schema, start_collector, stop_collector
from tests.collector.sim import SimDevice, gz, make_profile, model_hash

pytestmark = pytest.mark.postgres


@pytest.fixture
def fresh_pg_url() -> Iterator[str]:
    with pg_schema() as url:
        yield url


def test_two_processes_share_one_database_without_losing_or_doubling_windows(fresh_pg_url: str) -> None:
    # Both start on an empty schema at once: the migration must run exactly once.
    procs: list = []
    starters = [threading.Thread(target=lambda: procs.append(start_collector(fresh_pg_url))) for _ in range(2)]
    for t in starters:
        t.start()
    for t in starters:
        t.join()
    assert len(procs) == 2
    try:
        profile = make_profile()
        h = model_hash("shared", "1.0.0")
        devices = []
        for i in range(4):
            name = f"pg-dev-{i}"
            devices.append((SimDevice(name, profile, h, seed=i), admin.add_device(fresh_pg_url, name)))
        now = time.time()
        errors: list[str] = []

        def upload(dev: SimDevice, token: str, k: int) -> None:
            # Each batch goes to one process, then is replayed to the other (a retry after a
            # lost reply landing behind a load balancer on the other collector).
            with httpx.Client(timeout=30) as cl:
                for b in range(6):
                    body = gz(dev.batch([dev.window(now - 7200 + 60 * (b * 3 + j)) for j in range(3)], name="shared"))
                    for target in (procs[(k + b) % 2], procs[(k + b + 1) % 2]):
                        r = cl.post(f"{target.url}/api/v1/ingest", content=body,
                                    headers={"Authorization": f"Bearer {token}", "Content-Encoding": "gzip"})
                        if r.status_code != 200:
                            errors.append(f"{dev.name}: {r.status_code} {r.text}")

        threads = [threading.Thread(target=upload, args=(d, t, k)) for k, (d, t) in enumerate(devices)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert errors == []
        storage = open_storage(fresh_pg_url, migrate=False)
        try:
            assert [storage.window_count(d.name) for d, _ in devices] == [18, 18, 18, 18]
            fleet = storage.rollups("h", 0, int(now) + 3600, model=h, columns="requests")
            assert sum(r[3] for r in fleet if r[0] == FLEET) == 4 * 18 * 50
            per_device = storage.rollups("d", 0, int(now) + 86400, model=h, per_device=True, columns="requests")
            assert sum(r[3] for r in per_device) == 4 * 18 * 50
            versions = storage._query("SELECT version FROM schema_version ORDER BY version")
            assert [v[0] for v in versions] == [m[0] for m in MIGRATIONS]  # each applied once
        finally:
            storage.close()
        # Both processes serve the same fleet.
        with httpx.Client(timeout=30) as cl:
            views = [cl.get(f"{p.url}/api/v1/devices").json()["devices"] for p in procs]
        assert [d["requests"] for d in views[0]] == [d["requests"] for d in views[1]] == [900] * 4
    finally:
        for p in procs:
            stop_collector(p)
