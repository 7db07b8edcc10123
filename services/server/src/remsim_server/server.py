"""The single-host server: the control core and the REST API in one event loop, sharing an
in-memory store and bus (or the ones given)."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
from collections.abc import Iterator

import uvicorn

import rspro
from remsim_api.app import create_app
from remsim_control import Bus, MemoryBus, MemoryStore, Store
from remsim_server.core import ControlCore
from remsim_server.settings import ServerSettings

log = logging.getLogger("remsim.server")


class _EmbeddedUvicorn(uvicorn.Server):
    """uvicorn without its own signal handling: the process's owner stops it."""

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        yield


class RemsimServer:
    """Both servers; a store or bus given by the caller stays open after ``aclose()``."""

    def __init__(
        self, settings: ServerSettings, store: Store | None = None, bus: Bus | None = None
    ) -> None:
        self.settings = settings
        self._owns = (store is None, bus is None)
        self.store: Store = store if store is not None else MemoryStore()
        self.bus: Bus = bus if bus is not None else MemoryBus()
        identity = rspro.ComponentIdentity(
            type=rspro.ComponentType.REMSIM_SERVER,
            name=settings.identity_name,
            software="remsim-server",
            sw_version=settings.sw_version,
        )
        self.core = ControlCore(
            self.store,
            self.bus,
            identity=identity,
            core_id=settings.core_id,
            bankd_port=settings.bankd_port,
            bankd_addresses=settings.bankd_addresses,
            keepalive=rspro.Keepalive(settings.keepalive_interval, settings.keepalive_timeout),
            resync_interval=settings.resync_interval,
        )
        self._rest_socket: socket.socket | None = None
        self._uvicorn: _EmbeddedUvicorn | None = None
        self._rest_task: asyncio.Task[None] | None = None

    @property
    def rspro_port(self) -> int:
        return int(self.core.sockets[0].getsockname()[1])

    @property
    def rest_port(self) -> int:
        assert self._rest_socket is not None
        return int(self._rest_socket.getsockname()[1])

    async def start(self) -> None:
        """Bind both ports and serve; raises OSError if a port cannot be bound."""
        await self.core.start(self.settings.rspro_host, self.settings.rspro_port)
        try:
            await self._start_rest()
        except BaseException:
            await self.core.aclose()
            raise

    async def _start_rest(self) -> None:
        self._rest_socket = _bind(self.settings.rest_host, self.settings.rest_port)
        config = uvicorn.Config(
            create_app(self.store, self.bus, ready_needs_bus=False),
            log_config=None,
            server_header=False,
            log_level=self.settings.log_level.lower(),
            timeout_graceful_shutdown=2,
        )
        self._uvicorn = _EmbeddedUvicorn(config)
        self._rest_task = asyncio.create_task(self._uvicorn.serve(sockets=[self._rest_socket]))
        while not self._uvicorn.started:
            if self._rest_task.done():
                self._rest_task.result()
                raise OSError("the REST API did not start")
            await asyncio.sleep(0.005)
        log.info("REST API listening on %s:%d", self.settings.rest_host, self.rest_port)

    async def aclose(self) -> None:
        if self._uvicorn is not None and self._rest_task is not None:
            self._uvicorn.should_exit = True
            await self._rest_task
        if self._rest_socket is not None:
            self._rest_socket.close()
        await self.core.aclose()
        owns_store, owns_bus = self._owns
        if owns_bus:
            await self.bus.close()
        if owns_store:
            await self.store.close()

    async def __aenter__(self) -> RemsimServer:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()


def _bind(host: str, port: int) -> socket.socket:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.create_server((host, port), family=family, reuse_port=False)
    sock.setblocking(False)
    return sock
