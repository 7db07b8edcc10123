"""SIM pools, client groups, rules, card states and leases over REST (``remsim_api.pools``):
what is stored, problems, roles; and the apitool's pool commands."""

from __future__ import annotations

import asyncio
import datetime
import time
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest

from remsim_api import apitool
from remsim_api.app import create_app
from remsim_api.security import ApiSecurity, TokenFile
from remsim_common.pki import token_line
from remsim_control import BankSlot, CardRecord, CardState, ClientSlot, MemoryBus, MemoryStore
from remsim_control.pool_store import pool_store_for
from remsim_control.pools import (
    CardAdminState,
    CardRef,
    CardStatus,
    ClientGroup,
    DailyWindow,
    Method,
    Pool,
    Rule,
)

from .conftest import Serve

OPERATOR = {"Authorization": "Bearer otto-5b21e0"}
VIEWER = {"Authorization": "Bearer vera-7d1f0b"}
ICCID = "89490200000000000010"
B1_0 = {"bankId": 1, "slotNr": 0}
C23_0 = {"clientId": 23, "slotNr": 0}


@pytest.fixture
def store() -> MemoryStore:
    return MemoryStore()


@pytest.fixture
async def api(store: MemoryStore, tmp_path: Path) -> AsyncIterator[httpx.AsyncClient]:
    tokens = tmp_path / "api-tokens"
    lines = [
        token_line("vera", "viewer", "vera-7d1f0b"),
        token_line("otto", "operator", "otto-5b21e0"),
    ]
    tokens.write_text("\n".join(lines) + "\n")
    app = create_app(store, MemoryBus(), security=ApiSecurity(tokens=TokenFile(tokens)))
    transport = httpx.ASGITransport(app=app, client=("192.0.2.9", 40123))
    async with httpx.AsyncClient(transport=transport, base_url="http://127.0.0.1:9997") as client:
        yield client


async def test_a_pool_is_put_read_listed_and_deleted(
    api: httpx.AsyncClient, store: MemoryStore
) -> None:
    body = {"cards": [{"iccid": ICCID.lower()}, {"bank": B1_0}, {"bank": B1_0}]}
    response = await api.put("/api/v1/pools/A", json=body, headers=OPERATOR)
    assert response.status_code == 200
    expected = {"name": "A", "cards": [{"iccid": ICCID}, {"bank": B1_0}], "description": ""}
    assert response.json() == expected  # each card once
    assert await pool_store_for(store).get_pool("A") == Pool(
        name="A", cards=(CardRef(iccid=ICCID), CardRef(bank=BankSlot(bank_id=1, slot_nr=0)))
    )
    assert (await api.get("/api/v1/pools", headers=VIEWER)).json() == {"pools": [expected]}
    assert (await api.get("/api/v1/pools/A", headers=VIEWER)).json() == expected
    assert (await api.delete("/api/v1/pools/A", headers=OPERATOR)).status_code == 200
    missing = await api.get("/api/v1/pools/A", headers=VIEWER)
    assert missing.status_code == 404
    assert missing.headers["content-type"] == "application/problem+json"
    assert missing.json()["detail"] == "no pool A"


async def test_a_group_and_a_rule(api: httpx.AsyncClient, store: MemoryStore) -> None:
    group = {"clients": [C23_0, {"clientId": 24, "slotNr": 0}], "description": "modems"}
    assert (await api.put("/api/v1/groups/g", json=group, headers=OPERATOR)).status_code == 200
    assert await pool_store_for(store).get_group("g") == ClientGroup(
        name="g",
        clients=(ClientSlot(client_id=23, slot_nr=0), ClientSlot(client_id=24, slot_nr=0)),
        description="modems",
    )
    rule = {
        "group": "g",
        "pools": ["B"],
        "priority": 10,
        "method": "least-used",
        "daily": {"start": "22:00", "end": "06:00", "tz": "Europe/Berlin"},
        "notAfter": "2030-01-01T00:00:00Z",
        "leaseSeconds": 7200,
    }
    response = await api.put("/api/v1/rules/night", json=rule, headers=OPERATOR)
    assert response.status_code == 200, response.text
    shown = response.json()
    assert shown["name"] == "night" and shown["method"] == "least-used"
    assert shown["notAfter"] == "2030-01-01T00:00:00Z" and isinstance(shown["active"], bool)
    assert await pool_store_for(store).get_rule("night") == Rule(
        name="night",
        group="g",
        pools=("B",),
        priority=10,
        method=Method.LEAST_USED,
        daily=DailyWindow(start="22:00", end="06:00", tz="Europe/Berlin"),
        not_after=datetime.datetime(2030, 1, 1, tzinfo=datetime.UTC).timestamp(),
        lease_seconds=7200,
    )
    listed = (await api.get("/api/v1/rules", headers=VIEWER)).json()["rules"]
    assert [r["name"] for r in listed] == ["night"]
    assert (await api.delete("/api/v1/rules/night", headers=OPERATOR)).status_code == 200
    assert (await api.delete("/api/v1/rules/night", headers=OPERATOR)).status_code == 404


@pytest.mark.parametrize(
    ("path", "body", "detail"),
    [
        ("/api/v1/pools/A", {"cards": [{"iccid": ICCID, "bank": B1_0}]}, "exactly one"),
        ("/api/v1/pools/A", {"cards": [{}]}, "exactly one"),
        ("/api/v1/rules/r", {"group": "g", "pools": []}, "pools"),
        ("/api/v1/rules/r", {"group": "g", "pools": ["A"], "method": "lottery"}, "method"),
        ("/api/v1/rules/r", {"group": "g", "pools": ["A"], "notBefore": 5}, "ISO 8601"),
        ("/api/v1/card-states/B1:0", {"state": "blocked"}, "state"),
    ],
)
async def test_bad_bodies_are_problems(
    api: httpx.AsyncClient, path: str, body: dict[str, object], detail: str
) -> None:
    response = await api.put(path, json=body, headers=OPERATOR)
    assert response.status_code == 400
    assert response.headers["content-type"] == "application/problem+json"
    assert detail in response.json()["detail"]


async def test_viewers_read_operators_change(api: httpx.AsyncClient) -> None:
    for method, path, body in (
        ("PUT", "/api/v1/pools/A", {"cards": []}),
        ("PUT", "/api/v1/groups/g", {"clients": []}),
        ("PUT", "/api/v1/rules/r", {"group": "g", "pools": ["A"]}),
        ("PUT", "/api/v1/card-states/B1:0", {"state": "disabled"}),
        ("DELETE", "/api/v1/pools/A", None),
    ):
        refused = await api.request(method, path, json=body, headers=VIEWER)
        assert refused.status_code == 403, path
        assert "this needs operator" in refused.json()["detail"]
    assert (await api.get("/api/v1/pools")).status_code == 401
    assert (await api.get("/api/v1/card-states", headers=VIEWER)).status_code == 200


async def test_card_states_disable_enable_and_clear_a_block(
    api: httpx.AsyncClient, store: MemoryStore
) -> None:
    pools = pool_store_for(store)
    await pools.put_pool(Pool(name="A", cards=(CardRef(bank=BankSlot(bank_id=1, slot_nr=0)),)))
    await pools.update_card_status(ICCID, lambda s: s.failed("cardNotPresent", 1))
    card = CardRecord(
        bank_slot=BankSlot(bank_id=1, slot_nr=0), state=CardState.PRESENT, last_seen=1.0,
        tpdu_count=42,
    )  # fmt: skip
    await store.put_cards(1, [card])  # the bankd's count, shown with the card's state
    listed = (await api.get("/api/v1/card-states", headers=VIEWER)).json()["cards"]
    assert listed == [
        {
            "card": ICCID,
            "pools": [],
            "state": "blocked",
            "failures": 1,
            "lastFailure": "cardNotPresent",
            "mappedSeconds": 0.0,
            "maps": 0,
            "tpdus": None,
        },
        {
            "card": "B1:0",
            "pools": ["A"],
            "state": "enabled",
            "failures": 0,
            "lastFailure": None,
            "mappedSeconds": 0.0,
            "maps": 0,
            "tpdus": 42,
        },
    ]
    disabled = await api.put(
        "/api/v1/card-states/B1:0", json={"state": "disabled"}, headers=OPERATOR
    )
    assert disabled.json()["state"] == "disabled"
    assert (await pools.card_status("B1:0")) == CardStatus(
        key="B1:0", state=CardAdminState.DISABLED
    )
    enabled = await api.put(
        f"/api/v1/card-states/{ICCID}", json={"state": "enabled"}, headers=OPERATOR
    )
    assert enabled.json()["state"] == "enabled" and enabled.json()["failures"] == 0


async def test_a_lease_at_creation_extended_dropped_and_released(
    api: httpx.AsyncClient, store: MemoryStore
) -> None:
    before = time.time()
    created = await api.post(
        "/api/v1/slotmaps", json={"bank": B1_0, "client": C23_0, "duration": 3}, headers=OPERATOR
    )
    assert created.status_code == 201, created.text
    slotmap_id = created.json()["id"]
    pools = pool_store_for(store)
    (assignment,) = await pools.list_assignments()
    assert assignment.expires_at is not None
    assert before + 3 <= assignment.expires_at <= time.time() + 3
    assert assignment.rule is None

    lease = f"/api/v1/slotmaps/{slotmap_id}/lease"
    extended = await api.put(lease, json={"expiresAt": "2031-05-01T12:00:00Z"}, headers=OPERATOR)
    assert extended.status_code == 200
    assert extended.json() == {"expiresAt": "2031-05-01T12:00:00Z", "rule": None, "card": None}
    listed = (await api.get("/api/v1/slotmaps", headers=VIEWER)).json()["slotmaps"]
    assert listed[0]["lease"] == {"expiresAt": "2031-05-01T12:00:00Z"}
    assert (await api.put(lease, json={}, headers=OPERATOR)).status_code == 400
    assert (await api.delete(lease, headers=OPERATOR)).status_code == 200
    assert (await api.get(lease, headers=VIEWER)).json()["expiresAt"] is None

    released = await api.post(f"/api/v1/slotmaps/{slotmap_id}/release", headers=OPERATOR)
    assert released.status_code == 200
    assert await store.list_slotmaps(visible_only=True) == []
    assert (await api.get(lease, headers=VIEWER)).status_code == 404
    both = {"bank": B1_0, "client": C23_0, "duration": 3, "expiresAt": "2031-05-01T12:00:00Z"}
    assert (await api.post("/api/v1/slotmaps", json=both, headers=OPERATOR)).status_code == 400
    assert await store.list_slotmaps() == []  # nothing made


# --- remsim-apitool -----------------------------------------------------------------------


async def run_apitool(*argv: str) -> int:
    try:
        await asyncio.to_thread(apitool.main, list(argv))
    except SystemExit as exc:
        return int(exc.code or 0)
    return 0


async def test_apitool_pools_groups_rules_cards_and_leases(
    serve: Serve, store: MemoryStore, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    tokens = tmp_path / "tokens"
    tokens.write_text(token_line("otto", "operator", "otto-5b21e0") + "\n")
    app = create_app(store, MemoryBus(), security=ApiSecurity(tokens=TokenFile(tokens)))
    pools = pool_store_for(store)
    async with serve(app) as port:
        where = ["-H", "127.0.0.1", "-p", str(port), "--token", "otto-5b21e0"]
        assert await run_apitool(*where, "--pool", "A", ICCID, "B1:0") == 0
        assert capsys.readouterr().out == (
            "/api/v1/pools/A: {'name': 'A', 'cards': [{'iccid': '89490200000000000010'}, "
            "{'bank': {'bankId': 1, 'slotNr': 0}}], 'description': ''}\n"
        )
        assert await run_apitool(*where, "--group", "modems", "23:0", "24:0") == 0
        rule = '{"group": "modems", "pools": ["A"], "method": "random"}'
        assert await run_apitool(*where, "--rule", "r", rule) == 0
        assert (await pools.get_rule("r")) == Rule(
            name="r", group="modems", pools=("A",), method=Method.RANDOM
        )
        assert await run_apitool(*where, "--disable-card", "B1:0") == 0
        status = await pools.card_status("B1:0")
        assert status is not None and status.state is CardAdminState.DISABLED
        capsys.readouterr()
        assert await run_apitool(*where, "--show-groups") == 0
        assert capsys.readouterr().out == (
            "/api/v1/groups: {'groups': [{'name': 'modems', 'clients': [{'clientId': 23, "
            "'slotNr': 0}, {'clientId': 24, 'slotNr': 0}], 'description': ''}]}\n"
        )
        slotmap = await store.create_slotmap(
            BankSlot(bank_id=1, slot_nr=0), ClientSlot(client_id=23, slot_nr=0)
        )
        before = time.time()
        assert await run_apitool(*where, "--lease", "1", "0", "60") == 0
        assignment = await pools.get_assignment(slotmap.serial)
        assert assignment is not None and assignment.expires_at is not None
        assert before + 60 <= assignment.expires_at <= time.time() + 60
        assert await run_apitool(*where, "--release", "1", "0") == 0
        assert await store.list_slotmaps(visible_only=True) == []
        assert await run_apitool(*where, "--delete-rule", "r") == 0
        assert await pools.list_rules() == []
        capsys.readouterr()
        assert await run_apitool(*where, "--release", "1", "0") == 1
        assert "404 Not Found: no slotmap with id 65536" in capsys.readouterr().err
        assert await run_apitool(*where, "--group", "g", "23") == 1
        assert "not a client slot" in capsys.readouterr().err
