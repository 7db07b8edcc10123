"""The hand-written DER fast path of the TPDU messages against asn1tools, both directions:
on the recorded TPDUs and on random ones (hypothesis), including BER the fast decoder must
either understand identically or hand over to asn1tools."""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from rspro import (
    BankSlot,
    ClientSlot,
    CreateMappingReq,
    RsproDecodeError,
    RsproEncodeError,
    RsproPdu,
    TpduCardToModem,
    TpduFlags,
    TpduModemToCard,
    decode,
    encode,
)
from rspro.codec import schema

h = bytes.fromhex


def asn1tools_value(pdu: RsproPdu) -> dict[str, Any]:
    """The asn1tools value of a TPDU PDU, written out by hand from the ASN.1 module."""
    msg = pdu.msg
    assert isinstance(msg, TpduModemToCard | TpduCardToModem)
    flags = {
        "tpduHeaderPresent": msg.flags.tpdu_header_present,
        "finalPart": msg.flags.final_part,
        "procByteContinueTx": msg.flags.proc_byte_continue_tx,
        "procByteContinueRx": msg.flags.proc_byte_continue_rx,
    }
    body: dict[str, Any]
    if isinstance(msg, TpduModemToCard):
        body = {
            "fromClientSlot": {
                "clientId": msg.from_client_slot.client_id,
                "slotNr": msg.from_client_slot.slot_nr,
            },
            "toBankSlot": {"bankId": msg.to_bank_slot.bank_id, "slotNr": msg.to_bank_slot.slot_nr},
        }
    else:
        body = {
            "fromBankSlot": {
                "bankId": msg.from_bank_slot.bank_id,
                "slotNr": msg.from_bank_slot.slot_nr,
            },
            "toClientSlot": {
                "clientId": msg.to_client_slot.client_id,
                "slotNr": msg.to_client_slot.slot_nr,
            },
        }
    body |= {"flags": flags, "data": msg.data}
    return {"version": pdu.version, "tag": pdu.tag, "msg": (msg.ASN_NAME, body)}


def asn1tools_encode(pdu: RsproPdu) -> bytes:
    return bytes(schema().encode("RsproPDU", asn1tools_value(pdu)))


ids = st.integers(0, 1023)
flags = st.builds(TpduFlags, st.booleans(), st.booleans(), st.booleans(), st.booleans())
apdus = st.binary(min_size=0, max_size=300)
tpdu_messages = st.one_of(
    st.builds(
        TpduModemToCard,
        st.builds(ClientSlot, ids, ids),
        st.builds(BankSlot, ids, ids),
        apdus,
        flags,
    ),
    st.builds(
        TpduCardToModem,
        st.builds(BankSlot, ids, ids),
        st.builds(ClientSlot, ids, ids),
        apdus,
        flags,
    ),
)
tpdu_pdus = st.builds(
    RsproPdu, tpdu_messages, version=st.integers(0, 32), tag=st.integers(0, 2**31 - 1)
)


# --- the recordings -----------------------------------------------------------------------


def test_recorded_tpdus_fast_path_equals_asn1tools(tpdu_record: dict[str, Any]) -> None:
    der = bytes.fromhex(tpdu_record["rspro_hex"])
    pdu = decode(der)
    assert asn1tools_value(pdu) == schema().decode("RsproPDU", der)
    assert encode(pdu) == asn1tools_encode(pdu) == der


# --- random messages ----------------------------------------------------------------------


@settings(max_examples=300)
@given(tpdu_pdus)
def test_encode_equals_asn1tools(pdu: RsproPdu) -> None:
    assert encode(pdu) == asn1tools_encode(pdu)


@settings(max_examples=300)
@given(tpdu_pdus)
def test_decode_of_asn1tools_der(pdu: RsproPdu) -> None:
    assert decode(asn1tools_encode(pdu)) == pdu


def _long_form(length: int, width: int) -> bytes:
    return bytes([0x80 | width]) + length.to_bytes(width, "big")


def _reencode_ber(der: bytes, widths: list[int]) -> bytes:
    """The same value with non-minimal long-form lengths (BER allows them): every TLV gets
    the next width of ``widths`` (0 keeps its DER length)."""
    out = bytearray()
    width_iter = iter(widths)

    def tlv(pos: int) -> int:
        tag, first = der[pos], der[pos + 1]
        if first & 0x80:
            n = first & 0x7F
            size, start = int.from_bytes(der[pos + 2 : pos + 2 + n], "big"), pos + 2 + n
        else:
            size, start = first, pos + 2
        end = start + size
        width = next(width_iter, 0)
        out.append(tag)
        head = len(out)
        out.extend(_long_form(size, max(width, 1)) if width else der[pos + 1 : start])
        if tag & 0x20:  # constructed: re-encode the members, then fix our own length
            mark = len(out)
            p = start
            while p < end:
                p = tlv(p)
            content = len(out) - mark
            if width:
                out[head:mark] = _long_form(content, max(width, (content.bit_length() + 7) // 8))
            else:
                del out[head:mark]
                out[head:head] = _long_form(content, 2) if content > 127 else bytes([content])
        else:
            out.extend(der[start:end])
        return end

    tlv(0)
    return bytes(out)


@settings(max_examples=200)
@given(tpdu_pdus, st.lists(st.integers(0, 2), max_size=20))
def test_decode_of_nonminimal_ber_matches_asn1tools(pdu: RsproPdu, widths: list[int]) -> None:
    ber = _reencode_ber(asn1tools_encode(pdu), widths)
    assert schema().decode("RsproPDU", ber) == asn1tools_value(pdu)
    assert decode(ber) == pdu


@settings(max_examples=200)
@given(tpdu_pdus, st.sampled_from([0x01, 0x02, 0x7F, 0x80, 0xFF]))
def test_any_nonzero_boolean_is_true(pdu: RsproPdu, true_byte: int) -> None:
    der = bytearray(asn1tools_encode(pdu))
    flags_at = der.index(bytes.fromhex("300c")) + 2
    for i in range(flags_at, flags_at + 12, 3):
        if der[i + 2]:
            der[i + 2] = true_byte
    assert decode(bytes(der)) == pdu


# --- values the fast path must hand over to asn1tools -----------------------------------------

# A createMappingReq / removeMappingReq from a newer peer may carry extension members; with
# members shaped like (flags, data) the fast decoder takes it for a tpduCardToModem.
_EXTENDED_MAPPING_REQ = bytes.fromhex(
    "302c800102810100a224a422"
    "3006020117020100"  # client C23:0
    "3006020101020101"  # bank B1:1
    "300c010100010100010100010100"  # extension members the receiver must skip
    "04029f17"
)


def test_fast_path_decodes_only_the_tpdu_alternatives() -> None:
    assert schema().decode("RsproPDU", _EXTENDED_MAPPING_REQ)["msg"][0] == "createMappingReq"
    assert decode(_EXTENDED_MAPPING_REQ).msg == CreateMappingReq(ClientSlot(23, 0), BankSlot(1, 1))


@pytest.mark.parametrize(
    "pdu",
    [
        RsproPdu(TpduModemToCard(ClientSlot(-1, 0), BankSlot(1, 0), b"\xa0")),
        RsproPdu(TpduCardToModem(BankSlot(1, 0), ClientSlot(2**2100, 0), b"\x90\x00")),
        RsproPdu(TpduModemToCard(ClientSlot(1, 0), BankSlot(1, 0), bytes(65500))),
    ],
    ids=["negative id", "huge id", "64 KiB data"],
)
def test_fast_path_encode_raises_only_rspro_errors(pdu: RsproPdu) -> None:
    try:
        der = encode(pdu)
    except RsproEncodeError:
        return
    assert der == asn1tools_encode(pdu)


def test_a_decoded_tpdu_reencodes() -> None:
    # bank slot number -1 (02 01 FF): the decoder accepts it, as upstream's does
    der = bytes.fromhex(
        "3031800102810100a229ac27300602011702010030060201010201ff"
        "300c0101000101000101000101000407a0a40000023f00"
    )
    pdu = decode(der)
    assert pdu.msg == TpduModemToCard(ClientSlot(23, 0), BankSlot(1, -1), pdu.msg.data)  # type: ignore[attr-defined]
    assert encode(pdu) == der


def test_truncated_tpdu_is_a_decode_error() -> None:
    der = asn1tools_encode(RsproPdu(TpduModemToCard(ClientSlot(1, 0), BankSlot(1, 0), b"\xa0" * 9)))
    for cut in range(len(der)):
        with pytest.raises(RsproDecodeError):
            decode(der[:cut])


def test_a_decoded_tpdu_with_a_300_byte_version_reencodes() -> None:
    """A frame may hold up to 1197 bytes, enough for absurd INTEGERs that asn1tools decodes."""
    body = h("30060201170201003006020101020101300c01010001010001010001010004029f17")
    choice = bytes([0xAC, len(body)]) + body
    version = h("8082012c01") + bytes(299)
    envelope = version + h("810100") + bytes([0xA2, len(choice)]) + choice
    pdu = decode(b"\x30\x82" + len(envelope).to_bytes(2, "big") + envelope)
    assert pdu.version == 1 << (8 * 299)
    assert decode(encode(pdu)) == pdu
