"""The control core: accepts bankd and client control connections and carries out the
slotmap life cycle for the connections it holds.

Each connection is one actor (a task with an inbox): PDUs from the peer and "re-read the
store" kicks from the bus are handled one at a time, so the requests sent to a bankd stay in
the order of the store and the responses can be matched to them by order. State lives in
the ``Store``; every change is announced on the ``Bus``, and the core holding the affected
bankd or client acts on it (which is this core, in the single-host server).

While the store does not answer (Redis down), a connection's current step is retried every
``retry_interval`` seconds: the connection stays, and what the peer sent meanwhile waits in
its inbox. A peer that is not registered yet is closed instead (it connects again later).
Events are hints: one the bus cannot deliver now is made up for by the reset that follows
the bus's recovery.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import ipaddress
import logging
import socket
from collections import Counter
from collections.abc import Awaitable, Callable, Mapping, Sequence
from typing import TypeVar

import rspro
from remsim_control import (
    BackendUnavailable,
    BankdAddress,
    BankRecord,
    Bus,
    ClientRecord,
    ClientSlot,
    IdentityInUse,
    ResetEvent,
    Slotmap,
    SlotmapEvent,
    SlotmapState,
    Store,
)
from remsim_control.metrics import METRICS
from remsim_server import lifecycle
from remsim_server.convert import unmapped_ip
from remsim_server.role import (
    IDENTIFY_TIMEOUT,
    REJECT_DELAY,
    BankHello,
    ClientHello,
    Close,
    ConfigAcknowledged,
    Event,
    Ignored,
    MappingCreated,
    MappingRemoved,
    Refused,
    ServerConnection,
)
from remsim_server.settings import parse_host_port
from rspro.connection import DEFAULT_KEEPALIVE

log = logging.getLogger("remsim.server")

NEW, UNACK, ACTIVE = SlotmapState.NEW, SlotmapState.UNACKNOWLEDGED, SlotmapState.ACTIVE
DELETING = SlotmapState.DELETING

RETRY_INTERVAL = 1.0
"""Seconds between two attempts while the store does not answer."""
RESYNC_INTERVAL = 30.0
"""Seconds between two re-reads of the store for every connection held (see _resync)."""

_KICK = object()
_CLOSED = object()
_ROLES: dict[type, str] = {BankHello: "bankd", ClientHello: "client"}
T = TypeVar("T")


class ControlCore:
    """The control server's connections. ``keepalive``: the IPA PING/PONG timing of each
    connection (``None``: no keepalive, as everywhere in rspro)."""

    def __init__(
        self,
        store: Store,
        bus: Bus,
        *,
        identity: rspro.ComponentIdentity,
        core_id: str,
        bankd_port: int = 9999,
        bankd_addresses: Mapping[int, str] | None = None,
        keepalive: rspro.Keepalive | None = DEFAULT_KEEPALIVE,
        identify_timeout: float = IDENTIFY_TIMEOUT,
        reject_delay: float = REJECT_DELAY,
        retry_interval: float = RETRY_INTERVAL,
        resync_interval: float = RESYNC_INTERVAL,
    ) -> None:
        self.store = store
        self.bus = bus
        self.identity = identity
        self.core_id = core_id
        self.bankd_port = bankd_port
        self.bankd_addresses = {
            bank_id: parse_host_port(address)
            for bank_id, address in (bankd_addresses or {}).items()
        }
        self.keepalive = keepalive
        self.identify_timeout = identify_timeout
        self.reject_delay = reject_delay
        self.retry_interval = retry_interval
        self.resync_interval = resync_interval
        self.stopping = False
        self._banks: dict[int, _Peer] = {}
        self._clients: dict[ClientSlot, _Peer] = {}
        self._peers: set[_Peer] = set()
        self._connections: Counter[tuple[str, str]] = Counter()
        self._bus_down = False
        self._server: asyncio.Server | None = None
        self._dispatcher: asyncio.Task[None] | None = None
        self._resyncer: asyncio.Task[None] | None = None

    @property
    def sockets(self) -> list[socket.socket]:
        return list(self._server.sockets) if self._server is not None else []

    async def start(self, host: str | None, port: int) -> None:
        """Listen for RSPRO on ``host:port``; events are handled from when this returns."""
        subscribed = asyncio.Event()
        self._dispatcher = asyncio.create_task(self._dispatch(subscribed), name="bus")
        waiting = asyncio.create_task(subscribed.wait())
        await asyncio.wait({waiting, self._dispatcher}, return_when=asyncio.FIRST_COMPLETED)
        waiting.cancel()
        if not subscribed.is_set():  # the subscription failed
            self._dispatcher.result()
            raise BackendUnavailable("the bus subscription ended at once")
        try:
            self._server = await rspro.start_server(
                self._handle, host, port, keepalive=self.keepalive
            )
        except BaseException:
            self._dispatcher.cancel()
            raise
        self._resyncer = asyncio.create_task(self._resync(), name="resync")
        for sock in self._server.sockets:
            log.info("RSPRO control listening on %s", _format_address(sock.getsockname()))

    async def aclose(self) -> None:
        """Stop: close every connection (their bankds and clients may go to another core)."""
        self.stopping = True
        if self._server is not None:
            self._server.close()
        for peer in list(self._peers):
            peer.stream.close()
        tasks = [peer.task for peer in self._peers if peer.task is not None]
        if tasks:
            await asyncio.wait(tasks, timeout=5)
        for task in (self._resyncer, self._dispatcher):
            if task is not None:
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task

    async def _dispatch(self, subscribed: asyncio.Event) -> None:
        async with self.bus.subscribe() as events:
            subscribed.set()
            async for event in events:
                if isinstance(event, SlotmapEvent):
                    if (bank := self._banks.get(event.bank.bank_id)) is not None:
                        bank.kick()
                    if (client := self._clients.get(event.client)) is not None:
                        client.kick()
                elif isinstance(event, ResetEvent):
                    self.kick_all()

    def kick_all(self) -> None:
        """Every connection held re-reads the store and acts on it."""
        for peer in [*self._banks.values(), *self._clients.values()]:
            peer.kick()

    async def _resync(self) -> None:
        """Every ``resync_interval``: free the maps of banks whose core died (its lease
        lapsed) and that did not come back, and let every connection held re-read the
        store, as on a reset. This makes up for events the bus lost without anyone
        noticing (a slow consumer, a publication buffered when NATS broke)."""
        while True:
            try:
                await self.release_orphans()
            except BackendUnavailable as exc:
                log.debug("resync: the store does not answer: %s", exc)
            except Exception:
                log.exception("resync failed")
            self.kick_all()
            await asyncio.sleep(self.resync_interval)

    async def release_orphans(self) -> None:
        """Maps of banks without a live connection anywhere wait for their bank as NEW;
        maps being deleted are freed (their clients are told)."""
        await self._announce_released(await self.store.release_orphans(), "its bankd's core died")

    async def _announce_released(self, maps: Sequence[Slotmap], why: str) -> None:
        """Log and publish the maps a bankd's loss changed (``maps``: as they were before;
        see ``lifecycle.on_bank_loss``)."""
        for slotmap in maps:
            if (state := lifecycle.on_bank_loss(slotmap)) is None:
                log.info("%s dropped: %s", slotmap, why)
            else:
                log.info("%s state change: %s -> %s (%s)", slotmap, slotmap.state, state, why)
            await self.publish(slotmap)

    async def _handle(self, stream: rspro.RsproStream) -> None:
        peer = _Peer(self, stream)
        self._peers.add(peer)
        try:
            await peer.run()
        finally:
            self._peers.discard(peer)
            self.track(peer, None)

    def track(self, peer: _Peer, label: tuple[str, str] | None) -> None:
        """Count ``peer`` under ``label`` (role, state) in ``remsim_connections`` from now
        on; ``None``: it is gone."""
        if label == peer.label:
            return
        if peer.label is not None:
            self._connections[peer.label] -= 1
        if label is not None:
            self._connections[label] += 1
        peer.label = label
        METRICS.set_connections(+self._connections)

    async def publish(self, slotmap: Slotmap) -> None:
        try:
            await self.bus.publish(SlotmapEvent.of(slotmap))
        except BackendUnavailable as exc:
            # Every core re-reads the store when the bus is back (it hands out a reset).
            if not self._bus_down:
                log.warning("events cannot be sent now (%s); the cores catch up later", exc)
            self._bus_down = True
        else:
            if self._bus_down:
                log.info("events are sent again")
            self._bus_down = False

    async def bankd_address(self, bank_id: int, remote_host: str) -> BankdAddress:
        """The address clients are given for bank ``bank_id``: the configured one, else the
        address its control connection comes from with the configured bankd port."""
        override = self.bankd_addresses.get(bank_id)
        if override is None:
            return BankdAddress(host=unmapped_ip(remote_host), port=self.bankd_port)
        host, port = override
        try:
            host = await _resolve(host)
        except OSError as exc:
            log.error("B%d: cannot resolve %s (%s); using %s", bank_id, host, exc, remote_host)
            host = unmapped_ip(remote_host)
        return BankdAddress(host=host, port=port or self.bankd_port)


class _Peer:
    """One control connection: a bankd, a client, or not identified yet."""

    def __init__(self, core: ControlCore, stream: rspro.RsproStream) -> None:
        self.core = core
        self.store = core.store
        self.stream = stream
        self.remote = _format_address(stream.peername)
        self.loop = asyncio.get_running_loop()
        self.conn = ServerConnection(
            core.identity,
            self.loop.time(),
            identify_timeout=core.identify_timeout,
            reject_delay=core.reject_delay,
        )
        self.inbox: asyncio.Queue[object] = asyncio.Queue()
        self.kicked = False
        self.bank: BankRecord | None = None
        self.client: ClientRecord | None = None
        self.restored = False
        """The bank's maps were reset for this connection (done once: see _bank_hello)."""
        self.label: tuple[str, str] | None = None
        self.task = asyncio.current_task()
        core.track(self, self.role_and_state())

    def role_and_state(self) -> tuple[str, str]:
        """The ``remsim_connections`` labels of this connection now."""
        role = _ROLES.get(type(self.conn.hello), "unidentified")
        return role, self.conn.role.value

    def kick(self) -> None:
        """Re-read the store and act on it (soon, from the peer's own task)."""
        if not self.kicked:
            self.kicked = True
            self.inbox.put_nowait(_KICK)

    def send(self, msg: rspro.Message) -> None:
        with contextlib.suppress(rspro.ConnectionClosedError):
            self.stream.send(msg)  # if closed, the reader reports the end of the connection

    async def run(self) -> None:
        log.debug("new control connection from %s", self.remote)
        reader = asyncio.create_task(self._read())
        try:
            await self._serve()
        except BackendUnavailable as exc:  # while the core stops: it no longer retries
            log.info("%s from %s: stopped while the store is away: %s", self.peer, self.remote, exc)
        finally:
            reader.cancel()
            self.stream.close()
            await self._cleanup()

    @property
    def peer(self) -> str:
        return self.conn.peer

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
                close = self.conn.handle_timeout(self.loop.time())
                if close is not None:
                    log.info("%s from %s: closing: %s", self.peer, self.remote, close.reason)
                    return
                continue
            if item is _CLOSED:
                error = self.stream.error
                log.info("%s from %s: connection ended: %s", self.peer, self.remote, error)
                role, _ = self.role_and_state()
                if isinstance(error, rspro.KeepaliveTimeoutError) and role != "unidentified":
                    METRICS.keepalive_timeouts.labels(role).inc()
                return
            if item is _KICK:
                self.kicked = False
                await self.persist(self.sync)
            elif isinstance(item, rspro.RsproPdu):
                log.debug("%s: Rx %s", self.peer, item.msg)
                event = self.conn.receive(item)
                if not await self.persist(functools.partial(self.handle, event)):
                    return
            self.core.track(self, self.role_and_state())

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
                    log.warning(
                        "%s from %s: waiting for the store: %s", self.peer, self.remote, exc
                    )
                await asyncio.sleep(self.core.retry_interval)
                continue
            if failed_at is not None:
                waited = self.loop.time() - failed_at
                log.info("%s: the store answers again (after %.1f s)", self.peer, waited)
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
        elif isinstance(event, ConfigAcknowledged):
            await self._config_acknowledged(event)
        elif isinstance(event, Close):
            log.warning("%s from %s: closing: %s", self.peer, self.remote, event.reason)
            return False
        elif isinstance(event, Refused):
            log.warning("%s from %s refused: %s", self.peer, self.remote, event.reason)
            self.send(self.conn.reject(self.loop.time(), event.result))
        elif isinstance(event, Ignored):
            log.warning("%s from %s: ignored: %s", self.peer, self.remote, event.reason)
        return True

    async def sync(self) -> None:
        if self.bank is not None:
            await self._sync_bank(self.bank.bank_id)
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
                self._refuse(exc)
                return True
            except BackendUnavailable as exc:
                return await self._not_registered(exc, lambda: self.store.unregister_bank(record))
            self.bank = record
            self.core._banks[record.bank_id] = self
            self.send(self.conn.accept())
            log.info(
                "B%d connected from %s (%d slots, %s %s); clients are given %s",
                hello.bank_id,
                self.remote,
                hello.number_of_slots,
                hello.identity.software,
                hello.identity.name,
                bankd,
            )
            if ipaddress.ip_address(bankd.host).is_loopback:
                log.info("B%d: clients on other hosts cannot reach %s", hello.bank_id, bankd)
        if not self.restored:
            for slotmap in await self.store.list_slotmaps(bank_id=hello.bank_id):
                state = lifecycle.on_bank_connect(slotmap)
                if state is not None:
                    await self._update(slotmap, state)
            self.restored = True
        await self._sync_bank(hello.bank_id)
        return True

    async def _sync_bank(self, bank_id: int) -> None:
        """Send the bankd what the store says it must do, in the store's order."""
        for slotmap in await self.store.list_slotmaps(bank_id=bank_id):
            serial, bank, client = slotmap.serial, slotmap.bank, slotmap.client
            # A map in UNACKNOWLEDGED or DELETING without a request outstanding here was
            # moved there by this connection, and then the store failed before the request
            # went out: send it now.
            if (lifecycle.needs_create(slotmap) and await self._update(slotmap, UNACK)) or (
                slotmap.state is UNACK and not self.conn.awaiting_create(serial)
            ):
                request: rspro.Message = self.conn.create_mapping(serial, bank, client)
            elif (lifecycle.needs_remove(slotmap) and await self._update(slotmap, DELETING)) or (
                slotmap.state is DELETING and not self.conn.awaiting_remove(serial)
            ):
                request = self.conn.remove_mapping(serial, bank, client)
            else:
                continue
            self.send(request)

    async def _mapping_created(self, event: MappingCreated) -> None:
        if event.result is rspro.ResultCode.OK:
            updated = await self._update_serial(event.serial, UNACK, ACTIVE)
        else:
            updated = await self._update_serial(
                event.serial, UNACK, NEW, result=event.result.asn_name
            )
            if updated is not None:
                log.warning("%s refused by the bankd: %s", updated, event.result.asn_name)

    async def _mapping_removed(self, event: MappingRemoved) -> None:
        removed = await self.store.remove_slotmap(event.serial, {DELETING})
        if removed is None:
            return
        if event.result is not rspro.ResultCode.OK:
            log.warning("%s: the bankd did not have it (%s)", removed, event.result.asn_name)
        log.info("%s deleted", removed)
        await self.core.publish(removed)

    async def _update(
        self, slotmap: Slotmap, state: SlotmapState, result: str | None = None
    ) -> Slotmap | None:
        return await self._update_serial(slotmap.serial, slotmap.state, state, result=result)

    async def _update_serial(
        self,
        serial: int,
        expected: SlotmapState,
        state: SlotmapState,
        *,
        result: str | None = None,
    ) -> Slotmap | None:
        updated = await self.store.update_slotmap(serial, {expected}, state, result=result)
        if updated is not None:
            log.info("%s state change: %s -> %s", updated, expected, state)
            await self.core.publish(updated)
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
                self._refuse(exc)
                return True
            except BackendUnavailable as exc:
                return await self._not_registered(exc, lambda: self.store.unregister_client(record))
            self.client = record
            self.core._clients[record.client] = self
            self.send(self.conn.accept())
            log.info(
                "%s connected from %s (%s %s)",
                hello.client,
                self.remote,
                hello.identity.software,
                hello.identity.name,
            )
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
            log.info("%s: configClientBankReq(%s, %s)", client, config.bank, config.bankd)
            self.send(self.conn.configure(config))

    async def _config_acknowledged(self, event: ConfigAcknowledged) -> None:
        assert self.client is not None
        if event.result is not rspro.ResultCode.OK:
            log.warning("%s refused its configuration: %s", self.client.client, event.result)
            return
        config = None if event.config.unmapped else event.config
        await self.store.set_client_config(self.client.client, config)

    # --- both ---------------------------------------------------------------------------

    async def _not_registered(
        self, exc: BackendUnavailable, unregister: Callable[[], Awaitable[bool]]
    ) -> bool:
        """The store failed to register the peer: close (the peer connects again later)."""
        log.warning("%s from %s: closing, cannot register: %s", self.peer, self.remote, exc)
        # Redis may have carried out the registration before failing to answer; the store
        # retries a failed unregistration by itself once Redis is back.
        with contextlib.suppress(BackendUnavailable):
            await unregister()
        return False

    def _refuse(self, exc: IdentityInUse) -> None:
        log.warning(
            "%s from %s refused (identityInUse): %s is connected from %s (core %s)",
            self.peer,
            self.remote,
            exc.existing.peer,
            exc.existing.remote,
            exc.existing.core_id,
        )
        self.send(self.conn.reject(self.loop.time()))

    async def _cleanup(self) -> None:
        try:
            if self.bank is not None:
                await self._bank_gone(self.bank)
            if self.client is not None:
                await self._client_gone(self.client)
        except BackendUnavailable as exc:  # the core stops: its lease ends the records
            log.warning("%s: left in the store: %s", self.peer, exc)
        except Exception:
            log.exception("%s: cleaning up after the connection failed", self.peer)

    async def _bank_gone(self, record: BankRecord) -> None:
        self.core._banks.pop(record.bank_id, None)
        # The maps first, while this connection still owns the bank: a new connection of
        # the bank (on any core) can only register after that. The store checks the
        # ownership in the same step: if this core's lease lapsed and the bank registered
        # elsewhere meanwhile, its maps are the new connection's.
        released = await self.persist(functools.partial(self.store.release_bank, record))
        if released is None:
            log.warning(
                "B%d: taken over by another connection; its maps left alone", record.bank_id
            )
        await self.core._announce_released(released or [], "its bankd is gone")
        await self._unregister(functools.partial(self.store.unregister_bank, record))
        log.info("B%d from %s disconnected", record.bank_id, record.remote)

    async def _client_gone(self, record: ClientRecord) -> None:
        self.core._clients.pop(record.client, None)
        if not self.core.stopping:
            # The client ended the connection: it may have restarted and forgotten its
            # configuration, so it is sent again when the client comes back (forgotten
            # before unregistering, so that its next connection reads it so).
            # Only if this connection still owns the client slot (see _bank_gone).
            await self.persist(functools.partial(self.store.forget_client_config, record))
        await self._unregister(functools.partial(self.store.unregister_client, record))
        log.info("%s from %s disconnected", record.client, record.remote)

    async def _unregister(self, unregister: Callable[[], Awaitable[bool]]) -> None:
        try:
            await unregister()
        except BackendUnavailable as exc:
            # Not retried here: the store keeps it and carries it out once Redis answers.
            log.warning("%s: unregistration deferred: %s", self.peer, exc)


async def _resolve(host: str) -> str:
    try:
        return str(ipaddress.ip_address(host))
    except ValueError:
        pass
    infos = await asyncio.get_running_loop().getaddrinfo(host, None, type=socket.SOCK_STREAM)
    infos.sort(key=lambda info: info[0] != socket.AF_INET)  # IPv4 first: any client has it
    return str(infos[0][4][0])


def _format_address(address: tuple[str, int] | tuple[str, int, int, int]) -> str:
    host, port = address[0], address[1]
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
