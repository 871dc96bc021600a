"""Make a small private PKI for a fleet: a CA, the collector's certificate, device certificates.

Uses ``cryptography`` (installed with mlpack's ``build``/``collector`` extras); no openssl
command line needed. Keys are EC P-256, written mode 0600.

    python examples/tls/make_certs.py OUT --host collector.example --host 10.0.0.5 --device press-07

writes into OUT:

    ca.pem / ca.key                the fleet CA (keep ca.key offline; give ca.pem to devices)
    collector.pem / collector.key  the collector's certificate, valid for every --host
                                   (localhost and 127.0.0.1 are always included)
    <device>.pem / <device>.key    one client certificate per --device (CN = device name)

Running it again with an existing ``ca.pem`` + ``ca.key`` in OUT reuses that CA, so more
devices can be added later. See the README's "TLS" section for the whole walk-through.
"""

from __future__ import annotations

import argparse
import datetime as dt
import ipaddress
import os
import sys
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

DAY = dt.timedelta(days=1)


def _key() -> ec.EllipticCurvePrivateKey:
    return ec.generate_private_key(ec.SECP256R1())


def _name(common_name: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.ORGANIZATION_NAME, "mlpack fleet"),
                      x509.NameAttribute(NameOID.COMMON_NAME, common_name)])


def _write(folder: Path, stem: str, cert: x509.Certificate, key: ec.EllipticCurvePrivateKey | None) -> None:
    (folder / f"{stem}.pem").write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    if key is not None:
        path = folder / f"{stem}.key"
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "wb") as fh:
            fh.write(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                       serialization.NoEncryption()))
        os.chmod(path, 0o600)


def make_ca(common_name: str = "mlpack fleet CA", days: int = 3650,
            now: dt.datetime | None = None) -> tuple[x509.Certificate, ec.EllipticCurvePrivateKey]:
    """A self-signed CA that may sign end-entity certificates only (path length 0)."""
    now = now or dt.datetime.now(dt.timezone.utc)
    key = _key()
    cert = (
        x509.CertificateBuilder()
        .subject_name(_name(common_name)).issuer_name(_name(common_name))
        .public_key(key.public_key()).serial_number(x509.random_serial_number())
        .not_valid_before(now - DAY).not_valid_after(now + days * DAY)
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(x509.KeyUsage(digital_signature=True, key_cert_sign=True, crl_sign=True, content_commitment=False,
                                     key_encipherment=False, data_encipherment=False, key_agreement=False,
                                     encipher_only=False, decipher_only=False), critical=True)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .sign(key, hashes.SHA256())
    )
    return cert, key


def issue(ca: x509.Certificate, ca_key: ec.EllipticCurvePrivateKey, common_name: str, *, server: bool,
          hosts: tuple[str, ...] = (), days: int = 825, not_before: dt.datetime | None = None,
          ) -> tuple[x509.Certificate, ec.EllipticCurvePrivateKey]:
    """A server certificate (SANs from ``hosts``) or a device client certificate, signed by ``ca``."""
    start = not_before or dt.datetime.now(dt.timezone.utc) - DAY
    key = _key()
    usage = ExtendedKeyUsageOID.SERVER_AUTH if server else ExtendedKeyUsageOID.CLIENT_AUTH
    builder = (
        x509.CertificateBuilder()
        .subject_name(_name(common_name)).issuer_name(ca.subject)
        .public_key(key.public_key()).serial_number(x509.random_serial_number())
        .not_valid_before(start).not_valid_after(start + days * DAY)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.ExtendedKeyUsage([usage]), critical=False)
        .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()), critical=False)
    )
    if hosts:
        names: list[x509.GeneralName] = []
        for host in hosts:
            try:
                names.append(x509.IPAddress(ipaddress.ip_address(host)))
            except ValueError:
                names.append(x509.DNSName(host))
        builder = builder.add_extension(x509.SubjectAlternativeName(names), critical=False)
    return builder.sign(ca_key, hashes.SHA256()), key


def _load_ca(folder: Path) -> tuple[x509.Certificate, ec.EllipticCurvePrivateKey] | None:
    if not ((folder / "ca.pem").is_file() and (folder / "ca.key").is_file()):
        return None
    cert = x509.load_pem_x509_certificate((folder / "ca.pem").read_bytes())
    key = serialization.load_pem_private_key((folder / "ca.key").read_bytes(), password=None)
    assert isinstance(key, ec.EllipticCurvePrivateKey), "ca.key: expected an EC key"
    return cert, key


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("out", type=Path, help="folder to write into (created)")
    parser.add_argument("--host", action="append", default=[], help="collector DNS name or IP (repeatable)")
    parser.add_argument("--device", action="append", default=[], help="device name for a client certificate (repeatable)")
    args = parser.parse_args(argv)
    out: Path = args.out
    out.mkdir(parents=True, exist_ok=True)
    loaded = _load_ca(out)
    if loaded is None:
        ca, ca_key = make_ca()
        _write(out, "ca", ca, ca_key)
        print(f"CA             {out / 'ca.pem'} (key {out / 'ca.key'}: keep it offline)")
    else:
        ca, ca_key = loaded
        print(f"CA             {out / 'ca.pem'} (reused)")
    if args.host or not (out / "collector.pem").exists():
        hosts = tuple(dict.fromkeys(["localhost", "127.0.0.1", *args.host]))
        cert, key = issue(ca, ca_key, args.host[0] if args.host else "localhost", server=True, hosts=hosts)
        _write(out, "collector", cert, key)
        print(f"collector      {out / 'collector.pem'} for {', '.join(hosts)}")
    for device in args.device:
        cert, key = issue(ca, ca_key, device, server=False)
        _write(out, device, cert, key)
        print(f"device         {out / (device + '.pem')} (CN={device})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
