"""A sans-IO RSPRO connection in the style of h11: bytes and time in, events and bytes out.

It owns the IPA framing, the CCM keepalive (PING/PONG) and identity replies, and the PDU
codec. It never touches a socket or a clock: the caller feeds received bytes and the
current time, writes ``data_to_send()`` to the peer and wakes it at ``next_deadline()``.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass

from . import ipa
from .codec import decode, encode
from .errors import ConnectionClosedError, IpaFramingError, RsproDecodeError
from .messages import Message, RsproPdu


@dataclass(frozen=True, slots=True)
class Keepalive:
    """IPA keepalive timing: PING, wait ``timeout`` for the PONG, idle ``interval``, repeat."""

    interval: float = 30.0
    timeout: float = 10.0


DEFAULT_KEEPALIVE = Keepalive()


@dataclass(frozen=True, slots=True)
class PduReceived:
    pdu: RsproPdu


@dataclass(frozen=True, slots=True)
class InvalidPdu:
    """A complete frame whose PDU did not decode; the stream itself is still in sync."""

    error: RsproDecodeError
    payload: bytes


@dataclass(frozen=True, slots=True)
class KeepaliveTimedOut:
    """No PONG within the keepalive timeout: the peer is dead, close the connection."""


Event = PduReceived | InvalidPdu | KeepaliveTimedOut


class _Ka(enum.Enum):
    OFF = 0
    WAIT_PONG = 1
    IDLE = 2
    DEAD = 3


class RsproConnection:
    """One end of an RSPRO link.

    ``initiator`` is the TCP-client side (bankd or client towards the server, client
    towards the bankd): it answers ID_GET with an ID_RESP. The accepting side answers
    ID_ACK with ID_ACK. ``keepalive=None`` only answers PINGs.
    """

    def __init__(
        self,
        *,
        initiator: bool,
        keepalive: Keepalive | None = DEFAULT_KEEPALIVE,
        max_frame_size: int = ipa.MAX_RECV_FRAME,
    ) -> None:
        self.initiator = initiator
        self.keepalive = keepalive
        self._framer = ipa.IpaFramer(max_frame_size)
        self._max_send = ipa.MAX_SEND_FRAME
        self._out = bytearray()
        self._ka = _Ka.OFF
        self._deadline: float | None = None
        self.closed = False
        self.last_pong: float | None = None  # when the last PONG arrived

    # --- lifecycle ------------------------------------------------------------------------

    def start(self, now: float, *, idle: bool = False) -> None:
        """The TCP connection is up: queue the first PING (before any PDU), or with
        ``idle`` send it only after one keepalive interval (nothing unasked on the wire)."""
        if self.keepalive is not None and self._ka is _Ka.OFF:
            if idle:
                self._ka = _Ka.IDLE
                self._deadline = now + self.keepalive.interval
            else:
                self._ping(now)

    def ping(self, now: float, timeout: float) -> None:
        """A liveness check: PING now; no PONG within ``timeout`` (at most the keepalive
        timeout) is a ``KeepaliveTimedOut``. ``last_pong`` tells when it was answered."""
        if self.keepalive is not None and not self.closed and self._ka is not _Ka.DEAD:
            self._ping(now)
            self._deadline = now + min(timeout, self.keepalive.timeout)

    def close(self) -> None:
        self.closed = True
        self._deadline = None

    def allow_large_frames(self) -> None:
        """Both peers are remsim's and agreed on the APDU mode: from now on frames up to
        IPA's own limit (``ipa.MAX_FRAME``) go both ways, instead of the original's ~1 KiB."""
        self._framer.max_frame_size = self._max_send = ipa.MAX_FRAME

    @property
    def large_frames(self) -> bool:
        return self._max_send == ipa.MAX_FRAME

    # --- sending --------------------------------------------------------------------------

    def send(self, msg: Message | RsproPdu) -> None:
        """Queue a PDU (a bare message gets the default envelope)."""
        if self.closed:
            raise ConnectionClosedError("connection is closed")
        pdu = msg if isinstance(msg, RsproPdu) else RsproPdu(msg)
        self._out += ipa.rspro_frame(encode(pdu), self._max_send)

    def data_to_send(self) -> bytes:
        """Bytes to write to the peer, in one write (complete frames only)."""
        out = bytes(self._out)
        self._out.clear()
        return out

    # --- receiving ------------------------------------------------------------------------

    @property
    def buffered(self) -> int:
        """Received bytes of an incomplete frame held back (0: the next bytes start a frame)."""
        return self._framer.buffered

    def receive_data(self, data: bytes, now: float) -> list[Event]:
        """Feed received bytes. Raises IpaFramingError when the stream is broken."""
        if self.closed:
            return []
        events: list[Event] = []
        for frame in self._framer.feed(data):
            proto, payload = frame.proto, frame.payload
            if proto == ipa.IPA_PROTO_OSMO:
                if payload[0] != ipa.IPA_EXT_RSPRO:
                    raise IpaFramingError(f"unexpected IPA extension 0x{payload[0]:02x}")
                try:
                    events.append(PduReceived(decode(payload[1:])))
                except RsproDecodeError as exc:
                    events.append(InvalidPdu(exc, payload[1:]))
            elif proto == ipa.IPA_PROTO_CCM:
                self._ccm(payload, now)
            else:
                raise IpaFramingError(f"unexpected IPA protocol 0x{proto:02x}")
        return events

    def _ccm(self, payload: bytes, now: float) -> None:
        kind = payload[0]
        if kind == ipa.CcmType.PING:
            self._out += ipa.PONG
        elif kind == ipa.CcmType.PONG:
            self.last_pong = now
            if self._ka is _Ka.WAIT_PONG and self.keepalive is not None:
                self._ka = _Ka.IDLE
                self._deadline = now + self.keepalive.interval
        elif kind == ipa.CcmType.ID_GET and self.initiator:
            self._out += ipa.id_resp_frame(ipa.parse_id_get(payload[1:])) + ipa.ID_ACK
        elif kind == ipa.CcmType.ID_ACK and not self.initiator:
            self._out += ipa.ID_ACK
        # anything else (ID_RESP, ID_NACK, unknown CCM) carries nothing for us

    # --- time -----------------------------------------------------------------------------

    def next_deadline(self) -> float | None:
        """When ``handle_timeout`` must be called next (None: no timer running)."""
        return self._deadline

    def handle_timeout(self, now: float) -> list[Event]:
        if self._deadline is None or now < self._deadline or self.keepalive is None:
            return []
        if self._ka is _Ka.IDLE:
            self._ping(now)
            return []
        self._ka = _Ka.DEAD
        self._deadline = None
        return [KeepaliveTimedOut()]

    def _ping(self, now: float) -> None:
        assert self.keepalive is not None
        self._out += ipa.PING
        self._ka = _Ka.WAIT_PONG
        self._deadline = now + self.keepalive.timeout
