"""``mlpack runtime``: make and list the cached, model-free device runtimes.

A build freezes the runtime it needs on first use; ``runtime freeze`` does it ahead of
time (say, once on a CI machine, before the builds), and ``runtime list`` shows what the
cache holds: which target, which glibc floor, how big, and the inputs hash (the cache key).
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import click

from mlpack_edge._cli import MlpackGroup, fail
from mlpack_edge.errors import MlpackError

__all__ = ["runtime_cli"]


class _Stderr:
    def info(self, message: str) -> None:
        click.echo(message, err=True)


@click.group("runtime", cls=MlpackGroup)
def runtime_cli() -> None:
    """Make and list the cached device runtimes (the executable minus the model)."""


@runtime_cli.command("freeze")
@click.option(
    "--floor",
    type=click.Choice(["host", "glibc-2.31"]),
    default="host",
    show_default=True,
    help="host: freeze with this Python; glibc-2.31: freeze in a Debian 11 build root (root, mmdebstrap).",
)
@click.option(
    "--target",
    type=click.Choice(["linux-x86_64", "linux-aarch64"]),
    help="Device platform [default: this machine's]; another architecture is frozen in its build root under qemu.",
)
@click.option("--cache-dir", type=click.Path(path_type=Path, file_okay=False), help="[default: $MLPACK_CACHE_DIR or ~/.cache/mlpack]")
def freeze(floor: str, target: str | None, cache_dir: Path | None) -> None:
    """Freeze the device runtime now (progress on stderr), or confirm the cached one is current."""
    from mlpack_edge.builder._freeze import frozen_runtime

    try:
        runtime = frozen_runtime(cache_dir, _Stderr(), floor=floor, target=target)
    except MlpackError as exc:
        raise fail(exc) from None
    state = "cached" if runtime.reused else "frozen"
    click.echo(
        f"{state} runtime {runtime.key}: {runtime.target}, glibc {runtime.glibc_floor or '?'} or newer,"
        f" {runtime.size / 1e6:.1f} MB, {runtime.executable}"
    )


@runtime_cli.command("import")
@click.argument("file", type=click.Path(path_type=Path, dir_okay=False))
@click.option("--target", required=True, type=click.Choice(["linux-x86_64", "linux-aarch64"]), help="The device platform it was frozen on.")
@click.option("--cache-dir", type=click.Path(path_type=Path, file_okay=False), help="[default: $MLPACK_CACHE_DIR or ~/.cache/mlpack]")
def import_command(file: Path, target: str, cache_dir: Path | None) -> None:
    """Add a runtime frozen on a device (`mlpack runtime freeze` there) to the cache, for --target builds."""
    from mlpack_edge.builder._freeze import cache_root, import_expectations
    from mlpack_edge.builder._runtime_import import check_runtime_file, store_imported

    try:
        facts = check_runtime_file(file, target, import_expectations())
        exe = store_imported(file, target, facts, cache_dir or cache_root())
    except MlpackError as exc:
        raise fail(exc) from None
    click.echo(
        f"imported {exe.parent.name}: {target}, glibc {facts.get('glibc_floor') or '?'} or newer,"
        f" Python {facts.get('python')}, onnxruntime {facts.get('onnxruntime')}"
    )


@runtime_cli.command("list")
@click.option("--cache-dir", type=click.Path(path_type=Path, file_okay=False), help="[default: $MLPACK_CACHE_DIR or ~/.cache/mlpack]")
@click.option("--json", "as_json", is_flag=True, help="One JSON list on stdout.")
def list_runtimes(cache_dir: Path | None, as_json: bool) -> None:
    """Cached runtimes, newest first: inputs hash, target, floor, glibc, Python, size."""
    from mlpack_edge.builder._freeze import cache_root, runtime_entries

    rows = runtime_entries(cache_dir or cache_root())
    if as_json:
        click.echo(json.dumps(rows, indent=2, sort_keys=True))
        return
    if not rows:
        click.echo("no cached runtimes (mlpack runtime freeze makes one)", err=True)
        return
    click.echo(_table(rows))


def _table(rows: list[dict[str, Any]]) -> str:
    head = ("inputs hash", "target", "floor", "glibc", "python", "size")
    body = [
        (r["key"], r["target"], r["floor"], r["glibc_floor"] or "?", r["python"], f"{r['size'] / 1e6:.1f} MB")
        for r in rows
    ]
    widths = [max(len(str(x)) for x in col) for col in zip(head, *body)]
    return "\n".join("  ".join(str(c).ljust(w) for c, w in zip(row, widths)).rstrip() for row in (head, *body))


if __name__ == "__main__":  # pragma: no cover
    runtime_cli(sys.argv[1:])
