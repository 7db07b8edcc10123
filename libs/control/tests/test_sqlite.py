"""The embedded SQLite store: the contract of every store, the state kept across a restart
(a clean one and kill -9 of a real process), and the state directory's rules."""

import asyncio
import os
import sqlite3
import stat
import sys
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from remsim_control import MemoryBus, MemoryStore
from remsim_control.audit import AuditQuery
from remsim_control.backends import BackendUnavailable, open_backends
from remsim_control.models import SlotmapState
from remsim_control.sqlite_store import LOCK_FILE, SCHEMA_VERSION, STATE_FILE, SqliteStore
from remsim_control.store import Store
from remsim_testing.store_contract import (
    B1_0,
    B1_1,
    C23_0,
    C24_0,
    OpenStore,
    RestartContract,
    StoreContract,
    audit_entry,
    bank_record,
    card,
    reopening,
)

NEW, ACTIVE = SlotmapState.NEW, SlotmapState.ACTIVE


class TestSqliteStore(StoreContract):
    @pytest.fixture
    async def store(self, tmp_path: Path) -> AsyncIterator[Store]:
        store = await SqliteStore.open(tmp_path / "state")
        yield store
        await store.close()


class TestSqliteRestart(RestartContract):
    @pytest.fixture
    async def open_store(self, tmp_path: Path) -> AsyncIterator[OpenStore]:
        async with reopening(lambda: SqliteStore.open(tmp_path / "state")) as open_store:
            yield open_store


# A process that opens the store, writes, says "ready" and waits to be killed.
WRITER = """
import asyncio, sys
from remsim_control.models import SlotmapState
from remsim_control.sqlite_store import SqliteStore
from remsim_testing.store_contract import B1_0, C23_0, audit_entry, bank_record

async def main():
    store = await SqliteStore.open(sys.argv[1])
    await store.register_bank(bank_record(1))
    slotmap = await store.create_slotmap(B1_0, C23_0)
    await store.update_slotmap(slotmap.serial, {SlotmapState.NEW}, SlotmapState.ACTIVE)
    await store.add_audit(audit_entry(bank_id=1, client_id=23))
    print("ready", flush=True)
    await asyncio.Event().wait()

asyncio.run(main())
"""


async def test_kill_9_loses_nothing_committed_and_frees_the_state_directory(
    tmp_path: Path,
) -> None:
    state = tmp_path / "state"
    writer = await asyncio.create_subprocess_exec(
        sys.executable, "-c", WRITER, str(state), stdout=asyncio.subprocess.PIPE
    )
    try:
        assert writer.stdout is not None
        async with asyncio.timeout(30):
            assert await writer.stdout.readline() == b"ready\n"
        with pytest.raises(BackendUnavailable, match="in use by another process"):
            await SqliteStore.open(state)
    finally:
        writer.kill()
        await writer.wait()

    store = await SqliteStore.open(state)
    try:
        [slotmap] = await store.list_slotmaps()
        assert (slotmap.bank, slotmap.client, slotmap.state) == (B1_0, C23_0, ACTIVE)
        [entry] = await store.list_audit(AuditQuery())
        assert (entry.bank_id, entry.client_id, entry.actor) == (1, 23, "ops")
        assert await store.list_banks() == []
        assert [m.state for m in await store.release_orphans()] == [ACTIVE]
    finally:
        await store.close()


async def test_a_second_store_on_the_same_directory_is_refused_until_the_first_closes(
    tmp_path: Path,
) -> None:
    first = await SqliteStore.open(tmp_path)
    with pytest.raises(BackendUnavailable, match=f"{tmp_path} is in use by another process"):
        await SqliteStore.open(tmp_path)
    await first.close()
    await first.close()  # idempotent
    second = await SqliteStore.open(tmp_path)
    await second.close()


async def test_the_state_directory_and_file_are_private(tmp_path: Path) -> None:
    state = tmp_path / "var" / "lib" / "remsim"
    store = await SqliteStore.open(state)
    try:
        await store.create_slotmap(B1_0, C23_0)
        assert stat.S_IMODE(state.stat().st_mode) == 0o700
        for name in (STATE_FILE, f"{STATE_FILE}-wal", LOCK_FILE):
            assert stat.S_IMODE((state / name).stat().st_mode) == 0o600, name
    finally:
        await store.close()


async def test_a_closed_store_is_unavailable(tmp_path: Path) -> None:
    store = await SqliteStore.open(tmp_path)
    await store.close()
    with pytest.raises(BackendUnavailable, match="closed"):
        await store.list_slotmaps()


async def test_a_state_file_of_a_newer_remsim_is_refused(tmp_path: Path) -> None:
    db = sqlite3.connect(tmp_path / STATE_FILE)
    db.execute(f"PRAGMA user_version = {SCHEMA_VERSION + 1}")
    db.close()
    with pytest.raises(ValueError, match="newer remsim"):
        await SqliteStore.open(tmp_path)


async def test_a_file_that_is_no_database_is_unavailable(tmp_path: Path) -> None:
    (tmp_path / STATE_FILE).write_bytes(b"not a database, " * 512)
    with pytest.raises(BackendUnavailable, match="cannot open the state file"):
        await SqliteStore.open(tmp_path)


async def test_an_unusable_state_directory_is_unavailable(tmp_path: Path) -> None:
    (tmp_path / "file").write_text("")
    with pytest.raises(BackendUnavailable, match="cannot use the state directory"):
        await SqliteStore.open(tmp_path / "file" / "state")


@pytest.mark.skipif(os.geteuid() == 0, reason="root writes anywhere")
async def test_a_read_only_state_directory_is_unavailable(tmp_path: Path) -> None:
    tmp_path.chmod(0o500)
    try:
        with pytest.raises(BackendUnavailable):
            await SqliteStore.open(tmp_path)
    finally:
        tmp_path.chmod(0o700)


async def test_many_calls_at_once_complete_in_one_consistent_state(tmp_path: Path) -> None:
    store = await SqliteStore.open(tmp_path)
    try:
        await store.register_bank(bank_record(1))
        await asyncio.gather(
            *(store.add_audit(audit_entry(bank_id=1)) for _ in range(50)),
            *(store.list_audit(AuditQuery(bank_id=1)) for _ in range(10)),
        )
        assert len(await store.list_audit(AuditQuery(bank_id=1))) == 50
    finally:
        await store.close()


# --- choosing the store ----------------------------------------------------------------------


@dataclass(frozen=True)
class Settings:
    state_dir: Path | None = None
    redis_url: str | None = None
    nats_url: str | None = None
    lease_ttl: float = 5.0


async def test_a_state_directory_selects_the_sqlite_store(tmp_path: Path) -> None:
    store, bus = await open_backends(Settings(state_dir=tmp_path / "state"), core_id="core-x")
    try:
        assert isinstance(store, SqliteStore) and isinstance(bus, MemoryBus)
        assert store.path == tmp_path / "state" / STATE_FILE
    finally:
        await store.close()
        await bus.close()


async def test_without_a_state_directory_everything_stays_in_memory() -> None:
    store, bus = await open_backends(Settings())
    assert isinstance(store, MemoryStore) and isinstance(bus, MemoryBus)


@pytest.mark.parametrize(
    "urls",
    [
        {"redis_url": "redis://127.0.0.1:6379/0"},
        {"redis_url": "redis://127.0.0.1:6379/0", "nats_url": "nats://127.0.0.1:4222"},
        {"nats_url": "nats://127.0.0.1:4222"},
    ],
    ids=["redis", "redis+nats", "nats"],
)
async def test_a_state_directory_with_the_distributed_backends_is_refused(
    tmp_path: Path, urls: dict[str, str]
) -> None:
    with pytest.raises(ValueError, match="REMSIM_STATE_DIR"):
        await open_backends(Settings(state_dir=tmp_path, **urls), core_id="core-x")
    assert list(tmp_path.iterdir()) == []  # nothing was opened


async def test_a_file_from_before_the_card_inventory_opens_and_gets_one(tmp_path: Path) -> None:
    """The card inventory's table came after schema 1 without a new version: a file written
    before it (no ``cards`` table) opens, keeps its maps and gains the table."""
    store = await SqliteStore.open(tmp_path / "state")
    slotmap = await store.create_slotmap(B1_0, C23_0)
    await store.close()
    with sqlite3.connect(tmp_path / "state" / STATE_FILE) as db:
        db.execute("DROP TABLE cards")
        assert db.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION == 1
    store = await SqliteStore.open(tmp_path / "state")
    try:
        assert await store.list_slotmaps() == [slotmap]
        assert await store.cards() == []
        await store.put_cards(1, [card(B1_0)])
        assert await store.cards() == [card(B1_0)]
    finally:
        await store.close()


async def test_a_file_from_before_maps_by_card_opens_and_gains_the_column(
    tmp_path: Path,
) -> None:
    """The card a map was made for (``iccid``) came after schema 1 too: a file without the
    column opens, keeps its maps (for no card) and then stores maps made by card."""
    store = await SqliteStore.open(tmp_path / "state")
    slotmap = await store.create_slotmap(B1_0, C23_0)
    await store.close()
    with sqlite3.connect(tmp_path / "state" / STATE_FILE) as db:
        db.execute("ALTER TABLE slotmaps DROP COLUMN iccid")
    store = await SqliteStore.open(tmp_path / "state")
    try:
        assert await store.list_slotmaps() == [slotmap]
        by_card = await store.create_slotmap(B1_1, C24_0, "8949000000000000001")
        assert by_card.iccid == "8949000000000000001"
    finally:
        await store.close()
    store = await SqliteStore.open(tmp_path / "state")
    try:
        assert await store.list_slotmaps() == [slotmap, by_card]
    finally:
        await store.close()
