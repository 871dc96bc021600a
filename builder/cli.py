"""``mlpack build`` and ``mlpack keys``: parse the arguments, call the library, show the result.

Imports nothing heavy at module level: ``mlpack build --help`` must not load
scikit-learn. Errors are the library's :class:`~mlpack_edge.errors.MlpackError`, shown as one
line with exit code 1; with ``--json`` a JSON result is printed on stdout first, so a CI
pipeline can read why a build failed as well as that it failed.

Streams: progress (one line per stage) and warnings go to stderr, results (what was
built, where) and ``--json`` to stdout, so ``mlpack build --json > result.json`` and
``mlpack build | tail -1`` both see only results.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import click

from mlpack_edge._cli import MlpackGroup, error_document, fail
from mlpack_edge.errors import GateError, MlpackError

__all__ = ["build", "keys"]


@click.command("build")
@click.argument("spec", required=False, default="mlpack.toml", type=click.Path(path_type=Path))
@click.option(
    "-o",
    "--out",
    "out_dir",
    type=click.Path(path_type=Path, file_okay=False),
    help="Folder for the bundle and executable  [default: ./dist]",
)
@click.option("--no-executable", is_flag=True, help="Write the bundle only; do not freeze the device executable.")
@click.option("--json", "as_json", is_flag=True, help="Print one JSON result on stdout (for CI) instead of progress.")
@click.option("-q", "--quiet", is_flag=True, help="Print nothing but errors.")
@click.option(
    "--sign-key",
    type=click.Path(path_type=Path, dir_okay=False),
    envvar="MLPACK_SIGN_KEY",
    help="Ed25519 private key (mlpack keys generate) to sign the bundle with [$MLPACK_SIGN_KEY].",
)
@click.option(
    "--onnx",
    "onnx_file",
    type=click.Path(path_type=Path, dir_okay=False),
    help="Bring your own ONNX model (in place of the spec's [estimator]; same as [model] onnx = FILE).",
)
@click.option(
    "--floor",
    type=click.Choice(["host", "glibc-2.31"]),
    default="host",
    show_default=True,
    help="Where the device runtime is frozen: with this machine's Python (needs this machine's glibc), "
    "or in a Debian 11 build root so the executable runs on glibc 2.31 and newer (needs root and mmdebstrap; "
    "minutes the first time, cached).",
)
@click.option(
    "--target",
    "targets",
    multiple=True,
    type=click.Choice(["linux-x86_64", "linux-aarch64"]),
    help="Device platform of the executable (repeatable) [default: this machine's]. Another "
    "architecture is frozen in a Debian 11 build root under qemu (root, mmdebstrap, qemu-user-static).",
)
def build(
    spec: Path,
    out_dir: Path | None,
    no_executable: bool,
    as_json: bool,
    quiet: bool,
    sign_key: Path | None,
    onnx_file: Path | None,
    floor: str,
    targets: tuple[str, ...],
) -> None:
    """Train, gate, convert and bundle the model described by SPEC.

    SPEC is a spec file or a folder holding mlpack.toml (default: ./mlpack.toml).
    The bundle goes to OUT/<name>-<version>/; a failed build writes nothing.
    With --sign-key the bundle carries manifest.sig; installed devices refuse an
    unsigned bundle unless they were installed with --allow-unsigned.
    """
    from mlpack_edge.builder import pipeline, progress

    reporter: Any
    if as_json:
        reporter = progress.RecordingReporter()
    elif quiet:
        reporter = progress.NullReporter()
    else:
        reporter = progress.ConsoleReporter(sys.stderr)
        click.echo(f"mlpack build {spec}", err=True)
    try:
        result = pipeline.build(
            spec, out_dir, executable=not no_executable, reporter=reporter, sign_key=sign_key, onnx=onnx_file, floor=floor, targets=targets
        )
    except MlpackError as exc:
        if as_json:
            click.echo(json.dumps(_failure(exc, reporter.stages()), indent=2, sort_keys=True))
        raise fail(exc) from None
    if as_json:
        click.echo(json.dumps(result.to_dict(), indent=2, sort_keys=True))
    elif not quiet:
        replaced = "; replaced the previous build of this version" if result.replaced else ""
        click.echo(f"built {result.bundle_dir} (manifest sha256 {result.content_hash[:16]}{replaced})")
        if result.signed_by is not None:
            click.echo(f"signed with key {result.signed_by} (manifest.sig)")
        else:
            click.echo("unsigned: devices refuse it unless allowed (sign with --sign-key KEY)", err=True)
        for exe in result.executables:
            click.echo(f"device executable {exe}")


def _failure(exc: MlpackError, stages: list[dict[str, object]]) -> dict[str, Any]:
    """:func:`~mlpack_edge._cli.error_document` with the stages that ran and the failed gates."""
    doc = error_document(exc, stages=stages)
    if isinstance(exc, GateError):
        doc["error"]["failures"] = [{"gate": g, "value": v} for g, v in exc.failures]
        doc["error"]["report"] = exc.report
    return doc


@click.group("keys", cls=MlpackGroup)
def keys() -> None:
    """Generate and show the Ed25519 keys that sign bundles.

    The private key (.key, mode 0600) stays on the build machine and is passed to
    `mlpack build --sign-key`; the public key (.pub) goes to devices:
    `<model> install --trust-key KEY.pub`.
    """


@keys.command("generate")
@click.option(
    "--out",
    "out_dir",
    type=click.Path(path_type=Path, file_okay=False),
    default=".",
    show_default=True,
    help="Folder for the key files.",
)
@click.option("--name", default="mlpack-signing", show_default=True, help="Base name: NAME.key and NAME.pub.")
def keys_generate(out_dir: Path, name: str) -> None:
    """Make a new key pair; never overwrites an existing key."""
    from mlpack_edge.builder.signing import generate_key

    pair = generate_key(out_dir, name)
    click.echo(f"key id {pair.key_id}")
    click.echo(f"private key {pair.private} (mode 0600; keep it secret: mlpack build --sign-key {pair.private})")
    click.echo(f"public key  {pair.public} (give it to devices: install --trust-key {pair.public.name})")


@keys.command("show")
@click.argument("key", type=click.Path(path_type=Path, dir_okay=False))
def keys_show(key: Path) -> None:
    """Print the key id and fingerprint of a public or private key file."""
    from mlpack_edge.builder.signing import describe_key

    info = describe_key(key)
    click.echo(f"key id {info.key_id}")
    click.echo(f"{info.kind} key {info.path}")
    click.echo(f"fingerprint sha256:{info.fingerprint}")
