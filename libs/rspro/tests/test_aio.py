"""The asyncio layer on real TCP (127.0.0.1, free ports): connect/serve, one write per
frame, TCP_NODELAY, keepalive timeouts with small timings, TLS, clean close, and a broken
peer that costs only its own connection."""

from __future__ import annotations

import asyncio
import datetime
import ipaddress
import socket
import ssl
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from rspro import (
    BankSlot,
    ClientSlot,
    ConnectionClosedError,
    IpaFramer,
    Keepalive,
    KeepaliveTimeoutError,
    RsproPdu,
    RsproStream,
    TpduCardToModem,
    TpduModemToCard,
    decode,
    encode,
    ipa,
    open_connection,
    rspro_frame,
    start_server,
)

C23_0, B1_0 = ClientSlot(23, 0), BankSlot(1, 0)
FAST = Keepalive(interval=0.05, timeout=0.1)


def command(i: int) -> TpduModemToCard:
    return TpduModemToCard(C23_0, B1_0, bytes([0xA0, 0xB0, 0, 0, i % 256]) + bytes(i % 250))


async def card(stream: RsproStream) -> None:
    """A bankd-like handler: answers each TPDU with 90 00 plus the command's last byte."""
    async for pdu in stream:
        msg = pdu.msg
        assert isinstance(msg, TpduModemToCard)
        stream.send(TpduCardToModem(B1_0, C23_0, msg.data[4:5] + b"\x90\x00"))


@pytest.fixture
async def serve() -> AsyncIterator[Callable[..., Any]]:
    """``port = await serve(handler, **options)``: a server on 127.0.0.1, closed after."""
    servers: list[asyncio.Server] = []

    async def start(handler: Any = card, **options: Any) -> int:
        server = await start_server(handler, "127.0.0.1", 0, **options)
        servers.append(server)
        port: int = server.sockets[0].getsockname()[1]
        return port

    yield start
    for server in servers:
        server.close()
        await server.wait_closed()


def transport_of(stream: RsproStream) -> asyncio.Transport:
    # RsproStream has no public accessor for its transport; the tests need the socket
    transport = stream._transport
    assert transport is not None
    return transport


async def read_frames(reader: asyncio.StreamReader, count: int) -> list[bytes]:
    framer = IpaFramer()
    frames: list[bytes] = []
    while len(frames) < count:
        data = await reader.read(4096)
        assert data, f"EOF after {frames}"
        frames += [f.to_bytes() for f in framer.feed(data)]
    return frames


# --- connect and serve --------------------------------------------------------------------


async def test_request_response_over_tcp(serve: Callable[..., Any]) -> None:
    port = await serve()
    async with await open_connection("127.0.0.1", port) as stream:
        for i in range(50):
            stream.send(command(i))
            pdu = await stream.recv()
            assert pdu.msg == TpduCardToModem(B1_0, C23_0, bytes([i]) + b"\x90\x00")
        assert stream.peername == ("127.0.0.1", port)
        assert stream.sockname[0] == "127.0.0.1"


async def test_the_server_pings_on_accept_and_answers_pings(serve: Callable[..., Any]) -> None:
    port = await serve()
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        assert await read_frames(reader, 1) == [ipa.PING]
        writer.write(ipa.PING + ipa.PONG + rspro_frame(encode(RsproPdu(command(7)))))
        pong, reply = await read_frames(reader, 2)
        assert pong == ipa.PONG
        assert decode(reply[4:]).msg == TpduCardToModem(B1_0, C23_0, b"\x07\x90\x00")
    finally:
        writer.close()


async def test_the_client_pings_first_then_sends_its_pdus() -> None:
    accepted: asyncio.Queue[tuple[asyncio.StreamReader, asyncio.StreamWriter]] = asyncio.Queue()

    async def on_accept(r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
        await accepted.put((r, w))

    raw = await asyncio.start_server(on_accept, "127.0.0.1", 0)
    port = raw.sockets[0].getsockname()[1]
    try:
        stream = await open_connection("127.0.0.1", port)
        stream.send(command(1))
        reader, writer = await accepted.get()
        assert await read_frames(reader, 2) == [ipa.PING, rspro_frame(encode(RsproPdu(command(1))))]
        writer.close()
        await stream.aclose()
    finally:
        raw.close()
        await raw.wait_closed()


async def test_tcp_nodelay_on_both_ends(serve: Callable[..., Any]) -> None:
    server_side: asyncio.Future[RsproStream] = asyncio.get_running_loop().create_future()

    async def handler(stream: RsproStream) -> None:
        server_side.set_result(stream)
        await stream.wait_closed()

    port = await serve(handler)
    async with await open_connection("127.0.0.1", port) as stream:
        for end in (stream, await server_side):
            sock = transport_of(end).get_extra_info("socket")
            assert sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY)


async def test_each_frame_is_written_in_one_write(
    serve: Callable[..., Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    """An upstream bankd drops a client whose frame is split over two reads."""
    port = await serve()
    stream = await open_connection("127.0.0.1", port)
    transport = transport_of(stream)
    writes: list[bytes] = []
    real_write = transport.write

    def write(data: bytes) -> None:
        writes.append(data)
        real_write(data)

    monkeypatch.setattr(transport, "write", write)
    for i in range(100):
        stream.send(command(i))
        await stream.recv()
    await stream.aclose()
    framers = [IpaFramer() for _ in writes]
    frames = [f for framer, w in zip(framers, writes, strict=True) for f in framer.feed(w)]
    assert all(framer.buffered == 0 for framer in framers)  # no write ends inside a frame
    assert sum(f.proto == ipa.IPA_PROTO_OSMO for f in frames) == 100


async def test_a_strict_reader_like_the_upstream_bankd_worker_is_served_whole_frames() -> None:
    """The worker does recv(3) then recv(len) and closes the link on a short read."""
    short_reads = 0
    frames = 0
    done = asyncio.Event()

    def worker(conn: socket.socket) -> None:
        nonlocal short_reads, frames
        with conn:
            while header := conn.recv(3):
                size = int.from_bytes(header[:2], "big")
                body = conn.recv(size)
                short_reads += len(header) < 3 or len(body) < size
                frames += 1

    listener = socket.create_server(("127.0.0.1", 0))
    port = listener.getsockname()[1]

    async def accept() -> None:
        conn, _ = await asyncio.to_thread(listener.accept)
        await asyncio.to_thread(worker, conn)
        done.set()

    task = asyncio.create_task(accept())
    stream = await open_connection("127.0.0.1", port, keepalive=None)
    for i in range(300):
        stream.send(command(i))
        if i % 10 == 0:
            await asyncio.sleep(0)
    await stream.aclose()
    await asyncio.wait_for(done.wait(), 5)
    await task
    listener.close()
    assert (frames, short_reads) == (300, 0)


# --- keepalive ----------------------------------------------------------------------------


async def test_server_drops_a_peer_that_never_answers_pings(serve: Callable[..., Any]) -> None:
    outcome: asyncio.Future[BaseException] = asyncio.get_running_loop().create_future()

    async def handler(stream: RsproStream) -> None:
        try:
            await stream.recv()
        except ConnectionClosedError as exc:
            outcome.set_result(exc)

    port = await serve(handler, keepalive=FAST)
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    start = asyncio.get_running_loop().time()
    assert isinstance(await asyncio.wait_for(outcome, 2), KeepaliveTimeoutError)
    assert 0.09 <= asyncio.get_running_loop().time() - start < 2.0
    assert await read_frames(reader, 1) == [ipa.PING]
    assert await reader.read() == b""  # and the TCP connection is gone
    writer.close()


async def test_client_detects_a_dead_server() -> None:
    silent = await asyncio.start_server(lambda r, w: None, "127.0.0.1", 0)
    port = silent.sockets[0].getsockname()[1]
    try:
        stream = await open_connection("127.0.0.1", port, keepalive=FAST)
        with pytest.raises(KeepaliveTimeoutError):
            await asyncio.wait_for(stream.recv(), 2)
        assert stream.is_closing
        with pytest.raises(ConnectionClosedError):
            stream.send(command(0))
    finally:
        silent.close()


async def test_a_healthy_link_survives_many_keepalive_periods(serve: Callable[..., Any]) -> None:
    tolerant = Keepalive(interval=0.05, timeout=0.5)  # a busy test machine may be slow to pong
    port = await serve(keepalive=tolerant)
    async with await open_connection("127.0.0.1", port, keepalive=tolerant) as stream:
        await asyncio.sleep(0.6)  # about 10 periods of each end
        stream.send(command(3))
        assert (await stream.recv()).msg.data == b"\x03\x90\x00"  # type: ignore[attr-defined]


# --- TLS ----------------------------------------------------------------------------------


def self_signed(directory: Path) -> tuple[Path, Path]:
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "remsim test")])
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=1))
        .not_valid_after(now + datetime.timedelta(hours=1))
        .add_extension(
            x509.SubjectAlternativeName([x509.IPAddress(ipaddress.IPv4Address("127.0.0.1"))]),
            critical=False,
        )
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    cert_path, key_path = directory / "cert.pem", directory / "key.pem"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    return cert_path, key_path


async def test_tls(serve: Callable[..., Any], tmp_path: Path) -> None:
    cert, key = self_signed(tmp_path)
    server_ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    server_ctx.load_cert_chain(cert, key)
    client_ctx = ssl.create_default_context(cafile=str(cert))
    port = await serve(ssl=server_ctx)
    async with await open_connection("127.0.0.1", port, ssl=client_ctx) as stream:
        assert transport_of(stream).get_extra_info("ssl_object") is not None
        stream.send(command(9))
        assert (await stream.recv()).msg.data == b"\x09\x90\x00"  # type: ignore[attr-defined]


async def test_tls_client_rejects_an_untrusted_server(
    serve: Callable[..., Any], tmp_path: Path
) -> None:
    cert, key = self_signed(tmp_path)
    server_ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    server_ctx.load_cert_chain(cert, key)
    port = await serve(ssl=server_ctx)
    with pytest.raises(ssl.SSLCertVerificationError):
        await open_connection("127.0.0.1", port, ssl=ssl.create_default_context())


# --- closing ------------------------------------------------------------------------------


async def test_clean_close_by_the_client(serve: Callable[..., Any]) -> None:
    seen: asyncio.Future[list[RsproPdu]] = asyncio.get_running_loop().create_future()

    async def handler(stream: RsproStream) -> None:
        seen.set_result([pdu async for pdu in stream])  # ends when the peer closes

    port = await serve(handler)
    stream = await open_connection("127.0.0.1", port)
    stream.send(command(1))
    stream.send(command(2))
    await stream.aclose()
    assert stream.is_closing
    assert [p.msg for p in await asyncio.wait_for(seen, 2)] == [command(1), command(2)]
    with pytest.raises(ConnectionClosedError):
        stream.send(command(3))
    with pytest.raises(ConnectionClosedError):
        await stream.recv()


async def test_the_server_closes_when_its_handler_returns(serve: Callable[..., Any]) -> None:
    async def handler(stream: RsproStream) -> None:
        await stream.recv()
        stream.send(TpduCardToModem(B1_0, C23_0, b"\x90\x00"))

    port = await serve(handler)
    stream = await open_connection("127.0.0.1", port)
    stream.send(command(1))
    assert (await stream.recv()).msg == TpduCardToModem(B1_0, C23_0, b"\x90\x00")
    with pytest.raises(ConnectionClosedError):
        await asyncio.wait_for(stream.recv(), 2)
    await asyncio.wait_for(stream.wait_closed(), 2)


@pytest.mark.parametrize(
    "garbage",
    [
        b"\x00\x02\x42\x00\x00",  # unknown IPA protocol
        b"\x00\x03\xee\x05\x30\x00",  # OSMO extension other than RSPRO
        b"\xff\xff\xee",  # frame far over the size limit
        rspro_frame(b"\x30\x03\x02\x01\x00"),  # not an RSPRO PDU
    ],
    ids=["protocol", "extension", "size", "pdu"],
)
async def test_a_malformed_frame_closes_only_that_connection(
    serve: Callable[..., Any], garbage: bytes
) -> None:
    port = await serve()
    good = await open_connection("127.0.0.1", port)
    good.send(command(1))
    await good.recv()

    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(garbage)
    assert await read_frames(reader, 1) == [ipa.PING]
    assert await asyncio.wait_for(reader.read(), 2) == b""  # closed by the server
    writer.close()

    good.send(command(2))
    assert (await good.recv()).msg.data == b"\x02\x90\x00"  # type: ignore[attr-defined]
    newcomer = await open_connection("127.0.0.1", port)
    newcomer.send(command(3))
    assert (await newcomer.recv()).msg.data == b"\x03\x90\x00"  # type: ignore[attr-defined]
    await good.aclose()
    await newcomer.aclose()


async def test_a_failing_handler_costs_only_its_connection(
    serve: Callable[..., Any], caplog: pytest.LogCaptureFixture
) -> None:
    async def handler(stream: RsproStream) -> None:
        pdu = await stream.recv()
        if pdu.msg.data[4] == 0:  # type: ignore[attr-defined]
            raise RuntimeError("handler bug")
        await card(stream)

    port = await serve(handler)
    doomed = await open_connection("127.0.0.1", port)
    doomed.send(command(0))
    with pytest.raises(ConnectionClosedError):
        await asyncio.wait_for(doomed.recv(), 2)
    assert "handler bug" in caplog.text

    survivor = await open_connection("127.0.0.1", port)
    survivor.send(command(5))
    survivor.send(command(6))
    assert (await survivor.recv()).msg.data == b"\x06\x90\x00"  # type: ignore[attr-defined]
    await survivor.aclose()
