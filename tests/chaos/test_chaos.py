"""Chaos, scaled down for CI: the installed device serves under load while its process and
the collector's are killed with SIGKILL again and again (SQLite and PostgreSQL).

The bounded-loss rule (issue 9): every kill of the device loses at most the rows that
process answered in its last second (the agent checkpoints its open window every 0.5 s
and the next process stores a dead one's last checkpoint as a window); nothing is
counted twice; the outbox's accounting balances and it ends empty; the device's
``status`` counts what the collector counts. A one-shot ``predict`` of 120,000 rows
killed near its end loses at most about a second of its rows.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from tests._services import require_postgres

from .conftest import chaos_module

pytestmark = pytest.mark.slow


@pytest.mark.parametrize("backend", ["sqlite", "postgres"])
def test_every_kill_loses_at_most_the_last_second_and_nothing_counts_twice(device_exe: Path, backend: str) -> None:
    if backend == "postgres":
        require_postgres()
    chaos = chaos_module()
    report = chaos.run(device_exe, backend, kills=12, clients=4, min_life=0.5, max_life=3.0,
                       collector_every=(2.0, 6.0), predict_rows=120_000 if backend == "sqlite" else 0, seed=9)
    summary = report.summary()
    print(summary)
    assert len(report.lives) == 12 and report.collector_kills >= 2, summary
    assert all(life.answered > 0 for life in report.lives), [(life.instance, life.answered) for life in report.lives]
    over = [(life.instance, life.lost, life.last_second) for life in report.violations]
    assert over == [], f"kills that lost more than their last second (instance, lost, last second): {over}"
    assert report.answered - report.counted > 0  # kills do lose the rows since the last checkpoint
    assert (report.duplicates, report.overlaps, report.unattributed) == (0, 0, 0), summary
    acc = report.accounting
    assert report.balanced and (acc["pending"], acc["dropped"], acc["dead_letter"]) == (0, 0, 0), acc
    assert acc["delivered"] == acc["produced"] >= report.windows, acc
    assert report.status_rows == report.collector_rows, summary
    if report.predict is not None:
        p = report.predict
        assert p["counted"] > 0 and p["lost"] <= p["last_second"], p
