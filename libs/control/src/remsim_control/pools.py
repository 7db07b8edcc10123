"""SIM pools, client groups, assignment rules, card states and leases (issue 16): the models.

- A **pool** is a named, ordered set of cards, each named by ICCID (found through the card
  inventory) or by bank slot.
- A **client group** is a named, ordered set of client slots.
- A **rule** links a group to one or more pools, with a priority (higher first), an
  assignment method and optional time windows; while a rule is active, a connected client
  of its group without a map gets a card of its pools.
- A **card status** (per pool member, keyed by ``CardRef.key``) says whether the card may be
  assigned (``enabled``), is kept out by the operator (``disabled``) or was taken out of
  rotation after ``block_after`` consecutive failures (``blocked``), with usage counters.
- An **assignment** is what the pool scheduler knows of one slotmap: the card it uses, the
  rule that made it (``None``: made by hand or by a back-end) and its lease (``expires_at``).

The sans-IO engine deciding what to do with them is ``remsim_control.assignment``; the
stores keeping them are ``remsim_control.pool_store``.
"""

from __future__ import annotations

import datetime
import enum
import re
import zoneinfo
from typing import Self

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from remsim_control.models import BankSlot, ClientSlot

__all__ = [
    "DEFAULT_BLOCK_AFTER",
    "NAME_PATTERN",
    "Assignment",
    "CardAdminState",
    "CardRef",
    "CardStatus",
    "ClientGroup",
    "DailyWindow",
    "Method",
    "Pool",
    "Rule",
    "parse_card_ref",
]

DEFAULT_BLOCK_AFTER = 3
"""Consecutive failures (refused maps) after which a card is blocked."""
NAME_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$"
"""Names of pools, groups and rules: safe in a URL path and in a Redis key."""

_SLOT_REF = re.compile(r"^B(\d{1,4}):(\d{1,4})$")
_ICCID = re.compile(r"^[0-9]{10,20}[0-9A-F]?$")
_HHMM = re.compile(r"^([01]\d|2[0-3]):([0-5]\d)$")


class _Frozen(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class CardRef(_Frozen):
    """One card of a pool: by ``iccid`` (wherever the inventory finds it) or by ``bank``
    slot (whatever card is in it), exactly one of them."""

    iccid: str | None = Field(default=None, pattern=_ICCID.pattern)
    bank: BankSlot | None = None

    @model_validator(mode="after")
    def _one(self) -> Self:
        if (self.iccid is None) == (self.bank is None):
            raise ValueError("a card is named by exactly one of iccid or bank")
        return self

    @property
    def key(self) -> str:
        """The card's status key: its ICCID, or its bank slot as ``B1:0``."""
        return self.iccid if self.iccid is not None else str(self.bank)

    def __str__(self) -> str:
        return self.key


def parse_card_ref(key: str) -> CardRef:
    """The inverse of ``CardRef.key``: ``B1:0`` names a bank slot, digits an ICCID; raises
    ``ValueError`` for anything else."""
    if match := _SLOT_REF.match(key):
        return CardRef(bank=BankSlot(bank_id=int(match[1]), slot_nr=int(match[2])))
    if _ICCID.match(key.upper()):
        return CardRef(iccid=key.upper())
    raise ValueError(f"{key!r} names no card (an ICCID, or a bank slot as B1:0)")


class Pool(_Frozen):
    name: str = Field(pattern=NAME_PATTERN)
    cards: tuple[CardRef, ...] = ()
    description: str = ""

    @field_validator("cards")
    @classmethod
    def _distinct(cls, cards: tuple[CardRef, ...]) -> tuple[CardRef, ...]:
        keys = [card.key for card in cards]
        if len(set(keys)) != len(keys):
            raise ValueError("a pool names a card twice")
        return cards


class ClientGroup(_Frozen):
    name: str = Field(pattern=NAME_PATTERN)
    clients: tuple[ClientSlot, ...] = ()
    description: str = ""

    @field_validator("clients")
    @classmethod
    def _distinct(cls, clients: tuple[ClientSlot, ...]) -> tuple[ClientSlot, ...]:
        if len(set(clients)) != len(clients):
            raise ValueError("a group names a client slot twice")
        return clients


class Method(enum.StrEnum):
    FIXED = "fixed"
    """The n-th client of the group gets the n-th card of the pools (today's explicit maps)."""
    CYCLIC = "cyclic"
    """The next free card after the one this rule assigned last, round the pools."""
    LEAST_USED = "least-used"
    """The free card with the least mapped time (then the fewest maps)."""
    RANDOM = "random"
    """Any free card."""


def _minutes(hhmm: str) -> int:
    match = _HHMM.match(hhmm)
    assert match is not None  # validated
    return int(match[1]) * 60 + int(match[2])


class DailyWindow(_Frozen):
    """Every day (of ``days``: 0 = Monday) from ``start`` to ``end`` (``HH:MM``) in the time
    zone ``tz``; an ``end`` before ``start`` runs past midnight into the next day (which
    need not be one of ``days``), ``end == start`` is the whole day."""

    start: str = Field(pattern=_HHMM.pattern, examples=["22:00"])
    end: str = Field(pattern=_HHMM.pattern, examples=["06:00"])
    days: tuple[int, ...] = (0, 1, 2, 3, 4, 5, 6)
    tz: str = "UTC"

    @field_validator("days")
    @classmethod
    def _weekdays(cls, days: tuple[int, ...]) -> tuple[int, ...]:
        if not days or any(not 0 <= day <= 6 for day in days):
            raise ValueError("days are weekdays 0 (Monday) .. 6 (Sunday), at least one")
        return tuple(sorted(set(days)))

    @field_validator("tz")
    @classmethod
    def _zone(cls, tz: str) -> str:
        try:
            zoneinfo.ZoneInfo(tz)
        except (zoneinfo.ZoneInfoNotFoundError, ValueError) as exc:
            raise ValueError(f"unknown time zone {tz!r}") from exc
        return tz

    def _intervals(self, around: float) -> list[tuple[float, float]]:
        """The window's intervals (epoch seconds) that start from two days before to eight
        days after ``around``."""
        zone = zoneinfo.ZoneInfo(self.tz)
        today = datetime.datetime.fromtimestamp(around, zone).date()
        start, end = _minutes(self.start), _minutes(self.end)
        length = (end - start) % (24 * 60) or 24 * 60
        intervals = []
        for offset in range(-2, 9):
            day = today + datetime.timedelta(days=offset)
            if day.weekday() not in self.days:
                continue
            begin = datetime.datetime.combine(
                day, datetime.time(start // 60, start % 60), tzinfo=zone
            )
            finish = begin + datetime.timedelta(minutes=length)
            intervals.append((begin.timestamp(), finish.timestamp()))
        return intervals

    def contains(self, now: float) -> bool:
        return any(begin <= now < finish for begin, finish in self._intervals(now))

    def next_change(self, now: float) -> float | None:
        """The first time after ``now`` at which the window opens or closes."""
        edges = [t for interval in self._intervals(now) for t in interval if t > now]
        return min(edges, default=None)


class Rule(_Frozen):
    """While active, connected clients of ``group`` without a map get cards of ``pools``."""

    name: str = Field(pattern=NAME_PATTERN)
    group: str = Field(pattern=NAME_PATTERN)
    pools: tuple[str, ...] = Field(min_length=1)
    priority: int = 0
    """Higher first: a client is served by the active rule of highest priority that has a
    free card, and moved to it from a rule of lower priority when one becomes free."""
    method: Method = Method.CYCLIC
    enabled: bool = True
    not_before: float | None = None
    """Epoch seconds: the rule is inactive before."""
    not_after: float | None = None
    """Epoch seconds: the rule is inactive from then on (its maps are removed)."""
    daily: DailyWindow | None = None
    """A window repeating every day: the rule is inactive outside it."""
    lease_seconds: float | None = Field(default=None, gt=0)
    """Each map this rule makes lasts that long; then the next card is assigned."""

    @field_validator("pools")
    @classmethod
    def _pool_names(cls, pools: tuple[str, ...]) -> tuple[str, ...]:
        if any(not re.match(NAME_PATTERN, pool) for pool in pools):
            raise ValueError("a pool name is invalid")
        return pools

    def active(self, now: float) -> bool:
        return (
            self.enabled
            and (self.not_before is None or now >= self.not_before)
            and (self.not_after is None or now < self.not_after)
            and (self.daily is None or self.daily.contains(now))
        )

    def next_change(self, now: float) -> float | None:
        """The first time after ``now`` at which ``active`` may change."""
        edges = [t for t in (self.not_before, self.not_after) if t is not None and t > now]
        if self.daily is not None and (edge := self.daily.next_change(now)) is not None:
            edges.append(edge)
        return min(edges, default=None)


class CardAdminState(enum.StrEnum):
    ENABLED = "enabled"
    DISABLED = "disabled"
    """By the operator: never assigned; a rule's map of it is removed."""
    BLOCKED = "blocked"
    """Automatically, after ``block_after`` consecutive failures; cleared by the operator."""


class CardStatus(_Frozen):
    """A pool card's state and usage (``key``: ``CardRef.key``)."""

    key: str
    state: CardAdminState = CardAdminState.ENABLED
    failures: int = Field(default=0, ge=0)
    """Consecutive failures: refused maps (cardNotPresent, …) since the last success."""
    last_failure: str | None = None
    """The bankd's last refusal (RSPRO result code name)."""
    mapped_seconds: float = Field(default=0.0, ge=0)
    """Total time its maps existed (ended maps; the running one is added when it ends)."""
    maps: int = Field(default=0, ge=0)
    """Maps made of it."""

    def failed(self, result: str, block_after: int) -> CardStatus:
        failures = self.failures + 1
        state = self.state
        if state is CardAdminState.ENABLED and failures >= block_after:
            state = CardAdminState.BLOCKED
        return self.model_copy(
            update={"failures": failures, "last_failure": result, "state": state}
        )

    def succeeded(self) -> CardStatus:
        return self.model_copy(update={"failures": 0})

    def used(self, seconds: float) -> CardStatus:
        return self.model_copy(update={"mapped_seconds": self.mapped_seconds + max(0.0, seconds)})

    def mapped(self) -> CardStatus:
        return self.model_copy(update={"maps": self.maps + 1})

    def set_state(self, state: CardAdminState) -> CardStatus:
        """The operator's change; enabling clears a block and the failure count."""
        failures = 0 if state is CardAdminState.ENABLED else self.failures
        return self.model_copy(update={"state": state, "failures": failures})


class Assignment(_Frozen):
    """What the pool scheduler knows of slotmap ``serial``."""

    serial: int
    bank: BankSlot
    client: ClientSlot
    card: str | None = None
    """The pool card's key (``CardRef.key``); None: a card of no pool."""
    rule: str | None = None
    """The rule that made the map; None: made by hand or by a back-end."""
    started: float
    expires_at: float | None = None
    """The lease: the map is removed then (None: no lease)."""
    failure_counted: bool = False
    """Its refusal was counted (once per map)."""
    success_counted: bool = False
    """Its success reset the card's failure count (once per map)."""
