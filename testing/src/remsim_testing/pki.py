"""A throw-away PKI for TLS tests, on ``remsim_common.pki`` (the operator's ``remsim-pki``).

``trustme`` issues DNS/IP/e-mail names only; remsim names its peers by URI SAN
(``urn:remsim:bankd:1``).
"""

from __future__ import annotations

import datetime
from dataclasses import dataclass
from pathlib import Path

from remsim_common import TransportSecurity
from remsim_common.pki import Authority, issue_files

__all__ = ["Credentials", "TestCA"]


@dataclass(frozen=True)
class Credentials:
    """One peer's files: certificate, key and the CA that signed it."""

    cert: Path
    key: Path
    ca: Path

    def security(self, *, require_tls: bool = False) -> TransportSecurity:
        return TransportSecurity.mutual_tls(self.cert, self.key, self.ca, require_tls=require_tls)


class TestCA:
    """A CA writing ``ca.pem`` and the certificates it issues under ``directory``."""

    __test__ = False  # not a pytest test class

    def __init__(self, directory: Path, name: str = "remsim test CA") -> None:
        self.directory = directory
        self.authority = Authority.create(name, days=30)
        self.authority.save(directory)
        self.ca_file = directory / "ca.pem"

    def issue(
        self, name: str, *uris: str, dns: tuple[str, ...] = ("localhost",), expired: bool = False
    ) -> Credentials:
        """``name.pem`` / ``name.key`` for a peer named by ``uris`` (URI SANs)."""
        start = None
        if expired:
            start = datetime.datetime.now(datetime.UTC) - datetime.timedelta(days=10)
        cert, key = issue_files(
            self.authority, self.directory, name, uris, dns=dns, days=7 if not expired else 1,
            not_before=start,
        )  # fmt: skip
        return Credentials(cert, key, self.ca_file)
