"""Typed RSPRO messages: one frozen dataclass per ASN.1 type, field names in snake_case.

The ASN.1 names are derived mechanically (``sw_version`` <-> ``swVersion``); each message
class knows its CHOICE alternative name (``ASN_NAME``) and context tag number (``TAG``).
"""

from __future__ import annotations

import enum
import ipaddress
from dataclasses import dataclass, field
from typing import ClassVar, Self, TypeAlias

RSPRO_VERSION = 2
MIN_TPDU, MAX_TPDU = 5, 260
"""Sizes of a T=0 command TPDU: a 5-byte header and up to 255 data bytes (the current
version of the original drops anything else on both ends)."""
MIN_APDU, MAX_APDU = 4, 65_485
"""Sizes of a command or response APDU in remsim's APDU mode: a bare header (case 1) up to
what one IPA frame carries (65,535 bytes) around an apduModemToCard / apduCardToModem with
the largest ids and operation tag. An extended command APDU may be up to 65,544 bytes
(ISO 7816-4) and a response 65,538: those that do not fit are refused."""
CONNECT_CLIENT_RES_TAG = 2342
"""The operation tag the deployed server and bankd put on every ConnectClientRes."""


def camel(name: str) -> str:
    """The ASN.1 identifier of a Python name: ``sw_version`` -> ``swVersion``."""
    head, *rest = name.lower().split("_")
    return head + "".join(part.capitalize() for part in rest)


class _AsnEnum(enum.IntEnum):
    """An ENUMERATED type; names are the ASN.1 identifiers in UPPER_SNAKE case."""

    @property
    def asn_name(self) -> str:
        return camel(self.name)

    @classmethod
    def from_asn_name(cls, name: str) -> _AsnEnum:
        for member in cls:
            if member.asn_name == name:
                return member
        raise ValueError(f"{name!r} is not a {cls.__name__}")


class _ExtensibleAsnEnum(_AsnEnum):
    """An extensible ENUMERATED: values from newer peers decode as pseudo-members.

    asn1tools does not tell which unknown value was received; those decode as ``UNKNOWN``
    (-1), which is never equal to a defined value.
    """

    @classmethod
    def unknown(cls) -> Self:
        return cls(-1)

    @classmethod
    def _missing_(cls, value: object) -> _ExtensibleAsnEnum | None:
        if not isinstance(value, int):
            return None
        pseudo = int.__new__(cls, value)
        pseudo._name_ = "UNKNOWN" if value == -1 else f"UNKNOWN_{value}"
        pseudo._value_ = value
        return pseudo


class ComponentType(_AsnEnum):
    REMSIM_CLIENT = 0
    REMSIM_SERVER = 1
    REMSIM_BANKD = 2


class ResultCode(_ExtensibleAsnEnum):
    OK = 0
    ILLEGAL_CLIENT_ID = 1
    ILLEGAL_BANK_ID = 2
    ILLEGAL_SLOT_ID = 3
    UNSUPPORTED_PROTOCOL_VERSION = 4
    UNKNOWN_SLOTMAP = 5
    IDENTITY_IN_USE = 6
    CARD_NOT_PRESENT = 100
    CARD_UNRESPONSIVE = 101
    CARD_TRANSMISSION_ERROR = 102


class CardState(_ExtensibleAsnEnum):
    """remsim's own (card inventory): what a bankd found in a slot."""

    PRESENT = 0
    EMPTY = 1
    UNRESPONSIVE = 2


class ErrorCode(_ExtensibleAsnEnum):
    UNKNOWN_CLIENT_CONNECTED = 1
    UNEXPECTED_DISCONNECT = 2
    UNEXPECTED_PROTOCOL_VERSION = 3


class ErrorSeverity(_ExtensibleAsnEnum):
    MINOR = 1
    MAJOR = 2
    FATAL = 3


# --- shared structures -------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class ComponentIdentity:
    type: ComponentType
    name: str
    software: str
    sw_version: str
    hw_manufacturer: str | None = None
    hw_model: str | None = None
    hw_serial_nr: str | None = None
    hw_version: str | None = None
    fw_version: str | None = None


@dataclass(frozen=True, slots=True, order=True)
class ClientSlot:
    client_id: int
    slot_nr: int

    def __str__(self) -> str:
        return f"C{self.client_id}:{self.slot_nr}"


@dataclass(frozen=True, slots=True, order=True)
class BankSlot:
    bank_id: int
    slot_nr: int

    def __str__(self) -> str:
        return f"B{self.bank_id}:{self.slot_nr}"


IpAddress: TypeAlias = ipaddress.IPv4Address | ipaddress.IPv6Address


@dataclass(frozen=True, slots=True)
class IpPort:
    ip: IpAddress
    port: int

    def __str__(self) -> str:
        if isinstance(self.ip, ipaddress.IPv6Address):
            return f"[{self.ip}]:{self.port}"
        return f"{self.ip}:{self.port}"


NO_BANKD = IpPort(ipaddress.IPv4Address(0), 0)
"""What the server sends a client that must disconnect from its bankd (0.0.0.0:0)."""


@dataclass(frozen=True, slots=True)
class TpduFlags:
    tpdu_header_present: bool = False
    final_part: bool = False
    proc_byte_continue_tx: bool = False
    proc_byte_continue_rx: bool = False


NO_FLAGS = TpduFlags()


@dataclass(frozen=True, slots=True)
class SlotPhysStatus:
    """Electrical state of a slot; ``None`` means "unknown" and is not sent."""

    reset_active: bool
    vcc_present: bool | None = None
    clk_active: bool | None = None
    card_present: bool | None = None


# --- messages ----------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Message:
    """Base of the 21 messages of the RsproPDUchoice (and of remsim's own additions)."""

    ASN_NAME: ClassVar[str]
    TAG: ClassVar[int]


@dataclass(frozen=True, slots=True)
class ConnectBankReq(Message):
    ASN_NAME = "connectBankReq"
    TAG = 0
    identity: ComponentIdentity
    bank_id: int
    number_of_slots: int


@dataclass(frozen=True, slots=True)
class ConnectBankRes(Message):
    ASN_NAME = "connectBankRes"
    TAG = 1
    identity: ComponentIdentity
    result: ResultCode


@dataclass(frozen=True, slots=True)
class RemsimFeatures:
    """remsim's own: what a client of ours offers a bankd of ours, and what it accepts
    (``apdu``: the APDU mode). Never sent to, or by, an original peer."""

    apdu: bool | None = None


@dataclass(frozen=True, slots=True)
class ConnectClientReq(Message):
    ASN_NAME = "connectClientReq"
    TAG = 2
    identity: ComponentIdentity
    client_slot: ClientSlot | None = None
    features: RemsimFeatures | None = None  # remsim's extension addition


@dataclass(frozen=True, slots=True)
class ConnectClientRes(Message):
    ASN_NAME = "connectClientRes"
    TAG = 3
    identity: ComponentIdentity
    result: ResultCode
    features: RemsimFeatures | None = None  # remsim's extension addition


@dataclass(frozen=True, slots=True)
class CreateMappingReq(Message):
    ASN_NAME = "createMappingReq"
    TAG = 4
    client: ClientSlot
    bank: BankSlot


@dataclass(frozen=True, slots=True)
class CreateMappingRes(Message):
    ASN_NAME = "createMappingRes"
    TAG = 5
    result: ResultCode


@dataclass(frozen=True, slots=True)
class RemoveMappingReq(Message):
    ASN_NAME = "removeMappingReq"
    TAG = 6
    client: ClientSlot
    bank: BankSlot


@dataclass(frozen=True, slots=True)
class RemoveMappingRes(Message):
    ASN_NAME = "removeMappingRes"
    TAG = 7
    result: ResultCode


@dataclass(frozen=True, slots=True)
class ConfigClientIdReq(Message):
    ASN_NAME = "configClientIdReq"
    TAG = 8
    client_slot: ClientSlot


@dataclass(frozen=True, slots=True)
class ConfigClientIdRes(Message):
    ASN_NAME = "configClientIdRes"
    TAG = 9
    result: ResultCode


@dataclass(frozen=True, slots=True)
class SetAtrReq(Message):
    ASN_NAME = "setAtrReq"
    TAG = 10
    slot: ClientSlot
    atr: bytes
    protocol: int | None = None  # remsim's extension addition, APDU mode: 0 T=0, 1 T=1


@dataclass(frozen=True, slots=True)
class SetAtrRes(Message):
    ASN_NAME = "setAtrRes"
    TAG = 11
    result: ResultCode


@dataclass(frozen=True, slots=True)
class TpduModemToCard(Message):
    ASN_NAME = "tpduModemToCard"
    TAG = 12
    from_client_slot: ClientSlot
    to_bank_slot: BankSlot
    data: bytes
    flags: TpduFlags = NO_FLAGS


@dataclass(frozen=True, slots=True)
class TpduCardToModem(Message):
    ASN_NAME = "tpduCardToModem"
    TAG = 13
    from_bank_slot: BankSlot
    to_client_slot: ClientSlot
    data: bytes
    flags: TpduFlags = NO_FLAGS


@dataclass(frozen=True, slots=True)
class ClientSlotStatusInd(Message):
    ASN_NAME = "clientSlotStatusInd"
    TAG = 14
    from_client_slot: ClientSlot
    to_bank_slot: BankSlot
    slot_phys_status: SlotPhysStatus


@dataclass(frozen=True, slots=True)
class BankSlotStatusInd(Message):
    ASN_NAME = "bankSlotStatusInd"
    TAG = 15
    from_bank_slot: BankSlot
    to_client_slot: ClientSlot
    slot_phys_status: SlotPhysStatus


@dataclass(frozen=True, slots=True)
class ErrorInd(Message):
    ASN_NAME = "errorInd"
    TAG = 16
    sender: ComponentType
    severity: ErrorSeverity
    code: ErrorCode
    bank_slot: BankSlot | None = None
    client_slot: ClientSlot | None = None
    error_string: str | None = None


@dataclass(frozen=True, slots=True)
class ConfigClientBankReq(Message):
    ASN_NAME = "configClientBankReq"
    TAG = 17
    bank_slot: BankSlot
    bankd: IpPort


@dataclass(frozen=True, slots=True)
class ConfigClientBankRes(Message):
    ASN_NAME = "configClientBankRes"
    TAG = 18
    result: ResultCode


@dataclass(frozen=True, slots=True)
class ResetStateReq(Message):
    ASN_NAME = "resetStateReq"
    TAG = 19


@dataclass(frozen=True, slots=True)
class ResetStateRes(Message):
    ASN_NAME = "resetStateRes"
    TAG = 20
    result: ResultCode


# --- remsim's own messages (extension additions of the CHOICE) --------------------------------
# Sent only to a peer whose ComponentIdentity names remsim's software; a deployed peer never
# receives one (docs/architecture.md, "Card inventory").


@dataclass(frozen=True, slots=True)
class CardInfo:
    """One bank slot in a card inventory; ``atr``, ``iccid``, ``imsi`` only where known.
    ``tpdu_count``, ``idle_ms``: the slot's card activity (extension additions), set once
    the card answered a TPDU: how many since the bankd started, and milliseconds since the
    last one when the report was sent."""

    slot_nr: int
    state: CardState
    atr: bytes | None = None
    iccid: str | None = None
    imsi: str | None = None
    tpdu_count: int | None = None
    idle_ms: int | None = None


@dataclass(frozen=True, slots=True)
class CardInventoryInd(Message):
    """bankd -> server: what is in the bank's slots (every slot the bankd identified)."""

    ASN_NAME = "cardInventoryInd"
    TAG = 64
    bank_id: int
    cards: tuple[CardInfo, ...] = ()


@dataclass(frozen=True, slots=True)
class ApduModemToCard(Message):
    """client -> bankd, APDU mode: one whole command APDU (short or extended)."""

    ASN_NAME = "apduModemToCard"
    TAG = 65
    from_client_slot: ClientSlot
    to_bank_slot: BankSlot
    capdu: bytes


@dataclass(frozen=True, slots=True)
class ApduCardToModem(Message):
    """bankd -> client, APDU mode: the answer to one ApduModemToCard. ``result`` OK:
    ``rapdu`` is the response APDU (data, SW1 SW2); otherwise it is empty and ``error`` may
    say why."""

    ASN_NAME = "apduCardToModem"
    TAG = 66
    from_bank_slot: BankSlot
    to_client_slot: ClientSlot
    result: ResultCode
    rapdu: bytes = b""
    error: str | None = None


MESSAGE_TYPES: tuple[type[Message], ...] = (
    ConnectBankReq,
    ConnectBankRes,
    ConnectClientReq,
    ConnectClientRes,
    CreateMappingReq,
    CreateMappingRes,
    RemoveMappingReq,
    RemoveMappingRes,
    ConfigClientIdReq,
    ConfigClientIdRes,
    SetAtrReq,
    SetAtrRes,
    TpduModemToCard,
    TpduCardToModem,
    ClientSlotStatusInd,
    BankSlotStatusInd,
    ErrorInd,
    ConfigClientBankReq,
    ConfigClientBankRes,
    ResetStateReq,
    ResetStateRes,
)
"""The deployed protocol's messages."""
REMSIM_MESSAGE_TYPES: tuple[type[Message], ...] = (
    CardInventoryInd,
    ApduModemToCard,
    ApduCardToModem,
)
"""remsim's own additions."""
MESSAGE_BY_ASN_NAME: dict[str, type[Message]] = {
    m.ASN_NAME: m for m in MESSAGE_TYPES + REMSIM_MESSAGE_TYPES
}


def _default_tag(msg: Message) -> int:
    return CONNECT_CLIENT_RES_TAG if isinstance(msg, ConnectClientRes) else 0


@dataclass(frozen=True, slots=True)
class RsproPdu:
    """One RSPRO PDU: the message plus the envelope's version and operation tag.

    The tag defaults to what the deployed components send (0, or 2342 on ConnectClientRes).
    """

    msg: Message
    version: int = RSPRO_VERSION
    tag: int = field(default=-1)

    def __post_init__(self) -> None:
        if self.tag == -1:
            object.__setattr__(self, "tag", _default_tag(self.msg))
