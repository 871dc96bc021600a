"""Governance events on the device: appended to the model's state folder, uploaded by the agent.

Installs, upgrades, rollbacks, uninstalls, trust changes, refused bundles, failed
verifications, repairs of a tampered installed copy (``repaired``: version, the files that
differed) and fallbacks go into the outbox's audit table
(:func:`mlpack_edge.monitor_agent.outbox.append_audit`), which the agent delivers to the
collector exactly once with the telemetry. Recording is best effort by design: a
damaged or unwritable state folder must not stop an install, a rollback or a fallback,
so a failure comes back as a warning line for the caller to show, never as an error.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from mlpack_edge.errors import MlpackError

__all__ = ["NO_AUDIT_ENV", "record"]

#: Set for a child process whose outcome its parent records (install runs the new
#: version's own ``verify``): one event per failure, not two.
NO_AUDIT_ENV = "MLPACK_NO_AUDIT"


def record(state_dir: str | os.PathLike[str] | None, event: str, detail: Mapping[str, Any]) -> str | None:
    """Append ``event`` to ``state_dir``'s audit log; a warning line instead of an exception.

    ``None`` state folder (the model was never installed here): nothing to record.
    """
    if state_dir is None or not Path(state_dir).is_dir() or os.environ.get(NO_AUDIT_ENV):
        return None
    from mlpack_edge.monitor_agent.outbox import append_audit

    try:
        append_audit(state_dir, event, detail)
    except (MlpackError, OSError) as exc:
        return f"warning: audit event {event!r} not recorded in {state_dir} ({exc})"
    return None
