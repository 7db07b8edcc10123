"""``GET /api/v1/cards`` and ``GET /api/v1/cards/{iccid}``: the card inventory the bankds
reported, with the client each card is mapped to; readable by every role."""

from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest

from remsim_api.app import create_app
from remsim_api.security import ApiSecurity, TokenFile
from remsim_common.pki import token_line
from remsim_control import (
    BankSlot,
    CardRecord,
    CardState,
    ClientSlot,
    MemoryBus,
    MemoryStore,
    SlotmapState,
)

CARDS = "/api/v1/cards"
VIEWER = {"Authorization": "Bearer vera-7d1f0b"}
ATR = "3B9F96801FC78031A073BE21136743200718000001A5"
ICCID0, IMSI0 = "89490200000000000000", "262000000010000"
ICCID1 = "89490200000000000010"
SEEN = 1_700_000_000.5
B1_0, B1_1, B2_0 = (BankSlot(bank_id=b, slot_nr=s) for b, s in ((1, 0), (1, 1), (2, 0)))


@pytest.fixture
async def store() -> MemoryStore:
    store = MemoryStore()
    await store.put_cards(
        1,
        [
            CardRecord(bank_slot=B1_1, state=CardState.EMPTY, last_seen=SEEN),
            CardRecord(
                bank_slot=B1_0,
                state=CardState.PRESENT,
                atr=ATR,
                iccid=ICCID0,
                imsi=IMSI0,
                last_seen=SEEN,
            ),
        ],
    )
    await store.put_cards(
        2,
        [
            CardRecord(
                bank_slot=B2_0, state=CardState.PRESENT, atr=ATR, iccid=ICCID1, last_seen=SEEN
            )
        ],
    )
    return store


@pytest.fixture
async def api(store: MemoryStore, tmp_path: Path) -> AsyncIterator[httpx.AsyncClient]:
    tokens = tmp_path / "api-tokens"
    tokens.write_text(token_line("vera", "viewer", "vera-7d1f0b") + "\n")
    app = create_app(store, MemoryBus(), security=ApiSecurity(tokens=TokenFile(tokens)))
    transport = httpx.ASGITransport(app=app, client=("192.0.2.9", 40123))
    async with httpx.AsyncClient(transport=transport, base_url="http://127.0.0.1:9997") as client:
        yield client


async def test_the_inventory_lists_every_bank_slot_reported_with_its_client(
    api: httpx.AsyncClient, store: MemoryStore
) -> None:
    active = await store.create_slotmap(B1_0, ClientSlot(client_id=23, slot_nr=0))
    await store.update_slotmap(active.serial, {SlotmapState.NEW}, SlotmapState.ACTIVE)
    response = await api.get(CARDS, headers=VIEWER)
    assert response.status_code == 200
    b1_0, b1_1, b2_0 = response.json()["cards"]
    assert b1_0 == {
        "bank_id": 1,
        "slot_nr": 0,
        "state": "present",
        "atr": ATR,
        "iccid": ICCID0,
        "imsi": IMSI0,
        "mapped_to": {"client_id": 23, "slot_nr": 0, "slotmap_state": "ACTIVE"},
        "last_seen": "2023-11-14T22:13:20.500000Z",
        "tpdu_count": None,
        "last_activity": None,
    }
    assert (b1_1["slot_nr"], b1_1["state"], b1_1["iccid"], b1_1["mapped_to"]) == (
        1,
        "empty",
        None,
        None,
    )
    assert (b2_0["bank_id"], b2_0["iccid"], b2_0["imsi"]) == (2, ICCID1, None)


async def test_one_card_by_its_iccid(api: httpx.AsyncClient) -> None:
    response = await api.get(f"{CARDS}/{ICCID1}", headers=VIEWER)
    assert response.status_code == 200
    assert (response.json()["bank_id"], response.json()["slot_nr"]) == (2, 0)
    assert response.json()["mapped_to"] is None


async def test_an_unknown_card_is_a_404_problem(api: httpx.AsyncClient) -> None:
    response = await api.get(f"{CARDS}/8949000000000000099", headers=VIEWER)
    assert response.status_code == 404
    assert response.headers["content-type"] == "application/problem+json"
    assert "8949000000000000099" in response.json()["detail"]
    assert (await api.get(f"{CARDS}/not-an-iccid", headers=VIEWER)).status_code == 400


async def test_the_inventory_needs_a_token_and_changes_nothing(api: httpx.AsyncClient) -> None:
    assert (await api.get(CARDS)).status_code == 401
    assert (await api.delete(f"{CARDS}/{ICCID0}", headers=VIEWER)).status_code in (403, 405)


async def test_the_inventory_is_in_the_openapi_document(api: httpx.AsyncClient) -> None:
    document = (await api.get("/openapi.json")).json()
    assert {"/api/v1/cards", "/api/v1/cards/{iccid}"} <= set(document["paths"])
    assert "CardOut" in document["components"]["schemas"]


async def test_a_card_s_activity_is_its_tpdu_count_and_last_tpdu(
    api: httpx.AsyncClient, store: MemoryStore
) -> None:
    busy = CardRecord(bank_slot=B2_0, state=CardState.PRESENT, iccid=ICCID1, last_seen=SEEN,
                      tpdu_count=1234, last_activity=SEEN - 2)  # fmt: skip
    await store.put_cards(2, [busy])
    card = (await api.get(f"{CARDS}/{ICCID1}", headers=VIEWER)).json()
    assert (card["tpdu_count"], card["last_activity"]) == (1234, "2023-11-14T22:13:18.500000Z")
