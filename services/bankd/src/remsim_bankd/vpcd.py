"""A bankd `Card` driver as a vpcd virtual card (the protocol itself is the `vpcd` package).

`CardAsVirtualCard` makes any `Card` one, for `vpcd.VpcdCardRunner` (see `remsim-vcard`).
"""

from __future__ import annotations

import logging

from vpcd import MAX_RAPDU, SW_TOO_LONG, CardGone

from .card import Card, CardError

__all__ = ["SW_TOO_LONG", "CardAsVirtualCard"]

log = logging.getLogger("remsim.vcard")


class CardAsVirtualCard:
    """Serve a `Card` driver to vpcd (a `vpcd.VirtualCard`).

    With `follow_power` (default), pcscd's POWER OFF / POWER ON / RESET are done on the card
    (disconnect / connect / warm reset): the card state is lost on pcscd's idle power-down,
    as with a real card in a real reader. Without it, they are ignored and the card stays
    powered. A failing card raises `vpcd.CardGone`, which takes it out of the reader.
    An R-APDU longer than vpcd's 65,535 bytes (e.g. a READ BINARY with extended Le 0000 of
    a 64 KiB file) is logged as an error and answered `SW_TOO_LONG` (6700).
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
            rapdu = self.card.transmit(apdu)
        except CardError as e:
            self._atr = b""  # reconnect (and re-insert) only once `connect` works again
            raise CardGone(str(e)) from e
        if len(rapdu) > MAX_RAPDU:
            log.error(
                "the card's R-APDU to %s has %d bytes, more than vpcd carries (%d); answering %s",
                apdu[:4].hex(),
                len(rapdu),
                MAX_RAPDU,
                SW_TOO_LONG.hex(),
            )
            return SW_TOO_LONG
        return rapdu
