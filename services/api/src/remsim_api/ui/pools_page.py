"""The dashboard's pools view (``/ui/pools``, issue 16): what it shows, read from the store.

SIM pools with each card's state and usage, client groups, rules, and the leases of the
current maps, in one look at the store (``read``). The page (``templates/pools.html``) is
drawn from it on load and again after each action of ``static/pools.js``, which changes
things through the REST API (``remsim_api.pools``) only; no live stream.
"""

from __future__ import annotations

import datetime
import functools
from dataclasses import dataclass

from remsim_control import BankSlot, CardRecord, ClientSlot, Slotmap, Store
from remsim_control.pool_store import pool_store_for
from remsim_control.pools import (
    Assignment,
    CardAdminState,
    CardRef,
    CardStatus,
    ClientGroup,
    Pool,
    Rule,
)

__all__ = ["LeaseView", "PoolCardView", "PoolView", "PoolsView", "RuleView", "duration", "read"]

WEEKDAYS = ("Mon", "Tue", "Wed", "Thu", "Fri", "Sat", "Sun")
ALL_DAYS = (0, 1, 2, 3, 4, 5, 6)


def duration(seconds: float | None) -> str:
    """``seconds`` as a person reads it: ``45 s``, ``12 min``, ``2 h 05 min``, ``3 d 4 h``."""
    if seconds is None:
        return "—"
    whole = round(seconds)
    if whole < 60:
        return f"{whole} s"
    minutes, hours, days = whole // 60, whole // 3600, whole // 86400
    if hours == 0:
        return f"{minutes} min"
    if days == 0:
        return f"{hours} h {minutes % 60:02d} min"
    return f"{days} d {hours % 24} h"


@dataclass(frozen=True)
class PoolCardView:
    """One card of a pool: as the pool names it, where the inventory finds it, its state."""

    ref: CardRef
    status: CardStatus
    card: CardRecord | None
    """The inventory's record (None: not seen by any bankd)."""
    client: ClientSlot | None
    """The client it is mapped to now."""

    @property
    def key(self) -> str:
        return self.ref.key

    @property
    def where(self) -> str:
        """The other name of the card: its bank slot (named by ICCID) or ICCID (by slot)."""
        if self.card is None:
            return "not in the inventory" if self.ref.iccid else "—"
        if self.ref.iccid is not None:
            return str(self.card.bank_slot)
        return f"ICCID {self.card.iccid}" if self.card.iccid else "—"

    @property
    def state(self) -> str:
        return self.status.state.value

    @property
    def enabled(self) -> bool:
        return self.status.state is CardAdminState.ENABLED

    @property
    def mapped_time(self) -> str:
        return duration(self.status.mapped_seconds)

    @property
    def tpdus(self) -> int | None:
        return None if self.card is None else self.card.tpdu_count


@dataclass(frozen=True)
class PoolView:
    pool: Pool
    cards: list[PoolCardView]


@dataclass(frozen=True)
class RuleView:
    rule: Rule
    active: bool

    @property
    def window(self) -> str:
        """The rule's time windows in words (``always`` without one)."""
        rule = self.rule
        parts = []
        if rule.daily is not None:
            d = rule.daily
            days = "" if d.days == ALL_DAYS else " " + ",".join(WEEKDAYS[day] for day in d.days)
            parts.append(f"daily {d.start} to {d.end}{days} ({d.tz})")
        if rule.not_before is not None:
            parts.append(f"from {_iso(rule.not_before)}")
        if rule.not_after is not None:
            parts.append(f"until {_iso(rule.not_after)}")
        return "; ".join(parts) or "always"

    @property
    def lease(self) -> str:
        return duration(self.rule.lease_seconds)


@dataclass(frozen=True)
class LeaseView:
    """A current map and what the pool scheduler knows of it."""

    slotmap: Slotmap
    assignment: Assignment | None

    @property
    def expires_at(self) -> float | None:
        return None if self.assignment is None else self.assignment.expires_at

    @property
    def expires_iso(self) -> str:
        return "" if self.expires_at is None else _iso(self.expires_at)

    @property
    def rule(self) -> str | None:
        return None if self.assignment is None else self.assignment.rule

    @property
    def card(self) -> str:
        if self.assignment is not None and self.assignment.card is not None:
            return self.assignment.card
        return self.slotmap.iccid or "—"


@dataclass(frozen=True)
class PoolsView:
    pools: list[PoolView]
    groups: list[ClientGroup]
    rules: list[RuleView]
    leases: list[LeaseView]

    @functools.cached_property
    def pool_names(self) -> list[str]:
        return [view.pool.name for view in self.pools]

    @functools.cached_property
    def group_names(self) -> list[str]:
        return [group.name for group in self.groups]

    weekdays = WEEKDAYS
    """For the rule form's day boxes: 0 = Monday, as the REST API counts."""


def _iso(epoch: float) -> str:
    at = datetime.datetime.fromtimestamp(epoch, datetime.UTC)
    return at.isoformat(timespec="seconds").replace("+00:00", "Z")


def _inventory_card(ref: CardRef, cards: list[CardRecord]) -> CardRecord | None:
    for card in cards:
        if (ref.iccid is not None and card.iccid == ref.iccid) or card.bank_slot == ref.bank:
            return card
    return None


async def read(store: Store, now: float) -> PoolsView:
    """The pools view of ``store`` at ``now`` (epoch seconds: which rules are active)."""
    pools = pool_store_for(store)
    statuses = {status.key: status for status in await pools.card_statuses()}
    inventory = await store.cards()
    slotmaps = sorted(await store.list_slotmaps(visible_only=True), key=lambda m: m.id)
    assignments = {a.serial: a for a in await pools.list_assignments()}
    client_at: dict[BankSlot, ClientSlot] = {m.bank: m.client for m in slotmaps}
    client_of_card = {
        a.card: a.client
        for m in slotmaps
        if (a := assignments.get(m.serial)) is not None and a.card is not None
    }
    pool_views = []
    for pool in await pools.list_pools():
        cards = []
        for ref in pool.cards:
            card = _inventory_card(ref, inventory)
            slot = card.bank_slot if card is not None else ref.bank
            client = client_of_card.get(ref.key) or (client_at.get(slot) if slot else None)
            status = statuses.get(ref.key) or CardStatus(key=ref.key)
            cards.append(PoolCardView(ref, status, card, client))
        pool_views.append(PoolView(pool, cards))
    rules = sorted(await pools.list_rules(), key=lambda r: (-r.priority, r.name))
    return PoolsView(
        pools=pool_views,
        groups=await pools.list_groups(),
        rules=[RuleView(rule, rule.active(now)) for rule in rules],
        leases=[LeaseView(m, assignments.get(m.serial)) for m in slotmaps],
    )
