"""TLS on the device: which CA roots to trust, the client certificate, what a failure means.

Standard library only (``ssl``): the device executable carries no ``cryptography``.

CA roots. The frozen executable carries its own OpenSSL, compiled with the build
machine's directories (``/usr/lib/ssl`` on Debian), which mean nothing on RHEL, Alpine
or SUSE, so the agent never uses OpenSSL's compiled-in default paths. It trusts, in
this order:

1. ``ca_file`` (``--ca-file``): the fleet's own CA, and nothing else;
2. ``SSL_CERT_FILE`` / ``SSL_CERT_DIR`` when set (they replace the list below, as they
   do for OpenSSL and Go);
3. the first CA bundle found among :data:`SYSTEM_CA_FILES` (Debian/Ubuntu, RHEL/Fedora,
   SUSE, Alpine), then a hashed certificate folder among :data:`SYSTEM_CA_DIRS`.

None found is a one-line :class:`~mlpack_edge.errors.AgentError` naming every path tried.

Client certificate (mutual TLS): ``client_cert`` + ``client_key``, PEM; the key must be
unencrypted and readable by its owner only (mode 0600, like an ssh key).

:func:`describe_tls_failure` turns an ``ssl`` exception into the one-line reason that
``agent sync`` prints (expired, wrong host, unknown CA, client certificate refused...).
"""

from __future__ import annotations

import ipaddress
import os
import re
import ssl
import stat
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import NoReturn
from urllib.parse import urlsplit

from mlpack_edge.errors import AgentError

__all__ = [
    "SYSTEM_CA_FILES",
    "SYSTEM_CA_DIRS",
    "TLS_DIR",
    "TLS_FILES",
    "find_ca_roots",
    "client_context",
    "check_key_file",
    "check_tls_files",
    "store_tls_files",
    "is_loopback_url",
    "describe_tls_failure",
]

#: CA bundles shipped by Linux distributions, most common first (the list Go's crypto/x509 uses).
SYSTEM_CA_FILES: tuple[str, ...] = (
    "/etc/ssl/certs/ca-certificates.crt",  # Debian, Ubuntu, Gentoo, Arch
    "/etc/pki/tls/certs/ca-bundle.crt",  # Fedora, RHEL, CentOS
    "/etc/pki/ca-trust/extracted/pem/tls-ca-bundle.pem",  # RHEL 7+, CentOS, Amazon Linux
    "/etc/ssl/ca-bundle.pem",  # openSUSE, SLES
    "/etc/ssl/cert.pem",  # Alpine (also macOS, the BSDs)
    "/etc/pki/tls/cacert.pem",  # OpenELEC
)
#: Folders of hashed certificates (``c_rehash`` / ``openssl rehash`` layout).
SYSTEM_CA_DIRS: tuple[str, ...] = ("/etc/ssl/certs", "/etc/pki/tls/certs")

#: Where install and ``agent config --save`` copy the files, inside the state folder.
TLS_DIR = "tls"
#: config field -> (file name in TLS_DIR, mode)
TLS_FILES: dict[str, tuple[str, int]] = {
    "ca_file": ("ca.pem", 0o644),
    "client_cert": ("client.pem", 0o644),
    "client_key": ("client.key", 0o600),
}
_HASHED = re.compile(r"^[0-9a-f]{8}\.\d+$")


def find_ca_roots(
    environ: Mapping[str, str] | None = None,
    files: Sequence[str] = SYSTEM_CA_FILES,
    dirs: Sequence[str] = SYSTEM_CA_DIRS,
    context: ssl.SSLContext | None = None,
) -> str:
    """Load the system's CA roots into ``context`` (a fresh client context if ``None``).

    Returns what was loaded (a path); raises a one-line :class:`AgentError` naming every
    path tried when none holds a certificate. ``files``/``dirs`` are a seam for tests.
    """
    env = os.environ if environ is None else environ
    ctx = context if context is not None else _bare_client_context()
    if env.get("SSL_CERT_FILE") or env.get("SSL_CERT_DIR"):
        files = [env["SSL_CERT_FILE"]] if env.get("SSL_CERT_FILE") else []
        dirs = [env["SSL_CERT_DIR"]] if env.get("SSL_CERT_DIR") else []
    tried: list[str] = []
    for path in files:
        problem = _try_file(ctx, path)
        if problem is None:
            return path
        tried.append(f"{path} ({problem})")
    for path in dirs:
        problem = _try_dir(ctx, path)
        if problem is None:
            return path
        tried.append(f"{path}/ ({problem})")
    raise AgentError(
        "no CA certificates to verify the collector with: tried " + ", ".join(tried)
        + "; install the system's CA certificates, set SSL_CERT_FILE, or give the fleet's CA with --ca-file"
    )


def _try_file(ctx: ssl.SSLContext, path: str) -> str | None:
    try:
        if not os.path.isfile(path):
            return "missing" if not os.path.exists(path) else "not a file"
        ctx.load_verify_locations(cafile=path)
    except OSError as exc:
        if isinstance(exc, ssl.SSLError):
            return "no certificates in it"
        return exc.strerror or exc.__class__.__name__
    return None


def _try_dir(ctx: ssl.SSLContext, path: str) -> str | None:
    try:
        names = os.listdir(path)
    except FileNotFoundError:
        return "missing"
    except OSError as exc:
        return exc.strerror or exc.__class__.__name__
    if not any(_HASHED.match(n) for n in names):
        return "no hashed certificates"
    ctx.load_verify_locations(capath=path)  # read lazily, certificate by certificate, during a handshake
    return None


def _bare_client_context() -> ssl.SSLContext:
    """Verifying client context with no trust at all yet (never OpenSSL's default paths)."""
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)  # check_hostname and CERT_REQUIRED are its defaults
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    return ctx


def client_context(
    ca_file: str | None = None,
    client_cert: str | None = None,
    client_key: str | None = None,
    environ: Mapping[str, str] | None = None,
    files: Sequence[str] = SYSTEM_CA_FILES,
    dirs: Sequence[str] = SYSTEM_CA_DIRS,
) -> ssl.SSLContext:
    """The context every HTTPS upload uses: server verified (hostname and chain), TLS ≥ 1.2.

    ``ca_file`` replaces the system roots; ``client_cert``/``client_key`` are presented when
    the collector asks. Every problem is a one-line :class:`AgentError` naming the file.
    """
    ctx = _bare_client_context()
    if ca_file:
        _load_ca_file(ctx, ca_file, "ca_file")
    else:
        find_ca_roots(environ, files, dirs, ctx)
    if client_cert or client_key:
        _load_client_pair(ctx, client_cert, client_key, "client_cert", "client_key", check_mode=True)
    return ctx


def _load_ca_file(ctx: ssl.SSLContext, path: str, what: str) -> None:
    try:
        ctx.load_verify_locations(cafile=path)
    except ssl.SSLError:
        _fail(what, path, "no PEM certificate in it")
    except OSError as exc:
        _fail(what, path, f"cannot read ({exc.strerror or exc})")


def _load_client_pair(
    ctx: ssl.SSLContext, cert: str | None, key: str | None, cert_what: str, key_what: str, check_mode: bool
) -> None:
    if not cert or not key:
        raise AgentError(f"{cert_what} and {key_what} go together: give both (PEM certificate, unencrypted PEM key)")
    _readable(cert, cert_what)
    _readable(key, key_what)
    if check_mode:
        check_key_file(key, key_what)

    def no_passphrase() -> NoReturn:
        _fail(key_what, key, "the key is encrypted; the agent needs an unencrypted key (protected by mode 0600)")

    try:
        ctx.load_cert_chain(cert, key, password=no_passphrase)
    except ssl.SSLError as exc:
        reason = (exc.reason or "").upper()
        if "KEY_VALUES_MISMATCH" in reason:
            _fail(key_what, key, f"does not belong to the certificate in {cert}")
        _fail(f"{cert_what}/{key_what}", f"{cert} + {key}", f"not a PEM certificate and private key ({exc.reason or exc})")
    except OSError as exc:
        _fail(f"{cert_what}/{key_what}", f"{cert} + {key}", f"cannot read ({exc.strerror or exc})")


def _readable(path: str, what: str) -> None:
    try:
        with open(path, "rb") as fh:
            fh.read(1)
    except OSError as exc:
        _fail(what, path, f"cannot read ({exc.strerror or exc})")


def check_key_file(path: str, what: str = "client_key") -> None:
    """Refuse a private key that other users could read or change (as ssh does)."""
    try:
        st = os.stat(path)
    except OSError as exc:
        _fail(what, path, f"cannot read ({exc.strerror or exc})")
    if stat.S_IMODE(st.st_mode) & 0o077:
        _fail(what, path, f"other users can access this private key (mode {stat.S_IMODE(st.st_mode):04o}); chmod 600 it")


def _fail(what: str, path: str, problem: str) -> NoReturn:
    raise AgentError(f"{what} {path}: {problem}")


def check_tls_files(ca_file: str | None, client_cert: str | None, client_key: str | None, prefix: str = "--") -> None:
    """Configuration-time check of files about to be copied (names the options: ``--ca-file``...).

    The source key's mode is not checked: :func:`store_tls_files` writes its copy 0600.
    """
    ctx = _bare_client_context()
    if ca_file:
        _load_ca_file(ctx, ca_file, f"{prefix}ca-file")
    if client_cert or client_key:
        _load_client_pair(ctx, client_cert, client_key, f"{prefix}client-cert", f"{prefix}client-key", check_mode=False)


def store_tls_files(state_dir: str | os.PathLike[str], paths: Mapping[str, str | None]) -> dict[str, str]:
    """Copy the TLS files (``ca_file``/``client_cert``/``client_key`` -> source path) into
    ``<state>/tls/`` (the key 0600); returns field -> the copy's absolute path.

    A file already at its place in the state folder is left as it is.
    """
    from mlpack_edge._fs import atomic_write_bytes  # install time only

    folder = Path(state_dir).absolute() / TLS_DIR
    stored: dict[str, str] = {}
    for field_name, source in paths.items():
        if not source:
            continue
        name, mode = TLS_FILES[field_name]
        target = folder / name
        if not (target.exists() and os.path.samefile(source, target)):
            try:
                data = Path(source).read_bytes()
            except OSError as exc:
                _fail("--" + field_name.replace("_", "-"), source, f"cannot read ({exc.strerror or exc})")
            folder.mkdir(mode=0o755, parents=True, exist_ok=True)
            atomic_write_bytes(target, data, mode=mode)
        stored[field_name] = str(target)
    return stored


def is_loopback_url(url: str) -> bool:
    """Whether ``url``'s host is this machine (``localhost``, 127.0.0.0/8, ``::1``)."""
    host = (urlsplit(url).hostname or "").rstrip(".").lower()
    if host == "localhost" or host.endswith(".localhost"):
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


# X509_V_ERR_* codes (OpenSSL x509_vfy.h) worth a plain-words explanation.
_NOT_YET_VALID, _EXPIRED = 9, 10
_UNTRUSTED = {18, 19, 20, 21, 2}  # self-signed, self-signed in chain, unknown issuer (x2), no issuer cert
_HOSTNAME_MISMATCH, _IP_MISMATCH = 62, 64
# Alerts a server sends when it does not accept the client certificate (or wanted one).
_CLIENT_CERT_ALERTS = (
    "CERTIFICATE_REQUIRED", "BAD_CERTIFICATE", "UNKNOWN_CA", "CERTIFICATE_UNKNOWN", "CERTIFICATE_EXPIRED",
    "CERTIFICATE_REVOKED", "ACCESS_DENIED", "HANDSHAKE_FAILURE",
)


def describe_tls_failure(exc: ssl.SSLError) -> str:
    """One line saying what went wrong in plain words (and OpenSSL's own words after it)."""
    if isinstance(exc, ssl.SSLCertVerificationError):
        code = getattr(exc, "verify_code", None)
        detail = getattr(exc, "verify_message", None) or str(exc)
        if code == _EXPIRED:
            return f"server certificate has expired ({detail})"
        if code == _NOT_YET_VALID:
            return f"server certificate is not valid yet: check this device's clock ({detail})"
        if code in (_HOSTNAME_MISMATCH, _IP_MISMATCH):
            return f"server certificate is for another host ({detail})"
        if code in _UNTRUSTED:
            return f"server certificate is not signed by a trusted CA: give the fleet's CA with --ca-file ({detail})"
        return f"server certificate not accepted ({detail})"
    reason = (exc.reason or "").upper()
    if "WRONG_VERSION_NUMBER" in reason or "RECORD_LAYER_FAILURE" in reason or "PACKET_LENGTH_TOO_LONG" in reason:
        return f"the collector did not answer in TLS: is it serving plain HTTP on this port? ({exc.reason})"
    if any(alert in reason for alert in _CLIENT_CERT_ALERTS):
        return f"the collector refused the TLS handshake: client certificate missing or not accepted ({exc.reason})"
    return f"TLS error ({exc.reason or exc})"
