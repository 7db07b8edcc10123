"""The Redis store's script calls made at the same time go out in one round trip (issue 14):
each keeps its own result or error, in the order called; a script Redis forgot is loaded
again; a broken link fails every call of the batch, a silent Redis in time; audit entries
added together are one script call; hiredis packs the commands. On a real redis-server."""

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import pytest
import redis.asyncio as aioredis

from remsim_control.audit import AuditEntry, AuditKind, AuditQuery
from remsim_control.errors import BackendUnavailable, SlotInUse
from remsim_control.models import BankSlot, ClientSlot, SlotmapState
from remsim_control.redis_store import RedisStore
from remsim_testing.wire_proxy import WireProxy
from tests.fixtures.servers import ServiceFixture

pytestmark = pytest.mark.integration

NEW, ACTIVE, DELETE_REQ = SlotmapState.NEW, SlotmapState.ACTIVE, SlotmapState.DELETE_REQ


def bank(slot: int) -> BankSlot:
    return BankSlot(bank_id=1, slot_nr=slot)


def client(n: int) -> ClientSlot:
    return ClientSlot(client_id=n, slot_nr=0)


class Counting(aioredis.Connection):
    """A connection that counts its round trips (writes) and the script calls it packs."""

    exchanges = 0
    evalshas = 0

    def pack_command(self, *args: Any) -> list[bytes]:
        if args[0] == "EVALSHA":
            Counting.evalshas += 1
        return super().pack_command(*args)

    async def send_packed_command(self, command: Any, check_health: bool = True) -> None:
        Counting.exchanges += 1
        await super().send_packed_command(command, check_health)


def counted(url: str) -> aioredis.Redis:
    client = aioredis.Redis.from_url(url, decode_responses=True)
    client.connection_pool.connection_class = Counting
    Counting.exchanges = Counting.evalshas = 0
    return client


@pytest.fixture
async def store(redis_server: ServiceFixture, unique_prefix: str) -> AsyncIterator[RedisStore]:
    store = RedisStore(counted(redis_server.url), prefix=unique_prefix)
    yield store
    await store.close()


async def test_concurrent_calls_share_pipelines_and_keep_their_order(store: RedisStore) -> None:
    made = await asyncio.gather(*(store.create_slotmap(bank(n), client(n)) for n in range(50)))
    assert [m.serial for m in made] == sorted(m.serial for m in made)  # in the order called
    assert [m.bank for m in made] == [bank(n) for n in range(50)]
    assert Counting.evalshas >= 50  # each call (and the first again, once the script is loaded)
    assert 2 <= Counting.exchanges < 10  # the first call alone, the rest batched
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


async def test_audit_entries_added_together_are_one_script_call_in_order(
    redis_server: ServiceFixture, unique_prefix: str
) -> None:
    store = RedisStore(counted(redis_server.url), prefix=unique_prefix)
    entries = [
        AuditEntry(
            kind=AuditKind.SLOTMAP if n % 2 else AuditKind.REST,
            actor="core-a",
            action="NEW -> UNACKNOWLEDGED",
            result="UNACKNOWLEDGED",
            time=1_700_000_000.0 + n,
            bank_id=n % 3,
            client_id=None if n % 4 else n,
        )
        for n in range(20)
    ]
    first = await store.add_audit(entries[0])  # and Redis has the script
    Counting.evalshas = 0
    added = await asyncio.gather(*(store.add_audit(entry) for entry in entries))
    assert Counting.evalshas == 1
    assert [entry.seq for entry in added] == list(range(2, 22))
    assert [entry.model_copy(update={"seq": 0}) for entry in added] == entries
    assert await store.list_audit(AuditQuery(after=first.seq)) == added
    assert await store.list_audit(AuditQuery(bank_id=1)) == added[1::3]
    assert await store.list_audit(AuditQuery(client_id=4)) == [added[4]]
    assert await store.list_audit(AuditQuery(kind=AuditKind.SLOTMAP)) == added[1::2]
    await store.close()


@pytest.mark.parametrize(
    "command",
    [
        ("EVALSHA", "f" * 40, 2, "{remsim}:a", "{remsim}:b", "é", 7, 1.5, b"raw"),
        ("SCRIPT LOAD", "return 1"),
        (b"CLIENT SETNAME", "core-a"),
    ],
)
def test_commands_are_packed_by_hiredis_as_redis_py_packs_them(command: tuple[Any, ...]) -> None:
    store = RedisStore.from_url("redis://127.0.0.1:9/0")
    pool = store._redis.connection_pool
    packing = pool.connection_class(**pool.connection_kwargs)
    assert type(packing).__name__.startswith("Hiredis")
    assert b"".join(packing.pack_command(*command)) == b"".join(
        aioredis.Connection().pack_command(*command)
    )


async def test_a_redis_that_does_not_answer_fails_the_calls_in_time(unique_prefix: str) -> None:
    """The script calls' client has no socket timeout: each exchange has its own."""
    silent = await asyncio.start_server(lambda r, w: None, "127.0.0.1", 0)  # never answers
    port = silent.sockets[0].getsockname()[1]
    store = RedisStore.from_url(f"redis://127.0.0.1:{port}/0", prefix=unique_prefix, timeout=0.2)
    loop = asyncio.get_running_loop()
    started = loop.time()
    outcomes = await asyncio.gather(
        *(store.create_slotmap(bank(n), client(n)) for n in range(3)), return_exceptions=True
    )
    assert all(isinstance(outcome, BackendUnavailable) for outcome in outcomes)
    assert loop.time() - started < 3 * 0.2 + 2.0  # three attempts, and the backoff
    await store.close()
    silent.close()


async def test_a_late_answer_fails_its_calls_and_never_runs_them_twice(
    redis_server: ServiceFixture, unique_prefix: str
) -> None:
    """Once a batch is written its scripts may have run: an answer later than the timeout
    fails the calls (BackendUnavailable) and they are not sent again, so an audit entry is
    not added twice (nor a map created and then refused as "slot in use")."""
    host, port = redis_server.url.removeprefix("redis://").split("/")[0].split(":")
    entry = AuditEntry(
        kind=AuditKind.REST, actor="api", action="POST /slotmaps", result="201", time=1.0
    )
    with WireProxy((host, int(port))) as slow:
        store = RedisStore.from_url(
            f"redis://127.0.0.1:{slow.port}/0", prefix=unique_prefix, timeout=0.5
        )
        try:
            await store.add_audit(entry)  # connected, the script loaded
            slow.delays["down"] = 0.8  # the script runs at once, its answer comes at 0.8 s
            # and after the timeout (0.5 s) answers are quick again: a retry would succeed
            asyncio.get_running_loop().call_later(0.6, slow.delays.update, {"down": 0.0})
            with pytest.raises(BackendUnavailable):
                await store.add_audit(entry)
            await asyncio.sleep(1.0)  # a call sent again would have run by now
        finally:
            await store.close()
    direct = RedisStore.from_url(redis_server.url, prefix=unique_prefix)
    try:
        assert [e.seq for e in await direct.list_audit(AuditQuery())] == [1, 2]  # once each
    finally:
        await direct.close()
