"""The vpcd wire protocol, card side, sans-IO: framing and the request/reply bookkeeping."""

from __future__ import annotations

from dataclasses import dataclass

from .errors import MessageTooLong

__all__ = [
    "GET_ATR",
    "MAX_CAPDU",
    "MAX_MESSAGE",
    "MAX_RAPDU",
    "POWER_OFF",
    "POWER_ON",
    "RESET",
    "VPCD_PORT",
    "Apdu",
    "Control",
    "VpcdConnection",
    "frame",
]

VPCD_PORT = 0x8C7B  # 35963: slot 0; slot n listens on VPCD_PORT + n

POWER_OFF = 0x00
POWER_ON = 0x01
RESET = 0x02
GET_ATR = 0x04

MAX_MESSAGE = 0xFFFF
"""The largest vpcd message: its length field has 2 bytes."""
MAX_CAPDU = MAX_MESSAGE
"""The largest C-APDU that reaches a virtual card. Measured with pcsc-lite 1.9.9 and Debian's
vpcd 0.8 (docs/software-sim.md): SCardTransmit passes 4..65,535 bytes; 65,536..65,548 fail
with SCARD_E_NOT_TRANSACTED and vpcd drops the card's connection; more fail in libpcsclite
(SCARD_E_INSUFFICIENT_BUFFER)."""
MAX_RAPDU = MAX_MESSAGE
"""The largest R-APDU (data + SW1 SW2: up to 65,533 data bytes) a virtual card can return."""


@dataclass(frozen=True, slots=True)
class Control:
    """A 1-byte control message: POWER_OFF, POWER_ON, RESET, GET_ATR (or an unknown code)."""

    code: int


@dataclass(frozen=True, slots=True)
class Apdu:
    """A command APDU to be answered with an R-APDU."""

    data: bytes


def frame(payload: bytes) -> bytes:
    """One vpcd message: 2-byte big-endian length, payload."""
    if not payload or len(payload) > MAX_MESSAGE:
        # A zero-length reply hangs vpcd (it waits for 0 bytes forever); say "gone" by closing.
        raise MessageTooLong(f"a vpcd message has 1..{MAX_MESSAGE} bytes, not {len(payload)}")
    return len(payload).to_bytes(2, "big") + payload


class VpcdConnection:
    """Sans-IO card side of one vpcd connection.

    `feed` the bytes received from vpcd (any slicing) and get the complete messages as
    events; answer each `Apdu` and each GET_ATR `Control` with `reply`, in order. Other
    control messages must not be answered.
    """

    __slots__ = ("_buf", "_owed")

    def __init__(self) -> None:
        self._buf = bytearray()
        self._owed = 0

    @property
    def replies_owed(self) -> int:
        return self._owed

    def feed(self, data: bytes) -> list[Control | Apdu]:
        buf = self._buf
        buf += data
        events: list[Control | Apdu] = []
        while len(buf) >= 2:
            n = buf[0] << 8 | buf[1]
            if len(buf) < 2 + n:
                break
            body = bytes(buf[2 : 2 + n])
            del buf[: 2 + n]
            if n == 1:
                events.append(Control(body[0]))
                if body[0] == GET_ATR:
                    self._owed += 1
            else:
                events.append(Apdu(body))
                self._owed += 1
        return events

    def reply(self, payload: bytes) -> bytes:
        """Frame the answer to the oldest pending GET_ATR or APDU."""
        if not self._owed:
            raise RuntimeError("vpcd does not expect a message now (no unsolicited messages)")
        data = frame(payload)
        self._owed -= 1
        return data
