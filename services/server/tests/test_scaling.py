"""What keeps the cost of a map the same however many maps there are (issue 14): an event
makes a bankd's connection re-read the maps at its bank slot only, not all of its bank's;
the events of its own changes are not re-read at all; a request answered at once costs no
event, and a client without a bankd re-reads only for an ACTIVE map; the RSPRO connections
a file descriptor limit leaves room for; the garbage collector's settings."""

import asyncio
import gc
from collections.abc import AsyncIterator, Collection
from typing import Any

import httpx
import pytest

import rspro
from remsim_control import (
    BankSlot,
    ClientSlot,
    Event,
    MemoryBus,
    MemoryStore,
    Slotmap,
    SlotmapEvent,
    SlotmapState,
)
from remsim_server import peer
from remsim_server.limits import REST_CONNECTIONS_MAX, fd_caps
from remsim_server.main import GC_THRESHOLDS, tune_gc
from remsim_server.server import RemsimServer
from remsim_testing.server import connect_bankd, connect_client, running_server

OK = rspro.ResultCode.OK
WAIT = 5.0
"""Seconds an expected event may take (a bound, not a measurement)."""


class CountingStore(MemoryStore):
    """A memory store that records how its maps are listed."""

    def __init__(self) -> None:
        super().__init__()
        self.listed: list[dict[str, Any]] = []

    async def list_slotmaps(
        self,
        *,
        bank_id: int | None = None,
        client: ClientSlot | None = None,
        bank_slots: Collection[BankSlot] | None = None,
        visible_only: bool = False,
    ) -> list[Slotmap]:
        self.listed.append({"bank_id": bank_id, "client": client, "bank_slots": bank_slots})
        return await super().list_slotmaps(
            bank_id=bank_id, client=client, bank_slots=bank_slots, visible_only=visible_only
        )

    def bank_reads(self) -> list[dict[str, Any]]:
        return [call for call in self.listed if call["bank_id"] is not None]

    def client_reads(self) -> list[dict[str, Any]]:
        return [call for call in self.listed if call["client"] is not None]


class MuteBus(MemoryBus):
    """A memory bus that loses every event while ``muted``, and records those it carries."""

    muted = False

    def __init__(self) -> None:
        super().__init__()
        self.carried: list[Event] = []

    async def publish(self, event: Event) -> None:
        if not self.muted:
            self.carried.append(event)
            await super().publish(event)

    def states(self) -> list[SlotmapState | None]:
        """The state hints of the slotmap events carried so far."""
        return [event.state for event in self.carried if isinstance(event, SlotmapEvent)]


@pytest.fixture
async def store() -> CountingStore:
    return CountingStore()


@pytest.fixture
async def bus() -> MuteBus:
    return MuteBus()


@pytest.fixture
async def server(store: CountingStore, bus: MuteBus) -> AsyncIterator[RemsimServer]:
    async with running_server(store=store, bus=bus) as server:
        yield server


@pytest.fixture
async def rest(server: RemsimServer) -> AsyncIterator[httpx.AsyncClient]:
    base_url = f"http://127.0.0.1:{server.rest_port}/api/backend/v1"
    async with httpx.AsyncClient(base_url=base_url, timeout=5) as client:
        yield client


def body(slot: int, client: int) -> dict[str, Any]:
    return {"bank": {"bankId": 1, "slotNr": slot}, "client": {"clientId": client, "slotNr": 0}}


async def test_an_event_re_reads_its_bank_slot_only(
    server: RemsimServer, rest: httpx.AsyncClient, store: CountingStore
) -> None:
    bankd = await connect_bankd(server.rspro_port, slots=8)
    connected = len(store.bank_reads())  # the bankd's reconciliation reads all of its maps
    for slot in range(8):
        assert (await rest.post("/slotmaps", json=body(slot, 23 + slot))).status_code == 201
        request, _ = await bankd.expect(rspro.CreateMappingReq)
        assert request.bank == rspro.BankSlot(1, slot)
        bankd.send(rspro.CreateMappingRes(OK))
    reads = store.bank_reads()[connected:]
    assert reads, "the events were not acted on"
    assert all(read["bank_slots"] is not None for read in reads)  # never the whole bank
    named = {slot for read in reads for slot in read["bank_slots"]}
    assert named == {BankSlot(bank_id=1, slot_nr=slot) for slot in range(8)}
    await bankd.aclose()


async def test_a_bankd_s_own_changes_are_not_re_read(
    server: RemsimServer, rest: httpx.AsyncClient, store: CountingStore
) -> None:
    bankd = await connect_bankd(server.rspro_port)
    client = await connect_client(server.rspro_port)
    connected = len(store.bank_reads())
    await rest.post("/slotmaps", json=body(0, 23))
    await bankd.expect(rspro.CreateMappingReq)  # NEW -> UNACKNOWLEDGED, announced
    bankd.send(rspro.CreateMappingRes(OK))  # -> ACTIVE, announced
    await client.expect(rspro.ConfigClientBankReq)  # the client has acted on ACTIVE
    await bankd.expect_nothing()
    # The API's event is read; the two state changes the bankd's connection made are not.
    assert len(store.bank_reads()) - connected == 1
    # An event of the same map from elsewhere still is.
    assert (await rest.delete(f"/slotmaps/{1 << 16}")).status_code == 200
    await bankd.expect(rspro.RemoveMappingReq)
    await bankd.aclose()
    await client.aclose()


async def test_an_own_announcement_lost_on_the_way_is_expected_no_longer(
    server: RemsimServer,
    rest: httpx.AsyncClient,
    bus: MuteBus,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(peer, "ECHO_TIMEOUT", 0.2)
    bankd = await connect_bankd(server.rspro_port)
    await rest.post("/slotmaps", json=body(0, 23))
    await bankd.expect(rspro.CreateMappingReq)
    bus.muted = True  # the announcement of ACTIVE never comes back
    bankd.send(rspro.CreateMappingRes(OK))
    await bankd.expect_nothing(within=0.3)
    bus.muted = False
    # Beyond ECHO_TIMEOUT, the next event of the map is no longer taken for that one.
    assert (await rest.delete(f"/slotmaps/{1 << 16}")).status_code == 200
    await bankd.expect(rspro.RemoveMappingReq)
    await bankd.aclose()


async def test_an_old_map_s_removal_goes_out_before_the_new_map_at_its_slot(
    server: RemsimServer, rest: httpx.AsyncClient
) -> None:
    bankd = await connect_bankd(server.rspro_port)
    await rest.post("/slotmaps", json=body(0, 23))
    await bankd.expect(rspro.CreateMappingReq)
    bankd.send(rspro.CreateMappingRes(OK))
    await rest.delete(f"/slotmaps/{1 << 16}")
    await rest.post("/slotmaps", json=body(0, 24))
    removal, _ = await bankd.expect(rspro.RemoveMappingReq)
    created, _ = await bankd.expect(rspro.CreateMappingReq)
    assert removal.client == rspro.ClientSlot(23, 0)
    assert created.client == rspro.ClientSlot(24, 0)
    await bankd.aclose()


async def carried(bus: MuteBus, events: int) -> list[SlotmapState | None]:
    """The state hints of the first ``events`` slotmap events, once the bus carried them."""
    async with asyncio.timeout(WAIT):
        while len(bus.states()) < events:
            await asyncio.sleep(0.01)
    return bus.states()


async def test_a_map_answered_in_time_costs_no_event_for_its_request(
    server: RemsimServer, rest: httpx.AsyncClient, bus: MuteBus, monkeypatch: pytest.MonkeyPatch
) -> None:
    """UNACKNOWLEDGED and DELETING wait for the bankd's answer: ACTIVE and the removal stand
    for them. Each event names the map's state where the publisher knows it."""
    monkeypatch.setattr(peer, "PENDING_EVENT_DELAY", 10 * WAIT)
    bankd = await connect_bankd(server.rspro_port)
    await rest.post("/slotmaps", json=body(0, 23))
    await bankd.expect(rspro.CreateMappingReq)
    bankd.send(rspro.CreateMappingRes(OK))
    await carried(bus, 2)
    await rest.delete(f"/slotmaps/{1 << 16}")
    await bankd.expect(rspro.RemoveMappingReq)
    bankd.send(rspro.RemoveMappingRes(OK))
    # the API's creation, ACTIVE, the API's removal request, the removal
    assert await carried(bus, 4) == [SlotmapState.NEW, SlotmapState.ACTIVE, None, None]
    await bankd.aclose()


async def test_a_request_not_answered_in_time_is_announced_late(
    server: RemsimServer, rest: httpx.AsyncClient, bus: MuteBus, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(peer, "PENDING_EVENT_DELAY", 0.5)
    bankd = await connect_bankd(server.rspro_port)
    await rest.post("/slotmaps", json=body(0, 23))
    await bankd.expect(rspro.CreateMappingReq)
    assert bus.states() == [SlotmapState.NEW]
    assert await carried(bus, 2) == [SlotmapState.NEW, SlotmapState.UNACKNOWLEDGED]
    bankd.send(rspro.CreateMappingRes(OK))
    assert (await carried(bus, 3))[2] is SlotmapState.ACTIVE
    await bankd.aclose()


async def test_a_client_without_a_bankd_re_reads_only_once_its_map_is_active(
    server: RemsimServer, rest: httpx.AsyncClient, store: CountingStore
) -> None:
    bankd = await connect_bankd(server.rspro_port)
    client = await connect_client(server.rspro_port)
    before = len(store.client_reads())
    await rest.post("/slotmaps", json=body(0, 23))
    await bankd.expect(rspro.CreateMappingReq)
    await bankd.expect_nothing(within=3 * peer.CLIENT_SETTLE)  # NEW: nothing for the client
    assert len(store.client_reads()) == before
    bankd.send(rspro.CreateMappingRes(OK))
    await client.expect(rspro.ConfigClientBankReq)
    assert len(store.client_reads()) == before + 1
    await bankd.aclose()
    await client.aclose()


def test_ten_thousand_clients_fit_in_twenty_thousand_descriptors() -> None:
    rspro_connections, rest_connections = fd_caps(20_000)
    assert rspro_connections >= 10_000 + 10  # clients and their bankds' control links
    assert rest_connections == REST_CONNECTIONS_MAX
    assert fd_caps(1024) == (480, 480)  # small limits are shared half and half, as before


def test_the_server_collects_garbage_less_often_than_python_s_default() -> None:
    before = gc.get_threshold()
    try:
        tune_gc()
        assert gc.get_threshold() == GC_THRESHOLDS
        assert GC_THRESHOLDS[0] > 700 and GC_THRESHOLDS[2] > 10  # Python's: (700, 10, 10)
    finally:
        gc.unfreeze()
        gc.set_threshold(*before)
