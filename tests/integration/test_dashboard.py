"""The dashboard at /ui in Debian's chromium (Playwright), against the whole system on one
host: remsim-server (tokens on), remsim-bankd (inventory on) on the virtual SIM bank's two
software SIMs, remsim-client-shell C23:0. Maps made and removed on the page reach the
client; every page follows the change live, without a reload; a viewer gets no actions.
"""

from __future__ import annotations

import hashlib
import os
import re
from collections.abc import Iterator
from urllib.parse import urlsplit

import pytest
from playwright.sync_api import Page, expect

from remsim_bankd.sim import CardProfile
from remsim_testing.simbank import VirtualSimBank
from tests.fixtures.browser import NewPage
from tests.system import RemsimSystem, ShellClient

pytestmark = [pytest.mark.integration, pytest.mark.pcsc]

TOKENS = {"viewer": "viewer-secret-token", "operator": "operator-secret-token"}
ADMIN = "admin-secret-token"
LIVE_WITHIN_MS = 1_500
"""A change shows on every open page within the 1 s goal, plus fetching and swapping the
page's live part on a busy test machine."""
SCREENSHOT = "REMSIM_UI_SCREENSHOT"
"""Where to save the dashboard's screenshot (docs/images/dashboard.png), if set."""


@pytest.fixture(scope="module")
def system(
    virtual_sim_bank: VirtualSimBank, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[RemsimSystem]:
    workdir = tmp_path_factory.mktemp("dashboard")
    tokens = workdir / "api-tokens"
    tokens.write_text(
        "".join(
            f"{role} {role} {hashlib.sha256(secret.encode()).hexdigest()}\n"
            for role, secret in [*TOKENS.items(), ("admin", ADMIN)]
        )
    )
    system = RemsimSystem(virtual_sim_bank, workdir, server_env={"REMSIM_API_TOKENS": str(tokens)})
    system.rest_token = ADMIN
    try:
        system.start_server()
        system.start_bankd(["--inventory", "on"])  # plaintext: the inventory asked for
        yield system
    finally:
        system.stop()


@pytest.fixture(scope="module")
def client(system: RemsimSystem) -> ShellClient:
    client = system.start_shell_client(23)
    system.wait(lambda: system.rest("GET", "/clients/23")[0] == 200, "C23:0 at the server")
    return client


@pytest.fixture(autouse=True)
def _no_maps_left(system: RemsimSystem) -> Iterator[None]:
    yield
    system.rest("POST", "/global-reset")
    system.wait(lambda: system.rest("GET", "/slotmaps")[1]["slotmaps"] == [], "no slotmaps")


def dashboard(system: RemsimSystem, new_page: NewPage, role: str | None) -> Page:
    """A page of /ui logged in with ``role``'s token (None: not logged in)."""
    page = new_page()
    url = f"http://127.0.0.1:{system.rest_port}/ui"
    if role is not None:
        page.context.add_cookies([{"name": "remsim_token", "value": TOKENS[role], "url": url}])
    page.goto(url)
    if role is not None:
        expect(page.locator("#live-status")).to_have_text("live")
    return page


def test_the_overview_shows_the_bank_its_cards_and_the_client(
    system: RemsimSystem,
    client: ShellClient,
    card_profiles: list[CardProfile],
    new_page: NewPage,
) -> None:
    page = dashboard(system, new_page, "operator")
    bank = page.locator('.bank[data-bank="B1"]')
    expect(bank).to_contain_text("Bank B1")
    for nr, profile in enumerate(card_profiles[:2]):
        slot = bank.locator(f'li[data-slot="B1:{nr}"]')
        expect(slot).to_have_attribute("data-state", "free")
        expect(slot).to_contain_text(f"ICCID {profile.iccid}")
        expect(page.locator(f'#slots-table tr[data-slot="B1:{nr}"]')).to_contain_text("present")
    expect(page.locator('[data-free-client="C23:0"]')).to_be_visible()
    expect(page.locator('#clients-table tr[data-client="C23:0"]')).to_contain_text("no map")
    expect(page.locator('#banks-table tr[data-bank="B1"]')).to_contain_text("2")


def test_a_map_made_on_the_page_reaches_the_client_and_every_page_live(
    system: RemsimSystem,
    client: ShellClient,
    card_profiles: list[CardProfile],
    new_page: NewPage,
) -> None:
    page = dashboard(system, new_page, "operator")
    watcher = dashboard(system, new_page, "viewer")
    page.get_by_role("button", name="Map B1:0…").click()  # picks B1:0 in the map form
    expect(page.get_by_label("Bank slot", exact=True)).to_have_value("1:0")
    expect(page.get_by_label("Client", exact=True)).to_be_focused()
    page.get_by_label("Client", exact=True).select_option("23:0")
    page.get_by_role("button", name="Map", exact=True).click()

    client.expect_atr(card_profiles[0].atr)
    expect(page.locator('.bank li[data-slot="B1:0"]')).to_have_attribute("data-state", "ACTIVE")
    system.wait(lambda: system.slotmap_state(0) == "ACTIVE", "B1:0 ACTIVE")
    expect(watcher.locator('.bank li[data-slot="B1:0"]')).to_have_attribute(
        "data-state", "ACTIVE", timeout=LIVE_WITHIN_MS
    )
    expect(watcher.locator('#clients-table tr[data-client="C23:0"]')).to_contain_text("B1:0")
    if os.environ.get(SCREENSHOT):
        page.set_viewport_size({"width": 1200, "height": 900})
        page.screenshot(path=os.environ[SCREENSHOT], full_page=True)

    page.get_by_role("button", name="Unmap B1:0", exact=True).click()
    system.wait(lambda: system.rest("GET", "/slotmaps")[1]["slotmaps"] == [], "B1:0 unmapped")
    expect(watcher.locator('.bank li[data-slot="B1:0"]')).to_have_attribute(
        "data-state", "free", timeout=LIVE_WITHIN_MS
    )
    expect(page.locator('[data-free-client="C23:0"]')).to_be_visible()
    expect(page.locator("#message")).to_have_text("Unmapped B1:0.")


def test_a_viewer_sees_no_actions_and_the_api_refuses_them(
    system: RemsimSystem, client: ShellClient, new_page: NewPage
) -> None:
    system.map(bank_slot=1, client_id=23)
    page = dashboard(system, new_page, "viewer")
    expect(page.locator("#role")).to_have_text("viewer")
    expect(page.locator('.bank li[data-slot="B1:1"]')).not_to_have_attribute("data-state", "free")
    expect(page.get_by_role("button", name=re.compile("Map|Unmap|reset"))).to_have_count(0)
    expect(page.locator("#map-form")).to_have_count(0)
    status = page.evaluate(
        "async () => (await fetch('/api/backend/v1/slotmaps/65537', {method: 'DELETE'})).status"
    )
    assert status == 403
    assert system.rest("GET", "/slotmaps/65537")[0] == 200


def test_global_reset_asks_first(
    system: RemsimSystem, client: ShellClient, new_page: NewPage
) -> None:
    system.map(bank_slot=0, client_id=23)
    page = new_page()
    url = f"http://127.0.0.1:{system.rest_port}/ui"
    page.context.add_cookies([{"name": "remsim_token", "value": ADMIN, "url": url}])
    page.goto(url)
    reset = page.get_by_role("button", name="Global reset…")
    page.once("dialog", lambda dialog: dialog.dismiss())
    reset.click()
    expect(page.locator('#slotmaps-table tr[data-slotmap="65536"]')).to_be_visible()
    assert system.rest("GET", "/slotmaps/65536")[0] == 200
    page.once("dialog", lambda dialog: dialog.accept())
    reset.click()
    expect(page.locator('#slotmaps-table tr[data-slotmap="65536"]')).to_have_count(0)
    expect(page.locator("#message")).to_contain_text("Global reset")


def test_login_filter_and_logout(
    system: RemsimSystem, client: ShellClient, new_page: NewPage
) -> None:
    page = dashboard(system, new_page, None)
    expect(page.locator("#live")).to_have_count(0)  # nothing shown without a token
    page.get_by_label("Token").fill("not-a-token")
    page.get_by_role("button", name="Log in").click()
    expect(page.get_by_role("alert")).to_contain_text("not valid")
    page.get_by_label("Token").fill(TOKENS["viewer"])
    page.keyboard.press("Enter")
    expect(page.locator("#role")).to_have_text("viewer")

    page.get_by_label("Filter").fill("C23")
    expect(page.locator('#slots-table tr[data-slot="B1:0"]')).to_be_hidden()
    expect(page.locator('#clients-table tr[data-client="C23:0"]')).to_be_visible()
    page.get_by_label("Filter").fill("")
    expect(page.locator('#slots-table tr[data-slot="B1:0"]')).to_be_visible()

    page.get_by_role("button", name="Log out").click()
    expect(page.get_by_label("Token")).to_be_visible()


@pytest.mark.parametrize("path", ["/ui", "/docs", "/redoc"])
def test_pages_load_nothing_from_another_host(
    system: RemsimSystem, new_page: NewPage, path: str
) -> None:
    """Every script, style, image and document comes from remsim itself. The one URL of
    another host in a vendored asset (Redoc's sidebar logo on its vendor's CDN) is refused
    by the pages' Content-Security-Policy: the browser never sends that request."""
    page = new_page()
    url = f"http://127.0.0.1:{system.rest_port}{path}"
    page.context.add_cookies([{"name": "remsim_token", "value": TOKENS["viewer"], "url": url}])
    requested: list[str] = []
    refused: list[str] = []
    page.on("request", lambda request: requested.append(request.url))
    page.on("requestfailed", lambda r: refused.append(r.url) if r.failure == "csp" else None)
    if path == "/ui":  # its event stream stays open: the network is never idle
        page.goto(url)
        expect(page.locator("#live-status")).to_have_text("live")
    else:
        page.goto(url, wait_until="networkidle")
    assert len(requested) > 1  # the page's scripts and styles were fetched, from here
    elsewhere = [u for u in requested if urlsplit(u).hostname not in ("127.0.0.1", None)]
    if path == "/redoc":
        assert elsewhere == refused == ["https://cdn.redoc.ly/redoc/logo-mini.svg"]
    else:
        assert elsewhere == [], requested
