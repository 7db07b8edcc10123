"""The pool scheduler (``remsim_server.pools``) on a real store and bus: it makes and removes
ordinary slotmaps (store + bus event), counts failures and usage, ends leases on time, and
only the holder of the duty acts."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from remsim_control import (
    BankSlot,
    ClientSlot,
    MemoryBus,
    MemoryStore,
    SlotmapEvent,
    SlotmapState,
    Store,
)
from remsim_control.assignment import PoolState
from remsim_control.pool_store import MemoryPoolStore, PoolStore, pool_store_for
from remsim_control.pools import CardAdminState, CardRef, ClientGroup, Pool, Rule
from remsim_control.sqlite_store import SqliteStore
from remsim_server.pools import PoolScheduler
from remsim_testing.store_contract import bank_record, client_record

C1 = ClientSlot(client_id=1, slot_nr=0)
C2 = ClientSlot(client_id=2, slot_nr=0)
B = [BankSlot(bank_id=1, slot_nr=n) for n in range(3)]
FAST = 0.05
"""The scheduler's poll interval in these tests (seconds)."""


async def configure(store: Store, lease: float | None = None) -> None:
    pools = pool_store_for(store)
    await pools.put_pool(Pool(name="A", cards=tuple(CardRef(bank=b) for b in B)))
    await pools.put_group(ClientGroup(name="modems", clients=(C1, C2)))
    await pools.put_rule(Rule(name="r", group="modems", pools=("A",), lease_seconds=lease))
    await store.register_bank(bank_record(1))


async def eventually(condition: object, timeout: float = 5.0) -> None:
    assert callable(condition)
    deadline = time.monotonic() + timeout
    while not await condition():
        assert time.monotonic() < deadline, "condition not met in time"
        await asyncio.sleep(0.02)


async def visible(store: Store) -> list[tuple[BankSlot, ClientSlot]]:
    return [(m.bank, m.client) for m in await store.list_slotmaps(visible_only=True)]


@pytest.fixture
async def store() -> MemoryStore:
    return MemoryStore()


@pytest.fixture
async def scheduler(store: MemoryStore) -> AsyncIterator[PoolScheduler]:
    scheduler = PoolScheduler(store, MemoryBus(), owner="core-a", poll_interval=FAST)
    await scheduler.start()
    yield scheduler
    await scheduler.aclose()


async def test_a_connecting_client_gets_a_card_through_an_ordinary_slotmap(
    store: MemoryStore,
) -> None:
    bus = MemoryBus()
    await configure(store)
    events: list[object] = []

    async def watch() -> None:
        async with bus.subscribe() as stream:
            async for event in stream:
                events.append(event)

    watcher = asyncio.create_task(watch())
    scheduler = PoolScheduler(store, bus, owner="core-a", poll_interval=FAST)
    await scheduler.start()
    try:
        await store.register_client(client_record(C1))
        await eventually(lambda: _equals(visible(store), [(B[0], C1)]))
        (slotmap,) = await store.list_slotmaps()
        assert slotmap.state is SlotmapState.NEW  # the core holding bank 1 pushes it
        await eventually(lambda: _true(SlotmapEvent.of(slotmap) in events))
        pools = pool_store_for(store)
        (assignment,) = await pools.list_assignments()
        assert (assignment.serial, assignment.rule, assignment.card) == (
            slotmap.serial,
            "r",
            "B1:0",
        )
        status = await pools.card_status("B1:0")
        assert status is not None and status.maps == 1
    finally:
        await scheduler.aclose()
        watcher.cancel()


async def test_disabling_the_card_moves_the_client_to_the_next(
    store: MemoryStore, scheduler: PoolScheduler
) -> None:
    await configure(store)
    await store.register_client(client_record(C1))
    await eventually(lambda: _equals(visible(store), [(B[0], C1)]))
    (slotmap,) = await store.list_slotmaps()
    await store.update_slotmap(slotmap.serial, {SlotmapState.NEW}, SlotmapState.ACTIVE)
    await pool_store_for(store).update_card_status(
        "B1:0", lambda s: s.set_state(CardAdminState.DISABLED)
    )
    await eventually(lambda: _equals(visible(store), [(B[1], C1)]))
    states = {m.bank: m.state for m in await store.list_slotmaps()}
    assert states[B[0]] is SlotmapState.DELETE_REQ  # its bankd is told to drop it


async def test_three_refusals_block_the_card(store: MemoryStore) -> None:
    pools = pool_store_for(store)
    await pools.put_pool(Pool(name="A", cards=(CardRef(bank=B[0]),)))
    await pools.put_group(ClientGroup(name="modems", clients=(C1,)))
    await pools.put_rule(Rule(name="r", group="modems", pools=("A",)))
    await store.register_bank(bank_record(1))
    scheduler = PoolScheduler(store, MemoryBus(), owner="core-a", poll_interval=FAST)
    await scheduler.start()
    try:
        await store.register_client(client_record(C1))
        for failures in (1, 2, 3):  # as the core records createMappingRes(cardNotPresent)
            await eventually(lambda: _equals(visible(store), [(B[0], C1)]))
            (slotmap,) = await store.list_slotmaps(visible_only=True)
            await store.update_slotmap(
                slotmap.serial, {SlotmapState.NEW}, SlotmapState.NEW, result="cardNotPresent"
            )
            await eventually(lambda n=failures: _equals(_failures(pools), n))
            await eventually(lambda s=slotmap.serial: _gone(store, s))
        status = await pools.card_status("B1:0")
        assert status is not None and status.state is CardAdminState.BLOCKED
        await asyncio.sleep(5 * FAST)
        assert await visible(store) == []  # blocked: skipped
    finally:
        await scheduler.aclose()


async def test_a_lease_ends_on_time_and_the_next_card_is_assigned(
    store: MemoryStore, scheduler: PoolScheduler
) -> None:
    await configure(store, lease=0.6)
    await store.register_client(client_record(C1))
    await eventually(lambda: _equals(visible(store), [(B[0], C1)]))
    started = time.monotonic()
    await eventually(lambda: _equals(visible(store), [(B[1], C1)]))
    assert 0.6 - 0.1 <= time.monotonic() - started <= 0.6 + 0.2
    status = await pool_store_for(store).card_status("B1:0")
    assert status is not None and 0.5 <= status.mapped_seconds <= 0.9


async def test_only_the_holder_of_the_duty_acts_and_another_takes_over(
    store: MemoryStore,
) -> None:
    await configure(store)
    shared = MemoryPoolStore()
    pools = pool_store_for(store)
    for pool in await pools.list_pools():
        await shared.put_pool(pool)
    for group in await pools.list_groups():
        await shared.put_group(group)
    for rule in await pools.list_rules():
        await shared.put_rule(rule)
    a = PoolScheduler(store, MemoryBus(), owner="a", pools=shared, poll_interval=FAST, duty_ttl=0.5)
    b = PoolScheduler(store, MemoryBus(), owner="b", pools=shared, poll_interval=FAST, duty_ttl=0.5)
    await a.start()
    await eventually(lambda: _true(a.on_duty))
    await b.start()
    try:
        await store.register_client(client_record(C1))
        await store.register_client(client_record(C2))
        await eventually(lambda: _equals(_count(store), 2))
        assert a.on_duty and not b.on_duty
        a.pools.remove_listener(a.wake)
        for task in a._tasks:  # a dies without releasing its duty
            task.cancel()
        await eventually(lambda: _true(b.on_duty), timeout=3)
        banks = [m.bank for m in await store.list_slotmaps(visible_only=True)]
        assert len(set(banks)) == 2
    finally:
        await b.aclose()


async def test_rules_leases_and_counters_survive_a_restart(tmp_path: Path) -> None:
    store = await SqliteStore.open(tmp_path)
    await configure(store, lease=3600)
    await store.register_client(client_record(C1))
    scheduler = PoolScheduler(store, MemoryBus(), owner="core-a", poll_interval=FAST)
    await scheduler.start()
    await eventually(lambda: _equals(visible(store), [(B[0], C1)]))
    await scheduler.aclose()
    before = await pool_store_for(store).list_assignments()
    await store.close()

    store = await SqliteStore.open(tmp_path)
    try:
        pools = pool_store_for(store)
        assert await pools.list_assignments() == before
        assert before[0].expires_at is not None and before[0].rule == "r"
        assert [r.name for r in await pools.list_rules()] == ["r"]
        status = await pools.card_status("B1:0")
        assert status is not None and status.maps == 1
        assert await pools.cursors() == {"r": "B1:0"}
    finally:
        await store.close()


async def test_slotmap_events_cost_no_plan_while_nothing_is_configured(
    store: MemoryStore,
) -> None:
    """A burst of maps made by hand makes an idle scheduler read nothing per event (every
    snapshot is several round trips to Redis); once something is configured, an event
    wakes it at once again."""
    bus = MemoryBus()
    scheduler = PoolScheduler(store, bus, owner="core-a", poll_interval=30)
    snapshots = 0
    snapshot = scheduler.snapshot

    async def counted() -> PoolState | None:
        nonlocal snapshots
        snapshots += 1
        return await snapshot()

    scheduler.snapshot = counted  # type: ignore[method-assign]
    await scheduler.start()
    try:
        await eventually(lambda: _true(scheduler.on_duty and snapshots == 1))
        for serial in range(1, 51):
            await bus.publish(SlotmapEvent(serial=serial, bank=B[0], client=C2))
        await asyncio.sleep(0.2)
        assert snapshots == 1
        await configure(store)  # through the pool store, whose listener wakes it
        await eventually(lambda: _true(snapshots >= 2))
        await asyncio.sleep(0.1)
        before = snapshots
        await bus.publish(SlotmapEvent(serial=51, bank=B[0], client=C2))
        await eventually(lambda: _true(snapshots > before), timeout=1)
    finally:
        await scheduler.aclose()


async def _equals(value: object, expected: object) -> bool:
    assert asyncio.iscoroutine(value)
    return bool(await value == expected)


async def _true(value: object) -> bool:
    return bool(value)


async def _failures(pools: PoolStore) -> int:
    status = await pools.card_status("B1:0")
    return 0 if status is None else status.failures


async def _gone(store: Store, serial: int) -> bool:
    return all(m.serial != serial for m in await store.list_slotmaps())


async def _count(store: Store) -> int:
    return len(await store.list_slotmaps(visible_only=True))
