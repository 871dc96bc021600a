"""Headless Chromium opens the alerts page: an alert that opened and resolved, its deliveries, the webhooks."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from mlpack_edge.collector import admin
from tests._services import require_chromium
from tests.collector.process import start_collector, stop_collector
from tests.collector.receiver import receiver
from tests.collector.sim import gz, make_profile, model_hash
from tests.collector.test_browser import chromium

from .test_api import post

pytestmark = pytest.mark.browser


@pytest.mark.slow
def test_alerts_page_shows_the_history_and_each_delivery(tmp_path: Path) -> None:
    binary = require_chromium()
    db = "sqlite:///" + str(tmp_path / "collector.db")
    with receiver([500]) as rx:
        admin.add_webhook(db, rx.url + "?token=hidden", "alertmanager")
        c = start_collector(db, "--silent-after", "1.5", "--alert-interval", "0.3", "--webhook-backoff", "0.3")
        try:
            dev, token = c.device(make_profile(), model_hash("demo", "1.0.0"))
            for _ in range(2):  # silent, then back: one episode opened and resolved
                assert post(c, token, gz(dev.batch([dev.window(time.time() - 30, rows=5000)]))).status_code == 200
                rx.wait_for(len(rx.requests) + 1)
            rx.wait_for(3)  # firing refused once, then delivered; resolved delivered
            time.sleep(0.5)
            dom = chromium(binary, tmp_path / "chrome", "--dump-dom", c.url + "/alerts")
        finally:
            stop_collector(c)
    assert dom.returncode == 0, dom.stderr[-2000:]
    html = dom.stdout
    row = html[html.index('id="alert-1"') :]
    row = row[: row.index("</tr>")]
    assert 'data-kind="silent" data-state="resolved"' in row and f">{dev.name}</a>" in row
    assert row.count('data-state="delivered"') == 2
    assert "2 attempts · HTTP 200" in row and "1 attempt · HTTP 200" in row
    hooks = html[html.index('id="webhooks"') :]
    assert "hidden" not in hooks and f"<code>{rx.url}?…</code>" in hooks
