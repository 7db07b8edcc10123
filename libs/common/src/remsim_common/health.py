"""The one health and metrics endpoint of every remsim process.

``HealthEndpoint`` is an ASGI app answering

- ``/healthz``: 200 while the process's event loop runs (liveness);
- ``/readyz``: 200 if every check of the process's ``ready`` callback passes, else 503, with
  the checks as JSON (``{"store": true, "bus": false}``);
- ``/metrics``: Prometheus (prometheus-client's own ASGI app: text or OpenMetrics, gzip).

The REST processes mount it next to their API; the others serve it alone on uvicorn with
``HealthServer``. Metrics: each component keeps its families in a registry of its own
(``component_registry()``); ``exposition()`` joins the process's components with the
process collectors and one ``remsim_build_info``.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import socket
from collections.abc import Awaitable, Callable, Iterator, Mapping
from typing import Any

import uvicorn
from prometheus_client import (
    REGISTRY,
    CollectorRegistry,
    Gauge,
    disable_created_metrics,
    make_asgi_app,
)

from .limits import ACCEPT_BURST, accept_in_bursts
from .ports import LISTEN_BACKLOG

__all__ = [
    "HEALTH_PATHS",
    "AsgiServer",
    "EmbeddedServer",
    "HealthEndpoint",
    "HealthServer",
    "ReadyCheck",
    "bind",
    "component_registry",
    "exposition",
]

log = logging.getLogger("remsim.health")

disable_created_metrics()  # type: ignore[no-untyped-call]  # no ``*_created`` series next to every counter and histogram

HEALTH_PATHS = ("/healthz", "/readyz", "/metrics")

ReadyCheck = Callable[[], Awaitable[Mapping[str, bool]]]
"""Returns each readiness check by name."""

Scope = dict[str, Any]
Receive = Callable[[], Awaitable[dict[str, Any]]]
Send = Callable[[dict[str, Any]], Awaitable[None]]

SHUTDOWN_TIMEOUT = 2.0
"""Seconds ``HealthServer.close`` waits for open scrapes."""
HEALTH_BACKLOG = 128
"""Listen backlog of the health port (probes and scrapes, a few at a time)."""
STARTUP_POLL = 0.005
"""Seconds between two looks at whether uvicorn has started."""


def component_registry() -> CollectorRegistry:
    """A registry for one component's metric families (never the process-wide default)."""
    return CollectorRegistry(auto_describe=True)


def exposition(component: str, version: str, *registries: CollectorRegistry) -> CollectorRegistry:
    """What ``/metrics`` shows for a process: its components' registries, the process and
    platform collectors, and ``remsim_build_info{component, version} 1``."""
    joined = CollectorRegistry()
    joined.register(REGISTRY)  # process_*, python_*, gc
    for registry in registries:
        joined.register(registry)
    Gauge(
        "remsim_build_info",
        "The remsim component and version of this process.",
        ["component", "version"],
        registry=joined,
    ).labels(component, version).set(1)
    return joined


async def _no_checks() -> Mapping[str, bool]:
    return {}


class HealthEndpoint:
    """ASGI app for ``/healthz``, ``/readyz`` and ``/metrics``; 404 for anything else."""

    def __init__(
        self,
        registry: CollectorRegistry,
        ready: ReadyCheck | None = None,
        *,
        before_scrape: Callable[[], Awaitable[None]] | None = None,
    ) -> None:
        self._ready = ready or _no_checks
        self._before_scrape = before_scrape
        self._metrics = make_asgi_app(registry)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "lifespan":
            await _lifespan(receive, send)
            return
        if scope["type"] != "http":
            return
        path, method = scope["path"], scope["method"]
        if path not in HEALTH_PATHS:
            await _respond(send, 404, b"not found\n", "text/plain; charset=utf-8", method)
        elif method not in ("GET", "HEAD"):
            await _respond(send, 405, b"method not allowed\n", "text/plain; charset=utf-8", method)
        elif path == "/healthz":
            await _respond(send, 200, b"ok\n", "text/plain; charset=utf-8", method)
        elif path == "/readyz":
            checks = await self.checks()
            status = 200 if all(checks.values()) else 503
            await _respond(
                send, status, json.dumps(checks).encode() + b"\n", "application/json", method
            )
        else:
            if self._before_scrape is not None:
                try:
                    await self._before_scrape()
                except Exception as exc:  # a scrape still shows what is known
                    log.warning("metrics update failed: %s", exc)
            await self._metrics(scope, receive, send)

    async def checks(self) -> dict[str, bool]:
        try:
            return dict(await self._ready())
        except Exception as exc:
            log.warning("readiness check failed: %s", exc)
            return {"check": False}


async def _respond(send: Send, status: int, body: bytes, content_type: str, method: str) -> None:
    headers = [(b"content-type", content_type.encode()), (b"content-length", b"%d" % len(body))]
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": b"" if method == "HEAD" else body})


async def _lifespan(receive: Receive, send: Send) -> None:
    while True:
        message = await receive()
        if message["type"] == "lifespan.startup":
            await send({"type": "lifespan.startup.complete"})
        elif message["type"] == "lifespan.shutdown":
            await send({"type": "lifespan.shutdown.complete"})
            return


class EmbeddedServer(uvicorn.Server):
    """uvicorn inside a program's own event loop: the program keeps its signal handlers."""

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        yield


def bind(host: str, port: int, backlog: int = LISTEN_BACKLOG) -> socket.socket:
    """A listening, non-blocking TCP socket for uvicorn (IPv6 if ``host`` is a v6 literal);
    OSError if the port is taken."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.create_server((host, port), family=family, backlog=backlog)
    # The accepted connections inherit it. asyncio sets TCP_NODELAY only on sockets whose
    # proto is IPPROTO_TCP, and create_server's (and so accept()'s) is 0: without this,
    # uvicorn's two writes per answer (head, body) met Nagle and the client's delayed ACK,
    # 40 ms per request on a keep-alive connection.
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    sock.setblocking(False)
    return sock


class AsgiServer:
    """An ASGI app on uvicorn, in the running event loop (``EmbeddedServer``)::

        server = AsgiServer(app, timeout_graceful_shutdown=2.0)  # uvicorn.Config options
        await server.start("0.0.0.0", 9997)
        ...
        await server.close()

    ``shutdown_timeout``: seconds ``close`` waits for the server to finish (None: until it
    has); ``backlog``: of the listening socket. uvicorn accepts ``ACCEPT_BURST``
    connections at a time (``remsim_common.limits``).
    """

    def __init__(
        self,
        app: Callable[..., Awaitable[None]],
        *,
        shutdown_timeout: float | None = None,
        backlog: int = LISTEN_BACKLOG,
        **options: Any,
    ) -> None:
        self._app = app
        self._options = {"log_config": None, "server_header": False, **options}
        self._shutdown_timeout = shutdown_timeout
        self._backlog = backlog
        self._server: EmbeddedServer | None = None
        self._task: asyncio.Task[None] | None = None
        self._sock: socket.socket | None = None

    @property
    def port(self) -> int:
        """The port listened on (useful after starting on port 0)."""
        assert self._sock is not None, "not started"
        return int(self._sock.getsockname()[1])

    async def start(self, host: str, port: int) -> None:
        """Bind (OSError if the port is taken) and serve in the background."""
        self._sock = bind(host, port, self._backlog)
        config = uvicorn.Config(self._app, backlog=ACCEPT_BURST, **self._options)
        self._server = EmbeddedServer(config)
        self._task = asyncio.create_task(self._server.serve(sockets=[self._sock]))
        while not self._server.started:
            if self._task.done():
                self._task.result()  # raise what stopped it
                raise OSError("the HTTP server did not start")
            await asyncio.sleep(STARTUP_POLL)
        accept_in_bursts(self._sock, self._backlog)

    async def close(self) -> None:
        if self._server is not None and self._task is not None:
            self._server.should_exit = True
            if self._shutdown_timeout is None:
                await self._task
            else:
                with contextlib.suppress(TimeoutError, asyncio.CancelledError):
                    await asyncio.wait_for(self._task, self._shutdown_timeout)
        if self._sock is not None:
            self._sock.close()
        self._server = self._task = self._sock = None


class HealthServer(AsgiServer):
    """``app`` (usually a ``HealthEndpoint``) on uvicorn, in the running event loop::

    health = HealthServer(HealthEndpoint(registry, ready=checks))
    await health.start("0.0.0.0", 9996)
    ...
    await health.close()
    """

    def __init__(self, app: Callable[..., Awaitable[None]]) -> None:
        super().__init__(
            app,
            shutdown_timeout=SHUTDOWN_TIMEOUT,
            backlog=HEALTH_BACKLOG,
            access_log=False,
            lifespan="off",
        )
