"""The server process: the control core and the REST API in one event loop, sharing an
in-memory store and bus (single host) or the ones given (Redis and NATS)."""

from __future__ import annotations

import logging

import rspro
from remsim_api.app import create_app
from remsim_api.limits import http_options
from remsim_api.security import ApiSecurity, tls_options
from remsim_common import TransportSecurity
from remsim_common.health import AsgiServer
from remsim_common.limits import fd_limit
from remsim_control import Bus, MemoryBus, MemoryStore, Store
from remsim_server import metrics
from remsim_server.core import ControlCore
from remsim_server.limits import fd_caps
from remsim_server.pools import PoolScheduler
from remsim_server.settings import ServerSettings

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
        self._rest: AsgiServer | None = None
        self.pools = PoolScheduler(
            self.store,
            self.bus,
            owner=settings.core_id,
            block_after=settings.pool_block_after,
            duty_ttl=settings.lease_ttl,  # a dead core's duty lapses with its registry entries
        )

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
        assert self._rest is not None
        return self._rest.port

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
        await self.pools.start()  # SIM pools and rules (remsim_server.pools)

    async def _start_rest(self) -> None:
        app = create_app(
            self.store,
            self.bus,
            ready_needs_bus=False,
            registry=metrics.exposition(),
            security=ApiSecurity.from_settings(self.settings),
        )
        fds = fd_limit()
        most = None if fds is None else fd_caps(fds)[1]  # the RSPRO ports have the rest
        self._rest = AsgiServer(
            app,
            log_level=None,  # uvicorn's loggers follow -e and -d (DREST) like every other
            timeout_graceful_shutdown=REST_SHUTDOWN_TIMEOUT,
            **http_options(self.settings, most),  # limits, timeouts, problems for bad HTTP
            **tls_options(self.settings),  # HTTPS with the server's certificate
        )
        await self._rest.start(self.settings.rest_host, self.settings.rest_port)
        log.info("REST API listening on %s:%d", self.settings.rest_host, self.rest_port)
        if most is not None:
            log.info("serving at most %d REST connections (file descriptor limit %d)", most, fds)

    async def aclose(self) -> None:
        await self.pools.aclose()
        if self._rest is not None:
            await self._rest.close()
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
