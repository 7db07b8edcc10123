"""Prometheus metrics of every remsim process, and its ``/healthz``, ``/readyz`` and
``/metrics`` endpoints.

The metric objects live in ``METRICS`` (one set per process, on prometheus-client's default
registry, next to its ``process_*`` metrics). The endpoints are answered by
``health_response`` -- wrapped as FastAPI routes by the server and the API -- and by
``HealthServer``, a tiny asyncio HTTP/1.1 responder for processes without a web framework
(the bankd).

- ``/healthz``: 200 while the process's event loop runs (liveness).
- ``/readyz``: 200 if every check of the process's ``ready`` callback passes, else 503; the
  body names the checks (``{"store": true, "bus": false}``).
- ``/metrics``: the Prometheus text format.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from collections.abc import Awaitable, Callable, Iterable, Mapping

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    REGISTRY,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
)

from remsim_control.models import SlotmapState

log = logging.getLogger(__name__)

TPDU_ROUNDTRIP_BUCKETS = (
    0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5,
)  # fmt: skip
"""From a software SIM's ~100 µs to a slow card's seconds."""

LINKS = ("server", "bankd", "client")
"""``link`` label values: the peer at the other end of the RSPRO link."""

DIRECTIONS = ("modem_to_card", "card_to_modem")


class Metrics:
    """remsim's metric families. Labels:

    - ``remsim_connections{role, state}`` (gauge): RSPRO connections this process holds, by
      the peer's role (``bankd``, ``client``, ``server``) and link/FSM state name.
    - ``remsim_slotmaps{state}`` (gauge): slotmaps by state (``NEW``, ``UNACKNOWLEDGED``, ...).
    - ``remsim_tpdus_relayed_total{direction}`` (counter).
    - ``remsim_tpdu_roundtrip_seconds`` (histogram): TPDU to the card until its answer.
    - ``remsim_reconnects_total{link}``, ``remsim_keepalive_timeouts_total{link}`` (counters).
    - ``remsim_build_info{component, version}`` (gauge, always 1).
    """

    def __init__(self, registry: CollectorRegistry | None = REGISTRY) -> None:
        self.connections = Gauge(
            "remsim_connections",
            "RSPRO connections held, by peer role and state.",
            ["role", "state"],
            registry=registry,
        )
        self.slotmaps = Gauge("remsim_slotmaps", "Slotmaps by state.", ["state"], registry=registry)
        self.tpdus_relayed = Counter(
            "remsim_tpdus_relayed",
            "TPDUs relayed between modem and card.",
            ["direction"],
            registry=registry,
        )
        self.tpdu_roundtrip = Histogram(
            "remsim_tpdu_roundtrip_seconds",
            "Time from a TPDU towards the card until the card's answer.",
            buckets=TPDU_ROUNDTRIP_BUCKETS,
            registry=registry,
        )
        self.reconnects = Counter(
            "remsim_reconnects",
            "RSPRO links re-established after a loss, by peer.",
            ["link"],
            registry=registry,
        )
        self.keepalive_timeouts = Counter(
            "remsim_keepalive_timeouts",
            "RSPRO links lost to an unanswered IPA PING, by peer.",
            ["link"],
            registry=registry,
        )
        self.build_info = Gauge(
            "remsim_build_info",
            "The remsim component and version of this process.",
            ["component", "version"],
            registry=registry,
        )
        # Series that exist from the start, so that rate() and alerts see zeros.
        for direction in DIRECTIONS:
            self.tpdus_relayed.labels(direction)
        for link in LINKS:
            self.reconnects.labels(link)
            self.keepalive_timeouts.labels(link)
        self.set_slotmaps({})

    def set_build_info(self, component: str, version: str) -> None:
        self.build_info.clear()
        self.build_info.labels(component, version).set(1)

    def set_slotmaps(self, counts: Mapping[SlotmapState, int]) -> None:
        """The slotmaps by state now (states not in ``counts`` are 0)."""
        for state in SlotmapState:
            self.slotmaps.labels(state.value).set(counts.get(state, 0))

    def count_slotmaps(self, states: Iterable[SlotmapState]) -> None:
        """``set_slotmaps`` from the states of every slotmap."""
        counts: dict[SlotmapState, int] = {}
        for state in states:
            counts[state] = counts.get(state, 0) + 1
        self.set_slotmaps(counts)

    def set_connections(self, counts: Mapping[tuple[str, str], int]) -> None:
        """The connections by (role, state) now; series not in ``counts`` disappear."""
        self.connections.clear()
        for (role, state), count in counts.items():
            self.connections.labels(role, state).set(count)


METRICS = Metrics()
"""This process's metrics."""

ReadyCheck = Callable[[], Awaitable[Mapping[str, bool]]]
"""Returns each readiness check by name, e.g. ``backends_ready(store, bus)``."""


async def _no_checks() -> Mapping[str, bool]:
    return {}


async def health_response(
    path: str,
    ready: ReadyCheck | None = None,
    *,
    registry: CollectorRegistry = REGISTRY,
    before_scrape: Callable[[], Awaitable[None]] | None = None,
) -> tuple[int, bytes, str] | None:
    """(status, body, content type) for ``/healthz``, ``/readyz`` or ``/metrics``; None for
    any other path. ``before_scrape`` updates gauges computed on demand (e.g. slotmaps by
    state from the store)."""
    if path == "/healthz":
        return 200, b"ok\n", "text/plain; charset=utf-8"
    if path == "/readyz":
        try:
            checks = dict(await (ready or _no_checks)())
        except Exception as exc:
            log.warning("readiness check failed: %s", exc)
            checks = {"check": False}
        status = 200 if all(checks.values()) else 503
        return status, json.dumps(checks).encode() + b"\n", "application/json"
    if path == "/metrics":
        if before_scrape is not None:
            try:
                await before_scrape()
            except Exception as exc:
                log.warning("metrics update failed: %s", exc)
        return 200, generate_latest(registry), CONTENT_TYPE_LATEST
    return None


# --- a tiny HTTP server for processes without a web framework ----------------------------

_REASONS = {200: "OK", 400: "Bad Request", 404: "Not Found", 405: "Method Not Allowed",
            503: "Service Unavailable"}  # fmt: skip


def parse_request_head(head: bytes) -> tuple[str, str] | None:
    """(method, path without query) of an HTTP/1.x request head, None if malformed."""
    request_line = head.split(b"\r\n", 1)[0].decode("latin-1")
    parts = request_line.split(" ")
    if len(parts) != 3 or not parts[2].startswith("HTTP/1."):
        return None
    return parts[0], parts[1].split("?", 1)[0]


def http_response(status: int, body: bytes, content_type: str, *, head_only: bool = False) -> bytes:
    """A complete HTTP/1.1 response; the connection closes after it."""
    head = (
        f"HTTP/1.1 {status} {_REASONS.get(status, 'Unknown')}\r\n"
        f"Content-Type: {content_type}\r\n"
        f"Content-Length: {len(body)}\r\n"
        "Connection: close\r\n\r\n"
    ).encode("latin-1")
    return head if head_only else head + body


class HealthServer:
    """Serves ``/healthz``, ``/readyz`` and ``/metrics`` over HTTP/1.1, one request per
    connection::

        health = HealthServer(ready=my_checks)
        await health.start("0.0.0.0", 9996)
        ...
        await health.close()
    """

    def __init__(
        self,
        ready: ReadyCheck | None = None,
        *,
        registry: CollectorRegistry = REGISTRY,
        before_scrape: Callable[[], Awaitable[None]] | None = None,
        timeout: float = 5.0,
    ) -> None:
        self._ready = ready
        self._registry = registry
        self._before_scrape = before_scrape
        self._timeout = timeout
        self._server: asyncio.Server | None = None

    @property
    def port(self) -> int:
        """The port listened on (useful after starting on port 0)."""
        assert self._server is not None, "not started"
        return int(self._server.sockets[0].getsockname()[1])

    async def start(self, host: str, port: int) -> None:
        self._server = await asyncio.start_server(self._serve, host, port)

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            async with asyncio.timeout(self._timeout):
                head = await reader.readuntil(b"\r\n\r\n")
                writer.write(await self._respond(head))
                await writer.drain()
        except (TimeoutError, asyncio.IncompleteReadError, asyncio.LimitOverrunError, OSError):
            pass
        finally:
            writer.close()
            with contextlib.suppress(OSError):
                await writer.wait_closed()

    async def _respond(self, head: bytes) -> bytes:
        request = parse_request_head(head)
        if request is None:
            return http_response(400, b"bad request\n", "text/plain")
        method, path = request
        if method not in ("GET", "HEAD"):
            return http_response(405, b"method not allowed\n", "text/plain")
        answer = await health_response(
            path, self._ready, registry=self._registry, before_scrape=self._before_scrape
        )
        if answer is None:
            return http_response(404, b"not found\n", "text/plain", head_only=method == "HEAD")
        return http_response(*answer, head_only=method == "HEAD")

    async def close(self) -> None:
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()
            self._server = None
