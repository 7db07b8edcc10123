"""``POST /api/v1/slotmaps``: a slotmap made by card (ICCID) is made at the bank slot the
inventory has that card in now, like the original's ``POST /slotmaps`` made there; and
``remsim-apitool --iccid``."""

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest

from remsim_api import apitool
from remsim_api.app import create_app
from remsim_api.security import ApiSecurity, TokenFile
from remsim_common.pki import token_line
from remsim_control import (
    BankSlot,
    CardRecord,
    CardState,
    ClientSlot,
    Event,
    MemoryBus,
    MemoryStore,
    SlotmapEvent,
)
from remsim_control.audit import AuditQuery

from .conftest import Serve

SLOTMAPS = "/api/v1/slotmaps"
OPERATOR = {"Authorization": "Bearer otto-5b21e0"}
VIEWER = {"Authorization": "Bearer vera-7d1f0b"}
ATR = "3B9F96801FC78031A073BE21136743200718000001A5"
ICCID = "89490200000000000010"
UNKNOWN = "8949000000000000099"
SEEN = 1_700_000_000.5
B2_1 = BankSlot(bank_id=2, slot_nr=1)
C23_0 = {"clientId": 23, "slotNr": 0}


def by_card(iccid: str, client: dict[str, int] = C23_0) -> dict[str, object]:
    return {"card": {"iccid": iccid}, "client": client}


@pytest.fixture
async def store() -> MemoryStore:
    store = MemoryStore()
    card = CardRecord(bank_slot=B2_1, state=CardState.PRESENT, atr=ATR, iccid=ICCID, last_seen=SEEN)
    await store.put_cards(2, [card])
    return store


@pytest.fixture
def bus() -> MemoryBus:
    return MemoryBus()


@pytest.fixture
def security(tmp_path: Path) -> ApiSecurity:
    tokens = tmp_path / "api-tokens"
    lines = [
        token_line("vera", "viewer", "vera-7d1f0b"),
        token_line("otto", "operator", "otto-5b21e0"),
    ]
    tokens.write_text("\n".join(lines) + "\n")
    return ApiSecurity(tokens=TokenFile(tokens))


@pytest.fixture
async def api(
    store: MemoryStore, bus: MemoryBus, security: ApiSecurity
) -> AsyncIterator[httpx.AsyncClient]:
    app = create_app(store, bus, security=security)
    transport = httpx.ASGITransport(app=app, client=("192.0.2.9", 40123))
    async with httpx.AsyncClient(transport=transport, base_url="http://127.0.0.1:9997") as client:
        yield client


async def test_a_map_by_iccid_is_made_at_the_cards_bank_slot(
    api: httpx.AsyncClient, store: MemoryStore, bus: MemoryBus
) -> None:
    events: list[Event] = []
    publish = bus.publish

    async def record(event: Event) -> None:
        events.append(event)
        await publish(event)

    bus.publish = record  # type: ignore[method-assign]
    response = await api.post(SLOTMAPS, json=by_card(ICCID.lower()), headers=OPERATOR)
    assert response.status_code == 201
    assert response.json() == {
        "bank": {"bankId": 2, "slotNr": 1},
        "client": C23_0,
        "state": "NEW",
        "id": 2 * 65536 + 1,
        "card": {"iccid": ICCID},
    }
    assert response.headers["Location"] == "/api/backend/v1/slotmaps/131073"
    (slotmap,) = await store.list_slotmaps(visible_only=True)
    assert (slotmap.bank, slotmap.client) == (B2_1, ClientSlot(client_id=23, slot_nr=0))
    (event,) = events
    assert isinstance(event, SlotmapEvent) and event.bank == B2_1
    (entry,) = await store.list_audit(AuditQuery())
    assert (entry.actor, entry.action, entry.result) == ("otto", f"POST {SLOTMAPS}", "201")
    assert (entry.bank_id, entry.bank_slot, entry.client_id, entry.client_slot) == (2, 1, 23, 0)
    original = (await api.get("/api/backend/v1/slotmaps/131073", headers=VIEWER)).json()
    assert original == {
        "bank": {"bankId": 2, "slotNr": 1},
        "client": C23_0,
        "state": "NEW",
        "id": 131073,
    }


async def test_a_map_by_bank_slot_works_there_too(api: httpx.AsyncClient) -> None:
    body = {"bank": {"bankId": 1, "slotNr": 0}, "client": C23_0}
    response = await api.post(SLOTMAPS, json=body, headers=OPERATOR)
    assert response.status_code == 201
    assert response.json()["bank"] == {"bankId": 1, "slotNr": 0}
    assert "card" not in response.json()


async def test_an_unknown_iccid_is_a_404_problem_and_maps_nothing(
    api: httpx.AsyncClient, store: MemoryStore
) -> None:
    response = await api.post(SLOTMAPS, json=by_card(UNKNOWN), headers=OPERATOR)
    assert response.status_code == 404
    assert response.headers["content-type"] == "application/problem+json"
    assert UNKNOWN in response.json()["detail"]
    assert await store.list_slotmaps() == []
    (entry,) = await store.list_audit(AuditQuery())
    assert (entry.result, entry.client_id) == ("404", 23)


async def test_a_card_or_client_slot_already_mapped_is_a_409_naming_the_map(
    api: httpx.AsyncClient, store: MemoryStore
) -> None:
    await store.create_slotmap(B2_1, ClientSlot(client_id=24, slot_nr=0))
    taken = await api.post(SLOTMAPS, json=by_card(ICCID), headers=OPERATOR)
    assert taken.status_code == 409
    assert taken.json()["slotmap"]["client"] == {"clientId": 24, "slotNr": 0}
    await store.put_cards(
        3,
        [
            CardRecord(
                bank_slot=BankSlot(bank_id=3, slot_nr=0),
                state=CardState.PRESENT,
                iccid="8949",
                last_seen=SEEN,
            )
        ],
    )
    client_taken = await api.post(
        SLOTMAPS, json=by_card("8949", {"clientId": 24, "slotNr": 0}), headers=OPERATOR
    )
    assert client_taken.status_code == 409
    assert client_taken.json()["slotmap"]["bank"] == {"bankId": 2, "slotNr": 1}


@pytest.mark.parametrize(
    "body",
    [
        {"client": C23_0},
        {"card": {"iccid": ICCID}, "bank": {"bankId": 2, "slotNr": 1}, "client": C23_0},
        {"card": {"iccid": "not-an-iccid"}, "client": C23_0},
        {"card": {}, "client": C23_0},
        {"card": None, "client": C23_0},
        {"card": {"iccid": ICCID}, "bank": None, "client": C23_0},
        {"card": {"iccid": ICCID}},
        {"card": {"iccid": ICCID}, "client": {"clientId": 1024, "slotNr": 0}},
    ],
)
async def test_a_bad_body_is_a_400_problem(
    api: httpx.AsyncClient, store: MemoryStore, body: dict[str, object]
) -> None:
    response = await api.post(SLOTMAPS, json=body, headers=OPERATOR)
    assert response.status_code == 400
    assert response.headers["content-type"] == "application/problem+json"
    assert await store.list_slotmaps() == []


async def test_a_viewer_may_not_map_and_a_token_is_needed(
    api: httpx.AsyncClient, store: MemoryStore
) -> None:
    assert (await api.post(SLOTMAPS, json=by_card(ICCID), headers=VIEWER)).status_code == 403
    assert (await api.post(SLOTMAPS, json=by_card(ICCID))).status_code == 401
    assert await store.list_slotmaps() == []


async def test_the_operation_is_in_the_openapi_document(api: httpx.AsyncClient) -> None:
    document = (await api.get("/openapi.json")).json()
    operation = document["paths"][SLOTMAPS]["post"]
    assert operation["operationId"] == "create_slotmap_by_card"
    assert {"201", "400", "403", "404", "409"} <= set(operation["responses"])


# --- remsim-apitool --iccid ------------------------------------------------------------------


async def run_apitool(*argv: str) -> int:
    try:
        await asyncio.to_thread(apitool.main, list(argv))
    except SystemExit as exc:
        return int(exc.code or 0)
    return 0


async def test_apitool_maps_by_iccid_and_prints_the_map(
    serve: Serve,
    store: MemoryStore,
    bus: MemoryBus,
    security: ApiSecurity,
    capsys: pytest.CaptureFixture[str],
) -> None:
    async with serve(create_app(store, bus, security=security)) as port:
        where = ["-H", "127.0.0.1", "-p", str(port), "--token", "otto-5b21e0"]
        assert await run_apitool(*where, "--iccid", ICCID, "23", "0") == 0
        out = capsys.readouterr().out
        assert out == (
            "/api/v1/slotmaps: {'bank': {'bankId': 2, 'slotNr': 1}, 'client': "
            "{'clientId': 23, 'slotNr': 0}, 'state': 'NEW', 'id': 131073, "
            f"'card': {{'iccid': '{ICCID}'}}}}\n"
        )
        assert await run_apitool(*where, "--iccid", UNKNOWN, "23", "1") == 1
        assert capsys.readouterr().err == (
            f"remsim-apitool: POST {SLOTMAPS} failed: 404 Not Found: "
            f"no card with ICCID {UNKNOWN} is known\n"
        )
        assert await run_apitool(*where, "--iccid", ICCID, "x", "0") == 1
        assert "not a client id" in capsys.readouterr().err
        assert await run_apitool(*where, "-v", "--iccid", UNKNOWN, "23", "1") == 1
        sent = capsys.readouterr().out.splitlines()[1]
        assert sent == f"POST http://127.0.0.1:{port}{SLOTMAPS}" + repr(
            by_card(UNKNOWN, {"clientId": 23, "slotNr": 1})
        )
    assert len(await store.list_slotmaps()) == 1
