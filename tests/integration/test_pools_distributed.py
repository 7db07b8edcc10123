"""Acceptance (issue 16), distributed: two ``remsim-server`` cores and a ``remsim-api`` on a
real redis-server and nats-server. One core at a time holds the pool scheduler's duty (a key
in Redis with an expiry); when it is killed, the other takes the duty over and the rules
keep being carried out. No card is ever mapped to two clients."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
import redis.asyncio as aioredis

import rspro
from tests.fixtures.servers import ServiceFixture, SimClient
from tests.integration.test_distributed import Cluster, eventually, running_cluster

pytestmark = [pytest.mark.integration, pytest.mark.slow]

DUTY_KEY = "{remsim}:pools:duty"
C23_0, C24_0 = rspro.ClientSlot(23, 0), rspro.ClientSlot(24, 0)


@pytest.fixture
async def cluster(
    own_redis_server: ServiceFixture, own_nats_server: ServiceFixture, tmp_path: Path
) -> AsyncIterator[Cluster]:
    async with running_cluster(own_redis_server, own_nats_server, tmp_path) as cluster:
        yield cluster


def card_of(client: SimClient) -> int | None:
    config = client.config
    if config is None or config.bankd.port == 0:
        return None
    return config.bank_slot.slot_nr


async def duty_holder(cluster: Cluster) -> str | None:
    redis = aioredis.Redis.from_url(cluster.redis.url, decode_responses=True)
    try:
        holder = await redis.get(DUTY_KEY)
    finally:
        await redis.aclose()
    return None if holder is None else str(holder)


async def test_one_core_carries_the_rules_out_and_another_takes_over_when_it_dies(
    cluster: Cluster,
) -> None:
    http = cluster.http
    own = cluster.api.rest_url.replace("/api/backend/v1", "/api/v1")
    cards = [{"bank": {"bankId": 1, "slotNr": n}} for n in range(4)]
    clients = [{"clientId": 23, "slotNr": 0}, {"clientId": 24, "slotNr": 0}]
    for path, body in (
        ("/pools/A", {"cards": cards}),
        ("/groups/modems", {"clients": clients}),
        ("/rules/r", {"group": "modems", "pools": ["A"], "method": "least-used"}),
    ):
        response = await http.put(own + path, json=body)
        assert response.status_code == 200, response.text
    bankd = await cluster.bankd(1, 4, 0, 1)
    c23, c24 = await cluster.client(C23_0, 1, 0), await cluster.client(C24_0, 0, 1)
    await eventually(lambda: card_of(c23) is not None and card_of(c24) is not None, what="cards")
    assert card_of(c23) != card_of(c24)
    holder = await duty_holder(cluster)
    on_duty = next(i for i, core in enumerate(cluster.cores) if core.core_id == holder)
    other = cluster.cores[1 - on_duty]
    kept = ("/pools", "/groups", "/rules")
    before = {path: (await http.get(own + path)).json() for path in kept}
    counters = await _maps_per_card(cluster)
    assert sum(counters.values()) == 2  # the two maps made so far are counted

    cluster.cores[on_duty].kill()
    taken = await eventually(lambda: _held_by(cluster, other.core_id), what="the duty moved")
    assert taken
    # The lost core's state is all in Redis: pools, groups, rules and counters stay.
    assert {path: (await http.get(own + path)).json() for path in kept} == before
    after = await _maps_per_card(cluster)
    assert all(after.get(card, 0) >= maps for card, maps in counters.items())
    used = card_of(c23)
    response = await http.put(own + f"/card-states/B1:{used}", json={"state": "disabled"})
    assert response.status_code == 200, response.text
    await eventually(lambda: card_of(c23) not in (None, used), what="c23 moved by the other core")
    await eventually(lambda: _all_active(cluster, 2), what="both maps ACTIVE")
    maps = await cluster.slotmaps()
    assert len(maps) == 2 and card_of(c23) != card_of(c24)
    assert set(bankd.maps) == {
        rspro.BankSlot(1, card_of(c23) or 0),
        rspro.BankSlot(1, card_of(c24) or 0),
    }


async def _maps_per_card(cluster: Cluster) -> dict[str, int]:
    own = cluster.api.rest_url.replace("/api/backend/v1", "/api/v1")
    states = (await cluster.http.get(own + "/card-states")).json()["cards"]
    return {state["card"]: state["maps"] for state in states}


async def _held_by(cluster: Cluster, core_id: str) -> bool:
    return await duty_holder(cluster) == core_id


async def _all_active(cluster: Cluster, count: int) -> bool:
    maps = await cluster.slotmaps()
    return len(maps) == count and all(state == "ACTIVE" for state in maps.values())


async def test_two_cores_never_map_a_card_twice_under_churn(cluster: Cluster) -> None:
    """Both cores run their schedulers throughout (only one on duty); clients come and go
    and leases end every second: at every look, no bank slot and no client slot is mapped
    twice, and the bankd never holds one slot for two clients."""
    http = cluster.http
    own = cluster.api.rest_url.replace("/api/backend/v1", "/api/v1")
    cards = [{"bank": {"bankId": 1, "slotNr": n}} for n in range(3)]
    clients = [{"clientId": c, "slotNr": 0} for c in range(20, 25)]
    for path, body in (
        ("/pools/A", {"cards": cards}),
        ("/groups/modems", {"clients": clients}),
        ("/rules/r", {"group": "modems", "pools": ["A"], "method": "random", "leaseSeconds": 1}),
    ):
        assert (await http.put(own + path, json=body)).status_code == 200
    bankd = await cluster.bankd(1, 3, 0, 1)
    peers = [await cluster.client(rspro.ClientSlot(c, 0), c % 2, 1 - c % 2) for c in range(20, 25)]
    deadline = asyncio.get_running_loop().time() + 6
    looks = 0
    while asyncio.get_running_loop().time() < deadline:
        response = await http.get(own + "/slotmaps")
        maps = response.json()["slotmaps"]
        banks = [(m["bank"]["bankId"], m["bank"]["slotNr"]) for m in maps]
        owners = [(m["client"]["clientId"], m["client"]["slotNr"]) for m in maps]
        assert len(set(banks)) == len(banks) and len(set(owners)) == len(owners), maps
        holders = list(bankd.maps.values())
        assert len(set(holders)) == len(holders), bankd.maps  # no client with two cards
        looks += 1
        await asyncio.sleep(0.05)
    assert looks > 20
    states = (await http.get(own + "/card-states")).json()["cards"]
    assert sum(card["maps"] for card in states) >= 6  # the leases kept rotating the cards
    assert all(peer.server is not None for peer in peers)
    # The bankd was never asked to map a slot it held for another client.
    held: dict[rspro.BankSlot, rspro.ClientSlot] = {}
    connection = 0
    for number, request in bankd.requests:
        if number != connection:  # a new control connection: the bankd was reset
            held, connection = {}, number
        if isinstance(request, rspro.CreateMappingReq):
            assert request.bank not in held, f"{request.bank} mapped twice"
            held[request.bank] = request.client
        elif isinstance(request, rspro.RemoveMappingReq):
            held.pop(request.bank, None)
