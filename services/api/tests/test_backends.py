"""The API on a real Redis and NATS: while either is down, changes are refused with 503 and
a problem body, nothing is written, and /readyz says which one is missing."""

import asyncio
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import httpx
import pytest

from remsim_api.app import create_app
from remsim_api.settings import ApiSettings
from remsim_control import BankSlot, Bus, ClientSlot, SlotmapState, Store
from remsim_control.backends import open_backends
from remsim_control.nats_bus import NatsBus
from tests.fixtures.servers import ServiceFixture

pytestmark = pytest.mark.integration

MAP = {"bank": {"bankId": 1, "slotNr": 0}, "client": {"clientId": 23, "slotNr": 0}}


@dataclass
class Api:
    http: httpx.AsyncClient
    store: Store
    bus: Bus

    async def get(self, path: str) -> httpx.Response:
        return await self.http.get(path)

    async def changes(self) -> list[httpx.Response]:
        """One of each change: create, delete, global reset."""
        return [
            await self.http.post("/api/backend/v1/slotmaps", json=MAP),
            await self.http.delete("/api/backend/v1/slotmaps/65536"),
            await self.http.post("/api/backend/v1/global-reset"),
        ]


@pytest.fixture
async def api(
    own_redis_server: ServiceFixture, own_nats_server: ServiceFixture
) -> AsyncIterator[Api]:
    settings = ApiSettings(redis_url=own_redis_server.url, nats_url=own_nats_server.url)
    store, bus = await open_backends(settings)
    transport = httpx.ASGITransport(app=create_app(store, bus))
    async with httpx.AsyncClient(transport=transport, base_url="http://remsim") as http:
        yield Api(http, store, bus)
    await store.close()
    await bus.close()


def assert_unavailable(response: httpx.Response) -> dict[str, Any]:
    assert response.status_code == 503, response.text
    assert response.headers["content-type"] == "application/problem+json"
    problem: dict[str, Any] = response.json()
    assert (problem["status"], problem["title"]) == (503, "Service Unavailable")
    return problem


async def test_with_both_up_the_api_is_ready_and_changes_are_made(api: Api) -> None:
    ready = await api.get("/readyz")
    assert (ready.status_code, ready.json()) == (200, {"store": True, "bus": True})
    assert (await api.http.post("/api/backend/v1/slotmaps", json=MAP)).status_code == 201
    [slotmap] = await api.store.list_slotmaps()
    assert slotmap.bank == BankSlot(bank_id=1, slot_nr=0)


async def test_nats_down_refuses_changes_but_serves_reads(
    api: Api, own_nats_server: ServiceFixture
) -> None:
    await api.store.create_slotmap(
        BankSlot(bank_id=2, slot_nr=0), ClientSlot(client_id=24, slot_nr=0)
    )
    with own_nats_server.down():
        assert isinstance(api.bus, NatsBus)
        async with asyncio.timeout(5):
            while api.bus.connected:
                await asyncio.sleep(0.02)
        for response in await api.changes():
            assert "bus unreachable" in assert_unavailable(response)["detail"]
        assert len((await api.get("/api/backend/v1/slotmaps")).json()["slotmaps"]) == 1
        ready = await api.get("/readyz")
        assert (ready.status_code, ready.json()) == (503, {"store": True, "bus": False})
        assert (await api.get("/healthz")).status_code == 200
    assert [m.state for m in await api.store.list_slotmaps()] == [SlotmapState.NEW]
    async with asyncio.timeout(5):
        while (await api.get("/readyz")).status_code != 200:
            await asyncio.sleep(0.05)
    assert (await api.http.post("/api/backend/v1/slotmaps", json=MAP)).status_code == 201


async def test_redis_down_refuses_reads_and_changes(
    api: Api, own_redis_server: ServiceFixture
) -> None:
    with own_redis_server.down():
        for response in await api.changes():
            assert "store unreachable" in assert_unavailable(response)["detail"]
        assert_unavailable(await api.get("/api/backend/v1/slotmaps"))
        assert_unavailable(await api.get("/api/backend/v1/banks"))
        ready = await api.get("/readyz")
        assert (ready.status_code, ready.json()) == (503, {"store": False, "bus": True})
        assert (await api.get("/metrics")).status_code == 200
    assert await api.store.list_slotmaps() == []
    assert (await api.http.post("/api/backend/v1/slotmaps", json=MAP)).status_code == 201
