"""Distributed mode: two ``remsim-server`` cores and one ``remsim-api`` sharing a real
redis-server and nats-server, with simulated bankds and clients speaking RSPRO over TCP.

A bankd's or client's list of servers stands for a load balancer in front of the cores (as
a Kubernetes Service): after losing its core it connects to the next one. Leases last 1 s,
so a killed core's connections leave the registry quickly.
"""

import asyncio
import contextlib
import subprocess
import sys
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest

import rspro
from tests.fixtures.servers import (
    RemsimProcess,
    ServiceFixture,
    SimBankd,
    SimClient,
    backend_env,
    sim_atr,
)
from tests.system import free_port

pytestmark = [pytest.mark.integration, pytest.mark.slow]

LEASE_TTL = 1.0
WAIT = 20.0

B1_0, B1_1 = rspro.BankSlot(1, 0), rspro.BankSlot(1, 1)
C23_0, C24_0 = rspro.ClientSlot(23, 0), rspro.ClientSlot(24, 0)


@dataclass
class Cluster:
    redis: ServiceFixture
    nats: ServiceFixture
    cores: list[RemsimProcess]
    api: RemsimProcess
    bankd_port: int
    http: httpx.AsyncClient
    peers: list[SimBankd | SimClient] = field(default_factory=list)

    def addresses(self, *cores: int) -> list[tuple[str, int]]:
        """The RSPRO addresses of these cores (by index), as a peer's server list."""
        return [("127.0.0.1", self.cores[i].rspro_port) for i in cores]

    async def bankd(self, bank_id: int, slots: int, *cores: int) -> SimBankd:
        bankd = SimBankd(bank_id, slots, self.addresses(*cores))
        await bankd.start(self.bankd_port)
        self.peers.append(bankd)
        return bankd

    async def client(self, slot: rspro.ClientSlot, *cores: int) -> SimClient:
        client = SimClient(slot, self.addresses(*cores))
        await client.start()
        self.peers.append(client)
        return client

    async def map(self, bank: rspro.BankSlot, client: rspro.ClientSlot) -> httpx.Response:
        return await self.http.post(
            "/slotmaps",
            json={
                "bank": {"bankId": bank.bank_id, "slotNr": bank.slot_nr},
                "client": {"clientId": client.client_id, "slotNr": client.slot_nr},
            },
        )

    async def slotmaps(self) -> dict[tuple[int, int], str]:
        """(bankId, slotNr) -> state, as the API lists them."""
        response = await self.http.get("/slotmaps")
        assert response.status_code == 200, response.text
        return {
            (m["bank"]["bankId"], m["bank"]["slotNr"]): m["state"]
            for m in response.json()["slotmaps"]
        }

    async def readiness(self, process: RemsimProcess) -> tuple[int, dict[str, bool]]:
        response = await self.http.get(f"http://127.0.0.1:{process.rest_port}/readyz")
        return response.status_code, response.json()


def assert_unavailable(response: httpx.Response) -> None:
    """503 with an RFC 9457 problem body."""
    assert response.status_code == 503, response.text
    assert response.headers["content-type"].startswith("application/problem+json")
    assert response.json()["status"] == 503


async def eventually(
    condition: Callable[[], Any], timeout: float = WAIT, what: str = "condition"
) -> Any:
    """Await ``condition()`` (sync or async) until truthy; fail after ``timeout`` s."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while True:
        result = condition()
        if asyncio.iscoroutine(result):
            result = await result
        if result:
            return result
        if loop.time() > deadline:
            raise AssertionError(f"{what} not reached within {timeout} s")
        await asyncio.sleep(0.05)


async def all_active(cluster: Cluster, count: int) -> bool:
    maps = await cluster.slotmaps()
    return len(maps) == count and all(state == "ACTIVE" for state in maps.values())


@contextlib.asynccontextmanager
async def running_cluster(
    redis: ServiceFixture, nats: ServiceFixture, tmp_path: Path, **env_extra: str
) -> AsyncIterator[Cluster]:
    """Two cores and an API process on these Redis and NATS servers; logs shown on failure."""
    bankd_port = free_port()
    env = backend_env(redis.url, nats.url, LEASE_TTL)
    env["REMSIM_BANKD_PORT"] = str(bankd_port)
    env.update(env_extra)
    cores = [RemsimProcess("core", name, env, tmp_path) for name in ("core-a", "core-b")]
    api = RemsimProcess("api", "api", env, tmp_path)
    processes = [*cores, api]
    try:
        await asyncio.gather(*(asyncio.to_thread(p.start) for p in processes))
        async with httpx.AsyncClient(base_url=api.rest_url, timeout=10) as http:
            cluster = Cluster(redis, nats, cores, api, bankd_port, http)
            try:
                yield cluster
            finally:
                for peer in cluster.peers:
                    await peer.aclose()
    except BaseException:
        for p in processes:
            if p.log_tail():
                print(f"--- {p.name} ---\n{p.log_tail()}")
        raise
    finally:
        for p in processes:
            p.stop()


@pytest.fixture
async def cluster(
    own_redis_server: ServiceFixture, own_nats_server: ServiceFixture, tmp_path: Path
) -> AsyncIterator[Cluster]:
    async with running_cluster(own_redis_server, own_nats_server, tmp_path) as cluster:
        yield cluster


def creates_per_slot(bankd: SimBankd, connection: int | None = None) -> dict[rspro.BankSlot, int]:
    counts: dict[rspro.BankSlot, int] = {}
    for req in bankd.creates(connection):
        counts[req.bank] = counts.get(req.bank, 0) + 1
    return counts


async def test_a_bankd_on_one_core_and_a_client_on_another_get_mapped(cluster: Cluster) -> None:
    bankd = await cluster.bankd(1, 2, 0)
    client = await cluster.client(C23_0, 1)
    await eventually(lambda: bankd.connections and client.server, what="peers connected")
    assert (await cluster.map(B1_0, C23_0)).status_code == 201
    await eventually(lambda: client.atr == sim_atr(B1_0), what="the client's ATR")
    assert await client.transmit(b"\x00\xa4\x00\x04\x02\x3f\x00") == b"\x90\x00"
    assert await cluster.slotmaps() == {(1, 0): "ACTIVE"}
    assert bankd.creates() == [rspro.CreateMappingReq(C23_0, B1_0)]
    # Both cores see the whole registry, whichever holds the connection.
    for core in cluster.cores:
        async with httpx.AsyncClient(base_url=core.rest_url, timeout=5) as http:
            assert [b["bankId"] for b in (await http.get("/banks")).json()["banks"]] == [1]
            assert [c["clientId"] for c in (await http.get("/clients")).json()["clients"]] == [23]


async def test_a_killed_core_s_bankd_reconnects_to_another_and_its_maps_are_restored(
    cluster: Cluster,
) -> None:
    bankd = await cluster.bankd(1, 2, 0, 1)
    c23, c24 = await cluster.client(C23_0, 1), await cluster.client(C24_0, 1)
    await eventually(lambda: bankd.server == cluster.addresses(0)[0], what="bankd on core A")
    await eventually(lambda: c23.server and c24.server, what="clients on core B")
    assert (await cluster.map(B1_0, C23_0)).status_code == 201
    assert (await cluster.map(B1_1, C24_0)).status_code == 201
    await eventually(lambda: c23.has_atr.is_set() and c24.has_atr.is_set(), what="ATRs")

    cluster.cores[0].kill()
    await eventually(lambda: bankd.server == cluster.addresses(1)[0], what="bankd on core B")
    await eventually(lambda: len(bankd.creates(bankd.connections)) == 2, what="maps re-sent")
    await eventually(lambda: all_active(cluster, 2), what="maps active again")
    await asyncio.sleep(0.3)
    assert creates_per_slot(bankd, 1) == {B1_0: 1, B1_1: 1}
    assert creates_per_slot(bankd, bankd.connections) == {B1_0: 1, B1_1: 1}
    # The clients' bankd did not change: no configuration, the card sessions stayed.
    assert [len(c23.configs), len(c24.configs)] == [1, 1]
    assert (c23.bank_sessions, await c23.transmit(b"\x00\x70\x00\x00\x01")) == (1, b"\x90\x00")


async def test_every_map_survives_a_restart_of_all_cores(cluster: Cluster) -> None:
    bankd = await cluster.bankd(1, 2, 0, 1)
    client = await cluster.client(C23_0, 1, 0)
    await eventually(lambda: bankd.connections and client.server, what="peers connected")
    assert (await cluster.map(B1_0, C23_0)).status_code == 201
    await eventually(lambda: client.has_atr.is_set(), what="ATR")

    for core in cluster.cores:
        core.stop()
    await asyncio.gather(*(asyncio.to_thread(core.start) for core in cluster.cores))
    await eventually(lambda: bankd.connections == 2 and bankd.server, what="bankd back")
    await eventually(lambda: client.server, what="client back")
    await eventually(lambda: all_active(cluster, 1), what="map active again")
    await asyncio.sleep(0.3)
    assert creates_per_slot(bankd, 2) == {B1_0: 1}
    assert client.atr == sim_atr(B1_0)
    assert await client.transmit(b"\x00\xb0\x00\x00\x02") == b"\x90\x00"


@pytest.mark.parametrize("backend", ["nats", "redis"])
async def test_a_brief_outage_keeps_card_sessions_and_converges(
    cluster: Cluster, backend: str
) -> None:
    bankd = await cluster.bankd(1, 2, 0)
    client = await cluster.client(C23_0, 1)
    late = await cluster.client(C24_0, 1)
    await eventually(lambda: bankd.connections and client.server and late.server, what="peers")
    assert (await cluster.map(B1_0, C23_0)).status_code == 201
    await eventually(lambda: client.has_atr.is_set(), what="ATR")

    service = cluster.nats if backend == "nats" else cluster.redis
    down = {"nats": {"store": True, "bus": False}, "redis": {"store": False, "bus": True}}
    service.stop()
    try:
        await asyncio.sleep(0.5)
        # The card path does not touch NATS or Redis.
        for _ in range(5):
            assert await client.transmit(b"\x00\xc0\x00\x00\x10") == b"\x90\x00"
        assert_unavailable(await cluster.map(B1_1, C24_0))
        if backend == "redis":
            assert_unavailable(await cluster.http.get("/slotmaps"))
        assert await cluster.readiness(cluster.api) == (503, down[backend])
        # A core needs only the store to serve its connections.
        core_ready = (200, {"store": True}) if backend == "nats" else (503, {"store": False})
        for process in cluster.cores:
            assert await cluster.readiness(process) == core_ready
        await asyncio.sleep(2 * LEASE_TTL)  # leases lapse meanwhile (Redis) or not (NATS)
    finally:
        await asyncio.to_thread(service.start)

    # Nothing was written while it was down; once it is back, the map is made.
    async def map_b1_1() -> bool:
        if await cluster.readiness(cluster.api) != (200, {"store": True, "bus": True}):
            return False
        assert (1, 1) not in await cluster.slotmaps()
        assert (await cluster.map(B1_1, C24_0)).status_code == 201
        return True

    await eventually(map_b1_1, what="the second map accepted")
    await eventually(lambda: late.atr == sim_atr(B1_1), what="the late client's ATR")
    await eventually(lambda: all_active(cluster, 2), what="both maps active")
    await asyncio.sleep(0.3)
    # No connection was dropped, no map lost or pushed twice.
    assert bankd.connections == 1
    assert creates_per_slot(bankd) == {B1_0: 1, B1_1: 1}
    assert (len(client.configs), client.bank_sessions) == (1, 1)
    assert await client.transmit(b"\x00\xc0\x00\x00\x10") == b"\x90\x00"
    async with httpx.AsyncClient(base_url=cluster.cores[0].rest_url, timeout=5) as http:
        assert [b["bankId"] for b in (await http.get("/banks")).json()["banks"]] == [1]


def test_the_mapping_scale_benchmark_runs(tmp_path: Path) -> None:
    """bench/mapping_scale.py end to end, small: both set-ups map every client."""
    bench = Path(__file__).resolve().parents[2] / "bench" / "mapping_scale.py"
    result = subprocess.run(
        [sys.executable, str(bench), "--maps", "12", "--mode", "both"],
        capture_output=True,
        text=True,
        timeout=180,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "single host: 12 maps" in result.stdout
    assert "2 cores + API, Redis, NATS: 12 maps" in result.stdout
