"""A T=1 software SIM through the real stack: pyscard's raw `smartcard.scard` API → pcscd
(pcsc-lite 1.9.9) → vpcd → remsim-vcard. Also pins what pcsc-lite and vpcd carry
(docs/software-sim.md, "T=1 and extended lengths through pcscd and vpcd")."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import pytest

from remsim_bankd.sim import LARGE_EF_FID, T0T1_ATR, T1_ATR, CardProfile, Milenage, load_profile
from remsim_bankd.sim.fs import USIM_AID, large_ef_content
from remsim_testing.simbank import PROFILES_DIR, VirtualSimBank

pytestmark = pytest.mark.pcsc

OK = b"\x90\x00"
RAND = bytes.fromhex("23553cbe9637a89d218ae64dae47bf35")
SELECT_LARGE = bytes.fromhex("00a4000c02") + LARGE_EF_FID.to_bytes(2, "big")


@pytest.fixture(scope="module")
def t1_profile() -> CardProfile:
    return load_profile(PROFILES_DIR / "card-t1.json")


@contextmanager
def card_in_reader_0(bank: VirtualSimBank, profile: CardProfile) -> Iterator[str]:
    """Another card in "Virtual PCD 00 00" for a while; card0 goes back in afterwards."""
    bank.stop_card(0)
    try:
        bank.start_card(0, profile=profile)
        yield bank.readers[0]
    finally:
        bank.stop_card(0)
        bank.start_card(0)


class Scard:
    """One PC/SC context; `connect` gives (hcard, active protocol) or the error code."""

    def __init__(self) -> None:
        from smartcard import scard

        self.scard = scard
        hr, self.ctx = scard.SCardEstablishContext(scard.SCARD_SCOPE_USER)
        assert hr == scard.SCARD_S_SUCCESS

    def connect(self, reader: str, protocols: int) -> tuple[int, Any, int]:
        s = self.scard
        return s.SCardConnect(self.ctx, reader, s.SCARD_SHARE_SHARED, protocols)  # type: ignore[no-any-return]

    def disconnect(self, hcard: Any) -> None:
        # Unpower: the next connect negotiates the protocol afresh.
        assert self.scard.SCardDisconnect(hcard, self.scard.SCARD_UNPOWER_CARD) == 0

    def transmit(self, hcard: Any, apdu: bytes) -> tuple[int, bytes]:
        hr, rsp = self.scard.SCardTransmit(hcard, self.scard.SCARD_PCI_T1, list(apdu))
        return hr & 0xFFFFFFFF, bytes(rsp)

    def tx(self, hcard: Any, apdu: bytes | str) -> bytes:
        hr, rsp = self.transmit(hcard, bytes.fromhex(apdu) if isinstance(apdu, str) else apdu)
        assert hr == 0, self.scard.SCardGetErrorMessage(hr)
        return rsp

    def close(self) -> None:
        self.scard.SCardReleaseContext(self.ctx)


@pytest.fixture
def pcsc() -> Iterator[Scard]:
    s = Scard()
    yield s
    s.close()


def test_t1_card_negotiation_and_commands(
    virtual_sim_bank: VirtualSimBank, t1_profile: CardProfile, pcsc: Scard
) -> None:
    s = pcsc.scard
    with card_in_reader_0(virtual_sim_bank, t1_profile) as reader:
        hr, _, _ = pcsc.connect(reader, s.SCARD_PROTOCOL_T0)
        assert hr & 0xFFFFFFFF == s.SCARD_E_PROTO_MISMATCH & 0xFFFFFFFF  # a T=1-only ATR
        for protocols in (s.SCARD_PROTOCOL_T1, s.SCARD_PROTOCOL_T0 | s.SCARD_PROTOCOL_T1):
            hr, hcard, active = pcsc.connect(reader, protocols)
            assert hr == 0 and active == s.SCARD_PROTOCOL_T1
            hr, _, _, _, atr = s.SCardStatus(hcard)
            assert hr == 0 and bytes(atr) == T1_ATR
            pcsc.disconnect(hcard)

        hr, hcard, _ = pcsc.connect(reader, s.SCARD_PROTOCOL_T1)
        assert hr == 0
        try:
            # SELECT with Le: the FCP and 9000 at once; without Le: 61xx + GET RESPONSE
            fcp = pcsc.tx(hcard, bytes([0x00, 0xA4, 0x04, 0x04, len(USIM_AID)]) + USIM_AID + b"\0")
            assert fcp[0] == 0x62 and USIM_AID in fcp and fcp[-2:] == OK
            sw = pcsc.tx(hcard, "00a40004026f07")
            assert sw[0] == 0x61
            assert pcsc.tx(hcard, bytes([0x00, 0xC0, 0x00, 0x00, sw[1]]))[0] == 0x62
            assert pcsc.tx(hcard, "00b0000009") == t1_profile.ef_imsi + OK
            # AUTHENTICATE with Le: RES, CK, IK, Kc directly
            m = Milenage(t1_profile.ki, t1_profile.opc_value)
            res, ck, _, _ = m.f2345(RAND)
            auth = b"\x00\x88\x00\x81\x22\x10" + RAND + b"\x10" + m.autn(RAND, 1 << 20) + b"\0"
            rsp = pcsc.tx(hcard, auth)
            assert rsp[:10] == b"\xdb\x08" + res and ck in rsp and rsp[-2:] == OK
        finally:
            pcsc.disconnect(hcard)


def test_t0t1_card_negotiation(
    virtual_sim_bank: VirtualSimBank, t1_profile: CardProfile, pcsc: Scard
) -> None:
    """T=0 first in the ATR, yet pcsc-lite picks T=1 when the application allows both."""
    s = pcsc.scard
    data = {**t1_profile.model_dump(exclude={"atr"}), "protocol": "t0t1"}
    profile = CardProfile.model_validate(data)
    assert profile.atr == T0T1_ATR
    with card_in_reader_0(virtual_sim_bank, profile) as reader:
        for protocols, expected in [
            (s.SCARD_PROTOCOL_T0 | s.SCARD_PROTOCOL_T1, s.SCARD_PROTOCOL_T1),
            (s.SCARD_PROTOCOL_T0, s.SCARD_PROTOCOL_T0),
            (s.SCARD_PROTOCOL_T1, s.SCARD_PROTOCOL_T1),
        ]:
            hr, hcard, active = pcsc.connect(reader, protocols)
            assert hr == 0 and active == expected
            try:
                pci = s.SCARD_PCI_T1 if active == s.SCARD_PROTOCOL_T1 else s.SCARD_PCI_T0
                hr, rsp = s.SCardTransmit(hcard, pci, list(bytes.fromhex("00a40004023f0000")))
                assert hr == 0 and bytes(rsp[:1]) == b"\x62" and bytes(rsp[-2:]) == OK
            finally:
                pcsc.disconnect(hcard)


def test_t1_card_32k_extended_read_and_write_in_one_apdu(
    virtual_sim_bank: VirtualSimBank, t1_profile: CardProfile, pcsc: Scard
) -> None:
    size = t1_profile.large_ef
    assert size == 32768
    with card_in_reader_0(virtual_sim_bank, t1_profile) as reader:
        hr, hcard, _ = pcsc.connect(reader, pcsc.scard.SCARD_PROTOCOL_T1)
        assert hr == 0
        try:
            assert pcsc.tx(hcard, SELECT_LARGE) == OK
            rsp = pcsc.tx(hcard, "00b00000000000")  # extended Le 0000: up to 65,536 bytes
            assert rsp == large_ef_content(size) + OK
            data = bytes(reversed(large_ef_content(size)))
            update = b"\x00\xd6\x00\x00\x00" + size.to_bytes(2, "big") + data  # 32,775 bytes
            assert pcsc.tx(hcard, update) == OK
            assert pcsc.tx(hcard, "00b00000008000") == data + OK
            # 65,535 bytes, the largest C-APDU vpcd carries, reach the card (too much for the EF)
            lc = 0xFFFF - 7
            big = b"\x00\xd6\x00\x00\x00" + lc.to_bytes(2, "big") + bytes(lc)
            assert pcsc.tx(hcard, big) == b"\x67\x00"
            assert pcsc.tx(hcard, "00b0000010") == data[:16] + OK  # unchanged
        finally:
            pcsc.disconnect(hcard)


def test_largest_rapdu_through_vpcd(
    virtual_sim_bank: VirtualSimBank, t1_profile: CardProfile, pcsc: Scard
) -> None:
    """A 64 KiB EF: 65,533 data bytes + SW pass; the whole file (65,537 bytes) is refused."""
    profile = CardProfile.model_validate({**t1_profile.model_dump(), "large_ef": 0xFFFF})
    with card_in_reader_0(virtual_sim_bank, profile) as reader:
        hr, hcard, _ = pcsc.connect(reader, pcsc.scard.SCARD_PROTOCOL_T1)
        assert hr == 0
        try:
            assert pcsc.tx(hcard, SELECT_LARGE) == OK
            rsp = pcsc.tx(hcard, "00b0000000fffd")
            assert len(rsp) == 0xFFFF and rsp == large_ef_content(0xFFFD) + OK
            assert pcsc.tx(hcard, "00b00000000000") == b"\x67\x00"  # vcard: too long for vpcd
            assert pcsc.tx(hcard, "00b0000000") == large_ef_content(256) + OK  # still there
        finally:
            pcsc.disconnect(hcard)
