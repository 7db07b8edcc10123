"""``TransportSecurity``: how a program's RSPRO sockets are protected, in one object.

Every RSPRO listener and connector of every program takes its socket security from one
``TransportSecurity`` built from the program's settings (``from_settings``): the server's
control port, the bankd's client port and its control link, the client's links to the
server and to its bankd. ``PLAINTEXT`` (the default) changes nothing on the wire, so the
original's programs keep working with ours.

With a certificate, its key and the operator's CA, the links are mutual TLS (TLS 1.2 at
least): both ends present a certificate that chains to the CA. Who a peer is comes from its
certificate's URI SANs (``urn:remsim:bankd:1``, ``urn:remsim:client:23``, …), read with
``peer_uris``; what a program accepts for a given role is its own business.
"""

from __future__ import annotations

import socket
import ssl
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar, Literal, Protocol

__all__ = ["PeerIdentity", "TransportSecurity", "peer_subject", "peer_uris"]

HANDSHAKE_TIMEOUT = 10.0
"""Seconds a blocking server-side TLS handshake may take (``wrap_accepted``)."""


class _TransportOptions(Protocol):
    @property
    def tls_cert(self) -> Path | None: ...
    @property
    def tls_key(self) -> Path | None: ...
    @property
    def tls_ca(self) -> Path | None: ...
    @property
    def require_tls(self) -> bool: ...


@dataclass(frozen=True)
class TransportSecurity:
    server_context: ssl.SSLContext | None = None
    """For sockets this program accepts; None: plaintext."""
    client_context: ssl.SSLContext | None = None
    """For sockets this program connects; None: plaintext."""
    require_tls: bool = False
    """Refuse plaintext peers (checked by listeners that serve both)."""

    PLAINTEXT: ClassVar[TransportSecurity]

    @property
    def tls(self) -> bool:
        return self.server_context is not None

    @classmethod
    def mutual_tls(
        cls, cert: str | Path, key: str | Path, ca: str | Path, *, require_tls: bool = False
    ) -> TransportSecurity:
        """mTLS with this certificate and key, trusting only peers signed by ``ca``.

        Raises ``ssl.SSLError`` or ``OSError`` for files that cannot be used.
        """
        server = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        client = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
        for context in (server, client):
            context.minimum_version = ssl.TLSVersion.TLSv1_2
            context.load_cert_chain(cert, key)
            context.load_verify_locations(cafile=ca)
            context.verify_mode = ssl.CERT_REQUIRED
        # A peer is named by the URI SANs of its certificate, not by a host name.
        client.check_hostname = False
        return cls(server, client, require_tls)

    @classmethod
    def from_settings(cls, settings: _TransportOptions) -> TransportSecurity:
        """From a program's ``TransportSettings`` (plaintext unless the three files are set)."""
        if settings.tls_cert is None or settings.tls_key is None or settings.tls_ca is None:
            return cls.PLAINTEXT
        return cls.mutual_tls(
            settings.tls_cert, settings.tls_key, settings.tls_ca, require_tls=settings.require_tls
        )

    def wrap_accepted(self, sock: socket.socket) -> socket.socket:
        """A blocking accepted socket, after the TLS handshake if TLS is on.

        Raises ``ssl.SSLError`` or ``OSError`` (closing ``sock``) if the handshake fails.
        """
        if self.server_context is None:
            return sock
        timeout = sock.gettimeout()
        sock.settimeout(HANDSHAKE_TIMEOUT)
        try:
            wrapped = self.server_context.wrap_socket(sock, server_side=True)
        except (OSError, ValueError):
            sock.close()
            raise
        wrapped.settimeout(timeout)
        return wrapped

    def wrap_connected(self, sock: socket.socket) -> socket.socket:
        """A blocking connected socket, after the TLS handshake if TLS is on."""
        if self.client_context is None:
            return sock
        return self.client_context.wrap_socket(sock)


TransportSecurity.PLAINTEXT = TransportSecurity()


def peer_uris(ssl_object: ssl.SSLObject | ssl.SSLSocket | Any) -> tuple[str, ...]:
    """The URI SANs of the peer's certificate (``()`` on a plaintext connection)."""
    if ssl_object is None:
        return ()
    cert = ssl_object.getpeercert()
    if not cert:
        return ()
    names: tuple[tuple[str, str], ...] = cert.get("subjectAltName", ())  # type: ignore[assignment]
    return tuple(value for kind, value in names if kind == "URI")


def peer_subject(ssl_object: ssl.SSLObject | ssl.SSLSocket | Any) -> str | None:
    """The subject of the peer's certificate (``commonName=bankd-1``; ``None`` on a
    plaintext connection), for log lines and the audit log."""
    if ssl_object is None:
        return None
    cert = ssl_object.getpeercert()
    if not cert:
        return None
    rdns: tuple[tuple[tuple[str, str], ...], ...] = cert.get("subject", ())  # type: ignore[assignment]
    return ", ".join(f"{key}={value}" for rdn in rdns for key, value in rdn)


Role = Literal["server", "api", "bankd", "client"]
URN_PREFIX = "urn:remsim:"


@dataclass(frozen=True)
class PeerIdentity:
    """Who a peer's certificate says it is: a role and, for bankds and clients, ids.

    ``urn:remsim:server`` → server; ``urn:remsim:bankd:1`` → bankd 1;
    ``urn:remsim:client:23`` and ``urn:remsim:client:24`` → client 23 and 24. URIs of other
    forms are ignored; a certificate naming several roles names none of them (``None``).
    """

    role: Role
    ids: frozenset[int] = frozenset()
    subject: str = ""
    """The certificate's subject, for log lines and the audit log."""

    @classmethod
    def from_peer(cls, ssl_object: ssl.SSLObject | ssl.SSLSocket | Any) -> PeerIdentity | None:
        """The identity in a TLS peer's certificate; None on plaintext or without one."""
        subject = peer_subject(ssl_object)
        if subject is None:
            return None
        return cls.from_uris(peer_uris(ssl_object), subject)

    @classmethod
    def from_uris(cls, uris: tuple[str, ...] | list[str], subject: str = "") -> PeerIdentity | None:
        roles: dict[str, set[int]] = {}
        for uri in uris:
            if not uri.startswith(URN_PREFIX):
                continue
            role, _, number = uri.removeprefix(URN_PREFIX).partition(":")
            if role in ("server", "api") and not number:
                roles.setdefault(role, set())
            elif role in ("bankd", "client") and number.isdigit() and int(number) <= 1023:
                roles.setdefault(role, set()).add(int(number))
        if len(roles) != 1:
            return None
        ((role, ids),) = roles.items()
        return cls(role, frozenset(ids), subject)  # type: ignore[arg-type]

    def names(self, role: Role, id_: int | None = None) -> bool:
        """The certificate is for ``role`` (and, for a bankd or client, for ``id_``)."""
        return self.role == role and (id_ is None or id_ in self.ids)

    def __str__(self) -> str:
        ids = ",".join(map(str, sorted(self.ids)))
        return f"{self.role}:{ids}" if ids else self.role
