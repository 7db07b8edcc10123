"""The dashboard (``/ui``) at scale: 1,000 cards in 4 banks, 1,000 clients, half of them
mapped, in Debian's chromium (Playwright), served by two API replicas on one store and bus.

The records are put straight into a memory store behind two in-process APIs (the dashboard
reads only the store and the bus; real peers would only make the set-up slower); one page
is open on each replica. Measures:

- ``/ui`` rendered by the server (median of ``ROUNDS`` GETs) and its size;
- time to interactive: ``page.goto`` until the event stream is open (badge ``live``);
- the feed's look at the store for one change (read, tree, diff: median of ``ROUNDS``), on
  the replica's event loop once per change whatever the number of open pages;
- update delay: a slotmap turns ACTIVE in the store, announced on the bus, until each page
  shows it (median and worst of ``ROUNDS`` single changes, ``GAP`` apart, on both pages);
- a burst: ``BURST`` maps turn ACTIVE at once, until both pages show the last one;
- the filter: typing an ICCID until every other row of the 1,000-slot table is hidden.

    python bench/dashboard_scale.py [--cards 1000] [--clients 1000]
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

import httpx  # noqa: E402
from playwright.async_api import Page, async_playwright  # noqa: E402

from remsim_api import ui  # noqa: E402
from remsim_api.app import create_app  # noqa: E402
from remsim_common.health import AsgiServer  # noqa: E402
from remsim_control import (  # noqa: E402
    BankdAddress,
    BankRecord,
    BankSlot,
    CardRecord,
    CardState,
    ClientRecord,
    ClientSlot,
    ComponentIdentity,
    ComponentType,
    Slotmap,
    SlotmapEvent,
    SlotmapState,
)
from remsim_control.memory_bus import MemoryBus  # noqa: E402
from remsim_control.memory_store import MemoryStore  # noqa: E402

BANKS = 4
ROUNDS = 10
BURST = 50
"""Maps turned ACTIVE at once in the burst round."""
GAP = 0.4
"""Seconds between two single changes: each one alone, as an operator's click (closer
changes share the feed's ``COALESCE`` window, as the burst shows)."""
CHROMIUM = "/usr/bin/chromium"
TIMEOUT_MS = 30_000
SETTLE = 2.0
"""Seconds after the page is interactive for the refresh its event stream's first change
asks for (what the browser missed while connecting) to be done."""


def iccid(bank_id: int, slot_nr: int) -> str:
    return f"8949{bank_id:03d}{slot_nr:06d}0001"


async def fill(store: MemoryStore, cards: int, clients: int, keep_new: int) -> list[int]:
    """The records; returns the serials of the ``keep_new`` maps left NEW (for the update
    rounds)."""
    per_bank = cards // BANKS
    now = time.time()
    bankd = ComponentIdentity(type=ComponentType.BANKD, name="b", software="remsim-bankd",
                              sw_version="0.1.0")  # fmt: skip
    client = bankd.model_copy(update={"type": ComponentType.CLIENT, "software": "remsim-client"})
    for bank_id in range(1, BANKS + 1):
        await store.register_bank(
            BankRecord(
                bank_id=bank_id,
                number_of_slots=per_bank,
                identity=bankd,
                bankd=BankdAddress(host="192.0.2.1", port=9000 + bank_id),
                remote=f"192.0.2.1:{40000 + bank_id}",
                core_id="core",
            )
        )
        await store.put_cards(bank_id, [
            CardRecord(bank_slot=BankSlot(bank_id=bank_id, slot_nr=nr), state=CardState.PRESENT,
                       atr="3B9F96801FC78031A073BE21136743200718000001A5",
                       iccid=iccid(bank_id, nr), last_seen=now)
            for nr in range(per_bank)
        ])  # fmt: skip
    for n in range(clients):
        await store.register_client(
            ClientRecord(client=ClientSlot(client_id=n % 1000, slot_nr=n // 1000),
                         identity=client, remote=f"198.51.100.1:{20000 + n}", core_id="core")
        )  # fmt: skip
    pending = []
    for n in range(min(cards, clients) // 2):
        made = await store.create_slotmap(
            BankSlot(bank_id=1 + n % BANKS, slot_nr=n // BANKS),
            ClientSlot(client_id=n % 1000, slot_nr=n // 1000),
        )
        if n < keep_new:
            pending.append(made.serial)
        else:
            await store.update_slotmap(made.serial, [SlotmapState.NEW], SlotmapState.ACTIVE)
    return pending


async def main(cards: int, clients: int) -> None:
    store, bus = MemoryStore(), MemoryBus()
    pending = await fill(store, cards, clients, ROUNDS + BURST)
    replicas = [create_app(store, bus) for _ in range(2)]
    servers = [AsgiServer(app, log_level="warning") for app in replicas]
    for server in servers:
        await server.start("127.0.0.1", 0)
    urls = [f"http://127.0.0.1:{server.port}/ui" for server in servers]
    try:
        async with httpx.AsyncClient() as http:
            renders = []
            for _ in range(ROUNDS):
                started = time.perf_counter()
                page_html = (await http.get(urls[0])).text
                renders.append(time.perf_counter() - started)
        async with async_playwright() as playwright:
            browser = await playwright.chromium.launch(executable_path=CHROMIUM)
            pages = [await browser.new_page() for _ in urls]
            interactive = []
            for page, url in zip(pages, urls, strict=True):
                page.set_default_timeout(TIMEOUT_MS)
                started = time.perf_counter()
                await page.goto(url)
                await page.locator("#live-status.on").wait_for()
                interactive.append(time.perf_counter() - started)
            await asyncio.sleep(SETTLE)

            looks = []
            feed: ui.Feed = replicas[0].state.ui_feed
            delays: list[float] = []
            singles = min(ROUNDS, max(1, len(pending) // 2))  # a small run: half and half
            for serial in pending[:singles]:
                slotmap = await store.update_slotmap(
                    serial, [SlotmapState.NEW], SlotmapState.ACTIVE
                )
                assert slotmap is not None
                for page in pages:
                    await watch(page, slotmap)
                started = time.time()
                await bus.publish(SlotmapEvent.of(slotmap))
                delays += await asyncio.gather(*(shown(page, slotmap, started) for page in pages))
                await asyncio.sleep(GAP)
                looking = time.perf_counter()
                await feed.look()  # what the feed does per change (nothing changed: no patch)
                looks.append(time.perf_counter() - looking)

            burst = []
            for serial in pending[singles:]:
                slotmap = await store.update_slotmap(
                    serial, [SlotmapState.NEW], SlotmapState.ACTIVE
                )
                assert slotmap is not None
                burst.append(slotmap)
            burst_delay = 0.0
            if burst:  # none in a run of a few maps
                for page in pages:
                    await watch(page, burst[-1])
                started = time.time()
                for slotmap in burst:
                    await bus.publish(SlotmapEvent.of(slotmap))
                burst_delay = max(
                    await asyncio.gather(*(shown(page, burst[-1], started) for page in pages))
                )

            wanted = iccid(BANKS, cards // BANKS - 1)
            started = time.perf_counter()
            await pages[0].get_by_label("Filter").fill(wanted)
            await pages[0].wait_for_function(
                "n => document.querySelectorAll('#slots-table tbody tr:not([hidden])').length"
                " === n",
                arg=1,
            )
            filtered = time.perf_counter() - started
            await browser.close()
    finally:
        for server in servers:
            await server.close()
        await bus.close()
    ms = 1000
    print(f"dashboard: {cards} cards in {BANKS} banks, {clients} clients, "
          f"{min(cards, clients) // 2} maps; 2 API replicas, a page on each")  # fmt: skip
    print(f"  /ui rendered by the server: {statistics.median(renders) * ms:.0f} ms "
          f"(median of {ROUNDS}), {len(page_html) / 1e6:.2f} MB")  # fmt: skip
    print("  time to interactive (goto until the event stream is open): "
          + ", ".join(f"{t * ms:.0f} ms" for t in interactive))  # fmt: skip
    print(f"  the feed's look at the store per change: median "
          f"{statistics.median(looks) * ms:.0f} ms")  # fmt: skip
    print(f"  update delay, store change + bus event to each page: median "
          f"{statistics.median(delays) * ms:.0f} ms, worst {max(delays) * ms:.0f} ms "
          f"({len(delays)}: {len(looks)} changes x {len(pages)} pages)")  # fmt: skip
    print(f"  burst of {len(burst)} changes until both pages show the last: "
          f"{burst_delay * ms:.0f} ms")  # fmt: skip
    print(f"  filter by ICCID over {cards} rows: {filtered * ms:.0f} ms")


async def watch(page: Page, slotmap: Slotmap) -> None:
    """From now on, note in the page (``window.seenAt``, ``Date.now()``) when it first shows
    ``slotmap`` ACTIVE in the overview (in a folded bank: not visible, but there)."""
    selector = f'.bank li[data-slot="{slotmap.bank}"][data-state="ACTIVE"]'
    await page.evaluate(WATCH, selector)


async def shown(page: Page, slotmap: Slotmap, started: float) -> float:
    """Seconds from ``started`` (``time.time()``: the page's clock too) until ``page``
    showed ``slotmap`` ACTIVE (``watch``); Playwright's own polling is not counted."""
    await page.wait_for_function("() => window.seenAt !== null")
    return float(await page.evaluate("() => window.seenAt")) / 1000 - started


WATCH = """selector => {
    window.seenAt = null;
    const check = () => {
        if (window.seenAt === null && document.querySelector(selector)) window.seenAt = Date.now();
    };
    if (window.watching) window.watching.disconnect();
    window.watching = new MutationObserver(check);
    window.watching.observe(document.body, {subtree: true, childList: true, attributes: true});
    check();
}"""


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--cards", type=int, default=1000)
    parser.add_argument("--clients", type=int, default=1000)
    args = parser.parse_args()
    asyncio.run(main(args.cards, args.clients))
