"""Choosing the store and the bus: in memory or in an SQLite file (one host), or Redis + NATS.

``remsim-server`` and ``remsim-api`` call ``open_backends(settings)`` with their settings
(any object with the attributes of ``BackendSettings``, e.g. their pydantic-settings class
with ``REMSIM_STATE_DIR``, ``REMSIM_REDIS_URL``, ``REMSIM_NATS_URL``, ``REMSIM_LEASE_TTL``).
``remsim-server``'s settings fill in ``state_dir`` (``--store sqlite``, its default on one
host: ``default_state_dir()`` unless ``--state-dir`` names one) or leave it unset
(``--store memory``, or Redis); ``remsim-api`` keeps its state in memory unless told:

==========  ==========  =========  ==============================================================
state_dir   redis_url   nats_url   store / bus
==========  ==========  =========  ==============================================================
unset       unset       unset      MemoryStore / MemoryBus (all in one process, nothing kept)
set         unset       unset      SqliteStore in ``state_dir`` / MemoryBus (one process; maps,
                                   client configurations and the audit log survive its restart)
unset       set         unset      a server core: RedisStore / MemoryBus (exactly one core, its
                                   state kept; only its embedded API changes it). An API
                                   process: refused, no core would hear of its changes
unset       set         set        RedisStore / NatsBus (several cores and APIs)
unset       unset       set        refused: events without shared state
set         set         any        refused (so is state_dir with nats_url): the state is in
                                   the file or in Redis, not both
==========  ==========  =========  ==============================================================
"""

from __future__ import annotations

import asyncio
import logging
import os
import secrets
import socket
import weakref
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Protocol, TypeVar

from remsim_control.bus import Bus, ResetEvent
from remsim_control.errors import BackendUnavailable
from remsim_control.store import Store

__all__ = [
    "BackendSettings",
    "BackendUnavailable",
    "backends_ready",
    "default_state_dir",
    "new_core_id",
    "open_backends",
    "require_ready",
    "state_location",
]

log = logging.getLogger(__name__)
T = TypeVar("T")


class BackendSettings(Protocol):
    @property
    def state_dir(self) -> Path | None:
        """One host: the directory of the SQLite state file; None: in memory."""
        ...

    @property
    def redis_url(self) -> str | None: ...

    @property
    def nats_url(self) -> str | None: ...

    @property
    def lease_ttl(self) -> float:
        """Seconds after which a dead core's registry entries vanish."""
        ...


def default_state_dir() -> Path:
    """Where a single host keeps its state unless told: ``$XDG_STATE_HOME/remsim``, else
    ``~/.local/state/remsim`` (the XDG base directories; a relative ``XDG_STATE_HOME`` is
    ignored, as the specification says). The systemd unit sets ``REMSIM_STATE_DIR``
    (/var/lib/remsim) instead."""
    base = os.environ.get("XDG_STATE_HOME", "")
    root = Path(base) if os.path.isabs(base) else Path.home() / ".local" / "state"
    return root / "remsim"


def state_location(store: Store) -> str:
    """Where ``store`` keeps the state, for the start-up log line."""
    from remsim_control.memory_store import MemoryStore
    from remsim_control.sqlite_store import SqliteStore

    if isinstance(store, SqliteStore):
        return f"the file {store.path}"
    if isinstance(store, MemoryStore):
        return "memory (nothing kept across a restart)"
    return type(store).__name__


def new_core_id() -> str:
    """A core id unique to this process incarnation (host name, pid, random), so that a
    restarted core never mistakes its predecessor's registry entries for its own."""
    return f"{socket.gethostname()}-{os.getpid()}-{secrets.token_hex(3)}"


async def open_backends(
    settings: BackendSettings,
    *,
    core_id: str | None = None,
    prefix: str = "remsim",
    connect_timeout: float = 10.0,
) -> tuple[Store, Bus]:
    """The store and bus that ``settings`` select (see the module doc). ``core_id``: the
    calling server core's id (records left under it by a dead predecessor are dropped, its
    lease is held from now on and its own NATS subject is subscribed); None for an API
    process. Waits up to ``connect_timeout`` seconds for NATS and Redis to answer, then
    raises ``BackendUnavailable``; an SQLite state directory that cannot be used, or that
    another process has open, raises ``BackendUnavailable`` at once. Close both when done."""
    if settings.state_dir is not None and (settings.redis_url or settings.nats_url):
        raise ValueError(
            "REMSIM_STATE_DIR (--state-dir) is for a single host; with REMSIM_REDIS_URL / "
            "REMSIM_NATS_URL the state is in Redis: set one or the other"
        )
    if settings.nats_url and not settings.redis_url:
        raise ValueError("REMSIM_NATS_URL needs REMSIM_REDIS_URL: the cores share state there")
    if settings.redis_url and not settings.nats_url and core_id is None:
        raise ValueError(
            "REMSIM_REDIS_URL needs REMSIM_NATS_URL in an API process: without it no core "
            "would hear of the changes it makes"
        )
    if not settings.redis_url:
        from remsim_control.memory_bus import MemoryBus

        if settings.state_dir is not None:
            from remsim_control.sqlite_store import SqliteStore

            return await SqliteStore.open(settings.state_dir), MemoryBus()
        from remsim_control.memory_store import MemoryStore

        return MemoryStore(), MemoryBus()

    from remsim_control.redis_store import RedisStore

    bus: Bus
    if settings.nats_url:
        bus = await _connect_nats(settings.nats_url, prefix, core_id, connect_timeout)
    else:
        from remsim_control.memory_bus import MemoryBus

        bus = MemoryBus()

    async def announce_recovery() -> None:
        # Whatever failed while Redis was away is retried by every core on this event.
        try:
            await bus.publish(ResetEvent())
        except BackendUnavailable:
            log.warning("could not announce Redis's recovery: the bus is down too")

    store = RedisStore.from_url(
        settings.redis_url,
        prefix=prefix,
        lease_ttl=settings.lease_ttl,
        on_recovered=announce_recovery,
    )
    if core_id is not None:
        await _retry(lambda: store.claim_core(core_id), "Redis", connect_timeout)
    return store, bus


async def _retry(attempt: Callable[[], Awaitable[T]], what: str, timeout: float) -> T:
    """``attempt()`` until it does not raise ``BackendUnavailable``, for ``timeout`` s."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while True:
        try:
            return await attempt()
        except BackendUnavailable as exc:
            if loop.time() >= deadline:
                raise
            log.warning("%s not reachable yet (%s); retrying", what, exc)
            await asyncio.sleep(0.5)


async def _connect_nats(url: str, prefix: str, core_id: str | None, timeout: float) -> Bus:
    from remsim_control.nats_bus import NatsBus

    return await _retry(
        lambda: NatsBus.connect(url, prefix=prefix, core_id=core_id, name=core_id),
        "NATS",
        timeout,
    )


_pings: weakref.WeakKeyDictionary[object, asyncio.Future[bool]] = weakref.WeakKeyDictionary()
"""The ping of each backend under way: callers that come while it is shared it."""


async def _answers(backend: object) -> bool:
    """Whether ``backend`` answers its ``ping()`` now (True if it has none). Concurrent
    callers share one ping, so that a burst of requests costs one round trip to Redis and
    one to NATS rather than one each (the answer is at most one round trip old)."""
    ping = getattr(backend, "ping", None)
    if ping is None:
        return True
    pending = _pings.get(backend)
    if pending is None or pending.done():
        pending = asyncio.ensure_future(ping())
        _pings[backend] = pending
    return bool(await asyncio.shield(pending))  # a cancelled caller leaves it to the others


async def backends_ready(store: Store, bus: Bus) -> dict[str, bool]:
    """Whether each backend answers now, for ``/readyz`` (in-memory ones always do)."""
    store_ok, bus_ok = await asyncio.gather(_answers(store), _answers(bus))
    return {"store": store_ok, "bus": bus_ok}


async def require_ready(store: Store, bus: Bus) -> None:
    """Raise ``BackendUnavailable`` unless the store and the bus both answer now.

    The API calls this before a change that the cores must hear of, so that while NATS or
    Redis is away a change is refused (503) rather than written and left unannounced. (A
    change that slips through just before an outage is still carried out: every core
    re-reads the store when the bus comes back.)"""
    down = [name for name, ok in (await backends_ready(store, bus)).items() if not ok]
    if down:
        raise BackendUnavailable(f"{' and '.join(down)} unreachable")
