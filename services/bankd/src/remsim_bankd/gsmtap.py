"""GSMTAP tracing of ATRs and APDUs (UDP port 4729, type SIM), for Wireshark.

Packets as the original bankd sends them: a 16-byte GSMTAP v2 header (type 0x04 SIM,
sub-type 0x00 APDU or 0x01 ATR, everything else zero) followed by the ATR, or by the
command bytes immediately followed by the response bytes (data + SW).
"""

from __future__ import annotations

import logging
import socket

__all__ = ["GSMTAP_PORT", "GsmtapTracer", "gsmtap_packet"]

log = logging.getLogger("remsim.bankd.gsmtap")

GSMTAP_PORT = 4729
GSMTAP_VERSION = 2
GSMTAP_TYPE_SIM = 0x04
SIM_APDU = 0x00
SIM_ATR = 0x01


def gsmtap_packet(sub_type: int, payload: bytes) -> bytes:
    header = bytes((GSMTAP_VERSION, 4, GSMTAP_TYPE_SIM)) + bytes(9) + bytes((sub_type, 0, 0, 0))
    return header + payload


class GsmtapTracer:
    """Sends GSMTAP SIM packets to ``host:port``; ``slot`` ≥ 0 traces only that slot number."""

    def __init__(self, host: str, port: int = GSMTAP_PORT, slot: int = -1) -> None:
        info = socket.getaddrinfo(host, port, type=socket.SOCK_DGRAM)[0]
        self.address = info[4]
        self.slot = slot
        self._sock = socket.socket(info[0], socket.SOCK_DGRAM)
        self._sock.setblocking(False)

    def wants(self, slot_nr: int) -> bool:
        return self.slot < 0 or slot_nr == self.slot

    def atr(self, slot_nr: int, atr: bytes) -> None:
        if self.wants(slot_nr):
            self._send(gsmtap_packet(SIM_ATR, atr))

    def apdu(self, slot_nr: int, command: bytes, response: bytes) -> None:
        if self.wants(slot_nr):
            self._send(gsmtap_packet(SIM_APDU, command + response))

    def _send(self, packet: bytes) -> None:
        try:
            self._sock.sendto(packet, self.address)
        except OSError as exc:  # tracing must never disturb the card path
            log.debug("GSMTAP send failed: %s", exc)

    def close(self) -> None:
        self._sock.close()
