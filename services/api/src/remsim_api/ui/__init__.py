"""The operator's dashboard at ``/ui``: banks, their slots and cards, clients and slotmaps,
live, with the actions a token's role allows (docs/operations.md, "The dashboard").

Server-rendered: Jinja2 templates (``templates/``) and a vendored htmx (``static/``, served
under ``/ui/static``; nothing comes from another host). The page is open to all, like
``/docs``; what it shows needs a token where tokens are on:

- **The token in the browser**: the page's login form keeps it in the ``remsim_token``
  cookie (``SameSite=Strict``, path ``/``), which ``remsim_api.security.Guard`` accepts as it
  accepts ``Authorization: Bearer``. So every request of the page (its fragments, the event
  stream, which an ``EventSource`` cannot give a header, and the actions) carries it, and
  the Guard's CSRF checks apply unchanged: a page of another site neither sends the cookie
  nor passes the Origin and Content-Type checks. The role decides what is drawn (a viewer
  gets no action buttons); the API decides what is done.
- **Actions** are the REST API's own requests, sent by ``static/ui.js`` with ``fetch``
  (``POST /slotmaps`` as JSON, ``DELETE /slotmaps/{id}``, ``POST /global-reset``).
- **Live updates**: ``/ui/events`` is a server-sent event stream that says ``change`` when
  the store's picture changed. It wakes on every ``Bus`` event (slotmaps created, changing
  state, removed; resets) and looks at least every ``STORE_POLL`` seconds besides (bankds and
  clients coming and going, cards, which the bus does not announce), so any replica of the
  API sees any core's change. The page then fetches ``/ui/live`` (htmx) and swaps it in.
- **Offline**: every HTML answer of the app (``/ui``, ``/docs``, ``/redoc``) carries
  ``OWN_ORIGIN_ONLY``, a Content-Security-Policy under which the browser fetches nothing
  from another host.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections import Counter
from collections.abc import AsyncIterator, Iterable
from dataclasses import dataclass
from pathlib import Path

import jinja2
from fastapi import APIRouter, FastAPI, Request
from fastapi.responses import HTMLResponse, StreamingResponse
from starlette.datastructures import MutableHeaders
from starlette.staticfiles import StaticFiles
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from remsim_api import paths
from remsim_api.security import TOKEN, ApiSecurity, Role, Token
from remsim_control import (
    BackendUnavailable,
    BankRecord,
    BankSlot,
    Bus,
    CardRecord,
    ClientRecord,
    ClientSlot,
    Slotmap,
    Store,
)

__all__ = [
    "OWN_ORIGIN_ONLY",
    "STORE_POLL",
    "STREAM_MAX",
    "Dashboard",
    "OwnOriginOnly",
    "install",
    "snapshot",
]

STORE_POLL = 1.0
"""Seconds between two looks at the store by an event stream when the bus says nothing."""
STREAM_MAX = 300.0
"""Seconds an event stream lasts; the browser reconnects (``RECONNECT_MS``) and the page is
refreshed once then, so a restart of the API never waits on an old stream for long."""
RECONNECT_MS = 1000
"""The event stream's ``retry``: milliseconds before the browser reconnects."""
OVERVIEW_UNFOLDED_MAX = 32
"""Banks with more slots show folded in the overview (counts by state; the browser lays
out a folded bank's slots only once it is opened: 1,000 cards stay quick)."""
KEEPALIVE = 15.0
"""Seconds between comments on a quiet event stream (proxies close silent connections)."""

_STATE_ORDER = ("ACTIVE", "UNACKNOWLEDGED", "NEW", "free")
"""The overview's summary order (the visible map states, then slots without a map)."""
_HERE = Path(__file__).parent
templates = jinja2.Environment(
    loader=jinja2.FileSystemLoader(_HERE / "templates"),
    autoescape=True,  # every name, address and software version is the peer's text
    undefined=jinja2.StrictUndefined,
)
router = APIRouter(include_in_schema=False)


@dataclass(frozen=True)
class SlotView:
    """One bank slot: its card (as the inventory knows it), its map and the mapped client."""

    bank: BankSlot
    card: CardRecord | None
    slotmap: Slotmap | None
    client: ClientRecord | None


@dataclass(frozen=True)
class BankView:
    bank_id: int
    record: BankRecord | None
    """None: a bank named by maps or the inventory whose bankd is not connected."""
    slots: list[SlotView]

    @property
    def open(self) -> bool:
        """Shown unfolded in the overview (a large bank is summed up until unfolded)."""
        return len(self.slots) <= OVERVIEW_UNFOLDED_MAX

    @property
    def counts(self) -> dict[str, int]:
        """Slots by map state (``free``: no map), for the overview's summary line."""
        counts = Counter(s.slotmap.state.value if s.slotmap else "free" for s in self.slots)
        return {state: counts[state] for state in _STATE_ORDER if counts[state]}


@dataclass(frozen=True)
class ClientView:
    record: ClientRecord
    slotmap: Slotmap | None


@dataclass(frozen=True)
class Dashboard:
    """What the page shows, read from the store at once."""

    banks: list[BankView]
    clients: list[ClientView]
    slotmaps: list[Slotmap]
    cards: list[CardRecord]

    @property
    def free_slots(self) -> list[SlotView]:
        """Bank slots of connected banks without a map: what a new map can name."""
        return [s for bank in self.banks if bank.record for s in bank.slots if s.slotmap is None]

    @property
    def free_clients(self) -> list[ClientSlot]:
        """Connected client slots without a map: what a new map can name."""
        return [view.record.client for view in self.clients if view.slotmap is None]


async def _read(
    store: Store,
) -> tuple[list[BankRecord], list[ClientRecord], list[Slotmap], list[CardRecord]]:
    return (
        await store.list_banks(),
        await store.list_clients(),
        await store.list_slotmaps(visible_only=True),
        await store.cards(),
    )


def snapshot(
    banks: Iterable[BankRecord],
    clients: Iterable[ClientRecord],
    slotmaps: Iterable[Slotmap],
    cards: Iterable[CardRecord],
) -> Dashboard:
    """The dashboard of these records: every slot of every connected bank, and the slots
    that maps or the inventory name in banks not connected."""
    bank_records = {record.bank_id: record for record in banks}
    client_records = {record.client: record for record in clients}
    maps = sorted(slotmaps, key=lambda slotmap: slotmap.id)
    by_bank_slot = {slotmap.bank: slotmap for slotmap in maps}
    by_client = {slotmap.client: slotmap for slotmap in maps}
    card_list = list(cards)
    card_at = {card.bank_slot: card for card in card_list}
    slots = {
        BankSlot(bank_id=record.bank_id, slot_nr=nr)
        for record in bank_records.values()
        for nr in range(record.number_of_slots)
    }
    slots |= by_bank_slot.keys() | card_at.keys()
    bank_views = []
    for bank_id in sorted({slot.bank_id for slot in slots}):
        views = []
        for slot in sorted((s for s in slots if s.bank_id == bank_id), key=lambda s: s.slot_nr):
            slotmap = by_bank_slot.get(slot)
            client = client_records.get(slotmap.client) if slotmap is not None else None
            views.append(SlotView(slot, card_at.get(slot), slotmap, client))
        bank_views.append(BankView(bank_id, bank_records.get(bank_id), views))
    client_views = [
        ClientView(record, by_client.get(record.client))
        for record in sorted(
            client_records.values(), key=lambda r: (r.client.client_id, r.client.slot_nr)
        )
    ]
    return Dashboard(bank_views, client_views, maps, card_list)


def _digest(
    records: tuple[list[BankRecord], list[ClientRecord], list[Slotmap], list[CardRecord]],
) -> int:
    """A fingerprint of what the page shows (the records are frozen, hashable models; a
    card's ``last_seen`` aside: it moves on every look of its bankd and is not shown)."""
    banks, clients, slotmaps, cards = records
    return hash(
        (
            frozenset(banks),
            frozenset(clients),
            frozenset(slotmaps),
            frozenset(card.model_copy(update={"last_seen": 0.0}) for card in cards),
        )
    )


def _role(request: Request) -> Role | None:
    """What the request may do: every role without tokens (as the original); else the
    token's role, None without a valid token."""
    security: ApiSecurity = request.app.state.security
    if security.tokens is None:
        return Role.ADMIN
    token: Token | None = request.scope.get(TOKEN)
    return token.role if token is not None else None


def _context(request: Request, role: Role) -> dict[str, object]:
    security: ApiSecurity = request.app.state.security
    return {
        "role": role,
        "tokens": security.tokens is not None,
        "can_map": role >= Role.OPERATOR,
        "can_reset": role >= Role.ADMIN,
        "api": paths.PREFIX,
        "static": paths.UI_STATIC,
    }


@router.get(paths.UI, response_class=HTMLResponse)
async def page(request: Request) -> HTMLResponse:
    """The whole page; without a valid token (where tokens are on): the login form."""
    role = _role(request)
    if role is None:
        presented = paths.TOKEN_COOKIE in request.cookies
        context = {"static": paths.UI_STATIC, "invalid": presented}
        return await _render("login.html", context, status_code=401 if presented else 200)
    dashboard = snapshot(*await _read(request.app.state.store))
    return await _render("page.html", _context(request, role) | {"d": dashboard})


@router.get(f"{paths.UI}/live", response_class=HTMLResponse)
async def live(request: Request) -> HTMLResponse:
    """The page's live part (overview and tables), swapped in on every ``change``."""
    role = _role(request) or Role.VIEWER  # the Guard let a viewer at least through
    dashboard = snapshot(*await _read(request.app.state.store))
    return await _render("live.html", _context(request, role) | {"d": dashboard})


async def _render(name: str, context: dict[str, object], status_code: int = 200) -> HTMLResponse:
    """The template, rendered in a worker thread: with 1,000 cards that takes a good part of
    a second, which the event loop (a server core's RSPRO links) does not wait out."""
    html = await asyncio.to_thread(templates.get_template(name).render, context)
    return HTMLResponse(html, status_code=status_code)


@router.get(f"{paths.UI}/events")
async def events(request: Request) -> StreamingResponse:
    """``event: change`` whenever the page's picture changed (once at the start, too: what
    happened while the browser was not listening)."""
    stream = _changes(request.app.state.store, request.app.state.bus)
    return StreamingResponse(
        stream,
        media_type="text/event-stream",
        headers={"Cache-Control": "no-store", "X-Accel-Buffering": "no"},
    )


async def _changes(store: Store, bus: Bus) -> AsyncIterator[str]:
    yield f"retry: {RECONNECT_MS}\n\n"
    woken = asyncio.Event()
    async with contextlib.AsyncExitStack() as stack:
        listener = asyncio.create_task(_listen(bus, woken))
        stack.callback(listener.cancel)
        last: int | None = None
        quiet = 0.0
        loop = asyncio.get_running_loop()
        end = loop.time() + STREAM_MAX
        while loop.time() < end:
            woken.clear()
            digest: int | None
            try:
                digest = _digest(await _read(store))
            except BackendUnavailable:
                digest = last  # say nothing until the store answers again
            if digest != last:
                last = digest
                quiet = 0.0
                yield "event: change\ndata: \n\n"
            elif quiet >= KEEPALIVE:
                quiet = 0.0
                yield ": keep-alive\n\n"
            started = loop.time()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(woken.wait(), STORE_POLL)
            quiet += loop.time() - started


async def _listen(bus: Bus, woken: asyncio.Event) -> None:
    """Set ``woken`` on every bus event; without a bus, the stream polls the store only."""
    with contextlib.suppress(BackendUnavailable):
        async with bus.subscribe() as announced:
            async for _ in announced:
                woken.set()


OWN_ORIGIN_ONLY = "; ".join(
    [
        "default-src 'self'",
        "script-src 'self' 'unsafe-inline' blob:",  # /docs's page starts Swagger UI inline
        "style-src 'self' 'unsafe-inline'",
        "img-src 'self' data: blob:",
        "font-src 'self' data:",
        "worker-src 'self' blob:",
        "connect-src 'self'",
        "frame-ancestors 'none'",
        "base-uri 'none'",
        "form-action 'self'",
    ]
)
"""The Content-Security-Policy of every HTML page (``/ui``, ``/docs``, ``/redoc``): nothing
is loaded from another host. (Redoc's sidebar names a logo on its vendor's CDN: the browser
does not fetch it, and Redoc hides the image.)"""


class OwnOriginOnly:
    """ASGI middleware: ``OWN_ORIGIN_ONLY`` on every ``text/html`` answer."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return

        async def send_with_policy(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = MutableHeaders(scope=message)
                if headers.get("content-type", "").startswith("text/html"):
                    headers["Content-Security-Policy"] = OWN_ORIGIN_ONLY
            await send(message)

        await self.app(scope, receive, send_with_policy)


def install(app: FastAPI) -> None:
    """Add the dashboard's routes and static files to ``app``, and ``OwnOriginOnly``."""
    app.include_router(router)
    app.mount(paths.UI_STATIC, StaticFiles(directory=_HERE / "static"), name="ui-static")
    app.add_middleware(OwnOriginOnly)
