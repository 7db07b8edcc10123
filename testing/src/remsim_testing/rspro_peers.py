"""Scripted RSPRO peers: one end of an RSPRO connection scripted by a test, over real TCP,
and a listener that accepts such ends.

A ``ScriptedConnection`` reads in the background, answers PINGs (unless ``pong`` is off),
never pings itself, and keeps every frame exactly as it arrived (IPA header included, CCM
frames too), so a test can compare what a component sends byte for byte with recordings,
see whether a frame was written in pieces, or vanish mid-exchange. The peers of
``remsim_testing.server``, ``.bankd`` and ``.client`` build their handshakes (connectBank,
connectClient, ...) on these.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import ssl as _ssl
import struct
from typing import Self, TypeVar

from rspro.codec import decode, encode
from rspro.errors import RsproError
from rspro.ipa import IPA_PROTO_CCM, PING, PONG, IpaFramer, rspro_frame
from rspro.messages import Message, RsproPdu

__all__ = ["TIMEOUT", "ScriptedConnection", "ScriptedListener", "frame"]

M = TypeVar("M", bound=Message)

TIMEOUT = 5.0
# The largest IPA frame (16-bit length): a test peer must see whatever a component sends.
_MAX_FRAME = 0xFFFF + 3


def frame(msg: Message, tag: int = -1) -> bytes:
    """The IPA frame of a message with the default envelope (or the given tag)."""
    return rspro_frame(encode(RsproPdu(msg, tag=tag)))


class ScriptedConnection:
    """One end of an RSPRO connection, scripted by a test.

    ``frames`` holds every frame received, ``ccm`` the CCM ones, ``split_frames`` counts
    reads that ended inside a frame (a frame written in pieces), ``pings`` the PINGs.
    RSPRO PDUs are queued as (message, frame) for ``recv``/``expect``.
    """

    def __init__(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, pong: bool = True
    ) -> None:
        self.reader, self.writer = reader, writer
        self.pong = pong
        self.pings = 0
        self.frames: list[bytes] = []
        self.ccm: list[bytes] = []
        self.split_frames = 0
        self.closed = asyncio.Event()  # the connection has ended (either side)
        self.error: RsproError | None = None  # undecodable input that ended the reading
        sock = writer.get_extra_info("socket")
        if sock is not None and sock.family != socket.AF_UNIX:
            # A test splits frames itself when it means to; the rest go out whole.
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self._arrival = asyncio.Event()  # replaced after every read
        self._framer = IpaFramer(max_frame_size=_MAX_FRAME)
        self._pdus: asyncio.Queue[tuple[Message, bytes] | None] = asyncio.Queue()
        self._task = asyncio.create_task(self._read())

    @classmethod
    async def connect(
        cls, port: int, host: str = "127.0.0.1", *, ssl: _ssl.SSLContext | None = None
    ) -> ScriptedConnection:
        return cls(*await asyncio.open_connection(host, port, ssl=ssl))

    async def _read(self) -> None:
        try:
            while chunk := await self.reader.read(65536):
                for received in self._framer.feed(chunk):
                    raw = received.to_bytes()
                    self.frames.append(raw)
                    if received.proto == IPA_PROTO_CCM:
                        self.ccm.append(raw)
                        if raw == PING:
                            self.pings += 1
                            if self.pong:
                                self.writer.write(PONG)
                    else:
                        self._pdus.put_nowait((decode(received.payload[1:]).msg, raw))
                if self._framer.buffered:
                    self.split_frames += 1
                self._arrival.set()
                self._arrival = asyncio.Event()
        except ConnectionError:
            pass
        except RsproError as exc:
            self.error = exc
            self.writer.close()
        finally:
            self.closed.set()
            self._arrival.set()
            self._pdus.put_nowait(None)

    async def recv(self, timeout: float | None = TIMEOUT) -> tuple[Message, bytes]:
        """The next PDU's message and its frame (``timeout`` None: wait for ever).

        Raises ConnectionError once the connection has ended and every PDU was read.
        """
        async with asyncio.timeout(timeout):
            item = await self._pdus.get()
        if item is None:
            self._pdus.put_nowait(None)  # every later recv sees the end too
            raise ConnectionError(f"connection closed ({self.error or 'by the peer'})")
        return item

    async def frame_at(self, index: int, timeout: float = TIMEOUT) -> bytes:
        """``frames[index]`` once it has arrived, whatever its kind (CCM frames included);
        ConnectionError if the connection ends before."""
        async with asyncio.timeout(timeout):
            while len(self.frames) <= index:
                if self.closed.is_set():
                    raise ConnectionError(f"connection closed after {len(self.frames)} frames")
                await self._arrival.wait()
        return self.frames[index]

    async def expect(
        self, kind: type[M], skip: tuple[type[Message], ...] = (), timeout: float = TIMEOUT
    ) -> tuple[M, bytes]:
        """The next ``kind`` message and its frame, passing over messages of the ``skip``
        kinds; anything else (or the end of the connection) fails the test."""
        while True:
            try:
                msg, raw = await self.recv(timeout)
            except ConnectionError as exc:
                raise AssertionError(f"expected {kind.__name__}, got {exc}") from None
            if isinstance(msg, kind):
                return msg, raw
            assert isinstance(msg, skip), f"expected {kind.__name__}, got {msg}"

    async def expect_nothing(self, within: float = 0.1) -> None:
        """No PDU arrives for ``within`` seconds (and the connection stays up)."""
        with contextlib.suppress(TimeoutError):
            msg, _ = await self.recv(within)
            raise AssertionError(f"unexpected {msg}")

    async def closed_by_peer(self, timeout: float = TIMEOUT) -> list[Message]:
        """Read until the other side closes the connection; returns what came before."""
        msgs: list[Message] = []
        try:
            while True:
                msgs.append((await self.recv(timeout))[0])
        except ConnectionError:
            return msgs

    async def expect_closed(self, timeout: float = TIMEOUT) -> None:
        """The other side closes the connection without sending any PDU before."""
        msgs = await self.closed_by_peer(timeout)
        assert not msgs, f"unexpected {msgs[0]} instead of the close"

    def send(self, msg: Message | RsproPdu | bytes) -> None:
        """A message (default envelope), a PDU, or bytes as they are (one write)."""
        if isinstance(msg, Message):
            msg = RsproPdu(msg)
        self.writer.write(msg if isinstance(msg, bytes) else rspro_frame(encode(msg)))

    def close(self) -> None:
        self.writer.close()

    def abort(self) -> None:
        """Vanish: close with a TCP RST."""
        sock = self.writer.get_extra_info("socket")
        if sock is not None:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        self.writer.close()

    async def wait_closed(self, timeout: float = TIMEOUT) -> None:
        """Until the connection has ended (closed by the other side, or by ``close``)."""
        async with asyncio.timeout(timeout):
            await asyncio.shield(self._task)

    async def aclose(self, timeout: float = TIMEOUT) -> None:
        """``close`` and ``wait_closed``."""
        self.close()
        await self.wait_closed(timeout)


class ScriptedListener:
    """A listener on 127.0.0.1 (by default a free port) whose every accepted connection is a
    ``ScriptedConnection``, for a component under test to connect to."""

    def __init__(
        self, port: int = 0, host: str = "127.0.0.1", *, ssl: _ssl.SSLContext | None = None
    ) -> None:
        self.host, self.port = host, port
        self.ssl = ssl  # a server context: TLS only
        self.conns: list[ScriptedConnection] = []  # every connection accepted
        self._accepted: asyncio.Queue[ScriptedConnection] = asyncio.Queue()
        self._server: asyncio.Server | None = None

    async def start(self) -> Self:
        self._server = await asyncio.start_server(self._on_conn, self.host, self.port, ssl=self.ssl)
        self.port = self._server.sockets[0].getsockname()[1]
        return self

    async def _on_conn(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        conn = ScriptedConnection(reader, writer)
        self.conns.append(conn)
        self._accepted.put_nowait(conn)

    async def accept(self, timeout: float = TIMEOUT) -> ScriptedConnection:
        """The next connection accepted (and not yet taken)."""
        async with asyncio.timeout(timeout):
            return await self._accepted.get()

    def no_new_connection(self) -> bool:
        """No connection accepted that was not taken by ``accept``."""
        return self._accepted.empty()

    async def stop(self) -> None:
        """Stop listening and close every connection accepted."""
        if self._server is not None:
            self._server.close()
        for conn in self.conns:
            conn.close()
        if self.conns:
            await asyncio.wait([conn._task for conn in self.conns], timeout=TIMEOUT)
        if self._server is not None:
            await self._server.wait_closed()

    async def __aenter__(self) -> Self:
        return await self.start()

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()
