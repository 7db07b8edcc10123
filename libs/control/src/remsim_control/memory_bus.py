"""In-memory ``Bus`` for the single-host server: one unbounded queue per subscription
(``None`` in a queue marks the end)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from remsim_control.bus import Event


class MemoryBus:
    def __init__(self) -> None:
        self._queues: set[asyncio.Queue[Event | None]] = set()
        self._closed = False

    async def publish(self, event: Event) -> None:
        for queue in self._queues:
            queue.put_nowait(event)

    @asynccontextmanager
    async def subscribe(self) -> AsyncIterator[AsyncIterator[Event]]:
        queue: asyncio.Queue[Event | None] = asyncio.Queue()
        if self._closed:
            queue.put_nowait(None)
        self._queues.add(queue)
        try:
            yield self._iterate(queue)
        finally:
            self._queues.discard(queue)

    async def _iterate(self, queue: asyncio.Queue[Event | None]) -> AsyncIterator[Event]:
        while (event := await queue.get()) is not None:
            yield event

    async def close(self) -> None:
        self._closed = True
        for queue in self._queues:
            queue.put_nowait(None)
