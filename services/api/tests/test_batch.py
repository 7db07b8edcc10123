"""``POST /api/v1/slotmaps:batch``: up to 1,000 maps in one request, each made as
``POST /api/v1/slotmaps`` would make it, with one outcome per map in the request's order."""

import json
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from remsim_api.app import BATCH_BODY_SIZE, create_app
from remsim_api.limits import MAX_BODY_SIZE
from remsim_api.schemas import BATCH_MAX
from remsim_api.security import ApiSecurity, TokenFile
from remsim_common.pki import token_line
from remsim_control import (
    BankSlot,
    CardRecord,
    CardState,
    Event,
    MemoryBus,
    MemoryStore,
    SlotmapEvent,
)
from remsim_control.audit import AuditQuery

BATCH = "/api/v1/slotmaps:batch"
OPERATOR = {"Authorization": "Bearer otto-5b21e0"}
VIEWER = {"Authorization": "Bearer vera-7d1f0b"}
ICCID = "89490200000000000010"
B2_1 = BankSlot(bank_id=2, slot_nr=1)


def by_slot(bank: int, slot: int, client: int) -> dict[str, Any]:
    return {"bank": {"bankId": bank, "slotNr": slot}, "client": {"clientId": client, "slotNr": 0}}


@pytest.fixture
async def store() -> MemoryStore:
    store = MemoryStore()
    card = CardRecord(bank_slot=B2_1, state=CardState.PRESENT, iccid=ICCID, last_seen=1.0)
    await store.put_cards(2, [card])
    return store


@pytest.fixture
def events() -> list[Event]:
    return []


@pytest.fixture
def bus(events: list[Event]) -> MemoryBus:
    class Recording(MemoryBus):
        async def publish(self, event: Event) -> None:
            events.append(event)
            await super().publish(event)

    return Recording()


@pytest.fixture
async def api(
    store: MemoryStore, bus: MemoryBus, tmp_path: Path
) -> AsyncIterator[httpx.AsyncClient]:
    tokens = tmp_path / "api-tokens"
    lines = [
        token_line("vera", "viewer", "vera-7d1f0b"),
        token_line("otto", "operator", "otto-5b21e0"),
    ]
    tokens.write_text("\n".join(lines) + "\n")
    app = create_app(store, bus, security=ApiSecurity(tokens=TokenFile(tokens)))
    transport = httpx.ASGITransport(app=app, client=("192.0.2.9", 40123))
    async with httpx.AsyncClient(transport=transport, base_url="http://127.0.0.1:9997") as client:
        yield client


async def test_each_map_has_its_outcome_in_the_request_s_order(
    api: httpx.AsyncClient, store: MemoryStore, events: list[Event]
) -> None:
    body = {
        "slotmaps": [
            by_slot(1, 0, 23),
            {"card": {"iccid": ICCID.lower()}, "client": {"clientId": 24, "slotNr": 0}},
            by_slot(1, 0, 25),  # the bank slot of the first
            {"card": {"iccid": "8949000000000000099"}, "client": {"clientId": 26, "slotNr": 0}},
        ]
    }
    response = await api.post(BATCH, json=body, headers=OPERATOR)
    assert response.status_code == 200
    results = response.json()["results"]
    assert [result["status"] for result in results] == [201, 201, 409, 404]
    assert results[0]["slotmap"] == {
        "bank": {"bankId": 1, "slotNr": 0},
        "client": {"clientId": 23, "slotNr": 0},
        "state": "NEW",
        "id": 65536,
    }
    assert results[1]["slotmap"]["bank"] == {"bankId": 2, "slotNr": 1}
    assert results[1]["slotmap"]["card"] == {"iccid": ICCID}
    assert results[2]["existing"]["client"] == {"clientId": 23, "slotNr": 0}
    assert ICCID not in results[3]["detail"] and "8949000000000000099" in results[3]["detail"]
    made = await store.list_slotmaps()
    assert [(m.bank, m.client.client_id) for m in made] == [
        (BankSlot(bank_id=1, slot_nr=0), 23),
        (B2_1, 24),
    ]
    assert [m.serial for m in made] == sorted(m.serial for m in made)
    assert [e.serial for e in events if isinstance(e, SlotmapEvent)] == [m.serial for m in made]
    (entry,) = await store.list_audit(AuditQuery())
    assert (entry.actor, entry.action, entry.result) == ("otto", f"POST {BATCH}", "200")
    assert entry.detail == "2 of 4 slotmaps created"


async def test_a_thousand_maps_fit_in_one_request(
    api: httpx.AsyncClient, store: MemoryStore
) -> None:
    body = {"slotmaps": [by_slot(n % 4, n // 4, n) for n in range(BATCH_MAX)]}
    response = await api.post(BATCH, json=body, headers=OPERATOR)
    assert response.status_code == 200
    # Over the limit of every other request's body, within the batch's own.
    assert MAX_BODY_SIZE < len(json.dumps(body, separators=(",", ":"))) < BATCH_BODY_SIZE
    assert {result["status"] for result in response.json()["results"]} == {201}
    assert len(await store.list_slotmaps()) == BATCH_MAX


@pytest.mark.parametrize(
    ("body", "status"),
    [
        ({"slotmaps": []}, 400),
        ({"slotmaps": [by_slot(1, n % 1000, n % 1000) for n in range(BATCH_MAX + 1)]}, 400),
        ({"slotmaps": [{"client": {"clientId": 1, "slotNr": 0}}]}, 400),
    ],
    ids=["empty", "too-many", "neither-card-nor-bank"],
)
async def test_a_bad_batch_is_refused_whole(
    api: httpx.AsyncClient, store: MemoryStore, body: dict[str, Any], status: int
) -> None:
    response = await api.post(BATCH, json=body, headers=OPERATOR)
    assert response.status_code == status
    assert response.headers["content-type"] == "application/problem+json"
    assert await store.list_slotmaps() == []


async def test_a_batch_needs_the_operator_role(api: httpx.AsyncClient) -> None:
    response = await api.post(BATCH, json={"slotmaps": [by_slot(1, 0, 23)]}, headers=VIEWER)
    assert response.status_code == 403
