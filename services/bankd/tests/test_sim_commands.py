"""The software SIM's command processor, command by command (sans-IO: APDU in, R-APDU out)."""

from __future__ import annotations

from typing import Any

import pytest

from remsim_bankd.sim import CardProfile, Milenage, SimCard, c2, c3
from remsim_bankd.sim.fs import USIM_AID
from remsim_bankd.sim.simcard import SQN_WINDOW

KI = bytes.fromhex("465b5ce8b199b49faa5f0a2ee238a6bc")
OPC = bytes.fromhex("cd63cb71954a9f4e48a5994e37a02baf")
RAND = bytes.fromhex("23553cbe9637a89d218ae64dae47bf35")
PIN1 = b"1234".ljust(8, b"\xff")
PUK1 = b"12345678"
ADM1 = b"11111111"


def make(**overrides: Any) -> SimCard:
    fields: dict[str, Any] = {
        "iccid": "89490200000000000000",
        "imsi": "262000000010000",
        "ki": KI.hex(),
        "opc": OPC.hex(),
        "adm1": "11111111",
        "challenge": "counting",
    }
    return SimCard(CardProfile(**{**fields, **overrides}))


@pytest.fixture
def sim() -> SimCard:
    """A card with PIN1 enabled (the default) and nothing verified."""
    return make()


@pytest.fixture
def open_sim() -> SimCard:
    """A card with PIN1 disabled, like card0/card1."""
    return make(pin1_enabled=False)


def tx(card: SimCard, apdu: str | bytes) -> str:
    if isinstance(apdu, str):
        apdu = bytes.fromhex(apdu.replace(" ", ""))
    return card.process(apdu).hex()


def verify_pin1(card: SimCard) -> None:
    assert tx(card, b"\x00\x20\x00\x01\x08" + PIN1) == "9000"


# --- ATR, reset, dispatch -------------------------------------------------------------------------


def test_atr_is_the_recorded_t0_atr_and_reset_returns_it(sim: SimCard) -> None:
    assert sim.atr.hex() == "3b9f96801fc78031a073be21136743200718000001a5"
    assert sim.reset() == sim.atr


@pytest.mark.parametrize(
    ("apdu", "sw"),
    [
        ("00ca000000", "6d00"),  # GET DATA: unknown instruction
        ("a084000008", "6d00"),  # GET CHALLENGE is no GSM command
        ("80ca000000", "6e00"),  # class 80 only carries STATUS
        ("b0a4000000", "6e00"),  # unknown class
        ("01a4000c023f00", "6881"),  # logical channel 1 is not offered
        ("00a4", "6700"),  # too short to be a command
    ],
)
def test_unknown_instructions_and_classes(sim: SimCard, apdu: str, sw: str) -> None:
    assert tx(sim, apdu) == sw


# --- SELECT and GET RESPONSE, GSM (class A0) ------------------------------------------------------


def test_gsm_select_mf_answers_9f_and_df_response(open_sim: SimCard) -> None:
    assert tx(open_sim, "a0a40000023f00") == "9f16"
    rsp = bytes.fromhex(tx(open_sim, "a0c0000016"))
    assert rsp[-2:] == b"\x90\x00"
    data = rsp[:-2]
    assert data[4:7] == b"\x3f\x00\x01"  # file id, type MF
    assert data[12] == 9  # length of the GSM specific data
    assert data[13] == 0x93  # file characteristics, b8 set: CHV1 disabled
    assert (data[14], data[15]) == (2, 2)  # DF_TELECOM, DF_GSM; EF_ICCID, EF_DIR
    assert data[18:22] == bytes([0x83, 0x8A, 0x83, 0x8A])  # CHV1 3, PUK1 10, CHV2 3, PUK2 10


def test_gsm_df_response_says_chv1_enabled(sim: SimCard) -> None:
    tx(sim, "a0a40000027f20")
    assert tx(sim, "a0c0000016")[26:28] == "13"


def test_gsm_select_ef_imsi_response_matches_the_recorded_card(open_sim: SimCard) -> None:
    assert tx(open_sim, "a0a40000027f20") == "9f16"
    assert tx(open_sim, "a0a40000026f07") == "9f0f"
    assert tx(open_sim, "a0c000000f") == "000000096f07040011ff44010200009000"


def test_gsm_select_follows_the_selection_rules(open_sim: SimCard) -> None:
    assert tx(open_sim, "a0a40000026f07") == "9404"  # EF_IMSI is not a child of the MF
    assert tx(open_sim, "a0a40000022fe2") == "9f0f"  # EF_ICCID is
    assert tx(open_sim, "a0a40000027f20") == "9f16"
    assert tx(open_sim, "a0a40000027f10") == "9f16"  # sibling DF
    assert tx(open_sim, "a0a40000023f00") == "9f16"  # parent / MF
    assert tx(open_sim, "a0a40000026f99") == "9404"


def test_gsm_select_checks_parameters(open_sim: SimCard) -> None:
    assert tx(open_sim, "a0a40400023f00") == "6b00"
    assert tx(open_sim, "a0a40000033f0000") == "6700"
    assert tx(open_sim, "a0a40000023f") == "6700"


def test_gsm_get_response_with_wrong_le(open_sim: SimCard) -> None:
    tx(open_sim, "a0a40000023f00")
    assert tx(open_sim, "a0c0000020") == "6c16"  # too long: the right length, data kept
    assert tx(open_sim, "a0c0000004") == "000010009000"  # shorter: the first bytes


def test_get_response_without_pending_data(open_sim: SimCard) -> None:
    assert tx(open_sim, "a0c0000016") == "6f00"
    assert tx(open_sim, "00c0000016") == "6985"
    tx(open_sim, "a0a40000023f00")
    tx(open_sim, "a0f2000016")  # any other command drops the pending response data
    assert tx(open_sim, "a0c0000016") == "6f00"


# --- SELECT and GET RESPONSE, UICC (class 00) -----------------------------------------------------


def test_uicc_select_mf_fcp_matches_the_recorded_card(open_sim: SimCard) -> None:
    assert tx(open_sim, "00a40004023f00") == "6112"
    assert tx(open_sim, "00c0000020") == "6c12"
    assert tx(open_sim, "00c0000012") == "62108202782183023f00a5038001718a01059000"


def test_uicc_select_without_response_data(open_sim: SimCard) -> None:
    assert tx(open_sim, "00a4000c022fe2") == "9000"
    assert tx(open_sim, "00b000000a") == "989420000000000000009000"


def test_uicc_get_response_in_pieces(open_sim: SimCard) -> None:
    tx(open_sim, "00a40004023f00")
    assert tx(open_sim, "00c0000010") == "62108202782183023f00a5038001718a" + "6102"
    assert tx(open_sim, "00c0000002") == "01059000"


def test_uicc_select_adf_usim_by_aid_full_and_partial(sim: SimCard) -> None:
    for aid in (USIM_AID, USIM_AID[:7]):
        sw = tx(sim, bytes([0x00, 0xA4, 0x04, 0x04, len(aid)]) + aid)
        assert sw[:2] == "61"
        fcp = bytes.fromhex(tx(sim, "00c00000" + sw[2:]))[:-2]
        assert fcp[:2] == bytes([0x62, len(fcp) - 2])
        assert b"\x84\x10" + USIM_AID in fcp
        # PIN status template: PIN1 and PIN2 enabled, key references 01 and 81.
        assert bytes.fromhex("c6099001c0830101830181") in fcp
    assert tx(sim, "00a4040407a0000000871003") == "6a82"
    # a case 4 APDU (trailing Le) is accepted too: T=0 still answers 61xx
    assert tx(sim, "00a4040407a000000087100200")[:2] == "61"


def test_uicc_select_ef_in_adf_fcp(open_sim: SimCard) -> None:
    tx(open_sim, "00a4040c07a0000000871002")
    assert tx(open_sim, "00a40004026f07") == "6114"
    fcp = tx(open_sim, "00c0000014")
    assert fcp == "62128202412183026f078a0105800200098801389000"
    assert tx(open_sim, "00b0000009") == "0829260000001000009000"


def test_uicc_select_by_path_parent_and_7fff(open_sim: SimCard) -> None:
    assert tx(open_sim, "00a4080c047f206f07") == "9000"
    assert tx(open_sim, "00b0000009") == "0829260000001000009000"
    assert tx(open_sim, "00a4030c") == "9000"  # parent of DF_GSM: MF
    assert tx(open_sim, "00a4090c047f206fad") == "9000"  # relative to the MF
    assert tx(open_sim, "00b0000004") == "000000029000"
    assert tx(open_sim, "00a4000c027fff") == "9000"  # the current application
    assert tx(open_sim, "00a4000c026f38") == "9000"  # EF_UST is in ADF_USIM
    assert tx(open_sim, "00a4080c047f106f07") == "6a82"
    assert tx(open_sim, "00a4000c026f99") == "6a82"


def test_uicc_select_checks_parameters(open_sim: SimCard) -> None:
    assert tx(open_sim, "00a40008023f00") == "6a86"  # P2 08: unsupported response
    assert tx(open_sim, "00a4020c023f00") == "6a86"
    assert tx(open_sim, "00a4000c033f0000") == "6700"
    assert tx(open_sim, "00a4000c00") == "6700"


# --- READ BINARY, UPDATE BINARY, READ RECORD ------------------------------------------------------


def test_read_binary_le_rules(open_sim: SimCard) -> None:
    tx(open_sim, "a0a40000027f20")
    tx(open_sim, "a0a40000026f07")
    assert tx(open_sim, "a0b0000009") == "0829260000001000009000"
    assert tx(open_sim, "a0b000000a") == "6c09"  # Le too long: 6C with the right one
    assert tx(open_sim, "a0b0000000") == "0829260000001000009000"  # Le 0: all there is
    assert tx(open_sim, "a0b0000003") == "0829269000"
    assert tx(open_sim, "a0b0000702") == "00009000"  # offset 7
    assert tx(open_sim, "a0b0000902") == "9402"  # offset past the end
    assert tx(open_sim, "00b0000902") == "6b00"


def test_read_binary_needs_a_transparent_ef(open_sim: SimCard) -> None:
    assert tx(open_sim, "a0b0000001") == "9400"
    assert tx(open_sim, "00b0000001") == "6986"
    tx(open_sim, "a0a40000022f00")
    assert tx(open_sim, "a0b0000001") == "9408"
    assert tx(open_sim, "00b0000001") == "6981"


def test_read_binary_by_short_file_identifier(open_sim: SimCard) -> None:
    tx(open_sim, "00a4040c07a0000000871002")
    assert tx(open_sim, "00b0870009") == "0829260000001000009000"  # SFI 07: EF_IMSI
    assert tx(open_sim, "00b0830000") == "000000029000"  # SFI 03: EF_AD
    assert tx(open_sim, "00b09f0000") == "6a82"


def test_read_record_ef_dir(open_sim: SimCard) -> None:
    tx(open_sim, "00a4000c022f00")
    record = "61184f10" + USIM_AID.hex() + "500455534" + "94d" + "ff" * 6
    assert tx(open_sim, "00b2010420") == record + "9000"
    assert tx(open_sim, "00b2010400") == record + "9000"
    assert tx(open_sim, "00b2010410") == record[:32] + "9000"
    assert tx(open_sim, "00b2010430") == "6c20"
    assert tx(open_sim, "00b2020420") == "6a83"
    assert tx(open_sim, "a0b2020420") == "9402"
    assert tx(open_sim, "00b2000220") == record + "9000"  # next: record 1
    assert tx(open_sim, "00b2000220") == "6a83"  # no record 2
    assert tx(open_sim, "00b2000320") == "6a83"  # previous: nothing before record 1
    tx(open_sim, "00a4000c022f00")
    assert tx(open_sim, "00b2000320") == record + "9000"  # previous, no current: the last
    assert tx(open_sim, "00b2010120") == "6a86"  # unsupported mode
    assert tx(open_sim, "00b201f420") == record + "9000"  # by SFI 1E
    tx(open_sim, "00a4000c022fe2")
    assert tx(open_sim, "00b2010400") == "6981"


def test_update_binary_checks_access_and_size(open_sim: SimCard) -> None:
    tx(open_sim, "a0a40000027f20")
    tx(open_sim, "a0a40000026fad")
    assert tx(open_sim, "a0d60000020102") == "9804"  # EF_AD: update needs ADM
    assert tx(open_sim, "00d60000020102") == "6982"
    assert tx(open_sim, b"\xa0\x20\x00\x0a\x08" + ADM1) == "9000"
    assert tx(open_sim, "a0d60002020003") == "9000"
    assert tx(open_sim, "a0b0000000") == "000000039000"
    assert tx(open_sim, "a0d60003020102") == "9402"  # runs past the end
    assert tx(open_sim, "00d60003020102") == "6700"
    assert tx(open_sim, "00d600040101") == "6b00"
    # DF_GSM and ADF_USIM share EF_AD
    tx(open_sim, "00a4040c07a0000000871002")
    assert tx(open_sim, "00b0830000") == "000000039000"


def test_update_binary_of_ef_iccid_needs_adm(open_sim: SimCard) -> None:
    tx(open_sim, "00a4000c022fe2")
    assert tx(open_sim, "a0d6000040" + "55" * 64) == "9804"


def test_update_binary_of_ef_loci_with_pin1(sim: SimCard) -> None:
    tx(sim, "00a4080c047f206f7e")
    new = "1122334462f2201234ff00"
    assert tx(sim, "00d600000b" + new) == "6982"
    verify_pin1(sim)
    assert tx(sim, "00d600000b" + new) == "9000"
    assert tx(sim, "00b000000b") == new + "9000"


# --- STATUS ---------------------------------------------------------------------------------------


def test_status(open_sim: SimCard) -> None:
    tx(open_sim, "a0a40000027f20")
    tx(open_sim, "a0a40000026f07")
    status = tx(open_sim, "a0f2000016")
    assert status[8:12] == "7f20" and status.endswith("9000")  # the current DF
    assert tx(open_sim, "a0f2000020") == "6c16"
    assert tx(open_sim, "80f2000c00") == "9000"
    assert tx(open_sim, "80f2000000").startswith("62")
    assert tx(open_sim, "80f2000100") == "6a86"  # no application selected
    tx(open_sim, "00a4040c07a0000000871002")
    assert tx(open_sim, "80f2000100") == "8410" + USIM_AID.hex() + "9000"


# --- PINs -----------------------------------------------------------------------------------------


def test_pin1_guards_ef_imsi(sim: SimCard) -> None:
    tx(sim, "a0a40000027f20")
    tx(sim, "a0a40000026f07")
    assert tx(sim, "a0b0000009") == "9804"
    assert tx(sim, "00b0000009") == "6982"
    assert tx(sim, "0020000100") == "63c3"  # no data: the attempts left
    assert tx(sim, b"\xa0\x20\x00\x01\x08" + PIN1) == "9000"
    assert tx(sim, "0020000100") == "9000"
    assert tx(sim, "a0b0000009") == "0829260000001000009000"
    sim.reset()  # verification is lost on a power cycle
    tx(sim, "00a4080c047f206f07")
    assert tx(sim, "00b0000009") == "6982"


def test_wrong_pin1_counts_down_and_blocks(sim: SimCard) -> None:
    wrong = b"0000".ljust(8, b"\xff")
    assert tx(sim, b"\x00\x20\x00\x01\x08" + wrong) == "63c2"
    assert tx(sim, b"\xa0\x20\x00\x01\x08" + wrong) == "9804"
    verify_pin1(sim)  # the right PIN restores the counter
    assert tx(sim, "0020000100") == "9000"
    sim.reset()
    for left in (2, 1, 0):
        assert tx(sim, b"\x00\x20\x00\x01\x08" + wrong) == f"63c{left}"
    assert tx(sim, b"\x00\x20\x00\x01\x08" + PIN1) == "6983"
    assert tx(sim, b"\xa0\x20\x00\x01\x08" + PIN1) == "9840"
    assert tx(sim, "0020000100") == "6983"
    tx(sim, "a0a40000023f00")
    assert tx(sim, "a0c0000016")[36:40] == "808a"  # CHV1 status: no attempts left
    sim.reset()  # counters are non-volatile
    assert tx(sim, "0020000100") == "6983"


def test_gsm_verify_blocking_answer(sim: SimCard) -> None:
    wrong = b"0000".ljust(8, b"\xff")
    assert [tx(sim, b"\xa0\x20\x00\x01\x08" + wrong) for _ in range(3)] == ["9804", "9804", "9840"]


def test_verify_checks_reference_and_length(sim: SimCard) -> None:
    assert tx(sim, b"\x00\x20\x00\x05\x08" + PIN1) == "6a88"
    assert tx(sim, b"\xa0\x20\x00\x81\x08" + PIN1) == "6b00"  # 81 is ISO's PIN2, not GSM's
    assert tx(sim, b"\x00\x20\x00\x01\x04" + PIN1[:4]) == "6700"
    assert tx(sim, b"\x00\x20\x01\x01\x08" + PIN1) == "6a86"
    assert tx(sim, b"\x00\x20\x00\x81\x08" + b"5678".ljust(8, b"\xff")) == "9000"  # PIN2
    assert tx(make(adm1=None), b"\x00\x20\x00\x0a\x08" + ADM1) == "6a88"


def test_unblock_pin1(sim: SimCard) -> None:
    wrong = b"0000".ljust(8, b"\xff")
    for _ in range(3):
        tx(sim, b"\x00\x20\x00\x01\x08" + wrong)
    new = b"4321".ljust(8, b"\xff")
    assert tx(sim, "002c000100") == "63ca"  # PUK attempts left
    assert tx(sim, b"\x00\x2c\x00\x01\x10" + b"00000000" + new) == "63c9"
    assert tx(sim, b"\xa0\x2c\x00\x00\x10" + PUK1 + new) == "9000"  # GSM: P2 00 = CHV1
    assert tx(sim, "0020000100") == "9000"  # unblocked and verified
    sim.reset()
    assert tx(sim, b"\x00\x20\x00\x01\x08" + PIN1) == "63c2"
    assert tx(sim, b"\x00\x20\x00\x01\x08" + new) == "9000"


def test_puk_blocks_after_ten_wrong_attempts(sim: SimCard) -> None:
    new = b"4321".ljust(8, b"\xff")
    answers = [tx(sim, b"\xa0\x2c\x00\x00\x10" + b"00000000" + new) for _ in range(10)]
    assert answers == ["9804"] * 9 + ["9840"]
    assert tx(sim, b"\x00\x2c\x00\x01\x10" + PUK1 + new) == "6983"


def test_change_disable_enable_pin1(sim: SimCard) -> None:
    new = b"9999".ljust(8, b"\xff")
    assert tx(sim, b"\x00\x24\x00\x01\x10" + PIN1 + new) == "9000"
    sim.reset()
    assert tx(sim, b"\x00\x26\x00\x01\x08" + new) == "9000"  # disable
    sim.reset()
    tx(sim, "00a4080c047f206f07")
    assert tx(sim, "00b0000009") == "0829260000001000009000"  # no PIN needed now
    assert tx(sim, b"\x00\x26\x00\x01\x08" + new) == "6985"  # already disabled
    assert tx(sim, b"\x00\x24\x00\x01\x10" + new + PIN1) == "6984"  # cannot change it now
    assert tx(sim, b"\xa0\x28\x00\x01\x08" + new) == "9000"  # enable (GSM)
    sim.reset()
    tx(sim, "00a4080c047f206f07")
    assert tx(sim, "00b0000009") == "6982"
    assert tx(sim, b"\x00\x26\x00\x81\x08" + b"5678".ljust(8, b"\xff")) == "6a88"  # PIN2 stays


# --- authentication -------------------------------------------------------------------------------


def authenticate(card: SimCard, rand: bytes, autn: bytes) -> tuple[str, bytes]:
    sw = tx(card, b"\x00\x88\x00\x81\x22\x10" + rand + b"\x10" + autn)
    if sw[:2] != "61":
        return sw, b""
    rsp = bytes.fromhex(tx(card, "00c00000" + sw[2:]))
    assert rsp[-2:] == b"\x90\x00"
    return sw, rsp[:-2]


def test_authenticate_3g_returns_res_ck_ik_kc(open_sim: SimCard) -> None:
    m = Milenage(KI, OPC)
    res, ck, ik, _ = m.f2345(RAND)
    sw, data = authenticate(open_sim, RAND, m.autn(RAND, 32))
    assert sw == "6135"
    assert data == (b"\xdb\x08" + res + b"\x10" + ck + b"\x10" + ik + b"\x08" + c3(ck, ik))
    assert res.hex() == "a54211d5e3ba50bf"  # TS 35.208 test set 1
    assert open_sim.sqn == 32


def test_authenticate_3g_sync_failure_returns_auts(open_sim: SimCard) -> None:
    m = Milenage(KI, OPC)
    autn = m.autn(RAND, 32)
    authenticate(open_sim, RAND, autn)
    sw, data = authenticate(open_sim, RAND, autn)  # replayed SQN
    assert sw == "6110"
    assert data[:2] == b"\xdc\x0e"
    auts = data[2:]
    sqn_ms = bytes(a ^ b for a, b in zip(auts[:6], m.f5star(RAND), strict=True))
    assert int.from_bytes(sqn_ms, "big") == 32
    assert auts[6:] == m.f1(RAND, sqn_ms, b"\x00\x00")[1]  # MAC-S over SQN_MS, AMF 0000
    open_sim.reset()  # SQN_MS survives a power cycle
    assert authenticate(open_sim, RAND, autn)[0] == "6110"
    assert authenticate(open_sim, RAND, m.autn(RAND, 64))[0] == "6135"


def test_authenticate_3g_sqn_window(open_sim: SimCard) -> None:
    m = Milenage(KI, OPC)
    assert authenticate(open_sim, RAND, m.autn(RAND, SQN_WINDOW + 1))[0] == "6110"
    assert authenticate(open_sim, RAND, m.autn(RAND, SQN_WINDOW))[0] == "6135"
    assert authenticate(open_sim, RAND, m.autn(RAND, SQN_WINDOW))[0] == "6110"


def test_authenticate_3g_with_a_wrong_mac(open_sim: SimCard) -> None:
    autn = bytearray(Milenage(KI, OPC).autn(RAND, 32))
    autn[-1] ^= 1
    assert authenticate(open_sim, RAND, bytes(autn)) == ("9862", b"")
    other_key = Milenage(bytes(16), OPC)
    assert authenticate(open_sim, RAND, other_key.autn(RAND, 32))[0] == "9862"
    assert open_sim.sqn == 0


def test_authenticate_gsm_context(open_sim: SimCard) -> None:
    res, ck, ik, _ = Milenage(KI, OPC).f2345(RAND)
    assert tx(open_sim, b"\x00\x88\x00\x80\x11\x10" + RAND) == "610e"
    assert tx(open_sim, "00c000000e") == ("04" + c2(res).hex() + "08" + c3(ck, ik).hex() + "9000")


def test_run_gsm_algorithm(open_sim: SimCard) -> None:
    res, ck, ik, _ = Milenage(KI, OPC).f2345(RAND)
    assert tx(open_sim, b"\xa0\x88\x00\x00\x10" + RAND) == "9f0c"
    assert tx(open_sim, "a0c000000c") == c2(res).hex() + c3(ck, ik).hex() + "9000"


def test_authentication_needs_pin1_and_well_formed_data(sim: SimCard) -> None:
    autn = Milenage(KI, OPC).autn(RAND, 32)
    assert tx(sim, b"\xa0\x88\x00\x00\x10" + RAND) == "9804"
    assert authenticate(sim, RAND, autn) == ("6982", b"")
    verify_pin1(sim)
    assert tx(sim, b"\xa0\x88\x00\x00\x08" + RAND[:8]) == "6700"
    assert tx(sim, b"\x00\x88\x00\x82\x11\x10" + RAND) == "6a86"
    assert tx(sim, b"\x00\x88\x00\x81\x11\x10" + RAND) == "6700"
    assert authenticate(sim, RAND, autn)[0] == "6135"


# --- GET CHALLENGE --------------------------------------------------------------------------------


def test_get_challenge_counting_like_the_recorded_card(open_sim: SimCard) -> None:
    assert tx(open_sim, "0084000080") == bytes(range(128)).hex() + "9000"
    assert len(bytes.fromhex(tx(open_sim, "0084000000"))) == 256 + 2


def test_get_challenge_random() -> None:
    card = make(challenge="random")
    a, b = tx(card, "0084000010"), tx(card, "0084000010")
    assert len(a) == len(b) == 36 and a != b
    fixed = SimCard(card.profile, challenge=lambda n: b"\x42" * n)
    assert tx(fixed, "0084000004") == "424242429000"
