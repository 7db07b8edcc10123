"""The dashboard's live updates (remsim_api.ui): the page is a tree of nodes, a change is a
patch of only the nodes it changed, and each event stream sends the patches after the
version its page was drawn at (or a refresh when it cannot). The browser side (ui.js
applying the patches) is tested in tests/integration/test_dashboard.py."""

from __future__ import annotations

import asyncio
import re
import time
from collections.abc import AsyncIterator

import pytest

from remsim_api import ui
from remsim_api.security import Role
from remsim_control import (
    BankSlot,
    CardRecord,
    CardState,
    ClientSlot,
    Slotmap,
    SlotmapEvent,
    SlotmapState,
)
from remsim_control.memory_bus import MemoryBus
from remsim_control.memory_store import MemoryStore

from .test_security import B1, C23

B1_0, B1_1 = BankSlot(bank_id=1, slot_nr=0), BankSlot(bank_id=1, slot_nr=1)
ICCID = "8949000000000000011"
CARDS = [
    CardRecord(bank_slot=B1_0, state=CardState.PRESENT, atr="3B9F", iccid=ICCID, last_seen=1.0),
    CardRecord(bank_slot=B1_1, state=CardState.EMPTY, last_seen=1.0),
]
WAIT = 5.0


def draw(d: ui.Dashboard, role: Role = Role.ADMIN) -> str:
    context = ui._flags(role) | {"d": d, "version": "x.1"}
    return ui.templates.get_template("live.html").render(context)


def ops_by_id(ops: list[ui.Op]) -> dict[str, str]:
    return {op.node.id: op.op for op in ops}


def test_every_node_is_an_element_of_the_page_with_its_id() -> None:
    away = BankSlot(bank_id=7, slot_nr=3)  # a map's bank that is not connected
    maps = [Slotmap(serial=1, bank=away, client=C23.client)]
    for d in (ui.snapshot([B1], [C23], maps, CARDS), ui.snapshot([], [], [], [])):
        html = draw(d)
        ids = re.findall(r'\bid="([^"]+)"', html)
        nodes = ui.tree(d)
        assert set(nodes) <= set(ids)
        assert {node.list for node in nodes.values() if node.list} <= set(ids)
        shown = [i for i in ids if i in nodes]
        assert shown == list(nodes)  # the page's order, parents before their children


def test_a_map_patches_only_the_rows_it_changes() -> None:
    before = ui.tree(ui.snapshot([B1], [C23], [], CARDS))
    slotmap = Slotmap(serial=1, bank=B1_0, client=C23.client, state=SlotmapState.ACTIVE)
    after = ui.tree(ui.snapshot([B1], [C23], [slotmap], CARDS))
    ops = ops_by_id(ui.diff(before, after))
    assert ops == {
        "bank-1-sum": "replace",  # the counts
        "ovs-1-0": "replace",
        "map-go": "replace",  # nothing left to map
        "sr-1-0": "replace",
        "sr-1-1": "replace",  # its "Map…" is gone: no client left without a map
        "cr-23-0": "replace",
        "mr-65536": "insert",
        "maps-none": "remove",
        "fc-23-0": "remove",
        "mo-1-0": "remove",
        "mc-23-0": "remove",
    }
    assert ui.diff(after, after) == []


def test_a_new_bank_is_one_insert_with_its_slots_and_goes_in_order() -> None:
    b2 = B1.model_copy(update={"bank_id": 2})
    before = ui.tree(ui.snapshot([b2], [], [], []))
    after = ui.tree(ui.snapshot([B1, b2], [], [], []))
    ops = ui.diff(before, after)
    inserted = {op.node.id: op.after for op in ops if op.op == "insert"}
    assert inserted["bank-1"] is None  # before bank 2: first
    assert "ovs-1-0" not in inserted  # drawn inside bank-1
    assert inserted["sr-1-0"] is None and inserted["sr-1-1"] == "sr-1-0"
    assert inserted["br-1"] is None


def test_card_activity_redraws_its_row_but_a_bankd_s_look_alone_does_not() -> None:
    before = ui.tree(ui.snapshot([B1], [], [], CARDS))
    looked = [card.model_copy(update={"last_seen": 99.0}) for card in CARDS]
    assert ui.diff(before, ui.tree(ui.snapshot([B1], [], [], looked))) == []
    busy = [CARDS[0].model_copy(update={"tpdu_count": 12, "last_activity": 98.0}), CARDS[1]]
    ops = ops_by_id(ui.diff(before, ui.tree(ui.snapshot([B1], [], [], busy))))
    assert ops == {"sr-1-0": "replace"}
    row = draw(ui.snapshot([B1], [], [], busy))
    assert re.search(r'<td class="num">12</td>\s*<td><time datetime="1970-01-01T00:01:38', row)


@pytest.fixture
async def feed() -> AsyncIterator[ui.Feed]:
    store, bus = MemoryStore(), MemoryBus()
    await store.register_bank(B1)
    await store.register_client(C23)
    await store.put_cards(1, [card.model_copy(update={"last_seen": time.time()}) for card in CARDS])
    yield ui.Feed(store, bus)
    await bus.close()


async def next_event(stream: AsyncIterator[str]) -> str:
    while True:
        event = await asyncio.wait_for(anext(stream), WAIT)
        if not event.startswith(("retry:", ":")):
            return event


async def test_a_stream_sends_the_patches_after_its_page_s_version(feed: ui.Feed) -> None:
    _, version = await feed.look()
    stream = ui._patches(feed, version, Role.VIEWER)
    assert (await anext(stream)).startswith("retry:")
    waiting = asyncio.ensure_future(next_event(stream))
    await asyncio.sleep(0.05)  # the stream is open, the feed looking
    slotmap = await feed.store.create_slotmap(B1_0, C23.client)
    started = time.monotonic()
    await feed.bus.publish(SlotmapEvent.of(slotmap))
    event = await waiting
    assert time.monotonic() - started < ui.COALESCE + 0.5
    assert event.startswith(f"id: {feed.token}.2\nevent: patch\n")
    assert '<template data-op="insert" data-list="maps-rows" data-after="">' in event
    assert 'id="mr-65536"' in event
    assert "map-go" not in event  # the map form is not a viewer's
    await stream.aclose()


async def test_a_stream_that_cannot_continue_asks_for_a_refresh(feed: ui.Feed) -> None:
    await feed.look()
    for since in (None, "other.1", f"{feed.token}.99", "garbage"):
        stream = ui._patches(feed, since, Role.VIEWER)
        assert await next_event(stream) == "event: refresh\ndata: \n\n"
        await stream.aclose()


async def test_a_change_too_large_for_a_patch_is_a_refresh(
    feed: ui.Feed, monkeypatch: pytest.MonkeyPatch
) -> None:
    _, version = await feed.look()
    monkeypatch.setattr(ui, "PATCH_MAX", 3)
    await feed.store.create_slotmap(B1_0, C23.client)
    await feed.look()
    stream = ui._patches(feed, version, Role.VIEWER)
    assert await next_event(stream) == "event: refresh\ndata: \n\n"
    await stream.aclose()


def test_a_peer_s_line_break_cannot_end_an_event_early() -> None:
    event = ui._event("patch", "<td>evil\revent: refresh\ndata: x</td>", "t.1")
    fields = [line.split(":")[0] for line in re.split(r"\r\n|\r|\n", event) if line]
    assert fields == ["id", "event", "data", "data", "data"]


async def test_the_history_is_bounded_and_a_page_behind_it_is_refreshed(
    feed: ui.Feed, monkeypatch: pytest.MonkeyPatch
) -> None:
    _, version = await feed.look()
    monkeypatch.setattr(ui, "HISTORY_NODES", 12)
    for slot in (B1_0, B1_1):
        await feed.store.create_slotmap(
            slot, C23.client if slot == B1_0 else ClientSlot(client_id=24, slot_nr=0)
        )
        await feed.look()
    assert len(feed.history) == 1  # the first map's patch (11 nodes) made room for the second
    assert feed.after(version) is None
    assert feed.after(f"{feed.token}.{feed.number - 1}") == [feed.history[-1]]
