"""Sans-IO T=0 TPDU assembly for card emulation (simtrace2-cardem.md §8).

The firmware hands the host each command's 5-byte header (CLA INS P1 P2 P3) and then waits.
:class:`TpduAssembler` decides, from the APDU case of the header, whether the modem still
has to send command data (answer with the ACK procedure byte, ``INS``, flagged PB_AND_RX)
or whether the TPDU is complete and goes to the bankd. The bankd's answer is an R-APDU as
PC/SC returns it (response data, then SW1 SW2, 61xx/6Cxx unchanged); :meth:`respond` turns
it into the TX_DATA messages the firmware sends on to the modem.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping
from dataclasses import dataclass

from .protocol import HEADER_LEN, MAX_OUT_TRANSFER, DataFlags, RxData, TxData

__all__ = ["ForwardTpdu", "TpduAction", "TpduAssembler", "apdu_case"]

log = logging.getLogger("remsim.client.st2")

_Rule = int | Callable[[bytes], int]


def _uicc_helper(hdr: bytes) -> int:
    """UICC MANAGE SECURE CHANNEL (73) and TRANSACT DATA (75): the case depends on P1/P2."""
    ins, p1, p2 = hdr[1], hdr[2], hdr[3]
    if ins == 0x73:
        if p1 == 0x00:
            return 2
        if p1 & 0x07 in (1, 2, 3):
            c = p2 >> 5
            if p2 == 0x80 or c == 0:
                return 3
            return 2 if c in (1, 5) else 0
        return 3 if p1 & 0x07 == 4 else 0
    return 3 if p1 & 0x04 else 2  # 0x75


def _gp_helper(hdr: bytes) -> int:
    """GlobalPlatform STORE DATA, GET STATUS vs. ETSI STATUS, GET DATA."""
    ins, p1, p3 = hdr[1], hdr[2], hdr[4]
    if ins == 0xE2:
        return 4 if p1 & 0x01 else 3
    if ins == 0xF2:
        return 4 if p1 & 0xF0 else 2
    return 2 if p3 == 0x00 else 4  # 0xCA, 0xCB


_GSM: Mapping[int, _Rule] = {
    0xA4: 4, 0xF2: 2, 0xB0: 2, 0xD6: 3, 0xB2: 2, 0xDC: 3, 0xA2: 4, 0x32: 4, 0x20: 3, 0x24: 3,
    0x26: 3, 0x28: 3, 0x2C: 3, 0x04: 1, 0x44: 1, 0x88: 4, 0xFA: 1, 0xC0: 2, 0x10: 3, 0xC2: 4,
    0x12: 2, 0x14: 3,
}  # fmt: skip
_SAT: Mapping[int, _Rule] = {0x10: 3, 0xC2: 4, 0x12: 2, 0x14: 3, 0x76: 4, 0x7A: 4}
_UICC: Mapping[int, _Rule] = {
    0xA4: 4, 0xB0: 2, 0xD6: 3, 0xB2: 2, 0xDC: 3, 0xA2: 4, 0x20: 3, 0x24: 3, 0x26: 3, 0x28: 3,
    0x2C: 3, 0x04: 1, 0x44: 1, 0x88: 4, 0x89: 4, 0x84: 2, 0x70: 2, 0x73: _uicc_helper,
    0x75: _uicc_helper, 0xC0: 2,
}  # fmt: skip
_GP: Mapping[int, _Rule] = {
    0xE4: 4, 0xE2: _gp_helper, 0xCA: _gp_helper, 0xCB: _gp_helper, 0xF2: _gp_helper,
    0xE6: 4, 0xE8: 4, 0xD8: 4, 0xF0: 3, 0xC0: 2,
}  # fmt: skip
_UICC_PROPRIETARY: Mapping[int, _Rule] = {0xF2: 2, 0x32: 4, 0xCB: 4, 0xDB: 3, 0xAA: 3, 0x78: 4}

# libosmosim's "UICC+SIM" profile: (CLA value, CLA mask, table), walked in order.
_PROFILE: tuple[tuple[int, int, Mapping[int, _Rule]], ...] = (
    (0xA0, 0xFF, _GSM),
    (0x80, 0xFF, _SAT),
    (0x00, 0xF0, _UICC),
    (0x40, 0xF0, _UICC),
    (0x60, 0xF0, _UICC),
    (0x80, 0xF0, _GP),
    (0x80, 0xF0, _UICC_PROPRIETARY),
    (0xC0, 0xF0, _UICC_PROPRIETARY),
    (0xE0, 0xF0, _UICC_PROPRIETARY),
    (0x80, 0xF0, _GP),
    (0xC0, 0xF0, _GP),
    (0xE0, 0xF0, _GP),
)
_ISO_FALLBACK: Mapping[int, int] = {0xA4: 4, 0xCA: 2, 0xC0: 2}


def apdu_case(hdr: bytes) -> int:
    """ISO 7816-4 case (1..4) of a command from its 5-byte header; 0 when unknown."""
    cla, ins = hdr[0], hdr[1]
    for value, mask, table in _PROFILE:
        if cla & mask != value:
            continue
        rule = table.get(ins, 0)
        if callable(rule):
            return rule(hdr)  # a helper's answer is final, even 0
        if rule:
            return rule
    return _ISO_FALLBACK.get(ins, 0) if cla == 0x00 else 0


@dataclass(frozen=True, slots=True)
class ForwardTpdu:
    """A complete command TPDU (header + command data) to send to the bankd."""

    tpdu: bytes


#: What :meth:`TpduAssembler.receive` asks for: a TX_DATA to the device, or a forward.
TpduAction = TxData | ForwardTpdu

# The largest response data that fits one TX_DATA transfer behind the procedure byte.
_MAX_RESPONSE_DATA = MAX_OUT_TRANSFER - HEADER_LEN - 6 - 1


class TpduAssembler:
    """The host's TPDU state for one card-emulation slot."""

    def __init__(self) -> None:
        self._header: bytes | None = None
        self._case = 0
        self._lc = 0
        self._data = bytearray()
        self._awaiting_response = False

    @property
    def header(self) -> bytes | None:
        """The header of the current command, if any."""
        return self._header

    @property
    def awaiting_response(self) -> bool:
        """A TPDU was forwarded and its response has not been sent to the modem yet."""
        return self._awaiting_response

    def abort(self) -> None:
        """Forget the current command (reset, power loss: the firmware discards it too)."""
        self._header = None
        self._case = 0
        self._lc = 0
        self._data.clear()
        self._awaiting_response = False

    def receive(self, msg: RxData) -> TpduAction | None:
        """Feed one RX_DATA from the firmware; returns what to do next, if anything."""
        if msg.flags & DataFlags.TPDU_HDR:
            return self._new_command(msg.data)
        if self._header is None or self._case not in (3, 4) or self._awaiting_response:
            log.warning("command data %s without a command waiting for it; ignored", msg.data.hex())
            return None
        self._data += msg.data[: self._lc - len(self._data)]
        if len(self._data) == self._lc:
            return self._forward()
        if msg.flags & DataFlags.FINAL:
            log.warning("final command data after %d of %d bytes", len(self._data), self._lc)
            return self._forward()
        return None  # the firmware never splits command data, but keep collecting if it did

    def _new_command(self, data: bytes) -> TpduAction | None:
        self.abort()  # a new header always starts afresh
        if len(data) < 5:
            log.warning("TPDU header too short: %s", data.hex())
            return None
        self._header = hdr = bytes(data[:5])
        self._case = apdu_case(hdr)
        if self._case in (3, 4):
            self._lc = hdr[4]
            self._data += data[5 : 5 + self._lc]
            if len(self._data) < self._lc:
                # ACK: the modem sends all the command data after this procedure byte.
                return TxData(DataFlags.PB_AND_RX, hdr[1:2])
        # Cases 1/2 and unknown commands (as upstream) go to the card with the header only.
        return self._forward()

    def _forward(self) -> ForwardTpdu:
        assert self._header is not None
        self._awaiting_response = True
        return ForwardTpdu(self._header + bytes(self._data))

    def respond(self, rapdu: bytes) -> list[TxData]:
        """The TX_DATA messages that deliver the bankd's R-APDU for the pending TPDU."""
        if len(rapdu) < 2:
            log.error("response %s without a status word; ignored", rapdu.hex())
            return []
        if self._header is None or not self._awaiting_response:
            log.warning("response %s without a pending TPDU; ignored", rapdu.hex())
            return []
        self._awaiting_response = False
        ins = self._header[1]
        data, sw = bytes(rapdu[:-2]), bytes(rapdu[-2:])
        messages = []
        if data:
            if self._case in (3, 4):
                # T=0 has no response data for these; upstream sends it anyway, so do we.
                log.warning("card returned data for a case %d command", self._case)
            if len(data) > _MAX_RESPONSE_DATA:
                log.error("response data of %d bytes does not fit; sending SW only", len(data))
            else:
                messages.append(TxData(DataFlags.PB_AND_TX, bytes([ins]) + data))
        messages.append(TxData(DataFlags.PB_AND_TX | DataFlags.FINAL, sw))
        return messages
