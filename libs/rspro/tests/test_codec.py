"""The codec against rspro-wire.md §3-§4: what the encoder emits and what the decoder accepts."""

from __future__ import annotations

import pytest

from rspro import (
    CONNECT_CLIENT_RES_TAG,
    MESSAGE_TYPES,
    BankSlot,
    ClientSlot,
    ClientSlotStatusInd,
    ComponentIdentity,
    ComponentType,
    ConfigClientIdReq,
    ConnectClientRes,
    CreateMappingRes,
    ResetStateReq,
    ResultCode,
    RsproDecodeError,
    RsproPdu,
    SetAtrReq,
    SlotPhysStatus,
    decode,
    encode,
)

CREATE_MAPPING_RES_OK = bytes.fromhex("300d800102810100a205a5030a0100")
ATR = bytes.fromhex("3b9f96801fc78031a073be21136743200718000001a5")


def h(text: str) -> bytes:
    return bytes.fromhex(text)


# --- envelope (§4) ------------------------------------------------------------------------


def test_envelope_defaults_are_what_upstream_sends() -> None:
    assert RsproPdu(CreateMappingRes(ResultCode.OK)).version == 2
    assert RsproPdu(CreateMappingRes(ResultCode.OK)).tag == 0
    identity = ComponentIdentity(ComponentType.REMSIM_BANKD, "b", "remsim-bankd", "1.0.0")
    assert RsproPdu(ConnectClientRes(identity, ResultCode.OK)).tag == CONNECT_CLIENT_RES_TAG
    assert encode(RsproPdu(CreateMappingRes(ResultCode.OK))) == CREATE_MAPPING_RES_OK


def test_message_catalogue_has_the_21_alternatives_with_their_tags() -> None:
    assert sorted(m.TAG for m in MESSAGE_TYPES) == list(range(21))
    assert ResetStateReq.TAG == 19 and ResetStateReq.ASN_NAME == "resetStateReq"


@pytest.mark.parametrize(
    ("value", "der"),
    [(0, "800100"), (127, "80017f"), (128, "80020080"), (1023, "800203ff"), (40000, "8003009c40")],
)
def test_integers_are_minimal_twos_complement(value: int, der: str) -> None:
    body = encode(RsproPdu(CreateMappingRes(ResultCode.OK), version=value))
    assert body[2 : 2 + len(der) // 2] == h(der)


def test_boolean_true_is_ff_and_unknown_flags_are_omitted() -> None:
    msg = ClientSlotStatusInd(
        ClientSlot(23, 0),
        BankSlot(1, 0),
        SlotPhysStatus(reset_active=True, vcc_present=False, clk_active=False, card_present=True),
    )
    assert encode(RsproPdu(msg)).endswith(h("300c8001ff8101008201008301ff"))
    msg = ClientSlotStatusInd(ClientSlot(23, 0), BankSlot(1, 0), SlotPhysStatus(False))
    assert encode(RsproPdu(msg)).endswith(h("3003800100"))


# --- decoder leniency (§3.2) --------------------------------------------------------------


@pytest.mark.parametrize(
    "ber",
    [
        "30 81 0d 800102 810100 a205a5030a0100",  # non-minimal long form
        "30 82 000d 800102 810100 a205a5030a0100",
        "30 80 800102 810100 a205a5030a0100 0000",  # indefinite length
        "30 80 800102 810100 a2 80 a5 80 0a0100 0000 0000 0000",
        "300d800102810100a205a5030a0100 deadbeef",  # bytes after the PDU are ignored
    ],
)
def test_ber_forms_upstream_accepts(ber: str) -> None:
    assert decode(h(ber)) == RsproPdu(CreateMappingRes(ResultCode.OK))


def test_segmented_octet_string() -> None:
    ber = h(
        "3080 800102 810100 a2 80 aa 80 3006020117020100"
        "24 80 040b" + ATR[:11].hex() + "040b" + ATR[11:].hex() + "0000 0000 0000 0000"
    )
    assert decode(ber).msg == SetAtrReq(ClientSlot(23, 0), ATR)


def test_any_nonzero_boolean_is_true() -> None:
    ber = h("3025800102810100a21dae1b3006020117020100300602010102010130098001018101 7f 820101")
    status = decode(ber).msg.slot_phys_status  # type: ignore[attr-defined]
    assert status == SlotPhysStatus(True, True, True, None)


def test_values_outside_the_asn1_ranges_are_accepted() -> None:
    pdu = decode(h("300d800107810100a205a5030a0133"))  # version 7, result 51
    assert pdu.version == 7
    assert pdu.msg == CreateMappingRes(ResultCode(-1))
    assert decode(h("3013800102810100a20ba8093007020201ff020100")).msg == ConfigClientIdReq(
        ClientSlot(511, 0)
    )


def test_unknown_trailing_members_of_extensible_sequences_are_skipped() -> None:
    assert decode(h("3010800102810100a208a5060a01000401ff")).msg == CreateMappingRes(ResultCode.OK)
    ber = h("3015800102810100a20da80b30090201170201000401ff")  # inside ClientSlot
    assert decode(ber).msg == ConfigClientIdReq(ClientSlot(23, 0))


@pytest.mark.parametrize(
    "ber",
    [
        "",
        "30",
        "300d020102810100a205a5030a0100",  # wrong tag class for version
        "300a800102a205a5030a0100",  # missing mandatory tag
        "300d800102810100a205a5030a01",  # truncated
        "300c800102810100a204b5020500",  # an alternative [21] we do not know
        "0400",
    ],
)
def test_invalid_pdus_raise_decode_error(ber: str) -> None:
    with pytest.raises(RsproDecodeError):
        decode(h(ber))
