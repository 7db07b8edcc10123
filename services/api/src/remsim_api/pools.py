"""SIM pools, client groups, rules, card states and leases over REST (remsim's ``/api/v1``).

- ``/pools``, ``/groups``, ``/rules``: ``GET`` the list or one by name, ``PUT`` one (create
  or replace), ``DELETE`` one. A rule may name groups and pools that do not exist (yet):
  they have no members.
- ``/card-states``: every pool card's state (``enabled``, ``disabled``, ``blocked``) and
  usage; ``PUT /card-states/{card}`` with ``{"state": "enabled"}`` or ``"disabled"``
  (enabling clears a block). ``{card}`` is an ICCID or a bank slot as ``B1:0``.
- ``/slotmaps`` (``GET``): the visible maps with their lease, rule and card;
  ``/slotmaps/{id}/lease``: ``GET`` it, ``PUT`` ``{"expiresAt": …}`` or ``{"duration": s}``
  (set or extend), ``DELETE`` (no expiry any more); ``POST /slotmaps/{id}/release``: end the
  map now (a rule then assigns its client the next card). A lease at creation:
  ``expiresAt`` or ``duration`` in the body of ``POST /api/v1/slotmaps``.

The pool scheduler of a server core (``remsim_server.pools``) carries the rules out. Reads:
any role (``viewer`` up); changes: ``operator`` (``remsim_api.security.required_role``).
"""

from __future__ import annotations

import contextlib
import datetime
import time
import zoneinfo
from collections.abc import Sequence
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Depends, Path, Request, Response
from fastapi.routing import APIRoute
from pydantic import (
    AwareDatetime,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    ValidationError,
    model_validator,
)
from pydantic.json_schema import SkipJsonSchema

from remsim_api import audit, paths
from remsim_api.problems import ApiError
from remsim_api.schemas import BankSlotJson as _BankSlotJson
from remsim_api.schemas import ClientSlotJson as _ClientSlotJson
from remsim_api.schemas import SlotmapOut, problem_responses
from remsim_api.security import is_json
from remsim_control import BackendUnavailable, Bus, CardRecord, Slotmap, SlotmapEvent, Store
from remsim_control.backends import require_ready
from remsim_control.pool_store import PoolStore, pool_store_for
from remsim_control.pools import (
    NAME_PATTERN,
    Assignment,
    CardAdminState,
    CardRef,
    CardStatus,
    ClientGroup,
    DailyWindow,
    Method,
    Pool,
    Rule,
    parse_card_ref,
)

__all__ = ["lease_at_creation", "router"]

MAX_LEASE_SECONDS = 10 * 366 * 86400.0
"""The longest lease (ten years)."""
MAX_MEMBERS = 512
"""The most cards of a pool, clients of a group (a body stays well under 64 KiB)."""
TIME_ZONES: list[Any] = sorted(zoneinfo.available_timezones() | {"UTC"})


def _operation_id(route: APIRoute) -> str:
    return route.name


router = APIRouter(prefix=paths.OWN_PREFIX, generate_unique_id_function=_operation_id)


def _store(request: Request) -> Store:
    store: Store = request.app.state.store
    return store


def _bus(request: Request) -> Bus:
    bus: Bus = request.app.state.bus
    return bus


def _pools(request: Request) -> PoolStore:
    return pool_store_for(_store(request))


def _require_json(request: Request) -> None:
    if not is_json(request.headers.get("content-type", "")):
        raise ApiError(415, "the body must be sent as Content-Type: application/json")


async def _require_backends(store: StoreDep, bus: BusDep) -> None:
    await require_ready(store, bus)


StoreDep = Annotated[Store, Depends(_store)]
BusDep = Annotated[Bus, Depends(_bus)]
PoolsDep = Annotated[PoolStore, Depends(_pools)]
Name = Annotated[str, Path(pattern=NAME_PATTERN, description="A name: letters, digits, _.-")]
_ID = r"(?:102[0-3]|10[01]\d|\d{1,3})"
"""0..1023 (bank ids, slot numbers)."""
ICCID_REF = r"[0-9]{10,20}[0-9A-Fa-f]?"
CardKey = Annotated[
    str, Path(pattern=rf"^(B{_ID}:{_ID}|{ICCID_REF})$", description="An ICCID, or B1:0")
]
SlotmapId = Annotated[
    int, Path(ge=0, le=(1023 << 16) | 1023, description="bankId * 65536 + slotNr")
]
CHANGE = [Depends(_require_json), Depends(_require_backends)]


def _epoch(value: datetime.datetime | None) -> float | None:
    return None if value is None else value.timestamp()


def _utc(value: float | None) -> datetime.datetime | None:
    return None if value is None else datetime.datetime.fromtimestamp(value, datetime.UTC)


def _text(value: Any) -> Any:
    """A time is an ISO 8601 string (with its offset), never a number."""
    if not isinstance(value, str | datetime.datetime):
        raise ValueError("a time is an ISO 8601 string, as 2026-12-01T22:00:00Z")
    return value


IsoTime = Annotated[AwareDatetime, BeforeValidator(_text)]


def _integer(value: Any) -> Any:
    """A JSON Schema integer: ``1`` or ``1.0``, never ``true`` or ``"1"``."""
    if isinstance(value, float) and value.is_integer():
        return int(value)
    return value


Weekday = Annotated[int, Field(strict=True, ge=0, le=6), BeforeValidator(_integer)]
Priority = Annotated[
    int, Field(strict=True, ge=-1_000_000, le=1_000_000), BeforeValidator(_integer)
]


def _no_nulls(data: Any, fields: tuple[str, ...]) -> Any:
    """Refuse an explicit ``null`` for these optional members (the schema has none)."""
    if isinstance(data, dict) and any(field in data and data[field] is None for field in fields):
        raise ValueError(f"{' and '.join(fields)} must not be null")
    return data


class _Json(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class BankSlotJson(_BankSlotJson):
    """A bank slot; no other members (so that a body's size is bounded by its schema)."""

    model_config = ConfigDict(extra="forbid")


class ClientSlotJson(_ClientSlotJson):
    """A client slot; no other members."""

    model_config = ConfigDict(extra="forbid")


# --- pools --------------------------------------------------------------------------------


class CardRefJson(_Json):
    """A card by ICCID (found through the inventory), or the card in a bank slot."""

    model_config = ConfigDict(
        frozen=True,
        extra="forbid",
        json_schema_extra={"oneOf": [{"required": ["iccid"]}, {"required": ["bank"]}]},
    )

    iccid: Annotated[str, Field(pattern=rf"^{ICCID_REF}$")] | SkipJsonSchema[None] = None
    bank: BankSlotJson | SkipJsonSchema[None] = None

    @model_validator(mode="before")
    @classmethod
    def _no_null(cls, data: Any) -> Any:
        return _no_nulls(data, ("iccid", "bank"))

    def to_model(self) -> CardRef:
        if self.bank is not None:
            return CardRef(iccid=self.iccid, bank=self.bank.to_model())
        return CardRef(iccid=None if self.iccid is None else self.iccid.upper())

    @classmethod
    def of(cls, ref: CardRef) -> CardRefJson:
        if ref.bank is not None:
            return cls(bank=BankSlotJson(bankId=ref.bank.bank_id, slotNr=ref.bank.slot_nr))
        return cls(iccid=ref.iccid)


class PoolBody(_Json):
    cards: list[CardRefJson] = Field(default=[], max_length=MAX_MEMBERS)
    description: str = Field(default="", max_length=500)


class PoolJson(_Json):
    name: str
    cards: list[CardRefJson]
    description: str

    @classmethod
    def of(cls, pool: Pool) -> PoolJson:
        cards = [CardRefJson.of(ref) for ref in pool.cards]
        return cls(name=pool.name, cards=cards, description=pool.description)


class PoolList(_Json):
    pools: list[PoolJson]


def _invalid(exc: ValueError) -> ApiError:
    """A body that the schema lets through but the model refuses (``ValidationError`` is a
    ``ValueError``): 400, as a schema violation."""
    if isinstance(exc, ValidationError):
        detail = "; ".join(error["msg"] for error in exc.errors())
    else:
        detail = str(exc)
    return ApiError(400, detail or "invalid request")


@router.get(
    "/pools",
    response_model_exclude_none=True,
    responses=problem_responses(503),
    summary="SIM pools",
)
async def list_pools(pools: PoolsDep) -> PoolList:
    return PoolList(pools=[PoolJson.of(pool) for pool in await pools.list_pools()])


@router.get(
    "/pools/{name}",
    response_model_exclude_none=True,
    responses=problem_responses(400, 404, 503),
    summary="One SIM pool",
)
async def get_pool(name: Name, pools: PoolsDep) -> PoolJson:
    pool = await pools.get_pool(name)
    if pool is None:
        raise ApiError(404, f"no pool {name}")
    return PoolJson.of(pool)


@router.put(
    "/pools/{name}",
    response_model_exclude_none=True,
    dependencies=CHANGE,
    responses=problem_responses(400, 415, 503),
    summary="Create or replace a SIM pool",
)
async def put_pool(name: Name, body: PoolBody, request: Request, pools: PoolsDep) -> PoolJson:
    audit.note(request.scope, detail=f"pool {name}")
    try:
        cards = {ref.key: ref for ref in reversed([c.to_model() for c in body.cards])}
        pool = Pool(
            name=name,
            cards=tuple(reversed(cards.values())),  # each card once, where first named
            description=body.description,
        )
    except ValueError as exc:
        raise _invalid(exc) from exc
    await pools.put_pool(pool)
    return PoolJson.of(pool)


@router.delete(
    "/pools/{name}",
    response_class=Response,
    dependencies=[Depends(_require_backends)],
    responses={200: {"description": "Deleted."}, **problem_responses(400, 404, 503)},
    summary="Delete a SIM pool",
)
async def delete_pool(name: Name, request: Request, pools: PoolsDep) -> Response:
    audit.note(request.scope, detail=f"pool {name}")
    if not await pools.delete_pool(name):
        raise ApiError(404, f"no pool {name}")
    return Response(status_code=200)


# --- client groups ------------------------------------------------------------------------


class GroupBody(_Json):
    clients: list[ClientSlotJson] = Field(default=[], max_length=MAX_MEMBERS)
    description: str = Field(default="", max_length=500)


class GroupJson(_Json):
    name: str
    clients: list[ClientSlotJson]
    description: str

    @classmethod
    def of(cls, group: ClientGroup) -> GroupJson:
        clients = [ClientSlotJson(clientId=c.client_id, slotNr=c.slot_nr) for c in group.clients]
        return cls(name=group.name, clients=clients, description=group.description)


class GroupList(_Json):
    groups: list[GroupJson]


@router.get("/groups", responses=problem_responses(503), summary="Client groups")
async def list_groups(pools: PoolsDep) -> GroupList:
    return GroupList(groups=[GroupJson.of(group) for group in await pools.list_groups()])


@router.get(
    "/groups/{name}", responses=problem_responses(400, 404, 503), summary="One client group"
)
async def get_group(name: Name, pools: PoolsDep) -> GroupJson:
    group = await pools.get_group(name)
    if group is None:
        raise ApiError(404, f"no group {name}")
    return GroupJson.of(group)


@router.put(
    "/groups/{name}",
    dependencies=CHANGE,
    responses=problem_responses(400, 415, 503),
    summary="Create or replace a client group",
)
async def put_group(name: Name, body: GroupBody, request: Request, pools: PoolsDep) -> GroupJson:
    audit.note(request.scope, detail=f"group {name}")
    try:
        group = ClientGroup(
            name=name,
            clients=tuple(dict.fromkeys(c.to_model() for c in body.clients)),  # each once
            description=body.description,
        )
    except ValueError as exc:
        raise _invalid(exc) from exc
    await pools.put_group(group)
    return GroupJson.of(group)


@router.delete(
    "/groups/{name}",
    response_class=Response,
    dependencies=[Depends(_require_backends)],
    responses={200: {"description": "Deleted."}, **problem_responses(400, 404, 503)},
    summary="Delete a client group",
)
async def delete_group(name: Name, request: Request, pools: PoolsDep) -> Response:
    audit.note(request.scope, detail=f"group {name}")
    if not await pools.delete_group(name):
        raise ApiError(404, f"no group {name}")
    return Response(status_code=200)


# --- rules --------------------------------------------------------------------------------


class DailyJson(_Json):
    start: str = Field(pattern=r"^([01]\d|2[0-3]):[0-5]\d$", examples=["22:00"])
    end: str = Field(pattern=r"^([01]\d|2[0-3]):[0-5]\d$", examples=["06:00"])
    days: list[Weekday] = Field(
        default=[0, 1, 2, 3, 4, 5, 6], min_length=1, max_length=7, description="0 = Monday"
    )
    tz: str = Field(
        default="UTC",
        examples=["Europe/Berlin"],
        json_schema_extra={"enum": TIME_ZONES},
        description="An IANA time zone.",
    )


class RuleBody(_Json):
    model_config = ConfigDict(
        frozen=True,
        extra="forbid",
        json_schema_extra={
            "examples": [
                {
                    "group": "modems",
                    "pools": ["B"],
                    "priority": 10,
                    "method": "cyclic",
                    "daily": {"start": "22:00", "end": "06:00"},
                }
            ]
        },
    )

    group: str = Field(pattern=NAME_PATTERN)
    pools: list[Annotated[str, Field(pattern=NAME_PATTERN)]] = Field(min_length=1, max_length=64)
    priority: Priority = Field(default=0, description="Higher first.")
    method: Method = Method.CYCLIC
    enabled: bool = Field(default=True, strict=True)
    notBefore: IsoTime | None = Field(default=None, description="Inactive before.")
    notAfter: IsoTime | None = Field(default=None, description="Inactive from then on.")
    daily: DailyJson | None = Field(default=None, description="Active only in this window.")
    leaseSeconds: float | None = Field(
        default=None,
        strict=True,
        gt=0,
        le=MAX_LEASE_SECONDS,
        description="Each of its maps lasts that long.",
    )


class RuleJson(RuleBody):
    name: str
    active: bool = Field(description="Whether the rule is active now.")

    @classmethod
    def of(cls, rule: Rule, now: float) -> RuleJson:
        daily = None
        if rule.daily is not None:
            d = rule.daily
            daily = DailyJson(start=d.start, end=d.end, days=list(d.days), tz=d.tz)
        return cls(
            name=rule.name,
            group=rule.group,
            pools=list(rule.pools),
            priority=rule.priority,
            method=rule.method,
            enabled=rule.enabled,
            notBefore=_utc(rule.not_before),
            notAfter=_utc(rule.not_after),
            daily=daily,
            leaseSeconds=rule.lease_seconds,
            active=rule.active(now),
        )


class RuleList(_Json):
    rules: list[RuleJson] = Field(description="By name.")


@router.get("/rules", responses=problem_responses(503), summary="Assignment rules")
async def list_rules(pools: PoolsDep) -> RuleList:
    now = time.time()
    return RuleList(rules=[RuleJson.of(rule, now) for rule in await pools.list_rules()])


@router.get("/rules/{name}", responses=problem_responses(400, 404, 503), summary="One rule")
async def get_rule(name: Name, pools: PoolsDep) -> RuleJson:
    rule = await pools.get_rule(name)
    if rule is None:
        raise ApiError(404, f"no rule {name}")
    return RuleJson.of(rule, time.time())


@router.put(
    "/rules/{name}",
    dependencies=CHANGE,
    responses=problem_responses(400, 415, 503),
    summary="Create or replace an assignment rule",
)
async def put_rule(name: Name, body: RuleBody, request: Request, pools: PoolsDep) -> RuleJson:
    audit.note(request.scope, detail=f"rule {name}")
    try:
        daily = None
        if body.daily is not None:
            d = body.daily
            daily = DailyWindow(start=d.start, end=d.end, days=tuple(d.days), tz=d.tz)
        rule = Rule(
            name=name,
            group=body.group,
            pools=tuple(body.pools),
            priority=body.priority,
            method=body.method,
            enabled=body.enabled,
            not_before=_epoch(body.notBefore),
            not_after=_epoch(body.notAfter),
            daily=daily,
            lease_seconds=body.leaseSeconds,
        )
    except ValueError as exc:
        raise _invalid(exc) from exc
    await pools.put_rule(rule)
    return RuleJson.of(rule, time.time())


@router.delete(
    "/rules/{name}",
    response_class=Response,
    dependencies=[Depends(_require_backends)],
    responses={
        200: {"description": "Deleted; its maps are freed."},
        **problem_responses(400, 404, 503),
    },
    summary="Delete an assignment rule",
)
async def delete_rule(name: Name, request: Request, pools: PoolsDep) -> Response:
    audit.note(request.scope, detail=f"rule {name}")
    if not await pools.delete_rule(name):
        raise ApiError(404, f"no rule {name}")
    return Response(status_code=200)


# --- card states --------------------------------------------------------------------------


class CardStateJson(_Json):
    card: str = Field(description="The card: its ICCID, or its bank slot as B1:0.")
    pools: list[str] = Field(description="The pools naming it.")
    state: CardAdminState = Field(
        description="`enabled`; `disabled` by the operator (never assigned); `blocked` "
        "after consecutive failures (cleared by enabling it)."
    )
    failures: int = Field(description="Consecutive failures (refused maps).")
    lastFailure: str | None = Field(description="The bankd's last refusal.")
    mappedSeconds: float = Field(description="Total time of its ended maps.")
    maps: int = Field(description="Maps made of it.")
    tpdus: int | None = Field(
        default=None,
        description="TPDUs its bankd counted, where it reports them (the card inventory).",
    )

    @classmethod
    def of(
        cls, status: CardStatus, pools: list[str], inventory: Sequence[CardRecord] = ()
    ) -> CardStateJson:
        ref = parse_card_ref(status.key)
        found = next(
            (
                card
                for card in inventory
                if (ref.iccid is not None and card.iccid == ref.iccid) or card.bank_slot == ref.bank
            ),
            None,
        )
        return cls(
            card=status.key,
            pools=pools,
            state=status.state,
            failures=status.failures,
            lastFailure=status.last_failure,
            mappedSeconds=status.mapped_seconds,
            maps=status.maps,
            tpdus=None if found is None else found.tpdu_count,
        )


class CardStateList(_Json):
    cards: list[CardStateJson] = Field(description="Every pool card and every card with a state.")


class CardStateBody(_Json):
    state: Literal["enabled", "disabled"] = Field(
        description="`blocked` is set only by failures; enabling clears it."
    )


async def _pools_naming(pools: PoolStore) -> dict[str, list[str]]:
    naming: dict[str, list[str]] = {}
    for pool in await pools.list_pools():
        for ref in pool.cards:
            naming.setdefault(ref.key, []).append(pool.name)
    return naming


def _card_key(card: str) -> str:
    try:
        return parse_card_ref(card).key
    except ValueError as exc:
        raise _invalid(exc) from exc


@router.get("/card-states", responses=problem_responses(503), summary="Pool cards' states")
async def list_card_states(pools: PoolsDep, store: StoreDep) -> CardStateList:
    naming = await _pools_naming(pools)
    statuses = {status.key: status for status in await pools.card_statuses()}
    inventory = await store.cards()
    keys = sorted(set(naming) | set(statuses))
    return CardStateList(
        cards=[
            CardStateJson.of(
                statuses.get(key) or CardStatus(key=key), naming.get(key, []), inventory
            )
            for key in keys
        ]
    )


@router.get(
    "/card-states/{card}", responses=problem_responses(400, 503), summary="One card's state"
)
async def get_card_state(card: CardKey, pools: PoolsDep, store: StoreDep) -> CardStateJson:
    key = _card_key(card)
    status = await pools.card_status(key) or CardStatus(key=key)
    naming = (await _pools_naming(pools)).get(key, [])
    return CardStateJson.of(status, naming, await store.cards())


@router.put(
    "/card-states/{card}",
    dependencies=CHANGE,
    responses=problem_responses(400, 415, 503),
    summary="Enable or disable a card",
)
async def put_card_state(
    card: CardKey, body: CardStateBody, request: Request, pools: PoolsDep
) -> CardStateJson:
    key = _card_key(card)
    audit.note(request.scope, detail=f"card {key} {body.state}")
    state = CardAdminState(body.state)
    status = await pools.update_card_status(key, lambda s: s.set_state(state))
    return CardStateJson.of(status, (await _pools_naming(pools)).get(key, []))


# --- slotmaps with their leases -----------------------------------------------------------


class LeaseJson(_Json):
    expiresAt: datetime.datetime | None = Field(description="null: no expiry.")
    rule: str | None = Field(description="The rule that made the map (null: by hand).")
    card: str | None = Field(description="The pool card mapped (null: a card of no pool).")


class LeasedSlotmap(SlotmapOut):
    lease: LeaseJson | None = Field(default=None, description="null: nothing known of it.")


class LeasedSlotmapList(_Json):
    slotmaps: list[LeasedSlotmap]


class LeaseBody(_Json):
    model_config = ConfigDict(
        frozen=True,
        extra="forbid",
        json_schema_extra={"oneOf": [{"required": ["expiresAt"]}, {"required": ["duration"]}]},
    )

    expiresAt: IsoTime | SkipJsonSchema[None] = Field(default=None, description="The new expiry.")
    duration: (
        Annotated[float, Field(strict=True, gt=0, le=MAX_LEASE_SECONDS)] | SkipJsonSchema[None]
    ) = Field(default=None, description="Or seconds from now.")

    @model_validator(mode="before")
    @classmethod
    def _no_null(cls, data: Any) -> Any:
        return _no_nulls(data, ("expiresAt", "duration"))

    def expiry(self, now: float) -> float:
        if (self.expiresAt is None) == (self.duration is None):
            raise ApiError(400, "name either expiresAt or duration")
        if self.duration is not None:
            return now + self.duration
        assert self.expiresAt is not None
        return self.expiresAt.timestamp()


def _lease(assignment: Assignment | None) -> LeaseJson | None:
    if assignment is None:
        return None
    return LeaseJson(
        expiresAt=_utc(assignment.expires_at), rule=assignment.rule, card=assignment.card
    )


def _leased(slotmap: Slotmap, assignment: Assignment | None) -> LeasedSlotmap:
    return LeasedSlotmap(**dict(SlotmapOut.of(slotmap)), lease=_lease(assignment))


async def _visible(store: Store, slotmap_id: int) -> Slotmap:
    slotmap = await store.get_slotmap(slotmap_id)
    if slotmap is None:
        raise ApiError(404, f"no slotmap with id {slotmap_id}")
    return slotmap


@router.get(
    "/slotmaps",
    response_model_exclude_none=True,
    responses=problem_responses(503),
    summary="All slotmaps, with their leases",
)
async def list_leased_slotmaps(store: StoreDep, pools: PoolsDep) -> LeasedSlotmapList:
    assignments = {a.serial: a for a in await pools.list_assignments()}
    maps = await store.list_slotmaps(visible_only=True)
    return LeasedSlotmapList(slotmaps=[_leased(m, assignments.get(m.serial)) for m in maps])


@router.get(
    "/slotmaps/{slotmap_id}/lease",
    responses=problem_responses(400, 404, 503),
    summary="A slotmap's lease",
)
async def get_lease(slotmap_id: SlotmapId, store: StoreDep, pools: PoolsDep) -> LeaseJson:
    slotmap = await _visible(store, slotmap_id)
    found = _lease(await pools.get_assignment(slotmap.serial))
    return found or LeaseJson(expiresAt=None, rule=None, card=None)


async def set_expiry(
    store: Store, pools: PoolStore, slotmap: Slotmap, expires_at: float | None
) -> Assignment:
    """Give ``slotmap`` the lease ``expires_at`` (None: none); the pool scheduler ends it."""
    assignment = await pools.get_assignment(slotmap.serial)
    if assignment is None:
        assignment = Assignment(
            serial=slotmap.serial, bank=slotmap.bank, client=slotmap.client, started=time.time()
        )
    assignment = assignment.model_copy(update={"expires_at": expires_at})
    await pools.put_assignment(assignment)
    if await store.get_slotmap(slotmap.id) is None:  # removed meanwhile: forget it again
        await pools.delete_assignment(slotmap.serial)
    return assignment


@router.put(
    "/slotmaps/{slotmap_id}/lease",
    dependencies=CHANGE,
    responses=problem_responses(400, 404, 415, 503),
    summary="Set or extend a slotmap's lease",
)
async def put_lease(
    slotmap_id: SlotmapId, body: LeaseBody, request: Request, store: StoreDep, pools: PoolsDep
) -> LeaseJson:
    audit.note(request.scope, bank_id=slotmap_id >> 16, bank_slot=slotmap_id & 0xFFFF)
    expires_at = body.expiry(time.time())
    slotmap = await _visible(store, slotmap_id)
    lease = _lease(await set_expiry(store, pools, slotmap, expires_at))
    assert lease is not None
    return lease


@router.delete(
    "/slotmaps/{slotmap_id}/lease",
    response_class=Response,
    dependencies=[Depends(_require_backends)],
    responses={
        200: {"description": "The map has no expiry now."},
        **problem_responses(400, 404, 503),
    },
    summary="Drop a slotmap's expiry",
)
async def delete_lease(
    slotmap_id: SlotmapId, request: Request, store: StoreDep, pools: PoolsDep
) -> Response:
    audit.note(request.scope, bank_id=slotmap_id >> 16, bank_slot=slotmap_id & 0xFFFF)
    slotmap = await _visible(store, slotmap_id)
    await set_expiry(store, pools, slotmap, None)
    return Response(status_code=200)


@router.post(
    "/slotmaps/{slotmap_id}/release",
    response_class=Response,
    dependencies=[Depends(_require_backends)],
    responses={
        200: {"description": "Removed; a rule assigns its client the next card."},
        **problem_responses(400, 404, 503),
    },
    summary="End a slotmap (and its lease) now",
)
async def release_slotmap(
    slotmap_id: SlotmapId, request: Request, store: StoreDep, bus: BusDep
) -> Response:
    audit.note(request.scope, bank_id=slotmap_id >> 16, bank_slot=slotmap_id & 0xFFFF)
    slotmap = await store.request_removal(slotmap_id)
    if slotmap is None:
        raise ApiError(404, f"no slotmap with id {slotmap_id}")
    # In the store already: if the bus is down, every core re-reads it when it is back.
    with contextlib.suppress(BackendUnavailable):
        await bus.publish(SlotmapEvent.of(slotmap))
    return Response(status_code=200)


async def lease_at_creation(
    store: Store, slotmap: Slotmap, expires_at: datetime.datetime | None, duration: float | None
) -> None:
    """``POST /api/v1/slotmaps`` with ``expiresAt`` or ``duration``: the new map's lease."""
    if expires_at is None and duration is None:
        return
    expiry = expires_at.timestamp() if expires_at is not None else time.time() + (duration or 0)
    await set_expiry(store, pool_store_for(store), slotmap, expiry)
