"""``rspro.tls``: the connecting side of a TLS link, OpenSSL on a non-blocking socket, as an
``asyncio.Transport``. Real TLS 1.3 handshakes on 127.0.0.1 against a blocking TLS peer in
a thread (as the bankd serves its client port)."""

from __future__ import annotations

import asyncio
import contextlib
import os
import socket
import ssl
import threading
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from remsim_testing.pki import TestCA
from rspro.tls import TlsSocketTransport, connect_tls

WAIT = 10.0
BIG = 8 * 1024 * 1024
"""More than the socket buffers of both ends hold: the writer must queue."""


@pytest.fixture
def contexts(tmp_path: Path) -> tuple[ssl.SSLContext, ssl.SSLContext]:
    """(server, client): remsim's own mutual TLS contexts (``TransportSecurity``)."""
    ca = TestCA(tmp_path)
    server = ca.issue("server", "urn:remsim:server").security().server_context
    client = ca.issue("client", "urn:remsim:client:23").security().client_context
    assert server is not None and client is not None
    return server, client


class Peer:
    """A blocking TLS peer in a thread: runs ``serve(tls_socket)`` for one connection."""

    def __init__(self, context: ssl.SSLContext, serve: Callable[[ssl.SSLSocket], None]) -> None:
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = self.listener.getsockname()[1]
        self.error: BaseException | None = None
        self.done = threading.Event()

        def run() -> None:
            try:
                sock, _ = self.listener.accept()
                sock.settimeout(WAIT)
                with context.wrap_socket(sock, server_side=True, suppress_ragged_eofs=False) as tls:
                    serve(tls)
            except BaseException as exc:  # reported to the test
                self.error = exc
            finally:
                self.done.set()

        self.thread = threading.Thread(target=run, daemon=True)
        self.thread.start()

    def join(self) -> None:
        assert self.done.wait(WAIT)
        self.listener.close()
        if self.error is not None:
            raise self.error


@contextlib.contextmanager
def peer(context: ssl.SSLContext, serve: Callable[[ssl.SSLSocket], None]) -> Iterator[Peer]:
    p = Peer(context, serve)
    try:
        yield p
    finally:
        p.listener.close()


class Recorder(asyncio.Protocol):
    def __init__(self) -> None:
        loop = asyncio.get_running_loop()
        self.data = bytearray()
        self.eof = False
        self.lost: asyncio.Future[Exception | None] = loop.create_future()
        self.arrived = asyncio.Event()

    def data_received(self, data: bytes) -> None:
        self.data += data
        self.arrived.set()

    def eof_received(self) -> bool | None:
        self.eof = True
        return None

    def connection_lost(self, exc: Exception | None) -> None:
        self.lost.set_result(exc)

    async def until(self, size: int) -> bytes:
        async with asyncio.timeout(WAIT):
            while len(self.data) < size:
                self.arrived.clear()
                await self.arrived.wait()
        return bytes(self.data)


def echo(tls: ssl.SSLSocket) -> None:
    while data := tls.recv(65536):
        tls.sendall(data)


async def connect(port: int, client: ssl.SSLContext) -> tuple[TlsSocketTransport, Recorder]:
    async with asyncio.timeout(WAIT):
        transport, protocol = await connect_tls(Recorder, "127.0.0.1", port, client)
    assert isinstance(protocol, Recorder)
    return transport, protocol


async def test_a_round_trip_and_what_the_transport_tells(
    contexts: tuple[ssl.SSLContext, ssl.SSLContext],
) -> None:
    server, client = contexts
    with peer(server, echo) as p:
        transport, protocol = await connect(p.port, client)
        transport.write(b"\x00\x05\xee\x07hello")
        assert await protocol.until(9) == b"\x00\x05\xee\x07hello"
        assert transport.get_extra_info("peername") == ("127.0.0.1", p.port)
        assert transport.get_extra_info("ssl_object").version() == "TLSv1.3"
        assert ("URI", "urn:remsim:server") in transport.get_extra_info("peercert")[
            "subjectAltName"
        ]
        assert transport.get_extra_info("socket").getsockopt(socket.SOL_SOCKET, socket.SO_TYPE)
        transport.close()
        assert await asyncio.wait_for(protocol.lost, WAIT) is None
        p.join()  # the peer saw a close_notify, not a bare FIN (suppress_ragged_eofs=False)


async def test_a_write_bigger_than_the_socket_buffers_is_queued_and_arrives_whole(
    contexts: tuple[ssl.SSLContext, ssl.SSLContext],
) -> None:
    server, client = contexts
    received = bytearray()
    release = threading.Event()

    def slow_reader(tls: ssl.SSLSocket) -> None:
        assert release.wait(WAIT)
        while data := tls.recv(65536):
            received.extend(data)

    payload = bytes(range(256)) * (BIG // 256)
    with peer(server, slow_reader) as p:
        transport, protocol = await connect(p.port, client)
        transport.write(payload)
        assert transport.get_write_buffer_size() > 0  # the peer does not read yet
        release.set()
        transport.close()  # after what is queued
        assert await asyncio.wait_for(protocol.lost, WAIT) is None
        p.join()
    assert bytes(received) == payload


async def test_the_peer_closing_is_an_eof_then_the_end(
    contexts: tuple[ssl.SSLContext, ssl.SSLContext],
) -> None:
    server, client = contexts

    def greet_and_close(tls: ssl.SSLSocket) -> None:
        tls.sendall(b"bye")
        tls.unwrap()  # close_notify

    with peer(server, greet_and_close) as p:
        transport, protocol = await connect(p.port, client)
        assert await protocol.until(3) == b"bye"
        assert await asyncio.wait_for(protocol.lost, WAIT) is None
        assert protocol.eof and transport.is_closing()
        p.join()


async def test_a_peer_vanishing_without_close_notify_ends_the_link(
    contexts: tuple[ssl.SSLContext, ssl.SSLContext],
) -> None:
    server, client = contexts

    def vanish(tls: ssl.SSLSocket) -> None:
        tls.sendall(b"x")
        socket.socket(fileno=tls.detach()).close()  # TCP FIN, no TLS close_notify

    with peer(server, vanish) as p:
        transport, protocol = await connect(p.port, client)
        assert await protocol.until(1) == b"x"
        await asyncio.wait_for(protocol.lost, WAIT)
        assert transport.is_closing()
        p.join()


async def test_abort_drops_what_is_queued_and_closes_at_once(
    contexts: tuple[ssl.SSLContext, ssl.SSLContext],
) -> None:
    server, client = contexts
    release = threading.Event()

    def stall(tls: ssl.SSLSocket) -> None:
        assert release.wait(WAIT)
        with contextlib.suppress(OSError):
            while tls.recv(65536):
                pass

    with peer(server, stall) as p:
        transport, protocol = await connect(p.port, client)
        transport.write(b"\x00" * BIG)
        transport.abort()
        assert await asyncio.wait_for(protocol.lost, WAIT) is None
        assert transport.get_write_buffer_size() == 0
        assert transport.get_extra_info("socket").fileno() == -1  # closed
        release.set()
        p.join()


async def test_paused_reading_holds_the_data_until_resumed(
    contexts: tuple[ssl.SSLContext, ssl.SSLContext],
) -> None:
    server, client = contexts
    with peer(server, echo) as p:
        transport, protocol = await connect(p.port, client)
        transport.pause_reading()
        assert not transport.is_reading()
        transport.write(b"ping")
        await asyncio.sleep(0.2)  # the echo is back in the socket by now, or soon
        assert protocol.data == b""
        transport.resume_reading()
        assert await protocol.until(4) == b"ping"
        transport.close()
        await asyncio.wait_for(protocol.lost, WAIT)
        p.join()


async def test_an_untrusted_server_is_refused_and_its_socket_closed(
    contexts: tuple[ssl.SSLContext, ssl.SSLContext], tmp_path: Path
) -> None:
    server, _ = contexts
    other_ca = TestCA(tmp_path / "other", name="another CA")
    stranger = other_ca.issue("stranger", "urn:remsim:client:23").security().client_context
    assert stranger is not None

    def handshake_only(tls: ssl.SSLSocket) -> None:
        pass

    p = Peer(server, handshake_only)
    with pytest.raises(ssl.SSLCertVerificationError):
        await connect(p.port, stranger)
    with pytest.raises(ssl.SSLError):
        p.join()  # the server saw the client's alert


async def test_a_refused_connect_is_an_os_error(
    contexts: tuple[ssl.SSLContext, ssl.SSLContext],
) -> None:
    _, client = contexts
    with socket.socket() as unused:
        unused.bind(("127.0.0.1", 0))
        port = unused.getsockname()[1]
    with pytest.raises(ConnectionRefusedError):
        await connect(port, client)


async def test_a_silent_server_times_out_and_the_socket_is_closed(
    contexts: tuple[ssl.SSLContext, ssl.SSLContext],
) -> None:
    _, client = contexts
    with socket.create_server(("127.0.0.1", 0)) as listener:  # accepts, never answers
        port = listener.getsockname()[1]
        before = len(os.listdir("/proc/self/fd"))
        with pytest.raises(TimeoutError):
            async with asyncio.timeout(0.3):
                await connect_tls(Recorder, "127.0.0.1", port, client)
        assert len(os.listdir("/proc/self/fd")) == before
