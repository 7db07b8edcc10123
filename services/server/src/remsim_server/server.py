"""The server process: the control core and the REST API in one event loop, sharing an
in-memory store and bus (single host) or the ones given (Redis and NATS)."""

from __future__ import annotations

import asyncio
import logging
import socket

import uvicorn

import rspro
from remsim_api.app import create_app
from remsim_api.limits import http_options
from remsim_api.security import ApiSecurity, tls_options
from remsim_common import TransportSecurity
from remsim_common.health import EmbeddedServer
from remsim_control import Bus, MemoryBus, MemoryStore, Store
from remsim_server import metrics
from remsim_server.core import ControlCore
from remsim_server.settings import ServerSettings
from rspro.aio import LISTEN_BACKLOG

log = logging.getLogger("remsim.server")

REST_SHUTDOWN_TIMEOUT = 2
"""Seconds the REST API waits for open requests when the server stops."""


class RemsimServer:
    """Both servers; a store or bus given by the caller stays open after ``aclose()``.

    ``security``: the socket security of the RSPRO control port (None: from ``settings``,
    plaintext unless its TLS files are set; raises ``OSError`` for files it cannot use).
    """

    def __init__(
        self,
        settings: ServerSettings,
        store: Store | None = None,
        bus: Bus | None = None,
        *,
        security: TransportSecurity | None = None,
    ) -> None:
        self.settings = settings
        if security is None:
            security = TransportSecurity.from_settings(settings)
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
            identify_timeout=settings.identify_timeout,
            map_request_timeout=settings.map_request_timeout,
            resync_interval=settings.resync_interval,
            security=security,
            audit_days=settings.audit_days,
            max_connections=settings.max_connections,
            max_connections_per_address=settings.max_connections_per_address,
            peer_log_interval=settings.peer_log_interval,
        )
        self._rest_socket: socket.socket | None = None
        self._uvicorn: EmbeddedServer | None = None
        self._rest_task: asyncio.Task[None] | None = None

    @property
    def rspro_port(self) -> int:
        """The control port (none with ``require_tls`` and a TLS port: IndexError)."""
        return int(self.core.sockets[0].getsockname()[1])

    @property
    def tls_port(self) -> int:
        """The TLS port beside the control port (IndexError without ``tls_port``)."""
        return int(self.core.tls_sockets[0].getsockname()[1])

    @property
    def rest_port(self) -> int:
        assert self._rest_socket is not None
        return int(self._rest_socket.getsockname()[1])

    async def start(self) -> None:
        """Bind both ports and serve; raises OSError if a port cannot be bound."""
        await self.core.start(
            self.settings.rspro_host, self.settings.rspro_port, self.settings.tls_port
        )
        try:
            await self._start_rest()
        except BaseException:
            await self.core.aclose()
            raise

    async def _start_rest(self) -> None:
        self._rest_socket = _bind(self.settings.rest_host, self.settings.rest_port)
        app = create_app(
            self.store,
            self.bus,
            ready_needs_bus=False,
            registry=metrics.exposition(),
            security=ApiSecurity.from_settings(self.settings),
        )
        config = uvicorn.Config(
            app,
            log_config=None,
            log_level=None,  # uvicorn's loggers follow -e and -d (DREST) like every other
            server_header=False,
            timeout_graceful_shutdown=REST_SHUTDOWN_TIMEOUT,
            **http_options(self.settings),  # limits, timeouts, problems for bad HTTP
            **tls_options(self.settings),  # HTTPS with the server's certificate
        )
        self._uvicorn = EmbeddedServer(config)
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
    sock = socket.create_server(
        (host, port), family=family, backlog=LISTEN_BACKLOG, reuse_port=False
    )
    sock.setblocking(False)
    return sock
