"""``Bus`` on NATS (core NATS, no JetStream): events as JSON on one subject,
``<p>.events`` (``<p>`` is the prefix, ``remsim`` by default), to every core and API process;
a slotmap event's state hint in the header ``remsim_control.bus.STATE_HEADER``.

Events are broadcast: each core acts on those about the bankds and clients it holds.
Delivery is at most once, as the ``Bus`` contract says. What can be lost is made up for by
resets (receivers re-read the whole store, so nothing is missed):

- after every reconnection, each open subscription of this process receives a
  ``ResetEvent``, and this process announces one to everyone (a publication of its own, or
  one buffered in the client when the connection broke, may have been lost);
- when NATS drops messages for a slow subscriber, that subscriber receives a
  ``ResetEvent``.

``publish`` raises ``BackendUnavailable`` while NATS is unreachable rather than buffering:
a caller learns at once that the other cores will not hear it now. (The server cores also
re-read the store periodically, for losses no one notices.)
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator

from nats.aio.client import Client
from nats.aio.msg import Msg
from nats.aio.subscription import Subscription
from nats.errors import Error as NatsError
from nats.errors import SlowConsumerError
from pydantic import ValidationError

from remsim_control.bus import (
    STATE_HEADER,
    Event,
    ResetEvent,
    decode_event,
    encode_event,
    state_hint,
    with_state_hint,
)
from remsim_control.errors import BackendUnavailable

log = logging.getLogger(__name__)

DEFAULT_PREFIX = "remsim"
FLUSH_TIMEOUT = 2.0


class NatsBus:
    def __init__(self, nc: Client, *, prefix: str = DEFAULT_PREFIX, core_id: str | None = None):
        """A bus on the connected client ``nc`` (closed by ``close``); ``core_id``: the
        server core using it, if any (for logs)."""
        self._nc = nc
        self._prefix = prefix
        self.core_id = core_id
        self._queues: set[asyncio.Queue[Event | None]] = set()
        self._sub: Subscription | None = None
        """The one NATS subscription of this process's subscribers (see ``subscribe``)."""
        self._sub_lock = asyncio.Lock()
        self._closed = False

    @classmethod
    async def connect(
        cls,
        url: str,
        *,
        prefix: str = DEFAULT_PREFIX,
        core_id: str | None = None,
        name: str | None = None,
        connect_timeout: float = 2.0,
        reconnect_wait: float = 0.5,
    ) -> NatsBus:
        """Connect to ``nats://host:port`` (``BackendUnavailable`` if it does not answer);
        afterwards the client reconnects by itself, forever."""
        bus: NatsBus | None = None

        async def reconnected() -> None:
            if bus is not None:
                await bus._on_reconnected()

        async def disconnected() -> None:
            if bus is not None and not bus._closed:
                log.warning("NATS connection lost; reconnecting")

        async def error(exc: Exception) -> None:
            if isinstance(exc, SlowConsumerError) and bus is not None:
                bus._on_events_lost()
            log.debug("NATS: %s", exc)

        nc = Client()
        try:
            # With endless reconnection nats-py also retries the first connection forever;
            # bound it here.
            await asyncio.wait_for(
                nc.connect(
                    url,
                    name=name,
                    connect_timeout=max(1, round(connect_timeout)),
                    reconnect_time_wait=reconnect_wait,  # type: ignore[arg-type]
                    max_reconnect_attempts=-1,
                    allow_reconnect=True,
                    reconnected_cb=reconnected,
                    disconnected_cb=disconnected,
                    error_cb=error,
                    ping_interval=5,
                    max_outstanding_pings=2,
                ),
                connect_timeout,
            )
        except (TimeoutError, NatsError, OSError) as exc:
            with contextlib.suppress(NatsError, OSError):
                await nc.close()
            raise BackendUnavailable(f"NATS unreachable at {url}: {exc!r}") from exc
        bus = cls(nc, prefix=prefix, core_id=core_id)
        return bus

    @property
    def events_subject(self) -> str:
        return f"{self._prefix}.events"

    @property
    def connected(self) -> bool:
        return bool(self._nc.is_connected)

    async def ping(self) -> bool:
        """True if NATS answers now (for ``/readyz``)."""
        if not self._nc.is_connected:
            return False
        try:
            await self._nc.flush(timeout=FLUSH_TIMEOUT)  # type: ignore[arg-type]
        except (TimeoutError, NatsError):
            return False
        return True

    async def publish(self, event: Event) -> None:
        if not self._nc.is_connected:
            raise BackendUnavailable("NATS unreachable (reconnecting)")
        hint = state_hint(event)
        headers = None if hint is None else {STATE_HEADER: hint}
        try:
            await self._nc.publish(self.events_subject, encode_event(event), headers=headers)
        except NatsError as exc:
            raise BackendUnavailable(f"NATS publish failed: {exc!r}") from exc

    @contextlib.asynccontextmanager
    async def subscribe(self) -> AsyncIterator[AsyncIterator[Event]]:
        """The subscribers of one process share one NATS subscription: NATS sends each
        event to the process once, and it is decoded once (a core has two subscribers,
        its connections' dispatcher and the pool scheduler)."""
        queue: asyncio.Queue[Event | None] = asyncio.Queue()
        if self._closed:
            queue.put_nowait(None)
            self._queues.add(queue)
        else:
            await self._join(queue)
        try:
            yield self._iterate(queue)
        finally:
            self._queues.discard(queue)
            await self._leave()

    async def _join(self, queue: asyncio.Queue[Event | None]) -> None:
        async with self._sub_lock:
            if self._sub is not None:  # open, and known to the server: see below
                self._queues.add(queue)
                return
            self._sub = await self._nc.subscribe(self.events_subject, cb=self._on_message)
            self._queues.add(queue)
            # Once the server has the subscription, every later publication reaches us.
            # While NATS is away it is sent on reconnection, followed by a ResetEvent.
            # nats-py (2.16) writes flush()'s PING ahead of the SUBs still queued for its
            # flusher task, so the first PONG can come before the server has them; the
            # second PING follows them.
            if self._nc.is_connected:
                with contextlib.suppress(NatsError, TimeoutError):
                    for _ in range(2):
                        await self._nc.flush(timeout=FLUSH_TIMEOUT)  # type: ignore[arg-type]

    async def _leave(self) -> None:
        """Unsubscribe from NATS once no subscriber of this process is left."""
        async with self._sub_lock:
            if self._queues or self._sub is None:
                return
            sub, self._sub = self._sub, None
            with contextlib.suppress(NatsError):
                await sub.unsubscribe()

    async def _on_message(self, msg: Msg) -> None:
        try:
            event = decode_event(msg.data)
        except ValidationError as exc:
            log.warning("ignoring a bad event on %s: %s", msg.subject, exc)
            return
        if msg.headers:
            event = with_state_hint(event, msg.headers.get(STATE_HEADER))
        for queue in self._queues:
            queue.put_nowait(event)

    async def _iterate(self, queue: asyncio.Queue[Event | None]) -> AsyncIterator[Event]:
        while (event := await queue.get()) is not None:
            yield event

    def _reset_subscribers(self) -> None:
        """Events may be lost: every subscriber of this process re-reads the store."""
        for queue in self._queues:
            queue.put_nowait(ResetEvent())

    def _on_events_lost(self) -> None:
        log.warning("NATS dropped events for a slow subscriber; subscribers re-read the store")
        self._reset_subscribers()

    async def _on_reconnected(self) -> None:
        log.info("NATS connection re-established; every process re-reads the store")
        self._reset_subscribers()
        # Whatever this process published just before the break may be lost (nats-py
        # buffers publications and drops its buffer with the connection): tell everyone.
        try:
            await self._nc.publish(self.events_subject, encode_event(ResetEvent()))
        except NatsError as exc:
            log.warning("could not announce a reset after reconnecting: %s", exc)

    async def close(self) -> None:
        self._closed = True
        for queue in self._queues:
            queue.put_nowait(None)
        with contextlib.suppress(NatsError, TimeoutError):
            await self._nc.drain() if self._nc.is_connected else await self._nc.close()
        if not self._nc.is_closed:
            await self._nc.close()
