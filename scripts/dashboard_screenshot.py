"""docs/images/dashboard.png: the dashboard (``remsim_api.ui``) of an example system, two
bankds with software SIMs and four clients, served by the API on 127.0.0.1 over a memory
store and photographed by Playwright in Debian's chromium.

    uv run --no-sync python scripts/dashboard_screenshot.py [PNG]
"""

from __future__ import annotations

import asyncio
import sys
import time
from pathlib import Path

from playwright.async_api import async_playwright

from remsim_api.app import create_app
from remsim_common.health import AsgiServer
from remsim_control import (
    BankdAddress,
    BankRecord,
    BankSlot,
    CardRecord,
    CardState,
    ClientRecord,
    ClientSlot,
    ComponentIdentity,
    ComponentType,
    SlotmapState,
)
from remsim_control.memory_bus import MemoryBus
from remsim_control.memory_store import MemoryStore

OUTPUT = Path(__file__).resolve().parent.parent / "docs" / "images" / "dashboard.png"
CHROMIUM = "/usr/bin/chromium"
VIEWPORT = {"width": 1280, "height": 900}
ATR = "3B9F96801FC78031A073BE21136743200718000001A5"


def identity(kind: ComponentType, name: str, software: str) -> ComponentIdentity:
    return ComponentIdentity(type=kind, name=name, software=software, sw_version="0.1.0")


async def example_store() -> MemoryStore:
    store = MemoryStore()
    now = time.time()
    for bank_id, slots, port in ((1, 4, 9999), (2, 2, 9998)):
        await store.register_bank(
            BankRecord(
                bank_id=bank_id,
                number_of_slots=slots,
                identity=identity(ComponentType.BANKD, f"bankd-{bank_id}", "remsim-bankd"),
                bankd=BankdAddress(host="192.0.2.10", port=port),
                remote=f"192.0.2.10:{41000 + bank_id}",
                core_id="core",
            )
        )
    cards = [
        CardRecord(bank_slot=BankSlot(bank_id=1, slot_nr=nr), state=CardState.PRESENT, atr=ATR,
                   iccid=f"894900000000000{nr}01", imsi=f"26242000000{nr}001" if nr % 2 else None,
                   last_seen=now)
        for nr in range(4)
    ]  # fmt: skip
    await store.put_cards(1, cards)
    await store.put_cards(
        2,
        [
            CardRecord(bank_slot=BankSlot(bank_id=2, slot_nr=0), state=CardState.EMPTY,
                       last_seen=now),
            CardRecord(bank_slot=BankSlot(bank_id=2, slot_nr=1), state=CardState.UNRESPONSIVE,
                       last_seen=now),
        ],
    )  # fmt: skip
    for client_id in (23, 24, 25, 26):
        await store.register_client(
            ClientRecord(
                client=ClientSlot(client_id=client_id, slot_nr=0),
                identity=identity(ComponentType.CLIENT, f"modem-{client_id}", "remsim-client"),
                remote=f"198.51.100.{client_id}:50000",
                core_id="core",
            )
        )
    for bank_slot, client_id, state in (
        (0, 23, SlotmapState.ACTIVE),
        (1, 24, SlotmapState.UNACKNOWLEDGED),
        (2, 27, SlotmapState.NEW),  # C27:0 is not connected
    ):
        made = await store.create_slotmap(
            BankSlot(bank_id=1, slot_nr=bank_slot), ClientSlot(client_id=client_id, slot_nr=0)
        )
        if state is not SlotmapState.NEW:
            await store.update_slotmap(made.serial, [SlotmapState.NEW], SlotmapState.UNACKNOWLEDGED)
        if state is SlotmapState.ACTIVE:
            await store.update_slotmap(made.serial, [SlotmapState.UNACKNOWLEDGED], state)
    return store


async def main(output: Path) -> None:
    store, bus = await example_store(), MemoryBus()
    server = AsgiServer(create_app(store, bus), log_level="warning")
    await server.start("127.0.0.1", 0)
    try:
        async with async_playwright() as playwright:
            browser = await playwright.chromium.launch(executable_path=CHROMIUM)
            page = await browser.new_page(viewport=VIEWPORT)  # type: ignore[arg-type]
            await page.goto(f"http://127.0.0.1:{server.port}/ui")
            await page.locator("#live-status.on").wait_for()
            output.parent.mkdir(parents=True, exist_ok=True)
            await page.screenshot(path=str(output), full_page=True)
            await browser.close()
    finally:
        await server.close()
        await bus.close()
    print(output)


if __name__ == "__main__":
    asyncio.run(main(Path(sys.argv[1]) if len(sys.argv) > 1 else OUTPUT))
