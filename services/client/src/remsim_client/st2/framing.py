"""Sans-IO assembly of SIMtrace2 messages from USB IN packets (simtrace2-cardem.md §2).

The firmware sends each message as one USB transfer of ``msg_len`` bytes, cut into packets
of ``wMaxPacketSize`` (64) bytes, and adds a zero-length packet only when the message is
exactly one packet long. A transfer ends with a short packet (fewer than 64 bytes, the
zero-length one included); a full packet does not end it. A message of 128, 192 or 256
bytes therefore ends on a full packet with nothing to mark its end but ``msg_len``, and
the next message's packets may follow straight away.

The host reads one packet per transfer and hands each packet to :class:`MessageAssembler`,
which cuts the byte stream into messages by ``msg_len``: several messages in one packet, one
message over several packets, a zero-length packet (nothing). A short packet is where the
device's transfer ends, so a message still incomplete there was cut short: it is dropped
with an error, and the next packet starts afresh.
"""

from __future__ import annotations

from .errors import ProtocolError
from .protocol import HEADER_LEN, Message, decode

__all__ = ["PACKET_SIZE", "MessageAssembler"]

#: wMaxPacketSize of every cardem endpoint (USB full speed).
PACKET_SIZE = 64
_MSG_LEN_OFFSET = 6


class MessageAssembler:
    """Packets of one IN endpoint in, messages out."""

    def __init__(self, packet_size: int = PACKET_SIZE) -> None:
        self.packet_size = packet_size
        self._buf = bytearray()
        self._skipping = False  # after bad framing: drop the rest of the device's transfer

    @property
    def pending(self) -> int:
        """Bytes of a message that has not been completed yet."""
        return len(self._buf)

    def feed(self, packet: bytes) -> list[Message | ProtocolError]:
        """The messages that ``packet`` completes, in order, with an error in place of each
        piece that is not a well-formed message."""
        if len(packet) > self.packet_size:
            raise ValueError(f"packet of {len(packet)} bytes, the endpoint has {self.packet_size}")
        ends_transfer = len(packet) < self.packet_size
        if self._skipping:
            self._skipping = not ends_transfer
            return []
        self._buf += packet
        out: list[Message | ProtocolError] = []
        while len(self._buf) >= HEADER_LEN:
            msg_len = int.from_bytes(self._buf[_MSG_LEN_OFFSET : _MSG_LEN_OFFSET + 2], "little")
            if msg_len < HEADER_LEN:
                out.append(ProtocolError(f"msg_len {msg_len} shorter than the header: "
                                         f"{self._buf.hex()}"))  # fmt: skip
                self._buf.clear()
                self._skipping = not ends_transfer  # the next start is after the transfer
                return out
            if len(self._buf) < msg_len:
                break
            raw = bytes(self._buf[:msg_len])
            del self._buf[:msg_len]
            try:
                out.append(decode(raw))
            except ProtocolError as exc:
                out.append(ProtocolError(f"{exc}: {raw.hex()}"))
        if ends_transfer and self._buf:
            out.append(ProtocolError(f"transfer ended inside a message: {self._buf.hex()}"))
            self._buf.clear()
        return out
