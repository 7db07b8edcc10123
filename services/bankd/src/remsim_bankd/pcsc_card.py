"""The ``pcsc`` card driver: a card in a PC/SC reader, through pyscard's raw ``scard`` API.

Like the original bankd: one PC/SC context per card, established when the card is opened
and released when it is closed; the reader is the first one whose name matches the slot's
pattern; exclusive access unless shared mode is asked for; the card is powered down on
close. A TPDU-mode session's card is asked for T=0 first (SIMs, and the modem on the other
end speaks T=0); a card that only offers T=1 is used with T=1 instead of being refused (its
commands are the modem's TPDUs, valid short C-APDUs). An APDU-mode session's card
(``connect(any_protocol=True)``) is asked for T=0 or T=1, the card's (and reader's) choice.
The protocol in use (``protocol``) is logged when the card is opened (debug here; the
session's "card open" line names it too).

``PcscCards.readiness`` is the card side of the bankd's ``/readyz``: pcscd answers, and at
least one reader of the slot file is there.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Mapping

from smartcard import scard

from rspro import BankSlot

from .card import T0, T1, Card, CardError, CardNotPresentError, CardUnresponsiveError
from .ere import PosixRegex

__all__ = ["READY_CHECK_TIMEOUT", "PcscCard", "PcscCards", "pcsc_error", "pcsc_readers"]

log = logging.getLogger("remsim.bankd.pcsc")

_NOT_PRESENT = {
    scard.SCARD_E_NO_SMARTCARD,
    scard.SCARD_W_REMOVED_CARD,
    scard.SCARD_E_READER_UNAVAILABLE,
    scard.SCARD_E_UNKNOWN_READER,
    scard.SCARD_E_NO_READERS_AVAILABLE,
    scard.SCARD_E_SHARING_VIOLATION,
    scard.SCARD_E_NO_SERVICE,
    scard.SCARD_E_SERVICE_STOPPED,
    scard.SCARD_E_INVALID_HANDLE,
}
_UNRESPONSIVE = {
    scard.SCARD_W_UNRESPONSIVE_CARD,
    scard.SCARD_W_UNPOWERED_CARD,
    scard.SCARD_W_UNSUPPORTED_CARD,
    scard.SCARD_W_RESET_CARD,
    scard.SCARD_E_TIMEOUT,
    scard.SCARD_F_COMM_ERROR,
    scard.SCARD_E_COMM_DATA_LOST,
    scard.SCARD_E_PROTO_MISMATCH,
    scard.SCARD_E_NOT_TRANSACTED,
}


_RETRY_PAUSE = 0.05
_PROTOCOLS = {scard.SCARD_PROTOCOL_T0: T0, scard.SCARD_PROTOCOL_T1: T1}
READY_CHECK_TIMEOUT = 2.0
"""Seconds pcscd has to list its readers for ``/readyz``; slower counts as not ready."""


def pcsc_error(hresult: int, what: str) -> CardError:
    """The card error for a failed PC/SC call."""
    text = f"{what}: {scard.SCardGetErrorMessage(hresult)} (0x{hresult & 0xFFFFFFFF:08X})"
    if hresult in _NOT_PRESENT:
        return CardNotPresentError(text)
    if hresult in _UNRESPONSIVE:
        return CardUnresponsiveError(text)
    return CardError(text)


class PcscCard:
    """The card in the first PC/SC reader whose name matches ``reader``."""

    def __init__(self, reader: PosixRegex, *, shared: bool = False) -> None:
        self.reader_pattern = reader
        self.share = scard.SCARD_SHARE_SHARED if shared else scard.SCARD_SHARE_EXCLUSIVE
        self.reader_name: str | None = None
        self._context: int | None = None
        self._card: int | None = None
        self._protocol = scard.SCARD_PROTOCOL_T0
        self._atr = b""

    @property
    def atr(self) -> bytes:
        return self._atr

    @property
    def protocol(self) -> int:
        return _PROTOCOLS.get(self._protocol, T0)

    def connect(self, *, any_protocol: bool = False) -> bytes:
        try:
            return self._connect(any_protocol)
        except CardUnresponsiveError as exc:
            # pcscd may be powering the card up or down for another client right now
            log.debug("%s; trying once more", exc)
            time.sleep(_RETRY_PAUSE)
            return self._connect(any_protocol)

    def _connect(self, any_protocol: bool) -> bytes:
        self.disconnect()
        try:
            hr, self._context = scard.SCardEstablishContext(scard.SCARD_SCOPE_SYSTEM)
            if hr != scard.SCARD_S_SUCCESS:
                self._context = None
                raise pcsc_error(hr, "SCardEstablishContext")
            reader = self._find_reader(self._context)
            first = scard.SCARD_PROTOCOL_T0
            if any_protocol:
                first |= scard.SCARD_PROTOCOL_T1
            hr, card, protocol = scard.SCardConnect(self._context, reader, self.share, first)
            if hr == scard.SCARD_E_PROTO_MISMATCH and not any_protocol:
                hr, card, protocol = scard.SCardConnect(
                    self._context, reader, self.share, scard.SCARD_PROTOCOL_T1
                )
            if hr != scard.SCARD_S_SUCCESS:
                raise pcsc_error(hr, f"SCardConnect({reader!r})")
            self._card, self._protocol, self.reader_name = card, protocol, reader
            atr = self._read_atr()
            log.debug("card in %r open with T=%d", reader, self.protocol)
            return atr
        except CardError:
            self.disconnect()
            raise

    def _find_reader(self, context: int) -> str:
        hr, readers = scard.SCardListReaders(context, [])
        if hr != scard.SCARD_S_SUCCESS:
            raise pcsc_error(hr, "SCardListReaders")
        for name in readers:
            if self.reader_pattern.search(name):
                return str(name)
        raise CardNotPresentError(f"no PC/SC reader matches {self.reader_pattern.pattern!r}")

    def _read_atr(self) -> bytes:
        hr, _reader, _state, _protocol, atr = scard.SCardStatus(self._card)
        if hr != scard.SCARD_S_SUCCESS:
            raise pcsc_error(hr, "SCardStatus")
        self._atr = bytes(atr)
        return self._atr

    def transmit(self, apdu: bytes) -> bytes:
        if self._card is None:
            raise CardNotPresentError("card is not open")
        hr, response = scard.SCardTransmit(self._card, self._protocol, list(apdu))
        if hr != scard.SCARD_S_SUCCESS:
            raise pcsc_error(hr, "SCardTransmit")
        return bytes(response)

    def reset(self, warm: bool = False) -> bytes:
        if self._card is None:
            raise CardNotPresentError("card is not open")
        init = scard.SCARD_RESET_CARD if warm else scard.SCARD_UNPOWER_CARD
        hr, protocol = scard.SCardReconnect(self._card, self.share, self._protocol, init)
        if hr != scard.SCARD_S_SUCCESS:
            raise pcsc_error(hr, "SCardReconnect")
        self._protocol = protocol
        return self._read_atr()

    def disconnect(self) -> None:
        self._atr = b""
        if self._card is not None:
            scard.SCardDisconnect(self._card, scard.SCARD_UNPOWER_CARD)
            self._card = None
        if self._context is not None:
            scard.SCardReleaseContext(self._context)
            self._context = None


def pcsc_readers() -> list[str] | None:
    """The readers pcscd serves now, or None if no pcscd answers."""
    hr, context = scard.SCardEstablishContext(scard.SCARD_SCOPE_SYSTEM)
    if hr != scard.SCARD_S_SUCCESS:
        return None
    try:
        hr, readers = scard.SCardListReaders(context, [])
        if hr == scard.SCARD_E_NO_READERS_AVAILABLE:
            return []
        return [str(name) for name in readers] if hr == scard.SCARD_S_SUCCESS else None
    finally:
        scard.SCardReleaseContext(context)


class PcscCards:
    """The ``pcsc`` driver: bank slot → ``PcscCard`` by the slot file's reader patterns."""

    def __init__(self, readers: Mapping[BankSlot, PosixRegex], *, shared: bool = False) -> None:
        self.readers = readers
        self.shared = shared
        self._listing: asyncio.Future[list[str] | None] | None = None

    async def readiness(self) -> dict[str, bool]:
        """``pcscd``: it answers (within ``READY_CHECK_TIMEOUT``); ``readers``: at least one
        reader of the slot file is there. A listing still running (a hung pcscd) is awaited
        again by the next check rather than started twice."""
        if self._listing is None or self._listing.done():
            self._listing = asyncio.ensure_future(asyncio.to_thread(pcsc_readers))
        try:
            readers = await asyncio.wait_for(asyncio.shield(self._listing), READY_CHECK_TIMEOUT)
        except TimeoutError:
            readers = None
        if readers is None:
            return {"pcscd": False, "readers": False}
        patterns = self.readers.values()
        return {"pcscd": True, "readers": any(p.search(r) for p in patterns for r in readers)}

    def card(self, slot: BankSlot) -> Card:
        pattern = self.readers.get(slot)
        if pattern is None:
            raise CardNotPresentError(f"no PC/SC reader configured for {slot}")
        return PcscCard(pattern, shared=self.shared)
