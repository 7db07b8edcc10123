"""The control core: accepts bankd and client control connections and carries out the
slotmap life cycle for the connections it holds.

Each connection is one actor (``remsim_server.peer.Peer``, a task with an inbox): PDUs from
the peer and "re-read the store" kicks from the bus are handled one at a time, so the
requests sent to a bankd stay in the order of the store and the responses can be matched to
them by order. State lives in the ``Store``; every change is announced on the ``Bus``, and
the core holding the affected bankd or client acts on it (which is this core, in the
single-host server).

While the store does not answer (Redis down), a connection's current step is retried every
``retry_interval`` seconds: the connection stays, and what the peer sent meanwhile waits in
its inbox. A peer that is not registered yet is closed instead (it connects again later).
Events are hints: one the bus cannot deliver now is made up for by the reset that follows
the bus's recovery.

Listeners (``start``): the control port speaks plaintext, or TLS when the core has
certificates; with a ``tls_port`` as well (an operator migrating from the original), the
control port stays plaintext and the TLS port is added; ``require_tls`` leaves out every
plaintext listener. A connection's TLS certificate decides which bankd or client it may be
(``remsim_server.role``). The core keeps the audit log ``audit_days`` days.

Connections are limited per port, per source address and, on all ports together, by the
file descriptor limit (``remsim_server.limits``); one over a limit is closed at once,
counted in ``remsim_connections_refused_total`` and logged at most once per interval.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import ipaddress
import logging
import socket
import ssl
import time
from collections import Counter
from collections.abc import Callable, Mapping, Sequence

import rspro
from remsim_common import BANKD_PORT, PeerIdentity, TransportSecurity
from remsim_common.limits import (
    ACCEPT_BURST,
    ConnectionLimits,
    Limit,
    accept_in_bursts,
    fd_limit,
)
from remsim_common.logs import RateLimitedLog
from remsim_common.transport import peer_subject
from remsim_control import (
    AuditEntry,
    BackendUnavailable,
    BankdAddress,
    Bus,
    ClientSlot,
    ResetEvent,
    Slotmap,
    SlotmapEvent,
    SlotmapState,
    Store,
)
from remsim_control.audit import AUDIT_RETENTION_DAYS
from remsim_server import lifecycle, metrics
from remsim_server.convert import unmapped_ip
from remsim_server.limits import (
    LOG_INTERVAL,
    MAX_CONNECTIONS,
    MAX_CONNECTIONS_PER_ADDRESS,
    fd_caps,
)
from remsim_server.peer import DELETED, Label, Peer, format_address, slotmap_audit, slotmap_fields
from remsim_server.role import (
    IDENTIFY_TIMEOUT,
    MAP_REQUEST_TIMEOUT,
    REJECT_DELAY,
    ServerConnection,
)
from remsim_server.settings import parse_host_port
from rspro.aio import LISTEN_BACKLOG
from rspro.connection import DEFAULT_KEEPALIVE

log = logging.getLogger("remsim.server")
maplog = logging.getLogger("remsim.server.slotmap")

RETRY_INTERVAL = 1.0
"""Seconds between two attempts while the store does not answer."""
RESYNC_INTERVAL = 30.0
"""Seconds between two re-reads of the store for every connection held (see _resync)."""
AUDIT_PRUNE_INTERVAL = 3600.0
"""Seconds between two prunings of the audit log (entries older than ``audit_days``)."""
DAY = 86400.0
"""Seconds in a day (``audit_days``)."""


class ControlCore:
    """The control server's connections. ``keepalive``: the IPA PING/PONG timing of each
    connection (``None``: no keepalive, as everywhere in rspro); ``security``: the socket
    security of the RSPRO listeners (plaintext by default); ``audit_days``: how long audit
    entries are kept. It is each connection's ``remsim_server.peer.Core``."""

    def __init__(
        self,
        store: Store,
        bus: Bus,
        *,
        identity: rspro.ComponentIdentity,
        core_id: str,
        bankd_port: int = BANKD_PORT,
        bankd_addresses: Mapping[int, str] | None = None,
        keepalive: rspro.Keepalive | None = DEFAULT_KEEPALIVE,
        identify_timeout: float = IDENTIFY_TIMEOUT,
        reject_delay: float = REJECT_DELAY,
        map_request_timeout: float = MAP_REQUEST_TIMEOUT,
        retry_interval: float = RETRY_INTERVAL,
        resync_interval: float = RESYNC_INTERVAL,
        security: TransportSecurity = TransportSecurity.PLAINTEXT,
        audit_days: float = AUDIT_RETENTION_DAYS,
        audit_prune_interval: float = AUDIT_PRUNE_INTERVAL,
        max_connections: int = MAX_CONNECTIONS,
        max_connections_per_address: int = MAX_CONNECTIONS_PER_ADDRESS,
        peer_log_interval: float = LOG_INTERVAL,
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
        self.map_request_timeout = map_request_timeout
        self.retry_interval = retry_interval
        self.resync_interval = resync_interval
        self.security = security
        self.audit_days = audit_days
        self.audit_prune_interval = audit_prune_interval
        self.limits = ConnectionLimits(max_connections, max_connections_per_address)
        self.peer_log = RateLimitedLog(log, peer_log_interval)
        """Log lines about what peers did wrong: at most one per interval and cause."""
        self.stopping = False
        self._banks: dict[int, Peer] = {}
        self._clients: dict[ClientSlot, Peer] = {}
        self._peers: set[Peer] = set()
        self._connections: Counter[Label] = Counter()
        self._bus_down = False
        self._control: asyncio.Server | None = None
        """The listener on the control port (plaintext, or TLS without a TLS port)."""
        self._tls: asyncio.Server | None = None
        """The listener on the TLS port, beside a plaintext control port."""
        self._dispatcher: asyncio.Task[None] | None = None
        self._audits: list[AuditEntry] = []
        """Entries of ``audit_soon`` not written yet, in order."""
        self._audit_writer: asyncio.Task[None] | None = None
        self._resyncer: asyncio.Task[None] | None = None
        self._pruner: asyncio.Task[None] | None = None

    @property
    def sockets(self) -> list[socket.socket]:
        """The control port's sockets (none with ``require_tls`` and a TLS port)."""
        return list(self._control.sockets) if self._control is not None else []

    @property
    def tls_sockets(self) -> list[socket.socket]:
        """The TLS port's sockets (none without a TLS port)."""
        return list(self._tls.sockets) if self._tls is not None else []

    async def start(self, host: str | None, port: int, tls_port: int | None = None) -> None:
        """Listen for RSPRO on ``host:port`` (and TLS on ``host:tls_port``, see the
        module's docstring); events are handled from when this returns."""
        tls = self.security.server_context
        if tls_port is not None and tls is None:
            raise ValueError("a TLS port needs a certificate, its key and the CA")
        subscribed = asyncio.Event()
        self._dispatcher = asyncio.create_task(self._dispatch(subscribed), name="bus")
        waiting = asyncio.create_task(subscribed.wait())
        await asyncio.wait({waiting, self._dispatcher}, return_when=asyncio.FIRST_COMPLETED)
        waiting.cancel()
        if not subscribed.is_set():  # the subscription failed
            self._dispatcher.result()
            raise BackendUnavailable("the bus subscription ended at once")
        try:
            if tls_port is None:
                self._control = await self._listen(host, port, tls)
            else:
                if not self.security.require_tls:
                    self._control = await self._listen(host, port, None)
                self._tls = await self._listen(host, tls_port, tls)
        except BaseException:
            for server in (self._control, self._tls):
                if server is not None:
                    server.close()
            self._dispatcher.cancel()
            raise
        self._cap_by_fd_limit()
        self._resyncer = asyncio.create_task(self._resync(), name="resync")
        self._pruner = asyncio.create_task(self._prune_audit(), name="audit-prune")

    async def _listen(
        self, host: str | None, port: int, tls: ssl.SSLContext | None
    ) -> asyncio.Server:
        server = await rspro.start_server(
            self._serve,
            host,
            port,
            keepalive=self.keepalive,
            ssl=tls,
            report_errors=False,  # the connection's Peer reports them, rate-limited
            on_tls_failure=self._tls_failed,
            admit=self._admit,
            backlog=ACCEPT_BURST,
        )
        how = " (mutual TLS)" if tls is not None else ""
        for sock in server.sockets:
            accept_in_bursts(sock, LISTEN_BACKLOG)  # queued: LISTEN_BACKLOG, not the burst
            log.info("RSPRO control listening on %s%s", format_address(sock.getsockname()), how)
        return server

    def _cap_by_fd_limit(self) -> None:
        """At most the RSPRO connections the file descriptor limit leaves room for, on all
        ports together (``limits.fd_caps``), if the per-port limit would allow more."""
        if (fds := fd_limit()) is None:
            return
        cap, _ = fd_caps(fds)
        ports = {sock.getsockname()[1] for sock in [*self.sockets, *self.tls_sockets]}
        if cap < self.limits.per_port * len(ports):
            self.limits.total = cap
            log.warning("serving at most %d RSPRO connections (file descriptor limit %d)",
                        cap, fds)  # fmt: skip

    def _tls_failed(self, peer: tuple[str, int], reason: str) -> None:
        metrics.PEER_ERRORS.labels("tls").inc()
        self.peer_log.log(
            logging.WARNING,
            "tls",
            "closing connection from %s: TLS handshake failed: %s",
            format_address(peer),
            reason,
            extra={"peer": format_address(peer), "cause": reason},
        )

    async def aclose(self) -> None:
        """Stop: close every connection (their bankds and clients may go to another core)."""
        self.stopping = True
        for server in (self._control, self._tls):
            if server is not None:
                server.close()
        for peer in list(self._peers):
            peer.close()
        tasks = [peer.task for peer in self._peers if peer.task is not None]
        if tasks:
            await asyncio.wait(tasks, timeout=5)
        if self._audit_writer is not None:  # what the connections left to write
            await asyncio.wait({self._audit_writer}, timeout=5)
        for task in (self._pruner, self._resyncer, self._dispatcher):
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
                        bank.kick(slot=event.bank, serial=event.serial)
                    if (client := self._clients.get(event.client)) is not None:
                        client.kick(settle=True, state=event.state)
                elif isinstance(event, ResetEvent):
                    self.kick_all(reset=event.global_reset)

    def kick_all(self, *, retry: bool = False, reset: bool = False) -> None:
        """Every connection held re-reads the store and acts on it (``retry``, ``reset``:
        see ``Peer.kick``)."""
        for peer in self._banks.values():
            peer.kick(retry=retry, reset=reset)
        for peer in self._clients.values():
            peer.kick()

    async def _resync(self) -> None:
        """Every ``resync_interval``: free the maps of banks whose core died (its lease
        lapsed) and that did not come back, and let every connection held re-read the
        store, as on a reset. This makes up for events the bus lost without anyone
        noticing (a slow consumer, a publication buffered when NATS broke), and retries
        the map requests that bankds did not answer in time."""
        while True:
            try:
                await self.release_orphans()
            except BackendUnavailable as exc:
                log.debug("resync: the store does not answer: %s", exc)
            except Exception:
                log.exception("resync failed")
            self.kick_all(retry=True)
            await asyncio.sleep(self.resync_interval)

    async def _prune_audit(self) -> None:
        """Every ``audit_prune_interval`` (from the start): drop the audit entries older
        than ``audit_days`` (every core does; dropping twice changes nothing)."""
        while True:
            before = time.time() - self.audit_days * DAY
            try:
                dropped = await self.store.prune_audit(before)
            except BackendUnavailable as exc:
                log.debug("audit pruning: the store does not answer: %s", exc)
            except Exception:
                log.exception("pruning the audit log failed")
            else:
                if dropped:
                    log.info(
                        "audit log: %d entries older than %g days dropped",
                        dropped,
                        self.audit_days,
                        extra={"core": self.core_id},
                    )
            await asyncio.sleep(self.audit_prune_interval)

    async def release_orphans(self) -> None:
        """Maps of banks without a live connection anywhere wait for their bank as NEW;
        maps being deleted are freed (their clients are told)."""
        await self.announce_released(await self.store.release_orphans(), "its bankd's core died")

    async def announce_released(self, maps: Sequence[Slotmap], why: str) -> None:
        """Log and publish the maps a bankd's loss changed (``maps``: as they were before;
        see ``lifecycle.on_bank_loss``)."""
        for slotmap in maps:
            if (state := lifecycle.on_bank_loss(slotmap)) is None:
                maplog.info("slotmap dropped", extra=slotmap_fields(slotmap, why))
            else:
                maplog.info(
                    "slotmap state change: %s -> %s",
                    slotmap.state,
                    state,
                    extra=slotmap_fields(slotmap, why),
                )
            await self.audit(
                slotmap_audit(self.core_id, slotmap, slotmap.state, state or DELETED, why)
            )
            await self.publish(slotmap)

    def _admit(
        self, sockname: tuple[str, int], peername: tuple[str, int]
    ) -> Callable[[], None] | None:
        """A new connection, before anything is read from it (before a TLS handshake):
        how to release it once it is over, or None if it is over a limit (logged)."""
        port, address = sockname[1], peername[0]
        if (limit := self.limits.admit(port, address)) is not None:
            metrics.CONNECTIONS_REFUSED.labels(limit).inc()
            self.peer_log.log(
                logging.WARNING,
                f"limit {limit}",
                "connection refused: %s",
                self._over(limit, port, address),
                extra={"peer": format_address(peername), "cause": f"{limit} limit"},
            )
            return None
        return functools.partial(self.limits.release, port, address)

    def _over(self, limit: Limit, port: int, address: str) -> str:
        """What a connection refused for ``limit`` was over, for the log."""
        if limit == "total":
            return f"{self.limits.total} connections on all RSPRO ports (file descriptor limit)"
        if limit == "port":
            return f"{self.limits.per_port} connections on port {port}"
        return f"{self.limits.per_address} connections from {address}"

    async def _serve(self, stream: rspro.RsproStream) -> None:
        tls = stream.get_extra_info("ssl_object")
        conn = ServerConnection(
            self.identity,
            asyncio.get_running_loop().time(),
            tls_subject=peer_subject(tls),
            certificate=PeerIdentity.from_peer(tls),
            identify_timeout=self.identify_timeout,
            reject_delay=self.reject_delay,
            map_request_timeout=self.map_request_timeout,
        )
        peer = Peer(self, stream, conn)
        self._peers.add(peer)
        try:
            await peer.run()
        finally:
            self._peers.discard(peer)

    # --- what a Peer asks of its core (remsim_server.peer.Core) ----------------------------

    def attach(self, peer: Peer) -> None:
        """Events for ``peer``'s bank or client are handled by ``peer`` from now on."""
        if peer.bank is not None:
            self._banks[peer.bank.bank_id] = peer
        elif peer.client is not None:
            self._clients[peer.client.client] = peer

    def detach(self, peer: Peer) -> None:
        """Events for ``peer``'s bank or client no longer go to a connection here."""
        if peer.bank is not None:
            self._banks.pop(peer.bank.bank_id, None)
        elif peer.client is not None:
            self._clients.pop(peer.client.client, None)

    def count_connection(self, before: Label | None, after: Label | None) -> None:
        """A connection moved from ``before`` to ``after`` (role, state) in
        ``remsim_connections``; ``None``: not counted (new, or gone)."""
        if before is not None:
            self._connections[before] -= 1
        if after is not None:
            self._connections[after] += 1
        metrics.set_connections(+self._connections)

    async def audit(self, entry: AuditEntry) -> None:
        """Write ``entry`` to the audit log; a store that fails costs the entry, never the
        connection (one log line)."""
        try:
            await self.store.add_audit(entry)
        except BackendUnavailable as exc:
            log.warning(
                "audit entry lost (%s %s %s): %s", entry.kind, entry.action, entry.result, exc
            )
        except Exception:
            log.exception("writing the audit log failed")

    def audit_soon(self, entry: AuditEntry) -> None:
        """Write ``entry`` in the background, in order: a map's state change waits for no
        audit round trip to Redis, and the entries that pile up meanwhile are written
        together (they share round trips)."""
        self._audits.append(entry)
        if self._audit_writer is None or self._audit_writer.done():
            self._audit_writer = asyncio.create_task(self._write_audits(), name="audit")

    async def _write_audits(self) -> None:
        while self._audits:
            batch, self._audits = self._audits, []
            # Started in order: every store appends them in this order.
            await asyncio.gather(*(self.audit(entry) for entry in batch))

    async def publish(self, slotmap: Slotmap, state: SlotmapState | None = None) -> bool:
        """Announce that ``slotmap`` changed (``state``: the state it is in now, if known:
        ``SlotmapEvent.state``); False if the bus did not take it (logged)."""
        try:
            await self.bus.publish(SlotmapEvent.of(slotmap, state))
        except BackendUnavailable as exc:
            # Every core re-reads the store when the bus is back (it hands out a reset).
            if not self._bus_down:
                log.warning("events cannot be sent now (%s); the cores catch up later", exc)
            self._bus_down = True
            return False
        if self._bus_down:
            log.info("events are sent again")
        self._bus_down = False
        return True

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
            log.error(
                "cannot resolve the bankd address %s (%s); using %s",
                host,
                exc,
                remote_host,
                extra={"bank": bank_id},
            )
            host = unmapped_ip(remote_host)
        return BankdAddress(host=host, port=port or self.bankd_port)


async def _resolve(host: str) -> str:
    try:
        return str(ipaddress.ip_address(host))
    except ValueError:
        pass
    infos = await asyncio.get_running_loop().getaddrinfo(host, None, type=socket.SOCK_STREAM)
    infos.sort(key=lambda info: info[0] != socket.AF_INET)  # IPv4 first: any client has it
    return str(infos[0][4][0])
