"""The pool scheduler: carries out ``remsim_control.assignment``'s plans in a server core.

It watches the bus (every slotmap change, while on duty with something configured), the
pool store (changes made through this process's REST API) and the clock (a poll every
``POLL_INTERVAL``, and exactly when a lease ends or a rule's window opens or closes), reads
the state, asks the engine for a plan and carries it out through the ordinary slotmap
machinery: ``Store.create_slotmap`` / ``Store.request_removal`` and a ``SlotmapEvent`` on
the bus, exactly as the REST API does.
So bankds and clients, ours or the original's, see nothing new: the core holding their
connections pushes the maps as it pushes any other.

Only the holder of the pool store's duty lease plans (``PoolStore.claim_duty``, renewed every
``DUTY_TTL / 3``): in distributed mode one core acts at a time, and when it dies its lease
lapses after ``DUTY_TTL`` and another core takes over. (If two ever acted at once, the
store would still refuse a second visible map of a bank slot or client slot.)
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import time
from collections.abc import Callable

from remsim_common.logs import RateLimitedLog
from remsim_control import (
    BackendUnavailable,
    BankSlot,
    Bus,
    ClientSlot,
    SlotInUse,
    Slotmap,
    SlotmapEvent,
    Store,
)
from remsim_control.assignment import Event, Plan, PoolState, plan
from remsim_control.audit import AuditEntry, AuditKind
from remsim_control.pool_store import PoolStore, pool_store_for
from remsim_control.pools import DEFAULT_BLOCK_AFTER, Assignment, CardStatus

__all__ = ["DUTY_TTL", "POLL_INTERVAL", "PoolScheduler"]

log = logging.getLogger("remsim.server.pools")

POLL_INTERVAL = 0.5
"""Seconds between two plans when nothing happens (a client connecting announces nothing on
the bus; neither does a change made through another process's API)."""
DUTY_TTL = 5.0
"""Seconds the duty lease lasts unless renewed: how long a dead core's duty stays orphaned."""
ERROR_LOG_INTERVAL = 30.0
"""Seconds between two log lines of the same backend failure."""


def _apply(what: str, amount: float, block_after: int) -> Callable[[CardStatus], CardStatus]:
    def change(status: CardStatus) -> CardStatus:
        if what.startswith("failed:"):
            return status.failed(what.removeprefix("failed:"), block_after)
        if what == "succeeded":
            return status.succeeded()
        if what == "used":
            return status.used(amount)
        return status.mapped()

    return change


class PoolScheduler:
    """Runs in every core; plans only while it holds the duty (``owner``: the core id)."""

    def __init__(
        self,
        store: Store,
        bus: Bus,
        *,
        owner: str,
        pools: PoolStore | None = None,
        clock: Callable[[], float] = time.time,
        poll_interval: float = POLL_INTERVAL,
        duty_ttl: float = DUTY_TTL,
        block_after: int = DEFAULT_BLOCK_AFTER,
        rng: random.Random | None = None,
    ) -> None:
        self.store = store
        self.bus = bus
        self.owner = owner
        self.pools = pools if pools is not None else pool_store_for(store)
        self.clock = clock
        self.poll_interval = poll_interval
        self.duty_ttl = duty_ttl
        self.block_after = block_after
        self.rng = rng or random.Random()
        self.on_duty = False
        self._claimed_at = -float("inf")
        self._wake = asyncio.Event()
        self._idle = False
        """The last plan found nothing configured (no pool, rule or assignment)."""
        self._tasks: list[asyncio.Task[None]] = []
        self._errors = RateLimitedLog(log, ERROR_LOG_INTERVAL)

    async def start(self) -> None:
        self.pools.add_listener(self.wake)
        subscribed = asyncio.Event()
        self._tasks = [
            asyncio.create_task(self._listen(subscribed), name="pool-scheduler-events"),
            asyncio.create_task(self._run(), name="pool-scheduler"),
        ]
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(2):
                await subscribed.wait()

    async def aclose(self) -> None:
        self.pools.remove_listener(self.wake)
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        self._tasks = []
        if self.on_duty:
            self.on_duty = False
            with contextlib.suppress(BackendUnavailable):
                await self.pools.release_duty(self.owner)

    def wake(self) -> None:
        """Plan now (something changed)."""
        self._wake.set()

    async def _listen(self, subscribed: asyncio.Event) -> None:
        while True:
            try:
                async with self.bus.subscribe() as events:
                    subscribed.set()
                    async for _ in events:
                        # A slotmap change matters only to a plan on duty with something
                        # configured: off duty or idle, the poll (and the pool store's
                        # listener) is enough, and a burst of maps costs no round trips
                        # to the store per event (a claim of the duty, or a snapshot).
                        if self.on_duty and not self._idle:
                            self._wake.set()
            except BackendUnavailable:
                pass
            subscribed.set()
            await asyncio.sleep(self.poll_interval)

    async def _run(self) -> None:
        while True:
            wake_at: float | None = None
            try:
                if await self._hold_duty():
                    wake_at = await self.step()
            except BackendUnavailable as exc:
                self._errors.log(logging.WARNING, "backend", "pool scheduler paused: %s", exc)
            except Exception:
                log.exception("pool scheduler step failed")
            delay = self.poll_interval
            if wake_at is not None:
                delay = max(0.0, min(delay, wake_at - self.clock()))
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(delay):
                    await self._wake.wait()
            self._wake.clear()

    async def _hold_duty(self) -> bool:
        now = time.monotonic()
        if self.on_duty and now - self._claimed_at < self.duty_ttl / 3:
            return True
        held = await self.pools.claim_duty(self.owner, self.duty_ttl)
        if held != self.on_duty:
            log.info(
                "pool scheduler %s", "on duty" if held else "off duty", extra={"core": self.owner}
            )
        self.on_duty = held
        self._claimed_at = now if held else -float("inf")
        return held

    async def snapshot(self) -> PoolState | None:
        """The state a plan looks at; None if nothing is configured."""
        pools = self.pools
        rules = {rule.name: rule for rule in await pools.list_rules()}
        assignments = {a.serial: a for a in await pools.list_assignments()}
        pool_list = await pools.list_pools()
        if not (rules or assignments or pool_list):
            return None
        return PoolState(
            pools={pool.name: pool for pool in pool_list},
            groups={group.name: group for group in await pools.list_groups()},
            rules=rules,
            statuses={status.key: status for status in await pools.card_statuses()},
            assignments=assignments,
            cursors=await pools.cursors(),
            slotmaps=await self.store.list_slotmaps(),
            clients=[record.client for record in await self.store.list_clients()],
            inventory=await self.store.cards(),
            banks=[record.bank_id for record in await self.store.list_banks()],
            block_after=self.block_after,
        )

    async def step(self, event: Event = Event.TICK) -> float | None:
        """Plan once and carry the plan out; returns when to plan again at the latest."""
        state = await self.snapshot()
        self._idle = state is None
        if state is None:
            return None
        now = self.clock()
        result = plan(state, event, now, self.rng)
        if not result.empty:
            await self._carry_out(result, now)
        return result.wake_at

    async def _carry_out(self, result: Plan, now: float) -> None:
        pools = self.pools
        for removal in result.removals:
            slotmap = removal.slotmap
            current = await self.store.get_slotmap(slotmap.id)
            if current is None or current.serial != slotmap.serial:
                continue  # gone meanwhile
            removed = await self.store.request_removal(slotmap.id)
            if removed is None:
                continue
            log.info("slotmap removed: %s", removal.reason, extra=_fields(removed.serial, slotmap))
            await self._audit("remove", slotmap.bank, slotmap.client, removal.reason)
            await self._publish(SlotmapEvent.of(removed))
        for serial in result.forget:
            await pools.delete_assignment(serial)
        for assignment in result.record:
            stored = await pools.get_assignment(assignment.serial)
            if stored is not None:  # the API may have set its lease since the snapshot
                assignment = assignment.model_copy(update={"expires_at": stored.expires_at})
            await pools.put_assignment(assignment)
        for key, what, amount in result.status_changes:
            status = await pools.update_card_status(key, _apply(what, amount, self.block_after))
            if what.startswith("failed:") and status.failures == self.block_after:
                log.warning(
                    "card %s blocked after %d failures (%s)", key, status.failures, what[7:]
                )
        for rule, card in result.cursors.items():
            await pools.set_cursor(rule, card)
        for create in result.creations:
            try:
                slotmap = await self.store.create_slotmap(create.bank, create.client)
            except SlotInUse:
                continue  # taken meanwhile (by hand, or by the API): the next plan goes on
            await pools.put_assignment(
                Assignment(
                    serial=slotmap.serial,
                    bank=create.bank,
                    client=create.client,
                    card=create.card,
                    rule=create.rule,
                    started=now,
                    expires_at=create.expires_at,
                )
            )
            await pools.update_card_status(create.card, _apply("mapped", 0, self.block_after))
            reason = f"rule {create.rule} assigned card {create.card}"
            log.info("slotmap added: %s", reason, extra=_fields(slotmap.serial, slotmap))
            await self._audit("assign", create.bank, create.client, reason)
            await self._publish(SlotmapEvent.of(slotmap))

    async def _publish(self, event: SlotmapEvent) -> None:
        try:
            await self.bus.publish(event)
        except BackendUnavailable as exc:  # every core re-reads the store when it is back
            self._errors.log(logging.WARNING, "bus", "pool event not announced: %s", exc)

    async def _audit(self, action: str, bank: BankSlot, client: ClientSlot, detail: str) -> None:
        entry = AuditEntry(
            kind=AuditKind.SLOTMAP,
            actor=self.owner,
            action=f"pool scheduler: {action}",
            result="ok",
            bank_id=bank.bank_id,
            bank_slot=bank.slot_nr,
            client_id=client.client_id,
            client_slot=client.slot_nr,
            detail=detail,
        )
        try:
            await self.store.add_audit(entry)
        except BackendUnavailable as exc:
            self._errors.log(logging.WARNING, "audit", "audit entry lost: %s", exc)


def _fields(serial: int, slotmap: Slotmap) -> dict[str, object]:
    return {
        "map": slotmap.id,
        "serial": serial,
        "bank_slot": str(slotmap.bank),
        "client_slot": str(slotmap.client),
    }
