"""Agent configuration: written once at install time, overridable by environment and flags.

Layers, later wins: defaults < ``<state dir>/agent.json`` (+ ``agent.token``) < environment
(``MLPACK_COLLECTOR_URL``, ``MLPACK_DEVICE_ID``, ``MLPACK_DEVICE_TOKEN``,
``MLPACK_WINDOW_SECONDS``, ``MLPACK_OUTBOX_CAP``, ``MLPACK_CHECKPOINT_SECONDS``,
``MLPACK_CHECKPOINT_ROWS``, ``MLPACK_FEEDBACK_JOIN_SECONDS``, ``MLPACK_FEEDBACK_MAX_PENDING``,
``MLPACK_CAPTURE_RATE``, ``MLPACK_CAPTURE_MAX_ROWS_PER_DAY``, ``MLPACK_CAPTURE_EXCLUDE``, ``MLPACK_CA_FILE``, ``MLPACK_CLIENT_CERT``, ``MLPACK_CLIENT_KEY``)
< command-line flags.

``checkpoint_seconds`` / ``checkpoint_rows`` bound what a ``kill -9`` or a power cut can
lose: the open window's counts are written durably at least that often (``serve``: on
the agent's tick thread, never on the request path; a one-shot ``predict``: between
chunks), and a restarted agent stores the last checkpoint of a dead process as a normal
window (:mod:`._checkpoint`). ``checkpoint_seconds = 0`` turns checkpoints off (a kill
then loses the whole open window).

TLS (see :mod:`.tls`): ``ca_file`` is the fleet's CA (else the system's roots),
``client_cert``/``client_key`` the device's certificate for mutual TLS; :func:`write_config`
copies them into ``<state>/tls/`` (the key 0600). Plain ``http://`` to another machine is
refused (:meth:`AgentConfig.check_transport`, at configuration and at upload time) unless
``allow_insecure_http``.

The token lives in its own file (mode 0600) so ``agent.json`` can be shown and copied
freely; it is excluded from ``repr`` and never put into a message or a log line.
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from mlpack_edge.errors import AgentError
from mlpack_edge._record import Frozen

__all__ = [
    "AgentConfig",
    "CONFIG_NAME",
    "TOKEN_NAME",
    "DEFAULT_CAP_BYTES",
    "MIN_CAP_BYTES",
    "DEFAULT_CHECKPOINT_SECONDS",
    "DEFAULT_CHECKPOINT_ROWS",
    "ENV_VARS",
    "write_config",
    "load_config",
    "read_token_file",
]

CONFIG_NAME = "agent.json"
TOKEN_NAME = "agent.token"
DEFAULT_CAP_BYTES = 64 * 1024 * 1024
#: The smallest cap accepted before the model is known (the outbox refuses a cap too small
#: for the model's windows when it opens: see ``Outbox.smallest_cap``).
MIN_CAP_BYTES = 128 * 1024
#: Half a second: a kill loses at most the rows of the last ~0.5 s plus one write, so
#: comfortably less than the rows of the last second.
DEFAULT_CHECKPOINT_SECONDS = 0.5
DEFAULT_CHECKPOINT_ROWS = 50_000
DEFAULT_FEEDBACK_JOIN_SECONDS = 7 * 86400.0
DEFAULT_FEEDBACK_MAX_PENDING = 1_000_000
DEFAULT_CAPTURE_MAX_ROWS_PER_DAY = 1000
_DEVICE_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$")

#: environment variable -> config field
ENV_VARS = {
    "MLPACK_COLLECTOR_URL": "collector_url",
    "MLPACK_DEVICE_ID": "device_id",
    "MLPACK_DEVICE_TOKEN": "token",
    "MLPACK_WINDOW_SECONDS": "window_seconds",
    "MLPACK_OUTBOX_CAP": "cap_bytes",
    "MLPACK_CHECKPOINT_SECONDS": "checkpoint_seconds",
    "MLPACK_CHECKPOINT_ROWS": "checkpoint_rows",
    "MLPACK_FEEDBACK_JOIN_SECONDS": "feedback_join_seconds",
    "MLPACK_FEEDBACK_MAX_PENDING": "feedback_max_pending",
    "MLPACK_CAPTURE_RATE": "capture_rate",
    "MLPACK_CAPTURE_MAX_ROWS_PER_DAY": "capture_max_rows_per_day",
    "MLPACK_CAPTURE_EXCLUDE": "capture_exclude",
    "MLPACK_CA_FILE": "ca_file",
    "MLPACK_CLIENT_CERT": "client_cert",
    "MLPACK_CLIENT_KEY": "client_key",
}
_TLS_PATHS = ("ca_file", "client_cert", "client_key")


class AgentConfig(Frozen):
    """Where to deliver telemetry and how much to keep while offline.

    Immutable; :meth:`replace` gives a changed copy (checked again). A plain class rather
    than a dataclass: every monitored ``predict`` builds one at start (:mod:`._record`).
    """

    __slots__ = (
        "collector_url", "device_id", "token", "window_seconds", "cap_bytes", "checkpoint_seconds",
        "checkpoint_rows", "feedback_join_seconds", "feedback_max_pending", "capture_rate",
        "capture_max_rows_per_day", "capture_exclude", "ca_file", "client_cert", "client_key",
        "allow_insecure_http",
    )
    _fields = __slots__
    collector_url: str | None
    device_id: str | None
    token: str | None  # never in repr
    window_seconds: float
    cap_bytes: int
    checkpoint_seconds: float
    checkpoint_rows: int
    #: How long after its prediction a label still counts (later: counted as ``late``), and
    #: how many predictions the join store keeps at most (oldest evicted first). See :mod:`.feedback`.
    feedback_join_seconds: float
    feedback_max_pending: int
    #: Opt-in capture of real input rows for retraining (personal data: off by default).
    #: ``capture_rate`` of predicted rows are offered to a per-day reservoir of at most
    #: ``capture_max_rows_per_day``; ``capture_exclude`` columns are never kept. See :mod:`.feedback`.
    capture_rate: float
    capture_max_rows_per_day: int
    capture_exclude: tuple[str, ...]
    ca_file: str | None
    client_cert: str | None
    client_key: str | None
    allow_insecure_http: bool

    def __init__(
        self,
        collector_url: str | None = None,
        device_id: str | None = None,
        token: str | None = None,
        window_seconds: float = 60.0,
        cap_bytes: int = DEFAULT_CAP_BYTES,
        checkpoint_seconds: float = DEFAULT_CHECKPOINT_SECONDS,
        checkpoint_rows: int = DEFAULT_CHECKPOINT_ROWS,
        feedback_join_seconds: float = DEFAULT_FEEDBACK_JOIN_SECONDS,
        feedback_max_pending: int = DEFAULT_FEEDBACK_MAX_PENDING,
        capture_rate: float = 0.0,
        capture_max_rows_per_day: int = DEFAULT_CAPTURE_MAX_ROWS_PER_DAY,
        capture_exclude: tuple[str, ...] = (),
        ca_file: str | None = None,
        client_cert: str | None = None,
        client_key: str | None = None,
        allow_insecure_http: bool = False,
    ) -> None:
        s = object.__setattr__
        s(self, "collector_url", collector_url)
        s(self, "device_id", device_id)
        s(self, "token", token)
        s(self, "window_seconds", window_seconds)
        s(self, "cap_bytes", cap_bytes)
        s(self, "checkpoint_seconds", checkpoint_seconds)
        s(self, "checkpoint_rows", checkpoint_rows)
        s(self, "feedback_join_seconds", feedback_join_seconds)
        s(self, "feedback_max_pending", feedback_max_pending)
        s(self, "capture_rate", capture_rate)
        s(self, "capture_max_rows_per_day", capture_max_rows_per_day)
        s(self, "capture_exclude", capture_exclude)
        s(self, "ca_file", ca_file)
        s(self, "client_cert", client_cert)
        s(self, "client_key", client_key)
        s(self, "allow_insecure_http", allow_insecure_http)
        _check(self)

    def replace(self, **changes: Any) -> AgentConfig:
        """A copy with ``changes`` (field name -> value), checked like a new config."""
        unknown = set(changes) - set(self._fields)
        if unknown:
            raise TypeError(f"AgentConfig has no field {sorted(unknown)[0]!r}")
        return AgentConfig(**({n: getattr(self, n) for n in self._fields} | changes))

    def __repr__(self) -> str:
        inner = ", ".join(f"{n}={getattr(self, n)!r}" for n in self._fields if n != "token")
        return f"AgentConfig({inner})"

    @property
    def can_upload(self) -> bool:
        return bool(self.collector_url and self.device_id and (self.token or self.client_cert))

    @property
    def ingest_url(self) -> str:
        assert self.collector_url is not None
        return self.collector_url.rstrip("/") + "/api/v1/ingest"

    def public_dict(self) -> dict[str, Any]:
        """Every field but the token (which shows only whether it is set)."""
        return {
            "collector_url": self.collector_url,
            "device_id": self.device_id,
            "token": "set" if self.token else None,
            "window_seconds": self.window_seconds,
            "cap_bytes": self.cap_bytes,
        } | self._checkpoint_dict() | self._tls_dict()

    def _checkpoint_dict(self) -> dict[str, Any]:
        """The checkpoint settings that differ from the defaults (so an ``agent.json`` written
        with the defaults stays readable by an older agent after a rollback)."""
        shown: dict[str, Any] = {}
        if self.checkpoint_seconds != DEFAULT_CHECKPOINT_SECONDS:
            shown["checkpoint_seconds"] = self.checkpoint_seconds
        if self.checkpoint_rows != DEFAULT_CHECKPOINT_ROWS:
            shown["checkpoint_rows"] = self.checkpoint_rows
        if self.feedback_join_seconds != DEFAULT_FEEDBACK_JOIN_SECONDS:
            shown["feedback_join_seconds"] = self.feedback_join_seconds
        if self.feedback_max_pending != DEFAULT_FEEDBACK_MAX_PENDING:
            shown["feedback_max_pending"] = self.feedback_max_pending
        if self.capture_rate:
            shown["capture_rate"] = self.capture_rate
            shown["capture_max_rows_per_day"] = self.capture_max_rows_per_day
            shown["capture_exclude"] = list(self.capture_exclude)
        return shown

    def _tls_dict(self) -> dict[str, Any]:
        """The TLS settings that are set (file paths are not secrets; a key's content never leaves its file)."""
        shown: dict[str, Any] = {k: getattr(self, k) for k in _TLS_PATHS if getattr(self, k)}
        if self.allow_insecure_http:
            shown["allow_insecure_http"] = True
        return shown

    def check_transport(self) -> None:
        """Refuse plain HTTP to another machine (the token would cross the network in clear text)
        unless allowed explicitly, half a client certificate, and a client certificate without HTTPS."""
        from mlpack_edge.monitor_agent.tls import is_loopback_url

        url = self.collector_url or ""
        scheme = urlsplit(url).scheme
        if scheme == "http" and not self.allow_insecure_http and not is_loopback_url(url):
            raise AgentError(
                f"collector_url {self.collector_url}: plain HTTP to another machine sends the device token and "
                "telemetry unencrypted; use https:// or allow it explicitly with --allow-insecure-http"
            )
        if bool(self.client_cert) != bool(self.client_key):
            raise AgentError("client_cert and client_key go together: give both")
        if scheme == "http" and self.client_cert:
            raise AgentError(f"client_cert {self.client_cert}: a client certificate needs an https:// collector_url")

    def with_overrides(self, overrides: Mapping[str, Any], source: str) -> AgentConfig:
        """This config with ``overrides`` (``None`` values ignored); errors name ``source``."""
        values = {k: v for k, v in overrides.items() if v is not None}
        parsed = {k: _parse_field(k, v, f"{source} {k}") for k, v in values.items()}
        try:
            return self.replace(**parsed)
        except AgentError as exc:
            raise AgentError(f"{source}: {exc}") from None


def _parse_field(name: str, value: Any, where: str) -> Any:
    if name not in AgentConfig._fields:
        raise AgentError(f"{where}: unknown setting")
    if name == "capture_exclude":
        if isinstance(value, str):
            value = [v.strip() for v in value.split(",") if v.strip()]
        if not isinstance(value, (list, tuple)) or not all(isinstance(v, str) and v for v in value):
            raise AgentError(f"{where}: expected a list of column names (or a comma-separated string)")
        return tuple(value)
    if name in ("window_seconds", "checkpoint_seconds", "feedback_join_seconds", "capture_rate"):
        try:
            return float(value)
        except (TypeError, ValueError):
            raise AgentError(f"{where}: expected a number of seconds, got {value!r}") from None
    if name in ("checkpoint_rows", "feedback_max_pending", "capture_max_rows_per_day"):
        try:
            return int(value)
        except (TypeError, ValueError):
            raise AgentError(f"{where}: expected a whole number of rows, got {value!r}") from None
    if name == "cap_bytes":
        return _parse_size(value, where)
    if name == "allow_insecure_http":
        if isinstance(value, bool):
            return value
        raise AgentError(f"{where}: expected true or false, got {value!r}")
    if not isinstance(value, str):
        raise AgentError(f"{where}: expected a string")
    return value.strip() if name == "token" else value


def _parse_size(value: Any, where: str) -> int:
    """Bytes from an int or a string like ``64MB``/``512k`` (powers of 1024)."""
    if isinstance(value, int) and not isinstance(value, bool):
        return value
    m = re.fullmatch(r"\s*(\d+)\s*([kmg]?)i?b?\s*", str(value), re.IGNORECASE)
    if not m:
        raise AgentError(f"{where}: expected a size in bytes like 67108864 or 64MB, got {value!r}")
    return int(m.group(1)) * 1024 ** " kmg".index(m.group(2).lower() or " ")


def _check(c: AgentConfig) -> None:
    if c.collector_url is not None:
        parts = urlsplit(c.collector_url)
        if parts.scheme not in ("http", "https") or not parts.netloc:
            raise AgentError(f"collector_url must be an http(s) URL, got {c.collector_url!r}")
    if c.device_id is not None and not _DEVICE_ID.match(c.device_id):
        raise AgentError(
            f"device_id must be 1-128 letters, digits, '.', '_' or '-', got {c.device_id!r}"
        )
    if c.token is not None and (not c.token or any(ch.isspace() for ch in c.token)):
        raise AgentError("token must be non-empty without whitespace")
    if not (isinstance(c.window_seconds, (int, float)) and 1 <= c.window_seconds <= 86400):
        raise AgentError(f"window_seconds must be between 1 and 86400, got {c.window_seconds!r}")
    if not isinstance(c.cap_bytes, int) or c.cap_bytes < MIN_CAP_BYTES:
        raise AgentError(f"cap_bytes must be at least {MIN_CAP_BYTES}, got {c.cap_bytes!r}")
    s = c.checkpoint_seconds
    if not (isinstance(s, (int, float)) and (s == 0 or 0.05 <= s <= 3600)):
        raise AgentError(f"checkpoint_seconds must be 0 (off) or between 0.05 and 3600, got {s!r}")
    r = c.checkpoint_rows
    if not (isinstance(r, int) and not isinstance(r, bool) and 1 <= r <= 10**9):
        raise AgentError(f"checkpoint_rows must be between 1 and 1000000000, got {r!r}")
    j = c.feedback_join_seconds
    if not (isinstance(j, (int, float)) and 1 <= j <= 366 * 86400):
        raise AgentError(f"feedback_join_seconds must be between 1 and 31622400 (366 days), got {j!r}")
    n = c.feedback_max_pending
    if not (isinstance(n, int) and not isinstance(n, bool) and 1 <= n <= 10**9):
        raise AgentError(f"feedback_max_pending must be between 1 and 1000000000, got {n!r}")
    cr = c.capture_rate
    if not (isinstance(cr, (int, float)) and 0 <= cr <= 1):
        raise AgentError(f"capture_rate must be between 0 (off) and 1, got {cr!r}")
    cm = c.capture_max_rows_per_day
    if not (isinstance(cm, int) and not isinstance(cm, bool) and 1 <= cm <= 1_000_000):
        raise AgentError(f"capture_max_rows_per_day must be between 1 and 1000000, got {cm!r}")
    if any(getattr(c, k) is not None and not getattr(c, k) for k in _TLS_PATHS):
        raise AgentError("ca_file, client_cert and client_key must be file paths, not empty")


def read_token_file(path: str | os.PathLike[str], option: str = "--token-file") -> str:
    """A token from a file (what flags take instead of the token itself, which ``ps`` would show)."""
    try:
        return Path(path).read_text(encoding="utf-8").strip()
    except OSError as exc:
        raise AgentError(f"{option} {path}: cannot read ({exc.strerror})") from None


def write_config(state_dir: str | os.PathLike[str], config: AgentConfig) -> Path:
    """Store ``config`` in ``state_dir`` (token in ``agent.token``, mode 0600; TLS files copied
    into ``tls/``, the key 0600); returns agent.json."""
    from mlpack_edge._fs import atomic_write_text, canonical_json  # install time only: predict need not load it

    state = Path(state_dir)
    if any(getattr(config, k) for k in _TLS_PATHS):
        from mlpack_edge.monitor_agent.tls import store_tls_files

        config = config.replace(**store_tls_files(state, {k: getattr(config, k) for k in _TLS_PATHS}))
    body = {k: v for k, v in config.public_dict().items() if k != "token"}
    token_path = state / TOKEN_NAME
    if config.token:
        atomic_write_text(token_path, config.token + "\n", mode=0o600)
    elif token_path.exists():
        token_path.unlink()
    return atomic_write_text(state / CONFIG_NAME, canonical_json(body), mode=0o644)


def load_config(
    state_dir: str | os.PathLike[str],
    overrides: Mapping[str, Any] | None = None,
    environ: Mapping[str, str] | None = None,
) -> AgentConfig:
    """The effective configuration: file, then environment, then ``overrides`` (flags)."""
    state = Path(state_dir)
    config = AgentConfig()
    path = state / CONFIG_NAME
    if path.exists():
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise AgentError(f"{path}: not readable JSON ({exc.__class__.__name__})") from None
        if not isinstance(data, dict):
            raise AgentError(f"{path}: expected a JSON object")
        data.pop("token", None)
        config = config.with_overrides(data, str(path))
    token_path = state / TOKEN_NAME
    if token_path.exists():
        try:
            token = token_path.read_text(encoding="utf-8").strip()
        except OSError as exc:
            raise AgentError(f"{token_path}: cannot read ({exc.strerror})") from None
        config = config.with_overrides({"token": token}, str(token_path))
    env = os.environ if environ is None else environ
    for var, name in ENV_VARS.items():
        if env.get(var):
            config = config.with_overrides({name: env[var]}, f"environment variable {var}")
    if overrides:
        config = config.with_overrides(overrides, "command line")
    return config
