"""The bankd's logic, sans-IO: slotmaps, client sessions and card results in; actions out.

Inputs are method calls (a map was pushed, a client sent a PDU, a card call finished, time
passed); every call returns the actions the I/O layer must carry out, in order: send a
message to a client, close a client connection, make a card call. Every action names the
session it belongs to; a bank slot's card is used by one session at a time, and is given
to the next session only once the previous one reported it released (``card_released``).

A client session follows the original worker's states (bankd.md §5), with its gaps
closed: an ATR is sent whenever the card becomes usable (also after a late map or a reset),
card trouble is reported (result codes, ErrorInd) before the connection closes, and a bank
slot is used by one session at a time.

A live session is never taken over: when a new connection claims a client slot that an
older session holds, the older one is checked first (``CheckAlive``: an IPA PING that must
be answered within a short window). If it answers, the newcomer is refused
(``identityInUse``) and closed; if not (its host died without closing it, or it is
frozen), the connection layer drops it (``drop``) and the newcomer takes its place at once.

With TLS, a client is who its certificate says (``session_secured``): its connectClientReq
is accepted only for a client id the certificate names, so only for a bank slot mapped to
one of its ids. Any other claim is answered ``illegalClientId`` and closed, with one
warning, before it can touch the session of the client it claims to be.

The card inventory (``inventory=True``): a card no session holds and no map names is
identified (``IdentifyCard``, answered with ``card_identified``) at the start, when its map
is removed or its session released it, and every ``inventory_poll`` seconds (a card
inserted, removed, swapped or moved to another slot shows within that). A slot being
identified is busy, as one being released: a session that gets it meanwhile opens its card
once the identification is done. Whenever what is known changes, the whole inventory goes
to the server (``ReportCards``); a card that becomes mapped keeps the identity found
before. A card found in one slot is no longer in the slot where it was seen before: that
slot's entry is dropped and identified again.

remsim's APDU mode (docs/architecture.md, "APDU mode"): a client of ours offers it in its
connectClientReq (``features.apdu``); unless the bankd's ``apdu_mode`` is off, the session
accepts it in its connectClientRes (an original client offers nothing and gets the
original's bytes). Such a session opens its card with T=0 or T=1 (``OpenCard.any_protocol``),
tells the protocol in its setAtrReq, and takes ApduModemToCard besides TPDUs: each one is
exchanged whole with the card (``TransmitApdu``, ``remsim_bankd.apdu``) and answered with
one ApduCardToModem; a card error is its result code and then handled as for a TPDU. An
ApduModemToCard in a session not in APDU mode is a protocol error (closed, one log line).
"""

from __future__ import annotations

import enum
import logging
from dataclasses import dataclass

from remsim_common import PeerIdentity
from rspro import (
    MAX_APDU,
    MAX_TPDU,
    MIN_APDU,
    MIN_TPDU,
    ApduCardToModem,
    ApduModemToCard,
    BankSlot,
    CardInfo,
    CardState,
    ClientSlot,
    ClientSlotStatusInd,
    ComponentIdentity,
    ComponentType,
    ConnectClientReq,
    ConnectClientRes,
    ErrorCode,
    ErrorInd,
    ErrorSeverity,
    Message,
    RemsimFeatures,
    ResultCode,
    SetAtrReq,
    SetAtrRes,
    SlotPhysStatus,
    TpduCardToModem,
    TpduModemToCard,
)

from .card import T0, CardError, CardNotPresentError, CardUnresponsiveError
from .inventory import ACTIVITY_REPORT, TpduCounters
from .mapping import ID_MAX, MappingChange, MappingTable, valid_client_slot

__all__ = [
    "Action",
    "BankdCore",
    "CheckAlive",
    "Close",
    "IdentifyCard",
    "OpenCard",
    "ReleaseCard",
    "ReportCards",
    "ResetCard",
    "Send",
    "Session",
    "SessionState",
    "Transmit",
    "TransmitApdu",
]

RESET_GRACE = 1.0
"""Seconds a session keeps its card after a resetStateReq, for the server to push its map
again (it sends the maps it knows right after the reset): an unchanged map keeps its
session, so a server restart costs the modem nothing."""

INVENTORY_POLL = 10.0
"""Seconds between two identifications of an unmapped slot: a card inserted, removed or
swapped there is found within this."""
APDU_MODE = RemsimFeatures(apdu=True)
"""The features of a connectClientRes accepting the APDU mode."""
NO_SESSION = 0
"""The ``sid`` of the actions that belong to no client session (session ids start at 1)."""

log = logging.getLogger("remsim.bankd.session")
maplog = logging.getLogger("remsim.bankd.mapping")
invlog = logging.getLogger("remsim.bankd.inventory")


class SessionState(enum.Enum):
    CONN_WAIT_ID = "CONN_WAIT_ID"
    CONN_CLIENT_WAIT_MAP = "CONN_CLIENT_WAIT_MAP"  # identified; no map, or its bank slot is busy
    CONN_CLIENT_MAPPED = "CONN_CLIENT_MAPPED"  # holds the bank slot; card opening or retrying
    CONN_CLIENT_MAPPED_CARD = "CONN_CLIENT_MAPPED_CARD"  # card open: TPDUs flow
    CLOSED = "CLOSED"


# --- actions ----------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Send:
    sid: int
    msg: Message


@dataclass(frozen=True, slots=True)
class Close:
    """Close the client connection (after what was sent before it)."""

    sid: int
    reason: str


@dataclass(frozen=True, slots=True)
class OpenCard:
    """Power up the card of ``slot``; answer with ``card_opened`` or ``card_failed``.
    ``any_protocol``: with T=0 or T=1, as the card likes (APDU mode); else T=0 first."""

    sid: int
    slot: BankSlot
    any_protocol: bool = False


@dataclass(frozen=True, slots=True)
class Transmit:
    """Send ``tpdu.data`` to the card; answer with ``card_response`` or ``card_failed``."""

    sid: int
    slot: BankSlot
    tpdu: TpduModemToCard


@dataclass(frozen=True, slots=True)
class TransmitApdu:
    """Exchange ``apdu.capdu`` with the card (``apdu.exchange``); answer with
    ``apdu_response`` or ``apdu_failed``."""

    sid: int
    slot: BankSlot
    apdu: ApduModemToCard


@dataclass(frozen=True, slots=True)
class ResetCard:
    """Reset the card; answer with ``card_opened`` (the new ATR) or ``card_failed``."""

    sid: int
    slot: BankSlot
    warm: bool


@dataclass(frozen=True, slots=True)
class ReleaseCard:
    """Power the card down and release it; answer with ``card_released``."""

    sid: int
    slot: BankSlot


@dataclass(frozen=True, slots=True)
class CheckAlive:
    """Check that the client is alive: a PING it must answer soon. Answered: ``alive``;
    not answered: ``drop``."""

    sid: int


@dataclass(frozen=True, slots=True)
class IdentifyCard:
    """Identify the card of ``slot`` (``inventory.identify``); answer with
    ``card_identified``."""

    slot: BankSlot
    sid: int = NO_SESSION


@dataclass(frozen=True, slots=True)
class ReportCards:
    """Tell the server what is in the bank's slots (those identified so far)."""

    cards: tuple[CardInfo, ...]
    sid: int = NO_SESSION


Action = (
    Send | Close | OpenCard | Transmit | TransmitApdu | ResetCard | ReleaseCard | CheckAlive
    | IdentifyCard | ReportCards
)  # fmt: skip


@dataclass(slots=True)
class Session:
    """One client connection."""

    sid: int
    state: SessionState = SessionState.CONN_WAIT_ID
    client_slot: ClientSlot | None = None
    bank_slot: BankSlot | None = None  # set while this session holds a bank slot
    answered: bool = False  # connectClientRes sent
    apdu: bool = False  # in remsim's APDU mode (accepted in its connectClientRes)
    peer: str = ""  # the client's address, for log lines
    tls: bool = False  # over TLS: its claims are judged by ``identity``
    identity: PeerIdentity | None = None  # what the client's certificate names
    retry_at: float | None = None  # next attempt to open an absent card
    # a newcomer for a client slot held by session ``contested``: its claim, while the
    # older session is checked (``checking``: a CheckAlive of this session is under way)
    contested: int | None = None
    claim: ConnectClientReq | None = None
    checking: bool = False
    # modem-side levels last reported, for reset edge detection, and the last indication
    vcc: bool = True
    rst: bool = False
    last_status: SlotPhysStatus | None = None

    def __str__(self) -> str:
        return f"[{self.sid} {self.state.value}]"

    @property
    def log_fields(self) -> dict[str, str]:
        """``extra=`` for its log lines: the client slot and bank slot, once known."""
        slots = {"client_slot": self.client_slot, "bank_slot": self.bank_slot}
        return {key: str(slot) for key, slot in slots.items() if slot is not None}


def _map_fields(bank: BankSlot, client: ClientSlot) -> dict[str, str]:
    return {"bank_slot": str(bank), "client_slot": str(client)}


def certificate(identity: PeerIdentity | None) -> str:
    """A peer's certificate in a log line: its subject and what it names."""
    if identity is None:
        return "a certificate naming no remsim peer"
    return f"certificate {identity.subject!r} ({identity})"


def describe(info: CardInfo) -> str:
    """A slot's inventory entry in a log line."""
    if info.state is not CardState.PRESENT:
        return info.state.asn_name
    atr = info.atr.hex().upper() if info.atr else "?"
    return f"card ICCID {info.iccid or '?'}, IMSI {info.imsi or '?'}, ATR {atr}"


def _refusal(s: Session, what: str, sender: ClientSlot, target: BankSlot) -> str | None:
    """Why a session may not send ``what`` (a TPDU or an APDU) from ``sender`` to ``target``
    now, or None: only with its card open, and only between its own slots."""
    if s.state is not SessionState.CONN_CLIENT_MAPPED_CARD:
        return f"{what} while no card is open"
    if target != s.bank_slot or sender != s.client_slot:
        return f"{what} for {sender} -> {target}"
    return None


def _open_card(s: Session, bank: BankSlot) -> OpenCard:
    return OpenCard(s.sid, bank, any_protocol=s.apdu)


def _error_string(text: str | None) -> str | None:
    """``text`` as an RSPRO ErrorString (IA5String, 1..255 characters), None if empty."""
    if not text:
        return None
    return text.encode("ascii", "replace").decode("ascii")[:255]


def result_for(error: CardError) -> ResultCode:
    if isinstance(error, CardUnresponsiveError):
        return ResultCode.CARD_UNRESPONSIVE
    if isinstance(error, CardNotPresentError):
        return ResultCode.CARD_NOT_PRESENT
    return ResultCode.CARD_TRANSMISSION_ERROR


class BankdCore:
    """Slotmaps and client sessions of one bankd."""

    def __init__(
        self,
        bank_id: int,
        num_slots: int,
        identity: ComponentIdentity,
        *,
        card_retry: float = 2.0,
        inventory: bool = False,
        inventory_poll: float = INVENTORY_POLL,
        apdu_mode: bool = True,
    ) -> None:
        self.identity = identity
        self.apdu_mode = apdu_mode  # accept a client's offer of the APDU mode
        self.card_retry = card_retry
        self.inventory = inventory
        self.inventory_poll = inventory_poll
        self.maps = MappingTable(bank_id, num_slots)
        self.sessions: dict[int, Session] = {}
        self._holders: dict[BankSlot, Session] = {}
        self._releasing: set[BankSlot] = set()  # released by a closed session, not yet done
        self._after_reset: dict[BankSlot, tuple[ClientSlot, float]] = {}  # see reset_state
        self._next_sid = 1
        # the card inventory: what was found per slot, what is to be (or being) identified
        self.cards: dict[BankSlot, CardInfo] = {}
        self._identify_due: set[BankSlot] = set()
        self._identifying: set[BankSlot] = set()
        self._poll_at: float | None = None
        self.tpdus = TpduCounters(num_slots)  # counted by the sessions' threads (clients.py)
        self._activity_at: float | None = None  # next look at tpdus (inventory on)

    @property
    def bank_id(self) -> int:
        return self.maps.bank_id

    @property
    def num_slots(self) -> int:
        return self.maps.num_slots

    # --- control link -----------------------------------------------------------------------

    def create_mapping(self, client: ClientSlot, bank: BankSlot) -> tuple[ResultCode, list[Action]]:
        change = self.maps.create(client, bank)
        maplog.info("createMapping: %s", change.result.name, extra=_map_fields(bank, client))
        actions: list[Action] = []
        kept = self._after_reset.pop(bank, None)
        if kept is not None and kept[0] != client:  # another map for a slot held since a reset
            self._close_after_reset(bank, kept[0], actions)
        return change.result, actions + self._apply(change)

    def remove_mapping(self, client: ClientSlot, bank: BankSlot) -> tuple[ResultCode, list[Action]]:
        change = self.maps.remove(client, bank)
        maplog.info("removeMapping: %s", change.result.name, extra=_map_fields(bank, client))
        return change.result, self._apply(change)

    def reset_state(self, now: float = 0.0) -> tuple[ResultCode, list[Action]]:
        """Forget every map. A session holding a card keeps it for ``RESET_GRACE`` seconds:
        the server follows its resetStateReq with the maps it knows, and a session whose
        map comes back unchanged goes on untouched; the others are closed then."""
        change = self.maps.reset()
        maplog.info(
            "resetState: %d maps removed", len(change.removed), extra={"bank": self.bank_id}
        )
        actions: list[Action] = []
        for bank, client in change.removed:
            if bank in self._holders:
                self._after_reset[bank] = (client, now + RESET_GRACE)
        return change.result, actions

    def _settle_reset(self, now: float, actions: list[Action]) -> None:
        """Close the sessions whose map has not come back ``RESET_GRACE`` after a reset."""
        for bank, (client, deadline) in list(self._after_reset.items()):
            if deadline <= now:
                del self._after_reset[bank]
                if self.maps.client_of(bank) != client:
                    self._close_after_reset(bank, client, actions)

    def _close_after_reset(self, bank: BankSlot, client: ClientSlot, actions: list[Action]) -> None:
        holder = self._holders.get(bank)
        if holder is not None and holder.client_slot == client:
            self._close(holder, f"map {bank} <-> {client} removed by resetState", actions)

    def _apply(self, change: MappingChange) -> list[Action]:
        actions: list[Action] = []
        for bank, client in change.removed:
            holder = self._holders.get(bank)
            if holder is not None:
                self._close(holder, f"map {bank} <-> {client} removed", actions)
            self._want_identified([bank], actions)
        if change.added is not None:
            self._wake_waiters(change.added[0], actions)
        return actions

    def _wake_waiters(self, bank: BankSlot, actions: list[Action]) -> None:
        """Give a free bank slot to the first session waiting for it."""
        client = self.maps.client_of(bank)
        if client is None or bank in self._holders or self._busy(bank):
            return
        for s in self.sessions.values():
            if s.state is SessionState.CONN_CLIENT_WAIT_MAP and s.client_slot == client:
                self._hold(s, bank, actions)
                return

    # --- client sessions --------------------------------------------------------------------

    def session_opened(self, peer: str = "") -> int:
        """A client connected from ``peer``; returns the session id used in every other call."""
        sid = self._next_sid
        self._next_sid += 1
        self.sessions[sid] = Session(sid, peer=peer)
        return sid

    def session_secured(self, sid: int, identity: PeerIdentity | None) -> None:
        """The TLS handshake of ``sid`` is done; ``identity`` is what the client's
        certificate names (None: no remsim peer). Its connectClientReq must match it."""
        s = self.sessions.get(sid)
        if s is not None:
            s.tls, s.identity = True, identity

    def session_closed(self, sid: int) -> list[Action]:
        """The client connection is gone (closed by either side)."""
        s = self.sessions.pop(sid, None)
        if s is None:
            return []
        actions: list[Action] = []
        if s.state is not SessionState.CLOSED:
            # one that never identified is not worth a line (a port scan, a flood)
            level = logging.DEBUG if s.client_slot is None else logging.INFO
            log.log(level, "%s client disconnected", s, extra=s.log_fields)
            self._close(s, "", actions, connection_gone=True)
        return actions

    def drop(self, sid: int, why: str) -> list[Action]:
        """The connection layer gives up on ``sid`` (no PONG in time, no connectClientReq
        in time): close it (one log line)."""
        s = self.sessions.get(sid)
        actions: list[Action] = []
        if s is not None and s.state is not SessionState.CLOSED:
            if s.client_slot is not None:  # what the client gets, should it still read
                actions.append(Send(sid, self._error_ind(s, ErrorSeverity.MAJOR, why)))
            self._close(s, why, actions)
        return actions

    def alive(self, sid: int) -> list[Action]:
        """``sid`` answered its ``CheckAlive``: the newcomers claiming its slot are refused."""
        s = self.sessions.get(sid)
        actions: list[Action] = []
        if s is None or s.state is SessionState.CLOSED:
            return actions
        s.checking = False
        for w in self._contesting(s):
            why = f"{s.client_slot} is in use by the live session {s.sid}"
            fields = {"peer": w.peer, "client_slot": str(s.client_slot), "cause": why}
            log.warning("%s connectClientReq refused: %s", w, why, extra=fields)
            actions.append(Send(w.sid, ConnectClientRes(self.identity, ResultCode.IDENTITY_IN_USE)))
            w.contested = w.claim = None
            w.state = SessionState.CLOSED  # it holds nothing yet
            actions.append(Close(w.sid, why))
        return actions

    def _contesting(self, s: Session) -> list[Session]:
        return [w for w in self.sessions.values() if w.contested == s.sid]

    def receive(self, sid: int, msg: Message) -> list[Action]:
        """A PDU from the client of session ``sid``."""
        s = self.sessions.get(sid)
        if s is None or s.state is SessionState.CLOSED:
            return []
        actions: list[Action] = []
        if type(msg) is TpduModemToCard:
            self._tpdu(s, msg, actions)
        elif type(msg) is ApduModemToCard:
            self._apdu(s, msg, actions)
        elif isinstance(msg, ConnectClientReq):
            self._connect_client(s, msg, actions)
        elif isinstance(msg, ClientSlotStatusInd):
            self._status(s, msg.slot_phys_status, actions)
        elif isinstance(msg, SetAtrRes):
            if msg.result is not ResultCode.OK:
                log.warning("%s client refused the ATR: %s", s, msg.result.name, extra=s.log_fields)
        elif isinstance(msg, ErrorInd):
            log.warning("%s client reports %s %s: %s", s, msg.severity.name, msg.code.name,
                        msg.error_string or "", extra=s.log_fields)  # fmt: skip
        else:
            self._protocol_error(s, f"unexpected {type(msg).__name__}", actions)
        return actions

    def _connect_client(self, s: Session, msg: ConnectClientReq, actions: list[Action]) -> None:
        client = msg.client_slot
        if s.state is not SessionState.CONN_WAIT_ID or s.contested is not None:
            self._refuse(s, "second connectClientReq", actions)
            return
        if client is None:
            self._refuse(s, "connectClientReq without slot", actions)
            return
        if not valid_client_slot(client):
            self._refuse(s, f"connectClientReq for {client} (ids are 0..{ID_MAX})", actions)
            return
        if s.tls and (s.identity is None or not s.identity.names("client", client.client_id)):
            self._refuse_impostor(s, client, actions)
            return
        holder = self._holder_of(client)
        if holder is not None:
            fields = {"peer": s.peer, "client_slot": str(client)}
            log.info("%s connectClientReq for %s, held by session %d: checking it is alive",
                     s, client, holder.sid, extra=fields)  # fmt: skip
            s.contested, s.claim = holder.sid, msg
            if not holder.checking:
                holder.checking = True
                actions.append(CheckAlive(holder.sid))
            return
        self._identified(s, msg, actions)

    def _holder_of(self, client: ClientSlot) -> Session | None:
        """The session identified as ``client``, if any."""
        for s in self.sessions.values():
            if s.client_slot == client and s.state is not SessionState.CLOSED:
                return s
        return None

    def _identified(self, s: Session, msg: ConnectClientReq, actions: list[Action]) -> None:
        client = msg.client_slot
        assert client is not None
        s.client_slot = client
        s.state = SessionState.CONN_CLIENT_WAIT_MAP
        s.apdu = self.apdu_mode and msg.features is not None and msg.features.apdu is True
        log.info("%s client connected: %s/%s %s, %s mode", s, msg.identity.name,
                 msg.identity.software, msg.identity.sw_version, "APDU" if s.apdu else "TPDU",
                 extra=s.log_fields)  # fmt: skip
        bank = self.maps.bank_of(client)
        if bank is None or bank in self._holders:
            why = "no map" if bank is None else f"{bank} is in use by another connection"
            log.info("%s %s: waiting", s, why, extra=s.log_fields)
            self._answer(s, ResultCode.CARD_NOT_PRESENT, actions)
            return
        self._hold(s, bank, actions)

    def _refuse(self, s: Session, why: str, actions: list[Action]) -> None:
        actions.append(Send(s.sid, ConnectClientRes(self.identity, ResultCode.ILLEGAL_CLIENT_ID)))
        self._close(s, why, actions)

    def _refuse_impostor(self, s: Session, client: ClientSlot, actions: list[Action]) -> None:
        """A TLS client claims a client slot its certificate does not name (a hijack?)."""
        cause = f"{certificate(s.identity)} claims {client}"
        fields = {"peer": s.peer, "client_slot": str(client), "cause": cause}
        bank = self.maps.bank_of(client)
        if bank is not None:
            fields["bank_slot"] = str(bank)
        log.warning("%s connectClientReq refused: %s", s, cause, extra=fields)
        actions.append(Send(s.sid, ConnectClientRes(self.identity, ResultCode.ILLEGAL_CLIENT_ID)))
        s.state = SessionState.CLOSED  # it holds nothing yet
        actions.append(Close(s.sid, cause))

    def _hold(self, s: Session, bank: BankSlot, actions: list[Action]) -> None:
        s.bank_slot = bank
        s.state = SessionState.CONN_CLIENT_MAPPED
        s.retry_at = None
        self._holders[bank] = s
        if not self._busy(bank):  # else: opened as soon as the release/identification is done
            actions.append(_open_card(s, bank))

    def _answer(self, s: Session, result: ResultCode, actions: list[Action]) -> None:
        if not s.answered:
            s.answered = True
            features = APDU_MODE if s.apdu else None  # None: the original's bytes
            actions.append(Send(s.sid, ConnectClientRes(self.identity, result, features)))

    def _tpdu(self, s: Session, msg: TpduModemToCard, actions: list[Action]) -> None:
        refusal = _refusal(s, "TPDU", msg.from_client_slot, msg.to_bank_slot)
        if refusal is None and not MIN_TPDU <= len(msg.data) <= MAX_TPDU:
            refusal = f"TPDU of {len(msg.data)} bytes"
        if refusal is not None:
            self._protocol_error(s, refusal, actions)
        else:
            actions.append(Transmit(s.sid, msg.to_bank_slot, msg))

    def _apdu(self, s: Session, msg: ApduModemToCard, actions: list[Action]) -> None:
        if not s.apdu:
            refusal: str | None = "apduModemToCard in a session in TPDU mode"
        else:
            refusal = _refusal(s, "APDU", msg.from_client_slot, msg.to_bank_slot)
        if refusal is None and not MIN_APDU <= len(msg.capdu) <= MAX_APDU:
            refusal = f"C-APDU of {len(msg.capdu)} bytes"
        if refusal is not None:
            self._protocol_error(s, refusal, actions)
        else:
            actions.append(TransmitApdu(s.sid, msg.to_bank_slot, msg))

    def _status(self, s: Session, st: SlotPhysStatus, actions: list[Action]) -> None:
        # Edges as the original (VCC falling: cold, RST rising: warm). Front-ends report
        # changes only, so an indication identical to the last one is a new request (the
        # shell client's RESET always sends the same one).
        repeated = st == s.last_status
        vcc_was, rst_was = s.vcc, s.rst
        s.last_status = st
        s.rst = st.reset_active
        if st.vcc_present is not None:
            s.vcc = st.vcc_present
        if s.state is not SessionState.CONN_CLIENT_MAPPED_CARD or s.bank_slot is None:
            return
        if st.vcc_present is False:
            if vcc_was or repeated:
                actions.append(ResetCard(s.sid, s.bank_slot, warm=False))
        elif st.reset_active and (not rst_was or repeated):
            actions.append(ResetCard(s.sid, s.bank_slot, warm=True))

    def _protocol_error(self, s: Session, why: str, actions: list[Action]) -> None:
        actions.append(Send(s.sid, self._error_ind(s, ErrorSeverity.FATAL, why)))
        self._close(s, why, actions)

    def _error_ind(self, s: Session, severity: ErrorSeverity, why: str) -> ErrorInd:
        return ErrorInd(
            ComponentType.REMSIM_BANKD,
            severity,
            ErrorCode.UNEXPECTED_DISCONNECT,
            bank_slot=s.bank_slot,
            client_slot=s.client_slot,
            error_string=why[:255],
        )

    def _close(
        self, s: Session, why: str, actions: list[Action], connection_gone: bool = False
    ) -> None:
        if why:
            log.info("%s closing: %s", s, why, extra=s.log_fields)
        s.state = SessionState.CLOSED
        s.retry_at = None
        s.contested = s.claim = None
        bank = s.bank_slot
        if bank is not None and self._holders.get(bank) is s:
            del self._holders[bank]
            if not self._busy(bank):  # else its card was never opened
                self._releasing.add(bank)
                actions.append(ReleaseCard(s.sid, bank))
        if not connection_gone:
            actions.append(Close(s.sid, why))
        for w in self._contesting(s):  # the slot's old session is gone: the newcomer has it
            claim, w.contested, w.claim = w.claim, None, None
            assert claim is not None
            self._identified(w, claim, actions)

    # --- card call results ------------------------------------------------------------------

    def card_released(self, slot: BankSlot) -> list[Action]:
        """``ReleaseCard`` is done: the bank slot is free for the next session."""
        self._releasing.discard(slot)
        actions: list[Action] = []
        holder = self._holders.get(slot)
        if holder is not None:  # a session took the slot while it was being released
            actions.append(_open_card(holder, slot))
        else:
            self._wake_waiters(slot, actions)
            self._want_identified([slot], actions)
        return actions

    def card_opened(self, sid: int, atr: bytes, protocol: int = T0) -> list[Action]:
        """``OpenCard`` or ``ResetCard`` succeeded: the card answered with ``atr`` and
        speaks ``protocol`` (0: T=0, 1: T=1), which an APDU-mode session's setAtrReq says."""
        s = self.sessions.get(sid)
        if s is None or s.state not in (
            SessionState.CONN_CLIENT_MAPPED,
            SessionState.CONN_CLIENT_MAPPED_CARD,
        ):
            return []
        assert s.client_slot is not None
        actions: list[Action] = []
        if s.state is SessionState.CONN_CLIENT_MAPPED:
            log.info("%s card open (T=%d), ATR %s", s, protocol, atr.hex(), extra=s.log_fields)
        s.state = SessionState.CONN_CLIENT_MAPPED_CARD
        s.retry_at = None
        self._answer(s, ResultCode.OK, actions)
        actions.append(Send(sid, SetAtrReq(s.client_slot, atr, protocol if s.apdu else None)))
        return actions

    def card_failed(self, sid: int, error: CardError, now: float) -> list[Action]:
        """A card call of session ``sid`` failed."""
        s = self.sessions.get(sid)
        if s is None or s.state is SessionState.CLOSED:
            return []
        actions: list[Action] = []
        if s.state is SessionState.CONN_CLIENT_MAPPED:
            # Opening failed: say so (once), keep the connection, try again later.
            log.info(
                "%s cannot open card: %s; retrying in %gs",
                s,
                error,
                self.card_retry,
                extra=s.log_fields,
            )
            self._answer(s, result_for(error), actions)
            s.retry_at = now + self.card_retry
        else:
            why = f"card lost on {s.bank_slot}: {error}"
            actions.append(Send(sid, self._error_ind(s, ErrorSeverity.MAJOR, why)))
            self._close(s, why, actions)
        return actions

    def tpdu_slots(self, sid: int) -> tuple[ClientSlot, BankSlot] | None:
        """The client slot and bank slot of session ``sid``'s TPDUs while its card is open
        (None: no TPDU of it would be relayed now)."""
        s = self.sessions.get(sid)
        if s is None or s.state is not SessionState.CONN_CLIENT_MAPPED_CARD:
            return None
        assert s.client_slot is not None and s.bank_slot is not None
        return s.client_slot, s.bank_slot

    def tpdus_flow(self, sid: int, client: ClientSlot, bank: BankSlot) -> bool:
        """Whether a TPDU of session ``sid`` from ``client`` to ``bank`` (the objects
        ``tpdu_slots`` gave) is relayed to the card now, and its answer sent: what
        ``receive`` and ``card_response`` decide for it, without the messages (the APDU
        path of the connection layer)."""
        s = self.sessions.get(sid)
        return (
            s is not None
            and s.state is SessionState.CONN_CLIENT_MAPPED_CARD
            and s.client_slot is client
            and s.bank_slot is bank
        )

    def card_response(self, sid: int, tpdu: TpduModemToCard, data: bytes) -> list[Action]:
        """``Transmit`` succeeded with the R-APDU ``data``."""
        s = self.sessions.get(sid)
        if s is None or s.state is not SessionState.CONN_CLIENT_MAPPED_CARD:
            return []
        return [
            Send(sid, TpduCardToModem(tpdu.to_bank_slot, tpdu.from_client_slot, data)),
        ]

    def apdu_response(
        self, sid: int, msg: ApduModemToCard, rapdu: bytes, error: str | None = None
    ) -> list[Action]:
        """``TransmitApdu`` succeeded with the R-APDU ``rapdu`` (or the bankd answered the
        C-APDU itself, ``error`` saying why). An R-APDU larger than ``MAX_APDU`` does not fit
        one frame: CARD_TRANSMISSION_ERROR instead, the session goes on."""
        s = self.sessions.get(sid)
        if s is None or s.state is not SessionState.CONN_CLIENT_MAPPED_CARD:
            return []
        result = ResultCode.OK
        if len(rapdu) > MAX_APDU:
            error = (
                f"R-APDU of {len(rapdu)} bytes from the card is larger than the {MAX_APDU} "
                "bytes one RSPRO frame carries"
            )
            log.warning("%s %s", s, error, extra=s.log_fields)
            result, rapdu = ResultCode.CARD_TRANSMISSION_ERROR, b""
        answer = ApduCardToModem(
            msg.to_bank_slot, msg.from_client_slot, result, rapdu, _error_string(error)
        )
        return [Send(sid, answer)]

    def apdu_failed(
        self, sid: int, msg: ApduModemToCard, error: CardError, now: float
    ) -> list[Action]:
        """``TransmitApdu`` failed: the client gets the card error as the APDU's result,
        then the session goes on as ``card_failed`` says (for a card lost: closed)."""
        s = self.sessions.get(sid)
        if s is None or s.state is not SessionState.CONN_CLIENT_MAPPED_CARD:
            return self.card_failed(sid, error, now)
        answer = ApduCardToModem(
            msg.to_bank_slot,
            msg.from_client_slot,
            result_for(error),
            b"",
            _error_string(str(error)),
        )
        return [Send(sid, answer), *self.card_failed(sid, error, now)]

    # --- time -------------------------------------------------------------------------------

    def next_deadline(self) -> float | None:
        deadlines = [s.retry_at for s in self.sessions.values() if s.retry_at is not None]
        deadlines += [deadline for _, deadline in self._after_reset.values()]
        deadlines += [self._poll_at] if self._poll_at is not None else []
        deadlines += [self._activity_at] if self._activity_at is not None else []
        return min(deadlines, default=None)

    def handle_timeout(self, now: float) -> list[Action]:
        actions: list[Action] = []
        self._settle_reset(now, actions)
        if self._poll_at is not None and self._poll_at <= now:
            self._poll_at = now + self.inventory_poll
            self._want_identified(self._slots(), actions)
        if self._activity_at is not None and self._activity_at <= now:
            self._activity_at = now + ACTIVITY_REPORT
            if self.tpdus.changed:
                actions.append(ReportCards(self.inventory_report()))
        for s in self.sessions.values():
            if s.retry_at is not None and s.retry_at <= now and s.bank_slot is not None:
                s.retry_at = None
                actions.append(_open_card(s, s.bank_slot))
        return actions

    # --- the card inventory -----------------------------------------------------------------

    def start_inventory(self, now: float) -> list[Action]:
        """The bankd started: identify every free card (nothing if the inventory is off)."""
        actions: list[Action] = []
        if self.inventory:
            self._poll_at = now + self.inventory_poll
            self._activity_at = now + ACTIVITY_REPORT
            self._want_identified(self._slots(), actions)
        return actions

    def card_identified(self, info: CardInfo) -> list[Action]:
        """``IdentifyCard`` is done: ``info`` is what the slot holds; the slot is free."""
        slot = BankSlot(self.bank_id, info.slot_nr)
        self._identifying.discard(slot)
        actions: list[Action] = []
        if self.cards.get(slot) != info:
            self.cards[slot] = info
            invlog.info("%s: %s", slot, describe(info), extra={"bank_slot": str(slot)})
            if info.iccid is not None:  # seen in another slot before: what is there now?
                moved = [s for s, c in self.cards.items() if s != slot and c.iccid == info.iccid]
                for old in moved:
                    del self.cards[old]
                self._want_identified(moved, actions)
            actions.insert(0, ReportCards(self.inventory_report()))
        holder = self._holders.get(slot)
        if holder is not None:  # a session took the slot while it was being identified
            actions.append(_open_card(holder, slot))
        else:
            self._wake_waiters(slot, actions)
        return actions

    def inventory_report(self) -> tuple[CardInfo, ...]:
        """What is known of the bank's slots, by slot number, with their card activity."""
        return self.tpdus.report(self.cards.values())

    def _slots(self) -> list[BankSlot]:
        return [BankSlot(self.bank_id, nr) for nr in range(self.num_slots)]

    def _busy(self, bank: BankSlot) -> bool:
        """The slot's card is being released or identified: no session may open it yet."""
        return bank in self._releasing or bank in self._identifying

    def _want_identified(self, slots: list[BankSlot], actions: list[Action]) -> None:
        """Identify ``slots`` as soon as each is free (now, for those free now)."""
        if not self.inventory:
            return
        self._identify_due.update(slot for slot in slots if slot not in self._identifying)
        for slot in sorted(self._identify_due):
            free = slot not in self._holders and not self._busy(slot)
            if free and self.maps.client_of(slot) is None:
                self._identify_due.discard(slot)
                self._identifying.add(slot)
                actions.append(IdentifyCard(slot))
