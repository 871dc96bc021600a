"""The fleet page and ``GET /api/v1/fleet`` in pages, worst first, against a real collector
process on a database of its own (SQLite and PostgreSQL): the pages put together are the
whole table, status counts and alerts cover every device whatever the page."""

from __future__ import annotations

import re
import time
from collections.abc import Iterator

import pytest

from mlpack_edge.collector import admin
from tests.collector.process import Collector, pg_schema, start_collector, stop_collector
from tests.collector.sim import SimDevice, gz, make_profile, model_hash


@pytest.fixture(scope="module", params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def fleet(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Collector]:
    """Seven devices: two drifting, three steady, one that never uploaded, one revoked."""
    if request.param == "sqlite":
        c = start_collector("sqlite:///" + str(tmp_path_factory.mktemp("paging") / "c.db"))
        yield from _seeded(c)
        return
    with pg_schema() as url:
        yield from _seeded(start_collector(url))


def _seeded(c: Collector) -> Iterator[Collector]:
    try:
        profile, h, now = make_profile(), model_hash("paging", "1.0.0"), time.time()
        shifts = {"p-steady-1": 0.0, "p-drift-1": 2.0, "p-steady-2": 0.0, "p-drift-2": 2.5, "p-steady-3": 0.0}
        for i, (name, shift) in enumerate(shifts.items()):
            token = admin.add_device(c.db_url, name)
            dev = SimDevice(name, profile, h, shift=shift, seed=i)
            body = gz(dev.batch([dev.window(now - 1800 + 60 * k) for k in range(10)], name="paging"))
            with c.client() as cl:
                r = cl.post("/api/v1/ingest", content=body,
                            headers={"Authorization": f"Bearer {token}", "Content-Encoding": "gzip"})
                assert r.status_code == 200, r.text
        admin.add_device(c.db_url, "p-never")
        admin.add_device(c.db_url, "p-gone")
        admin.revoke_device(c.db_url, "p-gone")
        yield c
    finally:
        stop_collector(c)


WORST_FIRST = ["p-drift-1", "p-drift-2", "p-steady-1", "p-steady-2", "p-steady-3", "p-never", "p-gone"]


def test_pages_put_together_are_the_whole_table_worst_first(fleet: Collector) -> None:
    with fleet.client() as cl:
        whole = cl.get("/api/v1/fleet", params={"per_page": 1000}).json()
        pages = [cl.get("/api/v1/fleet", params={"per_page": 3, "page": n}).json() for n in (1, 2, 3, 4)]
        default = cl.get("/api/v1/fleet").json()
    mine = [d["name"] for d in whole["devices"] if d["name"].startswith("p-")]
    assert mine == WORST_FIRST
    assert [d["status"] for d in whole["devices"]] == ["drift", "drift", "ok", "ok", "ok", "never", "revoked"]
    assert whole["paging"] == {"page": 1, "per_page": 1000, "total": 7, "pages": 1}
    assert [d["name"] for p in pages for d in p["devices"]] == WORST_FIRST
    assert [len(p["devices"]) for p in pages] == [3, 3, 1, 0]
    assert [p["paging"] for p in pages] == [{"page": n, "per_page": 3, "total": 7, "pages": 3} for n in (1, 2, 3, 4)]
    # every page counts and alerts on every device, not only its own
    for p in pages:
        assert p["status_counts"] == whole["status_counts"]
        assert p["status_counts"]["drift"] == 2 and p["status_counts"]["ok"] == 3
        assert p["alerts"] == whole["alerts"]
    assert {a["device"] for a in whole["alerts"] if a["kind"] == "drift" and a["device"]} == {"p-drift-1", "p-drift-2"}
    assert default["paging"] == {"page": 1, "per_page": 100, "total": 7, "pages": 1}
    assert [d["name"] for d in default["devices"]] == WORST_FIRST


def test_the_page_shows_one_page_of_rows_and_links_to_its_neighbours(fleet: Collector) -> None:
    with fleet.client() as cl:
        html = cl.get("/", params={"hours": 24, "per_page": 3, "page": 2}).text
        single = cl.get("/", params={"hours": 24}).text
    rows = re.findall(r'<tr class="row-[a-z]+" data-device="([^"]+)"', html)
    assert rows == ["p-steady-2", "p-steady-3", "p-never"]
    assert "Devices 4–6 of 7, worst first · page 2 of 3" in html
    assert '<a rel="prev" href="?hours=24&amp;page=1&amp;per_page=3">prev</a>' in html
    assert '<a rel="next" href="?hours=24&amp;page=3&amp;per_page=3">next</a>' in html
    assert "7 devices" in html and '<span class="status status-drift">drift</span> 2' in html
    # everything fits on one page: no pager
    assert 'class="pager"' not in single
    assert re.findall(r'<tr class="row-[a-z]+" data-device="([^"]+)"', single) == WORST_FIRST


@pytest.mark.parametrize("params", [{"page": 0}, {"per_page": 0}, {"per_page": 1001}, {"page": "x"}])
def test_a_bad_page_is_422(fleet: Collector, params: dict) -> None:
    with fleet.client() as cl:
        for path in ("/api/v1/fleet", "/"):
            r = cl.get(path, params=params)
            assert r.status_code == 422, (path, r.text)


def test_the_page_lists_the_first_alerts_and_counts_the_rest() -> None:
    """Hundreds of alerts (a big fleet drifting) do not make the page hundreds of KB: the
    first :data:`page.SHOWN_ALERTS` are listed, critical first, the others counted and linked."""
    from mlpack_edge.collector.page import SHOWN_ALERTS, fleet_page

    alerts = [{"severity": "critical" if i < 5 else "warning", "kind": "drift", "model": None, "device": f"d{i}",
               "feature": "f", "message": f"d{i}: f drifted"} for i in range(SHOWN_ALERTS + 70)]
    data = {"range": {"from": 0, "to": 3600, "bucket": 60}, "models": [], "devices": [], "production": [],
            "status_counts": {"drift": 120}, "alerts": alerts}
    html = fleet_page(data, None)
    assert f"Alerts ({SHOWN_ALERTS + 70:,})" in html
    assert html.count('<li class="alert ') == SHOWN_ALERTS and html.count('class="alert alert-critical"') == 5
    assert "… and 70 more" in html and 'href="/alerts"' in html
    small = fleet_page({**data, "alerts": alerts[:3]}, None)
    assert small.count('<li class="alert ') == 3 and "more-alerts" not in small
