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
  (``POST /slotmaps`` as JSON, by card ``POST /api/v1/slotmaps`` for a card with an
  ICCID, so that the map follows the card; ``DELETE /slotmaps/{id}``,
  ``POST /global-reset``).
- **The pools view** (``/ui/pools``, ``pools_page``): pools, groups, rules and leases, drawn
  whole on each load; ``static/pools.js`` sends an operator's changes to ``remsim_api.pools``
  and draws the page's tables again. Not live.
- **Live updates, row by row**: the page is a tree of nodes (``tree``: each bank, slot,
  client, map and option of the page is one, with the DOM id of the element drawn for it).
  One ``Feed`` per process keeps the latest tree: it looks at the store at once when the
  ``Bus`` announces something (slotmaps created, changing state, removed; resets), then not
  again for ``COALESCE`` seconds (the rest of a burst goes into the next look), and every
  ``STORE_POLL`` seconds besides (bankds, clients and cards, which the bus does not
  announce), so any replica of the API sees any core's change. Each look that changed
  something is a new version with its patch (``diff``: the nodes to insert, redraw or
  remove). ``/ui/events`` sends each version's patch, drawn for the stream's role
  (``event: patch``, ``id: <feed>.<version>``), to the page, which applies it (``ui.js``);
  a stream starts after the version the page was drawn at (``?since=``, or the
  ``Last-Event-ID`` of the browser's reconnect). The page is drawn whole only on load, and
  again (``event: refresh``, then ``/ui/live``) when the stream cannot continue from where
  the page is (another process or a restarted one, a version older than the history) or a
  patch would redraw more than ``PATCH_MAX`` nodes (a global reset, a bank of 1,000 slots
  connecting): then the whole part is the cheaper answer.
- **Offline**: every HTML answer of the app (``/ui``, ``/docs``, ``/redoc``) carries
  ``OWN_ORIGIN_ONLY``, a Content-Security-Policy under which the browser fetches nothing
  from another host.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime
import functools
import itertools
import logging
import secrets
import time
from collections import Counter, deque
from collections.abc import AsyncGenerator, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Literal

import jinja2
from fastapi import APIRouter, FastAPI, Header, Query, Request
from fastapi.responses import HTMLResponse, StreamingResponse
from starlette.datastructures import MutableHeaders
from starlette.staticfiles import StaticFiles
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from remsim_api import paths
from remsim_api.security import TOKEN, ApiSecurity, Role, Token
from remsim_api.ui import pools_page
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
    "COALESCE",
    "OWN_ORIGIN_ONLY",
    "PATCH_MAX",
    "STORE_POLL",
    "STREAM_MAX",
    "Dashboard",
    "Feed",
    "Node",
    "Op",
    "OwnOriginOnly",
    "diff",
    "install",
    "snapshot",
    "tree",
]

log = logging.getLogger("remsim.api.ui")

STORE_POLL = 1.0
"""Seconds between two looks of the feed at the store when the bus says nothing (bankds,
clients and cards coming and going are not announced on it)."""
COALESCE = 0.15
"""Seconds between two looks of the feed at the store: a bus event is looked at at once,
the ones after it within this window together (a burst of changes is one patch)."""
HISTORY = 256
"""Versions the feed keeps the patches of, for a stream that (re)starts behind."""
HISTORY_NODES = 20_000
"""Nodes the kept patches may name in all (older versions go first): bounds the memory."""
DRAWN_KEEP = 8
"""The latest versions whose drawn patches are kept for the next stream asking."""
PATCH_MAX = 1500
"""Nodes a patch may draw or remove; a larger change is sent as a refresh (the whole part)."""
FEED_IDLE = 30.0
"""Seconds the feed keeps looking after its last stream closed (a page being reloaded)."""
STREAM_MAX = 300.0
"""Seconds an event stream lasts; the browser reconnects (``RECONNECT_MS``) and the stream
goes on from the last version it sent (``Last-Event-ID``)."""
RENDER_INLINE_MAX = 50
"""Nodes a patch may have to be drawn on the event loop; larger ones in a worker thread."""
RECONNECT_MS = 1000
"""The event stream's ``retry``: milliseconds before the browser reconnects."""
OVERVIEW_UNFOLDED_MAX = 32
"""Banks with more slots show folded in the overview (counts by state; the browser lays
out a folded bank's slots only once it is opened: 1,000 cards stay quick)."""
KEEPALIVE = 15.0
"""Seconds between comments on a quiet event stream (proxies close silent connections)."""

_STATE_ORDER = ("ACTIVE", "UNACKNOWLEDGED", "NEW", "free")
"""The overview's summary order (the visible map states, then slots without a map)."""
_FEED = "ui_feed"
"""The app's ``Feed`` (``app.state``), made by the first request that needs it."""
_HERE = Path(__file__).parent
templates = jinja2.Environment(
    loader=jinja2.FileSystemLoader(_HERE / "templates"),
    autoescape=True,  # every name, address and software version is the peer's text
    undefined=jinja2.StrictUndefined,
)
templates.globals["utc"] = lambda epoch: datetime.datetime.fromtimestamp(epoch, datetime.UTC)
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

    @functools.cached_property
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

    @functools.cached_property
    def free_slots(self) -> list[SlotView]:
        """Bank slots of connected banks without a map: what a new map can name."""
        return [s for bank in self.banks if bank.record for s in bank.slots if s.slotmap is None]

    @functools.cached_property  # drawn once per row: computed once
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


def _card_key(card: CardRecord | None) -> tuple[object, ...] | None:
    """What the page shows of a card (``last_seen`` aside: it moves on every look of its
    bankd and is not shown)."""
    if card is None:
        return None
    return (card.state, card.atr, card.iccid, card.imsi, card.tpdu_count, card.last_activity)


@dataclass(frozen=True, slots=True)
class Node:
    """One element of the page: drawn by macro ``kind`` of ``parts.html`` from ``draw``, with
    the DOM id ``id``; drawn again when ``same`` changes."""

    id: str
    kind: str
    same: object
    draw: tuple[object, ...]
    parent: str | None = None
    """The node it is drawn inside (None: the page's frame, always there)."""
    list: str | None = None
    """The DOM id of the list it is an item of (None: a fixed part of its parent)."""
    role: Role = Role.VIEWER
    """The least role that is shown it."""


@dataclass(frozen=True, slots=True)
class Op:
    """One step of a patch: ``insert`` ``node`` into its list after the element ``after``
    (None: first), ``replace`` the element of ``node``, or ``remove`` the element ``node.id``."""

    op: Literal["insert", "replace", "remove"]
    node: Node
    after: str | None = None


def tree(d: Dashboard) -> dict[str, Node]:
    """The page's nodes by id, parents before their children, each list in page order (the
    ids, lists and order of ``live.html``)."""
    nodes: dict[str, Node] = {}

    def add(node: Node) -> None:
        nodes[node.id] = node

    free_clients = bool(d.free_clients)
    for b in d.banks:
        bank = f"bank-{b.bank_id}"
        add(Node(bank, "bank", b.bank_id, (b,), list="ov-banks"))
        add(Node(f"{bank}-sum", "bank_summary", (b.record, b.counts), (b,), parent=bank))
        for s in b.slots:
            card = (s.card.state, s.card.iccid) if s.card else None  # its label
            shown = (card, s.slotmap, s.client is None)
            add(Node(_slot_id("ovs", s.bank), "ov_slot", shown, (s,), bank, f"{bank}-slots"))
    if not d.banks:
        add(Node("ov-none", "ov_none", None, (), list="ov-banks"))
    for c in d.free_clients:
        add(Node(_client_id("fc", c), "free_client", None, (c,), list="free-clients"))
    for s in d.free_slots:
        option = _slot_id("mo", s.bank)
        card = (s.card.state, s.card.iccid) if s.card else None
        add(Node(option, "slot_option", card, (s,), list="map-slot", role=Role.OPERATOR))
    for c in d.free_clients:
        option = _client_id("mc", c)
        add(Node(option, "client_option", None, (c,), list="map-client", role=Role.OPERATOR))
    go = (bool(d.free_slots), free_clients)
    add(Node("map-go", "map_go", go, (d.free_slots, d.free_clients), role=Role.OPERATOR))
    for b in d.banks:
        connected = b.record is not None
        for s in b.slots:
            same = (_card_key(s.card), s.slotmap, connected, free_clients)
            draw = (s, connected, free_clients)
            add(Node(_slot_id("sr", s.bank), "slot_row", same, draw, list="slots-rows"))
    for view in d.clients:
        row = _client_id("cr", view.record.client)
        add(Node(row, "client_row", view, (view,), list="clients-rows"))
    if not d.clients:
        add(_none_row("clients-rows", "clients-none", 6, "No client is connected."))
    for m in d.slotmaps:
        add(Node(f"mr-{m.id}", "map_row", m, (m,), list="maps-rows"))
    if not d.slotmaps:
        add(_none_row("maps-rows", "maps-none", 7, "No slotmaps."))
    connected_banks = [b for b in d.banks if b.record is not None]
    for b in connected_banks:
        add(Node(f"br-{b.bank_id}", "bank_row", b.record, (b,), list="banks-rows"))
    if not connected_banks:
        add(_none_row("banks-rows", "banks-none", 6, "No bankd is connected."))
    return nodes


def _slot_id(prefix: str, slot: BankSlot) -> str:
    return f"{prefix}-{slot.bank_id}-{slot.slot_nr}"


def _client_id(prefix: str, client: ClientSlot) -> str:
    return f"{prefix}-{client.client_id}-{client.slot_nr}"


def _none_row(rows: str, node_id: str, columns: int, text: str) -> Node:
    """The row that says a table is empty."""
    return Node(node_id, "none_row", None, (node_id, columns, text), list=rows)


def diff(old: dict[str, Node], new: dict[str, Node]) -> list[Op]:
    """The patch from page ``old`` to page ``new``: a node that is new is inserted, one
    that changed is drawn again (either way with its children: those are not named
    again), one that is gone is removed (unless its parent is). Applied in order, each
    insert finds the element it goes after already there."""
    ops: list[Op] = []
    drawn: set[str] = set()
    last_in: dict[str, str] = {}  # the last node of each list so far, in page order
    for node in new.values():
        after = None
        if node.list is not None:
            after = last_in.get(node.list)
            last_in[node.list] = node.id
        if node.parent is not None and node.parent in drawn:
            drawn.add(node.id)
            continue
        was = old.get(node.id)
        if was is None:
            ops.append(Op("insert", node, after))
            drawn.add(node.id)
        elif was.same != node.same:
            ops.append(Op("replace", node))
            drawn.add(node.id)
    for node in old.values():
        parent_stays = node.parent is None or (node.parent in new and node.parent not in drawn)
        if node.id not in new and parent_stays:
            ops.append(Op("remove", node))
    return ops


@dataclass
class _Version:
    number: int
    ops: list[Op] | None
    """None: too large a change for a patch (``PATCH_MAX``): a refresh."""
    drawn: dict[Role, str] = field(default_factory=dict)
    """The patch's event data, per role of the streams that asked for it."""


class Feed:
    """The page's picture in this process, for every open event stream: one look at the
    store per change (at most one per ``COALESCE``, and every ``STORE_POLL``), whatever the
    number of streams; each look that found a change is a version with its patch."""

    def __init__(self, store: Store, bus: Bus) -> None:
        self.store = store
        self.bus = bus
        self.token = secrets.token_hex(4)
        """Tells this feed's versions from another process's (or a restart's)."""
        self.number = 0
        self.nodes: dict[str, Node] = {}
        self.history: deque[_Version] = deque()
        self._kept = 0  # nodes named by the patches in history
        self._looking = asyncio.Lock()
        self._new_version = asyncio.Condition()
        self._streams = 0
        self._task: asyncio.Task[None] | None = None
        self._idle_since = 0.0

    @property
    def version(self) -> str:
        return f"{self.token}.{self.number}"

    async def look(self) -> tuple[Dashboard, str]:
        """Read the store now: the page as it is and its version (a new version if it
        changed)."""
        async with self._looking:
            dashboard = snapshot(*await _read(self.store))
            nodes = tree(dashboard)
            if not self.nodes:  # the first look: no page was drawn from an older one
                self.number += 1
            else:
                ops = diff(self.nodes, nodes)
                if ops:
                    self.number += 1
                    large = len(ops) > PATCH_MAX
                    self.history.append(_Version(self.number, None if large else ops))
                    self._kept += len(self.history[-1].ops or ())
                    while self._kept > HISTORY_NODES or len(self.history) > HISTORY:
                        self._kept -= len(self.history.popleft().ops or ())
                    for old in itertools.islice(reversed(self.history), DRAWN_KEEP, None):
                        if not old.drawn:
                            break
                        old.drawn.clear()
                    async with self._new_version:
                        self._new_version.notify_all()
            self.nodes = nodes
            return dashboard, self.version

    def after(self, version: str | None) -> list[_Version] | None:
        """The versions after ``version`` (a page's or a stream's last); None if they are
        not all known here: the page must be drawn again."""
        token, _, number = (version or "").partition(".")
        if token != self.token or not number.isdigit() or int(number) > self.number:
            return None
        since = int(number)
        missed = [v for v in self.history if v.number > since]
        if since < self.number and (not missed or missed[0].number != since + 1):
            return None
        return missed

    async def wait(self, version: str, timeout: float) -> None:
        """Until there is a version after ``version``, or ``timeout`` seconds."""
        async with self._new_version:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(
                    self._new_version.wait_for(lambda: self.version != version), timeout
                )

    async def drawn(self, version: _Version, role: Role) -> str:
        """The event data of ``version``'s patch for a page of ``role``."""
        data = version.drawn.get(role)
        if data is None:
            assert version.ops is not None
            ops = [op for op in version.ops if op.node.role <= role]
            context = _flags(role)
            if len(ops) > RENDER_INLINE_MAX:
                data = await asyncio.to_thread(_draw_patch, ops, context)
            else:
                data = _draw_patch(ops, context)
            version.drawn[role] = data
        return data

    # --- the looking task: runs while streams are open (and FEED_IDLE after) ---------------

    def attach(self) -> None:
        self._streams += 1
        if self._task is None or self._task.done():
            self._task = asyncio.create_task(self._run(), name="remsim-ui-feed")

    def detach(self) -> None:
        self._streams -= 1
        if self._streams == 0:
            self._idle_since = asyncio.get_running_loop().time()

    async def _run(self) -> None:
        woken = asyncio.Event()
        listener = asyncio.create_task(_listen(self.bus, woken))
        loop = asyncio.get_running_loop()
        try:
            while self._streams or loop.time() - self._idle_since < FEED_IDLE:
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(woken.wait(), STORE_POLL)
                announced = woken.is_set()
                woken.clear()
                started = loop.time()
                try:
                    await self.look()
                except BackendUnavailable:
                    pass  # say nothing until the store answers again
                except Exception:  # a stream must not go silent for good: try at the next
                    log.exception("the dashboard's look at the store failed")
                if announced:  # the rest of a burst: into the next look, not one look each
                    await asyncio.sleep(max(0.0, COALESCE - (loop.time() - started)))
        finally:
            listener.cancel()


def _draw_patch(ops: list[Op], context: dict[str, object]) -> str:
    """A patch as HTML: one ``<template data-op=…>`` per step, holding the node's element."""
    parts = templates.get_template("parts.html").make_module(context)
    out = []
    for op in ops:
        node = op.node
        if op.op == "remove":
            out.append(f'<template data-op="remove" data-id="{node.id}"></template>')
            continue
        html = getattr(parts, node.kind)(*node.draw)
        where = ""
        if op.op == "insert":
            assert node.list is not None
            where = f' data-list="{node.list}" data-after="{op.after or ""}"'
        out.append(f'<template data-op="{op.op}"{where}>{str(html).strip()}</template>')
    return "".join(out)


def _feed(request: Request) -> Feed:
    feed: Feed | None = getattr(request.app.state, _FEED, None)
    if feed is None:
        feed = Feed(request.app.state.store, request.app.state.bus)
        setattr(request.app.state, _FEED, feed)
    return feed


def _role(request: Request) -> Role | None:
    """What the request may do: every role without tokens (as the original); else the
    token's role, None without a valid token."""
    security: ApiSecurity = request.app.state.security
    if security.tokens is None:
        return Role.ADMIN
    token: Token | None = request.scope.get(TOKEN)
    return token.role if token is not None else None


def _flags(role: Role) -> dict[str, object]:
    """What the parts of the page need to know of the viewer."""
    return {
        "can_map": role >= Role.OPERATOR,
        "can_reset": role >= Role.ADMIN,
        "today": datetime.datetime.now(datetime.UTC).date(),
    }


def _context(request: Request, role: Role) -> dict[str, object]:
    security: ApiSecurity = request.app.state.security
    return _flags(role) | {
        "role": role,
        "tokens": security.tokens is not None,
        "api": paths.PREFIX,
        "own_api": paths.OWN_PREFIX,
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
    dashboard, version = await _feed(request).look()
    context = _context(request, role) | {"d": dashboard, "version": version}
    return await _render("page.html", context)


@router.get(paths.UI_POOLS, response_class=HTMLResponse)
async def pools(request: Request) -> HTMLResponse:
    """The pools view (``pools_page``): pools, groups, rules and leases, drawn whole; without
    a valid token (where tokens are on): the login form, as ``page``."""
    role = _role(request)
    if role is None:
        presented = paths.TOKEN_COOKIE in request.cookies
        context = {"static": paths.UI_STATIC, "invalid": presented}
        return await _render("login.html", context, status_code=401 if presented else 200)
    view = await pools_page.read(request.app.state.store, time.time())
    context = _context(request, role) | {"v": view, "here": "pools"}
    return await _render("pools.html", context)


@router.get(f"{paths.UI}/live", response_class=HTMLResponse)
async def live(request: Request) -> HTMLResponse:
    """The page's live part (overview and tables), whole: on a refresh."""
    role = _role(request) or Role.VIEWER  # the Guard let a viewer at least through
    dashboard, version = await _feed(request).look()
    context = _context(request, role) | {"d": dashboard, "version": version}
    return await _render("live.html", context)


async def _render(name: str, context: dict[str, object], status_code: int = 200) -> HTMLResponse:
    """The template, rendered in a worker thread: with 1,000 cards that takes a good part of
    a second, which the event loop (a server core's RSPRO links) does not wait out."""
    html = await asyncio.to_thread(templates.get_template(name).render, context)
    return HTMLResponse(html, status_code=status_code)


@router.get(f"{paths.UI}/events")
async def events(
    request: Request,
    since: Annotated[str | None, Query(max_length=64)] = None,
    last_event_id: Annotated[str | None, Header(max_length=64)] = None,
) -> StreamingResponse:
    """The patches after version ``since`` (the page's), or after the browser's
    ``Last-Event-ID`` when it reconnects; ``refresh`` when they are not known here."""
    role = _role(request) or Role.VIEWER
    stream = _patches(_feed(request), last_event_id or since, role)
    return StreamingResponse(
        stream,
        media_type="text/event-stream",
        headers={"Cache-Control": "no-store", "X-Accel-Buffering": "no"},
    )


def _event(kind: str, data: str, event_id: str | None = None) -> str:
    """One server-sent event; every line of ``data`` its own ``data:`` field (the browser
    joins them again with newlines)."""
    head = f"id: {event_id}\n" if event_id is not None else ""
    lines = "".join(f"data: {line}\n" for line in data.splitlines() or [""])
    return f"{head}event: {kind}\n{lines}\n"


async def _patches(feed: Feed, since: str | None, role: Role) -> AsyncGenerator[str, None]:
    yield f"retry: {RECONNECT_MS}\n\n"
    feed.attach()
    try:
        loop = asyncio.get_running_loop()
        end = loop.time() + STREAM_MAX
        version = since or ""
        while loop.time() < end:
            missed = feed.after(version)
            if missed is None or any(v.ops is None for v in missed):
                yield _event("refresh", "")
                return
            for v in missed:
                version = f"{feed.token}.{v.number}"
                yield _event("patch", await feed.drawn(v, role), version)
            if not missed:
                started = loop.time()
                await feed.wait(version, KEEPALIVE)
                if feed.version == version and loop.time() - started >= KEEPALIVE:
                    yield ": keep-alive\n\n"
    finally:
        feed.detach()


async def _listen(bus: Bus, woken: asyncio.Event) -> None:
    """Set ``woken`` on every bus event; without a bus, the feed polls the store only."""
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
