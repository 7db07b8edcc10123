"""The control plane's vocabulary: slots, identities, slotmaps and the registry records.

All models are frozen pydantic models: a store hands out values, never its own mutable
state, and every model serialises to JSON for the distributed store and bus.
"""

from __future__ import annotations

import enum
from collections.abc import Collection

from pydantic import BaseModel, ConfigDict, Field

SLOT_MAX = 1023
"""Bank ids, client ids and slot numbers are 0..1023 (RSPRO constraints)."""


def valid_id(n: int) -> bool:
    """``n`` is a possible bank id, client id or slot number."""
    return 0 <= n <= SLOT_MAX


NO_BANKD_HOST = "0.0.0.0"
NO_BANKD_PORT = 0


class _Frozen(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class BankSlot(_Frozen):
    bank_id: int = Field(ge=0, le=SLOT_MAX)
    slot_nr: int = Field(ge=0, le=SLOT_MAX)

    def __str__(self) -> str:
        return f"B{self.bank_id}:{self.slot_nr}"


class ClientSlot(_Frozen):
    client_id: int = Field(ge=0, le=SLOT_MAX)
    slot_nr: int = Field(ge=0, le=SLOT_MAX)

    def __str__(self) -> str:
        return f"C{self.client_id}:{self.slot_nr}"


class ComponentType(enum.StrEnum):
    """RSPRO component types, by their ASN.1 names (as shown in REST ``type_``)."""

    CLIENT = "remsimClient"
    SERVER = "remsimServer"
    BANKD = "remsimBankd"


class ComponentIdentity(_Frozen):
    """A peer's identity as sent in its connect request."""

    type: ComponentType
    name: str
    software: str
    sw_version: str
    hw_manufacturer: str | None = None
    hw_model: str | None = None
    hw_serial_nr: str | None = None
    hw_version: str | None = None
    fw_version: str | None = None


class SlotmapState(enum.StrEnum):
    """The original's slotmap states, with their exact names."""

    NEW = "NEW"
    """Not (or no longer) at the bankd: waiting for its bankd to connect, or refused."""
    UNACKNOWLEDGED = "UNACKNOWLEDGED"
    """createMappingReq sent, response outstanding."""
    ACTIVE = "ACTIVE"
    """The bankd accepted the map; the client is sent the bankd's address."""
    DELETE_REQ = "DELETE_REQ"
    """Removal requested; removeMappingReq not sent yet."""
    DELETING = "DELETING"
    """removeMappingReq sent, response outstanding."""

    @property
    def visible(self) -> bool:
        """Maps being deleted are hidden from REST and block no new map (as the original)."""
        return self in (SlotmapState.NEW, SlotmapState.UNACKNOWLEDGED, SlotmapState.ACTIVE)


class Slotmap(_Frozen):
    """A bank slot <-> client slot mapping."""

    serial: int
    """Store-assigned, unique for the map's whole life, increasing in creation order."""
    bank: BankSlot
    client: ClientSlot
    state: SlotmapState = SlotmapState.NEW
    result: str | None = None
    """The bankd's refusal (RSPRO ResultCode name) of the last createMappingReq, if any."""
    iccid: str | None = None
    """The card the map was made for (``POST /api/v1/slotmaps`` by card): when the card
    inventory finds that card in another bank slot, the map moves there (the server removes
    this map and makes one for the same client at the card's new slot, with this ICCID)."""

    @property
    def id(self) -> int:
        """The original's slotmap id (``bankId << 16 | slotNr``), unique among visible maps."""
        return slotmap_id(self.bank)

    def __str__(self) -> str:
        return f"Slot Map {self.bank} <-> {self.client}"


def slotmap_id(bank: BankSlot) -> int:
    return bank.bank_id << 16 | bank.slot_nr


def slotmap_bank(slotmap_id: int) -> BankSlot | None:
    """The bank slot whose maps have id ``slotmap_id`` (the inverse of ``slotmap_id``);
    ``None`` if the id names no bank slot."""
    bank_id, slot_nr = slotmap_id >> 16, slotmap_id & 0xFFFF
    if not (valid_id(bank_id) and valid_id(slot_nr)):
        return None
    return BankSlot(bank_id=bank_id, slot_nr=slot_nr)


class BankdAddress(_Frozen):
    """Where clients reach a bankd: an IP literal (v4 or v6) and a TCP port."""

    host: str
    port: int = Field(ge=0, le=65535)

    def __str__(self) -> str:
        return f"[{self.host}]:{self.port}" if ":" in self.host else f"{self.host}:{self.port}"


class ClientConfig(_Frozen):
    """What a client is told in configClientBankReq."""

    bank: BankSlot
    bankd: BankdAddress

    @property
    def unmapped(self) -> bool:
        return self.bankd.port == NO_BANKD_PORT

    @classmethod
    def unmap(cls, bank: BankSlot) -> ClientConfig:
        """The "no bankd, disconnect" configuration (0.0.0.0:0), with the old bank slot."""
        return cls(bank=bank, bankd=BankdAddress(host=NO_BANKD_HOST, port=NO_BANKD_PORT))


class BankRecord(_Frozen):
    """A connected, identified bankd (registry entry)."""

    bank_id: int = Field(ge=0, le=SLOT_MAX)
    number_of_slots: int = Field(ge=0)
    identity: ComponentIdentity
    bankd: BankdAddress
    """The address given to clients for this bankd."""
    remote: str
    """The control connection's remote address, ``host:port``."""
    core_id: str
    """The core (server process) holding the control connection."""
    state: str = "CONNECTED_BANKD"

    @property
    def peer(self) -> str:
        return f"B{self.bank_id}"


class ClientRecord(_Frozen):
    """A connected, identified client (registry entry)."""

    client: ClientSlot
    identity: ComponentIdentity
    remote: str
    core_id: str
    state: str = "CONNECTED_CLIENT"

    @property
    def peer(self) -> str:
        return str(self.client)


class CardState(enum.StrEnum):
    """What the bankd found in a bank slot when it last looked (card inventory)."""

    PRESENT = "present"
    """A card answered; its ATR (and ICCID, IMSI where readable) are known."""
    EMPTY = "empty"
    """No card in the reader."""
    UNRESPONSIVE = "unresponsive"
    """A card is there but gave no ATR or did not answer the selects of EF_ICCID."""


class CardRecord(_Frozen):
    """The card inventory's entry for one bank slot, as its bankd last reported it.

    The bankd identifies only unmapped cards (a mapped card belongs to the client's session);
    a card that becomes mapped keeps the identity found before."""

    bank_slot: BankSlot
    state: CardState
    atr: str | None = None
    """Hex, upper case."""
    iccid: str | None = None
    """The printed digits (EF_ICCID decoded, F padding dropped)."""
    imsi: str | None = None
    """Known only where the card gives EF_IMSI without a PIN."""
    last_seen: float
    """When the bankd last looked (epoch seconds)."""
    tpdu_count: int | None = None
    """TPDUs the card answered since its bankd started (None: none yet, or not reported)."""
    last_activity: float | None = None
    """When the card last answered a TPDU (epoch seconds, the server's clock)."""


def card_order(card: CardRecord) -> tuple[int, int]:
    """The inventory's order: by bank id, then slot number."""
    return card.bank_slot.bank_id, card.bank_slot.slot_nr


def check_bank_cards(bank_id: int, cards: Collection[CardRecord]) -> None:
    """``cards`` is a valid report of bank ``bank_id``: its slots only, each once; raises
    ``ValueError`` otherwise."""
    slots = [card.bank_slot for card in cards]
    if any(slot.bank_id != bank_id for slot in slots):
        raise ValueError(f"a card report of bank {bank_id} names another bank's slot")
    if len(set(slots)) != len(slots):
        raise ValueError(f"a card report of bank {bank_id} names a slot twice")
