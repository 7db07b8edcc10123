"""``Bus`` on NATS (core NATS, no JetStream): events as JSON on subjects.

Subjects (``<p>`` is the prefix, ``remsim`` by default):

- ``<p>.events``: every event, to every core and API process (``publish``);
- ``<p>.core.<core_id>``: events for one core only (``send_to``): a process that knows, from
  the store's registry, which core holds a bank's or a client's connection can command that
  core alone instead of waking all of them.

Delivery is at most once, as the ``Bus`` contract says; what is lost while NATS is away is
made up for by a ``ResetEvent`` that every open subscription receives after the connection
is re-established (receivers re-read the whole store, so nothing is missed). ``publish``
raises ``BackendUnavailable`` while NATS is unreachable rather than buffering: a caller
learns at once that the other cores will not hear it now. A bus that refused a publication
announces a ``ResetEvent`` to everyone once it is connected again, so that a change written
to the store meanwhile reaches the cores even if only this process had lost NATS.
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
from pydantic import ValidationError

from remsim_control.bus import Event, ResetEvent, decode_event, encode_event
from remsim_control.errors import BackendUnavailable

log = logging.getLogger(__name__)

DEFAULT_PREFIX = "remsim"
FLUSH_TIMEOUT = 2.0


class NatsBus:
    def __init__(self, nc: Client, *, prefix: str = DEFAULT_PREFIX, core_id: str | None = None):
        """A bus on the connected client ``nc`` (closed by ``close``); ``core_id`` adds this
        core's own subject to every subscription."""
        self._nc = nc
        self._prefix = prefix
        self.core_id = core_id
        self._queues: set[asyncio.Queue[Event | None]] = set()
        self._closed = False
        self._refused = False
        """A publication was refused since the connection was lost."""

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

    def core_subject(self, core_id: str) -> str:
        # A subject token cannot hold '.', '*', '>' or blanks (host names have dots).
        token = "".join(c if c.isalnum() or c in "-_:" else "_" for c in core_id)
        return f"{self._prefix}.core.{token}"

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
        await self._send(self.events_subject, event)

    async def send_to(self, core_id: str, event: Event) -> None:
        """Deliver ``event`` to the subscriptions of core ``core_id`` only."""
        await self._send(self.core_subject(core_id), event)

    async def _send(self, subject: str, event: Event) -> None:
        if not self._nc.is_connected:
            self._refused = True
            raise BackendUnavailable("NATS unreachable (reconnecting)")
        try:
            await self._nc.publish(subject, encode_event(event))
        except NatsError as exc:
            self._refused = True
            raise BackendUnavailable(f"NATS publish failed: {exc!r}") from exc

    @contextlib.asynccontextmanager
    async def subscribe(self) -> AsyncIterator[AsyncIterator[Event]]:
        queue: asyncio.Queue[Event | None] = asyncio.Queue()
        if self._closed:
            queue.put_nowait(None)

        async def on_message(msg: Msg) -> None:
            try:
                queue.put_nowait(decode_event(msg.data))
            except ValidationError as exc:
                log.warning("ignoring a bad event on %s: %s", msg.subject, exc)

        subjects = [self.events_subject]
        if self.core_id is not None:
            subjects.append(self.core_subject(self.core_id))
        subs: list[Subscription] = []
        if not self._closed:
            for subject in subjects:
                subs.append(await self._nc.subscribe(subject, cb=on_message))
        self._queues.add(queue)
        try:
            # Once the server has our subscriptions, every later publication reaches us.
            # While NATS is away they are sent on reconnection, followed by a ResetEvent.
            # nats-py (2.16) writes flush()'s PING ahead of the SUBs still queued for its
            # flusher task, so the first PONG can come before the server has them; the
            # second PING follows them.
            if subs and self._nc.is_connected:
                with contextlib.suppress(NatsError, TimeoutError):
                    for _ in range(2):
                        await self._nc.flush(timeout=FLUSH_TIMEOUT)  # type: ignore[arg-type]
            yield self._iterate(queue)
        finally:
            self._queues.discard(queue)
            for sub in subs:
                with contextlib.suppress(NatsError):
                    await sub.unsubscribe()

    async def _iterate(self, queue: asyncio.Queue[Event | None]) -> AsyncIterator[Event]:
        while (event := await queue.get()) is not None:
            yield event

    async def _on_reconnected(self) -> None:
        log.info("NATS connection re-established; subscribers re-read the store")
        for queue in self._queues:
            queue.put_nowait(ResetEvent())
        if self._refused:
            try:
                await self._nc.publish(self.events_subject, encode_event(ResetEvent()))
            except NatsError as exc:
                log.warning("could not announce a reset after reconnecting: %s", exc)
            else:
                self._refused = False

    async def close(self) -> None:
        self._closed = True
        for queue in self._queues:
            queue.put_nowait(None)
        with contextlib.suppress(NatsError, TimeoutError):
            await self._nc.drain() if self._nc.is_connected else await self._nc.close()
        if not self._nc.is_closed:
            await self._nc.close()
