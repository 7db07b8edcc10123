"""Messages from bulk IN packets (simtrace2-cardem.md §2), sans-IO: the firmware sends each
message as one transfer of 64-byte packets, with a zero-length packet only after a message
of exactly 64 bytes; a short packet ends a transfer, a full one does not."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from remsim_client.st2.framing import PACKET_SIZE, MessageAssembler
from remsim_client.st2.protocol import (
    Config,
    DataFlags,
    Message,
    ProtocolError,
    Pts,
    RxData,
    Status,
    StatusFlags,
    encode,
)

HDR = RxData(DataFlags.TPDU_HDR, bytes.fromhex("a0d60000f2"))
CONFIG = Config(1, 0, 0x03)
PTS = Pts(4, bytes.fromhex("ff109679"), bytes.fromhex("ff109679"))


def command_data(length: int) -> RxData:
    """RX_DATA carrying ``length`` command data bytes: 14 + length bytes on the USB."""
    return RxData(DataFlags.FINAL, bytes(i & 0xFF for i in range(length)))


def firmware_packets(data: bytes) -> list[bytes]:
    """One message as the firmware sends it."""
    packets = [data[i : i + PACKET_SIZE] for i in range(0, len(data), PACKET_SIZE)]
    return [*packets, b""] if len(data) == PACKET_SIZE else packets


def feed_all(packets: list[bytes]) -> list[Message | ProtocolError]:
    assembler = MessageAssembler()
    out = [item for packet in packets for item in assembler.feed(packet)]
    assert assembler.pending == 0
    return out


@pytest.mark.parametrize("length", [0, 1, 49, 50, 113, 114, 178, 242, 255])
def test_command_data_of_every_size_is_one_message(length: int) -> None:
    """50 bytes make a 64-byte message (then a zero-length packet); 114, 178 and 242 make
    128, 192 and 256 bytes, which end on a full packet with nothing after it."""
    msg = command_data(length)
    packets = firmware_packets(encode(msg))
    assert feed_all(packets) == [msg]


def test_a_message_ending_on_a_full_packet_is_complete_at_once() -> None:
    """No zero-length packet and no next message needed: msg_len says it is complete."""
    assembler = MessageAssembler()
    data = encode(command_data(114))
    assert len(data) == 128
    assert assembler.feed(data[:64]) == []
    assert assembler.feed(data[64:]) == [command_data(114)]


def test_the_next_message_may_follow_a_full_packet_in_the_same_transfer() -> None:
    packets = firmware_packets(encode(command_data(178))) + firmware_packets(encode(HDR))
    assert len(packets) == 4  # 64 + 64 + 64, then the header's short packet
    assert feed_all(packets) == [command_data(178), HDR]


def test_one_message_over_three_packets() -> None:
    assembler = MessageAssembler()
    packets = firmware_packets(encode(command_data(178)))
    assert [len(p) for p in packets] == [64, 64, 64]
    assert [assembler.feed(p) for p in packets] == [[], [], [command_data(178)]]


def test_several_messages_in_one_packet() -> None:
    packet = encode(PTS) + encode(HDR) + encode(CONFIG)
    assert len(packet) == 21 + 19 + 14
    assert feed_all([packet]) == [PTS, HDR, CONFIG]


def test_messages_across_packet_boundaries() -> None:
    """A device that packs messages (the firmware does not) is understood as well."""
    messages: list[Message] = [PTS, command_data(100), HDR, Status(StatusFlags.VCC_PRESENT)]
    data = b"".join(encode(m) for m in messages)
    packets = [data[i : i + PACKET_SIZE] for i in range(0, len(data), PACKET_SIZE)]
    assert feed_all(packets) == messages


def test_a_zero_length_packet_is_nothing() -> None:
    assert MessageAssembler().feed(b"") == []


def test_a_transfer_ending_inside_a_message_drops_it() -> None:
    assembler = MessageAssembler()
    data = encode(command_data(100))
    assert assembler.feed(data[:64]) == []
    (error,) = assembler.feed(data[64:80])  # short: the device's transfer ended here
    assert isinstance(error, ProtocolError)
    assert "transfer ended inside a message" in str(error)
    assert assembler.pending == 0
    assert assembler.feed(encode(HDR)) == [HDR]  # the next transfer starts afresh


def test_a_bad_msg_len_skips_the_rest_of_the_transfer() -> None:
    assembler = MessageAssembler()
    garbage = bytes([1, 6, 0, 0, 0, 0, 3, 0]) + bytes(56)  # msg_len 3 < header
    (error,) = assembler.feed(garbage)
    assert isinstance(error, ProtocolError) and "msg_len 3" in str(error)
    assert assembler.feed(bytes(64)) == []  # still the same (bad) transfer
    assert assembler.feed(bytes(10)) == []  # its short packet ends it
    assert assembler.feed(encode(HDR)) == [HDR]


def test_a_well_framed_message_with_a_bad_payload_does_not_stop_the_others() -> None:
    bad = bytes([1, 6, 0, 0, 0, 0, 9, 0, 0])  # RX_DATA with 1 payload byte
    items = feed_all([bad + encode(HDR)])
    assert isinstance(items[0], ProtocolError) and bad.hex() in str(items[0])
    assert items[1:] == [HDR]


def test_a_packet_longer_than_the_endpoints_is_a_programming_error() -> None:
    with pytest.raises(ValueError, match="65 bytes"):
        MessageAssembler().feed(bytes(65))


_messages = st.lists(
    st.one_of(
        st.integers(0, 255).map(command_data),
        st.just(HDR),
        st.just(PTS),
        st.just(CONFIG),
        st.builds(Status, st.sampled_from(list(StatusFlags))),
    ),
    max_size=8,
)


@given(_messages)
def test_any_sequence_of_firmware_messages_comes_out_as_sent(messages: list[Message]) -> None:
    packets = [p for m in messages for p in firmware_packets(encode(m))]
    assert feed_all(packets) == messages
