"""Card activity in the inventory (the dashboard's TPDU count and last activity): the bankd
counts the TPDUs each slot's card answered, mapped cards included, and adds them to its
inventory report (``tpduCount``, ``idleMs``), sent again every ``ACTIVITY_REPORT`` while
the counts change: never one message per TPDU, and never to a server not ours."""

from __future__ import annotations

import asyncio
import time

import pytest

from remsim_bankd import core as core_module
from remsim_bankd.bankd import bankd_identity
from remsim_bankd.core import BankdCore, ReportCards
from remsim_bankd.inventory import ACTIVITY_REPORT, TpduCounters
from remsim_testing import bankd as peers
from remsim_testing.bankd import ScriptedServer, create_mapping
from rspro import BankSlot, CardInfo, CardInventoryInd, CardState, ClientSlot, ResultCode

from .test_bankd_inventory import CARD0, EMPTY1, running_bankd, sim

C23 = ClientSlot(23, 0)
B0 = BankSlot(1, 0)
IDENTITY = bankd_identity("activity", "1.0.0")
SELECT_MF = bytes.fromhex("a0a40000023f00")
QUICK_REPORT = 0.2
"""``ACTIVITY_REPORT`` in the end-to-end tests (seconds)."""

pytestmark = pytest.mark.timeout(30)


def test_the_counts_and_idle_time_go_into_the_report() -> None:
    counters = TpduCounters(3)
    assert counters.report([CARD0, EMPTY1]) == (CARD0, EMPTY1)  # no activity: as identified
    now = time.perf_counter()
    for _ in range(3):
        counters.count(0, now - 2.0)
    counters.count(2, now)  # a slot mapped since the start: never identified
    assert counters.changed
    card0, empty1, card2 = counters.report([CARD0, EMPTY1])
    assert (card0.iccid, card0.tpdu_count) == (CARD0.iccid, 3)
    assert card0.idle_ms is not None and 2000 <= card0.idle_ms < 3000
    assert empty1 == EMPTY1
    assert (card2.slot_nr, card2.state, card2.tpdu_count, card2.iccid) == (
        2,
        CardState.PRESENT,
        1,
        None,
    )
    assert not counters.changed  # until the next TPDU


def test_activity_is_reported_every_few_seconds_while_it_changes_only() -> None:
    core = BankdCore(1, 2, IDENTITY, inventory=True, inventory_poll=60.0)
    core.start_inventory(0.0)
    core.card_identified(CARD0)
    core.card_identified(EMPTY1)
    assert core.next_deadline() == ACTIVITY_REPORT
    assert core.handle_timeout(ACTIVITY_REPORT) == []  # no TPDU yet
    core.tpdus.count(0, time.perf_counter())
    core.tpdus.count(0, time.perf_counter())
    (report,) = core.handle_timeout(2 * ACTIVITY_REPORT)
    assert isinstance(report, ReportCards)
    assert [card.tpdu_count for card in report.cards] == [2, None]
    assert core.handle_timeout(3 * ACTIVITY_REPORT) == []  # unchanged: nothing


def test_without_the_inventory_activity_is_counted_but_never_reported() -> None:
    core = BankdCore(1, 2, IDENTITY)
    core.start_inventory(0.0)
    core.tpdus.count(0, time.perf_counter())
    assert core.next_deadline() is None


async def test_a_mapped_card_s_tpdus_reach_the_server_in_few_reports(
    server: ScriptedServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(core_module, "ACTIVITY_REPORT", QUICK_REPORT)
    async with running_bankd(server, {B0: sim("card0")}, inventory="on") as bankd:
        peer = await server.bankd()
        assert await create_mapping(peer, C23, B0) is ResultCode.OK
        client, _ = await peers.connect_client(bankd.port, C23)
        started = time.monotonic()
        tpdus = 0
        while time.monotonic() - started < 4 * QUICK_REPORT:
            assert (await peers.transceive(client, SELECT_MF, C23, B0))[0] == 0x9F  # answered
            tpdus += 1
        reports: list[tuple[CardInfo, ...]] = []
        while not reports or reports[-1][0].tpdu_count != tpdus:
            msg, _ = await peer.expect(CardInventoryInd, timeout=5.0)
            reports.append(msg.cards)
        elapsed = time.monotonic() - started
        assert len(reports) <= elapsed / QUICK_REPORT + 2  # a report per window, not per TPDU
        card0 = reports[-1][0]
        assert (card0.slot_nr, card0.state) == (0, CardState.PRESENT)
        assert card0.idle_ms is not None and card0.idle_ms < 5000
        await peer.expect_nothing(3 * QUICK_REPORT)  # idle: no more reports
        client.close()


async def test_a_plaintext_server_gets_no_activity_either(
    server: ScriptedServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(core_module, "ACTIVITY_REPORT", QUICK_REPORT)
    async with running_bankd(server, {B0: sim("card0")}) as bankd:  # inventory auto: plaintext
        peer = await server.bankd()
        assert await create_mapping(peer, C23, B0) is ResultCode.OK
        client, _ = await peers.connect_client(bankd.port, C23)
        for _ in range(5):
            await peers.transceive(client, SELECT_MF, C23, B0)
        await peer.expect_nothing(3 * QUICK_REPORT)
        client.close()
        await asyncio.sleep(0)
