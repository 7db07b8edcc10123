"""Scripted RSPRO peers for testing a bankd: the server's side of its control link, clients.

The peers work on raw frames (``RawPeer.raw()``), so a test can compare what the bankd
sends byte for byte with recorded frames, split frames at will, or vanish mid-exchange.
They answer PINGs as every peer does.
"""

from __future__ import annotations

import asyncio
import collections
import socket
import struct

from rspro import (
    BankSlot,
    ClientSlot,
    ComponentIdentity,
    ComponentType,
    ConnectBankReq,
    ConnectBankRes,
    ConnectClientReq,
    ConnectClientRes,
    CreateMappingReq,
    CreateMappingRes,
    IpaFramer,
    Message,
    RemoveMappingReq,
    RemoveMappingRes,
    ResultCode,
    RsproPdu,
    TpduCardToModem,
    TpduModemToCard,
    decode,
    encode,
    rspro_frame,
)
from rspro.ipa import PING, PONG

__all__ = [
    "CLIENT_IDENTITY",
    "SERVER_IDENTITY",
    "RawPeer",
    "ScriptedServer",
    "connect_client",
    "create_mapping",
    "frame",
    "remove_mapping",
    "transceive",
]

SERVER_IDENTITY = ComponentIdentity(
    ComponentType.REMSIM_SERVER, "fixme-name", "remsim-server", "1.0.0"
)
CLIENT_IDENTITY = ComponentIdentity(ComponentType.REMSIM_CLIENT, "vm", "remsim-client", "1.0.0")


def frame(msg: Message, tag: int = -1) -> bytes:
    """The IPA frame of a message with the default envelope (or the given tag)."""
    return rspro_frame(encode(RsproPdu(msg, tag=tag)))


class RawPeer:
    """One end of an RSPRO connection, scripted by a test, working on raw frames."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader, self.writer = reader, writer
        self._framer = IpaFramer(max_frame_size=65538)
        self._frames: collections.deque[bytes] = collections.deque()
        self.ccm: list[bytes] = []  # every CCM frame received

    @classmethod
    async def connect(cls, port: int, host: str = "127.0.0.1") -> RawPeer:
        peer = cls(*await asyncio.open_connection(host, port))
        peer.writer.get_extra_info("socket").setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        return peer

    async def raw(self, timeout: float = 3.0, ccm: bool = False) -> bytes:
        """The next frame, header included; CCM frames (answered) are skipped unless ``ccm``.

        Raises ConnectionError when the other side closed the connection.
        """
        async with asyncio.timeout(timeout):
            while True:
                while self._frames:
                    f = self._frames.popleft()
                    if f[2] == 0xFE:
                        self.ccm.append(f)
                        if f == PING:
                            self.writer.write(PONG)
                        if not ccm:
                            continue
                    return f
                try:
                    data = await self.reader.read(65536)
                except ConnectionResetError:
                    data = b""
                if not data:
                    raise ConnectionError("connection closed by the peer")
                self._frames.extend(x.to_bytes() for x in self._framer.feed(data))

    async def recv(self, timeout: float = 3.0) -> Message:
        return decode((await self.raw(timeout))[4:]).msg

    def send(self, msg: Message | bytes) -> None:
        self.writer.write(msg if isinstance(msg, bytes) else frame(msg))

    async def closed_by_peer(self, timeout: float = 3.0) -> list[Message]:
        """Read until the other side closes the connection; returns what came before."""
        msgs = []
        try:
            while True:
                msgs.append(await self.recv(timeout))
        except ConnectionError:
            return msgs

    def abort(self) -> None:
        """Vanish: close with a TCP RST."""
        sock = self.writer.get_extra_info("socket")
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        self.writer.close()

    def close(self) -> None:
        self.writer.close()


class ScriptedServer:
    """The remsim server's side of the bankd's control link, scripted by a test."""

    def __init__(self, port: int = 0) -> None:
        self.port = port
        self.peers: asyncio.Queue[RawPeer] = asyncio.Queue()
        self._server: asyncio.Server | None = None

    async def start(self) -> None:
        async def accept(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            await self.peers.put(RawPeer(reader, writer))

        self._server = await asyncio.start_server(accept, "127.0.0.1", self.port)
        self.port = self._server.sockets[0].getsockname()[1]

    async def stop(self) -> None:
        if self._server is not None:
            self._server.close()

    async def __aenter__(self) -> ScriptedServer:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    async def bankd(self, timeout: float = 5.0) -> RawPeer:
        """Accept the bankd's next connection and register it (connectBankRes ok)."""
        async with asyncio.timeout(timeout):
            peer = await self.peers.get()
        msg = await peer.recv(timeout)
        assert isinstance(msg, ConnectBankReq), msg
        peer.send(ConnectBankRes(SERVER_IDENTITY, ResultCode.OK))
        return peer


async def create_mapping(server: RawPeer, client: ClientSlot, bank: BankSlot) -> ResultCode:
    server.send(CreateMappingReq(client, bank))
    res = await server.recv()
    assert isinstance(res, CreateMappingRes), res
    return res.result


async def remove_mapping(server: RawPeer, client: ClientSlot, bank: BankSlot) -> ResultCode:
    server.send(RemoveMappingReq(client, bank))
    res = await server.recv()
    assert isinstance(res, RemoveMappingRes), res
    return res.result


async def connect_client(
    port: int, slot: ClientSlot, timeout: float = 3.0
) -> tuple[RawPeer, list[Message]]:
    """Connect as client ``slot``; returns the peer and the answers (connectClientRes and,
    when it is ok, the setAtrReq)."""
    client = await RawPeer.connect(port)
    client.send(ConnectClientReq(CLIENT_IDENTITY, slot))
    res = await client.recv(timeout)
    assert isinstance(res, ConnectClientRes), res
    msgs: list[Message] = [res]
    if res.result is ResultCode.OK:
        msgs.append(await client.recv(timeout))
    return client, msgs


async def transceive(client: RawPeer, data: bytes, slot: ClientSlot, bank: BankSlot) -> bytes:
    """One TPDU exchange; returns the R-APDU."""
    client.send(TpduModemToCard(slot, bank, data))
    res = await client.recv()
    assert isinstance(res, TpduCardToModem), res
    assert (res.from_bank_slot, res.to_client_slot) == (bank, slot), res
    return res.data
