"""The card inventory with every part a real process (issue 13): remsim-bankd identifies the
software SIMs of the virtual SIM bank (pcscd + vpcd) and remsim-server shows them at
``GET /api/v1/cards``: their ICCIDs are the profiles'. Over plaintext only when told to
(``--inventory on``: the original server knows no such report); over TLS by default."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from remsim_bankd.sim import CardProfile
from remsim_testing.pki import TestCA
from remsim_testing.simbank import VirtualSimBank
from tests.system import RemsimSystem

pytestmark = [pytest.mark.integration, pytest.mark.pcsc]

CARDS = "/api/v1/cards"


def cards(system: RemsimSystem) -> list[dict[str, Any]]:
    status, body = system.rest("GET", CARDS)
    assert status == 200, body
    return list(body["cards"])


def wait_for_inventory(system: RemsimSystem, slots: int) -> list[dict[str, Any]]:
    system.wait(lambda: len(cards(system)) == slots, f"{slots} cards in the inventory")
    return cards(system)


@pytest.fixture
def plaintext(virtual_sim_bank: VirtualSimBank, tmp_path: Path) -> Iterator[RemsimSystem]:
    system = RemsimSystem(virtual_sim_bank, tmp_path)
    try:
        system.start_server()
        system.start_bankd(["--inventory", "on"])
        yield system
    finally:
        system.stop()


def test_the_cards_shown_are_the_software_sims(
    plaintext: RemsimSystem, card_profiles: list[CardProfile]
) -> None:
    shown = wait_for_inventory(plaintext, len(plaintext.readers))
    assert [(c["bank_id"], c["slot_nr"], c["state"]) for c in shown] == [
        (1, nr, "present") for nr in range(len(shown))
    ]
    assert [c["iccid"] for c in shown] == [p.iccid for p in card_profiles[: len(shown)]]
    assert [c["atr"] for c in shown] == [p.atr.hex().upper() for p in card_profiles[: len(shown)]]
    iccid = card_profiles[0].iccid
    status, card = plaintext.rest("GET", f"{CARDS}/{iccid}")
    assert (status, card["slot_nr"], card["mapped_to"]) == (200, 0, None)

    client = plaintext.start_shell_client(23)
    plaintext.map(bank_slot=0, client_id=23)
    client.expect_atr(card_profiles[0].atr)  # the inventory's read did not get in the way
    plaintext.wait(lambda: plaintext.slotmap_state(0) == "ACTIVE", "B1:0 ACTIVE")
    _, card = plaintext.rest("GET", f"{CARDS}/{iccid}")
    assert card["mapped_to"] == {"client_id": 23, "slot_nr": 0, "slotmap_state": "ACTIVE"}
    assert card["iccid"] == iccid  # the identity found before the map is kept


def test_over_tls_the_inventory_is_on_by_default(
    virtual_sim_bank: VirtualSimBank,
    tmp_path: Path,
    card_profiles: list[CardProfile],
) -> None:
    with RemsimSystem(virtual_sim_bank, tmp_path, tls=TestCA(tmp_path / "pki")) as system:
        shown = wait_for_inventory(system, len(system.readers))
        assert [c["iccid"] for c in shown] == [p.iccid for p in card_profiles[: len(shown)]]


def test_a_card_moved_to_the_other_reader_moves_its_row(
    plaintext: RemsimSystem, virtual_sim_bank: VirtualSimBank, card_profiles: list[CardProfile]
) -> None:
    wait_for_inventory(plaintext, 2)
    first, second = card_profiles[:2]
    try:
        virtual_sim_bank.stop_card(0)
        virtual_sim_bank.stop_card(1)
        virtual_sim_bank.start_card(1, profile=first)  # the first card, now in reader 1

        def moved() -> bool:
            by_slot = {c["slot_nr"]: (c["state"], c["iccid"]) for c in cards(plaintext)}
            return by_slot == {0: ("empty", None), 1: ("present", first.iccid)}

        plaintext.wait(moved, "the first card's row in slot 1, slot 0 empty", timeout=60)
        status, card = plaintext.rest("GET", f"{CARDS}/{first.iccid}")
        assert (status, card["slot_nr"]) == (200, 1)
        assert plaintext.rest("GET", f"{CARDS}/{second.iccid}")[0] == 404
    finally:  # the bank is shared by the session's tests: its cards go back
        virtual_sim_bank.stop_card(1)
        virtual_sim_bank.start_card(0)
        virtual_sim_bank.start_card(1)


def test_a_map_made_by_card_follows_the_card_to_the_other_reader(
    plaintext: RemsimSystem, virtual_sim_bank: VirtualSimBank, card_profiles: list[CardProfile]
) -> None:
    """The documented rule: a map made by ICCID moves with its card. The first card, mapped
    by its ICCID to C23, is put into reader 1: the map becomes B1:1 <-> C23, and the client
    gets that card again (its ATR, and its ICCID read through the new slot)."""
    wait_for_inventory(plaintext, 2)
    first = card_profiles[0]
    client = plaintext.start_shell_client(23)
    status, made = plaintext.rest(
        "POST",
        "/api/v1/slotmaps",
        {"card": {"iccid": first.iccid}, "client": {"clientId": 23, "slotNr": 0}},
    )
    assert (status, made["bank"], made["card"]) == (
        201,
        {"bankId": 1, "slotNr": 0},
        {"iccid": first.iccid},
    )
    client.expect_atr(first.atr)
    plaintext.wait(lambda: plaintext.slotmap_state(0) == "ACTIVE", "B1:0 ACTIVE")
    try:
        virtual_sim_bank.stop_card(0)
        virtual_sim_bank.stop_card(1)
        virtual_sim_bank.start_card(1, profile=first)  # the mapped card, now in reader 1

        plaintext.wait(
            lambda: plaintext.slotmap_state(1) == "ACTIVE" and plaintext.slotmap_state(0) is None,
            "the map at B1:1, none at B1:0",
            timeout=60,
        )
        status, body = plaintext.rest("GET", "/slotmaps")
        assert [(m["bank"], m["client"]) for m in body["slotmaps"]] == [
            ({"bankId": 1, "slotNr": 1}, {"clientId": 23, "slotNr": 0})
        ]
        client.expect_atr(first.atr)
        assert client.read_iccid() == first.ef_iccid
        _, card = plaintext.rest("GET", f"{CARDS}/{first.iccid}")
        assert (card["slot_nr"], card["mapped_to"]["client_id"]) == (1, 23)
        assert "slotmap follows its card to B1:1" in plaintext.logs()
    finally:  # the bank is shared by the session's tests: its cards go back
        plaintext.rest("POST", "/global-reset")
        virtual_sim_bank.stop_card(1)
        virtual_sim_bank.start_card(0)
        virtual_sim_bank.start_card(1)
