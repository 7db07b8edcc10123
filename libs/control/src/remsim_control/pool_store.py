"""The ``PoolStore`` interface: pools, client groups, rules, card statuses, the pool
scheduler's assignments (leases) and cursors, and the scheduler's duty lease.

Every value is a frozen model kept as JSON under a kind and a key, so the three backends
share one implementation (``DocumentPoolStore``) over five primitives: memory (here),
SQLite (``sqlite_pools``: the same file and connection as the ``SqliteStore``) and Redis
(``redis_pools``: the same connection and key prefix as the ``RedisStore``).
``pool_store_for(store)`` gives the pool store living beside a ``Store``, one per store, so
the REST API and the scheduler of one process share it (and its change notifications).

The **duty** is a lease with an expiry: ``claim_duty(owner, ttl)`` takes it if it is free or
expired, renews it if ``owner`` holds it, and answers whether ``owner`` holds it now. Only
the holder runs the pool scheduler, so in distributed mode one core acts at a time, and a
lost core's duty passes to another once its lease has expired.
"""

from __future__ import annotations

import abc
import time
import weakref
from collections.abc import Callable
from typing import Protocol, TypeVar

from pydantic import BaseModel

from remsim_control.pools import Assignment, CardStatus, ClientGroup, Pool, Rule
from remsim_control.store import Store

__all__ = [
    "DocumentPoolStore",
    "MemoryPoolStore",
    "PoolStore",
    "pool_store_for",
]

M = TypeVar("M", bound=BaseModel)

POOL, GROUP, RULE, CARD, ASSIGNMENT, CURSOR = (
    "pool",
    "group",
    "rule",
    "card",
    "assignment",
    "cursor",
)
KINDS = (POOL, GROUP, RULE, CARD, ASSIGNMENT, CURSOR)


class PoolStore(Protocol):
    # --- configuration: pools, groups, rules (by name) -----------------------------------

    async def put_pool(self, pool: Pool) -> None: ...
    async def get_pool(self, name: str) -> Pool | None: ...
    async def list_pools(self) -> list[Pool]:
        """By name."""
        ...

    async def delete_pool(self, name: str) -> bool: ...
    async def put_group(self, group: ClientGroup) -> None: ...
    async def get_group(self, name: str) -> ClientGroup | None: ...
    async def list_groups(self) -> list[ClientGroup]: ...
    async def delete_group(self, name: str) -> bool: ...
    async def put_rule(self, rule: Rule) -> None: ...
    async def get_rule(self, name: str) -> Rule | None: ...
    async def list_rules(self) -> list[Rule]: ...
    async def delete_rule(self, name: str) -> bool: ...

    # --- card statuses --------------------------------------------------------------------

    async def card_status(self, key: str) -> CardStatus | None: ...
    async def card_statuses(self) -> list[CardStatus]:
        """By key."""
        ...

    async def update_card_status(
        self, key: str, change: Callable[[CardStatus], CardStatus]
    ) -> CardStatus:
        """Atomically: ``change`` the stored status (a fresh one if none), store and return
        the result. ``change`` may be called more than once (Redis retries on conflict)."""
        ...

    # --- assignments (by slotmap serial) and cursors (by rule) ----------------------------

    async def put_assignment(self, assignment: Assignment) -> None: ...
    async def get_assignment(self, serial: int) -> Assignment | None: ...
    async def list_assignments(self) -> list[Assignment]:
        """By serial."""
        ...

    async def delete_assignment(self, serial: int) -> bool: ...
    async def cursors(self) -> dict[str, str]: ...
    async def set_cursor(self, rule: str, card: str) -> None: ...

    # --- the scheduler's duty -------------------------------------------------------------

    async def claim_duty(self, owner: str, ttl: float) -> bool:
        """Take or renew the duty for ``ttl`` seconds; True if ``owner`` holds it now."""
        ...

    async def release_duty(self, owner: str) -> None:
        """Give the duty up, if ``owner`` holds it."""
        ...

    # --- change notifications within this process -----------------------------------------

    def add_listener(self, listener: Callable[[], None]) -> None:
        """Call ``listener()`` after every change made through this object."""
        ...

    def remove_listener(self, listener: Callable[[], None]) -> None: ...


class DocumentPoolStore(abc.ABC):
    """``PoolStore`` over the primitives a backend provides (JSON text per kind and key):
    each backend (memory, SQLite, Redis) implements the abstract methods."""

    def __init__(self) -> None:
        self._listeners: list[Callable[[], None]] = []

    # --- primitives (per backend) ---------------------------------------------------------

    @abc.abstractmethod
    async def _put(self, kind: str, key: str, data: str) -> None: ...

    @abc.abstractmethod
    async def _get(self, kind: str, key: str) -> str | None: ...

    @abc.abstractmethod
    async def _all(self, kind: str) -> dict[str, str]: ...

    @abc.abstractmethod
    async def _delete(self, kind: str, key: str) -> bool: ...

    @abc.abstractmethod
    async def _update(self, kind: str, key: str, change: Callable[[str | None], str]) -> str: ...

    @abc.abstractmethod
    async def claim_duty(self, owner: str, ttl: float) -> bool: ...

    @abc.abstractmethod
    async def release_duty(self, owner: str) -> None: ...

    # --- notifications --------------------------------------------------------------------

    def add_listener(self, listener: Callable[[], None]) -> None:
        self._listeners.append(listener)

    def remove_listener(self, listener: Callable[[], None]) -> None:
        if listener in self._listeners:
            self._listeners.remove(listener)

    def _changed(self) -> None:
        for listener in list(self._listeners):
            listener()

    # --- typed access ---------------------------------------------------------------------

    async def _put_model(self, kind: str, key: str, value: BaseModel) -> None:
        await self._put(kind, key, value.model_dump_json())
        self._changed()

    async def _get_model(self, kind: str, key: str, model: type[M]) -> M | None:
        data = await self._get(kind, key)
        return None if data is None else model.model_validate_json(data)

    async def _list_models(self, kind: str, model: type[M]) -> list[tuple[str, M]]:
        rows = await self._all(kind)
        return [(key, model.model_validate_json(rows[key])) for key in sorted(rows)]

    async def _delete_key(self, kind: str, key: str) -> bool:
        deleted = await self._delete(kind, key)
        if deleted:
            self._changed()
        return deleted

    async def put_pool(self, pool: Pool) -> None:
        await self._put_model(POOL, pool.name, pool)

    async def get_pool(self, name: str) -> Pool | None:
        return await self._get_model(POOL, name, Pool)

    async def list_pools(self) -> list[Pool]:
        return [pool for _, pool in await self._list_models(POOL, Pool)]

    async def delete_pool(self, name: str) -> bool:
        return await self._delete_key(POOL, name)

    async def put_group(self, group: ClientGroup) -> None:
        await self._put_model(GROUP, group.name, group)

    async def get_group(self, name: str) -> ClientGroup | None:
        return await self._get_model(GROUP, name, ClientGroup)

    async def list_groups(self) -> list[ClientGroup]:
        return [group for _, group in await self._list_models(GROUP, ClientGroup)]

    async def delete_group(self, name: str) -> bool:
        return await self._delete_key(GROUP, name)

    async def put_rule(self, rule: Rule) -> None:
        await self._put_model(RULE, rule.name, rule)

    async def get_rule(self, name: str) -> Rule | None:
        return await self._get_model(RULE, name, Rule)

    async def list_rules(self) -> list[Rule]:
        return [rule for _, rule in await self._list_models(RULE, Rule)]

    async def delete_rule(self, name: str) -> bool:
        return await self._delete_key(RULE, name)

    async def card_status(self, key: str) -> CardStatus | None:
        return await self._get_model(CARD, key, CardStatus)

    async def card_statuses(self) -> list[CardStatus]:
        return [status for _, status in await self._list_models(CARD, CardStatus)]

    async def update_card_status(
        self, key: str, change: Callable[[CardStatus], CardStatus]
    ) -> CardStatus:
        def apply(data: str | None) -> str:
            status = CardStatus(key=key) if data is None else CardStatus.model_validate_json(data)
            return change(status).model_dump_json()

        result = CardStatus.model_validate_json(await self._update(CARD, key, apply))
        self._changed()
        return result

    async def put_assignment(self, assignment: Assignment) -> None:
        await self._put_model(ASSIGNMENT, _serial_key(assignment.serial), assignment)

    async def get_assignment(self, serial: int) -> Assignment | None:
        return await self._get_model(ASSIGNMENT, _serial_key(serial), Assignment)

    async def list_assignments(self) -> list[Assignment]:
        return [a for _, a in await self._list_models(ASSIGNMENT, Assignment)]

    async def delete_assignment(self, serial: int) -> bool:
        return await self._delete_key(ASSIGNMENT, _serial_key(serial))

    async def cursors(self) -> dict[str, str]:
        return await self._all(CURSOR)

    async def set_cursor(self, rule: str, card: str) -> None:
        await self._put(CURSOR, rule, card)


def _serial_key(serial: int) -> str:
    """Zero-padded, so that keys sort as serials."""
    return f"{serial:012d}"


class MemoryPoolStore(DocumentPoolStore):
    """In memory, beside a ``MemoryStore`` (nothing kept across a restart)."""

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        super().__init__()
        self._docs: dict[str, dict[str, str]] = {kind: {} for kind in KINDS}
        self._duty: tuple[str, float] | None = None
        self._clock = clock

    async def _put(self, kind: str, key: str, data: str) -> None:
        self._docs[kind][key] = data

    async def _get(self, kind: str, key: str) -> str | None:
        return self._docs[kind].get(key)

    async def _all(self, kind: str) -> dict[str, str]:
        return dict(self._docs[kind])

    async def _delete(self, kind: str, key: str) -> bool:
        return self._docs[kind].pop(key, None) is not None

    async def _update(self, kind: str, key: str, change: Callable[[str | None], str]) -> str:
        data = change(self._docs[kind].get(key))
        self._docs[kind][key] = data
        return data

    async def claim_duty(self, owner: str, ttl: float) -> bool:
        now = self._clock()
        if self._duty is None or self._duty[0] == owner or self._duty[1] <= now:
            self._duty = (owner, now + ttl)
            return True
        return False

    async def release_duty(self, owner: str) -> None:
        if self._duty is not None and self._duty[0] == owner:
            self._duty = None


_beside: weakref.WeakKeyDictionary[object, PoolStore] = weakref.WeakKeyDictionary()


def pool_store_for(store: Store) -> PoolStore:
    """The pool store beside ``store`` (the same one on every call): in memory for a
    ``MemoryStore`` (or any other store), in the same SQLite file for a ``SqliteStore``, under
    the same Redis prefix for a ``RedisStore``."""
    found = _beside.get(store)
    if found is not None:
        return found
    pools: PoolStore
    from remsim_control.sqlite_store import SqliteStore

    if isinstance(store, SqliteStore):
        from remsim_control.sqlite_pools import SqlitePoolStore

        pools = SqlitePoolStore(store)
    else:
        try:
            from remsim_control.redis_store import RedisStore
        except ImportError:  # pragma: no cover - redis is a dependency of remsim-control
            RedisStore = None  # type: ignore[assignment,misc]
        if RedisStore is not None and isinstance(store, RedisStore):
            from remsim_control.redis_pools import RedisPoolStore

            pools = RedisPoolStore.beside(store)
        else:
            pools = MemoryPoolStore()
    _beside[store] = pools
    return pools
