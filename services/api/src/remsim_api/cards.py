"""The card inventory over REST: ``GET /api/v1/cards`` and ``GET /api/v1/cards/{iccid}``
(remsim's own namespace; the original's ``/api/backend/v1`` has no such thing).

Each bankd of remsim's identifies its unmapped cards and reports them to the server
(docs/architecture.md, "Card inventory"); the store keeps the latest report of every bank,
also while the bank is away (``last_seen`` tells how old it is). A card's client is that of
the visible slotmap of its bank slot. Read access: any role (``viewer`` up).
"""

from __future__ import annotations

import datetime
from typing import Annotated

from fastapi import APIRouter, Depends, Path, Request
from fastapi.routing import APIRoute
from pydantic import BaseModel, ConfigDict, Field

from remsim_api import paths
from remsim_api.problems import ApiError
from remsim_api.schemas import ICCID_PATTERN, problem_responses
from remsim_control import BankSlot, CardRecord, CardState, Slotmap, SlotmapState, Store

__all__ = ["CardList", "CardOut", "MappedClient", "router"]


class MappedClient(BaseModel):
    """The client slot a card is mapped to, and the map's state."""

    model_config = ConfigDict(frozen=True)

    client_id: int
    slot_nr: int
    slotmap_state: SlotmapState = Field(description="The slotmap's state (ACTIVE: in use).")


class CardOut(BaseModel):
    model_config = ConfigDict(frozen=True)

    bank_id: int
    slot_nr: int
    state: CardState = Field(
        description="`present`: a card answered; `empty`: no card in the reader; "
        "`unresponsive`: a card that gave no ATR or did not answer."
    )
    atr: str | None = Field(description="Hex.", examples=["3B9F96801FC78031A073BE2113674320"])
    iccid: str | None = Field(description="EF_ICCID's digits.", examples=["89490200000000000000"])
    imsi: str | None = Field(
        description="Only where the card gives EF_IMSI without a PIN.", examples=["262000000010000"]
    )
    mapped_to: MappedClient | None = Field(description="null: the card is not mapped.")
    last_seen: datetime.datetime = Field(description="When its bankd last reported it (UTC).")
    tpdu_count: int | None = Field(
        default=None,
        description="TPDUs the card answered since its bankd started, mapped or not (null: "
        "none reported yet; the bankd reports activity every few seconds while it changes).",
    )
    last_activity: datetime.datetime | None = Field(
        default=None, description="When the card last answered a TPDU (UTC; null: never seen)."
    )

    @classmethod
    def of(cls, card: CardRecord, slotmap: Slotmap | None) -> CardOut:
        mapped = None
        if slotmap is not None:
            mapped = MappedClient(
                client_id=slotmap.client.client_id,
                slot_nr=slotmap.client.slot_nr,
                slotmap_state=slotmap.state,
            )
        return cls(
            bank_id=card.bank_slot.bank_id,
            slot_nr=card.bank_slot.slot_nr,
            state=card.state,
            atr=card.atr,
            iccid=card.iccid,
            imsi=card.imsi,
            mapped_to=mapped,
            last_seen=_utc(card.last_seen),
            tpdu_count=card.tpdu_count,
            last_activity=None if card.last_activity is None else _utc(card.last_activity),
        )


def _utc(epoch: float) -> datetime.datetime:
    return datetime.datetime.fromtimestamp(epoch, datetime.UTC)


class CardList(BaseModel):
    model_config = ConfigDict(frozen=True)

    cards: list[CardOut] = Field(description="By bank id, then slot number.")


def _operation_id(route: APIRoute) -> str:
    return route.name


def _store(request: Request) -> Store:
    store: Store = request.app.state.store
    return store


async def _maps(store: Store) -> dict[BankSlot, Slotmap]:
    return {m.bank: m for m in await store.list_slotmaps(visible_only=True)}


router = APIRouter(prefix=paths.OWN_PREFIX, generate_unique_id_function=_operation_id)


@router.get("/cards", responses=problem_responses(503), summary="The card inventory")
async def list_cards(store: Annotated[Store, Depends(_store)]) -> CardList:
    cards = await store.cards()
    maps = await _maps(store)
    return CardList(cards=[CardOut.of(card, maps.get(card.bank_slot)) for card in cards])


@router.get("/cards/{iccid}", responses=problem_responses(400, 404, 503), summary="One card")
async def get_card(
    store: Annotated[Store, Depends(_store)],
    iccid: Annotated[str, Path(pattern=ICCID_PATTERN, description="The card's ICCID.")],
) -> CardOut:
    card = await store.card(iccid.upper())
    if card is None:
        raise ApiError(404, f"no card with ICCID {iccid} is known")
    slotmap = (await _maps(store)).get(card.bank_slot)
    return CardOut.of(card, slotmap)
