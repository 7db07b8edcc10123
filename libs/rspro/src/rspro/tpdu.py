"""Pre-encoded frames of the TPDUs of one client slot ↔ bank slot pair: the APDU hot path.

Once a client session has its card, every frame it exchanges with the bankd is a
TpduModemToCard or a TpduCardToModem between the same two slots; only the APDU (and the
envelope's version and tag, and the flags) differ. ``TpduFrames`` builds, per APDU length,
the bytes ``rspro_frame(encode(RsproPdu(msg)))`` would produce around the APDU, once, from
``encode`` itself, and then:

* ``card_to_modem(data)`` / ``modem_to_card(data)``: the complete IPA frame, byte for byte
  what the general path sends (default envelope and flags), by one concatenation;
* ``parse_modem_to_card(frame)`` / ``parse_card_to_modem(frame)``: the APDU of one complete
  IPA frame if it is such a TPDU between these two slots, by a few byte comparisons, else
  ``None``, and the caller takes the general path (framer, ``decode``). A frame accepted
  here decodes, on the general path, to that message with that APDU; the flags, version and
  tag (one byte each, any value) are not returned: the bankd ignores them;
* ``modem_to_card_pdu(frame)`` / ``card_to_modem_pdu(frame)``: the PDU of a frame that is
  exactly what ``modem_to_card``/``card_to_modem`` build (default envelope and flags), equal
  to what ``decode`` gives, else ``None``: for a general receiver (``rspro.aio``).

The fast path accepts a subset of what ``decode`` accepts (single-byte version and tag,
minimal slot integers, the four flags as ``00``/``FF``): anything else is simply not fast.
"""

from __future__ import annotations

from itertools import product

from .codec import encode
from .ipa import rspro_frame
from .messages import (
    RSPRO_VERSION,
    BankSlot,
    ClientSlot,
    RsproPdu,
    TpduCardToModem,
    TpduFlags,
    TpduModemToCard,
)

__all__ = ["TpduFrames"]

_FLAG_BYTES = frozenset(
    b"".join(b"\x01\x01" + (b"\xff" if flag else b"\x00") for flag in flags)
    for flags in product((False, True), repeat=4)
)
"""The DER of the four TpduFlags booleans, every combination (12 bytes each)."""
_FLAGS_SIZE = 12


def _data_header_size(n: int) -> int:
    """OCTET STRING tag and DER length of an ``n``-byte APDU."""
    return 2 if n < 0x80 else 3 if n < 0x100 else 4


# (head, mid, tail, data header, version offset, flags offset, data offset) of one frame
# length: the fixed bytes before the version, between version and tag (``81 01``), from the
# tag to the flags, and the data header after the flags.
_Layout = tuple[bytes, bytes, bytes, bytes, int, int, int]


class TpduFrames:
    """The TPDU frames between ``client`` and ``bank`` (built lazily, per APDU length)."""

    __slots__ = ("_parse_c2m", "_parse_m2c", "_to_card", "_to_modem", "bank", "client")

    def __init__(self, client: ClientSlot, bank: BankSlot) -> None:
        self.client = client
        self.bank = bank
        self._to_modem: dict[int, bytes] = {}  # APDU length -> frame prefix
        self._to_card: dict[int, bytes] = {}
        self._parse_m2c: dict[int, _Layout | None] = {}  # frame length -> layout
        self._parse_c2m: dict[int, _Layout | None] = {}

    # --- building -------------------------------------------------------------------------

    def card_to_modem(self, data: bytes) -> bytes:
        """The frame of ``TpduCardToModem(bank, client, data)`` (default envelope, flags)."""
        prefix = self._to_modem.get(len(data))
        if prefix is None:
            prefix = self._to_modem[len(data)] = self._prefix(self._c2m(data))
        return prefix + data

    def modem_to_card(self, data: bytes) -> bytes:
        """The frame of ``TpduModemToCard(client, bank, data)`` (default envelope, flags)."""
        prefix = self._to_card.get(len(data))
        if prefix is None:
            prefix = self._to_card[len(data)] = self._prefix(self._m2c(data))
        return prefix + data

    def _c2m(self, data: bytes, flags: TpduFlags | None = None) -> TpduCardToModem:
        if flags is None:
            return TpduCardToModem(self.bank, self.client, data)
        return TpduCardToModem(self.bank, self.client, data, flags)

    def _m2c(self, data: bytes, flags: TpduFlags | None = None) -> TpduModemToCard:
        if flags is None:
            return TpduModemToCard(self.client, self.bank, data)
        return TpduModemToCard(self.client, self.bank, data, flags)

    @staticmethod
    def _prefix(msg: TpduCardToModem | TpduModemToCard) -> bytes:
        frame = rspro_frame(encode(RsproPdu(msg)))
        return frame[: len(frame) - len(msg.data)]

    # --- parsing --------------------------------------------------------------------------

    def parse_modem_to_card(self, frame: bytes) -> bytes | None:
        """The APDU of ``frame`` (one whole IPA frame) if it is a TpduModemToCard from
        ``client`` to ``bank``; None: not on the fast path (decode it)."""
        n = len(frame)
        try:
            layout = self._parse_m2c[n]
        except KeyError:
            layout = self._parse_m2c[n] = self._layout(n, self._m2c)
        return _match(frame, layout)

    def parse_card_to_modem(self, frame: bytes) -> bytes | None:
        """The APDU of ``frame`` if it is a TpduCardToModem from ``bank`` to ``client``."""
        n = len(frame)
        try:
            layout = self._parse_c2m[n]
        except KeyError:
            layout = self._parse_c2m[n] = self._layout(n, self._c2m)
        return _match(frame, layout)

    def modem_to_card_pdu(self, frame: bytes) -> RsproPdu | None:
        """The PDU of ``frame`` if it is ``modem_to_card(apdu)`` for some APDU."""
        n = len(frame)
        try:
            layout = self._parse_m2c[n]
        except KeyError:
            layout = self._parse_m2c[n] = self._layout(n, self._m2c)
        if layout is None:
            return None
        size = n - layout[6]
        prefix = self._to_card.get(size)
        if prefix is None:
            prefix = self._to_card[size] = self._prefix(self._m2c(bytes(size)))
        if not frame.startswith(prefix):
            return None
        msg = TpduModemToCard(self.client, self.bank, frame[layout[6] :])
        return RsproPdu(msg, RSPRO_VERSION, 0)

    def card_to_modem_pdu(self, frame: bytes) -> RsproPdu | None:
        """The PDU of ``frame`` if it is ``card_to_modem(apdu)`` for some APDU."""
        n = len(frame)
        try:
            layout = self._parse_c2m[n]
        except KeyError:
            layout = self._parse_c2m[n] = self._layout(n, self._c2m)
        if layout is None:
            return None
        size = n - layout[6]
        prefix = self._to_modem.get(size)
        if prefix is None:
            prefix = self._to_modem[size] = self._prefix(self._c2m(bytes(size)))
        if not frame.startswith(prefix):
            return None
        msg = TpduCardToModem(self.bank, self.client, frame[layout[6] :])
        return RsproPdu(msg, RSPRO_VERSION, 0)

    @staticmethod
    def _layout(n: int, make: object) -> _Layout | None:
        """Where the variable bytes are in a frame of ``n`` bytes (None: no TPDU between
        these slots has that size with a one-byte version and tag)."""
        assert callable(make)
        # The frame's size grows with the APDU by 1 per byte, plus a byte at each DER
        # length that crosses 128 or 256: try the few APDU sizes that could give n.
        for size in range(max(0, n - 80), n):
            frame = rspro_frame(encode(RsproPdu(make(bytes(size), TpduFlags()), 0, 0)))
            if len(frame) != n:
                continue
            # IPA header (4 with the extension byte), 30 L, 80 01 vv, 81 01 tt, a2 L ac L ...
            length_size = 1 if frame[5] < 0x80 else 1 + (frame[5] & 0x7F)
            version = 4 + 1 + length_size + 2
            tag = version + 3
            if (
                frame[version - 2 : version] != b"\x80\x01"
                or frame[version + 1 : tag] != b"\x81\x01"
            ):
                return None
            data = n - size
            flags = data - _data_header_size(size) - _FLAGS_SIZE
            return (
                frame[:version],
                frame[version + 1 : tag],
                frame[tag + 1 : flags],
                frame[flags + _FLAGS_SIZE : data],
                version,
                flags,
                data,
            )
        return None


def _match(frame: bytes, layout: _Layout | None) -> bytes | None:
    if layout is None:
        return None
    head, mid, tail, data_header, version, flags, data = layout
    if (
        frame.startswith(head)
        and frame.startswith(mid, version + 1)
        and frame.startswith(tail, version + 4)
        and frame.startswith(data_header, flags + _FLAGS_SIZE)
        and frame[flags : flags + _FLAGS_SIZE] in _FLAG_BYTES
    ):
        return frame[data:]
    return None
