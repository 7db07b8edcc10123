"""The software SIM as a T=1 card: its ATR, Le on case-4 commands, extended lengths
(ISO/IEC 7816-4 §5.1), the large test EF; and that a T=0 card is unchanged."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import pytest
from pydantic import ValidationError

from remsim_bankd.sim import (
    LARGE_EF_FID,
    RECORDED_ATR,
    T0T1_ATR,
    T1_ATR,
    CardProfile,
    Milenage,
    SimCard,
    SimCardDriver,
    load_profile,
)
from remsim_bankd.sim.atr import parse_atr, with_tck
from remsim_bankd.sim.fs import USIM_AID, large_ef_content
from remsim_bankd.sim.simcard import Command, parse_apdu
from remsim_bankd.vpcd import SW_TOO_LONG, CardAsVirtualCard

PROFILES = Path(__file__).resolve().parents[1] / "profiles"
KI = bytes.fromhex("465b5ce8b199b49faa5f0a2ee238a6bc")
OPC = bytes.fromhex("cd63cb71954a9f4e48a5994e37a02baf")
RAND = bytes.fromhex("23553cbe9637a89d218ae64dae47bf35")
OK = b"\x90\x00"
SIZE = 32768  # the test EF of card-t1.json
SELECT_LARGE = bytes.fromhex("00a4000c02") + LARGE_EF_FID.to_bytes(2, "big")


def make(**overrides: Any) -> SimCard:
    fields: dict[str, Any] = {
        "iccid": "89490200000000000020",
        "imsi": "262000000010020",
        "ki": KI.hex(),
        "opc": OPC.hex(),
        "pin1_enabled": False,
        "challenge": "counting",
    }
    return SimCard(CardProfile(**{**fields, **overrides}))


@pytest.fixture
def t1() -> SimCard:
    return make(protocol="t1", large_ef=SIZE)


@pytest.fixture
def t0() -> SimCard:
    return make(large_ef=SIZE)


def h(text: str) -> bytes:
    return bytes.fromhex(text)


def ext_le(ne: int) -> bytes:
    """An extended Le field without Lc: 00 and two bytes (0000 = 65,536)."""
    return b"\x00" + (ne % 65536).to_bytes(2, "big")


def ext_lc(data: bytes) -> bytes:
    return b"\x00" + len(data).to_bytes(2, "big") + data


# --- ATRs and profiles -------------------------------------------------------------------------


def test_t1_atr_offers_t1_only_with_a_correct_tck() -> None:
    info = parse_atr(T1_ATR)
    assert info.protocols == (1,) and info.default_protocol == 1
    assert info.tck and info.tck_ok
    assert info.historical == b"remsimT1"
    assert parse_atr(h("3b800181")).protocols == (1,)  # the minimal T=1 ATR
    assert with_tck(h("3b8001")) == h("3b800181")


def test_t0t1_atr_offers_t0_first_then_t1() -> None:
    info = parse_atr(T0T1_ATR)
    assert info.protocols == (0, 1) and info.default_protocol == 0 and info.tck_ok


def test_recorded_atr_offers_t0_only() -> None:
    info = parse_atr(RECORDED_ATR)  # TD1 T=0, TD2 T=15 (global bytes only)
    assert info.protocols == (0,) and info.tck_ok


def test_atr_parser_rejects_cut_atrs() -> None:
    with pytest.raises(ValueError, match="cut short"):
        parse_atr(T1_ATR[:5])
    with pytest.raises(ValueError, match="structure says"):
        parse_atr(T1_ATR + b"\x00")
    assert not parse_atr(T1_ATR[:-1] + b"\x00").tck_ok


def test_profile_protocol_picks_the_atr() -> None:
    assert make().atr == RECORDED_ATR and make().protocol == 0 and make().protocols == (0,)
    t1 = make(protocol="t1")
    assert t1.atr == T1_ATR and t1.protocol == 1 and t1.protocols == (1,)
    both = make(protocol="t0t1")
    assert both.atr == T0T1_ATR and both.protocol == 0 and both.protocols == (0, 1)
    assert make(protocol="t1", atr="3b800181").atr == h("3b800181")
    assert SimCardDriver(t1).connect() == T1_ATR


def test_profile_rejects_an_atr_that_contradicts_the_protocol() -> None:
    with pytest.raises(ValidationError, match="must offer T=1"):
        make(protocol="t1", atr=RECORDED_ATR.hex())
    with pytest.raises(ValidationError, match="must offer T=0 and T=1"):
        make(protocol="t0t1", atr=T1_ATR.hex())
    with pytest.raises(ValidationError, match="wrong TCK"):
        make(protocol="t1", atr="3b800180")
    with pytest.raises(ValidationError, match="large_ef"):
        make(large_ef=65536)


def test_t1_profile_round_trips_and_the_shipped_one_loads(tmp_path: Path) -> None:
    profile = make(protocol="t1", large_ef=SIZE).profile
    path = tmp_path / "t1.json"
    path.write_text(profile.model_dump_json())
    assert load_profile(path) == profile
    shipped = load_profile(PROFILES / "card-t1.json")
    assert shipped.protocol == "t1" and shipped.atr == T1_ATR and shipped.large_ef == SIZE


def test_t0_profiles_are_unchanged() -> None:
    card0 = load_profile(PROFILES / "card0.json")
    assert card0.protocol == "t0" and card0.atr == RECORDED_ATR and card0.large_ef == 0
    sim = SimCard(card0)
    assert sim.reset() == RECORDED_ATR and sim.protocol == 0
    assert sim.process(h("a0a40000022f50")) == b"\x94\x04"  # no test EF
    assert sim.process(h("a0a40000023f00")) == b"\x9f\x16"  # GSM DF data: as before
    assert sim.process(h("a0c0000016"))[14:16] == b"\x02\x02"  # 2 DFs, 2 EFs in the MF


# --- APDU parsing --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("apdu", "command"),
    [
        ("00b00000", Command(b"", None, False)),  # case 1
        ("00b0000000", Command(b"", 256, False)),  # case 2S
        ("00b0000010", Command(b"", 16, False)),
        ("00b00000000000", Command(b"", 65536, True)),  # case 2E
        ("00b00000000100", Command(b"", 256, True)),
        ("00d6000002abcd", Command(h("abcd"), None, False)),  # case 3S
        ("00a4000402abcd00", Command(h("abcd"), 256, False)),  # case 4S
        ("00d600000000020102", Command(h("0102"), None, True)),  # case 3E
        ("00a40004000002abcd0000", Command(h("abcd"), 65536, True)),  # case 4E
        ("00a40004000002abcd0010", Command(h("abcd"), 16, True)),
    ],
)
def test_parse_apdu_cases(apdu: str, command: Command) -> None:
    assert parse_apdu(h(apdu)) == command


@pytest.mark.parametrize("apdu", ["00b000", "00b0000000ff", "00d6000003abcd", "00d60000000003ab"])
def test_parse_apdu_rejects_malformed(apdu: str) -> None:
    with pytest.raises(ValueError):
        parse_apdu(h(apdu))


# --- T=1: Le on case-4 commands ----------------------------------------------------------------


def test_t1_case4_with_le_answers_data_and_9000(t1: SimCard) -> None:
    rsp = t1.process(bytes([0x00, 0xA4, 0x04, 0x04, len(USIM_AID)]) + USIM_AID + b"\x00")
    assert rsp[0] == 0x62 and USIM_AID in rsp and rsp[-2:] == OK
    assert len(rsp) == rsp[1] + 4  # the whole FCP, no GET RESPONSE needed
    assert t1.process(h("00c0000000")) == h("6985")  # nothing pending


def test_t1_case4_with_a_short_le_answers_61xx_for_the_rest(t1: SimCard) -> None:
    fcp = t1.process(h("00a40004023f00"))
    assert fcp[0] == 0x61
    full = t1.process(bytes([0x00, 0xC0, 0x00, 0x00, fcp[1]]))[:-2]
    first = t1.process(h("00a40004023f0010"))
    assert first == full[:16] + bytes([0x61, len(full) - 16])
    assert t1.process(bytes([0x00, 0xC0, 0x00, 0x00, len(full) - 16])) == full[16:] + OK


def test_t1_case3_form_without_le_answers_61xx_as_on_t0(t1: SimCard, t0: SimCard) -> None:
    """A T=0 TPDU sent as is to a T=1 card still works with GET RESPONSE."""
    for sim in (t1, t0):
        sw = sim.process(bytes([0x00, 0xA4, 0x04, 0x04, len(USIM_AID)]) + USIM_AID)
        assert sw[0] == 0x61
        fcp = sim.process(bytes([0x00, 0xC0, 0x00, 0x00, sw[1]]))
        assert fcp[0] == 0x62 and fcp[-2:] == OK


def test_t0_case4_with_le_still_answers_61xx(t0: SimCard) -> None:
    assert t0.process(h("00a40004023f0000"))[0] == 0x61


def test_t1_authenticate_with_le_answers_directly(t1: SimCard) -> None:
    m = Milenage(KI, OPC)
    res, ck, ik, _ = m.f2345(RAND)
    autn = m.autn(RAND, 1 << 20)
    assert t1.process(h("00a4040c07") + USIM_AID[:7]) == OK
    rsp = t1.process(h("0088008122") + b"\x10" + RAND + b"\x10" + autn + b"\x00")
    assert rsp[:2] == b"\xdb\x08" and rsp[2:10] == res and rsp[-2:] == OK
    assert rsp[10:27] == b"\x10" + ck and rsp[27:44] == b"\x10" + ik
    # without Le: 61xx, as on T=0 (a new RAND: the SQN must grow)
    rand2 = bytes(16)
    sw = t1.process(h("0088008122") + b"\x10" + rand2 + b"\x10" + m.autn(rand2, 2 << 20))
    assert sw[0] == 0x61
    assert t1.process(bytes([0x00, 0xC0, 0x00, 0x00, sw[1]]))[:2] == b"\xdb\x08"


def test_t1_gsm_select_with_le_answers_directly(t1: SimCard) -> None:
    rsp = t1.process(h("a0a40000023f0000"))
    assert len(rsp) == 22 + 2 and rsp[-2:] == OK
    assert t1.process(h("a0a40000023f00")) == b"\x9f\x16"


# --- T=1: extended lengths -----------------------------------------------------------------------


def test_t1_extended_read_binary_returns_the_whole_32k_file(t1: SimCard) -> None:
    assert t1.process(SELECT_LARGE) == OK
    rsp = t1.process(h("00b00000") + ext_le(65536))  # Le 000000: up to 65,536 bytes
    assert len(rsp) == SIZE + 2
    assert rsp[:-2] == large_ef_content(SIZE) == bytes(i % 251 for i in range(SIZE))
    assert rsp[-2:] == OK


def test_t1_extended_read_binary_stops_at_ne_or_the_file_end(t1: SimCard) -> None:
    assert t1.process(SELECT_LARGE) == OK
    content = large_ef_content(SIZE)
    assert t1.process(h("00b00000") + ext_le(4096)) == content[:4096] + OK
    assert t1.process(h("00b07f00") + ext_le(65536)) == content[0x7F00:] + OK
    assert t1.process(h("00b07ff0") + ext_le(1000)) == content[0x7FF0:] + OK  # up to the end
    assert t1.process(h("00b00000") + ext_le(256)) == content[:256] + OK
    # short Le as before: 00 = up to 256 bytes, too long → 6Cxx
    assert t1.process(h("00b0000000")) == content[:256] + OK
    assert t1.process(h("00b07ff020")) == b"\x6c\x10"


def test_t1_extended_update_binary_writes_32k(t1: SimCard) -> None:
    assert t1.process(SELECT_LARGE) == OK
    data = bytes(reversed(large_ef_content(SIZE)))
    assert t1.process(h("00d60000") + ext_lc(data)) == OK
    assert t1.process(h("00b00000") + ext_le(0)) == data + OK
    assert t1.process(h("00d60001") + ext_lc(data)) == h("6700")  # past the end
    assert t1.process(h("00d60000") + ext_lc(b"\x01\x02") + ext_le(0)[1:]) == OK  # case 4E form
    assert t1.process(h("00b0000002")) == b"\x01\x02" + OK


def test_t1_extended_case4_answers_directly(t1: SimCard) -> None:
    rsp = t1.process(h("00a40404") + ext_lc(USIM_AID) + b"\x00\x00")
    assert rsp[0] == 0x62 and rsp[-2:] == OK


def test_t1_malformed_extended_apdus_get_6700(t1: SimCard) -> None:
    assert t1.process(SELECT_LARGE) == OK
    assert t1.process(h("00b000000000")) == h("6700")  # 6 bytes: neither short nor extended
    assert t1.process(h("00d6000000000301")) == h("6700")  # Lc 3, one data byte
    assert t1.process(h("00b00000000002aa0000")) == h("6700")  # data for a case-2 command


def test_t0_extended_apdus_get_6700(t0: SimCard) -> None:
    assert t0.process(SELECT_LARGE) == OK
    assert t0.process(h("00b00000") + ext_le(65536)) == h("6700")
    assert t0.process(h("00d60000") + ext_lc(b"\x01\x02")) == h("6700")
    assert t0.process(h("00a40404") + ext_lc(USIM_AID) + b"\x00\x00") == h("6700")
    assert t0.process(h("00b0000000")) == large_ef_content(256) + OK  # short: fine


def test_t0t1_card_honours_le_and_extended_lengths() -> None:
    """A virtual card cannot see which protocol pcscd negotiated: "t0t1" speaks T=1 on both."""
    sim = make(protocol="t0t1", large_ef=SIZE)
    assert sim.process(SELECT_LARGE) == OK
    assert len(sim.process(h("00b00000") + ext_le(65536))) == SIZE + 2
    assert sim.process(h("00a40004023f00"))[0] == 0x61  # T=0 TPDUs work as on T=0


def test_large_ef_fcp_and_gsm_response(t1: SimCard) -> None:
    rsp = t1.process(h("00a4000402") + LARGE_EF_FID.to_bytes(2, "big") + b"\x00")
    assert b"\x80\x02\x80\x00" in rsp and b"\x83\x02\x2f\x50" in rsp  # size 32768, FID
    assert t1.process(h("a0a40000022f5000"))[2:4] == b"\x80\x00"
    assert t1.process(h("a0a40000023f0000"))[14:16] == b"\x02\x03"  # the MF has one EF more


def test_vcard_refuses_an_rapdu_vpcd_cannot_carry(caplog: pytest.LogCaptureFixture) -> None:
    """A 64 KiB file read with Le 000000: 65,535 + 2 bytes, more than a vpcd message."""
    driver = SimCardDriver(make(protocol="t1", large_ef=0xFFFF))
    card = CardAsVirtualCard(driver)
    assert card.present
    assert card.transmit(SELECT_LARGE) == OK
    assert len(driver.transmit(h("00b00000") + ext_le(65536))) == 0xFFFF + 2
    with caplog.at_level(logging.ERROR, "remsim.vcard"):
        assert card.transmit(h("00b00000") + ext_le(65536)) == SW_TOO_LONG == h("6700")
    assert "65537 bytes, more than vpcd carries (65535)" in caplog.text
    rsp = card.transmit(h("00b00000") + ext_le(0xFFFD))  # 65,533 + 2: the largest that fits
    assert len(rsp) == 0xFFFF and rsp[-2:] == OK
