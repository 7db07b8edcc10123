"""The pool assignment engine: sans-IO, a pure function of the state and the time.

``plan(state, event, now, rng)`` looks at what the stores hold (``PoolState``) and returns
what to do (``Plan``): slotmaps to remove, slotmaps to create, card status changes, the
scheduler's own records, and when to be asked again. The ``event`` (``Event``) names what
prompted the call; the plan depends only on ``state`` and ``now`` (re-planning after a lost
or repeated event is harmless), except for the ``rng`` of the ``random`` method.

What a plan does, in this order:

1. **Bookkeeping**: maps that ended (gone or being deleted) are forgotten and their mapped
   time added to their card's usage; visible maps of pool cards that the scheduler does not
   know yet (made by hand or by a back-end) are recorded from now on.
2. **Failures**: a map its bankd refused (``NEW`` with a result other than ``timeout``)
   counts one failure of its card (once per map; ``block_after`` in a row block it); a map
   that became ``ACTIVE`` resets the count.
3. **Removals**: a map whose lease is over; and a map a rule made whose card failed, is no
   longer enabled or no longer in the rule's pools, whose client left the rule's group,
   whose rule is gone, disabled or outside its window, or whose client has an active rule
   of higher priority with a free card.
4. **Assignments**: every connected client of a group, without a visible map, gets a card
   from the active rule of highest priority (then by name) that has one: enabled, at a
   connected bank, not reported empty or unresponsive, at a bank slot that no map (in any
   state) uses and no other assignment of this plan takes.

So a card is never given to two clients: a bank slot in use by any map is never chosen, and
each bank slot at most once per plan (the store refuses a second visible map anyway).
"""

from __future__ import annotations

import enum
import random
from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass, field

from remsim_control.models import BankSlot, CardRecord, CardState, ClientSlot, Slotmap, SlotmapState
from remsim_control.pools import (
    DEFAULT_BLOCK_AFTER,
    Assignment,
    CardAdminState,
    CardRef,
    CardStatus,
    ClientGroup,
    Method,
    Pool,
    Rule,
)

__all__ = ["TIMEOUT_RESULT", "Create", "Event", "Plan", "PoolState", "Remove", "plan"]

TIMEOUT_RESULT = "timeout"
"""A map's ``result`` when its bankd did not answer in time (not the card's fault)."""


class Event(enum.StrEnum):
    """What prompted a plan (for logs; the plan does not depend on it)."""

    TICK = "tick"
    CLIENT_CONNECTED = "client connected"
    MAP_CHANGED = "map changed"
    MAP_REMOVED = "map removed"
    CARD_DISABLED = "card disabled"
    CARD_FAILED = "card failed"
    LEASE_EXPIRED = "lease expired"
    WINDOW_CHANGED = "window opened or closed"
    CONFIG_CHANGED = "pools, groups or rules changed"


@dataclass(frozen=True)
class PoolState:
    """Everything a plan looks at."""

    pools: Mapping[str, Pool]
    groups: Mapping[str, ClientGroup]
    rules: Mapping[str, Rule]
    statuses: Mapping[str, CardStatus]
    assignments: Mapping[int, Assignment]
    """By slotmap serial."""
    cursors: Mapping[str, str]
    """Per cyclic rule, the key of the card it assigned last."""
    slotmaps: Sequence[Slotmap]
    """Every map, in every state."""
    clients: Collection[ClientSlot]
    """The connected clients."""
    inventory: Sequence[CardRecord] = ()
    banks: Collection[int] | None = None
    """The connected banks (None: do not check)."""
    block_after: int = DEFAULT_BLOCK_AFTER


@dataclass(frozen=True)
class Remove:
    slotmap: Slotmap
    reason: str


@dataclass(frozen=True)
class Create:
    bank: BankSlot
    client: ClientSlot
    card: str
    rule: str
    expires_at: float | None


@dataclass
class Plan:
    removals: list[Remove] = field(default_factory=list)
    creations: list[Create] = field(default_factory=list)
    statuses: dict[str, CardStatus] = field(default_factory=dict)
    """Card statuses as this plan leaves them (apply the change, not the value: see
    ``status_changes``)."""
    status_changes: list[tuple[str, str, float]] = field(default_factory=list)
    """(card key, what, amount): ``failed:<result>``, ``succeeded``, ``used`` (seconds),
    ``mapped``: applied to the stored status one by one, atomically."""
    record: list[Assignment] = field(default_factory=list)
    """Assignments to store (new or updated)."""
    forget: list[int] = field(default_factory=list)
    """Serials whose assignment records go."""
    cursors: dict[str, str] = field(default_factory=dict)
    wake_at: float | None = None
    """Plan again at this time at the latest (a lease ends, a window opens or closes)."""

    @property
    def empty(self) -> bool:
        return not (
            self.removals
            or self.creations
            or self.status_changes
            or self.record
            or self.forget
            or self.cursors
        )


class _Planner:
    def __init__(self, state: PoolState, now: float, rng: random.Random) -> None:
        self.state = state
        self.now = now
        self.rng = rng
        self.out = Plan()
        self.statuses = dict(state.statuses)
        self.by_serial = {m.serial: m for m in state.slotmaps}
        self.visible = [m for m in state.slotmaps if m.state.visible]
        self.slot_of_iccid = {
            card.iccid: card.bank_slot for card in state.inventory if card.iccid is not None
        }
        self.inventory = {card.bank_slot: card for card in state.inventory}
        self.busy_slots = {m.bank for m in state.slotmaps}
        self.assignments = dict(state.assignments)
        self.pool_keys = {ref.key for pool in state.pools.values() for ref in pool.cards}
        self._rule_cards: dict[str, list[CardRef]] = {}
        self._rule_keys: dict[str, set[str]] = {}
        self.promised: set[BankSlot] = set()
        self.members = {name: set(group.clients) for name, group in state.groups.items()}
        self.group_index = {
            name: {client: i for i, client in enumerate(group.clients)}
            for name, group in state.groups.items()
        }
        self.active_rules = sorted(
            (rule for rule in state.rules.values() if rule.active(now)),
            key=lambda rule: (-rule.priority, rule.name),
        )
        self.orders: dict[str, list[CardRef]] = {}
        """Per rule, the candidates not yet found unusable in this phase (``choose``)."""
        """Free bank slots a removal counts on (a move to a rule of higher priority)."""

    # --- helpers --------------------------------------------------------------------------

    def status(self, key: str) -> CardStatus:
        return self.statuses.get(key) or CardStatus(key=key)

    def change(self, key: str, what: str, amount: float = 0.0) -> None:
        status = self.status(key)
        if what.startswith("failed:"):
            status = status.failed(what.removeprefix("failed:"), self.state.block_after)
        elif what == "succeeded":
            status = status.succeeded()
        elif what == "used":
            status = status.used(amount)
        elif what == "mapped":
            status = status.mapped()
        self.statuses[key] = status
        self.out.statuses[key] = status
        self.out.status_changes.append((key, what, amount))

    def resolve(self, ref: CardRef) -> BankSlot | None:
        if ref.bank is not None:
            return ref.bank
        assert ref.iccid is not None
        return self.slot_of_iccid.get(ref.iccid)

    def rule_cards(self, rule: Rule) -> list[CardRef]:
        """The cards of ``rule``'s pools, each once, in the order the pools list them."""
        if (cards := self._rule_cards.get(rule.name)) is None:
            seen: dict[str, CardRef] = {}
            for name in rule.pools:
                pool = self.state.pools.get(name)
                for ref in pool.cards if pool is not None else ():
                    seen.setdefault(ref.key, ref)
            cards = self._rule_cards[rule.name] = list(seen.values())
            self._rule_keys[rule.name] = set(seen)
        return cards

    def rule_keys(self, rule: Rule) -> set[str]:
        self.rule_cards(rule)
        return self._rule_keys[rule.name]

    def card_key_at(self, bank: BankSlot) -> str | None:
        """The pool card at ``bank``: by ICCID if a pool names the card there, else by slot."""
        card = self.inventory.get(bank)
        if card is not None and card.iccid in self.pool_keys:
            return card.iccid
        return str(bank) if str(bank) in self.pool_keys else None

    def usable(self, ref: CardRef) -> BankSlot | None:
        """The bank slot of ``ref`` if it may be assigned now."""
        if self.status(ref.key).state is not CardAdminState.ENABLED:
            return None
        slot = self.resolve(ref)
        if slot is None or slot in self.busy_slots or slot in self.promised:
            return None
        if self.state.banks is not None and slot.bank_id not in self.state.banks:
            return None
        card = self.inventory.get(slot)
        if card is not None and card.state is not CardState.PRESENT:
            return None
        return slot

    def rules_of(self, client: ClientSlot) -> list[Rule]:
        """The active rules serving ``client``, best first."""
        return [rule for rule in self.active_rules if client in self.members.get(rule.group, ())]

    def choose(self, rule: Rule, client: ClientSlot) -> tuple[CardRef, BankSlot] | None:
        """The card ``rule`` gives ``client`` now, if any.

        Each rule's candidates are ordered once per phase (cyclic: round the pools from
        after the card it gave last; least-used: by mapped time, then maps; random:
        shuffled) and walked with a pointer: within a phase a card that is not usable
        never becomes usable again (bank slots only get busier), so each plan is linear
        in the number of cards, not clients times cards."""
        cards = self.rule_cards(rule)
        if rule.method is Method.FIXED:
            index = self.group_index[rule.group][client]
            if index >= len(cards) or (slot := self.usable(cards[index])) is None:
                return None
            return cards[index], slot
        order = self.orders.get(rule.name)
        if order is None:
            order = self.orders[rule.name] = self.order(rule, cards)
        while order:
            ref = order[-1]  # the list is reversed: pop from the end
            if (slot := self.usable(ref)) is not None:
                return ref, slot
            order.pop()
        return None

    def order(self, rule: Rule, cards: list[CardRef]) -> list[CardRef]:
        """``rule``'s cards in the order it gives them out, reversed."""
        if rule.method is Method.CYCLIC:
            last = self.out.cursors.get(rule.name, self.state.cursors.get(rule.name))
            keys = [ref.key for ref in cards]
            start = keys.index(last) + 1 if last in keys else 0
            ordered = cards[start:] + cards[:start]
        elif rule.method is Method.LEAST_USED:
            position = {ref.key: i for i, ref in enumerate(cards)}
            ordered = sorted(
                cards,
                key=lambda ref: (
                    self.status(ref.key).mapped_seconds,
                    self.status(ref.key).maps,
                    position[ref.key],
                ),
            )
        else:
            ordered = list(cards)
            self.rng.shuffle(ordered)
        ordered.reverse()
        return ordered

    def wake(self, at: float | None) -> None:
        if at is not None and at > self.now:
            current = self.out.wake_at
            self.out.wake_at = at if current is None else min(current, at)

    # --- the steps ------------------------------------------------------------------------

    def bookkeeping(self) -> None:
        for serial, assignment in sorted(self.assignments.items()):
            slotmap = self.by_serial.get(serial)
            if slotmap is None or not slotmap.state.visible:
                if assignment.card is not None:
                    self.change(assignment.card, "used", self.now - assignment.started)
                self.out.forget.append(serial)
                del self.assignments[serial]
        for slotmap in self.visible:
            if slotmap.serial in self.assignments:
                continue
            key = self.card_key_at(slotmap.bank)
            if key is None:
                continue  # not a pool card: nothing to count
            new = Assignment(
                serial=slotmap.serial,
                bank=slotmap.bank,
                client=slotmap.client,
                card=key,
                started=self.now,
            )
            self.assignments[slotmap.serial] = new
            self.out.record.append(new)
            self.change(key, "mapped")

    def failures(self) -> set[int]:
        """Counts refusals and successes; returns the serials of refused maps."""
        refused = set()
        for slotmap in self.visible:
            assignment = self.assignments.get(slotmap.serial)
            if assignment is None or assignment.card is None:
                continue
            failed = (
                slotmap.state is SlotmapState.NEW
                and slotmap.result is not None
                and slotmap.result != TIMEOUT_RESULT
            )
            if failed:
                refused.add(slotmap.serial)
                if not assignment.failure_counted:
                    self.change(assignment.card, f"failed:{slotmap.result}")
                    self.update(assignment.model_copy(update={"failure_counted": True}))
            elif slotmap.state is SlotmapState.ACTIVE and not assignment.success_counted:
                if self.status(assignment.card).failures:
                    self.change(assignment.card, "succeeded")
                self.update(assignment.model_copy(update={"success_counted": True}))
        return refused

    def update(self, assignment: Assignment) -> None:
        self.assignments[assignment.serial] = assignment
        self.out.record = [a for a in self.out.record if a.serial != assignment.serial]
        self.out.record.append(assignment)

    def removal_reason(self, slotmap: Slotmap, refused: set[int]) -> str | None:
        assignment = self.assignments.get(slotmap.serial)
        if assignment is None:
            return None
        if assignment.expires_at is not None:
            if assignment.expires_at <= self.now:
                return "its lease ended"
            self.wake(assignment.expires_at)
        if assignment.rule is None:
            return None
        rule = self.state.rules.get(assignment.rule)
        if rule is None:
            return f"rule {assignment.rule} was deleted"
        if not rule.active(self.now):
            return f"rule {rule.name} is inactive now"
        if slotmap.client not in self.members.get(rule.group, ()):
            return f"{slotmap.client} is not in the group of rule {rule.name}"
        if slotmap.serial in refused:
            return f"its bankd refused the card ({slotmap.result})"
        card = assignment.card
        if card is None or card not in self.rule_keys(rule):
            return f"the card is no longer in a pool of rule {rule.name}"
        state = self.status(card).state
        if state is not CardAdminState.ENABLED:
            return f"card {card} is {state}"
        for better in self.rules_of(slotmap.client):
            if better.priority <= rule.priority:
                break
            if better.name != rule.name and (choice := self.choose(better, slotmap.client)):
                self.promised.add(choice[1])
                return f"rule {better.name} of higher priority has a card"
        return None

    def removals(self, refused: set[int]) -> set[ClientSlot]:
        freed = set()
        for slotmap in self.visible:
            reason = self.removal_reason(slotmap, refused)
            if reason is not None:
                self.out.removals.append(Remove(slotmap, reason))
                freed.add(slotmap.client)
        return freed

    def assign(self, freed: set[ClientSlot]) -> None:
        self.promised.clear()  # usable again: a new phase
        self.orders.clear()
        mapped = {m.client for m in self.visible} - freed
        for client in sorted(set(self.state.clients), key=lambda c: (c.client_id, c.slot_nr)):
            if client in mapped:
                continue
            for rule in self.rules_of(client):
                choice = self.choose(rule, client)
                if choice is None:
                    continue
                ref, slot = choice
                expires = None if rule.lease_seconds is None else self.now + rule.lease_seconds
                self.out.creations.append(Create(slot, client, ref.key, rule.name, expires))
                self.busy_slots.add(slot)
                if rule.name in self.orders:
                    self.orders[rule.name].pop()  # given out
                if rule.method is Method.CYCLIC:
                    self.out.cursors[rule.name] = ref.key
                self.wake(expires)
                break

    def windows(self) -> None:
        for rule in self.state.rules.values():
            self.wake(rule.next_change(self.now))


def plan(state: PoolState, event: Event, now: float, rng: random.Random | None = None) -> Plan:
    """What to do now (see the module doc); ``event`` is only the occasion."""
    del event  # the plan is a function of the state and the time
    planner = _Planner(state, now, rng or random.Random())
    if not (state.rules or state.assignments or state.pools):
        return planner.out  # nothing configured: not even bookkeeping
    planner.bookkeeping()
    refused = planner.failures()
    freed = planner.removals(refused)
    planner.assign(freed)
    planner.windows()
    return planner.out
