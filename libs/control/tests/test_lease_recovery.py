"""A core whose lease lapsed (a Redis partition longer than the TTL) while its bankd
registered on another core: the late cleanup of the old connection leaves the new one's maps
and client configuration alone; and maps of banks whose core died are freed."""

import asyncio
from collections.abc import AsyncIterator

import pytest

from remsim_control.models import BankdAddress, ClientConfig, SlotmapState
from remsim_control.redis_store import RedisStore
from remsim_testing.store_contract import B1_0, B1_1, C23_0, C24_0, bank_record, client_record
from tests.fixtures.servers import ServiceFixture

pytestmark = pytest.mark.integration

NEW, ACTIVE, DELETE_REQ = SlotmapState.NEW, SlotmapState.ACTIVE, SlotmapState.DELETE_REQ


@pytest.fixture
async def cores(
    redis_server: ServiceFixture, unique_prefix: str
) -> AsyncIterator[tuple[RedisStore, RedisStore]]:
    a = RedisStore.from_url(redis_server.url, prefix=unique_prefix, lease_ttl=30)
    b = RedisStore.from_url(redis_server.url, prefix=unique_prefix, lease_ttl=30)
    a._stopping.set()  # core A's lease is refreshed by hand only: it can lapse
    yield a, b
    await a.close()
    await b.close()


async def test_a_late_cleanup_after_a_lapsed_lease_leaves_the_new_owner_s_maps(
    cores: tuple[RedisStore, RedisStore],
) -> None:
    a, b = cores
    slotmap = await a.create_slotmap(B1_0, C23_0)
    on_a, on_b = bank_record(1, core="core-a"), bank_record(1, core="core-b")
    await a.register_bank(on_a)
    await a.update_slotmap(slotmap.serial, {NEW}, ACTIVE)
    await a._redis.delete(a._k_lease + "core-a")  # partitioned past the TTL
    await b.register_bank(on_b)  # the bankd reconnected to core B, which holds the map

    assert await a.release_bank(on_a) is None  # core A's late cleanup
    assert not await a.unregister_bank(on_a)
    assert [m.state for m in await b.list_slotmaps()] == [ACTIVE]
    assert await b.get_bank(1) == on_b


async def test_a_late_cleanup_leaves_the_new_owner_s_client_config(
    cores: tuple[RedisStore, RedisStore],
) -> None:
    a, b = cores
    config = ClientConfig(bank=B1_0, bankd=BankdAddress(host="127.0.0.1", port=9999))
    on_a, on_b = client_record(C23_0, core="core-a"), client_record(C23_0, core="core-b")
    await a.register_client(on_a)
    await a._redis.delete(a._k_lease + "core-a")
    await b.register_client(on_b)
    await b.set_client_config(C23_0, config)
    assert not await a.forget_client_config(on_a)
    assert await b.get_client_config(C23_0) == config


async def test_maps_of_a_dead_core_s_bank_are_released_once_its_lease_lapses(
    redis_server: ServiceFixture, unique_prefix: str
) -> None:
    a = RedisStore.from_url(redis_server.url, prefix=unique_prefix, lease_ttl=0.3)
    b = RedisStore.from_url(redis_server.url, prefix=unique_prefix, lease_ttl=30)
    try:
        slotmap = await a.create_slotmap(B1_0, C23_0)
        await a.register_bank(bank_record(1, core="core-a"))
        active = await a.update_slotmap(slotmap.serial, {NEW}, ACTIVE)
        deleted = await a.create_slotmap(B1_1, C24_0)
        await a.update_slotmap(deleted.serial, {NEW}, ACTIVE)
        await a.request_removal(deleted.id)
        assert await b.release_orphans() == []  # core A lives
        # core A dies: its lease is no longer refreshed
        a._stopping.set()
        a._held.clear()
        await asyncio.sleep(0.45)
        released = await b.release_orphans()
        assert released[0] == active
        assert [(m.serial, m.state) for m in released[1:]] == [(deleted.serial, DELETE_REQ)]
        assert [(m.serial, m.state) for m in await b.list_slotmaps()] == [(slotmap.serial, NEW)]
    finally:
        await a.close()
        await b.close()
