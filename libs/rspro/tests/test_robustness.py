"""Bad input: whatever the bytes, rspro gives frames/PDUs/events or raises an RsproError
subclass, never another exception and never a hang (hypothesis on random bytes and on
mutated reference frames; the long run is the atheris target in libs/rspro/fuzz/)."""

from __future__ import annotations

import contextlib
import datetime
import io
import json
from functools import cache
from pathlib import Path

import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from rspro import (
    IpaFramer,
    IpaFramingError,
    RsproConnection,
    RsproDecodeError,
    RsproEncodeError,
    RsproError,
    cli,
    decode,
    encode,
    pcap,
)

REFERENCE = Path(__file__).resolve().parents[3].parent / "shared/reference/upstream-1.0.0"
SETTINGS = settings(
    max_examples=300,
    deadline=datetime.timedelta(seconds=2),  # a hang fails the example
    suppress_health_check=[HealthCheck.too_slow],
)

# the frames of the specification's catalogue, used when the recordings are absent
_SPEC_FRAMES = [
    "0001fe00",
    "0001fe01",
    "000dee07300a800102810100a202b300",
    "0010ee07300d800102810100a205a5030a0100",
    "0021ee07301e800102810100a216b1143006020101020101300a80040a0203040202270f",
    "0034ee073031800102810100a229ac2730060201170201003006020101020101300c010100010100010100"
    "0101000407a0a40000023f00",
    "0028ee073025800102810100a21dae1b3006020117020100300602010102010130098001ff8101ff8201ff",
]


@cache
def reference_frames() -> list[bytes]:
    path = REFERENCE / "messages.jsonl"
    if not path.exists():
        return [bytes.fromhex(h) for h in _SPEC_FRAMES]
    hexes = {json.loads(line)["raw_hex"] for line in path.read_text().splitlines()}
    return [bytes.fromhex(h) for h in sorted(hexes)]


@st.composite
def mutated(draw: st.DrawFn, originals: st.SearchStrategy[bytes]) -> bytes:
    """A valid input with a few bit flips, byte changes, insertions, deletions, cuts."""
    data = bytearray(draw(originals))
    for _ in range(draw(st.integers(1, 4))):
        kind = draw(st.sampled_from(["flip", "set", "insert", "delete", "truncate"]))
        at = draw(st.integers(0, max(len(data) - 1, 0)))
        if kind == "flip" and data:
            data[at] ^= 1 << draw(st.integers(0, 7))
        elif kind == "set" and data:
            data[at] = draw(st.sampled_from([0x00, 0x01, 0x7F, 0x80, 0x81, 0x82, 0xFF]))
        elif kind == "insert":
            data[at:at] = draw(st.binary(min_size=1, max_size=4))
        elif kind == "delete" and data:
            del data[at : at + draw(st.integers(1, 4))]
        elif kind == "truncate":
            del data[at:]
    return bytes(data)


frames = st.sampled_from(reference_frames())
pdus = frames.filter(lambda f: f[2] == 0xEE).map(lambda f: f[4:])
frame_streams = st.lists(st.one_of(mutated(frames), frames), min_size=1, max_size=6).map(b"".join)


def check_decode(data: bytes) -> None:
    with contextlib.suppress(RsproDecodeError):
        decode(data)


@SETTINGS
@given(st.binary(max_size=600))
def test_decode_random_bytes(data: bytes) -> None:
    check_decode(data)


@SETTINGS
@given(mutated(pdus))
def test_decode_mutated_pdus(data: bytes) -> None:
    check_decode(data)


@SETTINGS
@given(st.one_of(st.binary(max_size=600), frame_streams), st.integers(1, 64))
def test_framer(data: bytes, chunk: int) -> None:
    framer = IpaFramer()
    out = b""
    try:
        for i in range(0, len(data), chunk):
            out += b"".join(f.to_bytes() for f in framer.feed(data[i : i + chunk]))
    except IpaFramingError:
        return
    # every byte is accounted for: zero-length frames are the only thing dropped
    assert len(out) + framer.buffered <= len(data)
    assert data.startswith(out) or b"\x00\x00" in data


@SETTINGS
@given(st.one_of(st.binary(max_size=600), frame_streams), st.integers(1, 64), st.booleans())
def test_connection(data: bytes, chunk: int, initiator: bool) -> None:
    conn = RsproConnection(initiator=initiator)
    conn.start(0.0)
    try:
        for i in range(0, len(data), chunk):
            conn.receive_data(data[i : i + chunk], now=float(i))
            conn.handle_timeout(float(i))
    except IpaFramingError:
        pass
    assert isinstance(conn.data_to_send(), bytes)


@SETTINGS
@given(st.one_of(st.binary(max_size=300), frame_streams))
def test_cli_decoder(data: bytes) -> None:
    for item in cli._split(data):
        json.dumps(item)


@cache
def pcap_prefix() -> bytes:
    path = REFERENCE / "s1_basic_mapping.pcap"
    return path.read_bytes()[:6000] if path.exists() else b""


@SETTINGS
@given(st.data())
def test_pcap_reader(data: st.DataObject) -> None:
    if not pcap_prefix():
        pytest.skip("no reference recordings")
    raw = data.draw(st.one_of(st.binary(max_size=200), mutated(st.just(pcap_prefix()))))
    try:
        for _ in pcap.ipa_messages(io.BytesIO(raw), ports=range(65536)):
            pass
    except RsproError:
        pass


@SETTINGS
@given(mutated(pdus))
@example(  # bank slot number -1: decodes (as upstream's decoder would) and must re-encode
    bytes.fromhex(
        "3031800102810100a229ac27300602011702010030060201010201ff"
        "300c0101000101000101000101000407a0a40000023f00"
    )
)
def test_what_decodes_reencodes_and_decodes_to_the_same(data: bytes) -> None:
    try:
        pdu = decode(data)
    except RsproDecodeError:
        return
    try:
        again = encode(pdu)
    except RsproEncodeError:
        return
    assert decode(again) == pdu
