"""The control plane's vocabulary."""

import pydantic
import pytest

from remsim_control import (
    BankdAddress,
    BankSlot,
    ClientConfig,
    ClientSlot,
    Slotmap,
    SlotmapState,
    slotmap_bank,
    slotmap_id,
    valid_id,
)


def test_slots_print_as_the_field_writes_them() -> None:
    assert str(BankSlot(bank_id=1, slot_nr=0)) == "B1:0"
    assert str(ClientSlot(client_id=23, slot_nr=0)) == "C23:0"


def test_ids_and_slots_are_0_to_1023() -> None:
    BankSlot(bank_id=1023, slot_nr=1023)
    with pytest.raises(pydantic.ValidationError):
        BankSlot(bank_id=1024, slot_nr=0)
    with pytest.raises(pydantic.ValidationError):
        ClientSlot(client_id=0, slot_nr=-1)
    assert (valid_id(0), valid_id(1023), valid_id(1024), valid_id(-1)) == (True, True, False, False)


def test_the_slotmap_id_is_bank_id_shifted_by_16_plus_slot() -> None:
    assert slotmap_id(BankSlot(bank_id=1, slot_nr=1)) == 65537
    assert slotmap_id(BankSlot(bank_id=0, slot_nr=5)) == 5
    slotmap = Slotmap(
        serial=1, bank=BankSlot(bank_id=7, slot_nr=3), client=ClientSlot(client_id=1, slot_nr=0)
    )
    assert slotmap.id == 458755
    assert str(slotmap) == "Slot Map B7:3 <-> C1:0"


def test_a_slotmap_id_names_its_bank_slot() -> None:
    assert slotmap_bank(65537) == BankSlot(bank_id=1, slot_nr=1)
    assert slotmap_bank(slotmap_id(BankSlot(bank_id=1023, slot_nr=1023))) == BankSlot(
        bank_id=1023, slot_nr=1023
    )
    for no_slot in (12345, 1024 << 16, -1):
        assert slotmap_bank(no_slot) is None


def test_only_maps_not_being_deleted_are_visible() -> None:
    assert [s for s in SlotmapState if s.visible] == ["NEW", "UNACKNOWLEDGED", "ACTIVE"]


def test_unmap_is_0000_port_0_with_the_old_bank_slot() -> None:
    unmap = ClientConfig.unmap(BankSlot(bank_id=1, slot_nr=1))
    assert unmap.unmapped
    assert str(unmap.bankd) == "0.0.0.0:0"
    assert unmap.bank == BankSlot(bank_id=1, slot_nr=1)
    assert str(BankdAddress(host="2001:db8::1", port=9999)) == "[2001:db8::1]:9999"
