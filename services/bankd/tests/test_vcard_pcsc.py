"""The software SIM through the real stack: pyscard → pcscd → vpcd → remsim-vcard."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import pytest

from remsim_bankd.sim import CardProfile, Milenage
from remsim_bankd.sim.fs import USIM_AID
from remsim_testing.simbank import ReaderConnection, VirtualSimBank

pytestmark = pytest.mark.pcsc

RAND = bytes.fromhex("23553cbe9637a89d218ae64dae47bf35")


@pytest.fixture
def card0(virtual_sim_bank: VirtualSimBank) -> Iterator[ReaderConnection]:
    conn = ReaderConnection(virtual_sim_bank.readers[0])
    yield conn
    conn.close()


def authenticate(conn: ReaderConnection, autn: bytes) -> bytes:
    sw = conn.tx(b"\x00\x88\x00\x81\x22\x10" + RAND + b"\x10" + autn)
    assert sw[0] == 0x61
    rsp = conn.tx(bytes([0x00, 0xC0, 0x00, 0x00, sw[1]]))
    assert rsp[-2:] == b"\x90\x00"
    return rsp[:-2]


def test_bank_has_two_readers_with_cards(virtual_sim_bank: VirtualSimBank) -> None:
    from smartcard.System import readers

    assert virtual_sim_bank.readers == ["Virtual PCD 00 00", "Virtual PCD 00 01"]
    assert {str(r) for r in readers()} >= set(virtual_sim_bank.readers)
    assert virtual_sim_bank.card_present(0) and virtual_sim_bank.card_present(1)
    assert all(p is not None and p.poll() is None for p in virtual_sim_bank.vcards)


def test_t0_atr_select_read_imsi_and_authenticate(
    card0: ReaderConnection, card_profiles: list[CardProfile]
) -> None:
    from smartcard.CardConnection import CardConnection

    profile = card_profiles[0]
    assert card0.protocol == CardConnection.T0_protocol
    assert card0.atr == profile.atr
    assert card0.tx("a0a40000023f00") == b"\x9f\x16"  # T=0: no automatic GET RESPONSE
    sw = card0.tx(bytes([0x00, 0xA4, 0x04, 0x04, len(USIM_AID)]) + USIM_AID)
    assert sw[0] == 0x61
    fcp = card0.tx(bytes([0x00, 0xC0, 0x00, 0x00, sw[1]]))
    assert fcp[0] == 0x62 and USIM_AID in fcp
    assert card0.tx("00a4000c026f07") == b"\x90\x00"
    assert card0.tx("00b0000009") == profile.ef_imsi + b"\x90\x00"

    m = Milenage(profile.ki, profile.opc_value)
    res, ck, ik, _ = m.f2345(RAND)
    data = authenticate(card0, m.autn(RAND, 1 << 20))
    if data[0] == 0xDC:
        # An earlier test in this session moved the card's SQN on: resynchronise from AUTS.
        data = authenticate(card0, m.autn(RAND, m.sqn_ms(RAND, data[2:16]) + 32))
    assert data[:2] == b"\xdb\x08"
    assert data[2:10] == res
    assert data[10:27] == b"\x10" + ck
    assert data[27:44] == b"\x10" + ik


def test_card1_iccid_as_recorded(virtual_sim_bank: VirtualSimBank) -> None:
    conn = ReaderConnection(virtual_sim_bank.readers[1])
    try:
        assert conn.tx("a0a40000022fe2") == b"\x9f\x0f"
        assert conn.tx("a0b000000a").hex() == "989420000000000000019000"
    finally:
        conn.close()


def test_card_removal_and_return(virtual_sim_bank: VirtualSimBank) -> None:
    from smartcard.Exceptions import CardConnectionException

    conn = ReaderConnection(virtual_sim_bank.readers[0])
    try:
        assert conn.tx("a0a40000023f00") == b"\x9f\x16"
        virtual_sim_bank.stop_card(0)  # waits until pcscd reports the reader empty
        assert not virtual_sim_bank.card_present(0)
        assert virtual_sim_bank.card_present(1)  # the other slot is not affected
        with pytest.raises(CardConnectionException):
            conn.tx("a0a40000023f00")
    finally:
        with contextlib.suppress(CardConnectionException):
            conn.close()  # fails: the card it was connected to is gone
        virtual_sim_bank.start_card(0)
    assert virtual_sim_bank.card_present(0)
    again = ReaderConnection(virtual_sim_bank.readers[0])
    try:
        assert again.atr == bytes.fromhex("3b9f96801fc78031a073be21136743200718000001a5")
        assert again.tx("a0a40000023f00") == b"\x9f\x16"
    finally:
        again.close()


def test_pcscd_restart(virtual_sim_bank: VirtualSimBank) -> None:
    old = virtual_sim_bank.pcscd
    virtual_sim_bank.restart_pcscd()  # the cards reconnect by themselves
    assert virtual_sim_bank.pcscd is not old
    conn = ReaderConnection(virtual_sim_bank.readers[1])
    try:
        assert conn.tx("a0a40000022fe2") == b"\x9f\x0f"
    finally:
        conn.close()
