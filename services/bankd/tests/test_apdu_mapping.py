"""``remsim_bankd.apdu``: C-APDUs parsed as ISO/IEC 7816-4 §5.1 defines them, and exchanged
with a T=0 card as ISO/IEC 7816-3 §12.2 (and TS 102 221 §7.3.1.1) maps them onto TPDUs; a
T=1 card gets them as they are.

The cards here are scripts: each TPDU the bankd sends must be the next one expected, and
is answered with the response given."""

from __future__ import annotations

import pytest

from remsim_bankd.apdu import (
    MAX_GET_RESPONSES,
    T0,
    T1,
    ApduCase,
    ApduError,
    CommandApdu,
    exchange,
    get_response_cla,
    parse_capdu,
)
from remsim_bankd.card import CardUnresponsiveError


def h(text: str) -> bytes:
    return bytes.fromhex(text.replace(" ", ""))


class ScriptedCard:
    """A card that expects exactly the TPDUs of ``script``, in order, and answers each one
    with its response."""

    def __init__(self, *script: tuple[str, str]) -> None:
        self.script = [(h(tpdu), h(response)) for tpdu, response in script]
        self.sent: list[bytes] = []

    def transmit(self, tpdu: bytes) -> bytes:
        self.sent.append(tpdu)
        assert self.script, f"unexpected TPDU {tpdu.hex()} after the script's end"
        expected, response = self.script.pop(0)
        assert tpdu == expected, f"sent {tpdu.hex()}, the card expected {expected.hex()}"
        return response

    def done(self) -> bool:
        return not self.script


def t0(capdu: str, *script: tuple[str, str]) -> bytes:
    """The R-APDU of ``capdu`` through a T=0 card following ``script`` (all of it used)."""
    card = ScriptedCard(*script)
    rapdu = exchange(h(capdu), card.transmit, T0)
    assert card.done(), f"TPDUs expected but not sent: {card.script}"
    return rapdu


# --- ISO/IEC 7816-4 §5.1: the four cases, short and extended ---------------------------------


@pytest.mark.parametrize(
    ("capdu", "case", "nc", "ne", "extended"),
    [
        ("00A40000", ApduCase.CASE_1, 0, 0, False),
        ("00B0000010", ApduCase.CASE_2, 0, 16, False),
        ("00B0000000", ApduCase.CASE_2, 0, 256, False),  # Le 00: Ne = 256
        ("00A40004 02 3F00", ApduCase.CASE_3, 2, 0, False),
        ("00A40004 02 3F00 00", ApduCase.CASE_4, 2, 256, False),
        ("00A40004 02 3F00 1C", ApduCase.CASE_4, 2, 28, False),
        ("00B00000 00 0100", ApduCase.CASE_2, 0, 256, True),
        ("00B00000 00 0000", ApduCase.CASE_2, 0, 65536, True),  # Le 0000: Ne = 65536
        ("00D60000 00 0002 AABB", ApduCase.CASE_3, 2, 0, True),
        ("00D60000 00 0002 AABB 8000", ApduCase.CASE_4, 2, 0x8000, True),
        ("00D60000 00 0002 AABB 0000", ApduCase.CASE_4, 2, 65536, True),
    ],
)
def test_the_cases_of_iso_7816_4(
    capdu: str, case: ApduCase, nc: int, ne: int, extended: bool
) -> None:
    command = parse_capdu(h(capdu))
    assert (command.case, len(command.data), command.ne, command.extended) == (
        case,
        nc,
        ne,
        extended,
    )
    assert command.header == h(capdu)[:4]


def test_case_3_and_4_carry_their_data() -> None:
    assert parse_capdu(h("80C20000 03 D10102 00")) == CommandApdu(
        0x80, 0xC2, 0, 0, h("D10102"), 256, ApduCase.CASE_4, False
    )
    big = bytes(range(256)) * 256  # Nc = 65535 needs the extended form
    command = parse_capdu(h("00D60000 00 FFFF") + big[:0xFFFF])
    assert command.data == big[:0xFFFF] and command.case is ApduCase.CASE_3


@pytest.mark.parametrize(
    ("capdu", "why"),
    [
        ("", "0 bytes"),
        ("00A400", "3 bytes"),
        ("00A40000 02 3F", "short Lc 2 needs 7 or 8 bytes, got 6"),
        ("00A40000 02 3F00 0000", "short Lc 2 needs 7 or 8 bytes, got 9"),
        ("00A40000 00 3F", "6 bytes with a 00 length byte"),
        ("00D60000 00 0000 AA", "extended Lc 0"),
        ("00D60000 00 0003 AABB", "extended Lc 3 needs 10 or 12 bytes, got 9"),
        ("00D60000 00 0002 AABB 00", "extended Lc 2 needs 9 or 11 bytes, got 10"),
    ],
)
def test_a_malformed_c_apdu_is_refused_with_6700_and_says_why(capdu: str, why: str) -> None:
    with pytest.raises(ApduError, match=why) as refused:
        parse_capdu(h(capdu))
    assert refused.value.sw == h("6700")
    card = ScriptedCard()  # and nothing reaches a T=0 card
    with pytest.raises(ApduError):
        exchange(h(capdu), card.transmit, T0)
    assert card.sent == []


# --- ISO/IEC 7816-3 §12.2.2: case 1 ------------------------------------------------------------


def test_case_1_is_sent_with_p3_00() -> None:
    assert t0("00700000", ("00700000 00", "9000")) == h("9000")


# --- §12.2.3: case 2 ---------------------------------------------------------------------------


def test_case_2_le_accepted_is_one_tpdu_as_it_is() -> None:
    assert t0("00B0000004", ("00B0000004", "01020304 9000")) == h("01020304 9000")


def test_case_2_le_refused_without_a_length_is_the_status_word() -> None:
    assert t0("00B0000004", ("00B0000004", "6986")) == h("6986")


def test_case_2_wrong_le_6cxx_is_sent_again_with_the_length_the_card_gives() -> None:
    rapdu = t0("00B0000000", ("00B0000000", "6C02"), ("00B0000002", "0A0B 9000"))
    assert rapdu == h("0A0B 9000")


def test_case_2_6cxx_twice_is_returned_not_looped() -> None:
    assert t0("00B0000000", ("00B0000000", "6C02"), ("00B0000002", "6C03")) == h("6C03")


def test_case_2_61xx_fetches_the_rest_with_get_response() -> None:
    rapdu = t0(
        "00B0000000",
        ("00B0000000", "0102 6103"),
        ("00C0000003", "030405 9000"),
    )
    assert rapdu == h("0102 030405 9000")


# --- §12.2.4: case 3 ---------------------------------------------------------------------------


def test_case_3_is_sent_as_it_is_and_its_status_word_returned() -> None:
    assert t0("00D60000 02 AABB", ("00D60000 02 AABB", "9000")) == h("9000")


def test_case_3_answered_9fxx_or_61xx_is_returned_for_the_application_to_fetch() -> None:
    # A GSM SELECT sent without Le: the application asked for no data.
    assert t0("A0A40000 02 3F00", ("A0A40000 02 3F00", "9F17")) == h("9F17")
    assert t0("00A40004 02 3F00", ("00A40004 02 3F00", "6128")) == h("6128")


# --- §12.2.5: case 4 ---------------------------------------------------------------------------


def test_case_4_drops_le_and_fetches_the_answer_with_get_response() -> None:
    fcp = "62" + "1A" + "00" * 26
    rapdu = t0(
        "00A40004 02 3F00 00",
        ("00A40004 02 3F00", "611C"),
        ("00C000001C", fcp + "9000"),
    )
    assert rapdu == h(fcp + "9000")


def test_case_4_gsm_9fxx_is_fetched_with_class_a0() -> None:
    response = "0000" + "00" * 21
    rapdu = t0(
        "A0A40000 02 3F00 00",
        ("A0A40000 02 3F00", "9F17"),
        ("A0C0000017", response + "9000"),
    )
    assert rapdu == h(response + "9000")


def test_case_4_9fxx_is_no_procedure_word_outside_class_a0() -> None:
    assert t0("00A40004 02 3F00 00", ("00A40004 02 3F00", "9F17")) == h("9F17")


def test_case_4_warning_still_fetches_the_data_with_get_response_00() -> None:
    """TS 102 221 §7.3.1.1.5: a case 4 command answered with a warning alone (an
    invalidated file's SELECT: 6283) still has its data: GET RESPONSE with P3 00, then the
    length the card gives (6Cxx); the R-APDU is that data with the warning."""
    fcp = "62" + "1A" + "00" * 26
    rapdu = t0(
        "00A40004 02 6F07 00",
        ("00A40004 02 6F07", "6283"),
        ("00C0000000", "6C1C"),
        ("00C000001C", fcp + "9000"),
    )
    assert rapdu == h(fcp + "6283")
    rapdu = t0(  # or the data at once, and more of it after 61xx
        "00A40004 02 6F07 00",
        ("00A40004 02 6F07", "63C1"),
        ("00C0000000", "6110"),
        ("00C0000010", "AA" * 16 + "9000"),
    )
    assert rapdu == h("AA" * 16 + "63C1")


def test_case_4_warning_without_data_is_the_warning() -> None:
    assert t0("00A40004 02 6F07 00", ("00A40004 02 6F07", "6283"), ("00C0000000", "6F00")) == h(
        "6283"
    )
    assert t0("00A40004 02 6F07 00", ("00A40004 02 6F07", "6283"), ("00C0000000", "9000")) == h(
        "6283"
    )


def test_a_case_3_warning_is_returned_as_it_is() -> None:
    assert t0("00D60000 02 AABB", ("00D60000 02 AABB", "6281")) == h("6281")


def test_case_4_answered_without_data_is_the_status_word() -> None:
    assert t0("00A4000C 02 3F00 00", ("00A4000C 02 3F00", "9000")) == h("9000")
    assert t0("00A40004 02 7F99 00", ("00A40004 02 7F99", "6A82")) == h("6A82")


def test_case_4_get_response_chains_while_61xx_and_concatenates() -> None:
    rapdu = t0(
        "00880081 22" + "11" * 0x22 + "00",
        ("00880081 22" + "11" * 0x22, "6135"),
        ("00C0000035", "AA" * 0x20 + "6115"),
        ("00C0000015", "BB" * 0x15 + "9000"),
    )
    assert rapdu == h("AA" * 0x20 + "BB" * 0x15 + "9000")


def test_get_response_never_asks_more_than_ne_and_stops_at_ne() -> None:
    # Ne = 16: the card has 0x30 bytes; only Ne are fetched, its 61xx says there are more.
    rapdu = t0(
        "00A40004 02 3F00 10",
        ("00A40004 02 3F00", "6130"),
        ("00C0000010", "CC" * 16 + "6120"),
    )
    assert rapdu == h("CC" * 16 + "6120")


def test_get_response_answered_6cxx_is_sent_again() -> None:
    rapdu = t0(
        "00A40004 02 3F00 00",
        ("00A40004 02 3F00", "6100"),  # 61 00: 256 bytes (or "some")
        ("00C0000000", "6C05"),
        ("00C0000005", "0102030405 9000"),
    )
    assert rapdu == h("0102030405 9000")


def test_get_response_failing_ends_the_exchange_with_its_status_word() -> None:
    assert t0("00A40004 02 3F00 00", ("00A40004 02 3F00", "6110"), ("00C0000010", "6F00")) == h(
        "6F00"
    )


def test_a_card_stuck_on_61xx_is_cut_off() -> None:
    # A GET RESPONSE that brings no data but 61xx again ends the chain.
    rapdu = t0(
        "00A40004 02 3F00 00",
        ("00A40004 02 3F00", "6110"),
        ("00C0000010", "6110"),
    )
    assert rapdu == h("6110")

    class Dribble:
        def __init__(self) -> None:
            self.sent = 0

        def transmit(self, tpdu: bytes) -> bytes:  # one byte per GET RESPONSE, ever more
            self.sent += 1
            return b"\x01\x61\x01" if self.sent > 1 else b"\x61\x01"

    card = Dribble()
    rapdu = exchange(h("00CA0000 01 00 00"), card.transmit, T0)
    assert card.sent == 1 + MAX_GET_RESPONSES
    assert rapdu == b"\x01" * MAX_GET_RESPONSES + b"\x61\x01"  # Ne 256 reached


@pytest.mark.parametrize(
    ("cla", "get_response"),
    [
        (0x00, 0x00),
        (0x01, 0x01),  # logical channel 1
        (0x0C, 0x00),  # secure messaging dropped
        (0x10, 0x00),  # command chaining dropped
        (0x80, 0x00),  # proprietary (ENVELOPE, TS 102 221): interindustry GET RESPONSE
        (0x83, 0x03),
        (0x45, 0x45),  # further interindustry, channel 9
        (0x65, 0x45),
        (0xC5, 0x45),
        (0xA0, 0xA0),  # GSM 11.11
    ],
)
def test_get_response_class(cla: int, get_response: int) -> None:
    assert get_response_cla(cla) == get_response


def test_envelope_of_class_80_is_fetched_with_class_00() -> None:
    rapdu = t0(
        "80C20000 03 D10102 00",
        ("80C20000 03 D10102", "6102"),
        ("00C0000002", "ABCD 9000"),
    )
    assert rapdu == h("ABCD 9000")


def test_a_response_without_status_word_is_returned_as_it_is() -> None:
    assert t0("00B0000000", ("00B0000000", "")) == b""
    assert t0(
        "00A40004 02 3F00 00",
        ("00A40004 02 3F00", "61"),
    ) == h("61")


# --- extended lengths, T=1 and card errors ----------------------------------------------------


@pytest.mark.parametrize(
    "capdu", ["00B00000 00 0000", "00D60000 00 0002 AABB", "00D60000 00 0002 AABB 0000"]
)
def test_extended_lengths_on_t0_are_answered_6700_without_the_card(capdu: str) -> None:
    card = ScriptedCard()
    with pytest.raises(ApduError, match="extended lengths need a T=1 card") as refused:
        exchange(h(capdu), card.transmit, T0)
    assert refused.value.sw == h("6700") and card.sent == []


@pytest.mark.parametrize(
    "capdu",
    ["00A40004 02 3F00 00", "00B00000 00 0000", "00D60000 00 0002 AABB 0000", "00A40000"],
)
def test_t1_transmits_the_c_apdu_as_it_is(capdu: str) -> None:
    card = ScriptedCard((capdu, "6F00 9000"))
    assert exchange(h(capdu), card.transmit, T1) == h("6F00 9000")


@pytest.mark.parametrize("capdu", ["00A4", "00A40004 05 3F00", "00B00000 00 01"])
def test_a_malformed_c_apdu_is_answered_6700_on_t1_too_without_the_card(capdu: str) -> None:
    card = ScriptedCard()
    with pytest.raises(ApduError) as refused:
        exchange(h(capdu), card.transmit, T1)
    assert refused.value.sw == h("6700") and card.sent == []


def test_t1_answer_is_returned_as_it_is_even_61xx() -> None:
    card = ScriptedCard(("00A40004 02 3F00", "6128"))
    assert exchange(h("00A40004 02 3F00"), card.transmit, T1) == h("6128")


def test_card_errors_pass_through() -> None:
    def mute(tpdu: bytes) -> bytes:
        raise CardUnresponsiveError("mute")

    with pytest.raises(CardUnresponsiveError):
        exchange(h("00A40004 02 3F00 00"), mute, T0)


def test_an_unknown_protocol_is_a_programming_error() -> None:
    with pytest.raises(ValueError, match="T=2"):
        exchange(h("00A40000"), ScriptedCard().transmit, 2)
