"""The `Card` interface every card driver implements (pcsc, software SIM, ...).

The calls are blocking: the bankd runs each slot's card calls in that slot's own worker
thread. `transmit` sends what it is given in the card's protocol (`protocol`, T=0 or T=1)
and returns the answer as it is: on T=0 the procedure-level status words (61xx, 6Cxx, 9Fxx)
come back as they are; a driver never issues GET RESPONSE or re-sends with a corrected Le
itself. In TPDU mode the modem on the other end of remsim does that; in APDU mode the bankd
(`remsim_bankd.apdu`).
"""

from __future__ import annotations

from typing import Protocol, runtime_checkable

from .errors import BankdError

__all__ = [
    "T0",
    "T1",
    "Card",
    "CardError",
    "CardNotPresentError",
    "CardUnresponsiveError",
    "card_protocol",
]

T0, T1 = 0, 1
"""`Card.protocol`: the transmission protocol in use (ISO/IEC 7816-3), T=0 or T=1."""


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

    @property
    def protocol(self) -> int:
        """The protocol the card speaks since `connect` (or the last `reset`): `T0` or `T1`."""
        ...

    def connect(self, *, any_protocol: bool = False) -> bytes:
        """Power the card up (open it) and return its ATR.

        ``any_protocol``: T=0 or T=1, whichever the card prefers (APDU-mode sessions);
        otherwise T=0 when the card offers it (the modem of a TPDU-mode session speaks T=0).
        """
        ...

    def transmit(self, apdu: bytes) -> bytes:
        """Send one command (on T=0 a command TPDU, on T=1 a C-APDU) and return the card's
        answer: data followed by SW1 SW2."""
        ...

    def reset(self, warm: bool = False) -> bytes:
        """Reset the card (cold by default: power cycle) and return the new ATR."""
        ...

    def disconnect(self) -> None:
        """Power the card down and release it; `connect` may be called again later."""
        ...


def card_protocol(card: Card) -> int:
    """``card.protocol``; `T0` for a card object without one (a test double)."""
    protocol: int = getattr(card, "protocol", T0)
    return protocol
