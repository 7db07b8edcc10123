"""remsim's APDU mode on the wire (docs/architecture.md, "APDU mode"): the features a client
of ours offers in its connectClientReq and a bankd of ours accepts in its connectClientRes,
SetAtrReq's protocol, and the two APDU messages. Without them, every message is the
original's, byte for byte."""

from __future__ import annotations

import asyncio

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from rspro import (
    MAX_APDU,
    MESSAGE_TYPES,
    MIN_APDU,
    REMSIM_MESSAGE_TYPES,
    ApduCardToModem,
    ApduModemToCard,
    BankSlot,
    ClientSlot,
    ComponentIdentity,
    ComponentType,
    ConnectClientReq,
    ConnectClientRes,
    IpaFramingError,
    PduReceived,
    RemsimFeatures,
    ResultCode,
    RsproConnection,
    RsproDecodeError,
    RsproEncodeError,
    RsproPdu,
    SetAtrReq,
    codec,
    decode,
    encode,
)
from rspro.codec import _to_asn, schema
from rspro.ipa import MAX_FRAME, MAX_SEND_FRAME, rspro_frame
from rspro.link import RsproLink

CLIENT = ComponentIdentity(ComponentType.REMSIM_CLIENT, "modem-1", "remsim-client", "0.1.0")
BANKD = ComponentIdentity(ComponentType.REMSIM_BANKD, "bank-1", "remsim-bankd", "0.1.0")
ATR = bytes.fromhex("3b9f96801fc78031a073be21136743200718000001a5")
C23, B1 = ClientSlot(23, 0), BankSlot(1, 0)
CASE4_SELECT = bytes.fromhex("00a4040c07a0000000871002ff")
APDU = RemsimFeatures(apdu=True)
LARGEST_IDS = ClientSlot(1023, 1023), BankSlot(1023, 1023)
LARGEST_TAG = 2**31 - 1


def der(msg: object) -> bytes:
    return encode(RsproPdu(msg))  # type: ignore[arg-type]


def test_the_apdu_messages_are_remsim_additions_clear_of_the_original_numbering() -> None:
    for cls, tag in ((ApduModemToCard, 65), (ApduCardToModem, 66)):
        assert cls in REMSIM_MESSAGE_TYPES and cls not in MESSAGE_TYPES
        assert tag == cls.TAG
    # msg [2] { apduModemToCard [65] ... }, { apduCardToModem [66] ... }
    assert der(ApduModemToCard(C23, B1, CASE4_SELECT))[10:12] == bytes.fromhex("bf41")
    assert der(ApduCardToModem(B1, C23, ResultCode.OK, b"\x90\x00"))[10:12] == bytes.fromhex("bf42")


@pytest.mark.parametrize(
    "msg",
    [
        ApduModemToCard(C23, B1, CASE4_SELECT),
        ApduModemToCard(C23, B1, bytes(4)),  # case 1: a bare header
        ApduCardToModem(B1, C23, ResultCode.OK, bytes(32768) + b"\x90\x00"),
        ApduCardToModem(B1, C23, ResultCode.CARD_UNRESPONSIVE, b"", "the card is mute"),
        ConnectClientReq(CLIENT, C23, RemsimFeatures(apdu=True)),
        ConnectClientRes(BANKD, ResultCode.OK, RemsimFeatures(apdu=True)),
        SetAtrReq(C23, ATR, protocol=1),
    ],
)
def test_round_trip(msg: object) -> None:
    assert decode(der(msg)).msg == msg


def test_without_the_additions_the_messages_are_the_originals() -> None:
    """The bytes of the reference recordings (rspro-wire.md): no features, no protocol."""
    assert der(ConnectClientReq(CLIENT, C23)) == der(ConnectClientReq(CLIENT, C23, None))
    plain = der(SetAtrReq(C23, ATR))
    assert plain.hex() == (
        "302a800102810100a222aa20300602011702010004163b9f96801fc78031a073be21136743200718000001a5"
    )
    with_protocol = der(SetAtrReq(C23, ATR, protocol=0))
    assert with_protocol.endswith(bytes.fromhex("800100"))  # [0] INTEGER 0 after the ATR


def test_the_offer_is_an_extension_addition_after_the_client_slot() -> None:
    plain = der(ConnectClientReq(CLIENT, C23))
    offered = der(ConnectClientReq(CLIENT, C23, RemsimFeatures(apdu=True)))
    # the same message with "features [0] { apdu [0] TRUE }" appended: a0 03 80 01 ff
    assert offered[-5:] == bytes.fromhex("a0038001ff")
    assert decode(plain).msg.features is None  # type: ignore[attr-defined]


def test_an_indefinite_length_message_of_another_encoder_still_decodes() -> None:
    """asn1tools would look for the additions past the end-of-contents (codec.py)."""
    ber = bytes.fromhex(
        "3080 800102 810100 a2 80 aa 80 3006020117020100 0416" + ATR.hex() + "0000 0000 0000"
    )
    assert decode(ber).msg == SetAtrReq(C23, ATR)
    ber = bytes.fromhex(
        "3080 800102 810100 a2 80 aa 80 3006020117020100 0416" + ATR.hex() + "800101 0000 0000 0000"
    )
    assert decode(ber).msg == SetAtrReq(C23, ATR, protocol=1)


def test_max_apdu_is_the_largest_that_one_ipa_frame_carries() -> None:
    """With the largest ids and operation tag, an APDU of MAX_APDU bytes fits one IPA frame
    (65,535 bytes after the length) in either direction; a response one byte longer does
    not (the response message is the larger one: it has a result)."""
    client, bank = LARGEST_IDS

    def frame(msg: object) -> bytes:
        return rspro_frame(encode(RsproPdu(msg, tag=LARGEST_TAG)), MAX_FRAME)  # type: ignore[arg-type]

    assert len(frame(ApduModemToCard(client, bank, bytes(MAX_APDU)))) <= MAX_FRAME
    error = ResultCode.CARD_TRANSMISSION_ERROR  # the largest result code
    assert len(frame(ApduCardToModem(bank, client, error, bytes(MAX_APDU)))) == MAX_FRAME
    with pytest.raises(RsproEncodeError):
        frame(ApduCardToModem(bank, client, error, bytes(MAX_APDU + 1)))
    assert MIN_APDU == 4
    # the largest extended APDUs of ISO 7816-4 are larger: they are refused, never split
    assert MAX_APDU < 4 + 3 + 65535 + 2 and MAX_APDU < 65536 + 2


def test_a_connection_sends_and_accepts_large_frames_only_once_allowed() -> None:
    bankd, client = RsproConnection(initiator=False), RsproConnection(initiator=True)
    big = ApduCardToModem(B1, C23, ResultCode.OK, bytes(32768) + b"\x90\x00")
    with pytest.raises(RsproEncodeError):  # the original's limit: about 1 KiB
        bankd.send(big)
    frame = rspro_frame(encode(RsproPdu(big)), MAX_FRAME)
    assert len(frame) > MAX_SEND_FRAME
    with pytest.raises(IpaFramingError):
        RsproConnection(initiator=True).receive_data(frame, 0.0)
    for conn in (bankd, client):
        assert not conn.large_frames
        conn.allow_large_frames()
        assert conn.large_frames
    bankd.send(big)
    (event,) = client.receive_data(bankd.data_to_send(), 0.0)
    assert isinstance(event, PduReceived) and event.pdu.msg == big


# --- the DER fast path (codec.py) against asn1tools --------------------------------------------

ids = st.integers(0, 1023)
apdu_messages = st.one_of(
    st.builds(
        ApduModemToCard,
        st.builds(ClientSlot, ids, ids),
        st.builds(BankSlot, ids, ids),
        st.binary(min_size=4, max_size=600),
    ),
    st.builds(
        ApduCardToModem,
        st.builds(BankSlot, ids, ids),
        st.builds(ClientSlot, ids, ids),
        st.sampled_from(list(ResultCode)),
        st.binary(max_size=600),
        st.none() | st.text("abc -", min_size=1, max_size=40),
    ),
)
apdu_pdus = st.builds(
    RsproPdu, apdu_messages, version=st.integers(0, 32), tag=st.integers(0, 2**31 - 1)
)


def asn1tools_encode(pdu: RsproPdu) -> bytes:
    value = {"version": pdu.version, "tag": pdu.tag, "msg": (pdu.msg.ASN_NAME, _to_asn(pdu.msg))}
    return bytes(schema().encode("RsproPDU", value))


@settings(max_examples=300, deadline=None)
@given(apdu_pdus)
def test_the_fast_path_encodes_and_decodes_as_asn1tools(pdu: RsproPdu) -> None:
    der = encode(pdu)
    assert der == asn1tools_encode(pdu)
    assert decode(der) == pdu
    value = schema().decode("RsproPDU", der)  # the general decoder agrees
    assert value["msg"][0] == pdu.msg.ASN_NAME


def test_a_large_response_takes_the_fast_path_both_ways() -> None:
    pdu = RsproPdu(ApduCardToModem(B1, C23, ResultCode.OK, LARGE := bytes(range(256)) * 128))
    der = encode(pdu)
    assert codec._decode_tpdu(der) == pdu  # the fast decoder itself, not asn1tools
    assert der == asn1tools_encode(pdu) and len(LARGE) == 32768


def test_a_truncated_apdu_message_is_a_decode_error() -> None:
    der = encode(RsproPdu(ApduModemToCard(C23, B1, CASE4_SELECT)))
    for cut in range(len(der)):
        with pytest.raises(RsproDecodeError):
            decode(der[:cut])


# --- RsproLink: the client's side of the offer -------------------------------------------------


async def link_to(answer: bytes, offer: bool) -> tuple[RsproLink, list[RsproPdu]]:
    """An RsproLink (a client's bankd link) to a peer that answers its connectClientReq with
    ``answer`` in one write; the PDUs it passed on once connected."""
    received: list[RsproPdu] = []
    connected = asyncio.Event()

    async def peer(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.read(4096)  # the connectClientReq
        writer.write(answer)
        await writer.drain()
        await reader.read()  # until the link goes

    server = await asyncio.start_server(peer, "127.0.0.1", 0)
    features = RemsimFeatures(apdu=True) if offer else None
    link = RsproLink(
        name="bankd",
        connect_req=lambda: ConnectClientReq(CLIENT, C23, features),
        peer_type=ComponentType.REMSIM_BANKD,
        on_pdu=received.append,
        on_connected=connected.set,
        keepalive=None,
    )
    link.establish("127.0.0.1", server.sockets[0].getsockname()[1])
    await asyncio.wait_for(connected.wait(), 5)
    server.close()
    return link, received


async def test_an_offer_takes_a_large_frame_right_behind_the_acceptance() -> None:
    """The acceptance and the first large answer may share a TCP segment."""
    big = ApduCardToModem(B1, C23, ResultCode.OK, bytes(32768) + b"\x90\x00")
    accept = rspro_frame(encode(RsproPdu(ConnectClientRes(BANKD, ResultCode.OK, APDU))))
    link, received = await link_to(accept + rspro_frame(encode(RsproPdu(big)), MAX_FRAME), True)
    try:
        for _ in range(100):
            if received:
                break
            await asyncio.sleep(0.01)
        assert [pdu.msg for pdu in received] == [big]
        assert link.features == APDU
    finally:
        await link.aclose()


async def test_without_an_offer_an_acceptance_counts_for_nothing() -> None:
    accept = rspro_frame(encode(RsproPdu(ConnectClientRes(BANKD, ResultCode.OK, APDU))))
    link, _ = await link_to(accept, False)
    try:
        assert link.features is None
    finally:
        await link.aclose()
