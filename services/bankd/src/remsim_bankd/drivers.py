"""Card drivers: where the card of a bank slot comes from (pySim's "transports").

``pcsc`` (``PcscCards``) finds the slot's reader by the slot file's pattern; ``sim``
(``StaticCards`` of software SIMs) keeps a fixed card per slot in this process.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Protocol

from rspro import BankSlot

from .card import Card, CardNotPresentError

__all__ = ["CardSource", "StaticCards", "sim_cards"]


class CardSource(Protocol):
    """A card driver: gives the ``Card`` of a bank slot (raises ``CardError`` if none)."""

    def card(self, slot: BankSlot) -> Card: ...

    async def readiness(self) -> Mapping[str, bool]:
        """The card side's checks for ``/readyz``, by name (all true: ready)."""
        ...


class StaticCards:
    """A fixed ``Card`` per bank slot."""

    def __init__(self, cards: Mapping[BankSlot, Card]) -> None:
        self.cards = dict(cards)

    def card(self, slot: BankSlot) -> Card:
        try:
            return self.cards[slot]
        except KeyError:
            raise CardNotPresentError(f"no card configured for {slot}") from None

    async def readiness(self) -> Mapping[str, bool]:
        return {}  # cards of this process: there as long as it runs


def sim_cards(bank_id: int, profiles: Sequence[str | Path]) -> StaticCards:
    """The ``sim`` driver: software SIMs from profile files, one per slot from slot 0 on."""
    from .sim import SimCardDriver  # the software SIM is only loaded when used

    return StaticCards(
        {BankSlot(bank_id, nr): SimCardDriver.from_file(path) for nr, path in enumerate(profiles)}
    )
