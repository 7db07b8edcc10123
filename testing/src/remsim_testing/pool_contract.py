"""Contract tests every ``PoolStore`` implementation must pass (memory, SQLite, Redis).

Subclass ``PoolStoreContract`` and provide an async ``pools`` fixture yielding a fresh pool
store; ``PoolRestartContract`` needs an ``open_store`` fixture as ``RestartContract``'s (a
function opening a ``Store`` on the same state each time), and uses the pool store beside it.
"""

from __future__ import annotations

import asyncio

from remsim_control.models import BankSlot, ClientSlot
from remsim_control.pool_store import PoolStore, pool_store_for
from remsim_control.pools import (
    Assignment,
    CardAdminState,
    CardRef,
    CardStatus,
    ClientGroup,
    DailyWindow,
    Method,
    Pool,
    Rule,
)
from remsim_testing.store_contract import OpenStore

B1_0 = BankSlot(bank_id=1, slot_nr=0)
B1_1 = BankSlot(bank_id=1, slot_nr=1)
C5_0 = ClientSlot(client_id=5, slot_nr=0)
ICCID = "8949000000000000001"

POOL_A = Pool(name="A", cards=(CardRef(bank=B1_0), CardRef(iccid=ICCID)), description="lab")
POOL_B = Pool(name="B", cards=(CardRef(bank=B1_1),))
GROUP = ClientGroup(name="modems", clients=(C5_0, ClientSlot(client_id=6, slot_nr=0)))
RULE = Rule(
    name="night",
    group="modems",
    pools=("B", "A"),
    priority=10,
    method=Method.LEAST_USED,
    daily=DailyWindow(start="22:00", end="06:00", tz="Europe/Berlin"),
    lease_seconds=7200,
)


def assignment(serial: int, expires_at: float | None = None) -> Assignment:
    return Assignment(
        serial=serial, bank=B1_0, client=C5_0, card="B1:0", rule="night", started=1.5,
        expires_at=expires_at,
    )  # fmt: skip


class PoolStoreContract:
    async def test_pools_groups_and_rules_are_kept_by_name(self, pools: PoolStore) -> None:
        await pools.put_pool(POOL_B)
        await pools.put_pool(POOL_A)
        await pools.put_group(GROUP)
        await pools.put_rule(RULE)
        assert await pools.list_pools() == [POOL_A, POOL_B]
        assert await pools.get_pool("A") == POOL_A
        assert await pools.get_pool("C") is None
        assert await pools.list_groups() == [GROUP]
        assert await pools.get_group("modems") == GROUP
        assert await pools.list_rules() == [RULE]
        assert await pools.get_rule("night") == RULE

    async def test_a_put_replaces_and_a_delete_says_whether_there_was_one(
        self, pools: PoolStore
    ) -> None:
        await pools.put_pool(POOL_A)
        smaller = POOL_A.model_copy(update={"cards": POOL_A.cards[:1]})
        await pools.put_pool(smaller)
        assert await pools.list_pools() == [smaller]
        assert await pools.delete_pool("A") is True
        assert await pools.delete_pool("A") is False
        await pools.put_group(GROUP)
        assert await pools.delete_group("modems") is True
        assert await pools.list_groups() == []
        await pools.put_rule(RULE)
        assert await pools.delete_rule("night") is True
        assert await pools.get_rule("night") is None

    async def test_card_statuses_change_atomically(self, pools: PoolStore) -> None:
        assert await pools.card_status("B1:0") is None
        blocked = await pools.update_card_status("B1:0", lambda s: s.failed("cardNotPresent", 1))
        assert blocked.state is CardAdminState.BLOCKED and blocked.failures == 1
        await asyncio.gather(
            *(pools.update_card_status("B1:0", lambda s: s.used(2.0)) for _ in range(20))
        )
        status = await pools.card_status("B1:0")
        assert status is not None and status.mapped_seconds == 40.0
        assert status.state is CardAdminState.BLOCKED
        await pools.update_card_status(ICCID, lambda s: s.mapped())
        assert [s.key for s in await pools.card_statuses()] == [ICCID, "B1:0"]  # by key
        enabled = await pools.update_card_status(
            "B1:0", lambda s: s.set_state(CardAdminState.ENABLED)
        )
        assert enabled == CardStatus(key="B1:0", mapped_seconds=40.0, last_failure="cardNotPresent")

    async def test_assignments_are_kept_by_serial(self, pools: PoolStore) -> None:
        for serial in (10, 2, 100):
            await pools.put_assignment(assignment(serial))
        assert [a.serial for a in await pools.list_assignments()] == [2, 10, 100]
        extended = assignment(10, expires_at=99.5)
        await pools.put_assignment(extended)
        assert await pools.get_assignment(10) == extended
        assert await pools.delete_assignment(10) is True
        assert await pools.delete_assignment(10) is False
        assert await pools.get_assignment(10) is None

    async def test_cursors(self, pools: PoolStore) -> None:
        assert await pools.cursors() == {}
        await pools.set_cursor("night", "B1:1")
        await pools.set_cursor("night", "B1:0")
        await pools.set_cursor("day", ICCID)
        assert await pools.cursors() == {"night": "B1:0", "day": ICCID}

    async def test_one_owner_holds_the_duty_until_it_releases_it_or_it_expires(
        self, pools: PoolStore
    ) -> None:
        assert await pools.claim_duty("core-a", 30) is True
        assert await pools.claim_duty("core-b", 30) is False
        assert await pools.claim_duty("core-a", 0.2) is True  # renewed, shorter
        await asyncio.sleep(0.35)
        assert await pools.claim_duty("core-b", 30) is True  # core-a's lapsed
        assert await pools.claim_duty("core-a", 30) is False
        await pools.release_duty("core-a")  # not the holder: nothing
        assert await pools.claim_duty("core-a", 30) is False
        await pools.release_duty("core-b")
        assert await pools.claim_duty("core-a", 30) is True

    async def test_listeners_hear_of_changes(self, pools: PoolStore) -> None:
        heard: list[int] = []

        def listener() -> None:
            heard.append(1)

        pools.add_listener(listener)
        await pools.put_pool(POOL_A)
        await pools.update_card_status("B1:0", lambda s: s.mapped())
        assert len(heard) == 2
        pools.remove_listener(listener)
        await pools.delete_pool("A")
        assert len(heard) == 2


class PoolRestartContract:
    async def test_everything_survives_a_restart(self, open_store: OpenStore) -> None:
        before = await open_store()
        pools = pool_store_for(before)
        await pools.put_pool(POOL_A)
        await pools.put_group(GROUP)
        await pools.put_rule(RULE)
        await pools.update_card_status("B1:0", lambda s: s.failed("cardNotPresent", 3).used(9))
        await pools.put_assignment(assignment(3, expires_at=1234.5))
        await pools.set_cursor("night", "B1:0")
        await before.close()

        after = pool_store_for(await open_store())
        assert after is not pools
        assert await after.list_pools() == [POOL_A]
        assert await after.list_groups() == [GROUP]
        assert await after.list_rules() == [RULE]
        assert await after.card_status("B1:0") == CardStatus(
            key="B1:0", failures=1, last_failure="cardNotPresent", mapped_seconds=9
        )
        assert await after.list_assignments() == [assignment(3, expires_at=1234.5)]
        assert await after.cursors() == {"night": "B1:0"}
