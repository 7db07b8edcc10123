"""The RSRES JSON: field names, nesting and key order as the original server emits them.

Fields are named exactly as their JSON keys (``type_``, ``bankId``, ...) so that what is
read here is what goes over the wire. Additions over the original (``id``, ``result``,
``clientId``/``slotNr`` on clients, ``hwModel``, ``bankd``) come after the original's keys;
absent optional values are omitted, as the original omits empty identity strings.
"""

from __future__ import annotations

from typing import Annotated, Any

from pydantic import (
    AwareDatetime,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    model_validator,
)
from pydantic.json_schema import SkipJsonSchema

from remsim_control import (
    SLOT_MAX,
    BankRecord,
    BankSlot,
    ClientRecord,
    ClientSlot,
    ComponentIdentity,
    Slotmap,
    SlotmapState,
)


def _json_integer(value: object) -> object:
    """A JSON Schema integer: ``1`` or ``1.0``, never ``true`` or ``"1"``."""
    if isinstance(value, float) and value.is_integer():
        return int(value)
    return value


SlotNumber = Annotated[int, Field(strict=True, ge=0, le=SLOT_MAX), BeforeValidator(_json_integer)]
"""An id or slot number: an integer 0..1023 (no strings, booleans or truncation)."""


class _Out(BaseModel):
    model_config = ConfigDict(frozen=True)


class ComponentId(_Out):
    type_: str = Field(examples=["remsimBankd"])
    name: str
    software: str
    swVersion: str
    hwManufacturer: str | None = None
    hwModel: str | None = None
    hwSerialNr: str | None = None
    hwVersion: str | None = None
    fwVersion: str | None = None

    @classmethod
    def of(cls, identity: ComponentIdentity) -> ComponentId:
        return cls(
            type_=identity.type.value,
            name=identity.name,
            software=identity.software,
            swVersion=identity.sw_version,
            hwManufacturer=identity.hw_manufacturer or None,
            hwModel=identity.hw_model or None,
            hwSerialNr=identity.hw_serial_nr or None,
            hwVersion=identity.hw_version or None,
            fwVersion=identity.fw_version or None,
        )


class BankdAddressOut(_Out):
    ip: str
    port: int


class Bank(_Out):
    peer: str = Field(examples=["B1"])
    state: str = Field(examples=["CONNECTED_BANKD"])
    component_id: ComponentId
    bankId: int
    numberOfSlots: int
    bankd: BankdAddressOut = Field(description="The address clients are given for this bankd.")

    @classmethod
    def of(cls, record: BankRecord) -> Bank:
        return cls(
            peer=record.peer,
            state=record.state,
            component_id=ComponentId.of(record.identity),
            bankId=record.bank_id,
            numberOfSlots=record.number_of_slots,
            bankd=BankdAddressOut(ip=record.bankd.host, port=record.bankd.port),
        )


class Client(_Out):
    peer: str = Field(examples=["C23:0"])
    state: str = Field(examples=["CONNECTED_CLIENT"])
    component_id: ComponentId
    clientId: int
    slotNr: int

    @classmethod
    def of(cls, record: ClientRecord) -> Client:
        return cls(
            peer=record.peer,
            state=record.state,
            component_id=ComponentId.of(record.identity),
            clientId=record.client.client_id,
            slotNr=record.client.slot_nr,
        )


class BankSlotJson(BaseModel):
    bankId: SlotNumber
    slotNr: SlotNumber

    def to_model(self) -> BankSlot:
        return BankSlot(bank_id=self.bankId, slot_nr=self.slotNr)


class ClientSlotJson(BaseModel):
    clientId: SlotNumber
    slotNr: SlotNumber

    def to_model(self) -> ClientSlot:
        return ClientSlot(client_id=self.clientId, slot_nr=self.slotNr)


class SlotmapCreate(BaseModel):
    """The body of ``POST /slotmaps``; other keys are ignored, as by the original."""

    model_config = ConfigDict(
        json_schema_extra={
            "examples": [
                {"bank": {"bankId": 1, "slotNr": 0}, "client": {"clientId": 23, "slotNr": 0}}
            ]
        }
    )

    bank: BankSlotJson
    client: ClientSlotJson


def _iso_text(value: Any) -> Any:
    """A time is an ISO 8601 string (with its offset), never a number."""
    if not isinstance(value, str):
        raise ValueError("a time is an ISO 8601 string, as 2026-12-01T22:00:00Z")
    return value


LEASE_MAX = 10 * 366 * 86400.0
"""The longest lease, in seconds (ten years)."""
LeaseSeconds = Annotated[float, Field(strict=True, gt=0, le=LEASE_MAX)]
IsoTime = Annotated[AwareDatetime, BeforeValidator(_iso_text)]
"""A time as an ISO 8601 string with its offset."""
ICCID_PATTERN = r"^[0-9A-Fa-f]{1,24}$"
"""An ICCID as remsim takes it: EF_ICCID's digits (hex, for the filler ``F``)."""


class CardJson(BaseModel):
    iccid: Annotated[str, Field(pattern=ICCID_PATTERN, examples=["89490200000000000000"])]


class SlotmapByCardCreate(BaseModel):
    """The body of ``POST /api/v1/slotmaps``: the card (by ICCID) or the bank slot, and the
    client slot; other keys are ignored."""

    model_config = ConfigDict(
        json_schema_extra={
            "oneOf": [{"required": ["card"]}, {"required": ["bank"]}],
            "not": {"required": ["expiresAt", "duration"]},
            "examples": [
                {
                    "card": {"iccid": "89490200000000000000"},
                    "client": {"clientId": 23, "slotNr": 0},
                },
                {"bank": {"bankId": 1, "slotNr": 0}, "client": {"clientId": 23, "slotNr": 0}},
            ],
        }
    )

    card: CardJson | SkipJsonSchema[None] = Field(
        default=None, description="The card to map: its bank slot now, from the inventory."
    )
    bank: BankSlotJson | SkipJsonSchema[None] = Field(
        default=None, description="Or the bank slot itself."
    )
    client: ClientSlotJson
    expiresAt: IsoTime | SkipJsonSchema[None] = Field(
        default=None, description="A lease: the map is removed then (remsim_api.pools)."
    )
    duration: LeaseSeconds | SkipJsonSchema[None] = Field(
        default=None, description="Or a lease of this many seconds."
    )

    @model_validator(mode="after")
    def _one_expiry(self) -> SlotmapByCardCreate:
        if self.expiresAt is not None and self.duration is not None:
            raise ValueError("name expiresAt or duration, not both")
        return self

    @model_validator(mode="before")
    @classmethod
    def _card_or_bank(cls, data: Any) -> Any:
        if isinstance(data, dict):
            named = [key for key in ("card", "bank") if key in data]
            if len(named) != 1:
                raise ValueError("name either the card or the bank slot")
            if data[named[0]] is None:
                raise ValueError(f"{named[0]} must be an object")
            if any(data.get(key, 0) is None for key in ("expiresAt", "duration")):
                raise ValueError("expiresAt and duration must not be null")
        return data


class SlotmapOut(_Out):
    bank: BankSlotJson
    client: ClientSlotJson
    state: SlotmapState
    id: int = Field(description="bankId * 65536 + slotNr: the id for DELETE /slotmaps/{id}")
    result: str | None = Field(
        default=None,
        description="Why the bankd refused the map (RSPRO result code), while it stays NEW.",
    )

    @classmethod
    def of(cls, slotmap: Slotmap) -> SlotmapOut:
        return cls(
            bank=BankSlotJson(bankId=slotmap.bank.bank_id, slotNr=slotmap.bank.slot_nr),
            client=ClientSlotJson(clientId=slotmap.client.client_id, slotNr=slotmap.client.slot_nr),
            state=slotmap.state,
            id=slotmap.id,
            result=slotmap.result,
        )


class SlotmapByCardOut(SlotmapOut):
    """A slotmap made by ``POST /api/v1/slotmaps``: ``bank`` is the bank slot the card was
    found in, ``card`` the card named (absent when the bank slot was)."""

    card: CardJson | None = None

    @classmethod
    def of_card(cls, slotmap: Slotmap, iccid: str | None) -> SlotmapByCardOut:
        out = SlotmapOut.of(slotmap)
        card = CardJson(iccid=iccid) if iccid is not None else None
        return cls(**dict(out), card=card)


BATCH_MAX = 1000
"""Maps one ``POST /api/v1/slotmaps:batch`` makes at most."""


class SlotmapBatchCreate(BaseModel):
    """The body of ``POST /api/v1/slotmaps:batch``: up to ``BATCH_MAX`` maps, each as the
    body of ``POST /api/v1/slotmaps`` (by card or by bank slot)."""

    model_config = ConfigDict(
        json_schema_extra={
            "examples": [
                {
                    "slotmaps": [
                        {
                            "bank": {"bankId": 1, "slotNr": 0},
                            "client": {"clientId": 23, "slotNr": 0},
                        },
                        {
                            "card": {"iccid": "89490200000000000000"},
                            "client": {"clientId": 24, "slotNr": 0},
                        },
                    ]
                }
            ]
        }
    )

    slotmaps: list[SlotmapByCardCreate] = Field(min_length=1, max_length=BATCH_MAX)


class SlotmapBatchItem(_Out):
    """The outcome of one map of a batch: ``status`` as ``POST /api/v1/slotmaps`` would
    have answered it (201, 404 unknown card, 409 slot in use), the map made, or why not."""

    status: int
    slotmap: SlotmapByCardOut | None = Field(default=None, description="For 201: the new map.")
    detail: str | None = Field(default=None, description="Why the map was not made.")
    existing: SlotmapOut | None = Field(
        default=None, description="For 409: the existing map that uses the slot."
    )


class SlotmapBatchOut(_Out):
    """One outcome per map of the request, in its order."""

    results: list[SlotmapBatchItem]


class BankList(_Out):
    banks: list[Bank]


class ClientList(_Out):
    clients: list[Client]


class SlotmapList(_Out):
    slotmaps: list[SlotmapOut]


class Problem(BaseModel):
    """An RFC 9457 problem detail (``application/problem+json``)."""

    model_config = ConfigDict(extra="allow")

    type: str = "about:blank"
    title: str
    status: int
    detail: str | None = None
    instance: str | None = None
    errors: list[dict[str, Any]] | None = Field(
        default=None, description="For 400: what was wrong with the request, field by field."
    )
    slotmap: SlotmapOut | None = Field(
        default=None, description="For 409: the existing map that uses the slot."
    )


PROBLEMS = {
    400: "The request is malformed (bad JSON, wrong types, ids out of 0..1023).",
    404: "No such resource.",
    409: "A slotmap already uses the bank slot or the client slot.",
    415: "The body is not declared as JSON.",
    503: "The shared store or bus (Redis, NATS) does not answer now; nothing was changed.",
}


def problem_responses(*statuses: int) -> dict[int | str, dict[str, Any]]:
    """``responses=`` of an operation: these problems, as ``PROBLEMS`` describes them."""
    return {status: {"model": Problem, "description": PROBLEMS[status]} for status in statuses}
