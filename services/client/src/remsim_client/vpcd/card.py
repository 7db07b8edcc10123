"""``VpcdCard``: the remote card as vsmartcard's vpcd sees it, sans-IO (client.md §12, vpcd.md).

While the bankd link is up and the card's ATR is known, the card is "in the reader": the
front-end keeps a TCP connection to vpcd. What vpcd asks is answered as the original's
ifdhandler client does:

* GET ATR: the bankd's ATR, from memory (pcscd polls it every ~0.4 s).
* POWER ON: ClientSlotStatusInd RST=0 VCC=1 CLK=1 card=1. POWER OFF: RST=1 VCC=0 CLK=0
  card=1 (the bankd cold-resets the card). RESET: RST=1 VCC=1 CLK=1 card=1, then RST=0
  (the bankd warm-resets it). pcscd powers an idle card off after about a second and on
  again before the next use; with ``ignore_idle_power_cycles`` these power cycles stay
  local, so the remote SIM keeps its state (PIN, selected files). RESET always goes through.
* A C-APDU: a TpduModemToCard; the TpduCardToModem that follows is the R-APDU. A 4-byte
  case-1 APDU gets P3=00 (the bankd wants 5..260 bytes); other lengths, and extended APDUs
  (which a T=0 TPDU cannot carry), are answered 6700 locally. No answer within
  ``apdu_timeout``: the card leaves the reader (the waiting application's transmit fails)
  rather than answer a made-up status word (client.md §12, vpcd.md §7); it comes back once
  the bank answers again (the late answer itself is dropped) or sends a new ATR. An empty
  R-APDU, which vpcd cannot carry, re-inserts the card.
* APDU mode (remsim's, with a bankd of ours; ``card_insert(apdu_mode=True)``): each C-APDU
  as vpcd passes it (verbatim, short or extended: 4..``rspro.MAX_APDU`` bytes, below vpcd's
  own 65,535) is one apduModemToCard, and the R-APDU comes back whole, one round trip (the
  bankd does T=0's GET RESPONSE itself). Other lengths are answered 6700 locally. A card
  error the bankd reports (no R-APDU) re-inserts the card, as an empty R-APDU does.

Events and time go in, actions come out; ``remsim_client.vpcd.frontend`` carries them out.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

from rspro import MAX_APDU, MAX_TPDU, MIN_APDU, MIN_TPDU, ResultCode, SlotPhysStatus
from vpcd import GET_ATR, POWER_OFF, POWER_ON, RESET, Apdu, VpcdConnection

from ..config import is_extended_apdu
from ..frontend import POWER_OFF as STATUS_POWER_OFF
from ..frontend import POWER_ON as STATUS_POWER_ON

__all__ = [
    "DEFAULT_APDU_TIMEOUT",
    "STATUS_RESET",
    "SW_WRONG_LENGTH",
    "Action",
    "ConnectVpcd",
    "DisconnectVpcd",
    "ReportStatus",
    "SendApdu",
    "SendToVpcd",
    "SendTpdu",
    "VpcdCard",
]

log = logging.getLogger("remsim.client.vpcd")

DEFAULT_APDU_TIMEOUT = 10.0
SW_WRONG_LENGTH = bytes.fromhex("6700")
STATUS_RESET = SlotPhysStatus(
    reset_active=True, vcc_present=True, clk_active=True, card_present=True
)
"""RST asserted with VCC and CLK on: the first half of a warm reset (then STATUS_POWER_ON)."""


# --- actions ---------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class ConnectVpcd:
    """Insert the card: connect to vpcd, and keep reconnecting until DisconnectVpcd."""


@dataclass(frozen=True, slots=True)
class DisconnectVpcd:
    """Remove the card: close the vpcd connection (or stop trying to open one)."""


@dataclass(frozen=True, slots=True)
class SendToVpcd:
    data: bytes
    """A framed message (length + body) for the current vpcd connection."""


@dataclass(frozen=True, slots=True)
class ReportStatus:
    """ClientSlotStatusInd to the bankd (ModemCore.modem_status)."""

    status: SlotPhysStatus


@dataclass(frozen=True, slots=True)
class SendTpdu:
    """TpduModemToCard to the bankd (ModemCore.modem_tpdu)."""

    data: bytes


@dataclass(frozen=True, slots=True)
class SendApdu:
    """ApduModemToCard to the bankd (ModemCore.modem_apdu), APDU mode."""

    data: bytes


Action = ConnectVpcd | DisconnectVpcd | SendToVpcd | ReportStatus | SendTpdu | SendApdu


class VpcdCard:
    """The remote card as vpcd sees it; sans-IO.

    Fed by the client core's hooks (:meth:`set_atr`, :meth:`card_insert`,
    :meth:`card_remove`, :meth:`card_to_modem`), by the vpcd connection
    (:meth:`vpcd_connected`, :meth:`vpcd_data`, :meth:`vpcd_closed`) and by time
    (:meth:`next_deadline`, :meth:`handle_timeout`); every call returns the actions to
    carry out, in order.
    """

    def __init__(
        self,
        *,
        apdu_timeout: float = DEFAULT_APDU_TIMEOUT,
        ignore_idle_power_cycles: bool = False,
        atr_ignore_rspro: bool = False,
    ) -> None:
        self.apdu_timeout = apdu_timeout
        self.ignore_idle_power_cycles = ignore_idle_power_cycles
        self.atr_ignore_rspro = atr_ignore_rspro
        self.atr = b""
        self.inserted = False  # the core is OPERATIONAL (bankd link up)
        self.apdu_mode = False  # that bankd link is in APDU mode: whole APDUs
        self.atr_known = False  # the ATR to show is the card's (or -r: the configured one)
        self.stalled = False  # an APDU timed out: out of the reader until the bank answers
        self.timeouts = 0
        self._conn: VpcdConnection | None = None
        self._deadline: float | None = None  # of the APDU the bank has to answer
        self._stale = 0  # answers still due for APDUs that timed out or were abandoned
        self._reported: SlotPhysStatus | None = None

    @property
    def present(self) -> bool:
        """Whether the card should be in the reader (connected to vpcd) now."""
        return self.inserted and self.atr_known and not self.stalled

    @property
    def connected(self) -> bool:
        return self._conn is not None

    @property
    def apdu_pending(self) -> bool:
        return self._deadline is not None

    # --- hooks of the client core ------------------------------------------------------------

    def set_atr(self, atr: bytes) -> list[Action]:
        if not self.inserted:
            self.atr = atr  # the configured ATR, announced just before the insertion
            return []
        if self.present:
            if atr == self.atr:
                return []
            # pcscd reads a new ATR only on a new insertion (or power-up): re-insert.
            log.info("vpcd: the card's ATR changed to %s, re-inserting the card", atr.hex())
            self.atr = atr
            return [*self._eject(), ConnectVpcd()]
        # A first ATR, or one after a timeout: either way the bank is there now.
        self.atr = atr
        self.atr_known = True
        self.stalled = False
        log.info("vpcd: inserting the card, ATR %s", atr.hex())
        return [ConnectVpcd()]

    def card_insert(self, apdu_mode: bool = False) -> list[Action]:
        self.inserted = True
        self.apdu_mode = apdu_mode
        self.stalled = False
        self._stale = 0
        self._reported = None
        if self.atr_ignore_rspro:
            self.atr_known = True
            log.info("vpcd: inserting the card, ATR %s (-r)", self.atr.hex())
            return [ConnectVpcd()]
        return []

    def card_remove(self) -> list[Action]:
        was_present = self.present
        self.inserted = self.atr_known = self.stalled = self.apdu_mode = False
        self._stale = 0  # whatever the old bankd link still owed is gone with it
        if not was_present:
            return []
        log.info("vpcd: removing the card")
        return self._eject()

    def card_to_modem(self, data: bytes) -> list[Action]:
        if self._stale:
            self._stale -= 1
            log.warning("vpcd: dropping a late R-APDU %s", data.hex())
            if self._stale or not self.stalled:
                return []
            self.stalled = False
            log.info("vpcd: the bank answers again, re-inserting the card")
            return [ConnectVpcd()] if self.present else []
        if self._deadline is None or self._conn is None:
            log.warning("vpcd: dropping an R-APDU nobody asked for: %s", data.hex())
            return []
        self._deadline = None
        if not data:
            # vpcd cannot carry an empty message, and a made-up SW would lie: the
            # application's transmit fails as with a card pulled and pushed back in.
            log.error("vpcd: the bankd sent an empty R-APDU, re-inserting the card")
            return [*self._eject(), ConnectVpcd()]
        return [SendToVpcd(self._conn.reply(data))]

    def card_error(self, result: ResultCode, error: str | None) -> list[Action]:
        """APDU mode: the bankd has no R-APDU for the pending C-APDU (the card failed)."""
        if self._stale:
            return self.card_to_modem(b"")  # a late answer: counted and dropped as any
        if self._deadline is None or self._conn is None:
            log.warning("vpcd: dropping a card error nobody asked for: %s", result.name)
            return []
        self._deadline = None
        # A made-up SW would lie: the application's transmit fails, the card is re-inserted.
        log.error("vpcd: the card did not answer (%s%s), re-inserting the card",
                  result.name, f": {error}" if error else "")  # fmt: skip
        return [*self._eject(), ConnectVpcd()]

    # --- the vpcd connection -----------------------------------------------------------------

    def vpcd_connected(self) -> list[Action]:
        self._conn = VpcdConnection()
        return []

    def vpcd_closed(self) -> list[Action]:
        """vpcd closed the connection (pcscd stopped): reconnecting is the front-end's job."""
        self._drop_connection()
        return []

    def vpcd_data(self, data: bytes, now: float) -> list[Action]:
        conn = self._conn
        if conn is None:
            return []
        actions: list[Action] = []
        for event in conn.feed(data):
            if isinstance(event, Apdu):
                actions += self._apdu(conn, event.data, now)
                continue
            code = event.code
            if code == GET_ATR:
                actions.append(SendToVpcd(conn.reply(self.atr)))
            elif code == POWER_ON:
                log.debug("vpcd: power on")
                actions += self._report(STATUS_POWER_ON)
            elif code == POWER_OFF:
                if self.ignore_idle_power_cycles:
                    log.debug("vpcd: power off, not passed on to the bank")
                else:
                    log.debug("vpcd: power off")
                    actions += self._report(STATUS_POWER_OFF)
            elif code == RESET:
                log.debug("vpcd: reset")
                actions += self._report(STATUS_RESET) + self._report(STATUS_POWER_ON)
            else:
                log.warning("vpcd: unknown control message %#04x ignored", code)
        return actions

    # --- time --------------------------------------------------------------------------------

    def next_deadline(self) -> float | None:
        return self._deadline

    def handle_timeout(self, now: float) -> list[Action]:
        if self._deadline is None or now < self._deadline or self._conn is None:
            return []
        self._deadline = None
        self._stale += 1
        self.timeouts += 1
        self.stalled = True
        log.warning(
            "vpcd: no answer from the card within %g s; it leaves the reader until the bank "
            "answers again",
            self.apdu_timeout,
        )
        return self._eject()

    # --- internals ---------------------------------------------------------------------------

    def _apdu(self, conn: VpcdConnection, apdu: bytes, now: float) -> list[Action]:
        if self.apdu_mode:
            if not MIN_APDU <= len(apdu) <= MAX_APDU:
                log.warning("vpcd: C-APDU of %d bytes cannot go to the bank", len(apdu))
                return [SendToVpcd(conn.reply(SW_WRONG_LENGTH))]
            if log.isEnabledFor(logging.DEBUG):
                log.debug("vpcd: C-APDU %s", apdu.hex())
            self._deadline = now + self.apdu_timeout
            return [SendApdu(apdu)]
        if len(apdu) == MIN_TPDU - 1:
            apdu += b"\x00"  # case 1 (CLA INS P1 P2): vpcd passes it on verbatim, add P3
        extended = is_extended_apdu(apdu)
        if not MIN_TPDU <= len(apdu) <= MAX_TPDU or extended:
            kind = "extended C-APDU (needs the APDU mode)" if extended else "C-APDU"
            log.warning("vpcd: %s of %d bytes cannot go to the bank", kind, len(apdu))
            return [SendToVpcd(conn.reply(SW_WRONG_LENGTH))]
        if log.isEnabledFor(logging.DEBUG):
            log.debug("vpcd: C-APDU %s", apdu.hex())
        self._deadline = now + self.apdu_timeout
        return [SendTpdu(apdu)]

    def _report(self, status: SlotPhysStatus) -> list[Action]:
        # Ignoring idle power cycles, a power-on after a power-off kept local changes nothing.
        if self.ignore_idle_power_cycles and status == self._reported:
            return []
        self._reported = status
        return [ReportStatus(status)]

    def _drop_connection(self) -> None:
        self._conn = None
        if self._deadline is not None:
            self._deadline = None
            self._stale += 1  # its answer may still come: it must not answer the next APDU

    def _eject(self) -> list[Action]:
        self._drop_connection()
        return [DisconnectVpcd()]
