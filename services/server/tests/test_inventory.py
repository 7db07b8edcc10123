"""A bankd of ours reports its cards (``cardInventoryInd``): the server keeps them in the
store, for its own bank's slots only, and answers nothing (an original bankd, which never
sends one, sees no difference)."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Awaitable, Callable

import pytest

import rspro
from remsim_control import BankSlot, CardRecord, CardState, ClientSlot, MemoryStore
from remsim_server.server import RemsimServer
from remsim_testing.rspro_peers import ScriptedConnection
from remsim_testing.server import connect_bankd, running_server

pytestmark = pytest.mark.timeout(30)

ATR = bytes.fromhex("3b9f96801fc78031a073be21136743200718000001a5")
ICCID, IMSI = "89490200000000000000", "262000000010000"
PRESENT = rspro.CardInfo(0, rspro.CardState.PRESENT, ATR, ICCID, IMSI)
EMPTY = rspro.CardInfo(1, rspro.CardState.EMPTY)


@pytest.fixture
async def store() -> MemoryStore:
    return MemoryStore()


@pytest.fixture
async def server(store: MemoryStore) -> AsyncIterator[RemsimServer]:
    async with running_server(store=store) as server:
        yield server


async def until(condition: Callable[[], Awaitable[bool]]) -> None:
    async with asyncio.timeout(10):
        while not await condition():
            await asyncio.sleep(0.01)


async def test_a_bankd_s_report_is_kept_with_the_time_it_arrived(
    server: RemsimServer, store: MemoryStore
) -> None:
    bankd = await connect_bankd(server.rspro_port)
    before = time.time()
    bankd.send(rspro.CardInventoryInd(1, (PRESENT, EMPTY)))

    async def reported() -> bool:
        return len(await store.cards()) == 2

    await until(reported)
    present, empty = await store.cards()
    assert before <= present.last_seen <= time.time()
    assert present == CardRecord(
        bank_slot=BankSlot(bank_id=1, slot_nr=0),
        state=CardState.PRESENT,
        atr=ATR.hex().upper(),
        iccid=ICCID,
        imsi=IMSI,
        last_seen=present.last_seen,
    )
    assert (empty.bank_slot.slot_nr, empty.state, empty.iccid) == (1, CardState.EMPTY, None)
    assert await store.card(ICCID) == present
    await bankd.expect_nothing(0.2)  # the server answers nothing


async def test_a_report_names_the_connection_s_own_bank_and_slots_only(
    server: RemsimServer, store: MemoryStore
) -> None:
    bankd = await connect_bankd(server.rspro_port, bank_id=1, slots=2)
    bankd.send(rspro.CardInventoryInd(2, (PRESENT,)))  # another bank's
    bankd.send(rspro.CardInventoryInd(1, (rspro.CardInfo(2, rspro.CardState.EMPTY),)))
    bankd.send(rspro.CardInventoryInd(1, (EMPTY, EMPTY)))  # a slot twice
    bankd.send(rspro.CardInventoryInd(1, (EMPTY,)))  # the connection lives on

    async def reported() -> bool:
        return bool(await store.cards())

    await until(reported)
    assert [(c.bank_slot.bank_id, c.bank_slot.slot_nr) for c in await store.cards()] == [(1, 1)]


async def test_a_new_report_replaces_the_old_one(server: RemsimServer, store: MemoryStore) -> None:
    bankd = await connect_bankd(server.rspro_port)
    bankd.send(rspro.CardInventoryInd(1, (PRESENT, EMPTY)))
    bankd.send(rspro.CardInventoryInd(1, (rspro.CardInfo(0, rspro.CardState.UNRESPONSIVE),)))

    async def replaced() -> bool:
        return [c.state for c in await store.cards()] == [CardState.UNRESPONSIVE]

    await until(replaced)
    assert await store.card(ICCID) is None


# --- a map made by card follows its card ---------------------------------------------------

C23 = ClientSlot(client_id=23, slot_nr=0)
B1_0, B1_1, B2_0 = (
    BankSlot(bank_id=1, slot_nr=0),
    BankSlot(bank_id=1, slot_nr=1),
    BankSlot(bank_id=2, slot_nr=0),
)


def card_in(slot_nr: int, iccid: str = ICCID) -> rspro.CardInfo:
    return rspro.CardInfo(slot_nr, rspro.CardState.PRESENT, ATR, iccid)


MOVED = rspro.CardInventoryInd(1, (rspro.CardInfo(0, rspro.CardState.EMPTY), card_in(1)))
"""B1's report after the card of slot 0 was put into slot 1."""


async def maps_of(store: MemoryStore) -> list[tuple[BankSlot, ClientSlot, str | None]]:
    return [(m.bank, m.client, m.iccid) for m in await store.list_slotmaps(visible_only=True)]


async def bankd_with_the_card_in_slot_0(
    server: RemsimServer, store: MemoryStore
) -> ScriptedConnection:
    bankd = await connect_bankd(server.rspro_port)
    bankd.send(rspro.CardInventoryInd(1, (card_in(0), EMPTY)))

    async def reported() -> bool:
        return await store.card(ICCID) is not None

    await until(reported)
    return bankd


async def handled(bankd: ScriptedConnection, store: MemoryStore) -> None:
    """Wait until the server has handled what ``bankd`` sent so far: it handles a
    connection's messages in order, so a report sent after them is kept after them."""
    bankd.send(rspro.CardInventoryInd(1, (rspro.CardInfo(0, rspro.CardState.UNRESPONSIVE),)))

    async def kept() -> bool:
        return [c.state for c in await store.cards()] == [CardState.UNRESPONSIVE]

    await until(kept)


async def test_a_map_made_by_card_moves_with_its_card_to_another_slot(
    server: RemsimServer, store: MemoryStore
) -> None:
    bankd = await bankd_with_the_card_in_slot_0(server, store)
    await store.create_slotmap(B1_0, C23, ICCID)
    bankd.send(MOVED)
    await handled(bankd, store)
    assert await maps_of(store) == [(B1_1, C23, ICCID)]


async def test_a_map_follows_its_card_into_another_bank(
    server: RemsimServer, store: MemoryStore
) -> None:
    await bankd_with_the_card_in_slot_0(server, store)
    await store.create_slotmap(B1_0, C23, ICCID)
    bank2 = await connect_bankd(server.rspro_port, bank_id=2, slots=1)
    bank2.send(rspro.CardInventoryInd(2, (card_in(0),)))

    async def moved() -> bool:
        return await maps_of(store) == [(B2_0, C23, ICCID)]

    await until(moved)


async def test_a_map_stays_when_its_card_s_new_slot_is_mapped_already(
    server: RemsimServer, store: MemoryStore
) -> None:
    bankd = await bankd_with_the_card_in_slot_0(server, store)
    await store.create_slotmap(B1_0, C23, ICCID)
    other = ClientSlot(client_id=24, slot_nr=0)
    await store.create_slotmap(B1_1, other)
    bankd.send(MOVED)
    await handled(bankd, store)
    assert await maps_of(store) == [(B1_0, C23, ICCID), (B1_1, other, None)]


async def test_a_map_made_by_bank_slot_stays_on_its_slot(
    server: RemsimServer, store: MemoryStore
) -> None:
    bankd = await bankd_with_the_card_in_slot_0(server, store)
    await store.create_slotmap(B1_0, C23)
    bankd.send(MOVED)
    await handled(bankd, store)
    assert await maps_of(store) == [(B1_0, C23, None)]
