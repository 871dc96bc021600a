"""``<model> install | rollback | uninstall``: thin click faces of :mod:`mlpack_edge.runtime.install`.

Registered lazily by the device command group; the model they act on is the one this
executable carries, or the bundle the group's ``--bundle`` names (``--name`` picks
another installed model, e.g. from plain Python).
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

import click

from mlpack_edge.errors import InstallError, MlpackError
from mlpack_edge.runtime import install as _install
from mlpack_edge.runtime.embedded import embedded_bundle
from mlpack_edge.runtime.manifest import read_manifest

if TYPE_CHECKING:
    from mlpack_edge.monitor_agent.config import AgentConfig

__all__ = ["install", "rollback", "uninstall"]

_prefix_option = click.option(
    "--prefix",
    type=click.Path(file_okay=False, path_type=Path),
    default=_install.DEFAULT_PREFIX,
    show_default=True,
    envvar="MLPACK_PREFIX",
    help="Folder holding installed models ($MLPACK_PREFIX).",
)


@click.command("install")
@_prefix_option
@click.option(
    "--trust-key",
    "trust_keys",
    multiple=True,
    type=click.Path(dir_okay=False, path_type=Path),
    help="Public key (KEY.pub from mlpack keys generate) whose signatures this device accepts; repeatable.",
)
@click.option(
    "--allow-unsigned",
    is_flag=True,
    help="Also run bundles without a signature (development devices). Never accepts a bad signature.",
)
@click.option("--enable", is_flag=True, help="Enable and start the systemd service (where systemd runs).")
@click.option("--collector-url", help="Collector the monitoring agent uploads to.")
@click.option("--device-id", help="This device's id at the collector.")
@click.option(
    "--token-file",
    type=click.Path(dir_okay=False, path_type=Path),
    help="File holding this device's collector token (copied to the state folder, mode 0600).",
)
@click.option(
    "--ca-file",
    type=click.Path(dir_okay=False, path_type=Path),
    help="The fleet's CA certificate (PEM) the collector's certificate must chain to, instead of the system's"
    " roots (copied to the state folder).",
)
@click.option(
    "--client-cert",
    type=click.Path(dir_okay=False, path_type=Path),
    help="This device's certificate (PEM) for mutual TLS with the collector; with --client-key (copied).",
)
@click.option(
    "--client-key",
    type=click.Path(dir_okay=False, path_type=Path),
    help="Its private key, unencrypted PEM (copied to the state folder, mode 0600).",
)
@click.option(
    "--allow-insecure-http",
    is_flag=True,
    help="Allow a plain http:// collector on another machine (token and telemetry cross the network unencrypted).",
)
@click.option("--capture-rate", type=float, help="Opt-in: share of predicted rows offered for capture (real inputs"
              " kept for retraining: personal data) [default: 0, off].")
@click.option("--capture-max-rows-per-day", type=int, help="With --capture-rate: rows kept per day at most [default: 1000].")
@click.option("--capture-exclude", multiple=True, metavar="COLUMN", help="With --capture-rate: a column never kept; repeatable.")
@click.pass_context
def install(
    ctx: click.Context,
    prefix: Path,
    trust_keys: tuple[Path, ...],
    allow_unsigned: bool,
    enable: bool,
    collector_url: str | None,
    device_id: str | None,
    token_file: Path | None,
    ca_file: Path | None,
    client_cert: Path | None,
    client_key: Path | None,
    allow_insecure_http: bool,
    capture_rate: float | None,
    capture_max_rows_per_day: int | None,
    capture_exclude: tuple[str, ...],
) -> None:
    """Install this model under PREFIX/<name>/<version>, verify it there, then make it current.

    \b
    Trust: the first install needs --trust-key KEY.pub (repeatable) or an explicit
    --allow-unsigned; it is written to PREFIX/<name>/trust/ and enforced at every
    start and verify. Later installs keep it unless given new options (to revoke a
    key, install again with the remaining ones).
      - a signature that does not verify is always refused
      - a signature by a key not trusted here is refused
      - an unsigned bundle is refused unless --allow-unsigned
    Refusals, installs, upgrades and trust changes are audit events the monitoring
    agent uploads.

    \b
    With --bundle PATH (a bundle folder or .tar/.tar.gz/.tgz/.zip archive) the model
    installed is that bundle, run by this executable's runtime: checked like any
    install (signature, files, then verify in place on this CPU) before it is switched.
    Installing a version that is installed already but whose files were altered lays
    it out again from this executable and records a 'repaired' audit event.
    """
    from mlpack_edge.runtime._trust import TrustPolicy

    capture = {k: v for k, v in (("capture_rate", capture_rate), ("capture_max_rows_per_day", capture_max_rows_per_day),
                                  ("capture_exclude", capture_exclude or None)) if v is not None}
    config = _agent_config(collector_url, device_id, token_file, (ca_file, client_cert, client_key), allow_insecure_http,
                           capture)
    if config is not None and config.capture_rate:
        from mlpack_edge.monitor_agent.agent import check_capture

        try:
            check_capture(ctx.obj.model_info(), config)
        except MlpackError as exc:
            raise InstallError(f"agent settings: {exc}") from None
    trust = TrustPolicy.from_key_files(trust_keys, allow_unsigned) if trust_keys or allow_unsigned else None
    payload = _install.current_payload()
    explicit = _explicit_bundle(ctx)
    if explicit is not None:
        payload = _install.with_bundle(payload, explicit)
        click.echo(f"installing the bundle {explicit} with this executable's runtime")
    result = _install.install(payload, prefix, trust=trust, enable=enable, agent_config=config)
    if result.status == "unchanged":
        click.echo(f"{result.name} {result.version} already installed at {result.path}")
    elif result.status == "repaired":
        click.echo(f"repaired {result.name} {result.version} at {result.path}; still current")
    else:
        was = f" (previous: {result.previous})" if result.previous and result.previous != result.version else ""
        click.echo(f"{result.status} {result.name} {result.version} at {result.path}; now current{was}")
    if result.signature is not None:
        click.echo(f"  {result.signature.describe()}")
    _notes(result)


@click.command("rollback")
@_prefix_option
@click.option("--name", help="Installed model to roll back [default: this executable's model].")
@click.pass_context
def rollback(ctx: click.Context, prefix: Path, name: str | None) -> None:
    """Make the previously installed version current again."""
    result = _install.rollback(prefix, name or _own_name(ctx))
    click.echo(f"rolled back {result.name} to {result.version} (was {result.previous})")
    _notes(result)


@click.command("uninstall")
@_prefix_option
@click.option("--name", help="Installed model to remove [default: this executable's model].")
@click.option("--purge", is_flag=True, help="Also delete the state folder (agent config, unsent telemetry).")
@click.pass_context
def uninstall(ctx: click.Context, prefix: Path, name: str | None, purge: bool) -> None:
    """Remove every installed version of this model and its service unit."""
    result = _install.uninstall(prefix, name or _own_name(ctx), purge=purge)
    click.echo(f"uninstalled {result.name} from {result.path}")
    _notes(result)


def _explicit_bundle(ctx: click.Context) -> Path | None:
    """The device group's ``--bundle`` (or ``$MLPACK_BUNDLE``), when one was given."""
    explicit = getattr(ctx.obj, "explicit", None)
    return Path(explicit) if explicit is not None else None


def _own_name(ctx: click.Context) -> str:
    """The model these commands act on: the one ``--bundle`` names, else this executable's."""
    explicit = _explicit_bundle(ctx)
    if explicit is not None:
        if explicit.is_dir():
            return read_manifest(explicit).name
        from mlpack_edge.runtime._archive import open_archive

        return open_archive(explicit).manifest().name
    bundle = embedded_bundle()
    if bundle is None:
        raise InstallError("not running from a device executable: pass --name")
    return str(read_manifest(bundle).name)


def _agent_config(
    collector_url: str | None,
    device_id: str | None,
    token_file: Path | None,
    tls_files: tuple[Path | None, Path | None, Path | None] = (None, None, None),
    allow_insecure_http: bool = False,
    capture: dict[str, Any] | None = None,
) -> AgentConfig | None:
    if collector_url is None and device_id is None and token_file is None and not any(tls_files) and not capture:
        return None
    from mlpack_edge.monitor_agent.config import AgentConfig
    from mlpack_edge.monitor_agent.tls import check_tls_files

    token = None
    if token_file is not None:
        try:
            token = token_file.read_text(encoding="utf-8").strip()
        except OSError as exc:
            raise InstallError(f"--token-file {token_file}: cannot read ({exc.strerror})") from None
    ca_file, client_cert, client_key = (None if p is None else str(p.absolute()) for p in tls_files)
    try:
        config = AgentConfig(
            collector_url=collector_url, device_id=device_id, token=token, ca_file=ca_file,
            client_cert=client_cert, client_key=client_key, allow_insecure_http=allow_insecure_http,
            **(capture or {}),
        )
        check_tls_files(ca_file, client_cert, client_key)  # readable, PEM, key matches (before anything is installed)
        config.check_transport()  # plain http:// to another machine, a client certificate over http://
    except MlpackError as exc:
        raise InstallError(f"agent settings: {exc}") from None
    return config


def _notes(result: _install.InstallResult) -> None:
    for note in result.notes:
        click.echo(f"  {note}")
