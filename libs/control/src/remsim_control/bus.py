"""The ``Bus`` interface: announcements that the store changed, so that the core holding
the affected bankd or client connection acts on it.

Events are hints, not the state: a receiver re-reads the store, so an event that arrives
twice or late does no harm. Delivery is at most once (as NATS core), in publication order
per publisher, to every subscription that was open when the event was published.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import AbstractAsyncContextManager
from typing import Annotated, Literal, Protocol, TypeAlias

from pydantic import BaseModel, ConfigDict, Field, TypeAdapter

from remsim_control.models import BankSlot, ClientSlot, Slotmap


class _Event(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class SlotmapEvent(_Event):
    """Slotmap ``serial`` was created, changed state or was removed.

    Acted on by the core holding bank ``bank.bank_id`` (push create/remove requests) and by
    the core holding client ``client`` (send it its configuration).
    """

    kind: Literal["slotmap"] = "slotmap"
    serial: int
    bank: BankSlot
    client: ClientSlot

    @classmethod
    def of(cls, slotmap: Slotmap) -> SlotmapEvent:
        return cls(serial=slotmap.serial, bank=slotmap.bank, client=slotmap.client)


class ResetEvent(_Event):
    """Many maps changed at once (global reset, or events lost while the bus was away):
    every core re-reads all of its banks and clients. ``global_reset``: the operator's
    global reset; every bankd is also told to drop whatever maps it holds."""

    kind: Literal["reset"] = "reset"
    global_reset: bool = False


Event: TypeAlias = Annotated[SlotmapEvent | ResetEvent, Field(discriminator="kind")]

_event_adapter: TypeAdapter[Event] = TypeAdapter(Event)


def encode_event(event: Event) -> bytes:
    """JSON, for buses that carry bytes."""
    return event.model_dump_json().encode()


def decode_event(data: bytes) -> Event:
    """Inverse of ``encode_event``; raises pydantic's ``ValidationError`` on bad input."""
    return _event_adapter.validate_json(data)


class Bus(Protocol):
    async def publish(self, event: Event) -> None:
        """Send ``event`` to every open subscription (including the publisher's own)."""
        ...

    def subscribe(self) -> AbstractAsyncContextManager[AsyncIterator[Event]]:
        """``async with bus.subscribe() as events: async for event in events: ...``

        Every event published after the ``async with`` block has been entered is delivered,
        until it is left."""
        ...

    async def close(self) -> None:
        """Release the bus; open subscriptions end (their iteration stops)."""
        ...
