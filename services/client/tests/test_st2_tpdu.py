"""T=0 TPDU assembly in the host (simtrace2-cardem.md §8), sans-IO."""

import pytest

from remsim_client.st2.protocol import DataFlags, RxData, TxData
from remsim_client.st2.tpdu import ForwardTpdu, TpduAssembler, apdu_case

HDR = DataFlags.TPDU_HDR
FINAL = DataFlags.FINAL
PB_TX = DataFlags.PB_AND_TX
PB_RX = DataFlags.PB_AND_RX


@pytest.mark.parametrize(
    ("header", "case"),
    [
        ("a0a4000002", 4),
        ("a0b0000004", 2),
        ("a0c0000017", 2),
        ("a0f2000016", 2),
        ("a0fa000000", 1),
        ("00a4000402", 4),
        ("00b0000004", 2),
        ("00c000001c", 2),
        ("00ca000000", 2),  # only in the ISO fallback table
        ("80f2000000", 2),  # GlobalPlatform helper: ETSI STATUS
        ("80f2400000", 4),  # GlobalPlatform GET STATUS
        ("8010000014", 3),  # TERMINAL PROFILE
        ("80c2000010", 4),  # ENVELOPE
        ("8012000010", 2),  # FETCH
        ("8014000010", 3),  # TERMINAL RESPONSE
        ("81f2000000", 2),  # entries 6 → helper 2
        ("8032000000", 4),  # entry 7
        ("00cb000000", 0),  # unknown
        ("00d6000003", 3),
        ("0088008022", 4),  # AUTHENTICATE
        ("0073000000", 2),  # MANAGE SECURE CHANNEL helper, P1 = 0
        ("0073010000", 3),  # P1 & 7 = 1, P2 >> 5 = 0
        ("0073012000", 2),  # c = 1
        ("0073014000", 0),  # c = 2
        ("0073018000", 3),  # P2 = 0x80
        ("0073040000", 3),
        ("0073050000", 0),
        ("0075040000", 3),  # TRANSACT DATA
        ("0075000000", 2),
        ("80e2010000", 4),  # STORE DATA
        ("80e2000000", 3),
        ("80ca000000", 2),  # GET DATA, P3 = 0
        ("80ca000005", 4),
        ("4ab0000004", 2),  # logical channel CLA 4x
        ("6ab0000004", 2),
        ("a040000000", 0),  # unknown GSM INS, not CLA 00: no fallback
    ],
)
def test_apdu_case(header: str, case: int) -> None:
    assert apdu_case(bytes.fromhex(header)) == case


def hdr(text: str) -> RxData:
    return RxData(HDR, bytes.fromhex(text))


def test_select_with_command_data_is_acked_then_forwarded() -> None:
    """§9.2: A0 A4 00 00 02 3F 00 answered 9F 17."""
    tpdu = TpduAssembler()
    assert tpdu.receive(hdr("a0a4000002")) == TxData(PB_RX, b"\xa4")
    assert not tpdu.awaiting_response
    assert tpdu.receive(RxData(FINAL, b"\x3f\x00")) == ForwardTpdu(bytes.fromhex("a0a40000023f00"))
    assert tpdu.awaiting_response
    assert tpdu.respond(bytes.fromhex("9f17")) == [TxData(PB_TX | FINAL, b"\x9f\x17")]
    assert not tpdu.awaiting_response


def test_get_response_is_forwarded_at_once_and_answered_with_ins_data_sw() -> None:
    """§9.3."""
    tpdu = TpduAssembler()
    assert tpdu.receive(hdr("a0c0000017")) == ForwardTpdu(bytes.fromhex("a0c0000017"))
    data = bytes(range(23))
    assert tpdu.respond(data + b"\x90\x00") == [
        TxData(PB_TX, b"\xc0" + data),
        TxData(PB_TX | FINAL, b"\x90\x00"),
    ]


def test_update_binary_case_3() -> None:
    """§9.5."""
    tpdu = TpduAssembler()
    assert tpdu.receive(hdr("00d6000003")) == TxData(PB_RX, b"\xd6")
    assert tpdu.receive(RxData(FINAL, bytes.fromhex("aabbcc"))) == ForwardTpdu(
        bytes.fromhex("00d6000003aabbcc")
    )
    assert tpdu.respond(b"\x90\x00") == [TxData(PB_TX | FINAL, b"\x90\x00")]


def test_error_only_answer_to_case_2_sends_just_the_sw() -> None:
    """§9.6."""
    tpdu = TpduAssembler()
    tpdu.receive(hdr("a0b0000004"))
    assert tpdu.respond(b"\x94\x04") == [TxData(PB_TX | FINAL, b"\x94\x04")]


def test_case_3_with_p3_zero_is_forwarded_without_procedure_byte() -> None:
    tpdu = TpduAssembler()
    assert tpdu.receive(hdr("00d6000000")) == ForwardTpdu(bytes.fromhex("00d6000000"))


def test_unknown_command_is_forwarded_header_only_like_upstream() -> None:
    tpdu = TpduAssembler()
    assert tpdu.receive(hdr("00cb3fff05")) == ForwardTpdu(bytes.fromhex("00cb3fff05"))


def test_data_returned_for_case_4_is_still_sent_like_upstream() -> None:
    tpdu = TpduAssembler()
    tpdu.receive(hdr("a0a4000002"))
    tpdu.receive(RxData(FINAL, b"\x3f\x00"))
    assert tpdu.respond(b"\x01\x02\x90\x00") == [
        TxData(PB_TX, b"\xa4\x01\x02"),
        TxData(PB_TX | FINAL, b"\x90\x00"),
    ]


def test_a_response_without_status_word_is_ignored() -> None:
    tpdu = TpduAssembler()
    tpdu.receive(hdr("a0b0000004"))
    assert tpdu.respond(b"\x90") == []
    assert tpdu.awaiting_response  # the real answer may still come


def test_a_response_without_pending_tpdu_is_ignored() -> None:
    """Else the firmware would queue it and send it as the answer to the next command."""
    tpdu = TpduAssembler()
    assert tpdu.respond(b"\x90\x00") == []
    tpdu.receive(hdr("a0b0000004"))
    assert len(tpdu.respond(b"\x01\x02\x03\x04\x90\x00")) == 2
    assert tpdu.respond(b"\x90\x00") == []


def test_abort_forgets_the_pending_tpdu() -> None:
    tpdu = TpduAssembler()
    tpdu.receive(hdr("a0b0000004"))
    tpdu.abort()
    assert tpdu.header is None
    assert tpdu.respond(b"\x90\x00") == []


def test_a_new_header_discards_partial_command_data() -> None:
    tpdu = TpduAssembler()
    tpdu.receive(hdr("00d6000004"))
    assert tpdu.receive(RxData(DataFlags.NONE, b"\x01\x02")) is None
    assert tpdu.receive(hdr("00b0000002")) == ForwardTpdu(bytes.fromhex("00b0000002"))


def test_split_command_data_is_collected_until_complete() -> None:
    tpdu = TpduAssembler()
    tpdu.receive(hdr("00d6000004"))
    assert tpdu.receive(RxData(DataFlags.NONE, b"\x01\x02")) is None
    assert tpdu.receive(RxData(FINAL, b"\x03\x04\x05")) == ForwardTpdu(
        bytes.fromhex("00d600000401020304")
    )


def test_short_final_data_is_forwarded_as_received() -> None:
    tpdu = TpduAssembler()
    tpdu.receive(hdr("00d6000004"))
    assert tpdu.receive(RxData(FINAL, b"\x01")) == ForwardTpdu(bytes.fromhex("00d600000401"))


def test_command_data_without_a_command_is_ignored() -> None:
    tpdu = TpduAssembler()
    assert tpdu.receive(RxData(FINAL, b"\x01")) is None
    tpdu.receive(hdr("a0b0000004"))  # case 2: no command data expected
    assert tpdu.receive(RxData(FINAL, b"\x01")) is None


def test_a_short_header_is_ignored() -> None:
    assert TpduAssembler().receive(hdr("a0b000")) is None


def test_response_data_too_long_for_the_firmware_buffer_sends_only_sw() -> None:
    tpdu = TpduAssembler()
    tpdu.receive(hdr("a0b0000000"))
    assert tpdu.respond(bytes(266) + b"\x90\x00") == [TxData(PB_TX | FINAL, b"\x90\x00")]
    tpdu.receive(hdr("a0b0000000"))
    assert len(tpdu.respond(bytes(256) + b"\x90\x00")) == 2
