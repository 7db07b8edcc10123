"""IPA multiplex framing, sans-IO: ``len(2, big endian) proto(1) payload``.

RSPRO rides in ``proto 0xEE`` (Osmocom extension) with extension byte ``0x07``; IPA CCM
keepalive/identity messages use ``proto 0xFE``.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass

from .errors import IpaFramingError, RsproEncodeError

IPA_PROTO_OSMO = 0xEE
IPA_PROTO_CCM = 0xFE
IPA_EXT_RSPRO = 0x07

HEADER_SIZE = 3
MAX_SEND_FRAME = 1020
"""Largest frame we emit: deployed receivers accept 1024 (1.0.0: 1200) bytes at most."""
MAX_RECV_FRAME = 1200
"""Largest frame we accept by default, header included (the 1.0.0 receivers' limit)."""
MAX_FRAME = HEADER_SIZE + 0xFFFF
"""IPA's own limit (a 2-byte length): what a link in remsim's APDU mode sends and accepts."""


class CcmType(enum.IntEnum):
    PING = 0x00
    PONG = 0x01
    ID_GET = 0x04
    ID_RESP = 0x05
    ID_ACK = 0x06
    ID_NACK = 0x07


class IdTag(enum.IntEnum):
    """Identity tags of IPA CCM ID_GET / ID_RESP."""

    SERNR = 0x00
    UNITNAME = 0x01
    LOCATION1 = 0x02
    LOCATION2 = 0x03
    EQUIPVERS = 0x04
    SWVERSION = 0x05
    IPADDR = 0x06
    MACADDR = 0x07
    UNIT = 0x08


@dataclass(frozen=True, slots=True)
class IpaFrame:
    proto: int
    payload: bytes

    def to_bytes(self) -> bytes:
        return len(self.payload).to_bytes(2, "big") + bytes((self.proto,)) + self.payload


def ccm_frame(kind: CcmType, body: bytes = b"") -> bytes:
    return IpaFrame(IPA_PROTO_CCM, bytes((kind,)) + body).to_bytes()


PING = ccm_frame(CcmType.PING)
PONG = ccm_frame(CcmType.PONG)
ID_ACK = ccm_frame(CcmType.ID_ACK)

# The all-zero identity deployed components answer an ID_GET with.
_ZERO_IDENTITY = {
    IdTag.UNIT: "0/0/0",
    IdTag.MACADDR: "00:00:00:00:00:00",
    IdTag.UNITNAME: "00-00-00-00-00-00",
}


def id_resp_frame(requested: list[int]) -> bytes:
    """ID_RESP for the tags an ID_GET asked for, from the all-zero identity."""
    body = b""
    for tag in requested:
        value = _ZERO_IDENTITY.get(tag, "").encode() + b"\0"  # type: ignore[call-overload]
        body += (len(value) + 1).to_bytes(2, "big") + bytes((tag,)) + value
    return ccm_frame(CcmType.ID_RESP, body)


def parse_id_get(body: bytes) -> list[int]:
    """Tags requested by an ID_GET body: pairs of (length=1, tag)."""
    return [body[i + 1] for i in range(0, len(body) - 1, 2)]


def rspro_frame(pdu: bytes, max_frame: int = MAX_SEND_FRAME) -> bytes:
    """Wrap one BER-encoded RSPRO PDU in its IPA frame (at most ``max_frame`` bytes)."""
    size = len(pdu) + 1
    if size + HEADER_SIZE > max_frame:
        raise RsproEncodeError(f"RSPRO PDU of {len(pdu)} bytes exceeds the IPA frame limit")
    return size.to_bytes(2, "big") + bytes((IPA_PROTO_OSMO, IPA_EXT_RSPRO)) + pdu


class IpaFramer:
    """Splits a TCP byte stream into IPA frames, whatever the segmentation."""

    def __init__(self, max_frame_size: int = MAX_RECV_FRAME) -> None:
        self.max_frame_size = max_frame_size
        self._buf = bytearray()

    @property
    def buffered(self) -> int:
        """Bytes of an incomplete frame held back."""
        return len(self._buf)

    def feed(self, data: bytes) -> list[IpaFrame]:
        """Add received bytes; return every frame now complete.

        Raises IpaFramingError for a frame longer than the limit (the stream cannot be
        trusted after that). Zero-length frames carry nothing and are dropped.
        """
        buf = self._buf
        buf += data
        frames: list[IpaFrame] = []
        pos = 0
        end = len(buf)
        while end - pos >= HEADER_SIZE:
            size = (buf[pos] << 8) | buf[pos + 1]
            if size + HEADER_SIZE > self.max_frame_size:
                del buf[:pos]
                raise IpaFramingError(
                    f"IPA frame of {size + HEADER_SIZE} bytes exceeds the limit of "
                    f"{self.max_frame_size}"
                )
            stop = pos + HEADER_SIZE + size
            if stop > end:
                break
            if size:
                frames.append(IpaFrame(buf[pos + 2], bytes(buf[pos + HEADER_SIZE : stop])))
            pos = stop
        del buf[:pos]
        return frames
