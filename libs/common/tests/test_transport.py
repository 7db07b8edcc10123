"""TransportSecurity with real TLS handshakes on loopback sockets."""

from __future__ import annotations

import asyncio
import socket
import ssl
import threading
from pathlib import Path

import pytest

from remsim_common import TransportSecurity, TransportSettings, peer_uris
from remsim_testing.pki import TestCA


def _write(ca: TestCA, tmp: Path, name: str, *identities: str) -> TransportSecurity:
    return ca.issue(name, *identities).security()


@pytest.fixture
def ca(tmp_path: Path) -> TestCA:
    return TestCA(tmp_path / "ca")


def test_plaintext_is_the_default() -> None:
    security = TransportSecurity.from_settings(TransportSettings())
    assert security is TransportSecurity.PLAINTEXT and not security.tls
    a, b = socket.socketpair()
    with a, b:
        assert security.wrap_accepted(a) is a and security.wrap_connected(b) is b


async def test_mutual_tls_over_asyncio_carries_the_peers_uri_sans(
    ca: TestCA, tmp_path: Path
) -> None:
    server = _write(ca, tmp_path, "server", "urn:remsim:server")
    bankd = _write(ca, tmp_path, "bankd-1", "urn:remsim:bankd:1")
    seen: list[tuple[str, ...]] = []

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        seen.append(peer_uris(writer.get_extra_info("ssl_object")))
        writer.write(await reader.readexactly(4))
        writer.close()

    listener = await asyncio.start_server(handle, "127.0.0.1", 0, ssl=server.server_context)
    port = listener.sockets[0].getsockname()[1]
    async with listener:
        reader, writer = await asyncio.open_connection("127.0.0.1", port, ssl=bankd.client_context)
        tls = writer.get_extra_info("ssl_object")
        assert peer_uris(tls) == ("urn:remsim:server",)
        assert tls.version() in ("TLSv1.2", "TLSv1.3")
        writer.write(b"ping")
        assert await reader.readexactly(4) == b"ping"
        writer.close()
    assert seen == [("urn:remsim:bankd:1",)]


def test_blocking_sockets_refuse_a_peer_of_another_ca(ca: TestCA, tmp_path: Path) -> None:
    server = _write(ca, tmp_path, "bankd", "urn:remsim:bankd:1")
    other = tmp_path / "other"
    other.mkdir()
    stranger = _write(TestCA(other), other, "client-23", "urn:remsim:client:23")
    listener = socket.create_server(("127.0.0.1", 0))
    errors: list[BaseException] = []

    def accept() -> None:
        sock, _ = listener.accept()
        try:
            server.wrap_accepted(sock)
        except (ssl.SSLError, OSError) as exc:
            errors.append(exc)

    thread = threading.Thread(target=accept)
    thread.start()
    with pytest.raises((ssl.SSLError, OSError)):
        conn = socket.create_connection(listener.getsockname())
        stranger.wrap_connected(conn).recv(1)
    thread.join(5)
    listener.close()
    assert errors and isinstance(errors[0], ssl.SSLError)


def test_blocking_sockets_mutual_tls(ca: TestCA, tmp_path: Path) -> None:
    bankd = _write(ca, tmp_path, "bankd", "urn:remsim:bankd:1")
    client = _write(ca, tmp_path, "client", "urn:remsim:client:23", "urn:remsim:client:24")
    listener = socket.create_server(("127.0.0.1", 0))
    got: list[tuple[str, ...]] = []

    def accept() -> None:
        sock, _ = listener.accept()
        tls = bankd.wrap_accepted(sock)
        got.append(peer_uris(tls))
        tls.sendall(tls.recv(5))
        tls.close()

    thread = threading.Thread(target=accept)
    thread.start()
    tls = client.wrap_connected(socket.create_connection(listener.getsockname()))
    tls.sendall(b"hello")
    assert tls.recv(5) == b"hello"
    tls.close()
    thread.join(5)
    listener.close()
    assert got == [("urn:remsim:client:23", "urn:remsim:client:24")]


@pytest.mark.parametrize(
    ("uris", "expected"),
    [
        (["urn:remsim:server"], ("server", set())),
        (["urn:remsim:bankd:1"], ("bankd", {1})),
        (["urn:remsim:client:23", "urn:remsim:client:24", "https://x"], ("client", {23, 24})),
        (["urn:remsim:client:23", "urn:remsim:bankd:1"], None),  # two roles: none
        (["urn:remsim:client:1024"], None),
        (["urn:remsim:bankd:x", "urn:remsim:server:1"], None),
        ([], None),
    ],
)
def test_identity_from_uri_sans(uris: list[str], expected: tuple[str, set[int]] | None) -> None:
    from remsim_common import PeerIdentity

    identity = PeerIdentity.from_uris(uris)
    if expected is None:
        assert identity is None
    else:
        assert identity is not None and (identity.role, set(identity.ids)) == expected


def test_identity_of_a_tls_peer(ca: TestCA, tmp_path: Path) -> None:
    from remsim_common import PeerIdentity

    server = _write(ca, tmp_path, "server", "urn:remsim:server")
    client = _write(ca, tmp_path, "client-23", "urn:remsim:client:23")
    listener = socket.create_server(("127.0.0.1", 0))
    got: list[PeerIdentity | None] = []

    def accept() -> None:
        tls = server.wrap_accepted(listener.accept()[0])
        got.append(PeerIdentity.from_peer(tls))
        tls.close()

    thread = threading.Thread(target=accept)
    thread.start()
    tls = client.wrap_connected(socket.create_connection(listener.getsockname()))
    assert PeerIdentity.from_peer(tls) == PeerIdentity("server", frozenset(), "commonName=server")
    tls.close()
    thread.join(5)
    listener.close()
    (identity,) = got
    assert (
        identity is not None and identity.names("client", 23) and not identity.names("client", 24)
    )
    assert str(identity) == "client:23" and "client-23" in identity.subject
