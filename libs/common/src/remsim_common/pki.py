"""``remsim-pki``: a small CA for operators without a PKI of their own.

::

    remsim-pki init --dir pki                       # pki/ca.pem, pki/ca.key
    remsim-pki issue --dir pki server --dns remsim.lab  # pki/server.pem, pki/server.key
    remsim-pki issue --dir pki bankd 1              # pki/bankd-1.pem (urn:remsim:bankd:1)
    remsim-pki issue --dir pki client 23 24         # pki/client-23.pem (two client ids)
    remsim-pki token alice --role operator          # prints a REST token, appends its hash

A peer's role and id are in its certificate as URI SANs (``urn:remsim:server``,
``urn:remsim:api``, ``urn:remsim:bankd:<bankId>``, ``urn:remsim:client:<clientId>``);
docs/operations.md tells how to issue the same from an existing CA. Keys are ECDSA P-256,
written with mode 0600; certificates are valid for both TLS server and client use, since
every remsim program is both.
"""

from __future__ import annotations

import argparse
import datetime
import hashlib
import ipaddress
import os
import secrets
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from .version import version_line

__all__ = [
    "ROLES",
    "Authority",
    "identity_uris",
    "issue_files",
    "main",
    "token_line",
]

URN = "urn:remsim:"
ROLES = ("viewer", "operator", "admin")
"""REST token roles, least first."""
CA_DAYS = 3650
CERT_DAYS = 825
_DAY = datetime.timedelta(days=1)
_BACKDATE = datetime.timedelta(minutes=5)
"""Certificates start a little in the past: clocks of a fleet are never exactly equal."""
_BOTH_WAYS = [ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH]


class PkiError(Exception):
    """What the operator asked for cannot be done (message says why)."""


def identity_uris(role: str, ids: Sequence[int] = ()) -> list[str]:
    """The URI SANs of a ``server``, ``api``, ``bankd ID`` or ``client ID…`` certificate."""
    if role in ("server", "api"):
        if ids:
            raise PkiError(f"a {role} certificate takes no id")
        return [f"{URN}{role}"]
    if role == "bankd":
        if len(ids) != 1:
            raise PkiError("a bankd certificate names exactly one bank id")
    elif role == "client":
        if not ids:
            raise PkiError("a client certificate names one or more client ids")
    else:
        raise PkiError(f"unknown role {role!r}: server, api, bankd or client")
    for n in ids:
        if not 0 <= n <= 1023:
            raise PkiError(f"id {n} is not in 0..1023")
    return [f"{URN}{role}:{n}" for n in ids]


def _pem_key(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )


def _write_private(path: Path, data: bytes) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as file:
        file.write(data)
    path.chmod(0o600)


@dataclass(frozen=True)
class Authority:
    """A CA: its key and certificate."""

    key: ec.EllipticCurvePrivateKey
    cert: x509.Certificate

    @classmethod
    def create(cls, name: str = "remsim CA", days: int = CA_DAYS) -> Authority:
        key = ec.generate_private_key(ec.SECP256R1())
        subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
        now = datetime.datetime.now(datetime.UTC)
        usage = x509.KeyUsage(
            digital_signature=True, key_cert_sign=True, crl_sign=True, content_commitment=False,
            key_encipherment=False, data_encipherment=False, key_agreement=False,
            encipher_only=False, decipher_only=False,
        )  # fmt: skip
        cert = (
            x509.CertificateBuilder()
            .subject_name(subject)
            .issuer_name(subject)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - _BACKDATE)
            .not_valid_after(now + days * _DAY)
            .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
            .add_extension(usage, critical=True)
            .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), False)
            .sign(key, hashes.SHA256())
        )
        return cls(key, cert)

    @classmethod
    def load(cls, directory: Path) -> Authority:
        try:
            key = serialization.load_pem_private_key((directory / "ca.key").read_bytes(), None)
            cert = x509.load_pem_x509_certificate((directory / "ca.pem").read_bytes())
        except (OSError, ValueError) as exc:
            raise PkiError(f"no usable CA in {directory} (remsim-pki init?): {exc}") from None
        if not isinstance(key, ec.EllipticCurvePrivateKey):
            raise PkiError(f"{directory / 'ca.key'} is not an EC key")
        return cls(key, cert)

    def save(self, directory: Path) -> None:
        directory.mkdir(parents=True, exist_ok=True)
        if (directory / "ca.key").exists():
            raise PkiError(f"{directory / 'ca.key'} exists: refusing to replace a CA")
        _write_private(directory / "ca.key", _pem_key(self.key))
        (directory / "ca.pem").write_bytes(self.cert.public_bytes(serialization.Encoding.PEM))

    def issue(
        self,
        common_name: str,
        uris: Sequence[str],
        *,
        dns: Sequence[str] = (),
        ips: Sequence[str] = (),
        days: int = CERT_DAYS,
        not_before: datetime.datetime | None = None,
    ) -> tuple[ec.EllipticCurvePrivateKey, x509.Certificate]:
        """A key and a certificate for one peer, signed by this CA."""
        key = ec.generate_private_key(ec.SECP256R1())
        start = not_before or datetime.datetime.now(datetime.UTC) - _BACKDATE
        names: list[x509.GeneralName] = [x509.UniformResourceIdentifier(u) for u in uris]
        names += [x509.DNSName(name) for name in dns]
        try:
            names += [x509.IPAddress(ipaddress.ip_address(ip)) for ip in ips]
        except ValueError as exc:
            raise PkiError(str(exc)) from None
        cert = (
            x509.CertificateBuilder()
            .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)]))
            .issuer_name(self.cert.subject)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(start)
            .not_valid_after(start + days * _DAY)
            .add_extension(x509.SubjectAlternativeName(names), critical=False)
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(x509.ExtendedKeyUsage(_BOTH_WAYS), critical=False)
            .sign(self.key, hashes.SHA256())
        )
        return key, cert


def issue_files(
    authority: Authority,
    directory: Path,
    name: str,
    uris: Sequence[str],
    **options: object,
) -> tuple[Path, Path]:
    """Write ``name.pem`` (certificate) and ``name.key`` (0600) under ``directory``."""
    key, cert = authority.issue(name, uris, **options)  # type: ignore[arg-type]
    cert_file, key_file = directory / f"{name}.pem", directory / f"{name}.key"
    _write_private(key_file, _pem_key(key))
    cert_file.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    return cert_file, key_file


def token_line(name: str, role: str, token: str) -> str:
    """The tokens-file line for ``token``: ``NAME ROLE SHA256-HEX`` (no plaintext stored)."""
    if role not in ROLES:
        raise PkiError(f"unknown role {role!r}: {', '.join(ROLES)}")
    if not name or any(c.isspace() for c in name):
        raise PkiError(f"bad token name {name!r}: one word")
    return f"{name} {role} {hashlib.sha256(token.encode()).hexdigest()}"


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="remsim-pki", description="a small CA for remsim's mutual TLS, and REST tokens"
    )
    parser.add_argument("-V", "--version", action="version", version=version_line(
        "remsim-pki", "remsim-common"))  # fmt: skip
    commands = parser.add_subparsers(dest="command", required=True)
    init = commands.add_parser("init", help="create the CA (DIR/ca.pem, DIR/ca.key)")
    init.add_argument("--dir", type=Path, required=True)
    init.add_argument("--name", default="remsim CA", help="the CA's common name")
    init.add_argument("--days", type=int, default=CA_DAYS)
    issue = commands.add_parser("issue", help="a certificate: server | api | bankd ID | client ID…")
    issue.add_argument("--dir", type=Path, required=True)
    issue.add_argument("role", choices=("server", "api", "bankd", "client"))
    issue.add_argument("ids", nargs="*", type=int, metavar="ID")
    issue.add_argument("--days", type=int, default=CERT_DAYS)
    issue.add_argument("--dns", action="append", default=[], metavar="NAME")
    issue.add_argument("--ip", action="append", default=[], metavar="ADDR")
    token = commands.add_parser("token", help="a REST token (printed once; its hash appended)")
    token.add_argument("name")
    token.add_argument("--role", choices=ROLES, required=True)
    token.add_argument("--file", type=Path, default=Path("api-tokens"), help="(./api-tokens)")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    try:
        if args.command == "init":
            Authority.create(args.name, args.days).save(args.dir)
            print(f"CA written to {args.dir / 'ca.pem'} (key {args.dir / 'ca.key'})")
        elif args.command == "issue":
            uris = identity_uris(args.role, args.ids)
            name = "-".join([args.role, *map(str, args.ids[:1])])
            cert, key = issue_files(
                Authority.load(args.dir), args.dir, name, uris,
                dns=args.dns, ips=args.ip, days=args.days,
            )  # fmt: skip
            print(f"{cert} and {key}: {' '.join(uris)}")
        else:
            secret = secrets.token_hex(32)  # 256 bits; never starts with '-' (an option)
            line = token_line(args.name, args.role, secret)
            with args.file.open("a", encoding="utf-8") as file:
                file.write(line + "\n")
            args.file.chmod(0o600)
            print(secret)
    except (PkiError, OSError) as exc:
        print(f"remsim-pki: {exc}", file=sys.stderr)
        return 1
    return 0
