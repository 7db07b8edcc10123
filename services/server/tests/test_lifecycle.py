"""The slotmap life cycle's decisions (procedures.md §3.3), as pure functions."""

import pytest

from remsim_control import BankdAddress, BankSlot, ClientConfig, ClientSlot, Slotmap, SlotmapState
from remsim_server import lifecycle

NEW, UNACK, ACTIVE = SlotmapState.NEW, SlotmapState.UNACKNOWLEDGED, SlotmapState.ACTIVE
DELETE_REQ, DELETING = SlotmapState.DELETE_REQ, SlotmapState.DELETING
B1_0, B2_0 = BankSlot(bank_id=1, slot_nr=0), BankSlot(bank_id=2, slot_nr=0)
C23_0 = ClientSlot(client_id=23, slot_nr=0)
BANKD_1 = BankdAddress(host="127.0.0.1", port=9999)
BANKD_1_MOVED = BankdAddress(host="127.0.0.2", port=9999)


def slotmap(
    state: SlotmapState, bank: BankSlot = B1_0, result: str | None = None, serial: int = 1
) -> Slotmap:
    return Slotmap(serial=serial, bank=bank, client=C23_0, state=state, result=result)


def client_config(
    maps: list[Slotmap], bankd: BankdAddress | None, sent: ClientConfig | None
) -> ClientConfig | None:
    """As the core asks: with the ACTIVE map picked out of ``maps``."""
    return lifecycle.client_config(maps, lifecycle.active_map(maps), bankd, sent)


def test_new_maps_are_sent_to_the_bankd_unless_it_refused_them() -> None:
    assert lifecycle.needs_create(slotmap(NEW))
    assert not lifecycle.needs_create(slotmap(NEW, result="illegalSlotId"))
    assert not any(lifecycle.needs_create(slotmap(s)) for s in (UNACK, ACTIVE, DELETE_REQ))
    assert lifecycle.needs_remove(slotmap(DELETE_REQ))
    assert not lifecycle.needs_remove(slotmap(DELETING))


@pytest.mark.parametrize(
    ("state", "result", "after"),
    [
        (NEW, None, None),
        (NEW, "illegalSlotId", NEW),
        (UNACK, None, NEW),
        (ACTIVE, None, NEW),
        (DELETE_REQ, None, None),
        (DELETING, None, DELETE_REQ),
    ],
)
def test_a_connecting_bankd_gets_all_its_maps_again(
    state: SlotmapState, result: str | None, after: SlotmapState | None
) -> None:
    assert lifecycle.on_bank_connect(slotmap(state, result=result)) == after


@pytest.mark.parametrize(
    ("state", "after"),
    [(NEW, NEW), (UNACK, NEW), (ACTIVE, NEW), (DELETE_REQ, None), (DELETING, None)],
)
def test_when_a_bankd_goes_its_maps_wait_and_deletions_are_dropped(
    state: SlotmapState, after: SlotmapState | None
) -> None:
    assert lifecycle.on_bank_loss(slotmap(state)) == after


def test_the_active_map_is_the_one_the_client_is_sent() -> None:
    active = slotmap(ACTIVE, B2_0, serial=2)
    assert lifecycle.active_map([slotmap(DELETING), active]) == active
    assert lifecycle.active_map([slotmap(state) for state in (NEW, UNACK, DELETE_REQ)]) is None
    assert lifecycle.active_map([]) is None


def test_a_client_is_sent_its_bankd_once_the_map_is_active() -> None:
    for state in (NEW, UNACK):
        assert client_config([slotmap(state)], None, None) is None
    config = client_config([slotmap(ACTIVE)], BANKD_1, None)
    assert config == ClientConfig(bank=B1_0, bankd=BANKD_1)


def test_an_unchanged_configuration_is_not_sent_again() -> None:
    sent = ClientConfig(bank=B1_0, bankd=BANKD_1)
    assert client_config([slotmap(ACTIVE)], BANKD_1, sent) is None
    moved = client_config([slotmap(ACTIVE)], BANKD_1_MOVED, sent)
    assert moved == ClientConfig(bank=B1_0, bankd=BANKD_1_MOVED)


def test_a_client_keeps_its_bankd_while_its_map_exists() -> None:
    sent = ClientConfig(bank=B1_0, bankd=BANKD_1)
    for state in (NEW, UNACK, DELETE_REQ, DELETING):
        assert client_config([slotmap(state)], None, sent) is None


def test_a_client_is_told_to_disconnect_when_its_map_is_gone() -> None:
    sent = ClientConfig(bank=B1_0, bankd=BANKD_1)
    assert client_config([], None, sent) == ClientConfig.unmap(B1_0)
    assert client_config([], None, ClientConfig.unmap(B1_0)) is None
    assert client_config([], None, None) is None


def test_a_client_moved_to_another_bank_slot_follows_the_active_map() -> None:
    sent = ClientConfig(bank=B1_0, bankd=BANKD_1)
    moved = [slotmap(DELETING, B1_0), slotmap(ACTIVE, B2_0, serial=2)]
    assert client_config(moved, BANKD_1, sent) == ClientConfig(bank=B2_0, bankd=BANKD_1)
    # The old map's removal completing later does not disturb the new configuration.
    now = ClientConfig(bank=B2_0, bankd=BANKD_1)
    assert client_config([slotmap(ACTIVE, B2_0, serial=2)], BANKD_1, now) is None
    # With the old map gone and the new one not at its bankd yet, the client leaves bank 1.
    assert client_config([slotmap(UNACK, B2_0, serial=2)], None, sent) == (ClientConfig.unmap(B1_0))
