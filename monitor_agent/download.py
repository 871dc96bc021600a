"""Downloading a release over a link that drops: HTTP ``Range`` requests, resumed from disk.

The file grows in ``<dest>/<sha256>.part`` one range at a time (each appended and
fsynced before the next is asked for), so a connection cut at any byte, a killed
process or a reboot costs at most one range: the next attempt asks for the rest. Once
the expected size is there, the whole file is hashed; only a file whose sha256 is the one
the collector announced is renamed to ``<sha256>.tar.gz``. A mismatch deletes the partial
file (the next attempt starts over). A full disk stops the download with one line and
leaves the installed version alone: nothing is installed from a partial file, ever.
Signatures are not judged here: the install path checks the bundle against the device's
own trust policy.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping
from pathlib import Path

from mlpack_edge._fs import file_sha256
from mlpack_edge.errors import AgentError
from mlpack_edge.monitor_agent.transport import Fetcher, TransportError

__all__ = ["download", "DownloadError", "CHUNK_BYTES"]

CHUNK_BYTES = 256 * 1024
_SUFFIX = ".tar.gz"


class DownloadError(AgentError):
    """The download cannot finish now (its partial file is kept unless it was wrong)."""


def download(
    fetcher: Fetcher,
    url: str,
    headers: Mapping[str, str],
    dest: Path,
    sha256: str,
    size: int,
    chunk: int = CHUNK_BYTES,
    progress: Callable[[int, int], None] | None = None,
    suffix: str = _SUFFIX,
) -> Path:
    """Fetch ``url`` into ``dest/<sha256><suffix>``, resuming a partial file; returns its path.

    :class:`~mlpack_edge.monitor_agent.transport.TransportError` propagates (the partial
    file stays for the next attempt); every other failure is a one-line
    :class:`DownloadError`.
    """
    if len(sha256) != 64 or any(c not in "0123456789abcdef" for c in sha256):
        raise DownloadError(f"download {url}: the announced sha256 {sha256!r} is not 64 hex digits")
    final = dest / f"{sha256}{suffix}"
    if final.is_file() and file_sha256(final) == sha256:
        return final
    part = dest / f"{sha256}.part"
    try:
        dest.mkdir(parents=True, exist_ok=True)
        have = part.stat().st_size if part.exists() else 0
        if have > size:  # not the file we expect: start over
            part.unlink()
            have = 0
        while have < size:
            end = min(size, have + chunk) - 1
            reply = fetcher.get(url, {**headers, "Range": f"bytes={have}-{end}"})
            if reply.status == 206:
                data = reply.body
            elif reply.status == 200:  # the server ignored the range: keep the part we asked for
                data = reply.body[have : end + 1]
            else:
                raise DownloadError(f"download {url}: HTTP {reply.status}: {_text(reply.body)}")
            if not data:
                raise DownloadError(f"download {url}: the collector sent no bytes at offset {have}")
            with open(part, "ab") as fh:
                fh.write(data)
                fh.flush()
                os.fsync(fh.fileno())
            have += len(data)
            if progress is not None:
                progress(have, size)
        got = file_sha256(part)
        if have != size or got != sha256:
            part.unlink(missing_ok=True)
            raise DownloadError(f"download {url}: {have} bytes with sha256 {got[:16]}…, expected {size} bytes with "
                                f"sha256 {sha256[:16]}… (corrupted in transit or changed on the collector); "
                                "discarded, the next attempt starts over")
        os.replace(part, final)
    except TransportError:  # a ConnectionError (an OSError): the partial file waits for the next attempt
        raise
    except OSError as exc:
        free = _free(dest)
        raise DownloadError(f"download to {dest}: {exc.strerror or exc} ({free}; {size} bytes needed); "
                            "the installed version keeps running") from None
    return final


def _free(folder: Path) -> str:
    try:
        st = os.statvfs(folder)
    except OSError:
        return "free space unknown"
    return f"{st.f_bavail * st.f_frsize} bytes free"


def _text(body: bytes) -> str:
    import json

    try:
        return str(json.loads(body).get("error"))[:200]
    except (ValueError, AttributeError):
        return body.decode("utf-8", "replace")[:200]
