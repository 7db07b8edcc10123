"""In-memory ``Store`` for the single-host server.

Methods never await, so each one is atomic within the event loop; the models handed out are
frozen, so callers cannot reach into the store's state.
"""

from __future__ import annotations

import itertools
from collections.abc import Collection, Hashable, Iterable
from typing import TypeVar

from remsim_control.audit import AuditEntry, AuditQuery
from remsim_control.errors import IdentityInUse, SlotInUse
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

K = TypeVar("K", bound=Hashable)
_Slot = tuple[int, int]
"""A bank or client slot as an index key: (bank or client id, slot number)."""


def _key(slot: BankSlot | ClientSlot) -> _Slot:
    return (slot.bank_id if isinstance(slot, BankSlot) else slot.client_id), slot.slot_nr


def _discard(index: dict[K, dict[int, None]], key: K, serial: int) -> None:
    """Take ``serial`` out of ``index[key]`` (and the key, once it has no serial left)."""
    serials = index[key]
    del serials[serial]
    if not serials:
        del index[key]


class MemoryStore:
    def __init__(self) -> None:
        self._serials = itertools.count(1)
        self._slotmaps: dict[int, Slotmap] = {}  # by serial, in creation order
        # Indexes (serials as dict keys: insertion order is creation order). Every lookup a
        # connection makes per event is O(1), whatever the number of maps.
        self._visible_at_bank: dict[_Slot, int] = {}  # the visible map at a bank slot
        self._visible_at_client: dict[_Slot, int] = {}  # the visible map of a client slot
        self._of_bank: dict[int, dict[int, None]] = {}  # every map of a bank
        self._at_bank_slot: dict[_Slot, dict[int, None]] = {}  # every map at a bank slot
        self._of_client: dict[_Slot, dict[int, None]] = {}  # every map of a client slot
        self._banks: dict[int, BankRecord] = {}
        self._clients: dict[ClientSlot, ClientRecord] = {}
        self._client_configs: dict[ClientSlot, ClientConfig] = {}
        self._cards: dict[BankSlot, CardRecord] = {}
        self._audit: list[AuditEntry] = []
        self._audit_seqs = itertools.count(1)

    # --- slotmaps ---------------------------------------------------------------------

    async def create_slotmap(
        self, bank: BankSlot, client: ClientSlot, iccid: str | None = None
    ) -> Slotmap:
        for index, slot in ((self._visible_at_bank, bank), (self._visible_at_client, client)):
            if (serial := index.get(_key(slot))) is not None:
                raise SlotInUse(self._slotmaps[serial])
        slotmap = Slotmap(serial=next(self._serials), bank=bank, client=client, iccid=iccid)
        self._add(slotmap)
        return slotmap

    async def get_slotmap(self, slotmap_id: int) -> Slotmap | None:
        if (bank := slotmap_bank(slotmap_id)) is None:
            return None
        serial = self._visible_at_bank.get(_key(bank))
        return None if serial is None else self._slotmaps[serial]

    async def list_slotmaps(
        self,
        *,
        bank_id: int | None = None,
        client: ClientSlot | None = None,
        bank_slots: Collection[BankSlot] | None = None,
        visible_only: bool = False,
    ) -> list[Slotmap]:
        # The smallest index that applies; the other filters are checked on its maps.
        serials: Iterable[int]
        if client is not None:
            serials = self._of_client.get(_key(client), ())
        elif bank_slots is not None:
            found = (self._at_bank_slot.get(_key(slot), ()) for slot in set(bank_slots))
            serials = sorted(itertools.chain.from_iterable(found))
        elif bank_id is not None:
            serials = self._of_bank.get(bank_id, ())
        else:
            serials = self._slotmaps
        slots = None if bank_slots is None else {_key(slot) for slot in bank_slots}
        maps = (self._slotmaps[serial] for serial in serials)
        return [
            slotmap
            for slotmap in maps
            if (bank_id is None or slotmap.bank.bank_id == bank_id)
            and (client is None or slotmap.client == client)
            and (slots is None or _key(slotmap.bank) in slots)
            and (not visible_only or slotmap.state.visible)
        ]

    async def request_removal(self, slotmap_id: int) -> Slotmap | None:
        slotmap = await self.get_slotmap(slotmap_id)
        if slotmap is None:
            return None
        if slotmap.state is SlotmapState.NEW:
            self._drop(slotmap)
        else:
            self._replace(slotmap, slotmap.model_copy(update={"state": SlotmapState.DELETE_REQ}))
        return slotmap

    async def move_slotmap(
        self, serial: int, expected: Collection[SlotmapState], bank: BankSlot
    ) -> tuple[Slotmap, Slotmap] | None:
        old = self._slotmaps.get(serial)
        if old is None or not old.state.visible or old.state not in expected:
            return None
        if (at_bank := self._visible_at_bank.get(_key(bank))) is not None:
            raise SlotInUse(self._slotmaps[at_bank])
        # The old map holds its client slot; another visible map there is an inconsistency
        # the indexes rule out, checked all the same, as create_slotmap does.
        at_client = self._visible_at_client.get(_key(old.client))
        if at_client is not None and at_client != serial:
            raise SlotInUse(self._slotmaps[at_client])
        if old.state is SlotmapState.NEW:
            self._drop(old)
        else:
            self._replace(old, old.model_copy(update={"state": SlotmapState.DELETE_REQ}))
        new = Slotmap(serial=next(self._serials), bank=bank, client=old.client, iccid=old.iccid)
        self._add(new)
        return old, new

    async def update_slotmap(
        self,
        serial: int,
        expected: Collection[SlotmapState],
        state: SlotmapState,
        *,
        result: str | None = None,
    ) -> Slotmap | None:
        slotmap = self._slotmaps.get(serial)
        if slotmap is None or slotmap.state not in expected:
            return None
        if state.visible and not slotmap.state.visible:
            raise ValueError(f"{slotmap} is being deleted; it cannot become {state}")
        updated = slotmap.model_copy(update={"state": state, "result": result})
        self._replace(slotmap, updated)
        return updated

    async def remove_slotmap(
        self, serial: int, expected: Collection[SlotmapState]
    ) -> Slotmap | None:
        slotmap = self._slotmaps.get(serial)
        if slotmap is None or slotmap.state not in expected:
            return None
        self._drop(slotmap)
        return slotmap

    async def release_bank(self, record: BankRecord) -> list[Slotmap] | None:
        if self._banks.get(record.bank_id) != record:
            return None
        return self._release([record.bank_id])

    async def release_orphans(self) -> list[Slotmap]:
        return self._release([bank_id for bank_id in self._of_bank if bank_id not in self._banks])

    def _release(self, bank_ids: Iterable[int]) -> list[Slotmap]:
        serials = sorted(s for bank_id in bank_ids for s in self._of_bank.get(bank_id, ()))
        changed = []
        for slotmap in [self._slotmaps[serial] for serial in serials]:
            if slotmap.state is SlotmapState.NEW:
                continue
            if slotmap.state.visible:
                update = {"state": SlotmapState.NEW, "result": None}
                self._replace(slotmap, slotmap.model_copy(update=update))
            else:
                self._drop(slotmap)
            changed.append(slotmap)
        return changed

    def _add(self, slotmap: Slotmap) -> None:
        serial, bank, client = slotmap.serial, _key(slotmap.bank), _key(slotmap.client)
        self._slotmaps[serial] = slotmap
        self._of_bank.setdefault(slotmap.bank.bank_id, {})[serial] = None
        self._at_bank_slot.setdefault(bank, {})[serial] = None
        self._of_client.setdefault(client, {})[serial] = None
        if slotmap.state.visible:
            self._visible_at_bank[bank] = serial
            self._visible_at_client[client] = serial

    def _replace(self, slotmap: Slotmap, updated: Slotmap) -> None:
        """``updated`` (same serial and slots) instead of ``slotmap``; only a change from
        visible to hidden changes the indexes."""
        self._slotmaps[slotmap.serial] = updated
        if slotmap.state.visible and not updated.state.visible:
            self._unindex_visible(slotmap)

    def _drop(self, slotmap: Slotmap) -> None:
        serial, bank, client = slotmap.serial, _key(slotmap.bank), _key(slotmap.client)
        del self._slotmaps[serial]
        self._unindex_visible(slotmap)
        _discard(self._of_bank, slotmap.bank.bank_id, serial)
        _discard(self._at_bank_slot, bank, serial)
        _discard(self._of_client, client, serial)

    def _unindex_visible(self, slotmap: Slotmap) -> None:
        for index, slot in (
            (self._visible_at_bank, slotmap.bank),
            (self._visible_at_client, slotmap.client),
        ):
            if index.get(key := _key(slot)) == slotmap.serial:
                del index[key]

    # --- registry ---------------------------------------------------------------------

    async def register_bank(self, record: BankRecord) -> None:
        existing = self._banks.get(record.bank_id)
        if existing is not None:
            raise IdentityInUse(existing)
        self._banks[record.bank_id] = record

    async def unregister_bank(self, record: BankRecord) -> bool:
        if self._banks.get(record.bank_id) != record:
            return False
        del self._banks[record.bank_id]
        return True

    async def get_bank(self, bank_id: int) -> BankRecord | None:
        return self._banks.get(bank_id)

    async def list_banks(self) -> list[BankRecord]:
        return list(self._banks.values())

    async def register_client(self, record: ClientRecord) -> None:
        existing = self._clients.get(record.client)
        if existing is not None:
            raise IdentityInUse(existing)
        self._clients[record.client] = record

    async def unregister_client(self, record: ClientRecord) -> bool:
        if self._clients.get(record.client) != record:
            return False
        del self._clients[record.client]
        return True

    async def get_client(self, client: ClientSlot) -> ClientRecord | None:
        return self._clients.get(client)

    async def list_clients(self) -> list[ClientRecord]:
        return list(self._clients.values())

    # --- client configurations --------------------------------------------------------

    async def get_client_config(self, client: ClientSlot) -> ClientConfig | None:
        return self._client_configs.get(client)

    async def set_client_config(self, client: ClientSlot, config: ClientConfig | None) -> None:
        if config is None:
            self._client_configs.pop(client, None)
        else:
            self._client_configs[client] = config

    async def forget_client_config(self, record: ClientRecord) -> bool:
        if self._clients.get(record.client) != record:
            return False
        self._client_configs.pop(record.client, None)
        return True

    # --- the card inventory --------------------------------------------------------------

    async def put_cards(self, bank_id: int, cards: Collection[CardRecord]) -> None:
        check_bank_cards(bank_id, cards)
        moved = {card.iccid for card in cards if card.iccid is not None}
        self._cards = {
            slot: card
            for slot, card in self._cards.items()
            if slot.bank_id != bank_id and card.iccid not in moved
        }
        self._cards.update((card.bank_slot, card) for card in cards)

    async def cards(self) -> list[CardRecord]:
        return sorted(self._cards.values(), key=card_order)

    async def card(self, iccid: str) -> CardRecord | None:
        return next((card for card in self._cards.values() if card.iccid == iccid), None)

    # --- the audit log ------------------------------------------------------------------

    async def add_audit(self, entry: AuditEntry) -> AuditEntry:
        entry = entry.model_copy(update={"seq": next(self._audit_seqs)})
        self._audit.append(entry)
        return entry

    async def list_audit(self, query: AuditQuery) -> list[AuditEntry]:
        found = (entry for entry in self._audit if query.matches(entry))
        return list(itertools.islice(found, query.limit))

    async def prune_audit(self, before: float) -> int:
        kept = [entry for entry in self._audit if entry.time >= before]
        dropped = len(self._audit) - len(kept)
        self._audit = kept
        return dropped

    async def close(self) -> None:
        pass
