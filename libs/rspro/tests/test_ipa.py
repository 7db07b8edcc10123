"""IPA framing (rspro-wire.md §2): sans-IO framer, frame builders, size limits."""

from __future__ import annotations

import itertools

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from rspro import IpaFrame, IpaFramer, IpaFramingError, RsproEncodeError, ipa, rspro_frame

RESET_STATE_REQ = bytes.fromhex("300a800102810100a202b300")
RESET_STATE_REQ_FRAME = bytes.fromhex("000dee07300a800102810100a202b300")


def test_rspro_frame_layout() -> None:
    """len = PDU + extension byte, big endian; proto 0xEE; extension 0x07."""
    assert rspro_frame(RESET_STATE_REQ) == RESET_STATE_REQ_FRAME
    assert (ipa.IPA_PROTO_OSMO, ipa.IPA_PROTO_CCM, ipa.IPA_EXT_RSPRO) == (0xEE, 0xFE, 0x07)
    assert IpaFrame(0xEE, b"\x07" + RESET_STATE_REQ).to_bytes() == RESET_STATE_REQ_FRAME


def test_length_is_big_endian_and_excludes_the_header() -> None:
    frame = rspro_frame(bytes(300))
    assert frame[:3] == b"\x01\x2d\xee"  # 301 = 0x012D
    assert len(frame) == 3 + 301


def test_ccm_frames() -> None:
    assert ipa.PING == b"\x00\x01\xfe\x00"
    assert ipa.PONG == b"\x00\x01\xfe\x01"
    assert ipa.ID_ACK == b"\x00\x01\xfe\x06"
    assert ipa.ccm_frame(ipa.CcmType.ID_GET, b"\x01\x08") == b"\x00\x03\xfe\x04\x01\x08"


def test_id_resp_answers_with_the_all_zero_identity() -> None:
    """List of (2-byte length, tag, NUL-terminated string); length counts tag + string + NUL."""
    asked = ipa.parse_id_get(bytes([1, ipa.IdTag.UNIT, 1, ipa.IdTag.MACADDR, 1, ipa.IdTag.SERNR]))
    assert asked == [ipa.IdTag.UNIT, ipa.IdTag.MACADDR, ipa.IdTag.SERNR]
    body = (
        b"\x00\x07\x08" + b"0/0/0\0"
        + b"\x00\x13\x07" + b"00:00:00:00:00:00\0"
        + b"\x00\x02\x00" + b"\0"
    )  # fmt: skip
    assert ipa.id_resp_frame(asked) == len(body + b"\x05").to_bytes(2, "big") + b"\xfe\x05" + body


def test_largest_frame_we_send_is_1020_bytes() -> None:
    assert len(rspro_frame(bytes(1016))) == ipa.MAX_SEND_FRAME == 1020
    with pytest.raises(RsproEncodeError):
        rspro_frame(bytes(1017))


# --- the framer ---------------------------------------------------------------------------

FRAMES = [ipa.PING, RESET_STATE_REQ_FRAME, ipa.PONG, rspro_frame(bytes(range(200))), ipa.ID_ACK]
STREAM = b"".join(FRAMES)


def test_many_frames_in_one_chunk() -> None:
    assert [f.to_bytes() for f in IpaFramer().feed(STREAM)] == FRAMES


def test_one_byte_at_a_time() -> None:
    framer = IpaFramer()
    got = []
    for i in range(len(STREAM)):
        got += framer.feed(STREAM[i : i + 1])
        assert framer.buffered == len(STREAM[: i + 1]) - sum(len(f.to_bytes()) for f in got)
    assert [f.to_bytes() for f in got] == FRAMES


@settings(max_examples=200)
@given(st.lists(st.integers(1, len(STREAM)), max_size=30))
def test_any_segmentation(cuts: list[int]) -> None:
    bounds = sorted({0, len(STREAM), *cuts})
    framer = IpaFramer()
    got = [f for a, b in itertools.pairwise(bounds) for f in framer.feed(STREAM[a:b])]
    assert [f.to_bytes() for f in got] == FRAMES
    assert framer.buffered == 0


def test_frames_split_in_the_header() -> None:
    framer = IpaFramer()
    assert framer.feed(b"\x00") == []
    assert framer.feed(b"\x01") == []
    assert framer.feed(b"\xfe") == []
    assert framer.feed(b"\x00\x00") == [IpaFrame(0xFE, b"\x00")]
    assert framer.buffered == 1


def test_zero_length_frames_carry_nothing_and_are_dropped() -> None:
    assert IpaFramer().feed(b"\x00\x00\xee" + ipa.PING) == [IpaFrame(0xFE, b"\x00")]


def test_frames_of_any_protocol_are_returned_for_the_caller_to_judge() -> None:
    assert IpaFramer().feed(b"\x00\x02\x42\x01\x02") == [IpaFrame(0x42, b"\x01\x02")]


def test_accepts_frames_up_to_1200_bytes_by_default() -> None:
    """The 1.0.0 receivers' limit: len + 3 <= 1200."""
    payload = bytes(1197)
    frame = len(payload).to_bytes(2, "big") + b"\xee" + payload
    assert IpaFramer().feed(frame) == [IpaFrame(0xEE, payload)]


def test_an_oversized_frame_is_a_clear_error_as_soon_as_its_header_is_in() -> None:
    framer = IpaFramer()
    assert framer.feed(b"\x04") == []
    with pytest.raises(IpaFramingError, match="1201 bytes exceeds the limit of 1200"):
        framer.feed(b"\xae\xee")


def test_the_limit_is_configurable() -> None:
    framer = IpaFramer(max_frame_size=1024)  # HEAD's receivers
    assert framer.max_frame_size == 1024
    assert framer.feed(b"\x03\xfd\xee" + bytes(1021)) == [IpaFrame(0xEE, bytes(1021))]
    with pytest.raises(IpaFramingError):
        framer.feed(b"\x03\xfe\xee")
    assert IpaFramer(max_frame_size=0xFFFF + 3).feed(b"\xff\xff\xee" + bytes(0xFFFF))
