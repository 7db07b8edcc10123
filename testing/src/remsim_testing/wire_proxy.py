"""A TCP proxy for tests and benchmarks: counts the RSPRO messages on the wire and can add a
fixed delay each way (a round-trip time made in the harness, not on the network).

    with WireProxy(("127.0.0.1", bankd_port), delay=0.005) as proxy:   # +10 ms round trip
        ...point the client at proxy.port...
        assert proxy.count("up", "apduModemToCard") == 1

"up" is what the connecting side sends (a client towards its bankd), "down" the answers.
Every chunk is forwarded in order, ``delay`` seconds after it arrived (``delays`` sets each
direction on its own, also while connections are open), without waiting for
the chunks before it to be delivered (so pipelined frames stay pipelined). The proxy runs its
own event loop in a thread: blocking tests, asyncio tests and child processes can all use it.
Plaintext RSPRO only is counted (a TLS link is forwarded, but its frames are opaque).
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import socket
import threading
from typing import Literal, Self

from rspro.codec import decode
from rspro.errors import RsproError
from rspro.ipa import IPA_EXT_RSPRO, IPA_PROTO_OSMO, MAX_FRAME, IpaFramer

__all__ = ["Direction", "WireProxy"]

Direction = Literal["up", "down"]

_READ_SIZE = 65536
_START_TIMEOUT = 5.0


class WireProxy:
    """Listens on 127.0.0.1 (``port``) and forwards every connection to ``target``."""

    def __init__(self, target: tuple[str, int], *, delay: float = 0.0) -> None:
        self.target = target
        self.delays: dict[Direction, float] = {"up": delay, "down": delay}
        self.port = 0
        self.connections = 0
        self._counts: dict[Direction, collections.Counter[str]] = {
            "up": collections.Counter(),
            "down": collections.Counter(),
        }
        self._lock = threading.Lock()
        self._loop = asyncio.new_event_loop()
        self._ready = threading.Event()
        self._stopped: asyncio.Event | None = None
        self._handlers: set[asyncio.Task[None]] = set()
        self._thread = threading.Thread(target=self._run, name="wire-proxy", daemon=True)

    # --- the test's side ----------------------------------------------------------------

    def __enter__(self) -> Self:
        self._thread.start()
        if not self._ready.wait(_START_TIMEOUT):
            raise RuntimeError("the wire proxy did not start")
        return self

    def __exit__(self, *exc: object) -> None:
        if self._stopped is not None:
            self._loop.call_soon_threadsafe(self._stopped.set)
        self._thread.join(_START_TIMEOUT)

    @property
    def delay(self) -> float:
        return max(self.delays.values())

    @delay.setter
    def delay(self, seconds: float) -> None:
        self.delays = {"up": seconds, "down": seconds}

    def count(self, direction: Direction, message: str) -> int:
        """How many RSPRO ``message`` (its ASN.1 name, e.g. ``tpduModemToCard``) went that way."""
        with self._lock:
            return self._counts[direction][message]

    def counts(self, direction: Direction) -> dict[str, int]:
        with self._lock:
            return dict(self._counts[direction])

    def reset(self) -> None:
        with self._lock:
            for counter in self._counts.values():
                counter.clear()

    # --- the proxy's thread ------------------------------------------------------------

    def _run(self) -> None:
        asyncio.set_event_loop(self._loop)
        try:
            self._loop.run_until_complete(self._serve())
        finally:
            self._loop.close()

    async def _serve(self) -> None:
        self._stopped = asyncio.Event()
        server = await asyncio.start_server(self._accept, "127.0.0.1", 0)
        self.port = server.sockets[0].getsockname()[1]
        self._ready.set()
        async with server:
            await self._stopped.wait()
            server.close()
            for task in self._handlers:
                task.cancel()
            await asyncio.gather(*self._handlers, return_exceptions=True)

    async def _accept(self, down_r: asyncio.StreamReader, down_w: asyncio.StreamWriter) -> None:
        self.connections += 1
        me = asyncio.current_task()
        assert me is not None
        self._handlers.add(me)
        up_w: asyncio.StreamWriter | None = None
        try:
            up_r, up_w = await asyncio.open_connection(*self.target)
            for writer in (down_w, up_w):
                with contextlib.suppress(OSError):  # no delay but ours
                    sock = writer.get_extra_info("socket")
                    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            await asyncio.gather(self._pipe(down_r, up_w, "up"), self._pipe(up_r, down_w, "down"))
        except (OSError, asyncio.CancelledError):  # a peer left, or the proxy stops: the end
            pass
        finally:
            self._handlers.discard(me)
            for end in (down_w, up_w):
                if end is not None:
                    end.close()
                    with contextlib.suppress(OSError, asyncio.CancelledError):
                        await end.wait_closed()

    async def _pipe(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, direction: Direction
    ) -> None:
        """Read until the end, queue every chunk with its due time; a second task sends."""
        framer = IpaFramer(MAX_FRAME)
        countable = True
        queue: asyncio.Queue[tuple[float, bytes]] = asyncio.Queue()
        sender = asyncio.create_task(self._send(queue, writer))
        try:
            while data := await reader.read(_READ_SIZE):
                queue.put_nowait((self._loop.time() + self.delays[direction], data))
                if countable:
                    countable = self._count(framer, data, direction)
            queue.put_nowait((0.0, b""))  # end of stream, after what is queued
            await sender
        finally:
            sender.cancel()

    async def _send(
        self, queue: asyncio.Queue[tuple[float, bytes]], writer: asyncio.StreamWriter
    ) -> None:
        while True:
            due, data = await queue.get()
            if not data:
                writer.close()
                return
            wait = due - self._loop.time()
            if wait > 0:
                await asyncio.sleep(wait)
            writer.write(data)
            await writer.drain()

    def _count(self, framer: IpaFramer, data: bytes, direction: Direction) -> bool:
        """Count the RSPRO messages in ``data``; False once the stream is no IPA (TLS)."""
        try:
            frames = framer.feed(data)
        except RsproError:
            return False
        names = []
        for frame in frames:
            payload = frame.payload
            if frame.proto == IPA_PROTO_OSMO and payload[:1] == bytes((IPA_EXT_RSPRO,)):
                try:
                    names.append(decode(payload[1:]).msg.ASN_NAME)
                except RsproError:
                    names.append("invalid")
        with self._lock:
            self._counts[direction].update(names)
        return True
