"""The running bankd: the core, the control link (asyncio) and the client connection threads.

Plumbing only. The event loop runs the control link, the accept loop and the core's
timers; each client connection has a thread (``clients.ClientConnection``) for its socket
and card calls. Every input reaches ``BankdCore`` through one of the typed methods below,
under one lock and on one clock (``time.monotonic``); calls are short: card calls and
socket I/O happen outside it. Every resulting action goes to the thread of the session it
names: returned to the caller when that is its own session, else posted.

Both RSPRO endpoints take their socket security from the one ``TransportSecurity`` given:
the client port (each accepted socket's TLS handshake is done in its connection thread,
never in the accept loop) and the control link to the server. Plaintext by default. With
TLS, what each client's certificate names goes to the core (``session_secured``), which
serves a client only the slots mapped to its ids; the control link talks only to a peer
whose certificate names the server.

The client port has limits (counted by ``remsim_common.limits``): at most ``max_clients``
connections (lowered to what the file descriptor limit allows: each connection takes
``FDS_PER_CONNECTION``) and
``max_clients_per_host`` from one address; a connection over a limit is accepted and closed
at once, without a thread, counted (``remsim_connections_refused_total``) and logged at
most once per ``REFUSAL_LOG_INTERVAL``.

The card inventory (``BankdConfig.inventory``, see ``config.InventoryMode``): one worker
thread identifies the cards the core names (``IdentifyCard``, ``inventory.identify``), one
at a time; each report (``ReportCards``) goes to the control link, which sends the latest
one to the server at every (re)connect and whenever it changes.

With ``BankdConfig.metrics`` set, ``remsim_common.HealthServer`` serves ``/healthz``,
``/readyz`` (ready while the control link to the server is connected and the card
driver's checks pass) and ``/metrics``.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import logging
import queue
import socket
import threading
import time
from dataclasses import dataclass, field

from remsim_common import (
    BANKD_PORT,
    HealthEndpoint,
    HealthServer,
    PeerIdentity,
    TransportSecurity,
    exposition,
)
from remsim_common.limits import ConnectionLimits, connections_allowed, fd_limit
from rspro import (
    ApduModemToCard,
    BankSlot,
    CardInfo,
    CardState,
    ComponentIdentity,
    ComponentType,
    CreateMappingReq,
    CreateMappingRes,
    Keepalive,
    Message,
    RemoveMappingReq,
    RemoveMappingRes,
    ResetStateReq,
    ResetStateRes,
    TpduModemToCard,
)
from rspro.tpdu import TpduFrames

from . import metrics
from .card import T0, Card, CardError, CardNotPresentError
from .clients import ClientConnection, tune_client_socket
from .config import (
    ALIVE_CHECK_TIMEOUT,
    CARD_RETRY,
    CLIENT_KEEPALIVE_INTERVAL,
    CLIENT_KEEPALIVE_TIMEOUT,
    DEFAULT_BANK_ID,
    DEFAULT_MAX_CLIENTS,
    DEFAULT_MAX_CLIENTS_PER_HOST,
    DEFAULT_NUM_SLOTS,
    IDENTIFY_TIMEOUT,
    PROGRAM,
    ApduMode,
    BankdSettings,
    InventoryMode,
)
from .control import ControlLink
from .core import INVENTORY_POLL, Action, BankdCore, Close, IdentifyCard, ReportCards
from .drivers import CardSource
from .gsmtap import GSMTAP_PORT, GsmtapTracer
from .inventory import identify

__all__ = [
    "ACCEPT_PAUSE",
    "FDS_PER_CONNECTION",
    "FD_RESERVE",
    "LISTEN_BACKLOG",
    "REFUSAL_LOG_INTERVAL",
    "SHUTDOWN_JOIN_TIMEOUT",
    "Bankd",
    "BankdConfig",
    "bankd_identity",
]

log = logging.getLogger("remsim.bankd")

CLIENT_KEEPALIVE = Keepalive(CLIENT_KEEPALIVE_INTERVAL, CLIENT_KEEPALIVE_TIMEOUT)

LISTEN_BACKLOG = 1024
"""Connections the kernel queues on the client port until the accept loop takes them."""
FDS_PER_CONNECTION = 2
"""File descriptors a client connection holds: its socket and its thread's wake-up eventfd."""
FD_RESERVE = 64
"""File descriptors kept free of client connections: listeners, the control link, cards,
logs, the health endpoint."""
CLIENT_PORT = 0
"""The key of the client port's count in ``Bankd.limits`` (a bankd listens on one port)."""
REFUSAL_LOG_INTERVAL = 10.0
"""Seconds between two log lines about refused client connections (the rest are counted)."""
ACCEPT_PAUSE = 0.1
"""Seconds the accept loop pauses when the process has no file descriptor left."""

SHUTDOWN_JOIN_TIMEOUT = 5.0
"""Seconds ``aclose`` waits for each client thread (a card call or a TLS handshake may still
be blocked; the thread is a daemon thread)."""


def bankd_identity(name: str, sw_version: str) -> ComponentIdentity:
    return ComponentIdentity(ComponentType.REMSIM_BANKD, name, "remsim-bankd", sw_version)


@dataclass(frozen=True)
class BankdConfig:
    """What a ``Bankd`` runs with: from ``BankdSettings`` (``from_settings``), or built by
    a test or tool without options and environment."""

    identity: ComponentIdentity
    bank_id: int = DEFAULT_BANK_ID
    num_slots: int = DEFAULT_NUM_SLOTS
    server: tuple[str, int] | None = None  # None: no control link (maps set on the core)
    bind: tuple[str | None, int] = ("0.0.0.0", BANKD_PORT)
    card_retry: float = CARD_RETRY
    gsmtap_host: str | None = None
    gsmtap_port: int = GSMTAP_PORT
    gsmtap_slot: int = -1
    server_keepalive: Keepalive = field(default_factory=Keepalive)
    client_keepalive: Keepalive = field(default_factory=lambda: CLIENT_KEEPALIVE)
    identify_timeout: float = IDENTIFY_TIMEOUT
    alive_check_timeout: float = ALIVE_CHECK_TIMEOUT
    max_clients: int = DEFAULT_MAX_CLIENTS
    max_clients_per_host: int = DEFAULT_MAX_CLIENTS_PER_HOST
    metrics: tuple[str, int] | None = None  # /healthz, /readyz, /metrics on (host, port)
    inventory: InventoryMode = "auto"
    inventory_poll: float = INVENTORY_POLL
    apdu_mode: ApduMode = "auto"

    @classmethod
    def from_settings(cls, settings: BankdSettings) -> BankdConfig:
        port = settings.metrics_port
        return cls(
            identity=bankd_identity(settings.name, PROGRAM.version),
            bank_id=settings.bank_id,
            num_slots=settings.num_slots,
            server=(settings.server_host, settings.server_port),
            bind=(settings.bind_ip or None, settings.bind_port),
            card_retry=settings.card_retry,
            client_keepalive=Keepalive(
                settings.client_keepalive_interval, settings.client_keepalive_timeout
            ),
            identify_timeout=settings.identify_timeout,
            max_clients=settings.max_clients,
            max_clients_per_host=settings.max_clients_per_host,
            gsmtap_host=settings.gsmtap_ip,
            gsmtap_slot=settings.gsmtap_slot,
            metrics=None if port is None else (settings.metrics_host, port),
            inventory=settings.inventory,
            apdu_mode=settings.apdu_mode,
        )


class Bankd:
    """One running bankd: ``await start()``, then ``await aclose()``."""

    def __init__(
        self,
        config: BankdConfig,
        cards: CardSource,
        security: TransportSecurity = TransportSecurity.PLAINTEXT,
    ) -> None:
        self.config = config
        self.cards = cards
        self.security = security
        inventory = config.inventory == "on" or (config.inventory == "auto" and security.tls)
        self.core = BankdCore(
            config.bank_id,
            config.num_slots,
            config.identity,
            card_retry=config.card_retry,
            inventory=inventory,
            inventory_poll=config.inventory_poll,
            apdu_mode=config.apdu_mode != "off",
        )
        self.lock = threading.Lock()
        self.connections: dict[int, ClientConnection] = {}
        # per port: config.max_clients, lowered to the FD limit by ``start``
        self.limits = ConnectionLimits(config.max_clients, config.max_clients_per_host)
        self._refusals = 0  # not logged yet
        self._refusal_log_at = 0.0  # time.monotonic() of the next allowed line
        self.control: ControlLink | None = None
        self.tracer: GsmtapTracer | None = None
        self.health: HealthServer | None = None
        self._cards: dict[BankSlot, Card] = {}
        self._identify: queue.SimpleQueue[BankSlot | None] = queue.SimpleQueue()
        self._inventory_thread: threading.Thread | None = None
        self._listener: socket.socket | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        # The core's clock is time.monotonic (client threads feed it card failures), not
        # the loop's: its deadlines are turned into delays for the loop.
        self._timer: asyncio.TimerHandle | None = None
        self._timer_deadline: float | None = None

    @property
    def port(self) -> int:
        """The TCP port clients connect to."""
        assert self._listener is not None
        return int(self._listener.getsockname()[1])

    @property
    def metrics_port(self) -> int:
        """The TCP port of /healthz, /readyz and /metrics."""
        assert self.health is not None
        return self.health.port

    async def start(self) -> None:
        """Listen for clients and for health checks (OSError if a port is taken), then
        register at the server."""
        self._loop = loop = asyncio.get_running_loop()
        cfg = self.config
        bank = {"bank": cfg.bank_id}
        if cfg.gsmtap_host is not None:
            self.tracer = GsmtapTracer(cfg.gsmtap_host, cfg.gsmtap_port, cfg.gsmtap_slot)
        host, port = cfg.bind
        family = socket.AF_INET6 if host and ":" in host else socket.AF_INET
        self._listener = socket.create_server(
            (host or "", port), family=family, backlog=LISTEN_BACKLOG
        )
        self._listener.setblocking(False)
        loop.add_reader(self._listener.fileno(), self._accept)
        tls = " (TLS)" if self.security.tls else ""
        log.info("listening for clients on %s:%d%s", host or "*", self.port, tls, extra=bank)
        if (fds := fd_limit()) is not None:
            allowed = connections_allowed(
                fds, reserve=FD_RESERVE, fds_per_connection=FDS_PER_CONNECTION
            )
            if allowed < self.limits.per_port:
                self.limits.per_port = allowed
                log.warning("serving at most %d client connections (file descriptor limit %d)",
                            allowed, fds, extra=bank)  # fmt: skip
        if cfg.metrics is not None:
            registry = exposition(cfg.identity.software, cfg.identity.sw_version, metrics.REGISTRY)
            endpoint = HealthEndpoint(registry, self.readiness, before_scrape=self._update_metrics)
            self.health = HealthServer(endpoint)
            try:
                await self.health.start(*cfg.metrics)
            except OSError:
                self.health = None
                await self.aclose()
                raise
            log.info("health and metrics on %s:%d", cfg.metrics[0] or "*", self.metrics_port)
        if cfg.server is not None:
            self.control = ControlLink(
                self.handle_control,
                cfg.identity,
                cfg.bank_id,
                cfg.num_slots,
                keepalive=cfg.server_keepalive,
                ssl=self.security.client_context,
            )
            self.control.start(*cfg.server)
        if self.core.inventory:
            self._inventory_thread = threading.Thread(
                target=self._inventory_worker, name="inventory", daemon=True
            )
            self._inventory_thread.start()
            with self.lock:
                self._route(None, self.core.start_inventory(time.monotonic()))
            self._arm_timer()

    async def aclose(self) -> None:
        """Stop: drop the server link and every client, power down and release all cards."""
        if self.health is not None:
            await self.health.close()
        if self.control is not None:
            await self.control.aclose()
        if self._listener is not None and self._loop is not None:
            self._loop.remove_reader(self._listener.fileno())
            self._listener.close()
        if self._timer is not None:
            self._timer.cancel()
        if self._inventory_thread is not None:
            self._identify.put(None)
            await asyncio.get_running_loop().run_in_executor(
                None, self._inventory_thread.join, SHUTDOWN_JOIN_TIMEOUT
            )
        with self.lock:
            connections = list(self.connections.values())
            for conn in connections:
                conn.post(Close(conn.sid, "bankd shutting down"))
        loop = asyncio.get_running_loop()
        for conn in connections:
            await loop.run_in_executor(None, conn.thread.join, SHUTDOWN_JOIN_TIMEOUT)
            if conn.thread.is_alive():
                log.warning(
                    "client connection %d still blocked at shutdown (card call or TLS handshake)",
                    conn.sid,
                    extra=conn.log_fields,
                )
        if self.tracer is not None:
            self.tracer.close()

    async def __aenter__(self) -> Bankd:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    # --- health and metrics -----------------------------------------------------------------

    async def readiness(self) -> dict[str, bool]:
        """``/readyz``: ready while registered at the server (no check without a server) and
        while the card driver's checks pass (``pcsc``: pcscd answers, a reader is there)."""
        checks = {} if self.control is None else {"server": self.control.connected}
        checks.update(await self.cards.readiness())
        return checks

    async def _update_metrics(self) -> None:
        with self.lock:
            states = [s.state.value for s in self.core.sessions.values()]
            maps = len(self.core.maps)
        server = None if self.control is None else self.control.state.value
        metrics.set_connections(server, states)
        metrics.set_slotmaps(maps)

    # --- the core: the inputs of the client threads -------------------------------------------
    # Each returns the actions for the calling session ``sid`` and posts all others.

    def session_secured(self, sid: int, identity: PeerIdentity | None) -> None:
        """The TLS handshake of ``sid`` is done: ``identity`` is what its certificate names."""
        with self.lock:
            self.core.session_secured(sid, identity)

    def drop(self, sid: int, why: str) -> list[Action]:
        """The connection of ``sid`` gives up on its client (a timeout): close it."""
        with self.lock:
            return self._route(sid, self.core.drop(sid, why))

    def alive(self, sid: int) -> list[Action]:
        """The client of ``sid`` answered its ``CheckAlive``."""
        with self.lock:
            return self._route(sid, self.core.alive(sid))

    def receive(self, sid: int, msg: Message) -> list[Action]:
        """A PDU from the client of ``sid``."""
        with self.lock:
            return self._route(sid, self.core.receive(sid, msg))

    def card_opened(self, sid: int, atr: bytes, protocol: int = T0) -> list[Action]:
        """``OpenCard`` or ``ResetCard`` of ``sid`` succeeded with ``atr``; the card speaks
        ``protocol``."""
        with self.lock:
            return self._route(sid, self.core.card_opened(sid, atr, protocol))

    def card_response(self, sid: int, tpdu: TpduModemToCard, response: bytes) -> list[Action]:
        """``Transmit`` of ``sid`` succeeded with the R-APDU ``response``."""
        with self.lock:
            return self._route(sid, self.core.card_response(sid, tpdu, response))

    def apdu_response(
        self, sid: int, msg: ApduModemToCard, rapdu: bytes, error: str | None = None
    ) -> list[Action]:
        """``TransmitApdu`` of ``sid`` succeeded with ``rapdu`` (or was answered by the
        bankd, ``error`` saying why)."""
        with self.lock:
            return self._route(sid, self.core.apdu_response(sid, msg, rapdu, error))

    def apdu_failed(self, sid: int, msg: ApduModemToCard, error: CardError) -> list[Action]:
        """``TransmitApdu`` of ``sid`` failed (a retry timer may start)."""
        with self.lock:
            actions = self._route(sid, self.core.apdu_failed(sid, msg, error, time.monotonic()))
        if self._loop is not None:
            self._loop.call_soon_threadsafe(self._arm_timer)
        return actions

    def tpdu_frames(self, sid: int) -> TpduFrames | None:
        """The TPDU frames of ``sid``'s slot pair while its card is open (the APDU path)."""
        with self.lock:
            slots = self.core.tpdu_slots(sid)
        return None if slots is None else TpduFrames(*slots)

    def tpdus_flow(self, sid: int, frames: TpduFrames) -> bool:
        """Whether ``sid``'s TPDUs between ``frames``' slots are relayed now."""
        with self.lock:
            return self.core.tpdus_flow(sid, frames.client, frames.bank)

    def card_failed(self, sid: int, error: CardError) -> list[Action]:
        """A card call of ``sid`` failed (a retry timer may start)."""
        with self.lock:
            actions = self._route(sid, self.core.card_failed(sid, error, time.monotonic()))
        if self._loop is not None:
            self._loop.call_soon_threadsafe(self._arm_timer)
        return actions

    def card_released(self, sid: int, slot: BankSlot) -> list[Action]:
        """``ReleaseCard`` of ``sid`` is done: ``slot`` is free for the next session."""
        with self.lock:
            return self._route(sid, self.core.card_released(slot))

    def session_closed(self, sid: int) -> list[Action]:
        """The connection of ``sid`` is closed: what is left for its thread to do."""
        with self.lock:
            conn = self.connections.pop(sid, None)
            if conn is not None:
                self.limits.release(CLIENT_PORT, conn.host)
            return self._route(sid, self.core.session_closed(sid))

    def card(self, slot: BankSlot) -> Card:
        """The card object of a bank slot (only its holder session uses it)."""
        with self.lock:
            card = self._cards.get(slot)
            if card is None:
                card = self._cards[slot] = self.cards.card(slot)
            return card

    def _route(self, me: int | None, actions: list[Action]) -> list[Action]:
        """(Under the lock.) The actions for session ``me``; the others posted to theirs."""
        mine: list[Action] = []
        for action in actions:
            if isinstance(action, IdentifyCard):
                self._identify.put(action.slot)
            elif isinstance(action, ReportCards):
                if self.control is not None and self._loop is not None:
                    with contextlib.suppress(RuntimeError):  # the loop is gone: shutting down
                        self._loop.call_soon_threadsafe(self.control.report, action.cards)
            elif action.sid == me:
                mine.append(action)
            else:
                conn = self.connections.get(action.sid)
                if conn is not None:
                    conn.post(action)
        return mine

    def _inventory_worker(self) -> None:
        """The inventory's thread: identify each slot the core names, one at a time."""
        while (slot := self._identify.get()) is not None:
            try:
                card = self.card(slot)
            except CardNotPresentError:  # no reader (or software SIM) for the slot
                info = CardInfo(slot.slot_nr, CardState.EMPTY)
            except CardError:
                info = CardInfo(slot.slot_nr, CardState.UNRESPONSIVE)
            else:
                try:
                    info = identify(card, slot.slot_nr)
                except Exception:  # a card answering nonsense must not keep its slot busy
                    log.exception("identifying the card of %s failed", slot)
                    info = CardInfo(slot.slot_nr, CardState.UNRESPONSIVE)
            with self.lock:
                self._route(None, self.core.card_identified(info))

    # --- event loop side --------------------------------------------------------------------

    def _accept(self) -> None:
        assert self._listener is not None
        while True:
            try:
                sock, address = self._listener.accept()
            except (BlockingIOError, InterruptedError):
                return
            except OSError as exc:
                if exc.errno in (errno.EMFILE, errno.ENFILE, errno.ENOBUFS, errno.ENOMEM):
                    self._refused("fds", "?", str(exc))
                    self._pause_accepting()
                else:
                    log.warning("accept failed: %s", exc)
                return
            host, port = address[:2]
            peer = f"{host}:{port}"
            with self.lock:
                limit = self.limits.admit(CLIENT_PORT, host)
            if limit == "port":
                sock.close()
                self._refused("port", peer, f"{self.limits.per_port} client connections already")
                continue
            if limit == "address":
                sock.close()
                why = f"{self.limits.per_address} client connections from {host}"
                self._refused("host", peer, why)
                continue
            try:
                tune_client_socket(sock)
            except OSError as exc:  # the client is already gone
                log.info("client connection lost at once: %s", exc)
                sock.close()
                with self.lock:
                    self.limits.release(CLIENT_PORT, host)
                continue
            with self.lock:
                sid = self.core.session_opened(peer)
                try:
                    conn = ClientConnection(self, sock, sid, peer, host)
                except OSError as exc:  # out of file descriptors
                    self.core.session_closed(sid)
                    self.limits.release(CLIENT_PORT, host)
                    sock.close()
                    self._refused("fds", peer, str(exc))
                    continue
                self.connections[sid] = conn
            log.debug("client connection %d from %s", sid, peer, extra={"peer": peer})
            conn.start()

    def _refused(self, cause: str, peer: str, why: str) -> None:
        """A client connection closed at once: counted; logged once per interval."""
        metrics.REFUSED.labels(cause).inc()
        self._refusals += 1
        now = time.monotonic()
        if now >= self._refusal_log_at:
            log.warning("client connection from %s refused: %s (%d refused since the last "
                        "such line)", peer, why, self._refusals,
                        extra={"peer": peer, "cause": cause})  # fmt: skip
            self._refusals = 0
            self._refusal_log_at = now + REFUSAL_LOG_INTERVAL

    def _pause_accepting(self) -> None:
        """No file descriptor left: stop accepting for a moment (the listener would stay
        readable and spin the loop)."""
        assert self._listener is not None and self._loop is not None
        listener = self._listener
        self._loop.remove_reader(listener.fileno())

        def resume() -> None:
            if self._listener is listener and listener.fileno() >= 0:
                self._loop.add_reader(listener.fileno(), self._accept)  # type: ignore[union-attr]

        self._loop.call_later(ACCEPT_PAUSE, resume)

    def handle_control(self, msg: Message) -> Message | None:
        """A request from the server: the reply, or None if it is not one of ours."""
        with self.lock:
            if isinstance(msg, CreateMappingReq):
                result, actions = self.core.create_mapping(msg.client, msg.bank)
                reply: Message = CreateMappingRes(result)
            elif isinstance(msg, RemoveMappingReq):
                result, actions = self.core.remove_mapping(msg.client, msg.bank)
                reply = RemoveMappingRes(result)
            elif isinstance(msg, ResetStateReq):
                result, actions = self.core.reset_state(time.monotonic())
                reply = ResetStateRes(result)
            else:
                return None
            self._route(None, actions)
        self._arm_timer()  # a reset leaves sessions to settle (RESET_GRACE)
        return reply

    def _arm_timer(self) -> None:
        assert self._loop is not None
        with self.lock:
            deadline = self.core.next_deadline()
        if self._timer is not None:
            if deadline is not None and self._timer_deadline == deadline:
                return
            self._timer.cancel()
            self._timer = None
        self._timer_deadline = deadline
        if deadline is not None:
            delay = max(0.0, deadline - time.monotonic())
            self._timer = self._loop.call_later(delay, self._on_timer)

    def _on_timer(self) -> None:
        self._timer = None
        self._timer_deadline = None
        with self.lock:
            self._route(None, self.core.handle_timeout(time.monotonic()))
        self._arm_timer()
