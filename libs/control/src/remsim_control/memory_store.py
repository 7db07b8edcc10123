"""In-memory ``Store`` for the single-host server.

Methods never await, so each one is atomic within the event loop; the models handed out are
frozen, so callers cannot reach into the store's state.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Collection

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
)


class MemoryStore:
    def __init__(self) -> None:
        self._serials = itertools.count(1)
        self._slotmaps: dict[int, Slotmap] = {}  # by serial, in creation order
        self._banks: dict[int, BankRecord] = {}
        self._clients: dict[ClientSlot, ClientRecord] = {}
        self._client_configs: dict[ClientSlot, ClientConfig] = {}
        self._cards: dict[BankSlot, CardRecord] = {}
        self._audit: list[AuditEntry] = []
        self._audit_seqs = itertools.count(1)

    # --- slotmaps ---------------------------------------------------------------------

    async def create_slotmap(self, bank: BankSlot, client: ClientSlot) -> Slotmap:
        for existing in self._slotmaps.values():
            if existing.state.visible and (existing.bank == bank or existing.client == client):
                raise SlotInUse(existing)
        slotmap = Slotmap(serial=next(self._serials), bank=bank, client=client)
        self._slotmaps[slotmap.serial] = slotmap
        return slotmap

    async def get_slotmap(self, slotmap_id: int) -> Slotmap | None:
        for slotmap in self._slotmaps.values():
            if slotmap.state.visible and slotmap.id == slotmap_id:
                return slotmap
        return None

    async def list_slotmaps(
        self,
        *,
        bank_id: int | None = None,
        client: ClientSlot | None = None,
        visible_only: bool = False,
    ) -> list[Slotmap]:
        return [
            slotmap
            for slotmap in self._slotmaps.values()
            if (bank_id is None or slotmap.bank.bank_id == bank_id)
            and (client is None or slotmap.client == client)
            and (not visible_only or slotmap.state.visible)
        ]

    async def request_removal(self, slotmap_id: int) -> Slotmap | None:
        slotmap = await self.get_slotmap(slotmap_id)
        if slotmap is None:
            return None
        if slotmap.state is SlotmapState.NEW:
            del self._slotmaps[slotmap.serial]
        else:
            self._slotmaps[slotmap.serial] = slotmap.model_copy(
                update={"state": SlotmapState.DELETE_REQ}
            )
        return slotmap

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
        self._slotmaps[serial] = updated
        return updated

    async def remove_slotmap(
        self, serial: int, expected: Collection[SlotmapState]
    ) -> Slotmap | None:
        slotmap = self._slotmaps.get(serial)
        if slotmap is None or slotmap.state not in expected:
            return None
        del self._slotmaps[serial]
        return slotmap

    async def release_bank(self, record: BankRecord) -> list[Slotmap] | None:
        if self._banks.get(record.bank_id) != record:
            return None
        return self._release(lambda bank_id: bank_id == record.bank_id)

    async def release_orphans(self) -> list[Slotmap]:
        return self._release(lambda bank_id: bank_id not in self._banks)

    def _release(self, released: Callable[[int], bool]) -> list[Slotmap]:
        changed = []
        for slotmap in list(self._slotmaps.values()):
            if not released(slotmap.bank.bank_id) or slotmap.state is SlotmapState.NEW:
                continue
            if slotmap.state.visible:
                self._slotmaps[slotmap.serial] = slotmap.model_copy(
                    update={"state": SlotmapState.NEW, "result": None}
                )
            else:
                del self._slotmaps[slotmap.serial]
            changed.append(slotmap)
        return changed

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
