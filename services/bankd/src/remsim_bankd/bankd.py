"""The running bankd: the core, the control link (asyncio) and the client connection threads.

Plumbing only. The event loop runs the control link, the accept loop and the core's
timers; each client connection has a thread (``clients.ClientConnection``) for its socket
and card calls. Every input reaches ``BankdCore`` under one lock (calls are short: card calls
and socket I/O happen outside it) and every resulting action goes to the thread of the
session it names: run right away by the caller when that is its own session, else posted.

With ``BankdConfig.metrics`` set, an HTTP responder serves ``/healthz``, ``/readyz`` (ready
while the control link to the server is connected) and ``/metrics`` (Prometheus).
"""

from __future__ import annotations

import asyncio
import logging
import socket
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from remsim_control.metrics import METRICS, HealthServer
from rspro import (
    BankSlot,
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
)

from .card import Card, CardError
from .clients import ClientConnection, tune_client_socket
from .control import ControlLink
from .core import Action, BankdCore, Close
from .drivers import CardSource
from .gsmtap import GSMTAP_PORT, GsmtapTracer

__all__ = ["Bankd", "BankdConfig", "bankd_identity"]

log = logging.getLogger("remsim_bankd")


def bankd_identity(name: str, sw_version: str) -> ComponentIdentity:
    return ComponentIdentity(ComponentType.REMSIM_BANKD, name, "remsim-bankd", sw_version)


@dataclass
class BankdConfig:
    identity: ComponentIdentity
    bank_id: int = 1
    num_slots: int = 8
    server: tuple[str, int] | None = None  # None: no control link (maps set on the core)
    bind: tuple[str | None, int] = ("0.0.0.0", 9999)
    card_retry: float = 2.0
    gsmtap_host: str | None = None
    gsmtap_port: int = GSMTAP_PORT
    gsmtap_slot: int = -1
    server_keepalive: Keepalive = field(default_factory=Keepalive)
    metrics: tuple[str, int] | None = None  # /healthz, /readyz, /metrics on (host, port)


class Bankd:
    """One running bankd: ``await start()``, then ``await aclose()``."""

    def __init__(self, config: BankdConfig, cards: CardSource) -> None:
        self.config = config
        self.cards = cards
        self.core = BankdCore(
            config.bank_id, config.num_slots, config.identity, card_retry=config.card_retry
        )
        self.lock = threading.Lock()
        self.connections: dict[int, ClientConnection] = {}
        self.control: ControlLink | None = None
        self.tracer: GsmtapTracer | None = None
        self.health: HealthServer | None = None
        self._cards: dict[BankSlot, Card] = {}
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
        if cfg.gsmtap_host is not None:
            self.tracer = GsmtapTracer(cfg.gsmtap_host, cfg.gsmtap_port, cfg.gsmtap_slot)
        host, port = cfg.bind
        family = socket.AF_INET6 if host and ":" in host else socket.AF_INET
        self._listener = socket.create_server((host or "", port), family=family, backlog=64)
        self._listener.setblocking(False)
        loop.add_reader(self._listener.fileno(), self._accept)
        log.info("listening for clients on %s:%d", host or "*", self.port)
        if cfg.metrics is not None:
            METRICS.set_build_info(cfg.identity.software, cfg.identity.sw_version)
            self.health = HealthServer(self.readiness, before_scrape=self._count_connections)
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
            )
            self.control.start(*cfg.server)

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
        with self.lock:
            connections = list(self.connections.values())
            for conn in connections:
                conn.post(Close(conn.sid, "bankd shutting down"))
        loop = asyncio.get_running_loop()
        for conn in connections:
            await loop.run_in_executor(None, conn.thread.join, 5.0)
            if conn.thread.is_alive():
                log.warning("client %s: card call still blocked at shutdown", conn.peer)
        if self.tracer is not None:
            self.tracer.close()

    async def __aenter__(self) -> Bankd:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    # --- health and metrics -----------------------------------------------------------------

    async def readiness(self) -> dict[str, bool]:
        """``/readyz``: ready while registered at the server (no check without a server)."""
        return {} if self.control is None else {"server": self.control.connected}

    async def _count_connections(self) -> None:
        counts: dict[tuple[str, str], int] = {}
        if self.control is not None:
            counts["server", self.control.state.value] = 1
        with self.lock:
            states = [s.state for s in self.core.sessions.values()]
        for state in states:
            key = ("client", state.value)
            counts[key] = counts.get(key, 0) + 1
        METRICS.set_connections(counts)

    # --- the core, under the lock -----------------------------------------------------------

    def run(self, me: int | None, fn: Callable[..., list[Action]], *args: Any) -> list[Action]:
        """Feed the core; returns the actions for session ``me``, posts all others."""
        with self.lock:
            return self._route(me, fn(*args))

    def _route(self, me: int | None, actions: list[Action]) -> list[Action]:
        mine = []
        for action in actions:
            if action.sid == me:
                mine.append(action)
            else:
                conn = self.connections.get(action.sid)
                if conn is not None:
                    conn.post(action)
        return mine

    def card_failed(self, sid: int, error: CardError) -> list[Action]:
        actions = self.run(sid, self.core.card_failed, sid, error, time.monotonic())
        if self._loop is not None:
            self._loop.call_soon_threadsafe(self._arm_timer)
        return actions

    def end_session(self, sid: int) -> list[Action]:
        """The connection of ``sid`` is closed: what is left for its thread to do."""
        with self.lock:
            self.connections.pop(sid, None)
            return self._route(sid, self.core.session_closed(sid))

    def card(self, slot: BankSlot) -> Card:
        """The card object of a bank slot (only its holder session uses it)."""
        with self.lock:
            card = self._cards.get(slot)
            if card is None:
                card = self._cards[slot] = self.cards.card(slot)
            return card

    # --- event loop side --------------------------------------------------------------------

    def _accept(self) -> None:
        assert self._listener is not None
        while True:
            try:
                sock, _ = self._listener.accept()
            except (BlockingIOError, InterruptedError):
                return
            except OSError as exc:
                log.warning("accept failed: %s", exc)
                return
            try:
                tune_client_socket(sock)
                host, port = sock.getpeername()[:2]
            except OSError as exc:  # the client is already gone
                log.info("client connection lost at once: %s", exc)
                sock.close()
                continue
            with self.lock:
                sid = self.core.session_opened()
                try:
                    conn = ClientConnection(self, sock, sid, f"{host}:{port}")
                except OSError as exc:  # out of file descriptors
                    log.error("cannot serve client %s:%s: %s", host, port, exc)
                    self.core.session_closed(sid)
                    sock.close()
                    continue
                self.connections[sid] = conn
            log.debug("client %s connected (%d)", conn.peer, sid)
            conn.start()

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
                result, actions = self.core.reset_state()
                reply = ResetStateRes(result)
            else:
                return None
            self._route(None, actions)
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
        self.run(None, self.core.handle_timeout, time.monotonic())
        self._arm_timer()
