"""vpcd protocol, card side: framing and the sans-IO connection (vpcd.md §3-§5)."""

from __future__ import annotations

import itertools

import pytest
from hypothesis import given
from hypothesis import strategies as st

from vpcd import (
    GET_ATR,
    MAX_MESSAGE,
    POWER_OFF,
    POWER_ON,
    RESET,
    Apdu,
    Control,
    MessageTooLong,
    VpcdConnection,
    frame,
)

ATR = bytes.fromhex("3b9f96801fc78031a073be21136743200718000001a5")
SELECT_MF = bytes.fromhex("a0a40000023f00")


def test_frame() -> None:
    assert frame(b"\x04") == b"\x00\x01\x04"
    assert frame(b"\x9f\x16") == b"\x00\x02\x9f\x16"
    assert frame(bytes(0xFFFF))[:2] == b"\xff\xff"
    with pytest.raises(ValueError):
        frame(b"")  # vpcd would hang waiting for zero bytes
    with pytest.raises(ValueError):
        frame(bytes(0x10000))
    with pytest.raises(MessageTooLong, match=r"1\.\.65535 bytes, not 65536"):
        frame(bytes(MAX_MESSAGE + 1))


STREAM_EVENTS: list[Control | Apdu] = [
    Control(GET_ATR),
    Control(POWER_ON),
    Control(GET_ATR),
    Apdu(SELECT_MF),
    Apdu(bytes.fromhex("00b00000")),  # 4-byte case 1 APDU, passed through verbatim
    Control(RESET),
    Control(0x07),  # unknown control: no reply either
    Apdu(bytes(300)),
    Control(POWER_OFF),
]
STREAM = b"".join(frame(e.data if isinstance(e, Apdu) else bytes([e.code])) for e in STREAM_EVENTS)


def test_feed_whole_stream() -> None:
    conn = VpcdConnection()
    assert conn.feed(STREAM) == STREAM_EVENTS
    assert conn.replies_owed == 5  # two GET ATR, three APDUs


@given(st.lists(st.integers(0, len(STREAM)), max_size=20))
def test_feed_any_slicing(cuts: list[int]) -> None:
    conn = VpcdConnection()
    events: list[Control | Apdu] = []
    bounds = [0, *sorted(cuts), len(STREAM)]
    for a, b in itertools.pairwise(bounds):
        events += conn.feed(STREAM[a:b])
    assert events == STREAM_EVENTS


def test_feed_byte_by_byte() -> None:
    conn = VpcdConnection()
    events = [e for i in range(len(STREAM)) for e in conn.feed(STREAM[i : i + 1])]
    assert events == STREAM_EVENTS


def test_replies_only_when_owed() -> None:
    conn = VpcdConnection()
    conn.feed(frame(bytes([POWER_ON])) + frame(bytes([POWER_OFF])) + frame(bytes([RESET])))
    with pytest.raises(RuntimeError):
        conn.reply(ATR)  # no unsolicited messages
    conn.feed(frame(bytes([GET_ATR])) + frame(SELECT_MF))
    assert conn.reply(ATR) == frame(ATR)
    assert conn.reply(b"\x9f\x16") == b"\x00\x02\x9f\x16"
    with pytest.raises(RuntimeError):
        conn.reply(b"\x90\x00")
