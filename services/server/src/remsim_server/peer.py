"""One control connection (a bankd, a client, or not identified yet) as an actor: a task
with an inbox. PDUs from the peer and "re-read the store" kicks are handled one at a time,
so the requests sent to a bankd stay in the order of the store.

The connection asks the core that holds it for what it cannot do alone through ``Core``:
being the target of its bank's or client's events (``attach``, ``detach``), announcing
slotmap changes, the address clients are given for a bankd, counting connections, and
writing the audit log: every connect request accepted or refused (kind ``identity``) and
every slotmap state change made here (kind ``slotmap``).
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import ipaddress
import logging
import time
from collections.abc import Awaitable, Callable, Collection, Sequence
from typing import Protocol, TypeVar

import rspro
from remsim_common.logs import RateLimitedLog
from remsim_control import (
    AuditEntry,
    AuditKind,
    BackendUnavailable,
    BankdAddress,
    BankRecord,
    BankSlot,
    CardRecord,
    ClientRecord,
    ClientSlot,
    IdentityInUse,
    SlotInUse,
    Slotmap,
    SlotmapState,
    Store,
)
from remsim_control.bus import NEEDLESS_FOR_UNMAPPED_CLIENT
from remsim_server import convert, lifecycle, metrics
from remsim_server.role import (
    BankHello,
    CardsReported,
    ClientHello,
    Close,
    ConfigAcknowledged,
    Event,
    Ignored,
    MappingCreated,
    MappingRemoved,
    Refused,
    RequestTimedOut,
    ServerConnection,
    StateReset,
)

log = logging.getLogger("remsim.server")
maplog = logging.getLogger("remsim.server.slotmap")
"""The slotmap life cycle (the original's DSLOTMAP)."""

NEW, UNACK, ACTIVE = SlotmapState.NEW, SlotmapState.UNACKNOWLEDGED, SlotmapState.ACTIVE
DELETE_REQ, DELETING = SlotmapState.DELETE_REQ, SlotmapState.DELETING
_VISIBLE = frozenset(state for state in SlotmapState if state.visible)

Label = tuple[str, str]
"""A connection's ``remsim_connections`` labels: (role, state)."""

_KICK = object()
_CLOSED = object()
_ROLES: dict[type, str] = {BankHello: "bankd", ClientHello: "client"}
_BAD_BYTES: dict[type, str] = {
    rspro.RsproDecodeError: "undecodable",
    rspro.IpaFramingError: "framing",
}
"""``remsim_peer_errors_total`` causes of the errors that end a connection."""
T = TypeVar("T")

CLIENT_SETTLE = 0.01
"""Seconds the connection of a client without a bankd waits after an event before it
re-reads the store, so that the events of one map's creation cost one re-read (see
``Peer.kick``)."""
ECHO_TIMEOUT = 5.0
"""Seconds within which a bankd connection's own announcement is expected back from the bus
(see ``Peer.kick``); a later event of that map is re-read (the announcement was lost)."""
PENDING_EVENT_DELAY = 0.1
"""Seconds the announcement of a map that awaits its bankd's answer (UNACKNOWLEDGED: the
createMappingReq is sent; DELETING: the removeMappingReq) waits for that answer: the
announcement of the state the answer brings then stands for both (receivers re-read the
store), and a map costs one event fewer. Without an answer by then, it goes out."""
AWAITING_ANSWER = frozenset({SlotmapState.UNACKNOWLEDGED, SlotmapState.DELETING})
"""The states whose announcement waits (``PENDING_EVENT_DELAY``)."""


class Core(Protocol):
    """What a connection asks of the core that holds it (``ControlCore``)."""

    @property
    def store(self) -> Store: ...

    @property
    def core_id(self) -> str:
        """Written into the registry records of the connection's bankd or client."""
        ...

    @property
    def retry_interval(self) -> float:
        """Seconds between two attempts while the store does not answer."""
        ...

    @property
    def peer_log(self) -> RateLimitedLog:
        """For the log lines about what peers did wrong (one per interval and cause)."""
        ...

    @property
    def stopping(self) -> bool:
        """The core closes every connection: store failures are no longer waited out."""
        ...

    async def bankd_address(self, bank_id: int, remote_host: str) -> BankdAddress:
        """The address clients are given for bank ``bank_id``, whose control connection
        comes from ``remote_host``."""
        ...

    def attach(self, peer: Peer) -> None:
        """``peer`` was registered: events for its bank or client are its from now on."""
        ...

    def detach(self, peer: Peer) -> None:
        """``peer``'s bank or client is no longer served by it."""
        ...

    async def publish(self, slotmap: Slotmap, state: SlotmapState | None = None) -> bool:
        """Announce that ``slotmap`` changed (``state``: the state it is in now, if known);
        False if the bus did not take it."""
        ...

    async def audit(self, entry: AuditEntry) -> None:
        """Write ``entry`` to the audit log; never raises (a failure is logged)."""
        ...

    def audit_soon(self, entry: AuditEntry) -> None:
        """Write ``entry`` to the audit log in the background, after the entries given
        before (for the state changes of a map: the connection need not wait for it)."""
        ...

    async def announce_released(self, maps: Sequence[Slotmap], why: str) -> None:
        """Log and announce the maps that a bankd's loss changed."""
        ...

    def count_connection(self, before: Label | None, after: Label | None) -> None:
        """A connection moved from ``before`` to ``after`` in ``remsim_connections``
        (``None``: not counted, being new or gone)."""
        ...


class Peer:
    """One control connection: a bankd, a client, or not identified yet; ``conn`` is its
    sans-IO state, started now. ``run()`` it in the connection's own task."""

    def __init__(self, core: Core, stream: rspro.RsproStream, conn: ServerConnection) -> None:
        self.core = core
        self.store = core.store
        self.stream = stream
        self.remote = format_address(stream.peername)
        self.loop = asyncio.get_running_loop()
        self.conn = conn
        self.inbox: asyncio.Queue[object] = asyncio.Queue()
        self.kicked = False
        self.echoes: dict[int, tuple[int, float]] = {}
        """A bankd's own announcements not seen back yet: serial -> (how many, when the
        last was sent). Its own changes need no re-read (see ``kick``)."""
        self.held_back: dict[int, asyncio.TimerHandle] = {}
        """Announcements waiting for the bankd's answer: serial -> the timer that sends it
        (``PENDING_EVENT_DELAY``)."""
        self.late_announcements: set[asyncio.Task[None]] = set()
        self.slots_due: set[BankSlot] | None = set()
        """The bank slots whose maps the next kick re-reads; None: all of them (a bankd's)."""
        self.retry_due = False
        """The next kick also retries the map requests that timed out (see ``kick``)."""
        self.reset_due = False
        """The next kick resets the bankd first (see ``kick``)."""
        self.bank: BankRecord | None = None
        self.client: ClientRecord | None = None
        self.restored = False
        """The bankd was brought to the store's view: reset, and its maps set to be pushed
        again (done once per connection and per global reset: see ``_reconcile``)."""
        self.reset_sent = False
        """The resetStateReq of the current reconciliation is sent."""
        self.reported: dict[int, str | None] = {}
        """A bankd's last card inventory report: the ICCID in each of its slots."""
        self.label: Label | None = None
        self.task = asyncio.current_task()
        self._relabel(self.role_and_state())

    def role_and_state(self) -> Label:
        """The ``remsim_connections`` labels of this connection now."""
        role = _ROLES.get(type(self.conn.hello), "unidentified")
        return role, self.conn.role.value

    def kick(
        self,
        *,
        retry: bool = False,
        reset: bool = False,
        slot: BankSlot | None = None,
        serial: int | None = None,
        settle: bool = False,
        state: SlotmapState | None = None,
    ) -> None:
        """Re-read the store and act on it (soon, from the peer's own task). ``retry``:
        also send again the map requests its bankd did not answer in time; ``reset``: the
        operator's global reset, the bankd is first told to drop every map it holds;
        ``slot``: only the maps at that bank slot changed (a bankd then re-reads only the
        maps at the slots named since its last re-read, so an event costs the same however
        many maps the bank has); ``serial``: the map an event is about. A bankd's own
        announcements come back as events too: as many events of a serial as it announced
        (within ``ECHO_TIMEOUT``) are not re-read, since it acted on those changes already.
        Skipping any event of that serial instead of its own is no loss: the own one comes
        later, and its re-read sees the other change. ``settle``: a client without a bankd
        re-reads ``CLIENT_SETTLE`` seconds later rather than at once (a new map's NEW,
        UNACKNOWLEDGED and ACTIVE events come within a few milliseconds, and only the last
        one changes what the client is told). A client with a bankd re-reads at once: told
        late of a map's removal, it would keep its session to the bankd, which may already
        hold its next map, and take that card before being told to reconnect. ``state``: the
        event's hint of the map's state now (``SlotmapEvent.state``): a client without a
        bankd has nothing to do for a map that is not ACTIVE (``NEEDLESS_FOR_UNMAPPED_CLIENT``:
        no re-read), and re-reads at once for an ACTIVE one (its configuration is due)."""
        if serial is not None and not (retry or reset) and self._echo(serial):
            return
        if state is not None and not (retry or reset) and self.client is not None:
            sent = self.conn.sent
            if sent is None or sent.unmapped:
                if state in NEEDLESS_FOR_UNMAPPED_CLIENT:
                    return
                settle = False
        self.retry_due |= retry
        self.reset_due |= reset
        if slot is None or retry or reset:
            self.slots_due = None
            self.echoes.clear()  # everything is re-read: no event needs skipping
        elif self.slots_due is not None:
            self.slots_due.add(slot)
        if not self.kicked:
            self.kicked = True
            sent = self.conn.sent
            if settle and (sent is None or sent.unmapped):
                self.loop.call_later(CLIENT_SETTLE, self.inbox.put_nowait, _KICK)
            else:
                self.inbox.put_nowait(_KICK)

    def _echo(self, serial: int) -> bool:
        """Whether an event of ``serial`` is taken for one of this bankd's own (see
        ``kick``); counts it off."""
        if (echo := self.echoes.pop(serial, None)) is None:
            return False
        count, sent = echo
        if self.loop.time() - sent > ECHO_TIMEOUT:  # lost on the way: count no more
            return False
        if count > 1:
            self.echoes[serial] = (count - 1, sent)
        return True

    async def _announce(self, slotmap: Slotmap, state: SlotmapState | None = None) -> None:
        """Publish a change of ``slotmap`` that this bankd's connection acted on (``state``:
        its state now, if known): its echo is expected from now on (before the event can
        come back), unless not sent. A map now awaiting its bankd's answer is announced
        ``PENDING_EVENT_DELAY`` later unless the next change of it comes first (whose
        announcement then replaces this one)."""
        if (held := self.held_back.pop(slotmap.serial, None)) is not None:
            held.cancel()
        if state in AWAITING_ANSWER and not self.stream.is_closing:  # closing: no answer
            self.held_back[slotmap.serial] = self.loop.call_later(
                PENDING_EVENT_DELAY, self._announce_late, slotmap, state
            )
            return
        await self._publish(slotmap, state)

    def _announce_late(self, slotmap: Slotmap, state: SlotmapState) -> None:
        """A held-back announcement is due (no answer came in time)."""
        del self.held_back[slotmap.serial]
        task = self.loop.create_task(self._publish(slotmap, state))
        self.late_announcements.add(task)
        task.add_done_callback(self.late_announcements.discard)

    async def _publish(self, slotmap: Slotmap, state: SlotmapState | None) -> None:
        count, _ = self.echoes.get(slotmap.serial, (0, 0.0))
        self.echoes[slotmap.serial] = (count + 1, self.loop.time())
        if not await self.core.publish(slotmap, state):
            self._echo(slotmap.serial)

    def close(self) -> None:
        """End the connection (``run()`` then cleans up and returns)."""
        self.stream.close()

    def _relabel(self, label: Label | None) -> None:
        if label != self.label:
            self.core.count_connection(self.label, label)
            self.label = label

    def send(self, msg: rspro.Message) -> None:
        with contextlib.suppress(rspro.ConnectionClosedError):
            self.stream.send(msg)  # if closed, the reader reports the end of the connection

    def log_fields(self, cause: object = None) -> dict[str, object]:
        """``extra=`` for this connection's log lines: its remote address (``peer``), its
        ``bank`` or ``client_slot`` once identified, and the ``cause`` if given."""
        fields: dict[str, object] = {"peer": self.remote}
        request = self.conn.request  # what the peer claims, accepted or not
        if isinstance(request, rspro.ConnectBankReq):
            fields["bank"] = request.bank_id
        elif isinstance(request, rspro.ConnectClientReq) and request.client_slot is not None:
            fields["client_slot"] = _client_slot(request.client_slot)
        if cause is not None:
            fields["cause"] = str(cause)
        return fields

    async def run(self) -> None:
        log.debug("new control connection", extra=self.log_fields())
        reader = asyncio.create_task(self._read())
        try:
            await self._serve()
        except BackendUnavailable as exc:  # while the core stops: it no longer retries
            log.info("stopped while the store is away", extra=self.log_fields(exc))
        finally:
            reader.cancel()
            self.stream.close()
            for held in self.held_back.values():  # the cleanup announces the bank's maps
                held.cancel()
            self.held_back.clear()
            try:
                await self._cleanup()
            finally:
                self._relabel(None)

    async def _read(self) -> None:
        try:
            async for pdu in self.stream:
                self.inbox.put_nowait(pdu)
        finally:
            self.inbox.put_nowait(_CLOSED)

    async def _serve(self) -> None:
        while True:
            deadline = self.conn.next_deadline()
            try:
                async with asyncio.timeout_at(deadline):
                    item = await self.inbox.get()
            except TimeoutError:
                for due in self.conn.handle_timeout(self.loop.time()):
                    if isinstance(due, Close):
                        self._closing_at_deadline(due)
                        return
                    await self.persist(functools.partial(self._timed_out, due))
                continue
            if item is _CLOSED:
                error = self.stream.error
                if (cause := _bad_bytes(error)) is not None:
                    metrics.PEER_ERRORS.labels(cause).inc()
                    self.core.peer_log.log(
                        logging.WARNING,
                        cause,
                        "connection closed: %s",
                        error,
                        extra=self.log_fields(error),
                    )
                else:
                    log.info("connection ended", extra=self.log_fields(error))
                role, _ = self.role_and_state()
                if isinstance(error, rspro.KeepaliveTimeoutError) and role != "unidentified":
                    metrics.KEEPALIVE_TIMEOUTS.labels(role).inc()
                return
            if item is _KICK:
                retry, reset, slots = self.retry_due, self.reset_due, self.slots_due
                self.kicked = self.retry_due = self.reset_due = False
                self.slots_due = set()
                if reset and self.bank is not None:
                    self.restored = self.reset_sent = False
                    await self.persist(functools.partial(self._reconcile, self.bank.bank_id))
                else:
                    await self.persist(functools.partial(self.sync, retry, slots))
            elif isinstance(item, rspro.RsproPdu):
                log.debug("Rx %s", item.msg, extra=self.log_fields())
                if self.conn.hello is None and _bad_bytes(self.stream.error) is not None:
                    continue  # a connect request before bad bytes: nobody left to answer
                event = self.conn.receive(item)
                if not await self.persist(functools.partial(self.handle, event)):
                    return
            self._relabel(self.role_and_state())

    async def persist(self, step: Callable[[], Awaitable[T]]) -> T:
        """``step()``, again and again while the store does not answer (each step can be
        repeated: it re-reads the store and changes it by compare-and-set)."""
        failed_at: float | None = None
        while True:
            try:
                result = await step()
            except BackendUnavailable as exc:
                if self.core.stopping:
                    raise
                if failed_at is None:
                    failed_at = self.loop.time()
                    log.warning("waiting for the store", extra=self.log_fields(exc))
                await asyncio.sleep(self.core.retry_interval)
                continue
            if failed_at is not None:
                waited = self.loop.time() - failed_at
                log.info("the store answers again (after %.1f s)", waited, extra=self.log_fields())
            return result

    async def handle(self, event: Event) -> bool:
        """Act on what the connection reported; False: close the connection."""
        if isinstance(event, BankHello):
            return await self._bank_hello(event)
        if isinstance(event, ClientHello):
            return await self._client_hello(event)
        if isinstance(event, MappingCreated):
            await self._mapping_created(event)
        elif isinstance(event, MappingRemoved):
            await self._mapping_removed(event)
        elif isinstance(event, StateReset):
            if event.result is rspro.ResultCode.OK:
                log.info("the bankd dropped every map (resetStateRes)", extra=self.log_fields())
            else:
                log.warning(
                    "the bankd refused to reset", extra=self.log_fields(event.result.asn_name)
                )
        elif isinstance(event, ConfigAcknowledged):
            await self._config_acknowledged(event)
        elif isinstance(event, CardsReported):
            await self._cards_reported(event)
        elif isinstance(event, Close):
            log.warning("closing the connection", extra=self.log_fields(event.reason))
            if self.conn.request is not None:  # a connect request that cannot be answered
                await self._audit_identity(event.reason)
            return False
        elif isinstance(event, Refused):
            log.warning(
                "connect request refused (%s)",
                event.result.asn_name,
                extra=self.log_fields(event.reason),
            )
            self.send(self.conn.reject(self.loop.time(), event.result))
            await self._audit_identity(event.reason)
        elif isinstance(event, Ignored):
            metrics.PEER_ERRORS.labels("unexpected").inc()
            self.core.peer_log.log(
                logging.WARNING,
                event.reason,  # a few fixed texts (message and state names)
                "message ignored",
                extra=self.log_fields(event.reason),
            )
        return True

    def _closing_at_deadline(self, close: Close) -> None:
        if self.conn.request is None:  # never sent a connect request
            metrics.PEER_ERRORS.labels("no_identification").inc()
            self.core.peer_log.log(
                logging.INFO,
                "no_identification",
                "closing the connection",
                extra=self.log_fields(close.reason),
            )
        else:
            log.info("closing the connection", extra=self.log_fields(close.reason))

    async def sync(self, retry: bool = False, slots: Collection[BankSlot] | None = None) -> None:
        """Act on what the store says (``retry``: see ``kick``); a bankd: only on the maps
        at ``slots`` if given."""
        if self.bank is not None:
            await self._sync_bank(self.bank.bank_id, retry, slots)
        elif self.client is not None:
            await self._sync_client(self.client.client)

    # --- bankd --------------------------------------------------------------------------

    async def _bank_hello(self, hello: BankHello) -> bool:
        # Repeated after a store failure: each part is done once per connection.
        if self.bank is None:
            bankd = await self.core.bankd_address(hello.bank_id, self.stream.peername[0])
            record = BankRecord(
                bank_id=hello.bank_id,
                number_of_slots=hello.number_of_slots,
                identity=hello.identity,
                bankd=bankd,
                remote=self.remote,
                core_id=self.core.core_id,
            )
            try:
                await self.store.register_bank(record)
            except IdentityInUse as exc:
                await self._refuse(exc)
                return True
            except BackendUnavailable as exc:
                return await self._not_registered(exc, lambda: self.store.unregister_bank(record))
            self.bank = record
            self.core.attach(self)
            self.send(self.conn.accept())
            log.info(
                "bankd connected (%d slots, %s %s%s); clients are given %s",
                hello.number_of_slots,
                hello.identity.software,
                hello.identity.name,
                self._certified(),
                bankd,
                extra=self.log_fields(),
            )
            await self._audit_identity()
            if ipaddress.ip_address(bankd.host).is_loopback:
                log.info("clients on other hosts cannot reach %s", bankd, extra=self.log_fields())
        await self._reconcile(hello.bank_id, "its bankd connected")
        return True

    async def _reconcile(self, bank_id: int, cause: str = "global reset") -> None:
        """Bring the bankd to exactly the store's view: ``resetStateReq`` (it drops every
        map it holds, known here or not), then every map it must hold is pushed again
        (``lifecycle.on_bank_connect``). Can be repeated after a store failure: each part
        is done once."""
        if not self.restored:
            if not self.reset_sent:
                log.info("Tx resetStateReq (%s)", cause, extra=self.log_fields())
                self.send(self.conn.reset_state())
                self.reset_sent = True
            for slotmap in await self.store.list_slotmaps(bank_id=bank_id):
                state = lifecycle.on_bank_connect(slotmap)
                if state is not None:
                    await self._update(slotmap, state, cause)
            self.restored = True
        await self._sync_bank(bank_id)

    async def _sync_bank(
        self, bank_id: int, retry: bool = False, slots: Collection[BankSlot] | None = None
    ) -> None:
        """Send the bankd what the store says it must do, in the store's order; ``retry``:
        also the requests that timed out; ``slots``: only for the maps at those bank slots
        (the others did not change), else for all of the bank's. The maps of one bank slot
        are handled one after the other, those of different slots at the same time (their
        store updates then share round trips to Redis)."""
        if slots is None:
            maps = await self.store.list_slotmaps(bank_id=bank_id)
        elif slots:
            maps = await self.store.list_slotmaps(bank_id=bank_id, bank_slots=slots)
        else:
            return
        by_slot: dict[BankSlot, list[Slotmap]] = {}
        for slotmap in maps:
            by_slot.setdefault(slotmap.bank, []).append(slotmap)
        if len(by_slot) <= 1:
            await self._sync_slot(maps, retry)
            return
        outcomes = await asyncio.gather(
            *(self._sync_slot(at_slot, retry) for at_slot in by_slot.values()),
            return_exceptions=True,
        )
        if failed := next((o for o in outcomes if isinstance(o, BaseException)), None):
            raise failed  # persist() repeats the whole step (each part is done once)

    async def _sync_slot(self, maps: Sequence[Slotmap], retry: bool) -> None:
        """``_sync_bank`` for the maps of one bank slot, in the store's order."""
        now = self.loop.time()
        for slotmap in maps:
            serial, bank, client = slotmap.serial, slotmap.bank, slotmap.client
            # A map in UNACKNOWLEDGED or DELETING without a request outstanding here was
            # moved there by this connection, and then the store failed before the request
            # went out: send it now.
            if (
                lifecycle.needs_create(slotmap, retry)
                and await self._update(slotmap, UNACK, "createMappingReq sent to its bankd")
            ) or (slotmap.state is UNACK and not self.conn.awaiting_create(serial)):
                request: rspro.Message = self.conn.create_mapping(serial, bank, client, now)
            elif (
                lifecycle.needs_remove(slotmap, retry)
                and await self._update(slotmap, DELETING, "removeMappingReq sent to its bankd")
            ) or (slotmap.state is DELETING and not self.conn.awaiting_remove(serial)):
                request = self.conn.remove_mapping(serial, bank, client, now)
            else:
                continue
            self.send(request)

    async def _cards_reported(self, event: CardsReported) -> None:
        if self.bank is None:  # its registration failed
            return
        bank_id, now = self.bank.bank_id, time.time()
        cards = [convert.card_record(bank_id, card, now) for card in event.cards]
        await self.store.put_cards(bank_id, cards)
        log.debug("card inventory: %d slots", len(cards), extra=self.log_fields())
        arrived = [
            card
            for card in cards
            if card.iccid is not None and self.reported.get(card.bank_slot.slot_nr) != card.iccid
        ]
        self.reported = {card.bank_slot.slot_nr: card.iccid for card in cards}
        if arrived:
            await self._follow_cards(arrived)

    async def _follow_cards(self, arrived: Sequence[CardRecord]) -> None:
        """Maps made by card follow their card: a card the inventory finds in a slot other
        than its map's (moved within this bank, or from another bank) takes its map along.
        The map there is removed and a map for the same client is made at the card's slot
        (the client is sent there once that map is ACTIVE). A slot that another visible map
        uses already is not taken: the map stays where it is, with a warning. Checked for
        the cards new in a slot since this bankd's previous report (all of them in its
        first report on a connection, so that a move while the server was down is found)."""
        maps = await self.store.list_slotmaps(visible_only=True)
        by_card = {slotmap.iccid: slotmap for slotmap in maps if slotmap.iccid is not None}
        in_use = {slotmap.bank for slotmap in maps}
        for card in arrived:
            slotmap = by_card.get(card.iccid) if card.iccid is not None else None
            if slotmap is None or slotmap.bank == card.bank_slot:
                continue
            if card.bank_slot in in_use:
                maplog.warning(
                    "the card of a slotmap is in %s, which another slotmap uses: the map stays",
                    card.bank_slot,
                    extra=slotmap_fields(slotmap),
                )
                continue
            await self._move(slotmap, card.bank_slot)
            in_use.add(card.bank_slot)

    async def _move(self, slotmap: Slotmap, bank: BankSlot) -> None:
        """One store step (``Store.move_slotmap``): the map goes as a removal has it go
        (its bankd is sent removeMappingReq) and a map for its client is made at ``bank``,
        so a core dying in between loses no map."""
        cause = f"its card {slotmap.iccid} is now in {bank}"
        try:
            moved = await self.store.move_slotmap(slotmap.serial, _VISIBLE, bank)
        except SlotInUse as exc:  # taken since the maps were listed
            maplog.warning("the map cannot follow its card: %s", exc, extra=slotmap_fields(slotmap))
            return
        if moved is None:
            return  # removed meanwhile
        removed, created = moved
        maplog.info("slotmap follows its card to %s", bank, extra=slotmap_fields(removed))
        after = "DELETED" if removed.state is NEW else DELETE_REQ
        await self.core.audit(
            slotmap_audit(self.core.core_id, removed, removed.state, after, cause)
        )
        await self.core.publish(removed)
        maplog.info("slotmap added for its card", extra=slotmap_fields(created))
        await self.core.audit(slotmap_audit(self.core.core_id, created, "CREATED", NEW, cause))
        await self.core.publish(created)

    async def _mapping_created(self, event: MappingCreated) -> None:
        if event.result is rspro.ResultCode.OK:
            updated = await self._update_serial(
                event.serial, UNACK, ACTIVE, "its bankd created it (createMappingRes)"
            )
        else:
            updated = await self._update_serial(
                event.serial,
                UNACK,
                NEW,
                "its bankd refused it (createMappingRes)",
                result=event.result.asn_name,
            )
            if updated is not None:
                maplog.warning(
                    "slotmap refused by the bankd",
                    extra=slotmap_fields(updated, event.result.asn_name),
                )

    async def _timed_out(self, due: RequestTimedOut) -> None:
        """No answer in time: a map being created waits as NEW, a map being deleted as
        DELETE_REQ, both with result ``timeout``, until the next resync or reconnect of
        its bankd retries the request."""
        expected, state = (
            (UNACK, NEW) if due.request == "createMappingReq" else (DELETING, DELETE_REQ)
        )
        cause = f"no answer to its {due.request} within {self.conn.map_request_timeout:g} s"
        updated = await self._update_serial(
            due.serial, expected, state, cause, result=lifecycle.TIMEOUT
        )
        if updated is not None:  # one line per interval, however many maps time out
            self.core.peer_log.log(
                logging.WARNING,
                f"{due.request} timeout",
                "its bankd did not answer in time",
                extra=self.log_fields(cause) | slotmap_fields(updated, cause),
            )

    async def _mapping_removed(self, event: MappingRemoved) -> None:
        removed = await self.store.remove_slotmap(event.serial, {DELETING})
        if removed is None:
            return
        if event.result is not rspro.ResultCode.OK:
            maplog.warning(
                "the bankd did not have the slotmap",
                extra=slotmap_fields(removed, event.result.asn_name),
            )
        maplog.info("slotmap deleted", extra=slotmap_fields(removed))
        self.core.audit_soon(
            slotmap_audit(
                self.core.core_id,
                removed,
                DELETING,
                DELETED,
                "its bankd removed it (removeMappingRes)",
                result=None if event.result is rspro.ResultCode.OK else event.result.asn_name,
            )
        )
        await self._announce(removed)

    async def _update(self, slotmap: Slotmap, state: SlotmapState, cause: str) -> Slotmap | None:
        return await self._update_serial(slotmap.serial, slotmap.state, state, cause)

    async def _update_serial(
        self,
        serial: int,
        expected: SlotmapState,
        state: SlotmapState,
        cause: str,
        *,
        result: str | None = None,
    ) -> Slotmap | None:
        """Every slotmap state change a connection makes: in the store (if the map is still
        ``expected``), in the log and the audit log (with its ``cause``), on the bus."""
        updated = await self.store.update_slotmap(serial, {expected}, state, result=result)
        if updated is not None:
            if maplog.isEnabledFor(logging.INFO):  # its fields cost more than the check
                maplog.info(
                    "slotmap state change: %s -> %s",
                    expected,
                    state,
                    extra=slotmap_fields(updated),
                )
            self.core.audit_soon(
                slotmap_audit(self.core.core_id, updated, expected, state, cause, result=result)
            )
            await self._announce(updated, state)  # acted on here: its echo needs no re-read
        return updated

    # --- client -------------------------------------------------------------------------

    async def _client_hello(self, hello: ClientHello) -> bool:
        # Repeated after a store failure: registered once per connection.
        if self.client is None:
            record = ClientRecord(
                client=hello.client,
                identity=hello.identity,
                remote=self.remote,
                core_id=self.core.core_id,
            )
            try:
                await self.store.register_client(record)
            except IdentityInUse as exc:
                await self._refuse(exc)
                return True
            except BackendUnavailable as exc:
                return await self._not_registered(exc, lambda: self.store.unregister_client(record))
            self.client = record
            self.core.attach(self)
            self.send(self.conn.accept())
            log.info(
                "client connected (%s %s%s)",
                hello.identity.software,
                hello.identity.name,
                self._certified(),
                extra=self.log_fields(),
            )
            await self._audit_identity()
        self.conn.sent = await self.store.get_client_config(hello.client)
        await self._sync_client(hello.client)
        return True

    async def _sync_client(self, client: ClientSlot) -> None:
        maps = await self.store.list_slotmaps(client=client)
        active = lifecycle.active_map(maps)
        bank = await self.store.get_bank(active.bank.bank_id) if active is not None else None
        bankd = bank.bankd if bank is not None else None
        config = lifecycle.client_config(maps, active, bankd, self.conn.sent)
        if config is not None:
            if log.isEnabledFor(logging.INFO):
                log.info(
                    "Tx configClientBankReq(%s)",
                    config.bankd,
                    extra=self.log_fields() | {"bank_slot": str(config.bank)},
                )
            self.send(self.conn.configure(config))

    async def _config_acknowledged(self, event: ConfigAcknowledged) -> None:
        assert self.client is not None
        if event.result is not rspro.ResultCode.OK:
            log.warning(
                "the client refused its configuration", extra=self.log_fields(event.result.asn_name)
            )
            return
        config = None if event.config.unmapped else event.config
        await self.store.set_client_config(self.client.client, config)

    # --- both ---------------------------------------------------------------------------

    async def _not_registered(
        self, exc: BackendUnavailable, unregister: Callable[[], Awaitable[bool]]
    ) -> bool:
        """The store failed to register the peer: close (the peer connects again later)."""
        log.warning("cannot register: closing the connection", extra=self.log_fields(exc))
        # Redis may have carried out the registration before failing to answer; the store
        # retries a failed unregistration by itself once Redis is back.
        with contextlib.suppress(BackendUnavailable):
            await unregister()
        return False

    async def _refuse(self, exc: IdentityInUse) -> None:
        log.warning(
            "connect request refused (identityInUse): connected already from %s (core %s)",
            exc.existing.remote,
            exc.existing.core_id,
            extra=self.log_fields(),
        )
        self.send(self.conn.reject(self.loop.time()))
        await self._audit_identity(f"identityInUse: connected already from {exc.existing.remote}")

    def _certified(self) -> str:
        """``", certificate <subject>"`` for the log line of a TLS peer accepted."""
        subject = self.conn.tls_subject
        return "" if subject is None else f", certificate {subject or '(no subject)'}"

    async def _audit_identity(self, refused: str | None = None) -> None:
        """The audit log's record of the connect request: accepted, or refused (why)."""
        request = self.conn.request
        assert request is not None
        ids: dict[str, int] = {}
        if isinstance(request, rspro.ConnectBankReq):
            claim = f"B{request.bank_id}"
            ids = {"bank_id": request.bank_id}
        elif (slot := request.client_slot) is not None:
            claim = _client_slot(slot)
            ids = {"client_id": slot.client_id, "client_slot": slot.slot_nr}
        else:
            claim = "no client slot"
        subject = self.conn.tls_subject
        await self.core.audit(
            AuditEntry(
                kind=AuditKind.IDENTITY,
                actor="plaintext" if subject is None else subject or "(no subject)",
                action=request.ASN_NAME,
                result="accepted" if refused is None else "refused",
                address=self.remote,
                detail=claim if refused is None else f"{claim}: {refused}",
                **ids,
            )
        )

    async def _cleanup(self) -> None:
        try:
            if self.bank is not None:
                await self._bank_gone(self.bank)
            if self.client is not None:
                await self._client_gone(self.client)
        except BackendUnavailable as exc:  # the core stops: its lease ends the records
            log.warning("left in the store", extra=self.log_fields(exc))
        except Exception:
            log.exception("cleaning up after the connection failed", extra=self.log_fields())

    async def _bank_gone(self, record: BankRecord) -> None:
        self.core.detach(self)
        # The maps first, while this connection still owns the bank: a new connection of
        # the bank (on any core) can only register after that. The store checks the
        # ownership in the same step: if this core's lease lapsed and the bank registered
        # elsewhere meanwhile, its maps are the new connection's.
        released = await self.persist(functools.partial(self.store.release_bank, record))
        if released is None:
            log.warning(
                "bank taken over by another connection; its maps left alone",
                extra=self.log_fields(),
            )
        await self.core.announce_released(released or [], "its bankd is gone")
        await self._unregister(functools.partial(self.store.unregister_bank, record))
        log.info("bankd disconnected", extra=self.log_fields())

    async def _client_gone(self, record: ClientRecord) -> None:
        self.core.detach(self)
        if not self.core.stopping:
            # The client ended the connection: it may have restarted and forgotten its
            # configuration, so it is sent again when the client comes back (forgotten
            # before unregistering, so that its next connection reads it so).
            # Only if this connection still owns the client slot (see _bank_gone).
            await self.persist(functools.partial(self.store.forget_client_config, record))
        await self._unregister(functools.partial(self.store.unregister_client, record))
        log.info("client disconnected", extra=self.log_fields())

    async def _unregister(self, unregister: Callable[[], Awaitable[bool]]) -> None:
        try:
            await unregister()
        except BackendUnavailable as exc:
            # Not retried here: the store keeps it and carries it out once Redis answers.
            log.warning("unregistration deferred", extra=self.log_fields(exc))


def slotmap_fields(slotmap: Slotmap, cause: object = None) -> dict[str, object]:
    """``extra=`` for a slotmap's log lines: its ``map`` id, ``bank_slot`` and
    ``client_slot``, and the ``cause`` if given."""
    fields: dict[str, object] = {
        "map": slotmap.id,
        "bank_slot": str(slotmap.bank),
        "client_slot": str(slotmap.client),
    }
    if cause is not None:
        fields["cause"] = str(cause)
    return fields


DELETED = "DELETED"
"""The audit log's name for a slotmap that is gone (not a state of the store)."""


def slotmap_audit(
    core_id: str,
    slotmap: Slotmap,
    before: SlotmapState | str,
    after: SlotmapState | str,
    cause: str,
    *,
    result: str | None = None,
) -> AuditEntry:
    """The audit log's record of core ``core_id`` moving ``slotmap`` from ``before`` (or
    ``CREATED``) to ``after`` (or ``DELETED``) for ``cause``; ``result``: the bankd's result
    code if it refused."""
    return AuditEntry(
        kind=AuditKind.SLOTMAP,
        actor=core_id,
        action=f"{before} -> {after}",
        result=result or str(after),
        bank_id=slotmap.bank.bank_id,
        bank_slot=slotmap.bank.slot_nr,
        client_id=slotmap.client.client_id,
        client_slot=slotmap.client.slot_nr,
        detail=cause,
    )


def _client_slot(slot: rspro.ClientSlot) -> str:
    """``C<client>:<slot>``, for a client slot as claimed (valid or not)."""
    return f"C{slot.client_id}:{slot.slot_nr}"


def format_address(address: tuple[str, int] | tuple[str, int, int, int]) -> str:
    host, port = address[0], address[1]
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def _bad_bytes(error: rspro.RsproError | None) -> str | None:
    """The ``remsim_peer_errors_total`` cause if ``error`` is about the peer's bytes."""
    if error is None or isinstance(error, rspro.ConnectionClosedError):
        return None
    return next((c for kind, c in _BAD_BYTES.items() if isinstance(error, kind)), "undecodable")
