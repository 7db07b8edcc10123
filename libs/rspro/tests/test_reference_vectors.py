"""Byte-exact with the original: every PDU and IPA frame recorded from upstream 1.0.0, and
the frame catalogue of the wire specification (rspro-wire.md §7 and §8)."""

from __future__ import annotations

import ipaddress
import itertools
from typing import Any

import pytest

from rspro import (
    NO_BANKD,
    BankSlot,
    ClientSlot,
    ClientSlotStatusInd,
    ComponentIdentity,
    ComponentType,
    ConfigClientBankReq,
    ConfigClientBankRes,
    ConfigClientIdReq,
    ConnectBankReq,
    ConnectBankRes,
    ConnectClientReq,
    ConnectClientRes,
    CreateMappingReq,
    CreateMappingRes,
    ErrorCode,
    ErrorInd,
    ErrorSeverity,
    IpaFramer,
    IpPort,
    Message,
    RemoveMappingReq,
    RemoveMappingRes,
    ResetStateReq,
    ResetStateRes,
    ResultCode,
    RsproPdu,
    SetAtrReq,
    SetAtrRes,
    SlotPhysStatus,
    TpduCardToModem,
    TpduModemToCard,
    decode,
    encode,
    ipa,
    rspro_frame,
)
from rspro.cli import pdu_to_json
from rspro.codec import schema

# --- the recordings -----------------------------------------------------------------------


def test_rspro_pdu_decodes_to_the_recorded_values_and_reencodes_byte_exact(
    rspro_record: dict[str, Any],
) -> None:
    der = bytes.fromhex(rspro_record["rspro_hex"])
    pdu = decode(der)
    assert rspro_record["msg_type"] == pdu.msg.ASN_NAME
    assert (pdu.version, pdu.tag) == (rspro_record["rspro_version"], rspro_record["rspro_tag"])
    assert pdu_to_json(pdu) == rspro_record["pdu"]
    assert encode(pdu) == der


def test_our_asn1_module_decodes_like_upstreams(rspro_record: dict[str, Any]) -> None:
    """The recordings' ``pdu`` came from asn1tools on upstream's RSPRO.asn; ours must agree."""
    value = schema().decode("RsproPDU", bytes.fromhex(rspro_record["rspro_hex"]))
    assert _asn1tools_to_json(value) == rspro_record["pdu"]


def _asn1tools_to_json(value: Any) -> Any:
    """asn1tools' native values in the recordings' notation (CHOICE as dict, bytes as hex)."""
    if isinstance(value, tuple):
        return {value[0]: _asn1tools_to_json(value[1])}
    if isinstance(value, bytes):
        return value.hex()
    if isinstance(value, dict):
        return {k: _asn1tools_to_json(v) for k, v in value.items()}
    return value


def test_ipa_frame_goes_through_the_framer_unchanged(ipa_record: dict[str, Any]) -> None:
    raw = bytes.fromhex(ipa_record["raw_hex"])
    (frame,) = IpaFramer().feed(raw)
    assert frame.proto == int(ipa_record["ipa_proto"], 16)
    assert len(frame.payload) == ipa_record["ipa_len"]
    assert frame.to_bytes() == raw
    if ipa_record["kind"] == "RSPRO":
        assert frame.payload[0] == ipa.IPA_EXT_RSPRO == int(ipa_record["ipa_ext"], 16)
        assert frame.payload[1:].hex() == ipa_record["rspro_hex"]
        assert rspro_frame(frame.payload[1:]) == raw
    else:
        ccm = {"PING": ipa.PING, "PONG": ipa.PONG}[ipa_record["ccm_msg_name"]]
        assert raw == ccm


def test_every_recorded_line(reference_messages: list[dict[str, Any]]) -> None:
    """All 2004 lines, not only the distinct ones: decode, compare, re-encode, re-frame."""
    assert len(reference_messages) > 2000
    for record in reference_messages:
        raw = bytes.fromhex(record["raw_hex"])
        (frame,) = IpaFramer().feed(raw)
        assert frame.to_bytes() == raw
        if record["kind"] == "RSPRO":
            pdu = decode(frame.payload[1:])
            assert pdu_to_json(pdu) == record["pdu"], record["seq"]
            assert rspro_frame(encode(pdu)) == raw, record["seq"]


def test_each_recorded_tcp_stream_reframes_whatever_the_segmentation(
    reference_messages: list[dict[str, Any]],
) -> None:
    """Each direction of each connection as one byte stream: in one chunk, byte by byte,
    and in 7-byte chunks, the framer gives back the recorded frames in order."""

    def stream_key(r: dict[str, Any]) -> tuple[str, int, str]:
        return r["scenario"], r["tcp_stream"], r["ports"]

    ordered = sorted(reference_messages, key=lambda r: (*stream_key(r), r["seq"]))
    for _, records in itertools.groupby(ordered, key=stream_key):
        frames = [bytes.fromhex(r["raw_hex"]) for r in records]
        stream = b"".join(frames)
        for size in (len(stream), 1, 7):
            framer = IpaFramer()
            got = [
                f.to_bytes()
                for i in range(0, len(stream), size)
                for f in framer.feed(stream[i : i + size])
            ]
            assert got == frames
            assert framer.buffered == 0


# --- the specification's catalogue -------------------------------------------------------

SERVER = ComponentIdentity(ComponentType.REMSIM_SERVER, "srvhost", "remsim-server", "1.0.0")
BANKD = ComponentIdentity(ComponentType.REMSIM_BANKD, "bankhost", "remsim-bankd", "1.0.0")
CLIENT = ComponentIdentity(ComponentType.REMSIM_CLIENT, "modemhost", "remsim-client", "1.0.0")
C23_0 = ClientSlot(23, 0)
B1_1 = BankSlot(1, 1)
BANKD_AT = IpPort(ipaddress.IPv4Address("10.2.3.4"), 9999)
ATR = bytes.fromhex("3B9F96801FC78031A073BE21136743200718000001A5")

CATALOGUE: list[tuple[str, Message | RsproPdu, str]] = [
    (
        "7.1 connectBankReq",
        ConnectBankReq(BANKD, bank_id=1, number_of_slots=8),
        "00 37 EE 07 30 34 80 01 02 81 01 00 A2 2C A0 2A 30 22 0A 01 02 16 08 62 61 6E"
        "6B 68 6F 73 74 80 0C 72 65 6D 73 69 6D 2D 62 61 6E 6B 64 81 05 31 2E 30 2E 30"
        "02 01 01 02 01 08",
    ),
    (
        "7.2 connectClientRes from the server",
        ConnectClientRes(
            ComponentIdentity(ComponentType.REMSIM_SERVER, "srv", "remsim-server", "1.0.0"),
            ResultCode.OK,
        ),
        "00 31 EE 07 30 2E 80 01 02 81 02 09 26 A2 25 A3 23 30 1E 0A 01 01 16 03 73 72"
        "76 80 0D 72 65 6D 73 69 6D 2D 73 65 72 76 65 72 81 05 31 2E 30 2E 30 0A 01 00",
    ),
    (
        "7.3 tpduModemToCard",
        TpduModemToCard(C23_0, B1_1, bytes.fromhex("A0A40000023F00")),
        "00 34 EE 07 30 31 80 01 02 81 01 00 A2 29 AC 27 30 06 02 01 17 02 01 00 30 06"
        "02 01 01 02 01 01 30 0C 01 01 00 01 01 00 01 01 00 01 01 00 04 07 A0 A4 00 00"
        "02 3F 00",
    ),
    ("7.4 resetStateReq", ResetStateReq(), "00 0D EE 07 30 0A 80 01 02 81 01 00 A2 02 B3 00"),
    (
        "connectBankRes ok",
        ConnectBankRes(SERVER, ResultCode.OK),
        "00 34 EE 07 30 31 80 01 02 81 01 00 A2 29 A1 27 30 22 0A 01 01 16 07 73 72 76 68"
        "6F 73 74 80 0D 72 65 6D 73 69 6D 2D 73 65 72 76 65 72 81 05 31 2E 30 2E 30 0A 01 00",
    ),
    (
        "connectBankRes identityInUse",
        ConnectBankRes(SERVER, ResultCode.IDENTITY_IN_USE),
        "00 34 EE 07 30 31 80 01 02 81 01 00 A2 29 A1 27 30 22 0A 01 01 16 07 73 72 76 68"
        "6F 73 74 80 0D 72 65 6D 73 69 6D 2D 73 65 72 76 65 72 81 05 31 2E 30 2E 30 0A 01 06",
    ),
    (
        "connectClientReq C23:0",
        ConnectClientReq(CLIENT, C23_0),
        "00 3B EE 07 30 38 80 01 02 81 01 00 A2 30 A2 2E 30 24 0A 01 00 16 09 6D 6F 64 65 6D"
        "68 6F 73 74 80 0D 72 65 6D 73 69 6D 2D 63 6C 69 65 6E 74 81 05 31 2E 30 2E 30 30 06"
        "02 01 17 02 01 00",
    ),
    (
        "createMappingReq",
        CreateMappingReq(C23_0, B1_1),
        "00 1D EE 07 30 1A 80 01 02 81 01 00 A2 12 A4 10 30 06 02 01 17 02 01 00 30 06 02 01"
        "01 02 01 01",
    ),
    (
        "createMappingRes ok",
        CreateMappingRes(ResultCode.OK),
        "00 10 EE 07 30 0D 80 01 02 81 01 00 A2 05 A5 03 0A 01 00",
    ),
    (
        "removeMappingReq",
        RemoveMappingReq(C23_0, B1_1),
        "00 1D EE 07 30 1A 80 01 02 81 01 00 A2 12 A6 10 30 06 02 01 17 02 01 00 30 06 02 01"
        "01 02 01 01",
    ),
    (
        "removeMappingRes ok",
        RemoveMappingRes(ResultCode.OK),
        "00 10 EE 07 30 0D 80 01 02 81 01 00 A2 05 A7 03 0A 01 00",
    ),
    (
        "removeMappingRes unknownSlotmap",
        RemoveMappingRes(ResultCode.UNKNOWN_SLOTMAP),
        "00 10 EE 07 30 0D 80 01 02 81 01 00 A2 05 A7 03 0A 01 05",
    ),
    (
        "configClientBankReq B1:1 @10.2.3.4:9999",
        ConfigClientBankReq(B1_1, BANKD_AT),
        "00 21 EE 07 30 1E 80 01 02 81 01 00 A2 16 B1 14 30 06 02 01 01 02 01 01 30 0A 80 04"
        "0A 02 03 04 02 02 27 0F",
    ),
    (
        "configClientBankReq no bankd",
        ConfigClientBankReq(B1_1, NO_BANKD),
        "00 20 EE 07 30 1D 80 01 02 81 01 00 A2 15 B1 13 30 06 02 01 01 02 01 01 30 09 80 04"
        "00 00 00 00 02 01 00",
    ),
    (
        "configClientBankRes ok",
        ConfigClientBankRes(ResultCode.OK),
        "00 10 EE 07 30 0D 80 01 02 81 01 00 A2 05 B2 03 0A 01 00",
    ),
    (
        "connectClientRes from bankd, cardNotPresent",
        ConnectClientRes(BANKD, ResultCode.CARD_NOT_PRESENT),
        "00 35 EE 07 30 32 80 01 02 81 02 09 26 A2 29 A3 27 30 22 0A 01 02 16 08 62 61 6E 6B"
        "68 6F 73 74 80 0C 72 65 6D 73 69 6D 2D 62 61 6E 6B 64 81 05 31 2E 30 2E 30 0A 01 64",
    ),
    (
        "setAtrReq",
        SetAtrReq(C23_0, ATR),
        "00 2D EE 07 30 2A 80 01 02 81 01 00 A2 22 AA 20 30 06 02 01 17 02 01 00 04 16 3B 9F"
        "96 80 1F C7 80 31 A0 73 BE 21 13 67 43 20 07 18 00 00 01 A5",
    ),
    (
        "setAtrRes ok",
        SetAtrRes(ResultCode.OK),
        "00 10 EE 07 30 0D 80 01 02 81 01 00 A2 05 AB 03 0A 01 00",
    ),
    (
        "tpduCardToModem 9F17",
        TpduCardToModem(B1_1, C23_0, bytes.fromhex("9F17")),
        "00 2F EE 07 30 2C 80 01 02 81 01 00 A2 24 AD 22 30 06 02 01 01 02 01 01 30 06 02 01"
        "17 02 01 00 30 0C 01 01 00 01 01 00 01 01 00 01 01 00 04 02 9F 17",
    ),
    (
        "clientSlotStatusInd RST VCC CLK, no cardPresent",
        ClientSlotStatusInd(
            C23_0, B1_1, SlotPhysStatus(reset_active=True, vcc_present=True, clk_active=True)
        ),
        "00 28 EE 07 30 25 80 01 02 81 01 00 A2 1D AE 1B 30 06 02 01 17 02 01 00 30 06 02 01"
        "01 02 01 01 30 09 80 01 FF 81 01 FF 82 01 FF",
    ),
    (
        "resetStateRes ok",
        ResetStateRes(ResultCode.OK),
        "00 10 EE 07 30 0D 80 01 02 81 01 00 A2 05 B4 03 0A 01 00",
    ),
    (
        "errorInd",
        ErrorInd(
            ComponentType.REMSIM_BANKD,
            ErrorSeverity.MAJOR,
            ErrorCode.UNKNOWN_CLIENT_CONNECTED,
            client_slot=C23_0,
            error_string="no map",
        ),
        "00 26 EE 07 30 23 80 01 02 81 01 00 A2 1B B0 19 0A 01 02 0A 01 02 0A 01 01 A1 06 02"
        "01 17 02 01 00 82 06 6E 6F 20 6D 61 70",
    ),
    (
        "configClientIdReq",
        ConfigClientIdReq(C23_0),
        "00 15 EE 07 30 12 80 01 02 81 01 00 A2 0A A8 08 30 06 02 01 17 02 01 00",
    ),
    (
        "configClientBankReq ipv6 ::1 port 40000",
        ConfigClientBankReq(B1_1, IpPort(ipaddress.IPv6Address("::1"), 40000)),
        "00 2E EE 07 30 2B 80 01 02 81 01 00 A2 23 B1 21 30 06 02 01 01 02 01 01 30 17 81 10"
        "00 00 00 00 00 00 00 00 00 00 00 00 00 00 00 01 02 03 00 9C 40",
    ),
]


@pytest.mark.parametrize(
    ("msg", "frame_hex"), [c[1:] for c in CATALOGUE], ids=[c[0] for c in CATALOGUE]
)
def test_specification_catalogue(msg: Message, frame_hex: str) -> None:
    frame = bytes.fromhex(frame_hex)
    pdu = msg if isinstance(msg, RsproPdu) else RsproPdu(msg)
    assert rspro_frame(encode(pdu)) == frame
    (ipa_frame,) = IpaFramer().feed(frame)
    assert decode(ipa_frame.payload[1:]) == pdu


def test_specification_catalogue_long_form_lengths() -> None:
    """tpduModemToCard with 200 data bytes: the catalogue gives the first bytes."""
    pdu = RsproPdu(TpduModemToCard(C23_0, B1_1, bytes(range(200))))
    frame = rspro_frame(encode(pdu))
    prefix = "00 F9 EE 07 30 81 F5 80 01 02 81 01 00 A2 81 EC AC 81 E9 30 06 02 01 17"
    assert frame.startswith(bytes.fromhex(prefix))
    assert len(frame) == 0xF9 + 3
    assert decode(frame[4:]) == pdu


def test_ccm_frames_of_the_catalogue() -> None:
    assert (
        bytes.fromhex("0001FE00"),
        bytes.fromhex("0001FE01"),
        bytes.fromhex("0001FE06"),
    ) == (ipa.PING, ipa.PONG, ipa.ID_ACK)
