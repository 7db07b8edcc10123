"""Card inventory: which card is in a bank slot (its ATR, ICCID and, without a PIN, IMSI).

``identify`` powers the card up, reads EF_ICCID (3F00/2FE2, readable without a PIN on every
SIM and UICC) and EF_IMSI, and powers it down. It speaks the SIM's class byte (A0, GSM 11.11)
first and the UICC's (00, TS 102 221) when the card refuses class A0 (6Exx/6Dxx). The card's
T=0 procedure bytes are handled here, as a modem would: a SELECT answered 9Fxx/61xx (response
data waiting) is a success whose data is not fetched, a READ answered 6Cxx is sent again
with the Le the card asked for. EF_IMSI is read from DF_GSM (7F20/6F07) or, on a UICC
without DF_GSM, from the USIM application named in EF_DIR; a card that wants a PIN for it
(9804 / 6982) has an unknown IMSI, which is no error.

The bankd runs ``identify`` only on a card no session holds and no map names
(``BankdCore`` guarantees it): a mapped card belongs to its client's session.

Card activity (``TpduCounters``), also of mapped cards: the TPDUs each slot's card answered
and when the last one was sent to it, counted in the session's TPDU path (an increment and a
store) and added to the inventory report (``tpduCount``, ``idleMs``), which the core sends
again every ``ACTIVITY_REPORT`` seconds while the counts change: never one message per TPDU.
"""

from __future__ import annotations

import contextlib
import dataclasses
import time
from collections.abc import Iterable

from rspro import CardInfo, CardState

from .card import Card, CardError, CardNotPresentError, CardUnresponsiveError

__all__ = [
    "ACTIVITY_REPORT",
    "TpduCounters",
    "decode_bcd",
    "decode_iccid",
    "decode_imsi",
    "identify",
]

ACTIVITY_REPORT = 5.0
"""Seconds between two inventory reports sent for card activity alone (only while the
TPDU counts change)."""

GSM_CLA, UICC_CLA = 0xA0, 0x00
SELECT, READ_BINARY, READ_RECORD = 0xA4, 0xB0, 0xB2
MF, EF_ICCID, EF_DIR, DF_GSM, EF_IMSI = 0x3F00, 0x2FE2, 0x2F00, 0x7F20, 0x6F07
ICCID_SIZE, IMSI_SIZE = 10, 9
"""Bytes of EF_ICCID and EF_IMSI."""
USIM_AID_PREFIX = bytes.fromhex("A0000000871002")
"""RID and application code of a 3GPP USIM (TS 31.102)."""


def decode_bcd(data: bytes) -> str:
    """Swapped-nibble BCD (low nibble first) as printed, the F padding dropped."""
    return "".join(f"{b & 0x0F:X}{b >> 4:X}" for b in data).rstrip("F")


def decode_iccid(data: bytes) -> str | None:
    """EF_ICCID's digits; None for an unprogrammed (all F) file."""
    return decode_bcd(data) or None


def decode_imsi(data: bytes) -> str | None:
    """EF_IMSI's digits: a length byte, then the first digit above the parity nibble and
    the others in swapped nibbles. None for an empty or unprogrammed file."""
    if not data or not 1 <= data[0] <= len(data) - 1:
        return None
    return decode_bcd(data[1 : 1 + data[0]])[1:] or None


class _Refused(Exception):
    """The card answered a command with an error status word (the file is not there, or
    needs a PIN): what it guards is unknown."""


class _Reader:
    """Commands to one powered-up card, in one class (A0 or 00)."""

    def __init__(self, card: Card) -> None:
        self.card = card
        self.cla = GSM_CLA

    @property
    def gsm(self) -> bool:
        return self.cla == GSM_CLA

    def _command(self, ins: int, p1: int, p2: int, p3: int, data: bytes = b"") -> bytes:
        """The response data; raises ``_Refused`` unless the card reports success."""
        response = _transmit(self.card, bytes([self.cla, ins, p1, p2, p3]) + data)
        body, sw1, sw2 = response[:-2], response[-2], response[-1]
        if sw1 == 0x6C and not data and sw2 != p3:  # wrong Le: the card says which one
            return self._command(ins, p1, p2, sw2)
        if (sw1, sw2) == (0x90, 0x00) or sw1 in (0x9F, 0x61):  # 9Fxx/61xx: data waiting
            return body
        raise _Refused(response[-2:].hex())

    def select(self, fid: int) -> None:
        p2 = 0x00 if self.gsm else 0x04
        self._command(SELECT, 0x00, p2, 2, fid.to_bytes(2, "big"))

    def select_aid(self, aid: bytes) -> None:
        self._command(SELECT, 0x04, 0x04, len(aid), aid)

    def read_binary(self, size: int) -> bytes:
        return self._command(READ_BINARY, 0x00, 0x00, size)

    def read_record(self, number: int) -> bytes:
        return self._command(READ_RECORD, number, 0x04, 0x00)  # Le 0: the card corrects it

    def select_mf(self) -> None:
        """SELECT MF in class A0, or in class 00 on a card that refuses A0."""
        response = _transmit(self.card, bytes([GSM_CLA, SELECT, 0, 0, 2]) + MF.to_bytes(2, "big"))
        if response[-2] in (0x6E, 0x6D):  # class (or instruction) not supported: a UICC
            self.cla = UICC_CLA
            self.select(MF)
        elif not (response[-2:] == b"\x90\x00" or response[-2] == 0x9F):
            raise _Refused(response[-2:].hex())

    def imsi(self) -> str | None:
        try:
            self.select(MF)
            self.select(DF_GSM)
        except _Refused:
            if self.gsm:
                return None
            self._select_usim()
        self.select(EF_IMSI)
        return decode_imsi(self.read_binary(IMSI_SIZE))

    def _select_usim(self) -> None:
        """The USIM application named in EF_DIR (its first USIM record)."""
        self.select(MF)
        self.select(EF_DIR)
        for number in range(1, 9):
            aid = _aid(self.read_record(number))
            if aid is not None and aid.startswith(USIM_AID_PREFIX):
                self.select_aid(aid)
                return
        raise _Refused("no USIM in EF_DIR")


def _transmit(card: Card, apdu: bytes) -> bytes:
    response = card.transmit(apdu)
    if len(response) < 2:
        raise CardUnresponsiveError(f"{apdu[:5].hex()} answered {response.hex() or 'nothing'}")
    return response


def _aid(record: bytes) -> bytes | None:
    """The AID (tag 4F) of an EF_DIR application template (tag 61)."""
    if len(record) < 4 or record[0] != 0x61 or record[2] != 0x4F:
        return None
    return record[4 : 4 + record[3]]


def identify(card: Card, slot_nr: int) -> CardInfo:
    """What is in the slot of ``card`` (a blocking call: powers the card up and down)."""
    try:
        atr = card.connect()
    except CardNotPresentError:
        return CardInfo(slot_nr, CardState.EMPTY)
    except CardError:
        return CardInfo(slot_nr, CardState.UNRESPONSIVE)
    try:
        if not atr:
            return CardInfo(slot_nr, CardState.UNRESPONSIVE)
        reader = _Reader(card)
        try:
            reader.select_mf()
            reader.select(EF_ICCID)
            iccid = decode_iccid(reader.read_binary(ICCID_SIZE))
        except _Refused:
            return CardInfo(slot_nr, CardState.PRESENT, atr)
        try:
            imsi = reader.imsi()
        except _Refused:
            imsi = None
        return CardInfo(slot_nr, CardState.PRESENT, atr, iccid, imsi)
    except CardNotPresentError:  # pulled out while being read
        return CardInfo(slot_nr, CardState.EMPTY)
    except CardError:
        return CardInfo(slot_nr, CardState.UNRESPONSIVE)
    finally:
        with contextlib.suppress(CardError):
            card.disconnect()


class TpduCounters:
    """TPDUs answered per bank slot (by slot number) since the bankd started, and when the
    last one was sent to the card (``time.perf_counter``). ``count`` is called by the thread
    of the session holding the slot, on every TPDU: two list stores, no lock (one writer per
    slot; a report reads a count at most one TPDU old)."""

    __slots__ = ("_reported", "counts", "last")

    def __init__(self, num_slots: int) -> None:
        self.counts = [0] * num_slots
        self.last = [0.0] * num_slots
        self._reported = [0] * num_slots

    def count(self, slot_nr: int, at: float) -> None:
        """A TPDU sent to the card of slot ``slot_nr`` at ``at`` was answered."""
        self.counts[slot_nr] += 1
        self.last[slot_nr] = at

    @property
    def changed(self) -> bool:
        """Counts moved since the last ``report``."""
        return self.counts != self._reported

    def report(self, cards: Iterable[CardInfo]) -> tuple[CardInfo, ...]:
        """The inventory ``cards`` with each slot's activity, by slot number. A slot whose
        card answered TPDUs but was never identified (mapped since the bankd started) is
        reported ``present`` with its activity only."""
        now = time.perf_counter()
        counts = self._reported = list(self.counts)
        by_nr = {card.slot_nr: card for card in cards}
        active = {nr for nr, n in enumerate(counts) if n}
        report = []
        for nr in sorted(by_nr.keys() | active):
            card = by_nr.get(nr) or CardInfo(nr, CardState.PRESENT)
            if nr in active:
                idle_ms = max(0, round((now - self.last[nr]) * 1000))
                card = dataclasses.replace(card, tpdu_count=counts[nr], idle_ms=idle_ms)
            report.append(card)
        return tuple(report)
