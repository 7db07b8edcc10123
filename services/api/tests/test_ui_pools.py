"""The dashboard's pools view (``/ui/pools``, remsim_api.ui.pools_page) in-process, with
FastAPI's TestClient: it lists the pools (their cards' states and usage), groups, rules and
leases that the REST API stored; an operator gets the forms and buttons, a viewer none; the
page loads nothing from another host. The browser test is
tests/integration/test_dashboard_pools.py."""

from __future__ import annotations

import datetime
import re
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from remsim_api import ui
from remsim_api.app import create_app
from remsim_api.security import ApiSecurity, TokenFile
from remsim_api.ui import pools_page
from remsim_common.pki import token_line
from remsim_control import BankSlot, CardRecord, CardState
from remsim_control.memory_bus import MemoryBus
from remsim_control.memory_store import MemoryStore

from .test_security import B1, ORIGIN, SECRETS

ICCID = "8949000000000000011"
C23_0, C24_0 = {"clientId": 23, "slotNr": 0}, {"clientId": 24, "slotNr": 0}
ACTIONS = ("<form", "<button", "data-delete=", "data-card-state=", "data-extend=", "data-release=")
"""What an operator's page has and a viewer's has not (in ``<main>``)."""


def auth(name: str) -> dict[str, str]:
    return {"Cookie": f"remsim_token={SECRETS[name][1]}"}


def main_of(html: str) -> str:
    """The page's ``<main>`` (the header holds the log-out button of every role)."""
    found = re.search(r"<main>.*</main>", html, re.DOTALL)
    assert found is not None
    return found.group(0)


@pytest.fixture
def api(tmp_path: Path) -> Iterator[TestClient]:
    """The API (tokens on) with bank B1, its card ICCID in B1:0 (120 TPDUs), and what an
    operator made through REST: pools A (ICCID, B1:1) and B (B2:0), group modems, rule
    night (B for modems, 22:00 to 06:00, 2 h leases), B1:1 disabled, B1:0 → C23:0 for 10 min."""
    tokens = tmp_path / "api-tokens"
    tokens.write_text("".join(token_line(n, role, s) + "\n" for n, (role, s) in SECRETS.items()))
    store = MemoryStore()
    app = create_app(store, MemoryBus(), security=ApiSecurity(tokens=TokenFile(tokens)))
    with TestClient(app, base_url=ORIGIN) as client:
        portal = client.portal
        assert portal is not None  # the app's event loop, running in the client
        portal.call(store.register_bank, B1)
        card = CardRecord(
            bank_slot=BankSlot(bank_id=1, slot_nr=0), state=CardState.PRESENT, iccid=ICCID,
            last_seen=time.time(), tpdu_count=120,
        )  # fmt: skip
        portal.call(store.put_cards, 1, [card])
        operator = auth("otto")
        for path, body in [
            ("/pools/A", {"cards": [{"iccid": ICCID}, {"bank": {"bankId": 1, "slotNr": 1}}],
                          "description": "lab cards"}),
            ("/pools/B", {"cards": [{"bank": {"bankId": 2, "slotNr": 0}}]}),
            ("/groups/modems", {"clients": [C23_0, C24_0], "description": "measurement modems"}),
            ("/rules/night", {"group": "modems", "pools": ["B"], "priority": 10,
                              "method": "least-used", "leaseSeconds": 7200,
                              "daily": {"start": "22:00", "end": "06:00", "tz": "Europe/Berlin"}}),
            ("/card-states/B1:1", {"state": "disabled"}),
        ]:  # fmt: skip
            answer = client.put(f"/api/v1{path}", json=body, headers=operator)
            assert answer.status_code == 200, answer.text
        mapped = client.post(
            "/api/v1/slotmaps",
            json={"card": {"iccid": ICCID}, "client": C23_0, "duration": 600},
            headers=operator,
        )
        assert mapped.status_code == 201, mapped.text
        yield client


def test_the_view_lists_pools_groups_rules_and_leases_from_the_store(api: TestClient) -> None:
    page = api.get("/ui/pools", headers=auth("vera"))
    assert page.status_code == 200
    html = page.text
    pools = re.findall(r'data-pool="([^"]+)"', html)
    assert pools == ["A", "B"]
    assert "lab cards" in html
    a_rows = html.split('data-pool="A"')[1].split('data-pool="B"')[0]
    card_row = a_rows.split(f'<tr data-card="{ICCID}">')[1].split("</tr>")[0]
    assert "B1:0" in card_row  # where the inventory finds the card
    assert "card-state-enabled" in card_row and ">C23:0<" in card_row  # mapped to
    assert '<td class="num">120</td>' in card_row  # the bankd's TPDUs
    disabled_row = a_rows.split('<tr data-card="B1:1">')[1].split("</tr>")[0]
    assert ">disabled<" in disabled_row
    assert '<tr data-card="B2:0">' in html
    group_row = html.split('<tr data-group="modems">')[1].split("</tr>")[0]
    assert "C23:0, C24:0" in group_row and "measurement modems" in group_row
    rule_row = html.split('<tr data-rule="night">')[1].split("</tr>")[0]
    for text in ("modems → B", ">10<", "least-used", "daily 22:00 to 06:00 (Europe/Berlin)",
                 "2 h 00 min"):  # fmt: skip
        assert text in rule_row
    lease_row = html.split('<tr data-slotmap="65536">')[1].split("</tr>")[0]
    assert "C23:0" in lease_row
    expires = re.search(r'<time datetime="([^"]+)"', lease_row)
    assert expires is not None  # the lease's expiry, about 10 min from now
    shown = datetime.datetime.fromisoformat(expires.group(1)).timestamp()
    assert abs(shown - (time.time() + 600)) < 60


def test_a_change_shows_on_the_next_draw(api: TestClient) -> None:
    assert api.delete("/api/v1/pools/B", headers=auth("otto")).status_code == 200
    assert api.put(
        "/api/v1/card-states/B1:1", json={"state": "enabled"}, headers=auth("otto")
    ).is_success
    html = api.get("/ui/pools", headers=auth("vera")).text
    assert re.findall(r'data-pool="([^"]+)"', html) == ["A"]
    assert ">disabled<" not in html


@pytest.mark.parametrize(("name", "can_edit"), [("vera", False), ("otto", True), ("ada", True)])
def test_only_an_operator_gets_forms_and_buttons(
    api: TestClient, name: str, can_edit: bool
) -> None:
    main = main_of(api.get("/ui/pools", headers=auth(name)).text)
    for action in ACTIONS:
        assert (action in main) is can_edit, action
    for table in ("groups-table", "rules-table", "leases-table"):  # the same tables for all
        assert f'id="{table}"' in main
    if can_edit:
        for form in ("pool-form", "group-form", "rule-form"):
            assert f'id="{form}"' in main
        assert 'data-card-state="enabled" data-card="B1:1"' in main  # re-enable the disabled
        assert 'data-card-state="disabled" data-card="B2:0"' in main


def test_a_viewer_is_refused_the_changes_anyway(api: TestClient) -> None:
    refused = api.put("/api/v1/pools/C", json={"cards": []}, headers=auth("vera"))
    assert refused.status_code == 403
    assert refused.headers["content-type"] == "application/problem+json"
    assert "operator" in refused.json()["detail"]


def test_without_a_token_the_view_asks_for_one(api: TestClient) -> None:
    page = api.get("/ui/pools")
    assert page.status_code == 200 and 'id="login"' in page.text
    assert "modems" not in page.text and ICCID not in page.text
    bad = api.get("/ui/pools", headers={"Cookie": "remsim_token=wrong"})
    assert bad.status_code == 401 and "not valid" in bad.text


def test_the_dashboard_links_to_the_view_and_back(api: TestClient) -> None:
    dashboard = api.get("/ui", headers=auth("vera")).text
    assert '<a href="/ui/pools">Pools</a>' in dashboard
    view = api.get("/ui/pools", headers=auth("vera")).text
    assert '<a href="/ui">Dashboard</a>' in view
    assert '<a href="/ui/pools" aria-current="page">Pools</a>' in view


def test_the_view_names_no_other_host(api: TestClient) -> None:
    page = api.get("/ui/pools", headers=auth("otto"))
    assert page.headers["content-security-policy"] == ui.OWN_ORIGIN_ONLY
    urls = re.findall(r'(?:src|href|action)="([^"]*)"', page.text)
    assert urls and all(url.startswith("/") and not url.startswith("//") for url in urls[1:])
    assert urls[0] == "data:,"  # the empty icon
    assert "http://" not in page.text and "https://" not in page.text
    script = api.get("/ui/static/pools.js")
    assert script.status_code == 200 and "http" not in script.text


@pytest.mark.parametrize(
    ("seconds", "text"),
    [(None, "—"), (0, "0 s"), (59.6, "1 min"), (600, "10 min"), (7500, "2 h 05 min"),
     (90000, "1 d 1 h")],
)  # fmt: skip
def test_durations_read_as_a_person_says_them(seconds: float | None, text: str) -> None:
    assert pools_page.duration(seconds) == text
