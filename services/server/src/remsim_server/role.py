"""The server's side of one control connection, sans-IO (the original's ``SERVER_CONN``).

Fed received PDUs and the time, it returns what happened (``BankHello``,
``MappingCreated``, ``Close``, ...); asked to accept, reject, create or remove a mapping or
configure a client, it returns the message to send and remembers what it is waiting for.
Responses carry no usable tag (deployed bankds answer with tag 0), so they are matched to
requests by order, per kind: the bankd handles its requests in order, and a
``createMappingRes`` always answers the oldest outstanding ``createMappingReq``. A map
request unanswered ``map_request_timeout`` seconds after it was sent is reported
(``RequestTimedOut``) and stays in the queue as timed out: a late answer is matched to it
and dropped, so the answers that follow still find their requests.

On a TLS connection the peer's certificate is what it is: a ``connectBankReq`` is accepted
only if the certificate names that bankd (``urn:remsim:bankd:<bankId>``), a
``connectClientReq`` only if it names that client (``urn:remsim:client:<clientId>``);
otherwise the answer is ``illegalBankId`` / ``illegalClientId``. A plaintext connection is
taken at its word, as by the original.

A bankd of remsim's may send its card inventory (``cardInventoryInd``, remsim's own message:
docs/architecture.md, "Card inventory") at any time once connected; the original's bankd
never does. It is taken for the connection's own bank and slots only.
"""

from __future__ import annotations

import enum
from collections import deque
from dataclasses import dataclass
from typing import Literal

import rspro
from remsim_common import PeerIdentity
from remsim_control import BankSlot, ClientConfig, ClientSlot, ComponentIdentity, valid_id
from remsim_server import convert

IDENTIFY_TIMEOUT = 10.0
"""Seconds a new connection has to send its connect request."""
REJECT_DELAY = 1.0
"""Seconds a refused connection stays open, so the peer reads the refusal (as the original)."""
MAP_REQUEST_TIMEOUT = 10.0
"""Seconds a bankd has to answer a createMappingReq or removeMappingReq."""


_CARD_STATES = frozenset(rspro.CardState)


class Role(enum.StrEnum):
    """The original's ``SERVER_CONN`` states (shown as ``state`` in REST)."""

    ESTABLISHED = "ESTABLISHED"
    CONNECTED_BANKD = "CONNECTED_BANKD"
    CONNECTED_CLIENT = "CONNECTED_CLIENT"
    REJECTED = "REJECTED"
    CLOSED = "CLOSED"


@dataclass(frozen=True, slots=True)
class BankHello:
    """A bankd asks to connect; answer with ``accept()`` or ``reject()``."""

    identity: ComponentIdentity
    bank_id: int
    number_of_slots: int


@dataclass(frozen=True, slots=True)
class ClientHello:
    """A client asks to connect; answer with ``accept()`` or ``reject()``."""

    identity: ComponentIdentity
    client: ClientSlot


@dataclass(frozen=True, slots=True)
class MappingCreated:
    """The bankd answered the createMappingReq for slotmap ``serial``."""

    serial: int
    result: rspro.ResultCode


@dataclass(frozen=True, slots=True)
class MappingRemoved:
    """The bankd answered the removeMappingReq for slotmap ``serial``."""

    serial: int
    result: rspro.ResultCode


RequestName = Literal["createMappingReq", "removeMappingReq"]


@dataclass(frozen=True, slots=True)
class StateReset:
    """The bankd answered a resetStateReq: it holds no map now."""

    result: rspro.ResultCode


@dataclass(frozen=True, slots=True)
class RequestTimedOut:
    """The bankd did not answer the ``request`` for slotmap ``serial`` in time."""

    serial: int
    request: RequestName


@dataclass(frozen=True, slots=True)
class CardsReported:
    """The bankd reported what is in its slots (every slot it identified)."""

    cards: tuple[rspro.CardInfo, ...]


@dataclass(frozen=True, slots=True)
class ConfigAcknowledged:
    """The client answered a configClientBankReq."""

    config: ClientConfig
    result: rspro.ResultCode


@dataclass(frozen=True, slots=True)
class Close:
    """Close the connection now, without a reply."""

    reason: str


@dataclass(frozen=True, slots=True)
class Refused:
    """The connect request cannot be accepted: answer ``reject(now, result)``."""

    result: rspro.ResultCode
    reason: str


@dataclass(frozen=True, slots=True)
class Ignored:
    """Nothing to do; worth a log line."""

    reason: str


Event = (
    BankHello
    | ClientHello
    | MappingCreated
    | MappingRemoved
    | StateReset
    | RequestTimedOut
    | CardsReported
    | ConfigAcknowledged
    | Close
    | Refused
    | Ignored
)


@dataclass(slots=True)
class _Request:
    """A map request sent to the bankd and not answered yet."""

    serial: int
    deadline: float
    timed_out: bool = False


class ServerConnection:
    def __init__(
        self,
        server_identity: rspro.ComponentIdentity,
        now: float,
        *,
        tls_subject: str | None = None,
        certificate: PeerIdentity | None = None,
        identify_timeout: float = IDENTIFY_TIMEOUT,
        reject_delay: float = REJECT_DELAY,
        map_request_timeout: float = MAP_REQUEST_TIMEOUT,
    ) -> None:
        self.server_identity = server_identity
        self.tls_subject = tls_subject
        """The subject of the peer's TLS certificate; ``None``: a plaintext connection."""
        self.certificate = certificate
        """The remsim identity in that certificate (``None``: none, or plaintext)."""
        self.identify_timeout = identify_timeout
        self.reject_delay = reject_delay
        self.map_request_timeout = map_request_timeout
        self.role = Role.ESTABLISHED
        self.hello: BankHello | ClientHello | None = None
        self.request: rspro.ConnectBankReq | rspro.ConnectClientReq | None = None
        """The connect request received (answered or not), if any."""
        self.sent: ClientConfig | None = None
        """What this client was last told (``None``: nothing, i.e. unconfigured)."""
        self._creates: deque[_Request] = deque()
        self._removes: deque[_Request] = deque()
        self._resets = 0
        """resetStateReqs sent and not answered yet."""
        self._configs: deque[ClientConfig] = deque()
        self._deadline: float | None = now + identify_timeout

    @property
    def peer(self) -> str:
        """``B<bank>`` or ``C<client>:<slot>`` once the peer said who it is."""
        if isinstance(self.hello, BankHello):
            return f"B{self.hello.bank_id}"
        if isinstance(self.hello, ClientHello):
            return str(self.hello.client)
        return "unidentified"

    def awaiting_create(self, serial: int) -> bool:
        """A createMappingReq for slotmap ``serial`` is sent and not answered yet."""
        return _awaiting(self._creates, serial)

    def awaiting_remove(self, serial: int) -> bool:
        """A removeMappingReq for slotmap ``serial`` is sent and not answered yet."""
        return _awaiting(self._removes, serial)

    # --- input ----------------------------------------------------------------------------

    def receive(self, pdu: rspro.RsproPdu) -> Event:
        msg = pdu.msg
        if self.role is Role.ESTABLISHED and self.hello is None:
            return self._identify(msg)
        if self.role is Role.CONNECTED_BANKD:
            if isinstance(msg, rspro.CreateMappingRes):
                if not self._creates:
                    return Ignored("createMappingRes without an outstanding createMappingReq")
                if (request := self._creates.popleft()).timed_out:
                    return Ignored("createMappingRes after its request timed out")
                return MappingCreated(request.serial, msg.result)
            if isinstance(msg, rspro.RemoveMappingRes):
                if not self._removes:
                    return Ignored("removeMappingRes without an outstanding removeMappingReq")
                if (request := self._removes.popleft()).timed_out:
                    return Ignored("removeMappingRes after its request timed out")
                return MappingRemoved(request.serial, msg.result)
            if isinstance(msg, rspro.ResetStateRes):
                if not self._resets:
                    return Ignored("resetStateRes without an outstanding resetStateReq")
                self._resets -= 1
                return StateReset(msg.result)
            if isinstance(msg, rspro.CardInventoryInd):
                return self._cards_reported(msg)
        if self.role is Role.CONNECTED_CLIENT and isinstance(msg, rspro.ConfigClientBankRes):
            if not self._configs:
                return Ignored("configClientBankRes without an outstanding request")
            return ConfigAcknowledged(self._configs.popleft(), msg.result)
        return Ignored(f"{msg.ASN_NAME} is not expected in state {self.role}")

    def _cards_reported(self, msg: rspro.CardInventoryInd) -> Event:
        assert isinstance(self.hello, BankHello)
        if msg.bank_id != self.hello.bank_id:
            return Ignored("cardInventoryInd for another bank")
        slots = [card.slot_nr for card in msg.cards]
        if len(set(slots)) != len(slots) or any(
            not 0 <= nr < self.hello.number_of_slots for nr in slots
        ):
            return Ignored("cardInventoryInd naming a slot twice or one the bank does not have")
        if any(card.state not in _CARD_STATES for card in msg.cards):
            return Ignored("cardInventoryInd with an unknown card state")
        return CardsReported(msg.cards)

    def _identify(self, msg: rspro.Message) -> Event:
        if isinstance(msg, rspro.ConnectBankReq):
            self.request = msg
            if msg.identity.type is not rspro.ComponentType.REMSIM_BANKD:
                return self._close(f"connectBankReq from a {msg.identity.type.asn_name}")
            if not valid_id(msg.bank_id):
                return Refused(rspro.ResultCode.ILLEGAL_BANK_ID, f"bank id {msg.bank_id}")
            if (mismatch := self._uncertified("bankd", msg.bank_id)) is not None:
                return Refused(rspro.ResultCode.ILLEGAL_BANK_ID, mismatch)
            self.hello = BankHello(convert.identity(msg.identity), msg.bank_id, msg.number_of_slots)
            return self.hello
        if isinstance(msg, rspro.ConnectClientReq):
            self.request = msg
            if msg.identity.type is not rspro.ComponentType.REMSIM_CLIENT:
                return self._close(f"connectClientReq from a {msg.identity.type.asn_name}")
            if msg.client_slot is None:
                return self._close("connectClientReq without clientSlot (dynamic ids unsupported)")
            slot = msg.client_slot
            if not (valid_id(slot.client_id) and valid_id(slot.slot_nr)):
                return Refused(
                    rspro.ResultCode.ILLEGAL_CLIENT_ID,
                    f"client slot {slot}",
                )
            if (mismatch := self._uncertified("client", slot.client_id)) is not None:
                return Refused(rspro.ResultCode.ILLEGAL_CLIENT_ID, mismatch)
            self.hello = ClientHello(
                convert.identity(msg.identity), convert.client_slot(msg.client_slot)
            )
            return self.hello
        return Ignored(f"{msg.ASN_NAME} before the connect request")

    def _uncertified(self, role: Literal["bankd", "client"], id_: int) -> str | None:
        """Why the peer is not ``role`` ``id_`` by its certificate; ``None``: it is, or
        the connection is plaintext."""
        if self.tls_subject is None:
            return None
        if self.certificate is not None and self.certificate.names(role, id_):
            return None
        subject = self.tls_subject or "(no subject)"
        named = self.certificate or "no remsim identity"
        return f"certificate {subject} names {named}, not the claimed {role} {id_}"

    # --- decisions ------------------------------------------------------------------------

    def accept(self) -> rspro.ConnectBankRes | rspro.ConnectClientRes:
        return self._answer(rspro.ResultCode.OK)

    def reject(
        self, now: float, result: rspro.ResultCode = rspro.ResultCode.IDENTITY_IN_USE
    ) -> rspro.ConnectBankRes | rspro.ConnectClientRes:
        """Refuse the peer; ``handle_timeout`` closes the connection ``reject_delay`` later."""
        answer = self._answer(result)
        self._deadline = now + self.reject_delay
        return answer

    def _answer(self, result: rspro.ResultCode) -> rspro.ConnectBankRes | rspro.ConnectClientRes:
        if self.role is not Role.ESTABLISHED or self.request is None:
            raise RuntimeError(f"no connect request to answer in state {self.role}")
        bank = isinstance(self.request, rspro.ConnectBankReq)
        self._deadline = None
        if result is not rspro.ResultCode.OK:
            self.role = Role.REJECTED
        elif bank:
            self.role = Role.CONNECTED_BANKD
        else:
            self.role = Role.CONNECTED_CLIENT
        if bank:
            return rspro.ConnectBankRes(self.server_identity, result)
        return rspro.ConnectClientRes(self.server_identity, result)

    def reset_state(self) -> rspro.ResetStateReq:
        """Tell the bankd to drop every map it holds (before it is sent the ones it must
        hold)."""
        self._require(Role.CONNECTED_BANKD)
        self._resets += 1
        return rspro.ResetStateReq()

    def create_mapping(
        self, serial: int, bank: BankSlot, client: ClientSlot, now: float
    ) -> rspro.CreateMappingReq:
        self._require(Role.CONNECTED_BANKD)
        self._creates.append(_Request(serial, now + self.map_request_timeout))
        return rspro.CreateMappingReq(
            convert.wire_client_slot(client), convert.wire_bank_slot(bank)
        )

    def remove_mapping(
        self, serial: int, bank: BankSlot, client: ClientSlot, now: float
    ) -> rspro.RemoveMappingReq:
        self._require(Role.CONNECTED_BANKD)
        self._removes.append(_Request(serial, now + self.map_request_timeout))
        return rspro.RemoveMappingReq(
            convert.wire_client_slot(client), convert.wire_bank_slot(bank)
        )

    def configure(self, config: ClientConfig) -> rspro.ConfigClientBankReq:
        self._require(Role.CONNECTED_CLIENT)
        self._configs.append(config)
        self.sent = config
        return convert.config_req(config)

    def _require(self, role: Role) -> None:
        if self.role is not role:
            raise RuntimeError(f"only possible in state {role}, not {self.role}")

    # --- time -----------------------------------------------------------------------------

    def next_deadline(self) -> float | None:
        deadlines = [
            request.deadline
            for requests in (self._creates, self._removes)
            if (request := _first_waiting(requests)) is not None
        ]
        if self._deadline is not None:
            deadlines.append(self._deadline)
        return min(deadlines, default=None)

    def handle_timeout(self, now: float) -> list[Close | RequestTimedOut]:
        """What is due at ``now``: a ``Close`` (alone), or the map requests that timed out."""
        if self._deadline is not None and now >= self._deadline:
            if self.role is Role.REJECTED:
                return [self._close("refused")]
            return [self._close(f"no connect request within {self.identify_timeout:g} s")]
        due: list[Close | RequestTimedOut] = []
        queues: tuple[tuple[deque[_Request], RequestName], ...] = (
            (self._creates, "createMappingReq"),
            (self._removes, "removeMappingReq"),
        )
        for requests, name in queues:
            for request in requests:
                if request.deadline > now:
                    break
                if not request.timed_out:
                    request.timed_out = True
                    due.append(RequestTimedOut(request.serial, name))
        return due

    def _close(self, reason: str) -> Close:
        self.role = Role.CLOSED
        self._deadline = None
        return Close(reason)


def _awaiting(requests: deque[_Request], serial: int) -> bool:
    return any(r.serial == serial and not r.timed_out for r in requests)


def _first_waiting(requests: deque[_Request]) -> _Request | None:
    """The oldest request of ``requests`` still waiting for its answer (the next due)."""
    return next((request for request in requests if not request.timed_out), None)
