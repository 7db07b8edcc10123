"""``Store`` in an SQLite file, for a single host: slotmaps, what each client was last
configured with, the card inventory and the audit log survive a restart of the process.

The state directory holds ``remsim.sqlite3`` (with its ``-wal`` file) and ``remsim.lock``.
The directory is created with mode 0700, the files with 0600.

One connection, used by one worker thread (a ``ThreadPoolExecutor`` with one worker): every
``Store`` method is one function run there as one transaction. So each method is atomic
(calls never interleave, as with the in-memory store), and a commit waiting for the disk
never blocks the event loop. The standard library's ``sqlite3`` suffices: aiosqlite is the
same thread-per-connection design as a dependency, and awaiting each of its statements would
split a method's transaction across event-loop turns.

Commits are durable (``PRAGMA synchronous=FULL`` in WAL mode: a commit is on the disk when
the method returns, even across a power loss). State changes are human-scale (maps, connects,
REST calls), so the cost of one fsync per change does not matter.

The registry (connected banks and clients) is runtime state: it is kept in TEMP tables of
the connection, so it lives and dies with the process, as the connections it records do. A
new process starts with an empty registry; the maps the old one had at its bankds are then
orphans (``release_orphans``) and wait, as NEW, for their bankd's next connection.

While a store is open, ``remsim.lock`` is locked (``flock``): a second process on the same
state directory is refused, since two cores sharing the file without a bus would never hear
of each other's changes. ``sqlite3 -readonly DIR/remsim.sqlite3`` can still read the file
while the server runs (the ``entry`` columns are JSON: ``json_extract(entry, '$.actor')``).
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import functools
import os
import sqlite3
from collections.abc import Callable, Collection, Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, ParamSpec, TypeVar

from remsim_control.audit import AuditEntry, AuditQuery
from remsim_control.errors import BackendUnavailable, IdentityInUse, SlotInUse
from remsim_control.models import (
    BankRecord,
    BankSlot,
    CardRecord,
    ClientConfig,
    ClientRecord,
    ClientSlot,
    Slotmap,
    SlotmapState,
    card_order,
    check_bank_cards,
    slotmap_bank,
)

__all__ = ["LOCK_FILE", "SCHEMA_VERSION", "STATE_FILE", "SqliteStore"]

STATE_FILE = "remsim.sqlite3"
LOCK_FILE = "remsim.lock"
SCHEMA_VERSION = 1
"""``PRAGMA user_version`` of the files this code writes; a file from a newer remsim is
refused rather than misread."""
BUSY_TIMEOUT_MS = 2000
"""How long a statement waits for a lock held by another connection (an operator's
``sqlite3`` shell writing to the file) before failing as ``BackendUnavailable``."""

SLOTS_PER_SELECT = 250
"""Bank slots looked up by one SELECT of ``list_slotmaps(bank_slots=...)`` (two parameters
each: well below SQLite's limit of parameters per statement)."""

P = ParamSpec("P")
T = TypeVar("T")

_VISIBLE = ", ".join(f"'{state.value}'" for state in SlotmapState if state.visible)
_HIDDEN = ", ".join(f"'{state.value}'" for state in SlotmapState if not state.visible)

_SCHEMA = (
    """CREATE TABLE slotmaps (
        serial INTEGER PRIMARY KEY AUTOINCREMENT,
        bank_id INTEGER NOT NULL,
        bank_slot INTEGER NOT NULL,
        client_id INTEGER NOT NULL,
        client_slot INTEGER NOT NULL,
        state TEXT NOT NULL,
        result TEXT
    )""",
    # At most one visible map per bank slot and per client slot (maps being deleted do not
    # count): the store checks first to name the map in the way; these are the safety net.
    f"""CREATE UNIQUE INDEX slotmaps_visible_bank ON slotmaps (bank_id, bank_slot)
        WHERE state IN ({_VISIBLE})""",
    f"""CREATE UNIQUE INDEX slotmaps_visible_client ON slotmaps (client_id, client_slot)
        WHERE state IN ({_VISIBLE})""",
    "CREATE INDEX slotmaps_bank ON slotmaps (bank_id)",
    "CREATE INDEX slotmaps_client ON slotmaps (client_id, client_slot)",
    """CREATE TABLE client_configs (
        client_id INTEGER NOT NULL,
        client_slot INTEGER NOT NULL,
        config TEXT NOT NULL,
        PRIMARY KEY (client_id, client_slot)
    )""",
    # seq: AUTOINCREMENT, so a seq is never handed out twice, even after a prune.
    # entry: the AuditEntry as JSON without its seq; the columns beside it are the filters.
    """CREATE TABLE audit (
        seq INTEGER PRIMARY KEY AUTOINCREMENT,
        time REAL NOT NULL,
        kind TEXT NOT NULL,
        bank_id INTEGER,
        client_id INTEGER,
        entry TEXT NOT NULL
    )""",
    "CREATE INDEX audit_time ON audit (time)",
    "CREATE INDEX audit_bank ON audit (bank_id, seq)",
    "CREATE INDEX audit_client ON audit (client_id, seq)",
    f"PRAGMA user_version = {SCHEMA_VERSION}",
)

# The card inventory (added after schema 1 without changing it: created where missing, so a
# file of schema 1 opens in either version). record: the CardRecord as JSON.
_CARDS = (
    """CREATE TABLE IF NOT EXISTS cards (
        bank_id INTEGER NOT NULL,
        bank_slot INTEGER NOT NULL,
        iccid TEXT,
        record TEXT NOT NULL,
        PRIMARY KEY (bank_id, bank_slot)
    )""",
    "CREATE INDEX IF NOT EXISTS cards_iccid ON cards (iccid)",
)

# The maps at a bank slot in every state (``list_slotmaps(bank_slots=...)``, on every event):
# an index added after schema 1 as well, where missing.
_SLOT_INDEX = "CREATE INDEX IF NOT EXISTS slotmaps_bank_slot ON slotmaps (bank_id, bank_slot)"

# The card a map was made for (added after schema 1 like the inventory: a column added where
# missing).
_SLOTMAP_ICCID = "ALTER TABLE slotmaps ADD COLUMN iccid TEXT"

# The registry, per connection (``ord``: registration order).
_REGISTRY = (
    """CREATE TEMP TABLE banks (
        ord INTEGER PRIMARY KEY,
        bank_id INTEGER NOT NULL UNIQUE,
        record TEXT NOT NULL
    )""",
    """CREATE TEMP TABLE clients (
        ord INTEGER PRIMARY KEY,
        client_id INTEGER NOT NULL,
        client_slot INTEGER NOT NULL,
        record TEXT NOT NULL,
        UNIQUE (client_id, client_slot)
    )""",
)

_SLOTMAP_COLUMNS = "serial, bank_id, bank_slot, client_id, client_slot, state, result, iccid"


def _slotmap(row: tuple[Any, ...]) -> Slotmap:
    serial, bank_id, bank_slot, client_id, client_slot, state, result, iccid = row
    return Slotmap(
        serial=serial,
        bank=BankSlot(bank_id=bank_id, slot_nr=bank_slot),
        client=ClientSlot(client_id=client_id, slot_nr=client_slot),
        state=SlotmapState(state),
        result=result,
        iccid=iccid,
    )


def _audit_entry(seq: int, entry: str) -> AuditEntry:
    return AuditEntry.model_validate_json(entry).model_copy(update={"seq": seq})


def _select_maps(db: sqlite3.Connection, where: str, params: Iterable[Any] = ()) -> list[Slotmap]:
    rows = db.execute(
        f"SELECT {_SLOTMAP_COLUMNS} FROM slotmaps WHERE {where} ORDER BY serial", tuple(params)
    )
    return [_slotmap(row) for row in rows]


def _select_maps_at(
    db: sqlite3.Connection, slots: list[tuple[int, int]], where: str, params: list[Any]
) -> list[Slotmap]:
    """The maps at the bank slots ``slots`` (bank id, slot number) matching ``where``."""
    found: list[Slotmap] = []
    for first in range(0, len(slots), SLOTS_PER_SELECT):
        chunk = slots[first : first + SLOTS_PER_SELECT]
        values = ", ".join("(?, ?)" for _ in chunk)
        found += _select_maps(
            db,
            f"(bank_id, bank_slot) IN (VALUES {values}) AND {where}",
            [n for slot in chunk for n in slot] + params,
        )
    found.sort(key=lambda slotmap: slotmap.serial)
    return found


def _release(db: sqlite3.Connection, banks: str, params: Iterable[Any] = ()) -> list[Slotmap]:
    """Maps of the banks selected by the condition ``banks`` wait for their bank: those at a
    bankd become NEW, those being deleted go. Returns the maps changed, as they were."""
    params = tuple(params)
    changed = _select_maps(db, f"state != 'NEW' AND {banks}", params)
    db.execute(
        "UPDATE slotmaps SET state = 'NEW', result = NULL "
        f"WHERE state IN ('UNACKNOWLEDGED', 'ACTIVE') AND {banks}",
        params,
    )
    db.execute(f"DELETE FROM slotmaps WHERE state IN ({_HIDDEN}) AND {banks}", params)
    return changed


class SqliteStore:
    """``Store`` in ``DIR/remsim.sqlite3``; open with ``await SqliteStore.open(DIR)``."""

    def __init__(self, directory: Path, lock_fd: int, executor: ThreadPoolExecutor) -> None:
        self.directory = directory
        self.path = directory / STATE_FILE
        self._lock_fd: int | None = lock_fd
        self._executor = executor
        self._db: sqlite3.Connection | None = None

    @classmethod
    async def open(cls, directory: Path | str) -> SqliteStore:
        """The store in ``directory`` (created with mode 0700 if need be), with an empty
        registry. Raises ``BackendUnavailable`` if the directory or file cannot be used or
        another process has it open, ``ValueError`` for a file of a newer remsim."""
        directory = Path(directory)
        try:
            directory.mkdir(mode=0o700, parents=True, exist_ok=True)
            lock_fd = os.open(directory / LOCK_FILE, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        except OSError as exc:
            raise BackendUnavailable(f"cannot use the state directory {directory}: {exc}") from exc
        try:
            fcntl.flock(lock_fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as exc:
            os.close(lock_fd)
            raise BackendUnavailable(
                f"the state directory {directory} is in use by another process"
            ) from exc
        store = cls(directory, lock_fd, ThreadPoolExecutor(1, thread_name_prefix="remsim-store"))
        try:
            await store._call(store._connect)
        except sqlite3.Error as exc:  # not a database, a damaged file, ...
            await store.close()
            raise BackendUnavailable(f"cannot open the state file {store.path}: {exc}") from exc
        except BaseException:
            await store.close()
            raise
        return store

    def _connect(self) -> None:
        """In the worker thread: open the file (creating it 0600) and its schema."""
        try:
            os.close(os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600))
        except OSError as exc:
            raise BackendUnavailable(f"cannot use the state file {self.path}: {exc}") from exc
        # isolation_level None: no implicit transactions; each method's statements run in
        # one explicit _transaction.
        db = sqlite3.connect(self.path, isolation_level=None)
        try:
            db.execute(f"PRAGMA busy_timeout = {BUSY_TIMEOUT_MS}")
            db.execute("PRAGMA journal_mode = WAL")
            db.execute("PRAGMA synchronous = FULL")
            db.execute("PRAGMA temp_store = MEMORY")
            with _transaction(db):
                version = db.execute("PRAGMA user_version").fetchone()[0]
                if version > SCHEMA_VERSION:
                    raise ValueError(
                        f"{self.path} was written by a newer remsim (schema {version}; "
                        f"this one knows {SCHEMA_VERSION})"
                    )
                if version == 0:
                    for statement in _SCHEMA:
                        db.execute(statement)
                for statement in (*_CARDS, _SLOT_INDEX, *_REGISTRY):
                    db.execute(statement)
                columns = {row[1] for row in db.execute("PRAGMA table_info(slotmaps)")}
                if "iccid" not in columns:
                    db.execute(_SLOTMAP_ICCID)
        except BaseException:
            db.close()
            raise
        self._db = db

    async def _call(self, fn: Callable[P, T], *args: P.args, **kwargs: P.kwargs) -> T:
        call = functools.partial(fn, *args, **kwargs)
        try:
            return await asyncio.get_running_loop().run_in_executor(self._executor, call)
        except sqlite3.OperationalError as exc:  # disk full, I/O error, locked too long
            raise BackendUnavailable(f"state file {self.path}: {exc}") from exc

    async def _run(self, fn: Callable[..., T], *args: Any) -> T:
        """``fn(db, *args)`` in one transaction, in the worker thread."""
        if self._db is None:
            raise BackendUnavailable(f"the store in {self.directory} is closed")
        return await self._call(_in_transaction, self._db, fn, *args)

    # --- slotmaps ---------------------------------------------------------------------

    async def create_slotmap(
        self, bank: BankSlot, client: ClientSlot, iccid: str | None = None
    ) -> Slotmap:
        return await self._run(_create_slotmap, bank, client, iccid)

    async def get_slotmap(self, slotmap_id: int) -> Slotmap | None:
        if (bank := slotmap_bank(slotmap_id)) is None:
            return None
        return await self._run(_visible_map_at, bank)

    async def list_slotmaps(
        self,
        *,
        bank_id: int | None = None,
        client: ClientSlot | None = None,
        bank_slots: Collection[BankSlot] | None = None,
        visible_only: bool = False,
    ) -> list[Slotmap]:
        where: list[str] = ["1"]
        params: list[Any] = []
        if bank_id is not None:
            where.append("bank_id = ?")
            params.append(bank_id)
        if client is not None:
            where.append("client_id = ? AND client_slot = ?")
            params += [client.client_id, client.slot_nr]
        if visible_only:
            where.append(f"state IN ({_VISIBLE})")
        if bank_slots is not None:
            slots = sorted({(slot.bank_id, slot.slot_nr) for slot in bank_slots})
            return await self._run(_select_maps_at, slots, " AND ".join(where), params)
        return await self._run(_select_maps, " AND ".join(where), params)

    async def request_removal(self, slotmap_id: int) -> Slotmap | None:
        if (bank := slotmap_bank(slotmap_id)) is None:
            return None
        return await self._run(_request_removal, bank)

    async def move_slotmap(
        self, serial: int, expected: Collection[SlotmapState], bank: BankSlot
    ) -> tuple[Slotmap, Slotmap] | None:
        return await self._run(_move_slotmap, serial, frozenset(expected), bank)

    async def update_slotmap(
        self,
        serial: int,
        expected: Collection[SlotmapState],
        state: SlotmapState,
        *,
        result: str | None = None,
    ) -> Slotmap | None:
        return await self._run(_update_slotmap, serial, frozenset(expected), state, result)

    async def remove_slotmap(
        self, serial: int, expected: Collection[SlotmapState]
    ) -> Slotmap | None:
        return await self._run(_remove_slotmap, serial, frozenset(expected))

    async def release_bank(self, record: BankRecord) -> list[Slotmap] | None:
        return await self._run(_release_bank, record)

    async def release_orphans(self) -> list[Slotmap]:
        return await self._run(_release, "bank_id NOT IN (SELECT bank_id FROM temp.banks)")

    # --- registry ---------------------------------------------------------------------

    async def register_bank(self, record: BankRecord) -> None:
        existing = await self._run(_register, "banks", ("bank_id",), (record.bank_id,), record)
        if existing is not None:
            raise IdentityInUse(BankRecord.model_validate_json(existing))

    async def unregister_bank(self, record: BankRecord) -> bool:
        return await self._run(_unregister, "banks", ("bank_id",), (record.bank_id,), record)

    async def get_bank(self, bank_id: int) -> BankRecord | None:
        data = await self._run(_record, "banks", ("bank_id",), (bank_id,))
        return BankRecord.model_validate_json(data) if data else None

    async def list_banks(self) -> list[BankRecord]:
        return [BankRecord.model_validate_json(row) for row in await self._run(_records, "banks")]

    async def register_client(self, record: ClientRecord) -> None:
        existing = await self._run(_register, "clients", _CLIENT_KEY, _client(record), record)
        if existing is not None:
            raise IdentityInUse(ClientRecord.model_validate_json(existing))

    async def unregister_client(self, record: ClientRecord) -> bool:
        return await self._run(_unregister, "clients", _CLIENT_KEY, _client(record), record)

    async def get_client(self, client: ClientSlot) -> ClientRecord | None:
        data = await self._run(_record, "clients", _CLIENT_KEY, (client.client_id, client.slot_nr))
        return ClientRecord.model_validate_json(data) if data else None

    async def list_clients(self) -> list[ClientRecord]:
        rows = await self._run(_records, "clients")
        return [ClientRecord.model_validate_json(row) for row in rows]

    # --- client configurations --------------------------------------------------------

    async def get_client_config(self, client: ClientSlot) -> ClientConfig | None:
        data = await self._run(_client_config, client)
        return ClientConfig.model_validate_json(data) if data else None

    async def set_client_config(self, client: ClientSlot, config: ClientConfig | None) -> None:
        await self._run(_set_client_config, client, config)

    async def forget_client_config(self, record: ClientRecord) -> bool:
        return await self._run(_forget_client_config, record)

    # --- the card inventory --------------------------------------------------------------

    async def put_cards(self, bank_id: int, cards: Collection[CardRecord]) -> None:
        check_bank_cards(bank_id, cards)
        await self._run(_put_cards, bank_id, list(cards))

    async def cards(self) -> list[CardRecord]:
        rows = await self._run(_cards, "1", ())
        return sorted((CardRecord.model_validate_json(row) for row in rows), key=card_order)

    async def card(self, iccid: str) -> CardRecord | None:
        rows = await self._run(_cards, "iccid = ?", (iccid,))
        return CardRecord.model_validate_json(rows[0]) if rows else None

    # --- the audit log ------------------------------------------------------------------

    async def add_audit(self, entry: AuditEntry) -> AuditEntry:
        seq = await self._run(_add_audit, entry)
        return entry.model_copy(update={"seq": seq})

    async def list_audit(self, query: AuditQuery) -> list[AuditEntry]:
        return await self._run(_list_audit, query)

    async def prune_audit(self, before: float) -> int:
        return await self._run(_prune_audit, before)

    async def close(self) -> None:
        """Close the file and release the state directory (idempotent)."""
        if self._lock_fd is None:
            return
        try:
            if self._db is not None:
                await self._call(self._db.close)
                self._db = None
        finally:
            self._executor.shutdown(wait=False)  # idle: its thread ends by itself
            os.close(self._lock_fd)
            self._lock_fd = None


@contextlib.contextmanager
def _transaction(db: sqlite3.Connection) -> Iterator[None]:
    """BEGIN IMMEDIATE ... COMMIT, or ROLLBACK on an error (a failed COMMIT included)."""
    db.execute("BEGIN IMMEDIATE")
    try:
        yield
        db.execute("COMMIT")
    except BaseException:
        if db.in_transaction:
            db.execute("ROLLBACK")
        raise


# --- the methods' bodies, run in the worker thread in one transaction each ----------------


def _in_transaction(db: sqlite3.Connection, fn: Callable[..., T], *args: Any) -> T:
    with _transaction(db):
        return fn(db, *args)


def _visible_map_at(db: sqlite3.Connection, bank: BankSlot) -> Slotmap | None:
    found = _select_maps(
        db, f"bank_id = ? AND bank_slot = ? AND state IN ({_VISIBLE})", (bank.bank_id, bank.slot_nr)
    )
    return found[0] if found else None


def _create_slotmap(
    db: sqlite3.Connection, bank: BankSlot, client: ClientSlot, iccid: str | None
) -> Slotmap:
    in_the_way = _select_maps(
        db,
        f"state IN ({_VISIBLE}) AND ((bank_id = ? AND bank_slot = ?) "
        "OR (client_id = ? AND client_slot = ?))",
        (bank.bank_id, bank.slot_nr, client.client_id, client.slot_nr),
    )
    if in_the_way:
        raise SlotInUse(in_the_way[0])
    cursor = db.execute(
        "INSERT INTO slotmaps (bank_id, bank_slot, client_id, client_slot, state, iccid) "
        "VALUES (?, ?, ?, ?, 'NEW', ?)",
        (bank.bank_id, bank.slot_nr, client.client_id, client.slot_nr, iccid),
    )
    assert cursor.lastrowid is not None
    return Slotmap(serial=cursor.lastrowid, bank=bank, client=client, iccid=iccid)


def _request_removal(db: sqlite3.Connection, bank: BankSlot) -> Slotmap | None:
    slotmap = _visible_map_at(db, bank)
    if slotmap is None:
        return None
    if slotmap.state is SlotmapState.NEW:
        db.execute("DELETE FROM slotmaps WHERE serial = ?", (slotmap.serial,))
    else:
        db.execute("UPDATE slotmaps SET state = 'DELETE_REQ' WHERE serial = ?", (slotmap.serial,))
    return slotmap


def _move_slotmap(
    db: sqlite3.Connection, serial: int, expected: frozenset[SlotmapState], bank: BankSlot
) -> tuple[Slotmap, Slotmap] | None:
    found = _select_maps(db, "serial = ?", (serial,))
    if not found or not found[0].state.visible or found[0].state not in expected:
        return None
    old = found[0]
    in_the_way = _select_maps(
        db,
        f"state IN ({_VISIBLE}) AND ((bank_id = ? AND bank_slot = ?) "
        "OR (client_id = ? AND client_slot = ? AND serial != ?))",
        (bank.bank_id, bank.slot_nr, old.client.client_id, old.client.slot_nr, serial),
    )
    if in_the_way:
        raise SlotInUse(in_the_way[0])
    _request_removal(db, old.bank)  # the visible map at its bank slot: this one
    return old, _create_slotmap(db, bank, old.client, old.iccid)


def _update_slotmap(
    db: sqlite3.Connection,
    serial: int,
    expected: frozenset[SlotmapState],
    state: SlotmapState,
    result: str | None,
) -> Slotmap | None:
    found = _select_maps(db, "serial = ?", (serial,))
    if not found or found[0].state not in expected:
        return None
    slotmap = found[0]
    if state.visible and not slotmap.state.visible:
        raise ValueError(f"{slotmap} is being deleted; it cannot become {state}")
    db.execute(
        "UPDATE slotmaps SET state = ?, result = ? WHERE serial = ?", (state.value, result, serial)
    )
    return slotmap.model_copy(update={"state": state, "result": result})


def _remove_slotmap(
    db: sqlite3.Connection, serial: int, expected: frozenset[SlotmapState]
) -> Slotmap | None:
    found = _select_maps(db, "serial = ?", (serial,))
    if not found or found[0].state not in expected:
        return None
    db.execute("DELETE FROM slotmaps WHERE serial = ?", (serial,))
    return found[0]


def _release_bank(db: sqlite3.Connection, record: BankRecord) -> list[Slotmap] | None:
    if _record(db, "banks", ("bank_id",), (record.bank_id,)) != record.model_dump_json():
        return None
    return _release(db, "bank_id = ?", (record.bank_id,))


_CLIENT_KEY = ("client_id", "client_slot")


def _client(record: ClientRecord) -> tuple[int, int]:
    return record.client.client_id, record.client.slot_nr


def _key(columns: tuple[str, ...]) -> str:
    return " AND ".join(f"{column} = ?" for column in columns)


def _record(
    db: sqlite3.Connection, table: str, columns: tuple[str, ...], key: tuple[int, ...]
) -> str | None:
    row = db.execute(f"SELECT record FROM temp.{table} WHERE {_key(columns)}", key).fetchone()
    return row[0] if row else None


def _records(db: sqlite3.Connection, table: str) -> list[str]:
    return [row[0] for row in db.execute(f"SELECT record FROM temp.{table} ORDER BY ord")]


def _register(
    db: sqlite3.Connection,
    table: str,
    columns: tuple[str, ...],
    key: tuple[int, ...],
    record: BankRecord | ClientRecord,
) -> str | None:
    """Register ``record``; the JSON of the record in the way, if any."""
    if (existing := _record(db, table, columns, key)) is not None:
        return existing
    db.execute(
        f"INSERT INTO temp.{table} ({', '.join(columns)}, record) "
        f"VALUES ({', '.join('?' for _ in columns)}, ?)",
        (*key, record.model_dump_json()),
    )
    return None


def _unregister(
    db: sqlite3.Connection,
    table: str,
    columns: tuple[str, ...],
    key: tuple[int, ...],
    record: BankRecord | ClientRecord,
) -> bool:
    cursor = db.execute(
        f"DELETE FROM temp.{table} WHERE {_key(columns)} AND record = ?",
        (*key, record.model_dump_json()),
    )
    return cursor.rowcount > 0


def _client_config(db: sqlite3.Connection, client: ClientSlot) -> str | None:
    row = db.execute(
        "SELECT config FROM client_configs WHERE client_id = ? AND client_slot = ?",
        (client.client_id, client.slot_nr),
    ).fetchone()
    return row[0] if row else None


def _set_client_config(
    db: sqlite3.Connection, client: ClientSlot, config: ClientConfig | None
) -> None:
    if config is None:
        db.execute(
            "DELETE FROM client_configs WHERE client_id = ? AND client_slot = ?",
            (client.client_id, client.slot_nr),
        )
    else:
        db.execute(
            "INSERT OR REPLACE INTO client_configs (client_id, client_slot, config) "
            "VALUES (?, ?, ?)",
            (client.client_id, client.slot_nr, config.model_dump_json()),
        )


def _forget_client_config(db: sqlite3.Connection, record: ClientRecord) -> bool:
    if _record(db, "clients", _CLIENT_KEY, _client(record)) != record.model_dump_json():
        return False
    _set_client_config(db, record.client, None)
    return True


def _put_cards(db: sqlite3.Connection, bank_id: int, cards: list[CardRecord]) -> None:
    db.execute("DELETE FROM cards WHERE bank_id = ?", (bank_id,))
    for card in cards:
        if card.iccid is not None:
            db.execute("DELETE FROM cards WHERE iccid = ?", (card.iccid,))
    db.executemany(
        "INSERT INTO cards (bank_id, bank_slot, iccid, record) VALUES (?, ?, ?, ?)",
        [(bank_id, card.bank_slot.slot_nr, card.iccid, card.model_dump_json()) for card in cards],
    )


def _cards(db: sqlite3.Connection, where: str, params: tuple[Any, ...]) -> list[str]:
    return [row[0] for row in db.execute(f"SELECT record FROM cards WHERE {where}", params)]


def _add_audit(db: sqlite3.Connection, entry: AuditEntry) -> int:
    cursor = db.execute(
        "INSERT INTO audit (time, kind, bank_id, client_id, entry) VALUES (?, ?, ?, ?, ?)",
        (
            entry.time,
            entry.kind.value,
            entry.bank_id,
            entry.client_id,
            entry.model_dump_json(exclude={"seq"}),
        ),
    )
    assert cursor.lastrowid is not None
    return cursor.lastrowid


def _list_audit(db: sqlite3.Connection, query: AuditQuery) -> list[AuditEntry]:
    where: list[str] = ["seq > ?"]
    params: list[Any] = [query.after]
    for column, value in (
        ("time >= ?", query.since),
        ("kind = ?", query.kind.value if query.kind is not None else None),
        ("bank_id = ?", query.bank_id),
        ("client_id = ?", query.client_id),
    ):
        if value is not None:
            where.append(column)
            params.append(value)
    rows = db.execute(
        f"SELECT seq, entry FROM audit WHERE {' AND '.join(where)} ORDER BY seq LIMIT ?",
        (*params, query.limit),
    )
    return [_audit_entry(seq, entry) for seq, entry in rows]


def _prune_audit(db: sqlite3.Connection, before: float) -> int:
    return db.execute("DELETE FROM audit WHERE time < ?", (before,)).rowcount
