"""The core on a real Redis and NATS: outages delay the control procedures but drop no
connection and lose no request; and the core's health endpoints and metrics."""

import asyncio
import contextlib
import inspect
import logging
from collections.abc import AsyncIterator, Callable
from typing import Any

import httpx
import pytest

import rspro
from remsim_control import BankSlot, ClientSlot, MemoryBus, MemoryStore, SlotmapEvent, SlotmapState
from remsim_control.backends import open_backends
from remsim_control.nats_bus import NatsBus
from remsim_server import metrics as server_metrics
from remsim_server.server import RemsimServer
from remsim_testing.rspro_peers import ScriptedConnection
from remsim_testing.server import (
    BANKD_IDENTITY,
    connect_bankd,
    connect_client,
    running_server,
    server_settings,
)
from tests.fixtures.servers import ServiceFixture

OK = rspro.ResultCode.OK
MAP = {"bank": {"bankId": 1, "slotNr": 0}, "client": {"clientId": 23, "slotNr": 0}}


@contextlib.asynccontextmanager
async def core(
    redis: ServiceFixture, nats: ServiceFixture | None = None, prefix: str = "remsim"
) -> AsyncIterator[tuple[RemsimServer, httpx.AsyncClient]]:
    """A server core on Redis (and NATS), as ``remsim-server --redis-url ...`` runs it."""
    settings = server_settings(redis_url=redis.url, nats_url=nats.url if nats else None)
    store, bus = await open_backends(settings, core_id=settings.core_id, prefix=prefix)
    try:
        async with running_server(settings, store, bus) as server:
            base_url = f"http://127.0.0.1:{server.rest_port}"
            async with httpx.AsyncClient(base_url=base_url, timeout=5) as http:
                yield server, http
    finally:
        await store.close()
        await bus.close()


async def eventually(condition: Callable[[], Any], timeout: float = 5.0) -> None:
    """Until ``condition()`` (awaited if need be) is true."""
    async with asyncio.timeout(timeout):
        while not await _value(condition()):
            await asyncio.sleep(0.02)


async def _value(result: Any) -> Any:
    return await result if inspect.isawaitable(result) else result


async def states_are(http: httpx.AsyncClient, expected: dict[int, str]) -> bool:
    response = await http.get("/api/backend/v1/slotmaps")
    listed = {m["id"]: m["state"] for m in response.json()["slotmaps"]}
    return response.status_code == 200 and listed == expected


async def metrics(http: httpx.AsyncClient) -> list[str]:
    return (await http.get("/metrics")).text.splitlines()


async def test_a_redis_outage_delays_a_bankd_answer_and_keeps_its_connection(
    own_redis_server: ServiceFixture, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, "remsim.server")
    async with core(own_redis_server) as (server, http):
        bankd = await connect_bankd(server.rspro_port)
        assert (await http.post("/api/backend/v1/slotmaps", json=MAP)).status_code == 201
        await bankd.expect(rspro.CreateMappingReq)
        with own_redis_server.down():
            bankd.send(rspro.CreateMappingRes(OK))
            await eventually(lambda: "waiting for the store" in caplog.text)
            assert (await http.get("/api/backend/v1/slotmaps")).status_code == 503
            # A bankd that connects now cannot be registered: it is closed and comes back.
            late = await ScriptedConnection.connect(server.rspro_port)
            late.send(rspro.ConnectBankReq(BANKD_IDENTITY, 2, 1))
            await late.expect_closed()
        await eventually(lambda: states_are(http, {65536: "ACTIVE"}))
        assert "the store answers again" in caplog.text
        await bankd.expect_nothing()
        banks = (await http.get("/api/backend/v1/banks")).json()["banks"]
        assert [bank["bankId"] for bank in banks] == [1]
        await bankd.aclose()


async def test_an_event_lost_while_nats_is_down_is_made_up_for(
    redis_server: ServiceFixture, own_nats_server: ServiceFixture, unique_prefix: str
) -> None:
    async with core(redis_server, own_nats_server, unique_prefix) as (server, http):
        bankd = await connect_bankd(server.rspro_port)
        client = await connect_client(server.rspro_port)
        assert (await http.post("/api/backend/v1/slotmaps", json=MAP)).status_code == 201
        await bankd.expect(rspro.CreateMappingReq)
        bus = server.bus
        assert isinstance(bus, NatsBus)
        with own_nats_server.down():
            await eventually(lambda: not bus.connected)
            bankd.send(rspro.CreateMappingRes(OK))
            await eventually(lambda: states_are(http, {65536: "ACTIVE"}))
            await client.expect_nothing(0.3)  # "it is ACTIVE" could not be announced
        config, _ = await client.expect(rspro.ConfigClientBankReq)
        assert config.bank_slot == rspro.BankSlot(1, 0)
        await bankd.expect_nothing()
        await client.aclose()
        await bankd.aclose()


async def test_a_request_lost_between_store_and_bankd_is_sent_at_the_next_sync() -> None:
    """The store moved a map to UNACKNOWLEDGED for this connection, but its answer was lost
    (Redis failed after the write): the core sends the createMappingReq when it syncs."""
    store, bus = MemoryStore(), MemoryBus()
    async with running_server(store=store, bus=bus) as server:
        bankd = await connect_bankd(server.rspro_port)
        slotmap = await store.create_slotmap(
            BankSlot(bank_id=1, slot_nr=0), ClientSlot(client_id=23, slot_nr=0)
        )
        await store.update_slotmap(slotmap.serial, {SlotmapState.NEW}, SlotmapState.UNACKNOWLEDGED)
        await bus.publish(SlotmapEvent.of(slotmap))
        await bankd.expect(rspro.CreateMappingReq)
        await bus.publish(SlotmapEvent.of(slotmap))
        await bankd.expect_nothing()  # once: now it is outstanding
        bankd.send(rspro.CreateMappingRes(OK))
        await eventually(lambda: _active(store, slotmap.id))
        await bankd.aclose()


# --- health and metrics -------------------------------------------------------------------


async def test_the_core_counts_its_connections_by_role_and_state() -> None:
    async with running_server() as server:
        base_url = f"http://127.0.0.1:{server.rest_port}"
        async with httpx.AsyncClient(base_url=base_url) as http:
            bankd = await connect_bankd(server.rspro_port)
            client = await connect_client(server.rspro_port)
            stranger = await ScriptedConnection.connect(server.rspro_port)
            unidentified = 'remsim_connections{role="unidentified",state="ESTABLISHED"} 1.0'
            await eventually(lambda: _shows(http, unidentified))
            lines = await metrics(http)
            for line in [
                'remsim_connections{role="bankd",state="CONNECTED_BANKD"} 1.0',
                'remsim_connections{role="client",state="CONNECTED_CLIENT"} 1.0',
                'remsim_connections{role="unidentified",state="ESTABLISHED"} 1.0',
            ]:
                assert line in lines
            for peer in (bankd, client, stranger):
                await peer.aclose()
            await eventually(lambda: _no_connections(http))


async def test_keepalive_timeouts_are_counted_by_peer() -> None:
    def timeouts() -> float:
        value = server_metrics.REGISTRY.get_sample_value(
            "remsim_keepalive_timeouts_total", {"link": "bankd"}
        )
        return value or 0.0

    before = timeouts()
    settings = server_settings(keepalive_interval=0.1, keepalive_timeout=0.2)
    async with running_server(settings) as server:
        bankd = await connect_bankd(server.rspro_port)
        bankd.pong = False
        await bankd.expect_closed()
        await eventually(lambda: timeouts() == before + 1)


async def _shows(http: httpx.AsyncClient, line: str) -> bool:
    return line in await metrics(http)


async def _no_connections(http: httpx.AsyncClient) -> bool:
    return not any(line.startswith("remsim_connections{") for line in await metrics(http))


async def _active(store: MemoryStore, slotmap_id: int) -> bool:
    slotmap = await store.get_slotmap(slotmap_id)
    return slotmap is not None and slotmap.state is SlotmapState.ACTIVE
