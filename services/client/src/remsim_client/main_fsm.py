"""CLIENT_MAIN, the client's top-level state machine (client.md §6), sans-IO.

Events go in as method calls (server link up/lost and its PDUs, bankd link up/lost and its
PDUs, the modem's TPDUs, APDUs and status); each call returns the actions to carry out, in order:
messages to send, the bankd link to (re)establish or drop, front-end hooks to call and
event scripts to run. Nothing here touches a socket, a clock or a process.

States: INIT (waiting for the first server connection) → UNCONFIGURED (no bankd assigned)
→ WAIT_BANKD (bankd address known, link not up) → OPERATIONAL (card "inserted").

APDU mode (remsim's, between our peers only): the bankd link comes up in APDU mode when the
bankd accepted the client's offer (``bankd_connected(apdu_mode=True)``). Then the modem may
also send whole C-APDUs (``modem_apdu``: an apduModemToCard), and each apduCardToModem
answers with the R-APDU (``CardToModem``) or the card's failure (``CardError``). TPDUs work
in either mode.
"""

from __future__ import annotations

import enum
import logging
from dataclasses import dataclass

from rspro import (
    MAX_APDU,
    MAX_TPDU,
    MIN_APDU,
    MIN_TPDU,
    ApduCardToModem,
    ApduModemToCard,
    BankSlot,
    BankSlotStatusInd,
    ClientSlot,
    ClientSlotStatusInd,
    ConfigClientBankReq,
    ConfigClientBankRes,
    ConfigClientIdReq,
    ConfigClientIdRes,
    Message,
    ResultCode,
    SetAtrReq,
    SetAtrRes,
    SlotPhysStatus,
    TpduCardToModem,
    TpduModemToCard,
)

from .config import DEFAULT_ATR, NO_CLIENT_SLOT

log = logging.getLogger("remsim.client")


class MainState(enum.Enum):
    INIT = "INIT"
    UNCONFIGURED = "UNCONFIGURED"
    WAIT_BANKD = "WAIT_BANKD"
    OPERATIONAL = "OPERATIONAL"


class Cause(enum.StrEnum):
    """Why the event script runs (its ``$1`` and ``REMSIM_CAUSE``)."""

    EVENT_SERVER_CONNECT = "event-server-connect"
    EVENT_CONFIG_BANKD = "event-config-bankd"
    EVENT_BANKD_CONNECT = "event-bankd-connect"
    EVENT_MODEM_STATUS = "event-modem-status"
    REQUEST_SIM_REMOTE = "request-sim-remote"
    REQUEST_SIM_LOCAL = "request-sim-local"
    REQUEST_CARD_INSERT = "request-card-insert"
    REQUEST_CARD_REMOVE = "request-card-remove"
    REQUEST_MODEM_RESET = "request-modem-reset"


# --- actions ---------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class SendToServer:
    msg: Message


@dataclass(frozen=True, slots=True)
class SendToBankd:
    msg: Message


@dataclass(frozen=True, slots=True)
class ConnectBankd:
    """(Re)connect the bankd link to host:port now, dropping any current connection."""

    host: str
    port: int


@dataclass(frozen=True, slots=True)
class DisconnectBankd:
    """Drop the bankd link and keep it down."""


@dataclass(frozen=True, slots=True)
class SimRemote:
    pass


@dataclass(frozen=True, slots=True)
class SimLocal:
    pass


@dataclass(frozen=True, slots=True)
class SetAtr:
    atr: bytes


@dataclass(frozen=True, slots=True)
class CardInsert:
    pass


@dataclass(frozen=True, slots=True)
class CardRemove:
    pass


@dataclass(frozen=True, slots=True)
class ModemReset:
    pass


@dataclass(frozen=True, slots=True)
class CardToModem:
    data: bytes


@dataclass(frozen=True, slots=True)
class CardError:
    """The bankd could not get an answer to the modem's C-APDU (APDU mode): ``result`` says
    why (CARD_NOT_PRESENT, CARD_UNRESPONSIVE, CARD_TRANSMISSION_ERROR, ...), ``error`` is the
    bankd's text, if any. It stands for the R-APDU: the exchange is over."""

    result: ResultCode
    error: str | None = None


@dataclass(frozen=True, slots=True)
class SetApduMode:
    """The front-end may send whole APDUs (True: entering OPERATIONAL on a bankd link in APDU
    mode, before the card shows) or no longer (False: leaving it, after the card went).
    Never in TPDU mode: there the actions are the original's."""

    apdu_mode: bool


@dataclass(frozen=True, slots=True)
class BankSlotStatus:
    status: SlotPhysStatus


@dataclass(frozen=True, slots=True)
class RunScript:
    cause: Cause


Action = (
    SendToServer
    | SendToBankd
    | ConnectBankd
    | DisconnectBankd
    | SimRemote
    | SimLocal
    | SetAtr
    | CardInsert
    | CardRemove
    | ModemReset
    | CardToModem
    | CardError
    | SetApduMode
    | BankSlotStatus
    | RunScript
)

NO_STATUS = SlotPhysStatus(
    reset_active=False, vcc_present=False, clk_active=False, card_present=False
)
"""The "last modem status" before any was reported (the original zero-fills it)."""

_OK = ResultCode.OK


class ClientFsm:
    """CLIENT_MAIN. Read-only attributes describe the configuration the server gave us."""

    def __init__(
        self,
        client_slot: ClientSlot = NO_CLIENT_SLOT,
        *,
        atr: bytes = DEFAULT_ATR,
        atr_ignore_rspro: bool = False,
        modem_status_upstream: bool = False,
    ) -> None:
        self.state = MainState.INIT
        self.client_slot = client_slot
        self.atr = atr
        self.atr_ignore_rspro = atr_ignore_rspro
        self.modem_status_upstream = modem_status_upstream
        self.bankd_host: str | None = None
        self.bankd_port = 0
        self.bank_slot = BankSlot(0, 0)
        self.modem_status_last = NO_STATUS
        self.apdu_mode = False
        """The bankd link is in APDU mode (while OPERATIONAL)."""
        self.card_protocol: int | None = None
        """The card's transmission protocol (0: T=0, 1: T=1) as the bankd's last setAtrReq
        said (APDU mode only); None when unknown."""
        # We left OPERATIONAL and dropped the bankd link ourselves: its BANKD_LOST is due.
        self._bankd_drop_expected = False

    # --- server link -------------------------------------------------------------------------

    def server_connected(self) -> list[Action]:
        # Only the first connection counts: a reconnected server re-sends the configuration.
        # That is the normal course of a server restart, so it is no error (upstream logs
        # "not permitted" at error level here).
        if self.state is not MainState.INIT:
            log.info("server link back in state %s: the card session carries on",
                     self.state.value, extra=self._ids())  # fmt: skip
            return []
        return [*self._goto(MainState.UNCONFIGURED), RunScript(Cause.EVENT_SERVER_CONNECT)]

    def server_lost(self) -> list[Action]:
        """Nothing to do: the server link reconnects by itself, the card session carries on."""
        return []

    def server_message(self, msg: Message) -> list[Action]:
        if isinstance(msg, ConfigClientBankReq):
            return self.config_bank(msg)
        if isinstance(msg, ConfigClientIdReq):
            log.info("Rx configClientIdReq", extra={"client_slot": str(msg.client_slot)})
            self.client_slot = msg.client_slot
            return [SendToServer(ConfigClientIdRes(_OK))]
        log.error("Unknown/Unsupported RSPRO PDU type from server: %s", type(msg).__name__)
        return []

    def config_bank(self, req: ConfigClientBankReq) -> list[Action]:
        """SRVC_CONFIG_BANK: connect to a bankd, switch to another one, or (port 0) none."""
        if self.state is MainState.INIT:
            return self._not_permitted("SRVC_CONFIG_BANK")
        host, port = str(req.bankd.ip), req.bankd.port
        log.info(
            "Rx configClientBankReq(%s:%d)",
            host,
            port,
            extra={"client_slot": str(self.client_slot), "bank_slot": str(req.bank_slot)},
        )
        unchanged = (host, port, req.bank_slot) == (
            self.bankd_host,
            self.bankd_port,
            self.bank_slot,
        )
        self.bankd_host, self.bankd_port, self.bank_slot = host, port, req.bank_slot
        actions: list[Action]
        self._bankd_drop_expected = self.state is MainState.OPERATIONAL and not unchanged
        if port == 0:
            actions = self._goto(MainState.UNCONFIGURED)
        elif unchanged and self.state is MainState.OPERATIONAL:
            # Deviation from the original, which always reconnects: a server that re-sends
            # the same configuration (e.g. after its restart) must not cost a card session.
            log.info("bankd configuration unchanged, keeping the session", extra=self._ids())
            actions = []
        else:
            actions = [*self._goto(MainState.WAIT_BANKD), ConnectBankd(host, port)]
        actions += [SendToServer(ConfigClientBankRes(_OK)), RunScript(Cause.EVENT_CONFIG_BANKD)]
        return actions

    # --- bankd link --------------------------------------------------------------------------

    def bankd_connected(self, apdu_mode: bool = False) -> list[Action]:
        """The bankd link is up; ``apdu_mode``: the bankd accepted our APDU-mode offer."""
        if self.state is not MainState.WAIT_BANKD:
            return self._not_permitted("BANKD_CONNECTED")
        self._bankd_drop_expected = False
        self.apdu_mode = apdu_mode
        self.card_protocol = None
        return [*self._goto(MainState.OPERATIONAL), RunScript(Cause.EVENT_BANKD_CONNECT)]

    def bankd_lost(self) -> list[Action]:
        if self.state is not MainState.OPERATIONAL:
            if self._bankd_drop_expected:
                # The link we dropped on a reconfiguration (e.g. port 0 on every unmap).
                self._bankd_drop_expected = False
                log.debug("bankd link closed as configured (state %s)", self.state.value)
                return []
            return self._not_permitted("BANKD_LOST")
        log.info("Connection to bankd lost", extra=self._ids())
        return self._goto(MainState.WAIT_BANKD)

    def bankd_message(self, msg: Message) -> list[Action]:
        if isinstance(msg, TpduCardToModem):
            if self.state is not MainState.OPERATIONAL:
                return self._not_permitted("BANKD_TPDU")
            if log.isEnabledFor(logging.DEBUG):
                log.debug("Rx tpduCardToModem(%s)", msg.data.hex())
            return [CardToModem(msg.data)]
        if isinstance(msg, ApduCardToModem):
            if self.state is not MainState.OPERATIONAL:
                return self._not_permitted("BANKD_APDU")
            if not self.apdu_mode:
                log.error("Rx apduCardToModem on a bankd link in TPDU mode: dropped")
                return []
            if msg.result is _OK:
                if log.isEnabledFor(logging.DEBUG):
                    log.debug("Rx apduCardToModem(%s)", msg.rapdu.hex())
                return [CardToModem(msg.rapdu)]
            log.warning(
                "Rx apduCardToModem(%s%s)",
                msg.result.name,
                f": {msg.error}" if msg.error else "",
                extra=self._ids(),
            )
            return [CardError(msg.result, msg.error)]
        if isinstance(msg, SetAtrReq):
            if self.state is not MainState.OPERATIONAL:
                return self._not_permitted("BANKD_ATR")
            log.info("Rx setAtrReq(%s)", msg.atr.hex(), extra=self._ids())
            self.card_protocol = msg.protocol
            if self.atr_ignore_rspro:
                log.info("Ignoring RSPRO setAtrReq")
                return [SendToBankd(SetAtrRes(_OK))]
            return [SetAtr(msg.atr), SendToBankd(SetAtrRes(_OK))]
        if isinstance(msg, BankSlotStatusInd):
            if self.state is not MainState.OPERATIONAL:
                return self._not_permitted("BANKD_SLOT_STATUS")
            log.info("Rx bankSlotStatusInd(%s)", msg.slot_phys_status, extra=self._ids())
            return [BankSlotStatus(msg.slot_phys_status)]
        log.error("Unknown/Unsupported RSPRO PDU type from bankd: %s", type(msg).__name__)
        return []

    def stop(self) -> list[Action]:
        """A clean stop of the client: in OPERATIONAL the card goes as on losing the bankd
        (card remove, local SIM, modem reset, with their scripts), so that the modem is not
        left on an emulated card that no longer answers. The state becomes INIT."""
        if self.state is not MainState.OPERATIONAL:
            return []
        log.info("stopping: removing the card", extra=self._ids())
        self._bankd_drop_expected = True
        return self._goto(MainState.INIT)

    # --- modem (front-end) -------------------------------------------------------------------

    def modem_tpdu(self, data: bytes) -> list[Action]:
        if self.state is not MainState.OPERATIONAL:
            return self._not_permitted("MDM_TPDU")
        if not MIN_TPDU <= len(data) <= MAX_TPDU:
            log.error("Modem submitted illegal TPDU length %d", len(data))
            return []
        if log.isEnabledFor(logging.DEBUG):
            log.debug("Tx tpduModemToCard (%s)", data.hex())
        return [SendToBankd(TpduModemToCard(self.client_slot, self.bank_slot, data))]

    def modem_apdu(self, capdu: bytes) -> list[Action]:
        """A whole C-APDU (short or extended, MIN_APDU..MAX_APDU bytes): APDU mode only."""
        if self.state is not MainState.OPERATIONAL:
            return self._not_permitted("MDM_APDU")
        if not self.apdu_mode:
            log.error("Modem submitted an APDU, but the bankd link is in TPDU mode")
            return []
        if not MIN_APDU <= len(capdu) <= MAX_APDU:
            log.error("Modem submitted illegal APDU length %d", len(capdu))
            return []
        if log.isEnabledFor(logging.DEBUG):
            log.debug("Tx apduModemToCard (%s)", capdu.hex())
        return [SendToBankd(ApduModemToCard(self.client_slot, self.bank_slot, capdu))]

    def modem_status(self, status: SlotPhysStatus) -> list[Action]:
        if self.state is not MainState.OPERATIONAL:
            # Not unexpected: the modem powers its SIM slot whether or not a card is in use
            # (and sees the contacts go dead each time the card is taken away).
            return self._not_permitted("MDM_STATUS_IND", logging.DEBUG)
        log.info("Tx clientSlotStatusInd(%s)", status, extra=self._ids())
        actions: list[Action] = [
            SendToBankd(ClientSlotStatusInd(self.client_slot, self.bank_slot, status))
        ]
        changed = status != self.modem_status_last
        # The original runs the script on an *unchanged* status (an inverted comparison);
        # we run it when the status changed, as its manual says, unless asked otherwise.
        self.modem_status_last = status
        if changed != self.modem_status_upstream:
            actions.append(RunScript(Cause.EVENT_MODEM_STATUS))
        return actions

    def modem_pts(self, pts: bytes) -> list[Action]:
        if self.state is not MainState.OPERATIONAL:
            return self._not_permitted("MDM_PTS_IND")
        log.info("PTS Indication (%s)", pts.hex())
        return []

    # --- internals ---------------------------------------------------------------------------

    def _goto(self, new: MainState) -> list[Action]:
        old = self.state
        if new is old:
            # As the original's FSM core: a transition to the same state is refused.
            log.debug("state %s: staying", old.value)
            return []
        log.info("state %s -> %s", old.value, new.value, extra=self._ids())
        actions: list[Action] = []
        if old is MainState.OPERATIONAL:
            actions += [
                CardRemove(),
                RunScript(Cause.REQUEST_CARD_REMOVE),
                SimLocal(),
                RunScript(Cause.REQUEST_SIM_LOCAL),
                ModemReset(),
                RunScript(Cause.REQUEST_MODEM_RESET),
            ]
            if self.apdu_mode:
                self.apdu_mode = False
                actions.append(SetApduMode(False))
        self.state = new
        if new is MainState.UNCONFIGURED:
            actions.append(DisconnectBankd())
        elif new is MainState.OPERATIONAL:
            if self.apdu_mode:
                actions.append(SetApduMode(True))
            actions += [
                SimRemote(),
                RunScript(Cause.REQUEST_SIM_REMOTE),
                SetAtr(self.atr),
                CardInsert(),
                RunScript(Cause.REQUEST_CARD_INSERT),
                ModemReset(),
                RunScript(Cause.REQUEST_MODEM_RESET),
            ]
        return actions

    def _ids(self) -> dict[str, str]:
        """The structured log fields naming this client slot and, once known, its bank slot."""
        ids = {"client_slot": str(self.client_slot)}
        if self.bankd_host is not None:
            ids["bank_slot"] = str(self.bank_slot)
        return ids

    def _not_permitted(self, event: str, level: int = logging.ERROR) -> list[Action]:
        log.log(level, "event %s not permitted in state %s", event, self.state.value)
        return []
