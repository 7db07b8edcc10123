"""The RSRES REST API (``/api/backend/v1``) as a FastAPI app over a ``Store`` and a ``Bus``.

The API only writes intent to the store and announces it on the bus; the core holding the
bankd's and the client's control connections carries it out. Responses are therefore sent
before any RSPRO message follows from them, as with the original. While the store or the
bus does not answer, changes are refused with 503 (nothing is written), since no core would
hear of them.

Next to the API, outside its OpenAPI document: ``/healthz``, ``/readyz`` and ``/metrics``
(``remsim_common.HealthEndpoint``; the families in ``remsim_api.metrics``), and its
documentation, ``/docs`` (Swagger UI) and ``/redoc``, whose scripts and styles are served
from ``/docs/static`` (fastapi-offline's copies), so the pages work where no CDN can be
reached. In remsim's own namespace, ``/api/v1``: the audit log (``remsim_api.audit``),
the card inventory (``remsim_api.cards``) and slotmaps made by card (``POST /api/v1/slotmaps``).
The operator's dashboard, ``/ui`` (``remsim_api.ui``).

A body over 64 KiB is refused first (``remsim_api.limits``). Every request passes
``remsim_api.security.Guard`` then: Host, Origin and Content-Type
checks, bearer tokens and roles when configured, and the audit entry of every change.
"""

from __future__ import annotations

import asyncio
import json
import logging
from importlib.metadata import PackageNotFoundError, version
from typing import Annotated, Any

from fastapi import APIRouter, Depends, FastAPI, Path, Request, Response
from fastapi.openapi.utils import get_openapi
from fastapi.routing import APIRoute
from fastapi_offline import FastAPIOffline
from prometheus_client import CollectorRegistry
from pydantic import BeforeValidator, ValidationError
from starlette._utils import get_route_path  # what starlette.routing.Route matches on
from starlette.middleware.cors import CORSMiddleware
from starlette.routing import BaseRoute, Match, NoMatchFound, Route, compile_path
from starlette.types import ASGIApp, Receive, Scope, Send

from remsim_api import audit, cards, metrics, paths, problems, ui
from remsim_api import pools as pool_api
from remsim_api.limits import BodyLimit, replay
from remsim_api.problems import ApiError
from remsim_api.schemas import (
    Bank,
    BankList,
    Client,
    ClientList,
    SlotmapBatchCreate,
    SlotmapBatchItem,
    SlotmapBatchOut,
    SlotmapByCardCreate,
    SlotmapByCardOut,
    SlotmapCreate,
    SlotmapList,
    SlotmapOut,
    problem_responses,
)
from remsim_api.security import ApiSecurity, Guard, is_json
from remsim_common import HealthEndpoint
from remsim_common.health import HEALTH_PATHS
from remsim_control import (
    SLOT_MAX,
    BackendUnavailable,
    BankSlot,
    Bus,
    ClientSlot,
    Event,
    ResetEvent,
    SlotInUse,
    Slotmap,
    SlotmapEvent,
    Store,
    slotmap_id,
)
from remsim_control.backends import backends_ready, require_ready

log = logging.getLogger("remsim.api")
maplog = logging.getLogger("remsim.api.slotmap")
"""Slotmaps added and deleted (the original's DSLOTMAP)."""

PREFIX = paths.PREFIX
MAX_SLOTMAP_ID = SLOT_MAX << 16 | SLOT_MAX


def _operation_id(route: APIRoute) -> str:
    """An operation's id in the OpenAPI document is its function's name: ``list_banks``."""
    return route.name


router = APIRouter(prefix=PREFIX, generate_unique_id_function=_operation_id)
own_router = APIRouter(prefix=paths.OWN_PREFIX, generate_unique_id_function=_operation_id)
"""remsim's own operations that share this module's slotmap logic (``/api/v1/slotmaps``)."""


# The dependencies are coroutines: FastAPI runs a plain function in a worker thread, which
# cost more than the request's own work (a thread hand-off per dependency and request).


async def _store(request: Request) -> Store:
    store: Store = request.app.state.store
    return store


async def _bus(request: Request) -> Bus:
    bus: Bus = request.app.state.bus
    return bus


def _digits_only(value: Any) -> Any:
    """A path id is ASCII digits and nothing else: no sign, blank, ``_``, ``.`` or exponent
    (Python's ``int()`` would read ``+1``, `` 1``, ``1_0`` and Arabic-Indic digits)."""
    if isinstance(value, str) and not (value.isascii() and value.isdigit()):
        raise ValueError("an id is decimal digits only")
    return value


StoreDep = Annotated[Store, Depends(_store)]
BusDep = Annotated[Bus, Depends(_bus)]
BankId = Annotated[
    int, Path(ge=0, le=SLOT_MAX, description="bank id, 0..1023"), BeforeValidator(_digits_only)
]
ClientId = Annotated[
    int, Path(ge=0, le=SLOT_MAX, description="client id, 0..1023"), BeforeValidator(_digits_only)
]
SlotmapId = Annotated[
    int,
    Path(ge=0, le=MAX_SLOTMAP_ID, description="bankId * 65536 + slotNr (decimal)"),
    BeforeValidator(_digits_only),
]


async def _require_json(request: Request) -> None:
    if not is_json(request.headers.get("content-type", "")):
        raise ApiError(415, "the body must be sent as Content-Type: application/json")


def _backends(request: Request) -> tuple[Store, Bus]:
    """The store and the bus, for the routes that change something: taken from the app
    rather than as dependencies, since FastAPI's dependency resolution was a good part of
    such a request's CPU (a POST /slotmaps per map)."""
    return request.app.state.store, request.app.state.bus


async def _require_backends(request: Request) -> None:
    """Refuse a change while the cores could not hear of it."""
    await require_ready(*_backends(request))


async def _announce(bus: Bus, event: Event) -> None:
    """Tell the cores; the change is in the store already, so if the bus went down since
    ``_require_backends``, it is carried out after the bus's reset once NATS is back."""
    try:
        await bus.publish(event)
    except BackendUnavailable as exc:
        fields = _map_fields(event.bank, event.client) if isinstance(event, SlotmapEvent) else {}
        log.warning(
            "%s event not announced; the cores re-read the store later",
            event.kind,
            extra=fields | {"cause": str(exc)},
        )


def _map_fields(bank: BankSlot, client: ClientSlot) -> dict[str, object]:
    """``extra=`` for a slotmap's log lines: its ``map`` id, ``bank_slot``, ``client_slot``."""
    return {"map": slotmap_id(bank), "bank_slot": str(bank), "client_slot": str(client)}


def _slotmap_fields(slotmap: Slotmap) -> dict[str, object]:
    return _map_fields(slotmap.bank, slotmap.client)


def _note_slots(request: Request, bank: BankSlot, client: ClientSlot) -> None:
    """The slots a change names, for its audit entry."""
    _note_slots_of(request.scope, bank, client)


def _note_slots_of(scope: Scope, bank: BankSlot, client: ClientSlot) -> None:
    audit.note(
        scope,
        bank_id=bank.bank_id,
        bank_slot=bank.slot_nr,
        client_id=client.client_id,
        client_slot=client.slot_nr,
    )


# --- banks and clients ---------------------------------------------------------------------


@router.get("/banks", response_model_exclude_none=True, summary="Connected bankds")
async def list_banks(store: StoreDep) -> BankList:
    return BankList(banks=[Bank.of(record) for record in await store.list_banks()])


@router.get(
    "/banks/{bank_id}",
    response_model_exclude_none=True,
    responses=problem_responses(400, 404),
    summary="One connected bankd",
)
async def get_bank(bank_id: BankId, store: StoreDep) -> Bank:
    record = await store.get_bank(bank_id)
    if record is None:
        raise ApiError(404, f"bank {bank_id} is not connected")
    return Bank.of(record)


@router.get("/clients", response_model_exclude_none=True, summary="Connected clients")
async def list_clients(store: StoreDep) -> ClientList:
    return ClientList(clients=[Client.of(record) for record in await store.list_clients()])


@router.get(
    "/clients/{client_id}",
    response_model_exclude_none=True,
    responses=problem_responses(400, 404),
    summary="The first connected client with this client id",
)
async def get_client(client_id: ClientId, store: StoreDep) -> Client:
    for record in await store.list_clients():
        if record.client.client_id == client_id:
            return Client.of(record)
    raise ApiError(404, f"no client with id {client_id} is connected")


# --- slotmaps ------------------------------------------------------------------------------


def _created(description: str) -> dict[str, Any]:
    """The OpenAPI entry of a 201 answer naming the new slotmap in ``Location``."""
    return {
        "description": description,
        "headers": {"Location": {"description": "The new slotmap", "schema": {"type": "string"}}},
    }


@router.get("/slotmaps", response_model_exclude_none=True, summary="All slotmaps")
async def list_slotmaps(store: StoreDep) -> SlotmapList:
    slotmaps = await store.list_slotmaps(visible_only=True)
    return SlotmapList(slotmaps=[SlotmapOut.of(slotmap) for slotmap in slotmaps])


@router.post(
    "/slotmaps",
    status_code=201,
    response_model_exclude_none=True,
    dependencies=[Depends(_require_json), Depends(_require_backends)],
    responses={
        201: _created("Created; the map is pushed to its bankd once that is connected."),
        **problem_responses(400, 409, 415, 503),
    },
    summary="Create a slotmap",
)
async def create_slotmap(body: SlotmapCreate, request: Request, response: Response) -> SlotmapOut:
    """(Answered by ``QuickCreate`` unless the request is refused or unusual.)"""
    bank, client = body.bank.to_model(), body.client.to_model()
    store, bus = _backends(request)
    return SlotmapOut.of(await _add_slotmap(request, response, store, bus, bank, client))


async def _add_slotmap(
    request: Request,
    response: Response,
    store: Store,
    bus: Bus,
    bank: BankSlot,
    client: ClientSlot,
    iccid: str | None = None,
) -> Slotmap:
    """Map ``bank`` to ``client`` (for the card ``iccid``): store, log, announce (409: a
    slot in use)."""
    slotmap = await _map(request.scope, store, bus, bank, client, iccid)
    response.headers["Location"] = _location(slotmap)
    return slotmap


async def _map(
    scope: Scope,
    store: Store,
    bus: Bus,
    bank: BankSlot,
    client: ClientSlot,
    iccid: str | None = None,
) -> Slotmap:
    """``_add_slotmap`` of the request ``scope``, without its answer's ``Location``."""
    _note_slots_of(scope, bank, client)
    try:
        return await _make_slotmap(store, bus, bank, client, iccid)
    except SlotInUse as exc:
        existing = SlotmapOut.of(exc.existing).model_dump(exclude_none=True)
        raise ApiError(409, str(exc), slotmap=existing) from exc


async def _make_slotmap(
    store: Store, bus: Bus, bank: BankSlot, client: ClientSlot, iccid: str | None
) -> Slotmap:
    """Store a new map, log and announce it (``SlotInUse``: a slot is in use)."""
    slotmap = await store.create_slotmap(bank, client, iccid)
    maplog.info("slotmap added", extra=_slotmap_fields(slotmap))
    await _announce(bus, SlotmapEvent.of(slotmap, slotmap.state))
    return slotmap


def _location(slotmap: Slotmap) -> str:
    return f"{PREFIX}/slotmaps/{slotmap.id}"


_DECLINED = "remsim.quick_create.declined"
"""Set in the scope of a request that ``QuickCreate`` hands to the FastAPI route."""


class QuickCreate(BaseRoute):
    """``POST /slotmaps`` (the back-ends' most frequent request: one per map) without
    FastAPI's request machinery (dependency resolution, its body parsing and response
    serialization took most of the API process's CPU per map), ahead of the FastAPI route.

    It answers the requests FastAPI would answer 201 or 409 in exactly the same way: a JSON
    body that ``SlotmapCreate`` validates as FastAPI would (``json.loads`` then Python-mode
    validation), sent as JSON. Every other request (a bad body, a body not declared as JSON)
    is handed to the FastAPI route, as if it had come first, for its usual answer; so is one
    while the store or the bus is away (503). The middlewares (``Guard``: tokens, audit)
    are in front of both."""

    def __init__(self, path: str) -> None:
        self.path = path
        self.path_regex, _, _ = compile_path(path)  # as the FastAPI route matches it

    def matches(self, scope: Scope) -> tuple[Match, Scope]:
        if scope["type"] != "http" or scope["method"] != "POST" or scope.get(_DECLINED):
            return Match.NONE, {}  # left to the FastAPI route (405 with every method, HEAD)
        if not self.path_regex.match(get_route_path(scope)):
            return Match.NONE, {}
        return Match.FULL, {}

    def url_path_for(self, name: str, /, **path_params: object) -> Any:
        raise NoMatchFound(name, path_params)  # it has no name: the FastAPI route has

    async def handle(self, scope: Scope, receive: Receive, send: Send) -> None:
        body = await _body(receive)
        if body is None:
            return  # the client left before its request was whole: nobody to answer
        slots = _create_body(scope, body)
        app = scope["app"]
        store, bus = app.state.store, app.state.bus
        if slots is None or not await _ready(store, bus):
            scope[_DECLINED] = True  # routed again: to the FastAPI route this time
            await scope["router"](scope, replay(body, receive), send)
            return
        slotmap = await _map(scope, store, bus, *slots)
        content = SlotmapOut.of(slotmap).model_dump_json(exclude_none=True).encode()
        response = Response(content, status_code=201, media_type="application/json")
        response.headers["Location"] = _location(slotmap)
        await response(scope, receive, send)


async def _body(receive: Receive) -> bytes | None:
    """The whole request body; None if the client disconnected first."""
    chunks = []
    while True:
        message = await receive()
        if message["type"] != "http.request":
            return None
        chunks.append(message.get("body", b""))
        if not message.get("more_body", False):
            return b"".join(chunks)


def _create_body(scope: Scope, body: bytes) -> tuple[BankSlot, ClientSlot] | None:
    """The slots of a ``POST /slotmaps`` body as FastAPI would accept it, or None."""
    content_type = next((v for k, v in scope["headers"] if k == b"content-type"), None)
    if content_type is None or not is_json(content_type.decode("latin-1")):
        return None
    try:
        parsed = SlotmapCreate.model_validate(json.loads(body))
    except (ValueError, ValidationError):  # JSONDecodeError and UnicodeDecodeError too
        return None
    return parsed.bank.to_model(), parsed.client.to_model()


async def _ready(store: Store, bus: Bus) -> bool:
    try:
        await require_ready(store, bus)
    except BackendUnavailable:
        return False
    return True


@own_router.post(
    "/slotmaps",
    status_code=201,
    response_model_exclude_none=True,
    dependencies=[Depends(_require_json), Depends(_require_backends)],
    responses={
        201: _created(
            "Created at the card's bank slot now; when the card inventory finds the card in "
            "another bank slot, the map moves there."
        ),
        **problem_responses(400, 404, 409, 415, 503),
    },
    summary="Create a slotmap by card (ICCID) or by bank slot",
)
async def create_slotmap_by_card(
    body: SlotmapByCardCreate, request: Request, response: Response
) -> SlotmapByCardOut:
    """Like ``POST /api/backend/v1/slotmaps``, but ``card`` may name the card instead of
    its bank slot: the inventory's slot of that ICCID now (404 if no bankd reported it)."""
    store, bus = _backends(request)
    client = body.client.to_model()
    if body.card is None:
        assert body.bank is not None  # SlotmapByCardCreate names one of them
        slotmap = await _add_slotmap(request, response, store, bus, body.bank.to_model(), client)
        await pool_api.lease_at_creation(store, slotmap, body.expiresAt, body.duration)
        return SlotmapByCardOut.of_card(slotmap, None)
    iccid = body.card.iccid.upper()
    card = await store.card(iccid)
    if card is None:
        audit.note(request.scope, client_id=client.client_id, client_slot=client.slot_nr)
        raise ApiError(404, f"no card with ICCID {iccid} is known")
    slotmap = await _add_slotmap(request, response, store, bus, card.bank_slot, client, iccid)
    await pool_api.lease_at_creation(store, slotmap, body.expiresAt, body.duration)
    return SlotmapByCardOut.of_card(slotmap, iccid)


@own_router.post(
    "/slotmaps:batch",
    response_model_exclude_none=True,
    dependencies=[Depends(_require_json), Depends(_require_backends)],
    responses={
        200: {"description": "One outcome per map, in the request's order."},
        **problem_responses(400, 415, 503),
    },
    summary="Create up to 1,000 slotmaps",
)
async def create_slotmaps(body: SlotmapBatchCreate, request: Request) -> SlotmapBatchOut:
    """Each map as ``POST /api/v1/slotmaps`` would make it, in the request's order (of two
    maps of the batch that use one slot, the first is made): its outcome says 201 (made,
    announced), 404 (no card with that ICCID) or 409 (a slot in use). A back-end mapping a
    whole fleet sends one request per thousand maps; the maps' store writes share round
    trips to Redis. One audit entry records the request."""
    store, bus = _backends(request)
    inventory = (
        {card.iccid: card for card in await store.cards() if card.iccid is not None}
        if any(item.card is not None for item in body.slotmaps)
        else {}
    )

    async def one(item: SlotmapByCardCreate) -> SlotmapBatchItem:
        client, iccid = item.client.to_model(), None
        if item.card is not None:
            iccid = item.card.iccid.upper()
            if (card := inventory.get(iccid)) is None:
                return SlotmapBatchItem(status=404, detail=f"no card with ICCID {iccid} is known")
            bank = card.bank_slot
        else:
            assert item.bank is not None  # SlotmapByCardCreate names one of them
            bank = item.bank.to_model()
        try:
            slotmap = await _make_slotmap(store, bus, bank, client, iccid)
        except SlotInUse as exc:
            return SlotmapBatchItem(
                status=409, detail=str(exc), existing=SlotmapOut.of(exc.existing)
            )
        await pool_api.lease_at_creation(store, slotmap, item.expiresAt, item.duration)
        return SlotmapBatchItem(status=201, slotmap=SlotmapByCardOut.of_card(slotmap, iccid))

    # Started in order, so each store takes the creations in the request's order.
    results = await asyncio.gather(*(one(item) for item in body.slotmaps))
    made = sum(result.status == 201 for result in results)
    audit.note(request.scope, detail=f"{made} of {len(results)} slotmaps created")
    return SlotmapBatchOut(results=list(results))


@router.get(
    "/slotmaps/{slotmap_id}",
    response_model_exclude_none=True,
    responses=problem_responses(400, 404),
    summary="One slotmap",
)
async def get_slotmap(slotmap_id: SlotmapId, store: StoreDep) -> SlotmapOut:
    slotmap = await store.get_slotmap(slotmap_id)
    if slotmap is None:
        raise ApiError(404, f"no slotmap with id {slotmap_id}")
    return SlotmapOut.of(slotmap)


@router.delete(
    "/slotmaps/{slotmap_id}",
    response_class=Response,
    dependencies=[Depends(_require_backends)],
    responses={
        200: {"description": "Deleted (the bankd and client are told afterwards)."},
        **problem_responses(400, 404, 503),
    },
    summary="Delete a slotmap",
)
async def delete_slotmap(slotmap_id: SlotmapId, request: Request) -> Response:
    store, bus = _backends(request)
    audit.note(request.scope, bank_id=slotmap_id >> 16, bank_slot=slotmap_id & 0xFFFF)
    slotmap = await store.request_removal(slotmap_id)
    if slotmap is None:
        raise ApiError(404, f"no slotmap with id {slotmap_id}")
    _note_slots(request, slotmap.bank, slotmap.client)
    maplog.info("slotmap deleted (was %s)", slotmap.state, extra=_slotmap_fields(slotmap))
    await _announce(bus, SlotmapEvent.of(slotmap))
    return Response(status_code=200)


@router.post(
    "/global-reset",
    response_class=Response,
    dependencies=[Depends(_require_backends)],
    responses={200: {"description": "Every slotmap is being deleted."}, **problem_responses(503)},
    summary="Delete all slotmaps",
)
async def global_reset(request: Request) -> Response:
    store, bus = _backends(request)
    visible = await store.list_slotmaps(visible_only=True)
    # All at once: with Redis, the removals share round trips (remsim_control.redis_store).
    outcomes = await asyncio.gather(*(store.request_removal(m.id) for m in visible))
    removed = 0
    for slotmap, outcome in zip(visible, outcomes, strict=True):
        if outcome is not None:
            maplog.info("slotmap deleted by global reset", extra=_slotmap_fields(slotmap))
            removed += 1
    audit.note(request.scope, detail=f"{removed} slotmaps deleted")
    await _announce(bus, ResetEvent(global_reset=True))
    return Response(status_code=200)


@router.get(
    "/restart-counter",
    response_class=Response,
    responses={200: {"description": "Not implemented (as in the original): empty body."}},
    summary="Reserved",
)
async def restart_counter() -> Response:
    return Response(status_code=200)


# --- health and metrics ---------------------------------------------------------------------


def health_routes(
    store: Store, bus: Bus, registry: CollectorRegistry, *, ready_needs_bus: bool = True
) -> list[Route]:
    """``/healthz`` (the process runs), ``/readyz`` (the store and, unless not
    ``ready_needs_bus``, the bus answer) and ``/metrics`` (``registry``, with the slotmaps
    counted in the store first), for probes and scrapers rather than API clients."""

    async def ready() -> dict[str, bool]:
        checks = await backends_ready(store, bus)
        if not ready_needs_bus:
            del checks["bus"]
        return checks

    async def count_slotmaps() -> None:
        await metrics.count_slotmaps(store)

    endpoint = HealthEndpoint(registry, ready, before_scrape=count_slotmaps)
    # methods: a 405 is answered as a problem, with Allow, like the API's
    return [Route(path, endpoint, methods=["GET"]) for path in HEALTH_PATHS]


# --- the app -------------------------------------------------------------------------------


BATCH_BODY_SIZE = 256 * 1024
"""Bytes of a ``POST /api/v1/slotmaps:batch`` body (1,000 maps take about 70 KiB); every
other request has ``remsim_api.limits.MAX_BODY_SIZE``."""


class BatchBodyLimit:
    """``BodyLimit``, with ``BATCH_BODY_SIZE`` for the batch of slotmaps."""

    def __init__(self, app: ASGIApp) -> None:
        self.default = BodyLimit(app)
        self.batch = BodyLimit(app, BATCH_BODY_SIZE)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        batch = scope["type"] == "http" and scope["path"].rstrip("/") == paths.OWN_SLOTMAPS_BATCH
        await (self.batch if batch else self.default)(scope, receive, send)


class NormalizePath:
    """Tolerate trailing and doubled slashes (``/banks/``, ``//banks``) like the original,
    without a redirect."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            path: str = scope["path"]
            normalized = "/" + "/".join(part for part in path.split("/") if part)
            if normalized != path:
                scope = dict(scope, path=normalized, raw_path=normalized.encode())
        await self.app(scope, receive, send)


def _package_version() -> str:
    try:
        return version("remsim-api")
    except PackageNotFoundError:
        return "0"


def create_app(
    store: Store,
    bus: Bus,
    *,
    ready_needs_bus: bool = True,
    registry: CollectorRegistry | None = None,
    security: ApiSecurity = ApiSecurity.OPEN,
) -> FastAPI:
    """The REST API over ``store`` and ``bus``; the caller owns (and closes) both.

    ``/readyz`` checks the store and the bus: the API cannot change anything without both.
    A server core embedding the API passes ``ready_needs_bus=False``: it serves its bankds
    and clients while NATS is away, so it stays in its load balancer's rotation.
    ``registry``: what ``/metrics`` shows (default: a ``remsim-api`` process's,
    ``remsim_api.metrics.exposition()``). ``security``: tokens, origins and Host names
    (``remsim_api.security``; ``ApiSecurity.from_settings``); the default has no tokens
    and answers any Host, but refuses cross-origin browser requests and non-JSON changes."""
    app = FastAPIOffline(
        static_url=paths.DOCS_STATIC,
        swagger_ui_parameters={"validatorUrl": None},  # Swagger UI's default is an external host
        title="remsim RSRES API",
        version=_package_version(),
        description="The osmo-remsim server's REST API (RSRES), compatible with the "
        "original's apitool and back-ends; see docs/rsres-compat.md for the differences.",
        redirect_slashes=False,
    )
    app.state.store = store
    app.state.bus = bus
    app.state.security = security
    health = health_routes(
        store, bus, registry or metrics.exposition(), ready_needs_bus=ready_needs_bus
    )
    problems.install(
        app,
        [
            (route.path_regex, route.methods or set())
            for route in [
                *router.routes,
                *own_router.routes,
                *audit.router.routes,
                *cards.router.routes,
                *pool_api.router.routes,
                *ui.router.routes,
                *health,
            ]
            if isinstance(route, Route)
        ],
    )
    app.include_router(router)
    app.router.routes.insert(0, QuickCreate(f"{PREFIX}/slotmaps"))
    app.include_router(own_router)
    app.include_router(audit.router)
    app.include_router(cards.router)
    app.include_router(pool_api.router)  # SIM pools, groups, rules, leases
    ui.install(app)  # the dashboard, /ui
    app.router.routes.extend(health)  # plain routes: not in the OpenAPI document
    # outermost last: paths normalized, then CORS preflights answered, then the guard
    app.add_middleware(Guard, security=security, store=store)
    if security.origins:
        app.add_middleware(
            CORSMiddleware,
            allow_origins=sorted(security.origins),
            allow_methods=["GET", "POST", "DELETE"],
            allow_headers=["Authorization", "Content-Type"],
        )
    app.add_middleware(NormalizePath)
    app.add_middleware(BatchBodyLimit)  # outermost: a body too large is refused first

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            app.openapi_schema = _openapi(app)
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]
    return app


def _openapi(app: FastAPI) -> dict[str, Any]:
    """FastAPI's document, with what this API really answers: problems (400, not 422) as
    ``application/problem+json``, and the refusals of ``remsim_api.security.Guard``."""
    schema = get_openapi(
        title=app.title, version=app.version, description=app.description, routes=app.routes
    )
    security: ApiSecurity = app.state.security
    if security.tokens is not None:
        schema.setdefault("components", {})["securitySchemes"] = {
            "bearer": {"type": "http", "scheme": "bearer", "description": "remsim-pki token"}
        }
        schema["security"] = [{"bearer": []}]
    problem_ref = {"$ref": "#/components/schemas/Problem"}
    for method, operation in (
        (method, op) for path in schema["paths"].values() for method, op in path.items()
    ):
        responses = operation.get("responses", {})
        responses.pop("422", None)
        if operation.get("parameters") and "400" not in responses:
            responses["400"] = {"description": "The request is malformed."}
        responses.update(_refusals(security, changes=method.upper() not in ("GET", "HEAD")))
        for status, response in responses.items():
            if int(status) >= 400:
                response["content"] = {problems.PROBLEM_JSON: {"schema": problem_ref}}
            elif (
                status == "200"
                and "content" in response
                and not response["content"].get("application/json", {}).get("schema")
            ):
                del response["content"]
    for name in ("HTTPValidationError", "ValidationError"):
        schema.get("components", {}).get("schemas", {}).pop(name, None)
    return schema


def _refusals(security: ApiSecurity, *, changes: bool) -> dict[str, dict[str, str]]:
    """What ``Guard`` may answer to an operation (``changes``: one that is not a GET)."""
    role = ", or the token's role is too low" if security.tokens is not None else ""
    refusals = {"403": {"description": f"A browser request from another origin{role}."}}
    if security.tokens is not None:
        refusals["401"] = {"description": "No bearer token, or not a valid one."}
    if security.hosts is not None:
        refusals["421"] = {"description": "The Host is not one of this API's (--api-hosts)."}
    if changes:
        refusals["415"] = {"description": "The body is not declared as JSON."}
    return refusals
