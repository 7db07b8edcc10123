"""Contract tests every ``Store`` and ``Bus`` implementation must pass.

Use from a test module by subclassing and providing the fixture::

    class TestMemoryStore(StoreContract):
        @pytest.fixture
        async def store(self) -> AsyncIterator[Store]:
            yield MemoryStore()

The same classes run the SQLite store and the Redis and NATS implementations. The audit
log's tests are also a class of their own (``AuditContract``, part of ``StoreContract``), and
``RestartContract`` is for the stores whose state outlives the process (SQLite, Redis).
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Awaitable, Callable

import pydantic
import pytest

from remsim_control.audit import AUDIT_PAGE_MAX, AuditEntry, AuditKind, AuditQuery
from remsim_control.bus import Bus, Event, ResetEvent, SlotmapEvent, decode_event, encode_event
from remsim_control.errors import IdentityInUse, SlotInUse
from remsim_control.models import (
    BankdAddress,
    BankRecord,
    BankSlot,
    CardRecord,
    CardState,
    ClientConfig,
    ClientRecord,
    ClientSlot,
    ComponentIdentity,
    ComponentType,
    SlotmapState,
    slotmap_id,
)
from remsim_control.store import Store

NEW, UNACK, ACTIVE = SlotmapState.NEW, SlotmapState.UNACKNOWLEDGED, SlotmapState.ACTIVE
DELETE_REQ, DELETING = SlotmapState.DELETE_REQ, SlotmapState.DELETING

B1_0 = BankSlot(bank_id=1, slot_nr=0)
B1_1 = BankSlot(bank_id=1, slot_nr=1)
B2_0 = BankSlot(bank_id=2, slot_nr=0)
C23_0 = ClientSlot(client_id=23, slot_nr=0)
C23_1 = ClientSlot(client_id=23, slot_nr=1)
C24_0 = ClientSlot(client_id=24, slot_nr=0)

BANKD_IDENTITY = ComponentIdentity(
    type=ComponentType.BANKD, name="fixme-name", software="remsim-bankd", sw_version="1.0.0"
)
CLIENT_IDENTITY = ComponentIdentity(
    type=ComponentType.CLIENT, name="vm", software="remsim-client", sw_version="1.0.0"
)


def bank_record(bank_id: int, remote: str = "127.0.0.1:40000", core: str = "core-a") -> BankRecord:
    return BankRecord(
        bank_id=bank_id,
        number_of_slots=2,
        identity=BANKD_IDENTITY,
        bankd=BankdAddress(host="127.0.0.1", port=9999),
        remote=remote,
        core_id=core,
    )


def client_record(
    client: ClientSlot, remote: str = "127.0.0.1:40001", core: str = "core-a"
) -> ClientRecord:
    return ClientRecord(client=client, identity=CLIENT_IDENTITY, remote=remote, core_id=core)


T0 = 1_700_000_000.25
"""An audit entry time (epoch seconds) the tests count from."""

ICCID_A, ICCID_B = "8949000000000000001", "8949000000000000002"


def card(
    bank_slot: BankSlot,
    iccid: str | None = ICCID_A,
    *,
    state: CardState = CardState.PRESENT,
    imsi: str | None = None,
    last_seen: float = 1_700_000_000.125,
) -> CardRecord:
    present = state is CardState.PRESENT
    return CardRecord(
        bank_slot=bank_slot,
        state=state,
        atr="3B9F96801FC78031A073BE21136743200718000001A5" if present else None,
        iccid=iccid if present else None,
        imsi=imsi,
        last_seen=last_seen,
    )


REST, SLOTMAP, IDENTITY = AuditKind.REST, AuditKind.SLOTMAP, AuditKind.IDENTITY


def audit_entry(
    kind: AuditKind = REST,
    *,
    time: float = T0,
    bank_id: int | None = None,
    client_id: int | None = None,
    action: str = "POST /api/backend/v1/slotmaps",
    result: str = "201",
) -> AuditEntry:
    return AuditEntry(
        kind=kind,
        time=time,
        actor="ops",
        action=action,
        result=result,
        address="127.0.0.1:50000",
        bank_id=bank_id,
        client_id=client_id,
    )


class AuditContract:
    """The audit log. Subclass and provide an async ``store`` fixture yielding an empty
    store (``StoreContract`` includes these tests)."""

    async def test_audit_entries_get_increasing_seqs_and_are_kept_as_given(
        self, store: Store
    ) -> None:
        full = AuditEntry(
            kind=IDENTITY,
            time=T0 + 0.123456,
            actor="CN=client-24",
            action="connectClientReq",
            result="refused",
            address="[::1]:40001",
            bank_id=1,
            bank_slot=0,
            client_id=23,
            client_slot=0,
            detail="claimed C23:0; the certificate names C24",
        )
        added = [
            await store.add_audit(entry)
            for entry in (audit_entry(), full, audit_entry(SLOTMAP, action="NEW -> ACTIVE"))
        ]
        assert 0 < added[0].seq < added[1].seq < added[2].seq
        assert added[1] == full.model_copy(update={"seq": added[1].seq})
        assert await store.list_audit(AuditQuery()) == added

    async def test_an_empty_audit_log_lists_nothing(self, store: Store) -> None:
        assert await store.list_audit(AuditQuery()) == []
        assert await store.list_audit(AuditQuery(since=T0, kind=REST, bank_id=1)) == []
        assert await store.prune_audit(T0) == 0

    async def test_audit_entries_are_filtered_by_time_kind_bank_and_client(
        self, store: Store
    ) -> None:
        old = await store.add_audit(audit_entry(REST, time=T0, bank_id=1, client_id=23))
        b1 = await store.add_audit(audit_entry(SLOTMAP, time=T0 + 10, bank_id=1, client_id=23))
        c24 = await store.add_audit(audit_entry(IDENTITY, time=T0 + 20, client_id=24))
        b2 = await store.add_audit(audit_entry(REST, time=T0 + 30, bank_id=2))

        async def listed(**filters: object) -> list[AuditEntry]:
            return await store.list_audit(AuditQuery.model_validate(filters))

        assert await listed(since=T0 + 10) == [b1, c24, b2]
        assert await listed(since=T0 + 10.5) == [c24, b2]
        assert await listed(since=T0 + 31) == []
        assert await listed(kind=REST) == [old, b2]
        assert await listed(bank_id=1) == [old, b1]
        assert await listed(client_id=23) == [old, b1]
        assert await listed(client_id=24) == [c24]
        assert await listed(bank_id=3) == []
        assert await listed(kind=REST, bank_id=1) == [old]
        assert await listed(since=T0 + 5, bank_id=1, client_id=23, kind=SLOTMAP) == [b1]
        assert await listed(since=T0 + 5, kind=REST, bank_id=1) == []

    async def test_audit_pages_follow_the_seq_cursor(self, store: Store) -> None:
        added = [await store.add_audit(audit_entry(time=T0 + n)) for n in range(5)]
        first = await store.list_audit(AuditQuery(limit=2))
        second = await store.list_audit(AuditQuery(after=first[-1].seq, limit=2))
        third = await store.list_audit(AuditQuery(after=second[-1].seq, limit=2))
        assert (first, second, third) == (added[:2], added[2:4], added[4:])
        assert await store.list_audit(AuditQuery(after=added[-1].seq)) == []
        assert await store.list_audit(AuditQuery(after=2**63 - 1)) == []

    async def test_filtered_pages_find_sparse_matches_among_many_entries(
        self, store: Store
    ) -> None:
        matching = []
        for n in range(30):
            kind = SLOTMAP if n % 7 == 3 else REST
            entry = await store.add_audit(audit_entry(kind, time=T0 + n, bank_id=1))
            if kind is SLOTMAP:
                matching.append(entry)
        assert len(matching) == 4
        page = await store.list_audit(AuditQuery(bank_id=1, kind=SLOTMAP, limit=3))
        assert page == matching[:3]
        rest = await store.list_audit(
            AuditQuery(bank_id=1, kind=SLOTMAP, after=page[-1].seq, limit=3)
        )
        assert rest == matching[3:]
        assert await store.list_audit(AuditQuery(kind=SLOTMAP, limit=2)) == matching[:2]
        assert await store.list_audit(AuditQuery(kind=SLOTMAP, since=T0 + 10)) == matching[1:]

    async def test_a_page_holds_at_most_its_limit(self, store: Store) -> None:
        for _ in range(3):
            await store.add_audit(audit_entry())
        assert len(await store.list_audit(AuditQuery(limit=1))) == 1
        with pytest.raises(pydantic.ValidationError):
            AuditQuery(limit=AUDIT_PAGE_MAX + 1)

    async def test_pruning_drops_the_entries_older_than_the_limit(self, store: Store) -> None:
        for days in (3, 2):
            await store.add_audit(audit_entry(time=T0 - days * 86400))
        kept = [
            await store.add_audit(audit_entry(time=T0 - 86400)),
            await store.add_audit(audit_entry(time=T0)),
        ]
        assert await store.prune_audit(T0 - 86400) == 2
        assert await store.list_audit(AuditQuery()) == kept
        assert await store.list_audit(AuditQuery(since=T0 - 3 * 86400)) == kept
        assert await store.prune_audit(T0 - 86400) == 0

    async def test_seqs_are_never_handed_out_again_after_pruning(self, store: Store) -> None:
        last = await store.add_audit(audit_entry(time=T0 - 100))
        assert await store.prune_audit(T0) == 1
        assert await store.list_audit(AuditQuery()) == []
        new = await store.add_audit(audit_entry(time=T0))
        assert new.seq > last.seq
        assert await store.list_audit(AuditQuery(after=last.seq)) == [new]

    async def test_concurrent_appends_get_distinct_seqs(self, store: Store) -> None:
        added = await asyncio.gather(*(store.add_audit(audit_entry()) for _ in range(16)))
        assert len({entry.seq for entry in added}) == 16
        assert await store.list_audit(AuditQuery()) == sorted(added, key=lambda e: e.seq)


class StoreContract(AuditContract):
    """Subclass and provide an async ``store`` fixture yielding an empty store."""

    # --- slotmaps ---------------------------------------------------------------------

    async def test_a_new_slotmap_is_new_with_the_original_id(self, store: Store) -> None:
        slotmap = await store.create_slotmap(B1_1, C23_0)
        assert (slotmap.bank, slotmap.client, slotmap.state) == (B1_1, C23_0, NEW)
        assert slotmap.id == 65537
        assert slotmap.result is None
        assert await store.get_slotmap(65537) == slotmap

    async def test_a_map_made_by_card_keeps_its_iccid(self, store: Store) -> None:
        slotmap = await store.create_slotmap(B1_1, C23_0, "8949000000000000001")
        assert slotmap.iccid == "8949000000000000001"
        await store.update_slotmap(slotmap.serial, {NEW}, ACTIVE)
        assert [m.iccid for m in await store.list_slotmaps()] == ["8949000000000000001"]
        assert (await store.create_slotmap(B1_0, C24_0)).iccid is None

    async def test_slotmaps_are_listed_in_creation_order(self, store: Store) -> None:
        first = await store.create_slotmap(B2_0, C24_0)
        second = await store.create_slotmap(B1_0, C23_0)
        assert second.serial > first.serial
        assert await store.list_slotmaps() == [first, second]

    @pytest.mark.parametrize(
        ("bank", "client"), [(B1_0, C23_0), (B1_0, C24_0), (B2_0, C23_0)], ids=str
    )
    async def test_a_slot_in_use_is_refused(
        self, store: Store, bank: BankSlot, client: ClientSlot
    ) -> None:
        existing = await store.create_slotmap(B1_0, C23_0)
        with pytest.raises(SlotInUse) as refused:
            await store.create_slotmap(bank, client)
        assert refused.value.existing == existing
        assert await store.list_slotmaps() == [existing]

    async def test_concurrent_creates_of_one_slot_let_one_win(self, store: Store) -> None:
        outcomes = await asyncio.gather(
            *(store.create_slotmap(B1_0, ClientSlot(client_id=n, slot_nr=0)) for n in range(8)),
            return_exceptions=True,
        )
        assert sum(not isinstance(outcome, SlotInUse) for outcome in outcomes) == 1
        assert len(await store.list_slotmaps()) == 1

    async def test_maps_being_deleted_are_hidden_and_block_nothing(self, store: Store) -> None:
        old = await store.create_slotmap(B1_0, C23_0)
        await store.update_slotmap(old.serial, {NEW}, ACTIVE)
        assert await store.request_removal(old.id) is not None
        assert await store.get_slotmap(old.id) is None
        new = await store.create_slotmap(B1_0, C23_0)
        assert new.serial != old.serial
        assert await store.get_slotmap(new.id) == new
        assert [m.state for m in await store.list_slotmaps()] == [DELETE_REQ, NEW]
        assert await store.list_slotmaps(visible_only=True) == [new]

    async def test_slotmaps_can_be_listed_by_bank_and_by_client(self, store: Store) -> None:
        a = await store.create_slotmap(B1_0, C23_0)
        b = await store.create_slotmap(B2_0, C24_0)
        c = await store.create_slotmap(B1_1, C23_1)
        assert await store.list_slotmaps(bank_id=1) == [a, c]
        assert await store.list_slotmaps(client=C24_0) == [b]
        assert await store.list_slotmaps(bank_id=2, client=C23_0) == []

    async def test_slotmaps_can_be_listed_by_bank_slots_in_every_state(self, store: Store) -> None:
        old = await store.create_slotmap(B1_0, C23_0)
        await store.update_slotmap(old.serial, {NEW}, ACTIVE)
        await store.request_removal(old.id)  # hidden, still at the bank slot
        other = await store.create_slotmap(B1_1, C24_0)
        new = await store.create_slotmap(B1_0, C23_1)
        await store.create_slotmap(B2_0, C23_0)
        at_b1_0 = await store.list_slotmaps(bank_slots=[B1_0])
        assert [(m.serial, m.state) for m in at_b1_0] == [
            (old.serial, DELETE_REQ),
            (new.serial, NEW),
        ]
        both = await store.list_slotmaps(bank_slots=[B1_1, B1_0])
        assert [m.serial for m in both] == [old.serial, other.serial, new.serial]
        assert await store.list_slotmaps(bank_slots=[B1_0], visible_only=True) == [new]
        assert await store.list_slotmaps(bank_slots=[B1_0], client=C23_1) == [new]
        assert await store.list_slotmaps(bank_slots=[]) == []
        await store.remove_slotmap(old.serial, {DELETE_REQ})
        assert await store.list_slotmaps(bank_slots=[B1_0]) == [new]

    async def test_removing_a_new_map_removes_it_at_once(self, store: Store) -> None:
        slotmap = await store.create_slotmap(B1_0, C23_0)
        assert await store.request_removal(slotmap.id) == slotmap
        assert await store.list_slotmaps() == []

    @pytest.mark.parametrize("state", [UNACK, ACTIVE])
    async def test_removing_a_map_at_the_bankd_requests_its_deletion(
        self, store: Store, state: SlotmapState
    ) -> None:
        slotmap = await store.create_slotmap(B1_0, C23_0)
        at_bankd = await store.update_slotmap(slotmap.serial, {NEW}, state)
        assert await store.request_removal(slotmap.id) == at_bankd
        [hidden] = await store.list_slotmaps()
        assert (hidden.serial, hidden.state) == (slotmap.serial, DELETE_REQ)
        assert await store.request_removal(slotmap.id) is None

    async def test_removing_an_unknown_map_finds_nothing(self, store: Store) -> None:
        assert await store.request_removal(12345) is None

    # A map made by card follows its card (Store.move_slotmap): one step, so that a core
    # dying in the middle of a move never loses the map.

    @pytest.mark.parametrize("state", [NEW, UNACK, ACTIVE])
    async def test_a_map_follows_its_card_in_one_step(
        self, store: Store, state: SlotmapState
    ) -> None:
        made = await store.create_slotmap(B1_0, C23_0, ICCID_A)
        old = made if state is NEW else await store.update_slotmap(made.serial, {NEW}, state)
        assert old is not None
        moved = await store.move_slotmap(old.serial, {NEW, UNACK, ACTIVE}, B2_0)
        assert moved is not None
        before, new = moved
        assert before == old
        assert (new.bank, new.client, new.iccid, new.state) == (B2_0, C23_0, ICCID_A, NEW)
        assert new.serial > old.serial and new.result is None
        assert await store.get_slotmap(old.id) is None
        assert await store.get_slotmap(new.id) == new
        assert await store.list_slotmaps(visible_only=True) == [new]
        # As a removal: a NEW map is gone, one at its bankd waits there as DELETE_REQ.
        left = [(m.serial, m.state) for m in await store.list_slotmaps(bank_slots=[B1_0])]
        assert left == ([] if state is NEW else [(old.serial, DELETE_REQ)])
        assert [m.serial for m in await store.list_slotmaps(client=C23_0)][-1] == new.serial
        assert await store.list_slotmaps(bank_id=2) == [new]
        # The new map holds its slots as a created one does.
        with pytest.raises(SlotInUse) as refused:
            await store.create_slotmap(B1_0, C23_0)
        assert refused.value.existing == new
        assert await store.request_removal(new.id) == new

    async def test_a_map_moves_past_a_map_being_deleted(self, store: Store) -> None:
        leaving = await store.create_slotmap(B2_0, C24_0)
        await store.update_slotmap(leaving.serial, {NEW}, ACTIVE)
        await store.request_removal(leaving.id)
        old = await store.create_slotmap(B1_0, C23_0, ICCID_A)
        moved = await store.move_slotmap(old.serial, {NEW}, B2_0)
        assert moved is not None and moved[1].bank == B2_0
        assert [m.state for m in await store.list_slotmaps(bank_slots=[B2_0])] == [
            DELETE_REQ,
            NEW,
        ]

    @pytest.mark.parametrize("to", [B1_1, B1_0], ids=["another map's slot", "its own slot"])
    async def test_a_map_does_not_move_to_a_slot_in_use(self, store: Store, to: BankSlot) -> None:
        old = await store.create_slotmap(B1_0, C23_0, ICCID_A)
        await store.update_slotmap(old.serial, {NEW}, ACTIVE)
        await store.create_slotmap(B1_1, C24_0)
        maps = await store.list_slotmaps()
        with pytest.raises(SlotInUse) as refused:
            await store.move_slotmap(old.serial, {ACTIVE}, to)
        assert refused.value.existing == await store.get_slotmap(slotmap_id(to))
        assert await store.list_slotmaps() == maps

    async def test_a_map_changed_meanwhile_does_not_move(self, store: Store) -> None:
        old = await store.create_slotmap(B1_0, C23_0, ICCID_A)
        active = await store.update_slotmap(old.serial, {NEW}, ACTIVE)
        assert await store.move_slotmap(old.serial, {NEW, UNACK}, B1_1) is None
        assert await store.list_slotmaps() == [active]
        await store.request_removal(old.id)  # hidden: a map being deleted does not move
        maps = await store.list_slotmaps()
        assert await store.move_slotmap(old.serial, {ACTIVE, DELETE_REQ}, B1_1) is None
        again = await store.create_slotmap(B1_0, C23_0, ICCID_A)  # same slots, new serial
        assert await store.move_slotmap(old.serial, {NEW}, B1_1) is None
        assert await store.move_slotmap(12345, {NEW}, B1_1) is None
        assert await store.list_slotmaps() == [*maps, again]

    async def test_concurrent_moves_of_one_map_let_one_win(self, store: Store) -> None:
        old = await store.create_slotmap(B1_0, C23_0, ICCID_A)
        outcomes = await asyncio.gather(
            *(store.move_slotmap(old.serial, {NEW}, to) for to in (B1_1, B2_0))
        )
        assert sum(outcome is not None for outcome in outcomes) == 1
        [new] = await store.list_slotmaps()
        assert (new.client, new.iccid) == (C23_0, ICCID_A) and new.bank in (B1_1, B2_0)

    async def test_update_is_a_compare_and_set(self, store: Store) -> None:
        slotmap = await store.create_slotmap(B1_0, C23_0)
        assert await store.update_slotmap(slotmap.serial, {ACTIVE}, DELETE_REQ) is None
        unack = await store.update_slotmap(slotmap.serial, {NEW}, UNACK)
        assert unack is not None and unack.state is UNACK
        assert await store.update_slotmap(slotmap.serial, {NEW}, UNACK) is None
        assert await store.update_slotmap(999, {NEW}, UNACK) is None
        assert await store.list_slotmaps() == [unack]

    async def test_update_records_and_clears_the_bankd_result(self, store: Store) -> None:
        slotmap = await store.create_slotmap(B1_0, C23_0)
        await store.update_slotmap(slotmap.serial, {NEW}, UNACK)
        refused = await store.update_slotmap(slotmap.serial, {UNACK}, NEW, result="illegalSlotId")
        assert refused is not None and refused.result == "illegalSlotId"
        assert await store.get_slotmap(slotmap.id) == refused
        active = await store.update_slotmap(slotmap.serial, {NEW}, ACTIVE)
        assert active is not None and active.result is None

    async def test_a_map_being_deleted_never_becomes_visible_again(self, store: Store) -> None:
        slotmap = await store.create_slotmap(B1_0, C23_0)
        await store.update_slotmap(slotmap.serial, {NEW}, ACTIVE)
        await store.request_removal(slotmap.id)
        with pytest.raises(ValueError):
            await store.update_slotmap(slotmap.serial, {DELETE_REQ}, NEW)
        deleting = await store.update_slotmap(slotmap.serial, {DELETE_REQ}, DELETING)
        assert deleting is not None and deleting.state is DELETING

    async def test_remove_is_a_compare_and_delete(self, store: Store) -> None:
        slotmap = await store.create_slotmap(B1_0, C23_0)
        assert await store.remove_slotmap(slotmap.serial, {DELETING}) is None
        assert await store.remove_slotmap(slotmap.serial, {NEW}) == slotmap
        assert await store.remove_slotmap(slotmap.serial, {NEW}) is None
        assert await store.list_slotmaps() == []

    async def test_handed_out_slotmaps_are_values(self, store: Store) -> None:
        slotmap = await store.create_slotmap(B1_0, C23_0)
        with pytest.raises(pydantic.ValidationError):
            slotmap.state = ACTIVE
        await store.update_slotmap(slotmap.serial, {NEW}, ACTIVE)
        assert slotmap.state is NEW

    # --- registry ---------------------------------------------------------------------

    async def test_banks_register_once_per_bank_id(self, store: Store) -> None:
        b2, b1 = bank_record(2), bank_record(1)
        await store.register_bank(b2)
        await store.register_bank(b1)
        assert await store.list_banks() == [b2, b1]
        assert await store.get_bank(1) == b1
        assert await store.get_bank(3) is None
        with pytest.raises(IdentityInUse) as refused:
            await store.register_bank(bank_record(1, remote="10.0.0.9:1234", core="core-b"))
        assert refused.value.existing == b1

    async def test_only_the_registered_bank_connection_unregisters_it(self, store: Store) -> None:
        old, new = bank_record(1, remote="127.0.0.1:1"), bank_record(1, remote="127.0.0.1:2")
        await store.register_bank(old)
        assert await store.unregister_bank(old)
        await store.register_bank(new)
        assert not await store.unregister_bank(old)
        assert await store.get_bank(1) == new

    async def test_a_bank_that_registers_again_is_listed_last(self, store: Store) -> None:
        b1, b2 = bank_record(1), bank_record(2)
        await store.register_bank(b1)
        await store.register_bank(b2)
        await store.unregister_bank(b1)
        await store.register_bank(b1)
        assert await store.list_banks() == [b2, b1]

    async def test_clients_register_once_per_client_slot(self, store: Store) -> None:
        c23_0, c23_1 = client_record(C23_0), client_record(C23_1)
        await store.register_client(c23_0)
        await store.register_client(c23_1)
        assert await store.list_clients() == [c23_0, c23_1]
        assert await store.get_client(C23_1) == c23_1
        with pytest.raises(IdentityInUse) as refused:
            await store.register_client(client_record(C23_0, remote="127.0.0.1:9"))
        assert refused.value.existing == c23_0
        assert not await store.unregister_client(client_record(C23_0, remote="127.0.0.1:9"))
        assert await store.unregister_client(c23_0)
        assert await store.list_clients() == [c23_1]
        assert await store.get_client(C23_0) is None

    async def test_a_released_bank_s_maps_wait_for_it_and_deletions_are_freed(
        self, store: Store
    ) -> None:
        b1 = bank_record(1)
        await store.register_bank(b1)
        new = await store.create_slotmap(B1_0, C23_0)
        active = await store.update_slotmap(
            (await store.create_slotmap(B1_1, C23_1)).serial, {NEW}, ACTIVE
        )
        deleting = await store.create_slotmap(B2_0, C24_0)
        other = await store.update_slotmap(deleting.serial, {NEW}, ACTIVE)
        assert active is not None and other is not None
        assert await store.release_bank(b1) == [active]
        assert [(m.serial, m.state) for m in await store.list_slotmaps(bank_id=1)] == [
            (new.serial, NEW),
            (active.serial, NEW),
        ]
        # Bank 2's map is being deleted when its connection ends: it is freed.
        b2 = bank_record(2)
        await store.register_bank(b2)
        await store.request_removal(other.id)
        await store.update_slotmap(other.serial, {DELETE_REQ}, DELETING)
        [released] = await store.release_bank(b2) or []
        assert (released.serial, released.state) == (other.serial, DELETING)
        assert await store.list_slotmaps(bank_id=2) == []
        await store.create_slotmap(B2_0, C24_0)

    async def test_a_bank_taken_over_by_another_connection_keeps_its_maps(
        self, store: Store
    ) -> None:
        old, new = bank_record(1, core="core-a"), bank_record(1, core="core-b")
        slotmap = await store.create_slotmap(B1_0, C23_0)
        await store.register_bank(old)
        await store.unregister_bank(old)  # as if core A's lease had lapsed
        await store.register_bank(new)
        await store.update_slotmap(slotmap.serial, {NEW}, ACTIVE)
        assert await store.release_bank(old) is None
        assert [m.state for m in await store.list_slotmaps()] == [ACTIVE]
        assert await store.release_bank(bank_record(2)) is None

    async def test_orphaned_maps_are_released(self, store: Store) -> None:
        await store.register_bank(bank_record(1))
        connected = await store.update_slotmap(
            (await store.create_slotmap(B1_0, C23_0)).serial, {NEW}, ACTIVE
        )
        orphan = await store.update_slotmap(
            (await store.create_slotmap(B2_0, C24_0)).serial, {NEW}, UNACK
        )
        assert connected is not None and orphan is not None
        assert await store.release_orphans() == [orphan]
        assert [m.state for m in await store.list_slotmaps()] == [ACTIVE, NEW]
        assert await store.release_orphans() == []

    async def test_only_the_registered_client_connection_forgets_its_config(
        self, store: Store
    ) -> None:
        config = ClientConfig(bank=B1_0, bankd=BankdAddress(host="127.0.0.1", port=9999))
        old, new = client_record(C23_0, core="core-a"), client_record(C23_0, core="core-b")
        await store.register_client(old)
        await store.unregister_client(old)
        await store.register_client(new)
        await store.set_client_config(C23_0, config)
        assert not await store.forget_client_config(old)
        assert await store.get_client_config(C23_0) == config
        assert await store.forget_client_config(new)
        assert await store.get_client_config(C23_0) is None

    async def test_client_configs_are_kept_until_forgotten(self, store: Store) -> None:
        config = ClientConfig(bank=B1_0, bankd=BankdAddress(host="127.0.0.1", port=9999))
        assert await store.get_client_config(C23_0) is None
        await store.set_client_config(C23_0, config)
        assert await store.get_client_config(C23_0) == config
        assert await store.get_client_config(C24_0) is None
        await store.set_client_config(C23_0, None)
        assert await store.get_client_config(C23_0) is None
        await store.set_client_config(C23_0, None)

    # --- the card inventory --------------------------------------------------------------

    async def test_an_empty_inventory_knows_no_card(self, store: Store) -> None:
        assert await store.cards() == []
        assert await store.card(ICCID_A) is None

    async def test_a_bank_s_report_is_kept_in_bank_slot_order_as_given(self, store: Store) -> None:
        b2 = [card(B2_0, ICCID_B, imsi="262019876543210")]
        b1 = [card(B1_1, None, state=CardState.EMPTY), card(B1_0, ICCID_A)]
        await store.put_cards(2, b2)
        await store.put_cards(1, b1)
        assert await store.cards() == [b1[1], b1[0], b2[0]]
        assert await store.card(ICCID_A) == b1[1]
        assert await store.card(ICCID_B) == b2[0]

    async def test_a_bank_s_new_report_replaces_its_old_one(self, store: Store) -> None:
        await store.put_cards(1, [card(B1_0, ICCID_A), card(B1_1, ICCID_B)])
        await store.put_cards(2, [card(B2_0, None, state=CardState.UNRESPONSIVE)])
        later = [card(B1_0, None, state=CardState.EMPTY, last_seen=1_700_000_100.5)]
        await store.put_cards(1, later)
        assert await store.cards() == [*later, card(B2_0, None, state=CardState.UNRESPONSIVE)]
        assert await store.card(ICCID_A) is None
        assert await store.card(ICCID_B) is None
        await store.put_cards(1, [])
        assert [c.bank_slot for c in await store.cards()] == [B2_0]

    async def test_a_card_found_in_another_bank_moved_there(self, store: Store) -> None:
        await store.put_cards(1, [card(B1_0, ICCID_A), card(B1_1, ICCID_B)])
        await store.put_cards(2, [card(B2_0, ICCID_A)])
        assert await store.cards() == [card(B1_1, ICCID_B), card(B2_0, ICCID_A)]
        assert await store.card(ICCID_A) == card(B2_0, ICCID_A)

    async def test_a_report_names_its_own_bank_s_slots_only(self, store: Store) -> None:
        with pytest.raises(ValueError):
            await store.put_cards(2, [card(B1_0)])
        with pytest.raises(ValueError):
            await store.put_cards(1, [card(B1_0), card(B1_0, ICCID_B)])
        assert await store.cards() == []


OpenStore = Callable[[], Awaitable[Store]]


@contextlib.asynccontextmanager
async def reopening(open_one: OpenStore) -> AsyncIterator[OpenStore]:
    """An ``open_store`` for ``RestartContract``: opens a store with ``open_one`` each time
    it is called, and closes every store it opened at the end."""
    opened: list[Store] = []

    async def open_store() -> Store:
        opened.append(await open_one())
        return opened[-1]

    try:
        yield open_store
    finally:
        for store in opened:
            await store.close()


class RestartContract:
    """For a store whose state outlives the process: subclass and provide an async
    ``open_store`` fixture, a function opening a store on the same state (file, Redis
    prefix) each time it is called (the fixture closes what it opened)."""

    async def test_slotmaps_configs_and_audit_survive_a_restart_the_registry_does_not(
        self, open_store: OpenStore
    ) -> None:
        config = ClientConfig(bank=B1_0, bankd=BankdAddress(host="127.0.0.1", port=9999))
        before = await open_store()
        await before.register_bank(bank_record(1))
        await before.register_client(client_record(C23_0))
        active = await before.update_slotmap(
            (await before.create_slotmap(B1_0, C23_0)).serial, {NEW}, ACTIVE
        )
        deleting = await before.create_slotmap(B2_0, C24_0)
        await before.update_slotmap(deleting.serial, {NEW}, ACTIVE)
        await before.request_removal(deleting.id)
        await before.set_client_config(C23_0, config)
        logged = await before.add_audit(audit_entry(SLOTMAP, bank_id=1, action="NEW -> ACTIVE"))
        slotmaps = await before.list_slotmaps()
        await before.close()

        after = await open_store()
        assert await after.list_slotmaps() == slotmaps
        assert active is not None and await after.get_slotmap(active.id) == active
        assert await after.get_client_config(C23_0) == config
        assert await after.list_audit(AuditQuery()) == [logged]
        # The connections died with the process that held them; the new process (another
        # core id) takes their identities.
        assert await after.list_banks() == []
        assert await after.list_clients() == []
        await after.register_bank(bank_record(1, core="core-b"))
        await after.register_client(client_record(C23_0, core="core-b"))

    async def test_the_card_inventory_survives_a_restart(self, open_store: OpenStore) -> None:
        cards = [card(B1_0, ICCID_A, imsi="262019876543210"), card(B1_1, ICCID_B)]
        before = await open_store()
        await before.put_cards(1, cards)
        await before.close()

        after = await open_store()
        assert await after.cards() == cards
        assert await after.card(ICCID_B) == cards[1]

    async def test_after_a_restart_serials_and_seqs_go_on_increasing(
        self, open_store: OpenStore
    ) -> None:
        before = await open_store()
        old = await before.create_slotmap(B1_0, C23_0)
        await before.remove_slotmap(old.serial, {NEW})
        old_entry = await before.add_audit(audit_entry(time=T0 - 100))
        await before.prune_audit(T0)
        await before.close()

        after = await open_store()
        assert (await after.create_slotmap(B1_0, C23_0)).serial > old.serial
        assert (await after.add_audit(audit_entry())).seq > old_entry.seq

    async def test_a_map_that_followed_its_card_is_there_after_a_restart(
        self, open_store: OpenStore
    ) -> None:
        before = await open_store()
        old = await before.create_slotmap(B1_0, C23_0, ICCID_A)
        await before.update_slotmap(old.serial, {NEW}, ACTIVE)
        moved = await before.move_slotmap(old.serial, {ACTIVE}, B2_0)
        assert moved is not None
        new = moved[1]
        slotmaps = await before.list_slotmaps()
        await before.close()

        after = await open_store()
        assert await after.list_slotmaps() == slotmaps
        assert [m.state for m in slotmaps] == [DELETE_REQ, NEW]
        assert await after.get_slotmap(new.id) == new
        assert await after.get_slotmap(old.id) is None
        with pytest.raises(SlotInUse) as refused:
            await after.create_slotmap(B1_1, C23_0)
        assert refused.value.existing == new
        assert (await after.create_slotmap(B1_0, C24_0)).serial > new.serial

    async def test_the_maps_at_the_old_process_s_bankds_are_orphans(
        self, open_store: OpenStore
    ) -> None:
        before = await open_store()
        await before.register_bank(bank_record(1))
        serial = (await before.create_slotmap(B1_0, C23_0)).serial
        active = await before.update_slotmap(serial, {NEW}, ACTIVE)
        await before.close()

        after = await open_store()
        assert await after.release_orphans() == [active]
        assert [m.state for m in await after.list_slotmaps()] == [NEW]


class BusContract:
    """Subclass and provide an async ``bus`` fixture yielding an open bus."""

    async def test_subscribers_get_every_event_in_order(self, bus: Bus) -> None:
        events: list[Event] = [
            SlotmapEvent(serial=n, bank=B1_0, client=C23_0) for n in range(5)
        ] + [ResetEvent()]
        async with bus.subscribe() as first, bus.subscribe() as second:
            for event in events:
                await bus.publish(event)
            assert await _take(first, len(events)) == events
            assert await _take(second, len(events)) == events

    async def test_events_before_subscribing_are_not_delivered(self, bus: Bus) -> None:
        await bus.publish(ResetEvent())
        async with bus.subscribe() as events:
            await bus.publish(SlotmapEvent(serial=1, bank=B1_0, client=C23_0))
            assert await _take(events, 1) == [SlotmapEvent(serial=1, bank=B1_0, client=C23_0)]

    async def test_closing_the_bus_ends_subscriptions(self, bus: Bus) -> None:
        async with bus.subscribe() as events:
            await bus.close()
            async with asyncio.timeout(5):
                assert [event async for event in events] == []

    def test_events_round_trip_as_bytes(self) -> None:
        event = SlotmapEvent(serial=7, bank=B1_1, client=C24_0)
        assert decode_event(encode_event(event)) == event
        assert decode_event(encode_event(ResetEvent())) == ResetEvent()
        with pytest.raises(pydantic.ValidationError):
            decode_event(b'{"kind": "bogus"}')


async def _take(events: AsyncIterator[Event], count: int) -> list[Event]:
    taken: list[Event] = []
    async with asyncio.timeout(5):
        while len(taken) < count:
            taken.append(await anext(events))
    return taken
