"""Test support, not used by the client at run time: scripted RSPRO peers playing the
remsim-server and the bankds a client connects to. It lives in the package rather than under
tests/ so that the tests of every front-end (and of programs built on the client) share it.

A ``ScriptedPeer`` listens on 127.0.0.1; each connection it accepts is a ``PeerConnection``
that reads in the background, answers PINGs and keeps every frame exactly as it arrived
(IPA header included, CCM frames too), so a test can compare what the client sends byte for
byte with the recordings of the original (reference/upstream-1.0.0: identity "vm",
swVersion "1.0.0", client C23:0) and see whether a frame was written in pieces.
"""

from __future__ import annotations

import asyncio
import dataclasses
import ipaddress
from collections.abc import Callable
from typing import Any, TypeVar

from rspro import (
    BankSlot,
    ClientSlot,
    ComponentIdentity,
    ComponentType,
    ConfigClientBankReq,
    ConnectClientReq,
    ConnectClientRes,
    IpaFramer,
    IpPort,
    Message,
    ResultCode,
    RsproPdu,
    decode,
    encode,
    ipa,
    rspro_frame,
)

from .config import ClientConfig

__all__ = [
    "B1_0",
    "BANKD_IDENTITY",
    "C23",
    "SERVER_IDENTITY",
    "TIMEOUT",
    "PeerConnection",
    "ScriptedPeer",
    "client_config",
    "config_bank",
    "eventually",
]

M = TypeVar("M", bound=Message)

TIMEOUT = 5.0
C23 = ClientSlot(23, 0)  # the client of the recordings
B1_0 = BankSlot(1, 0)
SERVER_IDENTITY = ComponentIdentity(
    ComponentType.REMSIM_SERVER, "fixme-name", "remsim-server", "1.0.0"
)
BANKD_IDENTITY = ComponentIdentity(
    ComponentType.REMSIM_BANKD, "fixme-name", "remsim-bankd", "1.0.0"
)


class PeerConnection:
    """One accepted connection: answers PINGs, queues decoded PDUs, records raw frames."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader, self.writer = reader, writer
        self.frames: list[bytes] = []  # every frame received, in order
        self.split_frames = 0  # reads that ended inside a frame: a frame written in pieces
        self.pings = 0
        self.closed = asyncio.Event()
        self._framer = IpaFramer()
        self._pdus: asyncio.Queue[tuple[Message, bytes]] = asyncio.Queue()
        self.task = asyncio.create_task(self._read())

    async def _read(self) -> None:
        try:
            while chunk := await self.reader.read(65536):
                for received in self._framer.feed(chunk):
                    raw = received.to_bytes()
                    self.frames.append(raw)
                    if raw == ipa.PING:
                        self.pings += 1
                        self.writer.write(ipa.PONG)
                    elif received.proto == ipa.IPA_PROTO_OSMO:
                        self._pdus.put_nowait((decode(received.payload[1:]).msg, raw))
                if self._framer.buffered:
                    self.split_frames += 1
        except ConnectionError:
            pass
        finally:
            self.closed.set()

    async def recv(self, timeout: float | None = TIMEOUT) -> tuple[Message, bytes]:
        """The next PDU's message and its frame (``timeout`` None: wait for ever)."""
        return await asyncio.wait_for(self._pdus.get(), timeout)

    async def expect(
        self, kind: type[M], skip: tuple[type[Message], ...] = (), timeout: float = TIMEOUT
    ) -> tuple[M, bytes]:
        """The next ``kind`` message and its frame, passing over messages of the ``skip``
        kinds; anything else fails the test."""
        while True:
            msg, raw = await self.recv(timeout)
            if isinstance(msg, kind):
                return msg, raw
            assert isinstance(msg, skip), f"expected {kind.__name__}, got {msg}"

    def send(self, msg: Message) -> None:
        self.writer.write(rspro_frame(encode(RsproPdu(msg))))

    async def wait_closed(self, timeout: float = TIMEOUT) -> None:
        """Until the client closed the connection."""
        await asyncio.wait_for(self.closed.wait(), timeout)

    def close(self) -> None:
        self.writer.close()


class ScriptedPeer:
    """A scripted remsim-server or bankd on 127.0.0.1 (a free port) for a client to use."""

    def __init__(self, identity: ComponentIdentity) -> None:
        self.identity = identity  # sent in every ConnectClientRes
        self.port = 0
        self.conns: list[PeerConnection] = []
        self._accepted: asyncio.Queue[PeerConnection] = asyncio.Queue()
        self._server: asyncio.Server | None = None

    async def start(self) -> ScriptedPeer:
        self._server = await asyncio.start_server(self._on_conn, "127.0.0.1", self.port)
        self.port = self._server.sockets[0].getsockname()[1]
        return self

    async def _on_conn(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        conn = PeerConnection(reader, writer)
        self.conns.append(conn)
        self._accepted.put_nowait(conn)

    async def accept(self, timeout: float = TIMEOUT) -> PeerConnection:
        """The client's next connection."""
        return await asyncio.wait_for(self._accepted.get(), timeout)

    async def accept_client(
        self, result: ResultCode = ResultCode.OK
    ) -> tuple[PeerConnection, bytes]:
        """Accept a client and answer its ConnectClientReq; returns the request's frame."""
        conn = await self.accept()
        _, raw = await conn.expect(ConnectClientReq)
        conn.send(ConnectClientRes(self.identity, result))
        return conn, raw

    def no_new_connection(self) -> bool:
        return self._accepted.empty()

    async def stop(self) -> None:
        for conn in self.conns:
            conn.close()
        if self.conns:
            await asyncio.wait([conn.task for conn in self.conns], timeout=TIMEOUT)
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()

    async def __aenter__(self) -> ScriptedPeer:
        return await self.start()

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()


def config_bank(peer: ScriptedPeer | None, bank: BankSlot = B1_0) -> ConfigClientBankReq:
    """The server's configClientBankReq for the bankd ``peer``; None: no bankd (0.0.0.0:0)."""
    if peer is None:
        return ConfigClientBankReq(bank, IpPort(ipaddress.IPv4Address(0), 0))
    return ConfigClientBankReq(bank, IpPort(ipaddress.IPv4Address("127.0.0.1"), peer.port))


def client_config(
    server: ScriptedPeer, client_slot: ClientSlot = C23, **overrides: Any
) -> ClientConfig:
    """A client of ``server`` with the identity of the original's recordings."""
    config = ClientConfig(
        server_host="127.0.0.1",
        server_port=server.port,
        client_slot=client_slot,
        name="vm",
        sw_version="1.0.0",
    )
    return dataclasses.replace(config, **overrides)


async def eventually(predicate: Callable[[], bool], timeout: float = TIMEOUT) -> None:
    """Until ``predicate()`` holds (polled, since the client runs on the same loop)."""
    async with asyncio.timeout(timeout):
        while not predicate():
            await asyncio.sleep(0.002)
