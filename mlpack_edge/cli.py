"""The ``mlpack`` command on an engineer's workstation (and the collector host)."""

from __future__ import annotations

import click

from mlpack_edge import __version__
from mlpack_edge._cli import MlpackGroup

_LAZY = {
    "build": ("mlpack_edge.builder.cli:build", "Train, gate, convert and bundle a model from a spec."),
    "inspect": ("mlpack_edge.builder.inspect_cli:inspect_command", "Show what a bundle or executable holds."),
    "keys": ("mlpack_edge.builder.cli:keys", "Generate and manage bundle signing keys."),
    "runtime": ("mlpack_edge.builder.runtime_cli:runtime_cli", "Freeze and list the cached device runtimes."),
    "device": ("mlpack_edge.runtime.cli:device_cli", "Run device commands against a bundle folder."),
    "collector": ("mlpack_edge.collector.cli:collector", "Run and administer the fleet collector."),
    "publish": ("mlpack_edge.builder.rollout_cli:publish", "Upload a signed bundle to the collector's release store."),
    "rollout": ("mlpack_edge.builder.rollout_cli:rollout", "Roll a published release out to devices in stages."),
}


@click.group(cls=MlpackGroup, lazy=_LAZY, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="mlpack", message="%(prog)s (mlpack-edge) %(version)s")
def main() -> None:
    """Train, gate, convert and package scikit-learn models for offline devices."""


if __name__ == "__main__":  # pragma: no cover
    main()
