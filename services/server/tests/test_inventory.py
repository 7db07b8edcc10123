"""A bankd of ours reports its cards (``cardInventoryInd``): the server keeps them in the
store, for its own bank's slots only, and answers nothing (an original bankd, which never
sends one, sees no difference)."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Awaitable, Callable

import pytest

import rspro
from remsim_control import BankSlot, CardRecord, CardState, MemoryStore
from remsim_server.server import RemsimServer
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
