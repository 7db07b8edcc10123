"""The bankd on asyncio: wires the core to the control link, the client server and the slot workers.

Everything here is plumbing: inputs from sockets, threads and timers are fed to
``BankdCore``; its actions are carried out by ``dispatch``.
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass, field
from functools import partial

from rspro import BankSlot, ComponentIdentity, ComponentType, Keepalive, TpduModemToCard

from .card import CardError
from .clients import ClientServer
from .control import ControlLink
from .core import (
    Action,
    BankdCore,
    Close,
    OpenCard,
    ReleaseCard,
    ResetCard,
    Send,
    Transmit,
)
from .drivers import CardSource
from .gsmtap import GSMTAP_PORT, GsmtapTracer
from .worker import SlotWorker

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
    card_retry: float = 10.0
    gsmtap_host: str | None = None
    gsmtap_port: int = GSMTAP_PORT
    gsmtap_slot: int = -1
    server_keepalive: Keepalive = field(default_factory=Keepalive)


class Bankd:
    """One running bankd: ``await start()``, then ``await aclose()``."""

    def __init__(self, config: BankdConfig, cards: CardSource) -> None:
        self.config = config
        self.cards = cards
        self.core = BankdCore(
            config.bank_id, config.num_slots, config.identity, card_retry=config.card_retry
        )
        self.clients = ClientServer(self.core, self.dispatch)
        self.control: ControlLink | None = None
        self.tracer: GsmtapTracer | None = None
        self.workers: dict[BankSlot, SlotWorker] = {}
        self._loop: asyncio.AbstractEventLoop | None = None
        self._timer: asyncio.TimerHandle | None = None

    @property
    def port(self) -> int:
        """The TCP port clients connect to."""
        return self.clients.port

    async def start(self) -> None:
        """Listen for clients (raises OSError if the port is taken), then register at the server."""
        self._loop = asyncio.get_running_loop()
        cfg = self.config
        if cfg.gsmtap_host is not None:
            self.tracer = GsmtapTracer(cfg.gsmtap_host, cfg.gsmtap_port, cfg.gsmtap_slot)
        await self.clients.start(*cfg.bind)
        if cfg.server is not None:
            self.control = ControlLink(
                self.core, self.dispatch, cfg.identity, keepalive=cfg.server_keepalive
            )
            self.control.start(*cfg.server)

    async def aclose(self) -> None:
        """Stop: drop the server link and every client, power down and release all cards."""
        if self.control is not None:
            await self.control.aclose()
        await self.clients.aclose()
        if self._timer is not None:
            self._timer.cancel()
        for worker in self.workers.values():
            worker.release()
            worker.stop()
        loop = asyncio.get_running_loop()
        for worker in self.workers.values():
            if not await loop.run_in_executor(None, worker.join, 5.0):
                log.warning("%s: card call still blocked at shutdown", worker.slot)
        self.workers.clear()
        if self.tracer is not None:
            self.tracer.close()

    async def __aenter__(self) -> Bankd:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    # --- carrying out the core's actions ----------------------------------------------------

    def dispatch(self, actions: list[Action]) -> None:
        for action in actions:
            if type(action) is Send:
                self.clients.send(action.sid, action.msg)
            elif type(action) is Transmit:
                done = partial(self._transmitted, action.sid, action.tpdu)
                self._worker(action.slot).transmit(action.tpdu.data, done)
            elif isinstance(action, OpenCard):
                self._worker(action.slot).open(partial(self._opened, action.sid))
            elif isinstance(action, ResetCard):
                self._worker(action.slot).reset(action.warm, partial(self._opened, action.sid))
            elif isinstance(action, ReleaseCard):
                self._worker(action.slot).release()
            elif isinstance(action, Close):
                self.clients.close(action.sid)

    def _worker(self, slot: BankSlot) -> SlotWorker:
        worker = self.workers.get(slot)
        if worker is None:
            assert self._loop is not None
            worker = SlotWorker(slot, self.cards, self._loop, self.tracer)
            self.workers[slot] = worker
        return worker

    def _transmitted(self, sid: int, tpdu: TpduModemToCard, result: bytes | CardError) -> None:
        if isinstance(result, CardError):
            self._failed(sid, result)
        else:
            self.dispatch(self.core.card_response(sid, tpdu, result))

    def _opened(self, sid: int, result: bytes | CardError) -> None:
        if isinstance(result, CardError):
            self._failed(sid, result)
        else:
            self.dispatch(self.core.card_opened(sid, result))

    def _failed(self, sid: int, error: CardError) -> None:
        assert self._loop is not None
        self.dispatch(self.core.card_failed(sid, error, self._loop.time()))
        self._arm_timer()

    # --- the core's timers ------------------------------------------------------------------

    def _arm_timer(self) -> None:
        assert self._loop is not None
        deadline = self.core.next_deadline()
        if self._timer is not None:
            if deadline is not None and self._timer.when() == deadline:
                return
            self._timer.cancel()
            self._timer = None
        if deadline is not None:
            self._timer = self._loop.call_at(deadline, self._on_timer)

    def _on_timer(self) -> None:
        assert self._loop is not None
        self._timer = None
        self.dispatch(self.core.handle_timeout(self._loop.time()))
        self._arm_timer()
