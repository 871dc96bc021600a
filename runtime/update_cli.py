"""``<model> update``: ask the collector what this device should run, do it, report it.

For cron or a systemd timer on devices that do not run ``serve`` (``serve`` applies the
same offers from its ingest replies by itself). Exit codes: 0 installed or rolled back,
3 nothing to do, 4 collector unreachable (a cut download resumes next time), 1 the update
was refused here (signature, integrity, golden set; the old version keeps running).
"""

from __future__ import annotations

from pathlib import Path

import click

from mlpack_edge.errors import InstallError

__all__ = ["update"]

_EXIT = {"installed": 0, "rolled back": 0, "none": 3, "skipped": 3, "unreachable": 4, "failed": 1}


@click.command("update")
@click.option("--state-dir", type=click.Path(file_okay=False, path_type=Path), envvar="MLPACK_STATE_DIR",
              help="The installed model's state folder [default: this installed executable's].")
@click.pass_context
def update(ctx: click.Context, state_dir: Path | None) -> None:
    """Install the release a rollout offers this device (or roll back a failed one), then report it."""
    from mlpack_edge.monitor_agent.config import load_config
    from mlpack_edge.monitor_agent.outbox import Outbox
    from mlpack_edge.monitor_agent.transport import TransportError, transport_for
    from mlpack_edge.monitor_agent.uploader import Uploader
    from mlpack_edge.runtime.update import apply_offers, poll_offers

    state = state_dir or getattr(ctx.obj, "state_dir", None)
    if state is None or not (Path(state).parent / "current").is_symlink():
        raise InstallError("update works on an installed model: run it as <prefix>/<name>/current/<name> update")
    state = Path(state).absolute()
    config = load_config(state)
    if not config.can_upload:
        raise InstallError(f"update needs the collector settings in {state / 'agent.json'} (install --collector-url "
                           "URL --device-id ID --token-file FILE)")
    config.check_transport()
    transport = transport_for(config)
    headers = {"Authorization": f"Bearer {config.token}"} if config.token else {}
    assert config.collector_url is not None
    try:
        offers = poll_offers(transport, config.collector_url, headers)
    except TransportError as exc:
        click.echo(f"collector unreachable ({exc}); nothing changed", err=True)
        ctx.exit(4)
    outcome = apply_offers(offers, prefix=state.parent.parent, name=state.parent.name,
                           collector_url=config.collector_url, headers=headers, fetcher=transport)
    text = {"none": "nothing to do", "skipped": "nothing to do"}.get(outcome.action, outcome.action)
    click.echo(f"{text}{': ' + outcome.detail if outcome.detail else ''}", err=outcome.action == "failed")
    with Outbox.open(state, config.cap_bytes) as box:  # the collector learns now, not at the next upload
        Uploader(box, config, transport).sync()
    ctx.exit(_EXIT.get(outcome.action, 1))
