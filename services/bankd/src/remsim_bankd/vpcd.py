"""A bankd `Card` driver as a vpcd virtual card (the protocol itself is the `vpcd` package).

`CardAsVirtualCard` makes any `Card` one, for `vpcd.VpcdCardRunner` (see `remsim-vcard`).
"""

from __future__ import annotations

from vpcd import CardGone

from .card import Card, CardError

__all__ = ["CardAsVirtualCard"]


class CardAsVirtualCard:
    """Serve a `Card` driver to vpcd (a `vpcd.VirtualCard`).

    With `follow_power` (default), pcscd's POWER OFF / POWER ON / RESET are done on the card
    (disconnect / connect / warm reset): the card state is lost on pcscd's idle power-down,
    as with a real card in a real reader. Without it, they are ignored and the card stays
    powered. A failing card raises `vpcd.CardGone`, which takes it out of the reader.
    """

    def __init__(self, card: Card, *, follow_power: bool = True) -> None:
        self.card = card
        self.follow_power = follow_power
        self._atr = b""

    @property
    def present(self) -> bool:
        if not self._atr:
            try:
                self._atr = self.card.connect()
            except CardError:
                return False
        return True

    @property
    def atr(self) -> bytes:
        return self._atr

    def power_on(self) -> None:
        if self.follow_power:
            try:
                self._atr = self.card.connect()
            except CardError as e:
                raise CardGone(str(e)) from e

    def power_off(self) -> None:
        if self.follow_power:
            try:
                self.card.disconnect()
            except CardError as e:
                raise CardGone(str(e)) from e

    def reset(self) -> None:
        if self.follow_power:
            try:
                self._atr = self.card.reset(warm=True)
            except CardError as e:
                raise CardGone(str(e)) from e

    def transmit(self, apdu: bytes) -> bytes:
        try:
            return self.card.transmit(apdu)
        except CardError as e:
            self._atr = b""  # reconnect (and re-insert) only once `connect` works again
            raise CardGone(str(e)) from e
