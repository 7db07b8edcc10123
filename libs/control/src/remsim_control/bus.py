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

from remsim_control.models import BankSlot, ClientSlot, Slotmap, SlotmapState


class _Event(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class SlotmapEvent(_Event):
    """Slotmap ``serial`` was created, changed state or was removed.

    Acted on by the core holding bank ``bank.bank_id`` (push create/remove requests) and by
    the core holding client ``client`` (send it its configuration).

    ``state``: a hint, the state the change left the map in, where the publisher knows it
    (a creation, a state change; None for a removal, or unknown). A client without a bankd
    only has something to do once its map is ACTIVE, so its core need not re-read the store
    for a NEW or UNACKNOWLEDGED map's event (``NEEDLESS_FOR_UNMAPPED_CLIENT``). Not in the
    JSON (``encode_event``): a bus that carries bytes sends it beside it (NATS: the header
    ``STATE_HEADER``), so that processes that do not know the field still read the event.
    """

    kind: Literal["slotmap"] = "slotmap"
    serial: int
    bank: BankSlot
    client: ClientSlot
    state: SlotmapState | None = Field(default=None, exclude=True)

    @classmethod
    def of(cls, slotmap: Slotmap, state: SlotmapState | None = None) -> SlotmapEvent:
        """The event of a change of ``slotmap``; ``state``: the hint (see the class)."""
        return cls(serial=slotmap.serial, bank=slotmap.bank, client=slotmap.client, state=state)


NEEDLESS_FOR_UNMAPPED_CLIENT = frozenset({SlotmapState.NEW, SlotmapState.UNACKNOWLEDGED})
"""The ``SlotmapEvent.state`` hints after which a client without a bankd has nothing to do:
such a map gives it no bankd yet (only an ACTIVE one does, and that is announced)."""
STATE_HEADER = "Remsim-Slotmap-State"
"""The NATS header carrying ``SlotmapEvent.state``."""


class ResetEvent(_Event):
    """Many maps changed at once (global reset, or events lost while the bus was away):
    every core re-reads all of its banks and clients. ``global_reset``: the operator's
    global reset; every bankd is also told to drop whatever maps it holds."""

    kind: Literal["reset"] = "reset"
    global_reset: bool = False


Event: TypeAlias = Annotated[SlotmapEvent | ResetEvent, Field(discriminator="kind")]

_event_adapter: TypeAdapter[Event] = TypeAdapter(Event)


def encode_event(event: Event) -> bytes:
    """JSON, for buses that carry bytes (without ``SlotmapEvent.state``: see there)."""
    return event.model_dump_json().encode()


def state_hint(event: Event) -> str | None:
    """``SlotmapEvent.state`` as a bus that carries bytes sends it beside the JSON."""
    if isinstance(event, SlotmapEvent) and event.state is not None:
        return event.state.value
    return None


def with_state_hint(event: Event, hint: str | None) -> Event:
    """``event`` with the ``state`` a bus carried beside it (``state_hint``); an unknown
    hint is none."""
    if hint is None or not isinstance(event, SlotmapEvent):
        return event
    try:
        state = SlotmapState(hint)
    except ValueError:
        return event
    return event.model_copy(update={"state": state})


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
