"""``PoolStore`` in the single host's SQLite file, beside the ``SqliteStore``.

It uses the store's own connection and worker thread (``SqliteStore._run``): each method is
one transaction there, so it is atomic and durable like the store's own methods, survives
restarts with the slotmaps it describes, and closes with the store. Tables (created where
missing, so the schema version stays; older remsims ignore them):

- ``pool_docs (kind, key, data)``: pools, groups, rules, card statuses, assignments and
  cursors as JSON (``json_extract(data, '$.state')`` in ``sqlite3 -readonly``);
- ``pool_duty (id, owner, expires)``: the scheduler's duty (one row at most).
"""

from __future__ import annotations

import sqlite3
import time
from collections.abc import Callable
from typing import TypeVar

from remsim_control.pool_store import DocumentPoolStore
from remsim_control.sqlite_store import SqliteStore

__all__ = ["SqlitePoolStore"]

T = TypeVar("T")

_TABLES = (
    """CREATE TABLE IF NOT EXISTS pool_docs (
        kind TEXT NOT NULL,
        key TEXT NOT NULL,
        data TEXT NOT NULL,
        PRIMARY KEY (kind, key)
    )""",
    """CREATE TABLE IF NOT EXISTS pool_duty (
        id INTEGER PRIMARY KEY CHECK (id = 1),
        owner TEXT NOT NULL,
        expires REAL NOT NULL
    )""",
)


def _create(db: sqlite3.Connection) -> None:
    for statement in _TABLES:
        db.execute(statement)


def _put(db: sqlite3.Connection, kind: str, key: str, data: str) -> None:
    db.execute(
        "INSERT INTO pool_docs (kind, key, data) VALUES (?, ?, ?) "
        "ON CONFLICT (kind, key) DO UPDATE SET data = excluded.data",
        (kind, key, data),
    )


def _get(db: sqlite3.Connection, kind: str, key: str) -> str | None:
    row = db.execute("SELECT data FROM pool_docs WHERE kind = ? AND key = ?", (kind, key))
    found = row.fetchone()
    return None if found is None else str(found[0])


def _all(db: sqlite3.Connection, kind: str) -> dict[str, str]:
    rows = db.execute("SELECT key, data FROM pool_docs WHERE kind = ?", (kind,))
    return {str(key): str(data) for key, data in rows}


def _delete(db: sqlite3.Connection, kind: str, key: str) -> bool:
    cursor = db.execute("DELETE FROM pool_docs WHERE kind = ? AND key = ?", (kind, key))
    return cursor.rowcount > 0


def _update(
    db: sqlite3.Connection, kind: str, key: str, change: Callable[[str | None], str]
) -> str:
    data = change(_get(db, kind, key))
    _put(db, kind, key, data)
    return data


def _claim(db: sqlite3.Connection, owner: str, ttl: float, now: float) -> bool:
    row = db.execute("SELECT owner, expires FROM pool_duty WHERE id = 1").fetchone()
    if row is not None and row[0] != owner and row[1] > now:
        return False
    db.execute(
        "INSERT INTO pool_duty (id, owner, expires) VALUES (1, ?, ?) "
        "ON CONFLICT (id) DO UPDATE SET owner = excluded.owner, expires = excluded.expires",
        (owner, now + ttl),
    )
    return True


def _release(db: sqlite3.Connection, owner: str) -> None:
    db.execute("DELETE FROM pool_duty WHERE id = 1 AND owner = ?", (owner,))


class SqlitePoolStore(DocumentPoolStore):
    """The pool store in ``store``'s file (see the module doc)."""

    def __init__(self, store: SqliteStore, clock: Callable[[], float] = time.time) -> None:
        super().__init__()
        self._store = store
        self._clock = clock
        self._ready = False

    async def _call(self, fn: Callable[..., T], *args: object) -> T:
        if not self._ready:
            await self._store._run(_create)
            self._ready = True
        return await self._store._run(fn, *args)

    async def _put(self, kind: str, key: str, data: str) -> None:
        await self._call(_put, kind, key, data)

    async def _get(self, kind: str, key: str) -> str | None:
        return await self._call(_get, kind, key)

    async def _all(self, kind: str) -> dict[str, str]:
        return await self._call(_all, kind)

    async def _delete(self, kind: str, key: str) -> bool:
        return await self._call(_delete, kind, key)

    async def _update(self, kind: str, key: str, change: Callable[[str | None], str]) -> str:
        return await self._call(_update, kind, key, change)

    async def claim_duty(self, owner: str, ttl: float) -> bool:
        return await self._call(_claim, owner, ttl, self._clock())

    async def release_duty(self, owner: str) -> None:
        await self._call(_release, owner)
