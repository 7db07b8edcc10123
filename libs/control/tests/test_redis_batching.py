"""The Redis store's script calls made at the same time go out as one pipeline (issue 14):
each keeps its own result or error, in the order called; a script Redis forgot is loaded
again; a broken link fails every call of the batch. On a real redis-server."""

import asyncio
from collections.abc import AsyncIterator

import pytest
import redis.asyncio as aioredis

from remsim_control.errors import BackendUnavailable, SlotInUse
from remsim_control.models import BankSlot, ClientSlot, SlotmapState
from remsim_control.redis_store import RedisStore
from tests.fixtures.servers import ServiceFixture

pytestmark = pytest.mark.integration

NEW, ACTIVE, DELETE_REQ = SlotmapState.NEW, SlotmapState.ACTIVE, SlotmapState.DELETE_REQ


def bank(slot: int) -> BankSlot:
    return BankSlot(bank_id=1, slot_nr=slot)


def client(n: int) -> ClientSlot:
    return ClientSlot(client_id=n, slot_nr=0)


class CountingPipelines(aioredis.Redis):
    """A client that counts the pipelines it executes."""

    pipelines = 0

    def pipeline(self, transaction: bool = True, shard_hint: object = None) -> object:  # type: ignore[override]
        CountingPipelines.pipelines += 1
        return super().pipeline(transaction=transaction, shard_hint=shard_hint)  # type: ignore[arg-type]


@pytest.fixture
async def store(redis_server: ServiceFixture, unique_prefix: str) -> AsyncIterator[RedisStore]:
    CountingPipelines.pipelines = 0
    client_ = CountingPipelines.from_url(redis_server.url, decode_responses=True)
    store = RedisStore(client_, prefix=unique_prefix)
    yield store
    await store.close()


async def test_concurrent_calls_share_pipelines_and_keep_their_order(store: RedisStore) -> None:
    made = await asyncio.gather(*(store.create_slotmap(bank(n), client(n)) for n in range(50)))
    assert [m.serial for m in made] == sorted(m.serial for m in made)  # in the order called
    assert [m.bank for m in made] == [bank(n) for n in range(50)]
    assert 1 <= CountingPipelines.pipelines < 50  # the first call alone, the rest batched
    assert len(await store.list_slotmaps()) == 50


async def test_each_call_of_a_batch_keeps_its_own_outcome(store: RedisStore) -> None:
    first = await store.create_slotmap(bank(0), client(0))
    hidden = await store.create_slotmap(bank(1), client(1))
    await store.update_slotmap(hidden.serial, {NEW}, ACTIVE)
    await store.request_removal(hidden.id)
    outcomes = await asyncio.gather(
        store.create_slotmap(bank(0), client(5)),  # the slot is in use
        store.update_slotmap(hidden.serial, {DELETE_REQ}, NEW),  # hidden: not visible again
        store.update_slotmap(first.serial, {NEW}, ACTIVE),
        store.create_slotmap(bank(2), client(2)),
        return_exceptions=True,
    )
    assert isinstance(outcomes[0], SlotInUse) and outcomes[0].existing == first
    assert isinstance(outcomes[1], ValueError)
    assert getattr(outcomes[2], "state", None) is ACTIVE
    assert getattr(outcomes[3], "bank", None) == bank(2)


async def test_a_script_that_redis_forgot_is_loaded_again(
    store: RedisStore, redis_server: ServiceFixture
) -> None:
    await store.create_slotmap(bank(0), client(0))
    async with aioredis.Redis.from_url(redis_server.url) as admin:
        await admin.script_flush()
    made = await asyncio.gather(*(store.create_slotmap(bank(n), client(n)) for n in range(1, 6)))
    assert [m.bank for m in made] == [bank(n) for n in range(1, 6)]


async def test_a_broken_link_fails_every_call_of_the_batch(unique_prefix: str) -> None:
    store = RedisStore.from_url("redis://127.0.0.1:9/0", prefix=unique_prefix, timeout=0.5)
    outcomes = await asyncio.gather(
        *(store.create_slotmap(bank(n), client(n)) for n in range(5)), return_exceptions=True
    )
    assert all(isinstance(outcome, BackendUnavailable) for outcome in outcomes)
    await store.close()
