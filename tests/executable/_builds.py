"""Real builds of the breast-cancer example for the slow tier (used by the ``built`` fixture)."""

from __future__ import annotations

import csv
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "breast_cancer"
#: How a build that reused a cached runtime says so (mlpack_edge.builder.executable).
REUSED = "reusing cached device runtime "


@dataclass(frozen=True)
class Built:
    work: Path
    material: dict[str, Any]  # what the runtime cache key covered when the session started building
    cache: Path  # the runtime cache the two builds used (empty before the first)
    v1: Path  # executable of 1.0.0
    v2: Path  # executable of 1.1.0 (same data, other C: other probabilities)
    bundle1: Path
    events: list[tuple[str, ...]]  # first build's progress
    rebuild_events: list[tuple[str, ...]]  # second build's: only the model changed
    rows_csv: Path


def spec_copy(work: Path, version: str, c: float) -> Path:
    """A copy of the example spec and data under ``work`` with another version and C."""
    folder = work / f"spec-{version}"
    shutil.copytree(EXAMPLE, folder)
    spec = folder / "mlpack.toml"
    text = spec.read_text().replace('version = "1.0.0"', f'version = "{version}"')
    spec.write_text(text.replace("C = 0.5", f"C = {c}"))
    return spec


def build_with_cache(spec: Path, dist: Path, cache: Path, **env: str) -> tuple[Any, list[tuple[str, ...]]]:
    """``mlpack build`` of ``spec`` with runtime cache ``cache`` (and extra environment); result and progress."""
    from mlpack_edge.builder import RecordingReporter, build

    reporter = RecordingReporter()
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("MLPACK_CACHE_DIR", str(cache))
        for name, value in env.items():
            mp.setenv(name, value)
        result = build(spec, dist, reporter=reporter)
    assert result.executable is not None
    return result, reporter.events


def key_material() -> dict[str, Any]:
    """What the runtime cache key covers right now (device-side sources, versions, freeze recipe)."""
    from mlpack_edge.builder._freeze import key_material, stage_sources

    return key_material(stage_sources())


def key_changes(material: dict[str, Any]) -> list[str]:
    """What the cache key covers that differs now from ``material`` (files by path, then versions, platform, recipe)."""
    now = key_material()
    changed = [path for path in sorted(material["files"].keys() | now["files"].keys())
               if material["files"].get(path) != now["files"].get(path)]
    changed += [f"{name} {material['versions'].get(name)!r} -> {now['versions'].get(name)!r}"
                for name in sorted(material["versions"].keys() | now["versions"].keys())
                if material["versions"].get(name) != now["versions"].get(name)]
    return changed + [what for what in ("platform", "recipe", "optimize") if material.get(what) != now.get(what)]


def assert_reused(infos: list[str], material: dict[str, Any]) -> None:
    """Fail, saying why, unless a build's progress ``infos`` show it reused a cached runtime.

    ``material`` is :func:`key_material` taken before the build that froze the entry. A
    build that froze instead either found the entry out of date (its progress says which
    input changed) or looked for another key: something the key covers changed while the
    test ran -- in a shared checkout, another process editing the device side.
    """
    if any(i.startswith(REUSED) for i in infos):
        return
    changed = key_changes(material)
    if changed:
        pytest.fail("froze again instead of reusing the cache: what the cache key covers changed while the test"
                    f" ran (was this checkout edited?): {', '.join(changed)}; progress: {infos}")
    pytest.fail(f"froze again instead of reusing the cache, under the same key; progress: {infos}")


def build_two_versions(work: Path) -> Built:
    """1.0.0 into an empty cache (freezes), then 1.1.0 (reuses), plus 25 rows to predict."""
    cache = work / "cache"
    material = key_material()
    first, events = build_with_cache(spec_copy(work, "1.0.0", 0.5), work / "dist", cache)
    second, rebuild_events = build_with_cache(spec_copy(work, "1.1.0", 0.25), work / "dist", cache)
    with open(EXAMPLE / "breast_cancer.csv", newline="") as fh:
        rows = list(csv.DictReader(fh))[:25]
    rows_csv = work / "rows.csv"
    with open(rows_csv, "w", newline="") as fh:
        fields = [k for k in rows[0] if k != "diagnosis"]
        writer = csv.DictWriter(fh, fieldnames=fields, extrasaction="ignore")
        writer.writeheader()
        writer.writerows(rows)
    return Built(work, material, cache, first.executable, second.executable, first.bundle_dir, events, rebuild_events,
                 rows_csv)
