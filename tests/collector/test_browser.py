"""Headless Chromium opens the fleet page of a collector holding several devices' data."""

from __future__ import annotations

import os
import shutil
import subprocess
import time
from pathlib import Path

import pytest

from tests._services import require_chromium
from tests.collector.process import start_collector, stop_collector
from tests.collector.sim import gz, make_profile, model_hash

pytestmark = pytest.mark.browser

_FLAGS = [
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
    "--disable-component-update", "--disable-sync", "--no-first-run", "--hide-scrollbars",
]


def chromium(binary: str, profile_dir: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [binary, *_FLAGS, f"--user-data-dir={profile_dir}", *args],
        capture_output=True, text=True, timeout=120,
    )


@pytest.mark.slow
def test_fleet_page_shows_charts_and_the_drifted_feature(tmp_path: Path) -> None:
    import httpx

    binary = require_chromium()
    c = start_collector("sqlite:///" + str(tmp_path / "collector.db"), "--silent-after", "1800")
    try:
        profile = make_profile()
        h = model_hash("demo", "1.0.0")
        now = time.time()
        fleet = [c.device(profile, h, seed=1), c.device(profile, h, seed=2, shift=2.5),
                 c.device(profile, h, seed=3, error_rate=0.02)]
        c.device(profile, h, seed=4)  # registered, never uploads
        with httpx.Client(timeout=30) as cl:
            for dev, token in fleet:
                for hour in range(6):
                    ws = [dev.window(now - 6 * 3600 + hour * 3600 + 300 * k) for k in range(12)]
                    r = cl.post(f"{c.url}/api/v1/ingest", content=gz(dev.batch(ws)),
                                headers={"Authorization": f"Bearer {token}", "Content-Encoding": "gzip"})
                    assert r.status_code == 200, r.text
        drifted = fleet[1][0].name

        dom = chromium(binary, tmp_path / "chrome-a", "--dump-dom", c.url + "/?hours=6")
        assert dom.returncode == 0, dom.stderr[-2000:]
        html = dom.stdout
        for chart in ("fleet-latency", "fleet-throughput", "fleet-errors", "fleet-drift"):
            start = html.index(f'id="chart-{chart}"')
            svg = html[start : html.index("</svg>", start)]
            assert "<polyline" in svg, f"chart {chart} has no line"
        row = html[html.index(f'data-device="{drifted}"') :]
        assert row.startswith(f'data-device="{drifted}" data-status="drift"')
        assert '<span class="feature">x0</span>' in row[: row.index("</tr>")]
        assert f'data-kind="drift" data-feature="x0"><strong>drift</strong> — {drifted}: x0 drifted' in html
        assert html.count('data-status="ok"') >= 2 and 'data-status="never"' in html

        shot = tmp_path / "fleet.png"
        res = chromium(binary, tmp_path / "chrome-b", f"--screenshot={shot}", "--window-size=1400,1800",
                       c.url + "/?hours=6")
        assert res.returncode == 0, res.stderr[-2000:]
        data = shot.read_bytes()
        assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 20_000
        keep = os.environ.get("MLPACK_KEEP_SCREENSHOTS")
        if keep:
            Path(keep).mkdir(parents=True, exist_ok=True)
            shutil.copy(shot, Path(keep) / "fleet.png")
            dshot = Path(keep) / "device.png"
            chromium(binary, tmp_path / "chrome-c", f"--screenshot={dshot}", "--window-size=1400,1800",
                     f"{c.url}/devices/{drifted}?hours=6")
    finally:
        stop_collector(c)
