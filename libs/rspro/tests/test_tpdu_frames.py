"""``rspro.tpdu.TpduFrames``, the APDU hot path's pre-encoded frames: what it builds is byte
for byte what ``rspro_frame(encode(...))`` builds, and what it parses is exactly what the
general path (``IpaFramer`` + ``decode``) decodes to the same message; anything else it
leaves to the general path (``None``)."""

from __future__ import annotations

import asyncio

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from rspro import (
    BankSlot,
    ClientSlot,
    IpaFramer,
    RsproPdu,
    RsproStream,
    TpduCardToModem,
    TpduFlags,
    TpduModemToCard,
    decode,
    encode,
    open_connection,
    rspro_frame,
    start_server,
)
from rspro.tpdu import TpduFrames

C23, B1 = ClientSlot(23, 0), BankSlot(1, 0)
SELECT = bytes.fromhex("a0a40000023f00")

ids = st.integers(0, 2**31 - 1)
clients = st.builds(ClientSlot, ids, ids)
banks = st.builds(BankSlot, ids, ids)
apdus = st.binary(min_size=0, max_size=300)
flags = st.builds(TpduFlags, st.booleans(), st.booleans(), st.booleans(), st.booleans())
tags = st.integers(0, 2**31 - 1)


def frame_of(msg: TpduModemToCard | TpduCardToModem, version: int = 2, tag: int = 0) -> bytes:
    return rspro_frame(encode(RsproPdu(msg, version, tag)))


def general(frame: bytes) -> RsproPdu:
    """What the general receive path makes of one frame."""
    (ipa,) = IpaFramer().feed(frame)
    return decode(ipa.payload[1:])


def test_a_select_and_its_answer_as_recorded() -> None:
    frames = TpduFrames(C23, B1)
    request = bytes.fromhex(
        "0034ee073031800102810100a229ac2730060201170201003006020101020100"
        "300c0101000101000101000101000407a0a40000023f00"
    )
    answer = bytes.fromhex(
        "002fee07302c800102810100a224ad2230060201010201003006020117020100"
        "300c01010001010001010001010004029f16"
    )
    assert frames.modem_to_card(SELECT) == request
    assert frames.parse_modem_to_card(request) == SELECT
    assert frames.card_to_modem(b"\x9f\x16") == answer
    assert frames.parse_card_to_modem(answer) == b"\x9f\x16"


@settings(max_examples=300, deadline=None)
@given(client=clients, bank=banks, data=apdus)
def test_built_frames_are_the_general_encoding(
    client: ClientSlot, bank: BankSlot, data: bytes
) -> None:
    frames = TpduFrames(client, bank)
    assert frames.card_to_modem(data) == frame_of(TpduCardToModem(bank, client, data))
    assert frames.modem_to_card(data) == frame_of(TpduModemToCard(client, bank, data))
    assert frames.card_to_modem(data) == frame_of(TpduCardToModem(bank, client, data))  # cached


@settings(max_examples=300, deadline=None)
@given(client=clients, bank=banks, data=apdus, f=flags, version=st.integers(0, 127), tag=tags)
def test_parsed_frames_decode_to_the_same_tpdu(
    client: ClientSlot, bank: BankSlot, data: bytes, f: TpduFlags, version: int, tag: int
) -> None:
    frames = TpduFrames(client, bank)
    m2c = frame_of(TpduModemToCard(client, bank, data, f), version, tag)
    c2m = frame_of(TpduCardToModem(bank, client, data, f), version, tag)
    fast = tag < 128  # a one-byte version and tag are the fast path's; others decode
    assert frames.parse_modem_to_card(m2c) == (data if fast else None)
    assert frames.parse_card_to_modem(c2m) == (data if fast else None)
    assert general(m2c).msg == TpduModemToCard(client, bank, data, f)
    # the other direction, or other slots, are not these frames' TPDUs
    assert frames.parse_modem_to_card(c2m) is None
    assert frames.parse_card_to_modem(m2c) is None


@settings(max_examples=200, deadline=None)
@given(data=apdus, other=clients)
def test_another_slot_pair_is_not_fast(data: bytes, other: ClientSlot) -> None:
    frames = TpduFrames(C23, B1)
    frame = frame_of(TpduModemToCard(other, B1, data))
    assert frames.parse_modem_to_card(frame) == (data if other == C23 else None)


@settings(max_examples=500, deadline=None)
@given(data=apdus, position=st.integers(0, 400), value=st.integers(0, 255))
def test_a_frame_accepted_after_any_byte_change_still_decodes_to_its_apdu(
    data: bytes, position: int, value: int
) -> None:
    """One byte changed anywhere: either the fast path refuses the frame, or the general
    path decodes it to a TpduModemToCard between the same slots with the same APDU."""
    frames = TpduFrames(C23, B1)
    frame = bytearray(frame_of(TpduModemToCard(C23, B1, data)))
    frame[position % len(frame)] = value
    mangled = bytes(frame)
    apdu = frames.parse_modem_to_card(mangled)
    if apdu is not None:
        msg = general(mangled).msg
        assert isinstance(msg, TpduModemToCard)
        assert (msg.from_client_slot, msg.to_bank_slot, msg.data) == (C23, B1, apdu)


@pytest.mark.parametrize(
    "frame",
    [
        b"",
        b"\x00\x03\xee\x07\x30",
        frame_of(TpduModemToCard(C23, B1, SELECT))[:-1],  # cut short
        frame_of(TpduModemToCard(C23, B1, SELECT)) + b"\x00",  # a byte too many
        frame_of(TpduModemToCard(C23, B1, SELECT), tag=2342),  # two-byte tag
        frame_of(TpduModemToCard(C23, B1, SELECT)).replace(b"\x01\x01\x00", b"\x01\x01\x01", 1),
    ],
)
def test_what_is_not_fast(frame: bytes) -> None:
    assert TpduFrames(C23, B1).parse_modem_to_card(frame) is None


async def test_streams_send_and_receive_tpdus_as_the_general_path_does() -> None:
    """``RsproStream`` on both ends: the TPDUs on the wire are the general encoding, and the
    PDUs delivered equal what ``decode`` gives, flags and envelopes included (those it does
    not pre-encode take the general path)."""
    seen: list[bytes] = []
    received: list[RsproPdu] = []

    async def bankd(stream: RsproStream) -> None:
        original = stream.data_received

        def tap(data: bytes) -> None:
            seen.append(data)
            original(data)

        stream.data_received = tap  # type: ignore[method-assign]
        async for pdu in stream:
            received.append(pdu)
            msg = pdu.msg
            assert isinstance(msg, TpduModemToCard)
            stream.send(TpduCardToModem(B1, C23, msg.data[::-1], msg.flags))

    server = await start_server(bankd, "127.0.0.1", 0, keepalive=None)
    port = server.sockets[0].getsockname()[1]
    client = await open_connection("127.0.0.1", port, keepalive=None)
    flagged = TpduFlags(True, False, True, False)
    sent = [
        TpduModemToCard(C23, B1, SELECT),
        TpduModemToCard(C23, B1, b"\x00\x84\x00\x00\x80"),
        TpduModemToCard(C23, B1, SELECT, flagged),
        TpduModemToCard(C23, B1, bytes(range(255))),
    ]
    try:
        for msg in sent:
            client.send(msg)
            answer = await asyncio.wait_for(client.recv(), 5)
            assert answer == RsproPdu(TpduCardToModem(B1, C23, msg.data[::-1], msg.flags))
    finally:
        await client.aclose()
        server.close()
        await server.wait_closed()
    assert [pdu.msg for pdu in received] == sent
    assert b"".join(seen) == b"".join(frame_of(msg) for msg in sent)
