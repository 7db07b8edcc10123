"""Test support: a scripted RSPRO peer (a bankd or a client as the test decides, over real
TCP) that keeps the exact bytes of every frame it receives, and a server on free ports."""

from __future__ import annotations

import asyncio
import contextlib
import struct
from collections.abc import AsyncIterator
from typing import TypeVar

import rspro
from remsim_control import Bus, Store
from remsim_server.server import RemsimServer
from remsim_server.settings import ServerSettings
from rspro import ipa

M = TypeVar("M", bound=rspro.Message)

BANKD_IDENTITY = rspro.ComponentIdentity(
    rspro.ComponentType.REMSIM_BANKD, "fixme-name", "remsim-bankd", "1.0.0"
)
CLIENT_IDENTITY = rspro.ComponentIdentity(
    rspro.ComponentType.REMSIM_CLIENT, "vm", "remsim-client", "1.0.0"
)


class ScriptedPeer:
    """The TCP-client side of a control connection, driven step by step by a test.

    It answers PINGs (with ``pong=True``), never pings itself, and queues every received
    RSPRO frame as (PDU, frame bytes including the IPA header).
    """

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader = reader
        self.writer = writer
        self.pong = True
        self.pings = 0
        self._framer = ipa.IpaFramer()
        self._frames: asyncio.Queue[tuple[rspro.RsproPdu, bytes] | None] = asyncio.Queue()
        self._task = asyncio.create_task(self._receive())

    @classmethod
    async def connect(cls, port: int, host: str = "127.0.0.1") -> ScriptedPeer:
        reader, writer = await asyncio.open_connection(host, port)
        return cls(reader, writer)

    async def _receive(self) -> None:
        try:
            while data := await self.reader.read(65536):
                for frame in self._framer.feed(data):
                    raw = struct.pack(">HB", len(frame.payload), frame.proto) + frame.payload
                    if frame.proto == ipa.IPA_PROTO_CCM:
                        if frame.payload[:1] == bytes([ipa.CcmType.PING]):
                            self.pings += 1
                            if self.pong:
                                self.writer.write(ipa.PONG)
                        continue
                    self._frames.put_nowait((rspro.decode(frame.payload[1:]), raw))
        except ConnectionError:
            pass
        finally:
            self._frames.put_nowait(None)

    def send(self, msg: rspro.Message | rspro.RsproPdu) -> None:
        pdu = msg if isinstance(msg, rspro.RsproPdu) else rspro.RsproPdu(msg)
        self.writer.write(rspro.rspro_frame(rspro.encode(pdu)))

    async def receive(self, timeout: float = 5.0) -> tuple[rspro.RsproPdu, bytes]:
        """The next RSPRO PDU and its frame bytes; AssertionError if the connection ends."""
        async with asyncio.timeout(timeout):
            item = await self._frames.get()
        if item is None:
            self._frames.put_nowait(None)
            raise AssertionError("the server closed the connection")
        return item

    async def expect(self, kind: type[M], timeout: float = 5.0) -> tuple[M, bytes]:
        pdu, raw = await self.receive(timeout)
        assert isinstance(pdu.msg, kind), f"expected {kind.__name__}, got {pdu.msg}"
        return pdu.msg, raw

    async def expect_nothing(self, within: float = 0.1) -> None:
        with contextlib.suppress(TimeoutError):
            pdu, _ = await self.receive(within)
            raise AssertionError(f"unexpected {pdu.msg}")

    async def expect_closed(self, timeout: float = 5.0) -> None:
        async with asyncio.timeout(timeout):
            while (item := await self._frames.get()) is not None:
                raise AssertionError(f"unexpected {item[0].msg} instead of the close")
        self._frames.put_nowait(None)

    async def close(self) -> None:
        self.writer.close()
        with contextlib.suppress(ConnectionError):
            await self.writer.wait_closed()
        await self._task

    def abort(self) -> None:
        """Vanish without a FIN (as a host that lost power, seen from the server)."""
        self.writer.transport.abort()


async def connect_bankd(port: int, bank_id: int = 1, slots: int = 2) -> ScriptedPeer:
    """A bankd that has connected and been accepted."""
    bankd = await ScriptedPeer.connect(port)
    bankd.send(rspro.ConnectBankReq(BANKD_IDENTITY, bank_id, slots))
    answer, _ = await bankd.expect(rspro.ConnectBankRes)
    assert answer.result is rspro.ResultCode.OK
    return bankd


async def connect_client(port: int, client_id: int = 23, slot_nr: int = 0) -> ScriptedPeer:
    """A client that has connected and been accepted."""
    client = await ScriptedPeer.connect(port)
    client.send(rspro.ConnectClientReq(CLIENT_IDENTITY, rspro.ClientSlot(client_id, slot_nr)))
    answer, _ = await client.expect(rspro.ConnectClientRes)
    assert answer.result is rspro.ResultCode.OK
    return client


def server_settings(**overrides: object) -> ServerSettings:
    """Settings for a server on free ports of 127.0.0.1 with the reference identity."""
    values: dict[str, object] = {
        "rspro_host": "127.0.0.1",
        "rspro_port": 0,
        "rest_host": "127.0.0.1",
        "rest_port": 0,
        "identity_name": "fixme-name",
        "sw_version": "1.0.0",
        "log_level": "WARNING",
    }
    values.update(overrides)
    return ServerSettings(**values)  # type: ignore[arg-type]


@contextlib.asynccontextmanager
async def running_server(
    settings: ServerSettings | None = None, store: Store | None = None, bus: Bus | None = None
) -> AsyncIterator[RemsimServer]:
    server = RemsimServer(settings or server_settings(), store, bus)
    await server.start()
    try:
        yield server
    finally:
        await server.aclose()
