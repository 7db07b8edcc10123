"""The `Card` interface every card driver implements (pcsc, software SIM, ...).

The calls are blocking: the bankd runs each slot's card calls in that slot's own worker
thread. `transmit` has T=0 semantics: procedure-level status words (61xx, 6Cxx, 9Fxx) come
back as they are; a driver never issues GET RESPONSE or re-sends with a corrected Le itself,
the modem on the other end of remsim does that.
"""

from __future__ import annotations

from typing import Protocol, runtime_checkable

from .errors import BankdError

__all__ = ["Card", "CardError", "CardNotPresentError", "CardUnresponsiveError"]


class CardError(BankdError):
    """Base of all card driver errors: the card cannot be used (right now)."""


class CardNotPresentError(CardError):
    """No card in the slot (reader empty, card removed, reader gone)."""


class CardUnresponsiveError(CardError):
    """A card is there but does not answer (mute, timeout, transport failure)."""


@runtime_checkable
class Card(Protocol):
    """One card in one slot, as seen by the bankd."""

    @property
    def atr(self) -> bytes:
        """ATR of the last power-up or reset; empty before `connect`."""
        ...

    def connect(self) -> bytes:
        """Power the card up (open it) and return its ATR."""
        ...

    def transmit(self, apdu: bytes) -> bytes:
        """Send one C-APDU (T=0 TPDU bytes) and return the R-APDU: data followed by SW1 SW2."""
        ...

    def reset(self, warm: bool = False) -> bytes:
        """Reset the card (cold by default: power cycle) and return the new ATR."""
        ...

    def disconnect(self) -> None:
        """Power the card down and release it; `connect` may be called again later."""
        ...
