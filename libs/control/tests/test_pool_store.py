"""The pool stores: one contract on memory, SQLite and a real redis-server; restarts."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from remsim_control import MemoryStore
from remsim_control.pool_store import MemoryPoolStore, PoolStore, pool_store_for
from remsim_control.redis_store import RedisStore
from remsim_control.sqlite_pools import SqlitePoolStore
from remsim_control.sqlite_store import SqliteStore
from remsim_control.store import Store
from remsim_testing.pool_contract import PoolRestartContract, PoolStoreContract
from remsim_testing.store_contract import OpenStore, reopening
from tests.fixtures.servers import ServiceFixture


class TestMemoryPoolStore(PoolStoreContract):
    @pytest.fixture
    async def pools(self) -> AsyncIterator[PoolStore]:
        yield MemoryPoolStore()


class TestSqlitePoolStore(PoolStoreContract):
    @pytest.fixture
    async def pools(self, tmp_path: Path) -> AsyncIterator[PoolStore]:
        store = await SqliteStore.open(tmp_path / "state")
        yield pool_store_for(store)
        await store.close()


class TestSqlitePoolRestart(PoolRestartContract):
    @pytest.fixture
    async def open_store(self, tmp_path: Path) -> AsyncIterator[OpenStore]:
        async with reopening(lambda: SqliteStore.open(tmp_path / "state")) as open_store:
            yield open_store


@pytest.mark.integration
class TestRedisPoolStore(PoolStoreContract):
    @pytest.fixture
    async def pools(
        self, redis_server: ServiceFixture, unique_prefix: str
    ) -> AsyncIterator[PoolStore]:
        store = RedisStore.from_url(redis_server.url, prefix=unique_prefix)
        yield pool_store_for(store)
        await store.close()


@pytest.mark.integration
class TestRedisPoolRestart(PoolRestartContract):
    @pytest.fixture
    async def open_store(
        self, redis_server: ServiceFixture, unique_prefix: str
    ) -> AsyncIterator[OpenStore]:
        async def open_one() -> Store:
            return RedisStore.from_url(redis_server.url, prefix=unique_prefix)

        async with reopening(open_one) as open_store:
            yield open_store


async def test_one_pool_store_per_store_of_the_right_kind(tmp_path: Path) -> None:
    memory = MemoryStore()
    assert pool_store_for(memory) is pool_store_for(memory)
    assert isinstance(pool_store_for(memory), MemoryPoolStore)
    assert pool_store_for(MemoryStore()) is not pool_store_for(memory)
    sqlite = await SqliteStore.open(tmp_path)
    try:
        assert isinstance(pool_store_for(sqlite), SqlitePoolStore)
    finally:
        await sqlite.close()


async def test_a_schema_1_file_keeps_its_version_with_the_pool_tables(tmp_path: Path) -> None:
    import sqlite3

    from remsim_control.sqlite_store import SCHEMA_VERSION, STATE_FILE

    store = await SqliteStore.open(tmp_path)
    await pool_store_for(store).set_cursor("r", "B1:0")
    await store.close()
    with sqlite3.connect(tmp_path / STATE_FILE) as db:
        assert db.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION
    store = await SqliteStore.open(tmp_path)
    try:
        assert await pool_store_for(store).cursors() == {"r": "B1:0"}
    finally:
        await store.close()
