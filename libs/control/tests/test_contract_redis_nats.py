"""The Redis store and the NATS bus: the same contract as the in-memory ones, on a real
redis-server and nats-server, plus what only a distributed backend has (leases of dead
cores, outages, per-core subjects)."""

import asyncio
from collections.abc import AsyncIterator
from dataclasses import dataclass

import pytest

from remsim_control import MemoryBus, MemoryStore, ResetEvent, SlotmapEvent, SlotmapState
from remsim_control.audit import AuditQuery
from remsim_control.backends import (
    BackendUnavailable,
    backends_ready,
    open_backends,
    require_ready,
)
from remsim_control.bus import STATE_HEADER, Bus, Event, encode_event
from remsim_control.errors import IdentityInUse, SlotInUse
from remsim_control.nats_bus import NatsBus
from remsim_control.redis_store import RedisStore
from remsim_control.store import Store
from remsim_testing.store_contract import (
    B1_0,
    C23_0,
    T0,
    AuditContract,
    BusContract,
    OpenStore,
    RestartContract,
    StoreContract,
    audit_entry,
    bank_record,
    client_record,
    reopening,
)
from tests.fixtures.servers import ServiceFixture

pytestmark = pytest.mark.integration


class TestRedisStore(StoreContract):
    @pytest.fixture
    async def store(self, redis_server: ServiceFixture, unique_prefix: str) -> AsyncIterator[Store]:
        store = RedisStore.from_url(redis_server.url, prefix=unique_prefix)
        yield store
        await store.close()


class TestRedisAuditInSmallBatches(AuditContract):
    """Listing and pruning in several script calls, as on a long log."""

    @pytest.fixture
    async def store(self, redis_server: ServiceFixture, unique_prefix: str) -> AsyncIterator[Store]:
        store = RedisStore.from_url(redis_server.url, prefix=unique_prefix)
        store.audit_scan_batch = 2
        yield store
        await store.close()


class TestRedisRestart(RestartContract):
    """A core's clean restart: its leases end, so its registry records go with it."""

    @pytest.fixture
    async def open_store(
        self, redis_server: ServiceFixture, unique_prefix: str
    ) -> AsyncIterator[OpenStore]:
        async def open_one() -> Store:
            return RedisStore.from_url(redis_server.url, prefix=unique_prefix)

        async with reopening(open_one) as open_store:
            yield open_store


async def test_audit_entries_with_a_clock_behind_are_found_and_kept_long_enough(
    redis_server: ServiceFixture, unique_prefix: str
) -> None:
    """Two cores whose clocks differ: an entry appended after one with a later time."""
    store = RedisStore.from_url(redis_server.url, prefix=unique_prefix)
    try:
        ahead = await store.add_audit(audit_entry(time=T0 + 10))
        behind = await store.add_audit(audit_entry(time=T0))
        assert await store.list_audit(AuditQuery(since=T0 + 5)) == [ahead]
        assert await store.list_audit(AuditQuery(since=T0)) == [ahead, behind]
        # Pruned only once the retention has passed the later clock too.
        assert await store.prune_audit(T0 + 5) == 0
        assert await store.prune_audit(T0 + 11) == 2
        assert await store.list_audit(AuditQuery()) == []
    finally:
        await store.close()


class TestNatsBus(BusContract):
    @pytest.fixture
    async def bus(self, nats_server: ServiceFixture, unique_prefix: str) -> AsyncIterator[Bus]:
        bus = await NatsBus.connect(nats_server.url, prefix=unique_prefix)
        yield bus
        await bus.close()


async def _next(events: AsyncIterator[Event], timeout: float = 5.0) -> Event:
    async with asyncio.timeout(timeout):
        return await anext(events)


# --- two processes sharing one Redis ---------------------------------------------------


@pytest.fixture
async def two_stores(
    redis_server: ServiceFixture, unique_prefix: str
) -> AsyncIterator[tuple[RedisStore, RedisStore]]:
    """Core A's and core B's stores, leases of 0.3 s."""
    a = RedisStore.from_url(redis_server.url, prefix=unique_prefix, lease_ttl=0.3)
    b = RedisStore.from_url(redis_server.url, prefix=unique_prefix, lease_ttl=0.3)
    yield a, b
    await a.close()
    await b.close()


async def test_cores_share_slotmaps_and_slot_uniqueness(
    two_stores: tuple[RedisStore, RedisStore],
) -> None:
    a, b = two_stores
    slotmap = await a.create_slotmap(B1_0, C23_0)
    assert await b.get_slotmap(slotmap.id) == slotmap
    with pytest.raises(SlotInUse):
        await b.create_slotmap(B1_0, C23_0)


async def test_registry_entries_of_a_dead_core_expire(
    two_stores: tuple[RedisStore, RedisStore],
) -> None:
    a, b = two_stores
    await a.register_bank(bank_record(1, core="core-a"))
    await a.register_client(client_record(C23_0, core="core-a"))
    with pytest.raises(IdentityInUse):
        await b.register_bank(bank_record(1, core="core-b"))
    # core A dies: its lease is no longer refreshed (and not released either)
    a._stopping.set()
    a._held.clear()
    await asyncio.sleep(0.45)
    assert await b.list_banks() == []
    assert await b.get_client(C23_0) is None
    await b.register_bank(bank_record(1, core="core-b"))
    assert await b.get_bank(1) == bank_record(1, core="core-b")


async def test_a_live_core_keeps_its_entries_past_the_lease_ttl(
    two_stores: tuple[RedisStore, RedisStore],
) -> None:
    a, b = two_stores
    await a.register_bank(bank_record(1, core="core-a"))
    await asyncio.sleep(0.8)
    assert await b.list_banks() == [bank_record(1, core="core-a")]


async def test_a_lapsed_lease_is_renewed_with_the_records_still_held(
    two_stores: tuple[RedisStore, RedisStore],
) -> None:
    a, b = two_stores
    a._stopping.set()  # no refresher: refresh by hand below
    a.lease_ttl = 30.0
    await a.register_bank(bank_record(1, core="core-a"))
    await a.register_bank(bank_record(2, core="core-a"))
    await a.unregister_bank(bank_record(2, core="core-a"))
    await a._redis.delete(a._k_lease + "core-a")  # as if Redis had been away past the TTL
    assert await b.list_banks() == []
    await a.refresh_leases()
    assert await b.list_banks() == [bank_record(1, core="core-a")]


async def test_a_lapsed_lease_does_not_take_back_an_identity_another_core_took(
    two_stores: tuple[RedisStore, RedisStore],
) -> None:
    a, b = two_stores
    a._stopping.set()
    a.lease_ttl = 30.0
    await a.register_bank(bank_record(1, core="core-a"))
    await a._redis.delete(a._k_lease + "core-a")
    await b.register_bank(bank_record(1, core="core-b"))
    await a.refresh_leases()
    assert await b.list_banks() == [bank_record(1, core="core-b")]


async def test_a_clean_close_ends_the_lease_at_once(
    redis_server: ServiceFixture, unique_prefix: str
) -> None:
    a = RedisStore.from_url(redis_server.url, prefix=unique_prefix, lease_ttl=30)
    b = RedisStore.from_url(redis_server.url, prefix=unique_prefix, lease_ttl=30)
    try:
        await a.register_bank(bank_record(1, core="core-a"))
        await a.close()
        await b.register_bank(bank_record(1, core="core-b"))
    finally:
        await b.close()


async def test_a_restarted_core_with_the_same_id_drops_its_predecessor_s_entries(
    two_stores: tuple[RedisStore, RedisStore],
) -> None:
    a, b = two_stores
    await a.register_bank(bank_record(1, core="core-a"))
    await a.register_client(client_record(C23_0, core="core-a"))
    await b.register_bank(bank_record(2, core="core-b"))
    # core-a restarts (same host name and pid, as in a container) before its lease expired
    assert await b.claim_core("core-a") == 2
    assert await b.list_banks() == [bank_record(2, core="core-b")]
    assert await b.list_clients() == []
    await b.register_bank(bank_record(1, core="core-a"))


async def test_racing_cores_create_one_map_per_slot(
    two_stores: tuple[RedisStore, RedisStore],
) -> None:
    a, b = two_stores
    outcomes = await asyncio.gather(
        *(
            store.create_slotmap(B1_0.model_copy(update={"slot_nr": n % 4}), C23_0)
            for n in range(16)
            for store in (a, b)
        ),
        return_exceptions=True,
    )
    assert sum(not isinstance(o, SlotInUse) for o in outcomes) == 1
    assert len(await b.list_slotmaps()) == 1


# --- outages -----------------------------------------------------------------------------


async def test_redis_down_is_backend_unavailable_and_data_survive(
    own_redis_server: ServiceFixture,
) -> None:
    recovered = asyncio.Event()

    async def on_recovered() -> None:
        recovered.set()

    store = RedisStore.from_url(
        own_redis_server.url, lease_ttl=0.3, timeout=0.5, on_recovered=on_recovered
    )
    try:
        slotmap = await store.create_slotmap(B1_0, C23_0)
        await store.register_bank(bank_record(1))
        with own_redis_server.down():
            assert not await store.ping()
            with pytest.raises(BackendUnavailable):
                await store.list_slotmaps()
            with pytest.raises(BackendUnavailable):
                await store.create_slotmap(B1_0.model_copy(update={"slot_nr": 1}), C23_0)
            await asyncio.sleep(0.5)  # the lease lapses meanwhile
        assert await store.ping()
        assert await store.list_slotmaps() == [slotmap]
        async with asyncio.timeout(5):
            await recovered.wait()
        assert await store.list_banks() == [bank_record(1)]
    finally:
        await store.close()


async def test_an_unregistration_during_an_outage_is_carried_out_afterwards(
    own_redis_server: ServiceFixture,
) -> None:
    store = RedisStore.from_url(own_redis_server.url, lease_ttl=0.3, timeout=0.5)
    try:
        await store.register_bank(bank_record(1))
        with own_redis_server.down(), pytest.raises(BackendUnavailable):
            await store.unregister_bank(bank_record(1))
        async with asyncio.timeout(5):
            while await store.list_banks():
                await asyncio.sleep(0.05)
        await store.register_bank(bank_record(1, remote="127.0.0.1:2"))
    finally:
        await store.close()


async def test_nats_down_refuses_publishing_then_resets_subscribers(
    own_nats_server: ServiceFixture,
) -> None:
    bus = await NatsBus.connect(own_nats_server.url, reconnect_wait=0.1)
    try:
        async with bus.subscribe() as events:
            own_nats_server.stop()
            async with asyncio.timeout(5):
                while bus.connected:
                    await asyncio.sleep(0.02)
            assert not await bus.ping()
            with pytest.raises(BackendUnavailable):
                await bus.publish(SlotmapEvent(serial=2, bank=B1_0, client=C23_0))
            own_nats_server.start()
            assert await _next(events) == ResetEvent()  # to this process's subscribers
            assert await _next(events) == ResetEvent()  # to everyone: a publication was lost
            event = SlotmapEvent(serial=3, bank=B1_0, client=C23_0)
            await bus.publish(event)
            assert await _next(events) == event
    finally:
        await bus.close()


async def test_a_process_s_subscribers_share_one_nats_subscription(
    nats_server: ServiceFixture, unique_prefix: str
) -> None:
    """NATS sends each event to a process once (a core has two subscribers), each subscriber
    still gets it, and the last one to leave ends the subscription."""
    bus = await NatsBus.connect(nats_server.url, prefix=unique_prefix)
    event = SlotmapEvent(serial=4, bank=B1_0, client=C23_0)
    try:
        async with bus.subscribe() as first, bus.subscribe() as second:
            assert len(bus._nc._subs) == 1
            await bus.publish(event)
            assert await _next(first) == event
            assert await _next(second) == event
        assert bus._nc._subs == {}
        async with bus.subscribe() as again:
            await bus.publish(event)
            assert await _next(again) == event
    finally:
        await bus.close()


class Partition:
    """A TCP relay to a server that the test can cut (connections closed, new ones refused)
    and mend: one process losing NATS while the others keep it."""

    def __init__(self, host: str, port: int) -> None:
        self.target = (host, port)
        self.port = 0
        self._server: asyncio.Server | None = None
        self._writers: set[asyncio.StreamWriter] = set()

    async def mend(self) -> None:
        self._server = await asyncio.start_server(self._relay, "127.0.0.1", self.port)
        self.port = self._server.sockets[0].getsockname()[1]

    async def cut(self) -> None:
        assert self._server is not None
        self._server.close()
        for writer in self._writers:
            writer.transport.abort()
        await self._server.wait_closed()

    async def _relay(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        up_reader, up_writer = await asyncio.open_connection(*self.target)
        self._writers |= {writer, up_writer}

        async def pipe(src: asyncio.StreamReader, dst: asyncio.StreamWriter) -> None:
            try:
                while data := await src.read(65536):
                    dst.write(data)
                    await dst.drain()
            except ConnectionError:
                pass
            finally:
                dst.transport.abort()

        await asyncio.gather(pipe(reader, up_writer), pipe(up_reader, writer))


async def test_a_slotmap_event_s_state_hint_travels_beside_its_json(
    nats_server: ServiceFixture, unique_prefix: str
) -> None:
    """In a header: the JSON stays what a process that does not know the hint reads, and
    an event without the header has no hint."""
    bus = await NatsBus.connect(nats_server.url, prefix=unique_prefix)
    hinted = SlotmapEvent(serial=5, bank=B1_0, client=C23_0, state=SlotmapState.ACTIVE)
    try:
        async with bus.subscribe() as events:
            raw = await bus._nc.subscribe(bus.events_subject)
            await bus.publish(hinted)
            assert await _next(events) == hinted
            message = await raw.next_msg(timeout=5)
            assert message.data == encode_event(SlotmapEvent(serial=5, bank=B1_0, client=C23_0))
            assert message.headers == {STATE_HEADER: "ACTIVE"}
            await bus._nc.publish(bus.events_subject, message.data)  # as an older process
            plain = await _next(events)
            assert isinstance(plain, SlotmapEvent) and plain.state is None
            await bus._nc.publish(bus.events_subject, message.data, headers={STATE_HEADER: "?"})
            assert await _next(events) == plain  # an unknown hint is none
            await raw.unsubscribe()
    finally:
        await bus.close()


async def test_a_publication_refused_in_a_partition_is_made_up_for_by_a_reset(
    nats_server: ServiceFixture, unique_prefix: str
) -> None:
    partition = Partition(nats_server.host, nats_server.port)
    await partition.mend()
    api = await NatsBus.connect(
        f"nats://127.0.0.1:{partition.port}", prefix=unique_prefix, reconnect_wait=0.1
    )
    core = await NatsBus.connect(nats_server.url, prefix=unique_prefix, core_id="core-a")
    try:
        async with core.subscribe() as events:
            await partition.cut()
            async with asyncio.timeout(5):
                while api.connected:
                    await asyncio.sleep(0.02)
            with pytest.raises(BackendUnavailable):
                await api.publish(SlotmapEvent(serial=1, bank=B1_0, client=C23_0))
            await partition.mend()
            # The core never lost NATS: this reset is the API's, once it is back.
            assert await _next(events) == ResetEvent()
    finally:
        await api.close()
        await core.close()


async def test_changes_are_refused_while_a_backend_is_down(
    own_nats_server: ServiceFixture, redis_server: ServiceFixture, unique_prefix: str
) -> None:
    settings = Settings(redis_url=redis_server.url, nats_url=own_nats_server.url)
    store, bus = await open_backends(settings, prefix=unique_prefix)
    try:
        await require_ready(store, bus)
        with own_nats_server.down():
            with pytest.raises(BackendUnavailable, match="bus"):
                await require_ready(store, bus)
            assert await backends_ready(store, bus) == {"store": True, "bus": False}
    finally:
        await store.close()
        await bus.close()


async def test_nats_unreachable_at_connect(unique_prefix: str) -> None:
    from tests.system import free_port

    with pytest.raises(BackendUnavailable):
        await NatsBus.connect(f"nats://127.0.0.1:{free_port()}", connect_timeout=0.5)


# --- choosing the backends ---------------------------------------------------------------


@dataclass(frozen=True)
class Settings:
    state_dir: None = None
    redis_url: str | None = None
    nats_url: str | None = None
    lease_ttl: float = 5.0


async def test_no_urls_mean_everything_in_memory() -> None:
    store, bus = await open_backends(Settings())
    assert isinstance(store, MemoryStore) and isinstance(bus, MemoryBus)
    assert await backends_ready(store, bus) == {"store": True, "bus": True}


async def test_redis_alone_keeps_state_with_a_local_bus(redis_server: ServiceFixture) -> None:
    store, bus = await open_backends(Settings(redis_url=redis_server.url), core_id="core-x")
    try:
        assert isinstance(store, RedisStore) and isinstance(bus, MemoryBus)
    finally:
        await store.close()
        await bus.close()


async def test_nats_without_redis_is_refused(nats_server: ServiceFixture) -> None:
    with pytest.raises(ValueError, match="REDIS"):
        await open_backends(Settings(nats_url=nats_server.url))


async def test_both_urls_select_redis_and_nats_and_hold_the_core_lease(
    redis_server: ServiceFixture, nats_server: ServiceFixture, unique_prefix: str
) -> None:
    settings = Settings(redis_url=redis_server.url, nats_url=nats_server.url, lease_ttl=0.3)
    store, bus = await open_backends(settings, core_id="core-x", prefix=unique_prefix)
    other, other_bus = await open_backends(settings, prefix=unique_prefix)
    try:
        assert isinstance(store, RedisStore) and isinstance(bus, NatsBus)
        assert isinstance(other_bus, NatsBus)
        assert await backends_ready(store, bus) == {"store": True, "bus": True}
        await store.register_bank(bank_record(1, core="core-x"))
        await asyncio.sleep(0.5)
        assert await other.get_bank(1) == bank_record(1, core="core-x")
        async with bus.subscribe() as events:
            await other_bus.publish(ResetEvent())
            assert await _next(events) == ResetEvent()
    finally:
        for closable in (store, bus, other, other_bus):
            await closable.close()


async def test_redis_recovery_is_announced_as_a_reset(
    own_redis_server: ServiceFixture, nats_server: ServiceFixture, unique_prefix: str
) -> None:
    settings = Settings(redis_url=own_redis_server.url, nats_url=nats_server.url, lease_ttl=0.3)
    store, bus = await open_backends(settings, core_id="core-x", prefix=unique_prefix)
    try:
        async with bus.subscribe() as events:
            with own_redis_server.down():
                await asyncio.sleep(0.3)
            assert await _next(events) == ResetEvent()
    finally:
        await store.close()
        await bus.close()
