"""The dashboard's pages in-process (remsim_api.ui): what each role is shown, the token
cookie at the Guard, the cards of the inventory, the pages' Content-Security-Policy. The
browser tests (tests/integration/test_dashboard.py) drive the same pages in chromium."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest

from remsim_api import ui
from remsim_api.app import create_app
from remsim_api.security import ApiSecurity, TokenFile
from remsim_common.pki import token_line
from remsim_control import (
    BankSlot,
    CardRecord,
    CardState,
    ClientSlot,
    Slotmap,
    SlotmapState,
)
from remsim_control.memory_bus import MemoryBus
from remsim_control.memory_store import MemoryStore

from .test_security import B1, C23, ORIGIN, SECRETS

B1_0, B1_1 = BankSlot(bank_id=1, slot_nr=0), BankSlot(bank_id=1, slot_nr=1)
ICCIDS = ("8949000000000000011", "8949000000000000029")


def cookie(name: str) -> dict[str, str]:
    return {"Cookie": f"remsim_token={SECRETS[name][1]}"}


@pytest.fixture
async def store() -> MemoryStore:
    store = MemoryStore()
    await store.register_bank(B1)
    await store.register_client(C23)
    now = time.time()
    await store.put_cards(
        1,
        [
            CardRecord(bank_slot=B1_0, state=CardState.PRESENT, atr="3B9F", iccid=ICCIDS[0],
                       imsi="262420000000001", last_seen=now),
            CardRecord(bank_slot=B1_1, state=CardState.PRESENT, atr="3B9F", iccid=ICCIDS[1],
                       last_seen=now),
        ],
    )  # fmt: skip
    return store


@pytest.fixture
async def api(store: MemoryStore, tmp_path: Path) -> AsyncIterator[httpx.AsyncClient]:
    tokens = tmp_path / "api-tokens"
    tokens.write_text("".join(token_line(n, role, s) + "\n" for n, (role, s) in SECRETS.items()))
    app = create_app(store, MemoryBus(), security=ApiSecurity(tokens=TokenFile(tokens)))
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url=ORIGIN) as c:
        yield c


async def test_without_a_token_the_page_asks_for_one_and_shows_nothing(
    api: httpx.AsyncClient,
) -> None:
    page = await api.get("/ui")
    assert page.status_code == 200
    assert 'id="login"' in page.text
    assert ICCIDS[0] not in page.text and "C23:0" not in page.text
    assert (await api.get("/ui/live")).status_code == 401
    assert (await api.get("/ui/events")).status_code == 401
    assert (await api.get("/ui/static/ui.js")).status_code == 200


async def test_a_cookie_with_a_bad_token_is_told_so(api: httpx.AsyncClient) -> None:
    page = await api.get("/ui", headers={"Cookie": "remsim_token=wrong"})
    assert page.status_code == 401
    assert "not valid" in page.text


async def test_the_page_shows_banks_slots_cards_and_clients(api: httpx.AsyncClient) -> None:
    page = await api.get("/ui", headers=cookie("vera"))
    assert page.status_code == 200
    for text in ('data-bank="B1"', 'data-slot="B1:0"', 'data-slot="B1:1"', *ICCIDS,
                 "262420000000001", 'data-client="C23:0"'):  # fmt: skip
        assert text in page.text


@pytest.mark.parametrize(
    ("name", "can_map", "can_reset"),
    [("vera", False, False), ("otto", True, False), ("ada", True, True)],
)
async def test_each_role_sees_the_actions_it_may_take(
    api: httpx.AsyncClient, store: MemoryStore, name: str, can_map: bool, can_reset: bool
) -> None:
    await store.create_slotmap(B1_1, ClientSlot(client_id=24, slot_nr=0))
    live = (await api.get("/ui/live", headers=cookie(name))).text
    assert ('id="map-form"' in live) is can_map
    assert (f'data-pick="card:{ICCIDS[0]}"' in live) is can_map  # B1:0 is mapped by card
    assert ("data-unmap=" in live) is can_map
    page = (await api.get("/ui", headers=cookie(name))).text
    assert ('id="global-reset"' in page) is can_reset


async def test_the_cookie_counts_as_the_bearer_token_with_the_same_csrf_checks(
    api: httpx.AsyncClient, store: MemoryStore
) -> None:
    body = {"bank": {"bankId": 1, "slotNr": 0}, "client": {"clientId": 23, "slotNr": 0}}
    assert (await api.get("/api/backend/v1/banks", headers=cookie("vera"))).status_code == 200
    refused = await api.post("/api/backend/v1/slotmaps", json=body, headers=cookie("vera"))
    assert refused.status_code == 403
    other_site = cookie("ada") | {"Origin": "https://evil.example"}
    assert (await api.post("/api/backend/v1/global-reset", headers=other_site)).status_code == 403
    form = cookie("ada") | {"Content-Type": "application/x-www-form-urlencoded"}
    assert (await api.post("/api/backend/v1/global-reset", headers=form)).status_code == 415
    made = await api.post(
        "/api/backend/v1/slotmaps", json=body, headers=cookie("otto") | {"Origin": ORIGIN}
    )
    assert made.status_code == 201
    slotmap = await store.get_slotmap(65536)
    assert slotmap is not None and slotmap.state is SlotmapState.NEW


@pytest.mark.parametrize("path", ["/ui", "/docs", "/redoc"])
async def test_html_pages_load_from_their_own_origin_only(
    api: httpx.AsyncClient, path: str
) -> None:
    answer = await api.get(path, headers=cookie("vera"))
    assert answer.headers["content-security-policy"] == ui.OWN_ORIGIN_ONLY
    assert "default-src 'self'" in ui.OWN_ORIGIN_ONLY


def test_the_picture_names_slots_of_maps_whose_bank_is_not_connected() -> None:
    slotmap = Slotmap(serial=1, bank=BankSlot(bank_id=7, slot_nr=3), client=C23.client)
    dashboard = ui.snapshot([B1], [C23], [slotmap], [])
    assert [(bank.bank_id, bank.record is None) for bank in dashboard.banks] == [
        (1, False),
        (7, True),
    ]
    assert [slot.bank.slot_nr for slot in dashboard.banks[1].slots] == [3]
    assert dashboard.banks[1].slots[0].client == C23
    assert dashboard.free_clients == []


def test_a_large_bank_is_summed_up_folded_in_the_overview() -> None:
    large = B1.model_copy(update={"number_of_slots": ui.OVERVIEW_UNFOLDED_MAX + 1})
    slotmap = Slotmap(serial=1, bank=B1_0, client=C23.client, state=SlotmapState.ACTIVE)
    (bank,) = ui.snapshot([large], [C23], [slotmap], []).banks
    assert not bank.open
    assert bank.counts == {"ACTIVE": 1, "free": ui.OVERVIEW_UNFOLDED_MAX}
    (small,) = ui.snapshot([B1], [], [], []).banks
    assert small.open
