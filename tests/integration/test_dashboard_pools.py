"""The dashboard's pools view (/ui/pools) in Debian's chromium (Playwright), against a real
``remsim-server`` (tokens on, memory store; no bankd: pools name cards by bank slot, a map
to a slot of no connected bank stays NEW). An operator creates a pool, a group and a rule
on the page and the REST API then lists them; a refusal shows the API's problem detail;
the keyboard alone makes a pool; a card is disabled and enabled again, a lease extended and
released; a viewer sees the same tables and no button; a phone's width scrolls nothing
sideways. (tests/integration/test_dashboard.py drives the dashboard's main view.)
"""

from __future__ import annotations

import datetime
import hashlib
import json
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from playwright.sync_api import Page, expect

from tests.fixtures.browser import NewPage
from tests.system import BIN, START_WAIT, Daemon, free_port, server_environment, wait_for

pytestmark = pytest.mark.integration

TOKENS = {"viewer": "viewer-pools-token", "operator": "operator-pools-token"}
PHONE = {"width": 390, "height": 844}
"""A phone's viewport (CSS pixels)."""
HOUR = 3600.0
B1_0 = {"bankId": 1, "slotNr": 0}
TAB_MAX = 10
"""Shift+Tab presses from the pool form's first field back to the new pool's Delete."""


class Server:
    """``remsim-server`` with tokens and a memory store; ``rest`` is the operator's."""

    def __init__(self, workdir: Path) -> None:
        tokens = workdir / "api-tokens"
        tokens.write_text(
            "".join(
                f"{role} {role} {hashlib.sha256(secret.encode()).hexdigest()}\n"
                for role, secret in TOKENS.items()
            )
        )
        self.port = free_port()
        self.base = f"http://127.0.0.1:{self.port}"
        self.daemon = Daemon("server", [
            str(BIN / "remsim-server"), "--store", "memory",
            "--rest-host", "127.0.0.1", "--rest-port", str(self.port),
            "--rspro-host", "127.0.0.1", "--rspro-port", str(free_port()),
            "--bankd-port", str(free_port()),
        ], workdir, env=server_environment(REMSIM_API_TOKENS=str(tokens)))  # fmt: skip
        try:
            wait_for(lambda: self.rest("GET", "/api/v1/pools")[0] == 200, "the API", START_WAIT)
        except BaseException:
            self.daemon.stop()
            raise

    def rest(self, method: str, path: str, body: object = None) -> tuple[int, Any]:
        request = urllib.request.Request(
            self.base + path,
            data=None if body is None else json.dumps(body).encode(),
            headers={"Content-Type": "application/json",
                     "Authorization": f"Bearer {TOKENS['operator']}"},
            method=method,
        )  # fmt: skip
        try:
            with urllib.request.urlopen(request, timeout=5) as response:
                status, data = response.status, response.read()
        except urllib.error.HTTPError as err:
            status, data = err.code, err.read()
        except OSError:  # not listening yet
            return 0, None
        return status, json.loads(data) if data else None

    def names(self, what: str) -> list[str]:
        status, body = self.rest("GET", f"/api/v1/{what}")
        assert status == 200, body
        return [item["name"] for item in body[what]]


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    server = Server(tmp_path_factory.mktemp("dashboard-pools"))
    try:
        yield server
    finally:
        server.daemon.stop()


@pytest.fixture(autouse=True)
def _nothing_left(server: Server) -> Iterator[None]:
    yield
    for what in ("rules", "groups", "pools"):
        for name in server.names(what):
            server.rest("DELETE", f"/api/v1/{what}/{name}")
    for slotmap in server.rest("GET", "/api/v1/slotmaps")[1]["slotmaps"]:
        server.rest("DELETE", f"/api/backend/v1/slotmaps/{slotmap['id']}")


def pools_page(server: Server, new_page: NewPage, role: str, **options: Any) -> Page:
    """/ui/pools logged in with ``role``'s token."""
    page = new_page(**options)
    page.context.add_cookies(  # path /, as the login form sets it
        [{"name": "remsim_token", "value": TOKENS[role], "url": f"{server.base}/"}]
    )
    page.goto(f"{server.base}/ui/pools")
    expect(page.locator("#role")).to_have_text(role)
    return page


def test_an_operator_creates_a_pool_a_group_and_a_rule_and_the_api_lists_them(
    server: Server, new_page: NewPage
) -> None:
    page = pools_page(server, new_page, "operator")
    page.locator("#pool-name").fill("lab")
    page.get_by_label("Cards").fill("B1:0, B1:1 B1:2")
    page.get_by_role("button", name="Save pool").click()
    expect(page.locator("#message")).to_have_text("Saved pool lab (3 cards).")
    expect(page.locator('[data-pool="lab"] tr[data-card="B1:2"]')).to_contain_text("enabled")

    page.locator("#group-name").fill("modems")
    page.get_by_label("Clients").fill("C23:0 C24:0")
    page.get_by_role("button", name="Save group").click()
    expect(page.locator('#groups-table tr[data-group="modems"]')).to_contain_text("C23:0, C24:0")

    page.locator("#rule-name").fill("night")
    page.get_by_label("Group", exact=True).fill("modems")
    page.locator("#rule-pools").fill("lab")
    page.locator("#rule-priority").fill("10")
    page.get_by_label("Method").select_option("least-used")
    page.get_by_label("From").fill("22:00")
    page.get_by_label("to", exact=True).fill("06:00")
    page.get_by_label("time zone").fill("Mars/Olympus")  # refused: the API's detail shows
    page.get_by_role("button", name="Save rule").click()
    expect(page.locator("#message.error")).to_contain_text("refused (400)")
    expect(page.locator("#message")).to_contain_text("Mars/Olympus")
    assert server.names("rules") == []
    page.get_by_label("time zone").fill("Europe/Berlin")
    page.get_by_role("button", name="Save rule").click()
    row = page.locator('#rules-table tr[data-rule="night"]')
    expect(row).to_contain_text("modems → lab")
    expect(row).to_contain_text("least-used")
    expect(row).to_contain_text("daily 22:00 to 06:00 (Europe/Berlin)")

    assert server.names("pools") == ["lab"]
    assert server.names("groups") == ["modems"]
    status, rule = server.rest("GET", "/api/v1/rules/night")
    assert status == 200
    assert (rule["group"], rule["pools"], rule["priority"], rule["method"]) == (
        "modems", ["lab"], 10, "least-used"
    )  # fmt: skip
    assert (rule["daily"]["start"], rule["daily"]["end"]) == ("22:00", "06:00")
    cards = server.rest("GET", "/api/v1/pools/lab")[1]["cards"]
    assert cards == [{"bank": {"bankId": 1, "slotNr": n}} for n in range(3)]

    page.once("dialog", lambda dialog: dialog.accept())
    page.get_by_role("button", name="Delete rule night").click()
    expect(page.locator('#rules-table tr[data-rule="night"]')).to_have_count(0)
    assert server.names("rules") == []


def test_a_rule_gets_its_weekdays_and_validity_from_the_form(
    server: Server, new_page: NewPage
) -> None:
    """The daily window's days (0 = Monday, as REST counts) and the validity interval, which
    the form takes in the browser's own time zone and sends with its offset."""
    page = pools_page(server, new_page, "operator", timezone_id="Europe/Berlin")
    page.locator("#rule-name").fill("weekdays")
    page.get_by_label("Group", exact=True).fill("modems")
    page.locator("#rule-pools").fill("lab")
    page.get_by_label("From").fill("08:00")
    page.get_by_label("to", exact=True).fill("18:00")
    for day in ("Sat", "Sun"):
        page.get_by_label(day, exact=True).uncheck()
    page.get_by_label("not before").fill("2027-01-04T09:00")  # Berlin, winter: UTC+1
    page.get_by_label("not after").fill("2027-07-01T00:00")  # summer: UTC+2
    page.get_by_role("button", name="Save rule").click()
    row = page.locator('#rules-table tr[data-rule="weekdays"]')
    expect(row).to_contain_text("daily 08:00 to 18:00 Mon,Tue,Wed,Thu,Fri (UTC)")
    expect(row).to_contain_text("from 2027-01-04T08:00:00Z")
    expect(row).to_contain_text("until 2027-06-30T22:00:00Z")
    status, rule = server.rest("GET", "/api/v1/rules/weekdays")
    assert status == 200
    assert rule["daily"]["days"] == [0, 1, 2, 3, 4]
    assert (rule["notBefore"], rule["notAfter"]) == ("2027-01-04T08:00:00Z", "2027-06-30T22:00:00Z")

    page.locator("#rule-name").fill("none")  # the form was reset after the save
    page.get_by_label("Group", exact=True).fill("modems")
    page.locator("#rule-pools").fill("lab")
    page.get_by_label("From").fill("08:00")
    page.get_by_label("to", exact=True).fill("18:00")
    for day in ("Mon", "Tue", "Wed", "Thu", "Fri", "Sat", "Sun"):
        page.get_by_label(day, exact=True).uncheck()
    page.get_by_role("button", name="Save rule").click()
    expect(page.locator("#message.error")).to_have_text("A daily window needs at least one day.")
    assert server.names("rules") == ["weekdays"]
    page.once("dialog", lambda dialog: dialog.accept())
    page.get_by_role("button", name="Delete rule weekdays").click()
    expect(row).to_have_count(0)


def test_the_keyboard_alone_makes_a_pool(server: Server, new_page: NewPage) -> None:
    page = pools_page(server, new_page, "operator")
    page.locator("#pool-name").focus()
    page.keyboard.type("kb")
    page.keyboard.press("Tab")
    page.keyboard.type("B3:0")
    page.keyboard.press("Tab")
    page.keyboard.type("typed")
    page.keyboard.press("Enter")  # submits the form
    expect(page.locator('[data-pool="kb"]')).to_contain_text("typed")
    expect(page.locator("#pool-name")).to_be_focused()  # ready for the next one
    assert server.names("pools") == ["kb"]
    delete = page.get_by_role("button", name="Delete pool kb")
    for _ in range(TAB_MAX):  # back into the tables: the new pool's Delete is reachable
        page.keyboard.press("Shift+Tab")
        if delete.evaluate("(button) => button === document.activeElement"):
            break
    expect(delete).to_be_focused()


def test_cards_are_disabled_and_enabled_and_leases_extended_and_released(
    server: Server, new_page: NewPage
) -> None:
    assert server.rest("PUT", "/api/v1/pools/lab", {"cards": [{"bank": B1_0}]})[0] == 200
    body = {"bank": B1_0, "client": {"clientId": 23, "slotNr": 0}, "duration": HOUR}
    made = server.rest("POST", "/api/v1/slotmaps", body)
    assert made[0] == 201, made
    page = pools_page(server, new_page, "operator")

    page.get_by_role("button", name="Disable B1:0 (pool lab)").click()
    expect(page.locator('tr[data-card="B1:0"] .badge')).to_have_text("disabled")
    assert server.rest("GET", "/api/v1/card-states/B1:0")[1]["state"] == "disabled"
    page.get_by_role("button", name="Enable B1:0 (pool lab)").click()
    expect(page.locator('tr[data-card="B1:0"] .badge')).to_have_text("enabled")
    assert server.rest("GET", "/api/v1/card-states/B1:0")[1]["state"] == "enabled"

    def expiry() -> float:
        lease = server.rest("GET", "/api/v1/slotmaps/65536/lease")[1]
        return datetime.datetime.fromisoformat(lease["expiresAt"]).timestamp()

    before = expiry()
    page.get_by_label("Extend by").select_option("7200")
    page.get_by_role("button", name="Extend the lease of B1:0").click()
    expect(page.locator("#message")).to_contain_text("now expires at")
    assert abs(expiry() - (before + 2 * HOUR)) < 2  # from the expiry, not from now

    page.get_by_role("button", name="Release B1:0 from C23:0").click()
    expect(page.locator('#leases-table tr[data-slotmap="65536"]')).to_have_count(0)
    assert server.rest("GET", "/api/v1/slotmaps")[1]["slotmaps"] == []


def test_a_viewer_sees_the_tables_and_no_buttons(server: Server, new_page: NewPage) -> None:
    server.rest("PUT", "/api/v1/pools/lab", {"cards": [{"bank": B1_0}]})
    server.rest("PUT", "/api/v1/groups/modems", {"clients": [{"clientId": 23, "slotNr": 0}]})
    server.rest("PUT", "/api/v1/rules/day", {"group": "modems", "pools": ["lab"]})
    page = pools_page(server, new_page, "viewer")
    expect(page.locator('[data-pool="lab"] tr[data-card="B1:0"]')).to_contain_text("enabled")
    expect(page.locator('#groups-table tr[data-group="modems"]')).to_be_visible()
    expect(page.locator('#rules-table tr[data-rule="day"]')).to_contain_text("modems → lab")
    expect(page.locator("main button")).to_have_count(0)
    expect(page.locator("main form, main select, main textarea")).to_have_count(0)
    status = page.evaluate(
        "async () => (await fetch('/api/v1/pools/lab', {method: 'DELETE'})).status"
    )
    assert status == 403
    assert server.names("pools") == ["lab"]


def test_a_phone_scrolls_nothing_sideways(server: Server, new_page: NewPage) -> None:
    name = "a-pool-with-a-rather-long-name"
    cards = [{"iccid": f"894902000000000{n:05d}"} for n in range(4)]
    server.rest("PUT", f"/api/v1/pools/{name}", {"cards": cards})
    daily = {"start": "22:00", "end": "06:00", "tz": "America/Argentina/Buenos_Aires"}
    server.rest("PUT", "/api/v1/rules/night", {"group": "modems", "pools": [name], "daily": daily})
    page = pools_page(server, new_page, "operator", viewport=PHONE, is_mobile=True, has_touch=True)
    expect(page.locator('#rules-table tr[data-rule="night"]')).to_be_visible()
    layout = page.evaluate(
        """() => ({
            page: document.documentElement.scrollWidth,
            viewport: window.innerWidth,
            boxes: Array.from(document.querySelectorAll("main table, main form"), (e) => {
                const box = e.closest(".scroll") || e;
                return {
                    what: e.id || e.className,
                    right: box.getBoundingClientRect().right,
                    fits: e.scrollWidth <= box.clientWidth
                        || getComputedStyle(box).overflowX === "auto",
                };
            }),
        })"""
    )
    assert layout["page"] <= layout["viewport"], layout  # no sideways scroll of the page
    assert len(layout["boxes"]) == 7  # the pool, groups, rules, leases; three forms
    for box in layout["boxes"]:
        assert box["right"] <= layout["viewport"] and box["fits"], layout
