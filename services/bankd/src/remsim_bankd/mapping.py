"""The bankd's slotmap table: which client slot may use which bank slot (sans-IO).

The server pushes maps with ``createMappingReq`` / ``removeMappingReq`` / ``resetStateReq``;
the checks and result codes are the original's (bankd.md §4). Both a bank slot and a
client slot appear at most once in the table.

The decoder takes any INTEGER, but ids are 0..1023 (rspro-wire.md): a negative bank slot
number (upstream's uint16 makes it 65535) is refused with ``illegalSlotId`` like any other
slot number beyond the bank, a client slot id outside 0..1023 with ``illegalClientId``.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from rspro import BankSlot, ClientSlot, ResultCode

__all__ = ["ID_MAX", "MappingChange", "MappingTable", "valid_client_slot"]

ID_MAX = 1023  # BankId, ClientId, SlotNumber: INTEGER (0..1023)


def valid_client_slot(client: ClientSlot) -> bool:
    return 0 <= client.client_id <= ID_MAX and 0 <= client.slot_nr <= ID_MAX


@dataclass(slots=True)
class MappingChange:
    """Outcome of a table operation: the result code and what changed."""

    result: ResultCode
    removed: list[tuple[BankSlot, ClientSlot]] = field(default_factory=list)
    added: tuple[BankSlot, ClientSlot] | None = None


class MappingTable:
    def __init__(self, bank_id: int, num_slots: int) -> None:
        self.bank_id = bank_id
        self.num_slots = num_slots
        self._by_bank: dict[BankSlot, ClientSlot] = {}
        self._by_client: dict[ClientSlot, BankSlot] = {}

    def __len__(self) -> int:
        return len(self._by_bank)

    def items(self) -> list[tuple[BankSlot, ClientSlot]]:
        return list(self._by_bank.items())

    def client_of(self, bank: BankSlot) -> ClientSlot | None:
        return self._by_bank.get(bank)

    def bank_of(self, client: ClientSlot) -> BankSlot | None:
        return self._by_client.get(client)

    def _check(self, client: ClientSlot, bank: BankSlot) -> ResultCode | None:
        if bank.bank_id != self.bank_id:
            return ResultCode.ILLEGAL_BANK_ID
        if not 0 <= bank.slot_nr < self.num_slots:
            return ResultCode.ILLEGAL_SLOT_ID
        if not valid_client_slot(client):
            return ResultCode.ILLEGAL_CLIENT_ID
        return None

    def _drop(self, bank: BankSlot, change: MappingChange) -> None:
        client = self._by_bank.pop(bank)
        del self._by_client[client]
        change.removed.append((bank, client))

    def create(self, client: ClientSlot, bank: BankSlot) -> MappingChange:
        """Map client ↔ bank; a conflicting map of either slot is replaced."""
        error = self._check(client, bank)
        if error is not None:
            return MappingChange(error)
        if self._by_bank.get(bank) == client:
            return MappingChange(ResultCode.OK)  # identical: a server re-push after reconnect
        change = MappingChange(ResultCode.OK, added=(bank, client))
        if bank in self._by_bank:
            self._drop(bank, change)
        if client in self._by_client:
            self._drop(self._by_client[client], change)
        self._by_bank[bank] = client
        self._by_client[client] = bank
        return change

    def remove(self, client: ClientSlot, bank: BankSlot) -> MappingChange:
        error = self._check(client, bank)
        if error is not None:
            return MappingChange(error)
        if self._by_bank.get(bank) != client:
            return MappingChange(ResultCode.UNKNOWN_SLOTMAP)
        change = MappingChange(ResultCode.OK)
        self._drop(bank, change)
        return change

    def reset(self) -> MappingChange:
        change = MappingChange(ResultCode.OK)
        for bank in list(self._by_bank):
            self._drop(bank, change)
        return change
