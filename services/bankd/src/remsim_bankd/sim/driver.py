"""`SimCardDriver`: the software SIM behind the `Card` interface, in-process."""

from __future__ import annotations

from pathlib import Path

from ..card import CardError, CardNotPresentError
from .profile import CardProfile, load_profile
from .simcard import SimCard

__all__ = ["SimCardDriver"]


class SimCardDriver:
    """A `Card` whose card is a `SimCard` in this process.

    `remove()` / `insert()` simulate pulling the card out of the slot and putting it back:
    while removed every call raises `CardNotPresentError`. The card's non-volatile state
    (PIN counters, SQN, file contents) survives removal, as a real card's does.

    `protocol` is the software SIM's default one (its ATR's first offer: T=0 unless it is a
    "t1" profile), whatever `connect` is asked for, as a reader without PPS would choose.
    """

    def __init__(self, card: SimCard | CardProfile) -> None:
        self.sim = card if isinstance(card, SimCard) else SimCard(card)
        self.present = True
        self._powered = False

    @classmethod
    def from_file(cls, path: str | Path) -> SimCardDriver:
        return cls(load_profile(path))

    @property
    def atr(self) -> bytes:
        return self.sim.atr if self._powered else b""

    @property
    def protocol(self) -> int:
        return self.sim.protocol

    def connect(self, *, any_protocol: bool = False) -> bytes:
        self._require_present()
        self._powered = True
        return self.sim.reset()

    def transmit(self, apdu: bytes) -> bytes:
        if not self._powered or not self.present:
            self._require_present()
            raise CardError("card not connected")
        return self.sim.process(apdu)

    def reset(self, warm: bool = False) -> bytes:
        # Warm or cold, the card state is cleared alike; only a cold reset may change the ATR.
        self._require_present()
        if not self._powered:
            raise CardError("card not connected")
        return self.sim.reset(warm)

    def disconnect(self) -> None:
        self._powered = False

    def remove(self) -> None:
        self.present = False
        self._powered = False

    def insert(self) -> None:
        self.present = True

    def _require_present(self) -> None:
        if not self.present:
            raise CardNotPresentError("no card in the slot")
