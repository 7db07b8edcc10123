"""remsim's own messages: extension additions of the CHOICE, apart from the original's 21."""

from __future__ import annotations

import pytest

from rspro import (
    MESSAGE_TYPES,
    REMSIM_MESSAGE_TYPES,
    CardInfo,
    CardInventoryInd,
    CardState,
    RsproDecodeError,
    RsproPdu,
    decode,
    encode,
)

ATR = bytes.fromhex("3b9f96801fc78031a073be21136743200718000001a5")
REPORT = CardInventoryInd(
    1,
    (
        CardInfo(0, CardState.PRESENT, ATR, "89490200000000000000", "262000000010000"),
        CardInfo(1, CardState.EMPTY),
        CardInfo(2, CardState.UNRESPONSIVE),
        CardInfo(3, CardState.PRESENT, ATR),  # EF_ICCID not readable
    ),
)


def test_the_inventory_is_no_message_of_the_original() -> None:
    assert CardInventoryInd not in MESSAGE_TYPES
    assert CardInventoryInd in REMSIM_MESSAGE_TYPES
    assert not set(REMSIM_MESSAGE_TYPES) & set(MESSAGE_TYPES)
    assert CardInventoryInd.TAG == 64  # clear of upstream's numbering (0..20)


def test_a_card_inventory_round_trips() -> None:
    der = encode(RsproPdu(REPORT))
    assert der[11:13] == bytes.fromhex("bf40")  # msg [2] { cardInventoryInd [64] ... }
    assert decode(der) == RsproPdu(REPORT)
    assert decode(encode(RsproPdu(CardInventoryInd(7)))).msg == CardInventoryInd(7, ())


def test_an_unknown_card_state_from_a_newer_peer_decodes_as_unknown() -> None:
    der = bytearray(encode(RsproPdu(CardInventoryInd(1, (CardInfo(0, CardState.EMPTY),)))))
    assert der[-1] == 1  # state empty (1)
    der[-1] = 9
    (card,) = decode(bytes(der)).msg.cards  # type: ignore[attr-defined]
    assert card.state == CardState.unknown()


def test_a_truncated_inventory_is_a_decode_error() -> None:
    with pytest.raises(RsproDecodeError):
        decode(encode(RsproPdu(REPORT))[:-3])


def test_card_activity_is_an_extension_addition_sent_only_when_known() -> None:
    busy = CardInfo(
        0, CardState.PRESENT, ATR, "89490200000000000000", tpdu_count=2**40, idle_ms=250
    )
    report = CardInventoryInd(1, (busy, CardInfo(1, CardState.EMPTY)))
    assert decode(encode(RsproPdu(report))) == RsproPdu(report)
    idle = CardInventoryInd(1, (CardInfo(0, CardState.PRESENT, b"\x3b\x00", "8949", "2620"),))
    assert encode(RsproPdu(idle)) == bytes.fromhex(  # as before the addition: no [3], [4]
        "3028800102810100a220bf401d020101301830160201000a010080023b00810438393439820432363230"
    )
