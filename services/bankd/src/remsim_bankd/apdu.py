"""Whole command APDUs to a card (APDU mode): ISO/IEC 7816-4 §5.1 parsing and the T=0 mapping.

Pure code, no I/O: ``exchange`` is given the card's ``transmit(tpdu) -> bytes`` and its
protocol (``T0`` or ``T1``).

- **T=1**: the C-APDU is checked (``parse_capdu``: a malformed one is answered ``6700``
  without reaching the card), then transmitted as it is (short or extended) and the card's
  R-APDU returned as it is: the protocol carries APDUs.
- **T=0** (ISO/IEC 7816-3 §12.2, ETSI TS 102 221 §7.3.1.1): the C-APDU is parsed
  (``parse_capdu``) and mapped onto command TPDUs of 5 to 260 bytes, the TPDU-level status
  words handled here, as the terminal's transport layer does, so that the application sees
  the R-APDU a T=1 card would give:

  - case 1 (``CLA INS P1 P2``): ``CLA INS P1 P2 00``;
  - case 2 (``… Le``): as it is (P3 = Le); ``6Cxx`` (wrong length, ``xx`` available):
    sent again with P3 = ``xx``;
  - case 3 (``… Lc data``): as it is; the card's status words are the answer (a ``61xx`` or
    ``9Fxx`` is returned as it is: the application asked for no data);
  - case 4 (``… Lc data Le``): ``… Lc data`` (Le dropped);
  - after a case 2 or 4 command, ``61xx`` (and ``9Fxx`` for class A0, GSM 11.11): GET
    RESPONSE (``get_response_cla``; P3 = ``xx``, at most what Ne leaves), repeated while the
    card answers ``61xx``, the data concatenated, never more than Ne bytes in all (a card
    with still more answers its last ``61xx`` after Ne bytes: returned, as ISO means it);
    a GET RESPONSE answered ``6Cxx`` is sent again with P3 = ``xx``;
  - extended lengths: T=0 has none (ISO/IEC 7816-3 §12.2 maps them only through ENVELOPE,
    which cards rarely offer), so an extended C-APDU is answered ``6700`` (wrong length) by
    ``ApduError`` without reaching the card; a malformed one (lengths that do not add up)
    likewise.

  - a case 4 command answered with a warning alone (``62xx``/``63xx``: TS 102 221
    §7.3.1.1.5, ISO/IEC 7816-3 §12.2.5): GET RESPONSE with P3 = ``00`` (then ``6Cxx``:
    with P3 = ``xx``) fetches the data the command still has; the R-APDU is that data and
    the warning (the warning alone if the GET RESPONSE brings none).

  Other status words (``9000``, errors, GSM's ``91xx``/``9Exx``) end the exchange and are
  returned with the data collected so far. A response of fewer
  than two bytes (no status word) is returned as it is.
"""

from __future__ import annotations

import enum
from collections.abc import Callable
from dataclasses import dataclass

from .card import T0, T1

__all__ = [
    "MAX_GET_RESPONSES",
    "SW_WRONG_LENGTH",
    "T0",
    "T1",
    "ApduCase",
    "ApduError",
    "CommandApdu",
    "exchange",
    "exchange_t0",
    "get_response_cla",
    "parse_capdu",
]

SW_WRONG_LENGTH = b"\x67\x00"
"""The bankd's own answer to a C-APDU it cannot pass to the card (ISO: wrong length)."""

MAX_GET_RESPONSES = 256
"""GET RESPONSEs at most for one C-APDU (Ne ≤ 256 on T=0: a card giving at least one byte
each time needs no more); a card answering ``61xx`` for ever is cut off there."""

GET_RESPONSE = 0xC0
GSM_CLA = 0xA0
WARNINGS = (0x62, 0x63)
"""SW1 of the warnings after which a case 4 command's data is still fetched."""
_SHORT_MAX, _EXTENDED_MAX = 256, 65536
"""Largest Ne (and Nc) of short and of extended APDUs; a 0 length byte (bytes) stands for it."""

Transmit = Callable[[bytes], bytes]


class ApduCase(enum.IntEnum):
    """ISO/IEC 7816-4 §5.1: what a command carries (1: nothing, 2: Le, 3: data, 4: both)."""

    CASE_1 = 1
    CASE_2 = 2
    CASE_3 = 3
    CASE_4 = 4


class ApduError(ValueError):
    """A C-APDU the bankd answers itself with ``sw`` (``6700``), without the card: it is
    malformed, or it cannot be sent over the card's protocol (extended lengths on T=0)."""

    def __init__(self, message: str, sw: bytes = SW_WRONG_LENGTH) -> None:
        super().__init__(message)
        self.sw = sw


@dataclass(frozen=True, slots=True)
class CommandApdu:
    """A parsed C-APDU: its header, command data (Nc bytes) and Ne (0: no Le field)."""

    cla: int
    ins: int
    p1: int
    p2: int
    data: bytes
    ne: int
    case: ApduCase
    extended: bool

    @property
    def header(self) -> bytes:
        return bytes((self.cla, self.ins, self.p1, self.p2))


def parse_capdu(capdu: bytes) -> CommandApdu:
    """The C-APDU ``capdu`` in its parts (ISO/IEC 7816-4 §5.1, short and extended forms).

    Short: ``Lc`` and ``Le`` one byte each (``Le`` 00: Ne = 256). Extended: a 00 byte, then
    ``Lc`` in two bytes (1..65535) and, with data, ``Le`` in two bytes; without data, ``Le``
    in the two bytes after the 00 (``Le`` 0000: Ne = 65536). ApduError (``6700``) for
    anything else: fewer than 4 bytes, Lc 0, or a length that does not match the bytes.
    """
    n = len(capdu)
    if n < 4:
        raise ApduError(f"malformed C-APDU: {n} bytes, a header alone has 4")
    cla, ins, p1, p2 = capdu[:4]

    def apdu(data: bytes, ne: int, case: ApduCase, extended: bool) -> CommandApdu:
        return CommandApdu(cla, ins, p1, p2, data, ne, case, extended)

    if n == 4:
        return apdu(b"", 0, ApduCase.CASE_1, False)
    b1 = capdu[4]
    if n == 5:  # short Le
        return apdu(b"", b1 or _SHORT_MAX, ApduCase.CASE_2, False)
    if b1:  # short Lc
        data = capdu[5 : 5 + b1]
        if n == 5 + b1:
            return apdu(data, 0, ApduCase.CASE_3, False)
        if n == 6 + b1:
            return apdu(data, capdu[-1] or _SHORT_MAX, ApduCase.CASE_4, False)
        raise ApduError(
            f"malformed C-APDU: short Lc {b1} needs {5 + b1} or {6 + b1} bytes, got {n}"
        )
    if n == 6:
        raise ApduError("malformed C-APDU: 6 bytes with a 00 length byte")
    b2b3 = int.from_bytes(capdu[5:7], "big")
    if n == 7:  # extended Le
        return apdu(b"", b2b3 or _EXTENDED_MAX, ApduCase.CASE_2, True)
    if not b2b3:
        raise ApduError("malformed C-APDU: extended Lc 0")
    data = capdu[7 : 7 + b2b3]
    if n == 7 + b2b3:
        return apdu(data, 0, ApduCase.CASE_3, True)
    if n == 9 + b2b3:
        return apdu(data, int.from_bytes(capdu[-2:], "big") or _EXTENDED_MAX, ApduCase.CASE_4, True)
    raise ApduError(
        f"malformed C-APDU: extended Lc {b2b3} needs {7 + b2b3} or {9 + b2b3} bytes, got {n}"
    )


def get_response_cla(cla: int) -> int:
    """The class byte of the GET RESPONSE fetching the answer of a command of class ``cla``.

    GSM 11.11 (``A0``): ``A0``. Otherwise the interindustry class (GET RESPONSE is an
    interindustry command: TS 102 221 §10.1.1 gives it classes ``0X``/``4X``/``6X`` only, so a
    proprietary ``8X`` command, e.g. ENVELOPE ``80 C2``, is answered through ``0X``), on the
    command's logical channel, without secure messaging or command chaining bits.
    """
    if cla == GSM_CLA:
        return GSM_CLA
    if cla & 0x40:  # further interindustry: b7 set, channel 4 + b4..b1
        return 0x40 | (cla & 0x0F)
    return cla & 0x03  # first interindustry: channel b2 b1


def exchange(capdu: bytes, transmit: Transmit, protocol: int) -> bytes:
    """Send the C-APDU ``capdu`` to a card speaking ``protocol`` (``T0``/``T1``) through
    ``transmit`` and return its R-APDU (response data, SW1 SW2).

    ApduError (nothing sent) for a C-APDU that cannot go to a T=0 card; whatever
    ``transmit`` raises (the card's errors) passes through.
    """
    if protocol not in (T0, T1):
        raise ValueError(f"unknown transmission protocol T={protocol}")
    command = parse_capdu(capdu)
    if protocol == T1:
        return transmit(capdu)
    if command.extended:
        raise ApduError(
            "extended-length C-APDU on a T=0 card: T=0 carries short APDUs only "
            "(Lc up to 255, Le up to 256); extended lengths need a T=1 card"
        )
    return exchange_t0(command, transmit)


def exchange_t0(command: CommandApdu, transmit: Transmit) -> bytes:
    """The short C-APDU ``command`` through T=0 command TPDUs (see the module's text)."""
    if command.extended:
        raise ApduError("extended-length C-APDU on a T=0 card")
    header, ne = command.header, command.ne
    if command.case is ApduCase.CASE_1:
        return transmit(header + b"\x00")
    if command.case is ApduCase.CASE_2:
        response = _case_2(transmit, header, ne)
    else:
        response = transmit(header + bytes((len(command.data),)) + command.data)
        if command.case is ApduCase.CASE_3:
            return response
        if len(response) == 2 and response[0] in WARNINGS:
            return _after_warning(transmit, command.cla, ne, response)
    return _fetch(transmit, command.cla, ne, response)


def _after_warning(transmit: Transmit, cla: int, ne: int, warning: bytes) -> bytes:
    """A case 4 command ended with a warning: its data, fetched with GET RESPONSE (P3 =
    ``00``), and the warning; the warning alone if the card has no data for it."""
    get_response = bytes((get_response_cla(cla), GET_RESPONSE, 0, 0))
    response = _case_2(transmit, get_response, 0)
    if len(response) < 2 or (len(response) == 2 and response[0] != 0x61):
        return warning  # no data (an error, or 9000 alone)
    fetched = _fetch(transmit, cla, ne, response)
    return fetched[:-2] + warning


def _case_2(transmit: Transmit, header: bytes, le: int) -> bytes:
    """A command TPDU with outgoing data (P3 = ``le``), once more with P3 = xx on ``6Cxx``."""
    response = transmit(header + bytes((le & 0xFF,)))
    if len(response) == 2 and response[0] == 0x6C:
        response = transmit(header + response[1:])
    return response


def _fetch(transmit: Transmit, cla: int, ne: int, response: bytes) -> bytes:
    """``response`` and, while the card has more (``61xx``, or ``9Fxx`` for class A0) and
    Ne is not reached, what GET RESPONSE fetches: at most ``ne`` data bytes and the last
    status word."""
    more = (0x61, 0x9F) if cla == GSM_CLA else (0x61,)
    get_response = bytes((get_response_cla(cla), GET_RESPONSE, 0, 0))
    data = bytearray()
    for fetched in range(MAX_GET_RESPONSES + 1):
        if len(response) < 2:
            return bytes(data[:ne]) + response
        data += response[:-2]
        sw = response[-2:]
        left = ne - len(data)
        if sw[0] not in more or left <= 0 or fetched == MAX_GET_RESPONSES:
            break
        if fetched and len(response) == 2:
            break  # a GET RESPONSE that brought no data: the card is stuck
        response = _case_2(transmit, get_response, min(sw[1] or _SHORT_MAX, left))
    return bytes(data[:ne]) + sw
