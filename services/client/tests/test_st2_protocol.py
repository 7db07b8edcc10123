"""SIMtrace2 cardem message codec: the byte examples of simtrace2-cardem.md §9, round trips,
and bad input."""

import contextlib

import pytest
from hypothesis import given
from hypothesis import strategies as st

from remsim_client.st2.protocol import (
    CardInsert,
    Config,
    DataFlags,
    Message,
    ModemReset,
    ModemStatusRequest,
    ProtocolError,
    Pts,
    ResetAction,
    RxData,
    SetAtr,
    SimSelect,
    Status,
    StatusFlags,
    StatusRequest,
    TxData,
    Unknown,
    decode,
    encode,
    iter_messages,
)

USIM_ATR = bytes.fromhex("3b9f96801fc78031a073be21136743200718000001a5")

# (message, hex) pairs straight from the spec's worked examples.
EXAMPLES: list[tuple[Message, str]] = [
    (Config(0x1, 0, 0), "01 08 00 00 00 00 0e 00  01 00 00 00  00  00"),
    (Config(0x1, 0, 0x03), "01 08 00 00 00 00 0e 00  01 00 00 00  00  03"),
    (SimSelect(True), "02 02 00 00 00 00 09 00  01"),
    (SimSelect(False), "02 02 00 00 00 00 09 00  00"),
    (SetAtr(bytes.fromhex("3b00")), "01 02 00 00 00 00 0b 00  02  3b 00"),
    (SetAtr(USIM_ATR), "01 02 00 00 00 00 1f 00  16" + USIM_ATR.hex()),
    (CardInsert(True), "01 05 00 00 00 00 09 00  01"),
    (CardInsert(False), "01 05 00 00 00 00 09 00  00"),
    (ModemReset(ResetAction.PULSE, 300), "02 01 00 00 00 00 0b 00  02  2c 01"),
    (
        Status(StatusFlags(0x13), 0, 1, 1, 10, 9600),
        "01 04 00 00 00 00 15 00  13 00 00 00  00 00  01  01  0a  80 25 00 00",
    ),
    (
        Status(StatusFlags(0x03), 0, 1, 1, 10, 9600),
        "01 04 00 00 00 00 15 00  03 00 00 00  00 00  01  01  0a  80 25 00 00",
    ),
    (
        Pts(4, bytes.fromhex("ff109679"), bytes.fromhex("ff109679")),
        "01 07 00 00 00 00 15 00  04  ff 10 96 79 00 00  ff 10 96 79 00 00",
    ),
    (
        RxData(DataFlags.TPDU_HDR, bytes.fromhex("a0a4000002")),
        "01 06 00 00 00 00 13 00  01 00 00 00  05 00  a0 a4 00 00 02",
    ),
    (TxData(DataFlags.PB_AND_RX, b"\xa4"), "01 01 00 00 00 00 0f 00  08 00 00 00  01 00  a4"),
    (
        RxData(DataFlags.FINAL, bytes.fromhex("3f00")),
        "01 06 00 00 00 00 10 00  02 00 00 00  02 00  3f 00",
    ),
    (
        TxData(DataFlags.PB_AND_TX | DataFlags.FINAL, bytes.fromhex("9f17")),
        "01 01 00 00 00 00 10 00  06 00 00 00  02 00  9f 17",
    ),
    (
        TxData(DataFlags.PB_AND_TX, bytes.fromhex("b001020304")),
        "01 01 00 00 00 00 13 00  04 00 00 00  05 00  b0 01 02 03 04",
    ),
    (StatusRequest(), "01 04 00 00 00 00 08 00"),
    (ModemStatusRequest(), "02 03 00 00 00 00 08 00"),
]


@pytest.mark.parametrize(("message", "wire"), EXAMPLES)
def test_spec_examples_encode_and_decode(message: Message, wire: str) -> None:
    data = bytes.fromhex(wire)
    assert encode(message) == data
    assert decode(data) == message


def test_get_response_with_23_data_bytes() -> None:
    data = bytes(range(23))
    wire = encode(TxData(DataFlags.PB_AND_TX, b"\xc0" + data))
    assert wire[:14] == bytes.fromhex("01 01 00 00 00 00 26 00  04 00 00 00  18 00")
    assert len(wire) == 0x26


def test_a_256_byte_response_fits_the_firmware_buffer() -> None:
    wire = encode(TxData(DataFlags.PB_AND_TX, b"\xb0" + bytes(256)))
    assert len(wire) == 271


def test_pts_exposes_the_meaningful_bytes() -> None:
    pts = decode(bytes.fromhex("01 07 00 00 00 00 15 00 04 ff 10 96 79 00 00 ff 10 96 79 00 00"))
    assert isinstance(pts, Pts)
    assert pts.request == pts.response == bytes.fromhex("ff109679")


def test_config_from_an_older_host_has_only_the_features() -> None:
    assert decode(bytes.fromhex("01 08 00 00 00 00 0c 00 01 00 00 00")) == Config(1, 0, 0)


def test_unknown_class_or_type_is_kept_not_rejected() -> None:
    wire = bytes.fromhex("00 00 00 00 00 00 0a 00 be ef")
    assert decode(wire) == Unknown(0, 0, b"\xbe\xef")
    assert encode(Unknown(0, 0, b"\xbe\xef")) == wire


def test_firmware_splits_concatenated_messages_by_msg_len() -> None:
    first = encode(TxData(DataFlags.PB_AND_TX, b"\xb0" + bytes(49)))
    second = encode(TxData(DataFlags.PB_AND_TX | DataFlags.FINAL, b"\x90\x00"))
    assert len(first) == 64
    messages = list(iter_messages(first + second))
    assert [m.flags for m in messages if isinstance(m, TxData)] == [
        DataFlags.PB_AND_TX,
        DataFlags.PB_AND_TX | DataFlags.FINAL,
    ]


@pytest.mark.parametrize(
    ("wire", "complaint"),
    [
        ("01 06 00 00", "truncated header"),
        ("01 06 00 00 00 00 04 00", "shorter than the header"),
        ("01 06 00 00 00 00 13 00 01 00 00 00", "exceeds"),
        ("01 06 00 00 00 00 0e 00 01 00 00 00 05 00", "data_len 5"),
        ("01 06 00 00 00 00 0c 00 01 00 00 00", "need 6"),
        ("01 02 00 00 00 00 0a 00 05 3b", "atr_len 5"),
        ("01 04 00 00 00 00 0c 00 13 00 00 00", "need 13"),
        ("01 07 00 00 00 00 09 00 04", "PTS"),
        ("01 05 00 00 00 00 08 00", "CARDINSERT"),
        ("02 01 00 00 00 00 0a 00 02 2c", "MODEM_RESET"),
        ("02 01 00 00 00 00 0b 00 07 2c 01", "asserted"),
        ("02 02 00 00 00 00 08 00", "SIM_SELECT"),
        ("01 08 00 00 00 00 0a 00 01 00", "CONFIG"),
    ],
)
def test_bad_input_raises_protocol_error(wire: str, complaint: str) -> None:
    with pytest.raises(ProtocolError, match=complaint):
        decode(bytes.fromhex(wire))


def test_decode_rejects_trailing_bytes_but_iter_messages_splits_them() -> None:
    wire = encode(CardInsert(True)) + encode(SimSelect(True))
    with pytest.raises(ProtocolError, match="after the message"):
        decode(wire)
    assert list(iter_messages(wire)) == [CardInsert(True), SimSelect(True)]


def test_iter_messages_yields_the_good_messages_before_a_bad_one() -> None:
    messages = iter_messages(encode(CardInsert(True)) + b"\x01\x05\x00")
    assert next(messages) == CardInsert(True)
    with pytest.raises(ProtocolError):
        next(messages)


def test_pts_fields_hold_at_most_6_bytes() -> None:
    with pytest.raises(ProtocolError):
        Pts(7, bytes(7), bytes(7))


@pytest.mark.parametrize(
    "message",
    [
        TxData(DataFlags.NONE, bytes(0x10000)),
        SetAtr(bytes(256)),
        ModemReset(ResetAction.PULSE, 70000),
        Config(1 << 32),
        Status(StatusFlags.NONE, voltage_mv=-1),
    ],
)
def test_unencodable_values_raise_protocol_error(message: Message) -> None:
    with pytest.raises(ProtocolError):
        encode(message)


_bytes = st.binary(max_size=300)
_messages = st.one_of(
    st.builds(TxData, st.builds(DataFlags, st.integers(0, 0xF)), _bytes),
    st.builds(RxData, st.builds(DataFlags, st.integers(0, 0xF)), _bytes),
    st.builds(SetAtr, st.binary(max_size=55)),
    st.builds(CardInsert, st.booleans()),
    st.builds(SimSelect, st.booleans()),
    st.builds(Config, st.integers(0, 2**32 - 1), st.integers(0, 255), st.integers(0, 255)),
    st.builds(ModemReset, st.sampled_from(ResetAction), st.integers(0, 0xFFFF)),
    st.builds(
        Status,
        st.builds(StatusFlags, st.integers(0, 0x1F)),
        st.integers(0, 0xFFFF),
        st.integers(0, 15),
        st.integers(0, 15),
        st.integers(0, 255),
        st.integers(0, 2**32 - 1),
    ),
    st.builds(
        Pts, st.integers(0, 6), st.binary(min_size=6, max_size=6), st.binary(min_size=6, max_size=6)
    ),
)


@given(_messages)
def test_round_trip(message: Message) -> None:
    assert decode(encode(message)) == message


@given(st.binary(max_size=64))
def test_arbitrary_bytes_decode_or_raise_protocol_error(data: bytes) -> None:
    with contextlib.suppress(ProtocolError):
        list(iter_messages(data))
