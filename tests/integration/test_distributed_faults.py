"""Distributed mode under harder faults: a crashed core whose bankd never comes back, and
every core killed at once. Real redis-server, nats-server and remsim processes; leases of
1 s, a resync every 0.5 s."""

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

import rspro
from tests.fixtures.servers import (
    ServiceFixture,
    sim_atr,
)
from tests.integration.test_distributed import (
    B1_0,
    B1_1,
    C23_0,
    C24_0,
    Cluster,
    all_active,
    creates_per_slot,
    eventually,
    running_cluster,
)

pytestmark = [pytest.mark.integration, pytest.mark.slow]


@pytest.fixture
async def cluster(
    own_redis_server: ServiceFixture, own_nats_server: ServiceFixture, tmp_path: Path
) -> AsyncIterator[Cluster]:
    resync = {"REMSIM_RESYNC_INTERVAL": "0.5"}
    async with running_cluster(own_redis_server, own_nats_server, tmp_path, **resync) as cluster:
        yield cluster


async def test_maps_of_a_crashed_core_s_bankd_that_never_returns_are_released(
    cluster: Cluster,
) -> None:
    bankd = await cluster.bankd(1, 2, 0)  # knows core A only: it does not come back
    client = await cluster.client(C23_0, 1)
    await eventually(lambda: bankd.server and client.server, what="peers connected")
    assert (await cluster.map(B1_0, C23_0)).status_code == 201
    await eventually(lambda: client.atr == sim_atr(B1_0), what="the client's ATR")

    cluster.cores[0].kill()
    await bankd.aclose()
    cluster.peers.remove(bankd)
    # Once core A's lease lapsed, core B frees the map for the bankd's return.
    await eventually(lambda: _state_is(cluster, "NEW"), what="the map NEW")
    assert (await cluster.http.get("/banks")).json() == {"banks": []}
    # A delete removes it at once, and the client is told to leave its bankd.
    assert (await cluster.http.delete(f"/slotmaps/{1 << 16}")).status_code == 200
    await eventually(lambda: client.config and client.config.bankd.port == 0, what="unmapped")
    assert str(client.configs[-1].bankd.ip) == "0.0.0.0"
    assert await cluster.slotmaps() == {}


async def _state_is(cluster: Cluster, state: str) -> bool:
    return await cluster.slotmaps() == {(1, 0): state}


async def test_every_map_survives_killing_all_cores_and_is_pushed_once(cluster: Cluster) -> None:
    bankd = await cluster.bankd(1, 2, 0, 1)
    c23, c24 = await cluster.client(C23_0, 1, 0), await cluster.client(C24_0, 0, 1)
    await eventually(lambda: bankd.server and c23.server and c24.server, what="peers")
    assert (await cluster.map(B1_0, C23_0)).status_code == 201
    assert (await cluster.map(B1_1, C24_0)).status_code == 201
    await eventually(lambda: c23.has_atr.is_set() and c24.has_atr.is_set(), what="ATRs")

    for core in cluster.cores:
        core.kill()
    await asyncio.gather(*(asyncio.to_thread(core.start) for core in cluster.cores))
    await eventually(lambda: bankd.connections == 2 and bankd.server, what="bankd back")
    await eventually(lambda: c23.server and c24.server, what="clients back")
    await eventually(lambda: all_active(cluster, 2), what="maps active again")
    await asyncio.sleep(1.0)  # a few resyncs: nothing is pushed again
    assert creates_per_slot(bankd, 1) == {B1_0: 1, B1_1: 1}
    assert creates_per_slot(bankd, 2) == {B1_0: 1, B1_1: 1}
    assert await c23.transmit(b"\x00\xb0\x00\x00\x02") == b"\x90\x00"
    assert c24.atr == sim_atr(rspro.BankSlot(1, 1))
