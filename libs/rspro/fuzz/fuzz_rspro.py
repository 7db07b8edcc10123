"""Coverage-guided fuzz target (atheris / libFuzzer) for everything in rspro that eats bytes.

The contract under test: whatever the bytes, the PDU decoder, the IPA framer, the sans-IO
connection, the pcap reader and the CLI's hex decoder return results or raise an
``RsproError`` subclass; any other exception (or a hang, see ``-timeout``) is a crash.
The first input byte picks the target, the rest is its input.

    uv run --no-sync --with atheris python libs/rspro/fuzz/fuzz_rspro.py --seed-corpus C
    uv run --no-sync --with atheris python libs/rspro/fuzz/fuzz_rspro.py \\
        -atheris_runs=1000000 -timeout=5 -max_len=1400 C

``RSPRO_FUZZ_ROUNDTRIP=1`` adds a stricter property: a PDU that decodes re-encodes
(or raises RsproEncodeError) and decodes again to the same value.
"""

from __future__ import annotations

import io
import json
import os
import struct
import sys
from pathlib import Path

import atheris

with atheris.instrument_imports(include=["rspro", "asn1tools"]):
    import rspro
    from rspro import cli, ipa, pcap
    from rspro.connection import RsproConnection

ROUNDTRIP = os.environ.get("RSPRO_FUZZ_ROUNDTRIP") == "1"
REFERENCE = Path(__file__).resolve().parents[3].parent / "shared/reference/upstream-1.0.0"

# classic pcap, little endian, µs, Ethernet: target 3 appends records to this header
PCAP_HEADER = struct.pack("<IHHiIII", 0xA1B2C3D4, 2, 4, 0, 0, 65535, 1)


def _decode(data: bytes) -> None:
    try:
        pdu = rspro.decode(data)
    except rspro.RsproDecodeError:
        return
    if ROUNDTRIP:
        try:
            again = rspro.encode(pdu)
        except rspro.RsproEncodeError:
            return
        assert rspro.decode(again) == pdu, (pdu, again.hex())


def _connection(data: bytes) -> None:
    # the first byte cuts the rest into chunks: any segmentation must give the same result
    step = data[0] % 16 + 1 if data else 1
    for initiator in (True, False):
        conn = RsproConnection(initiator=initiator)
        conn.start(0.0)
        try:
            for i in range(1, len(data), step):
                conn.receive_data(data[i : i + step], float(i))
                conn.handle_timeout(float(i))
        except rspro.RsproError:
            pass
        conn.data_to_send()


def _framer(data: bytes) -> None:
    framer = ipa.IpaFramer()
    try:
        for frame in framer.feed(data):
            assert frame.to_bytes() in data
    except rspro.IpaFramingError:
        pass


def _pcap(data: bytes) -> None:
    try:
        for _ in pcap.ipa_messages(io.BytesIO(PCAP_HEADER + data), ports=range(65536)):
            pass
    except rspro.RsproError:
        pass


def _cli(data: bytes) -> None:
    for item in cli._split(data):
        json.dumps(item)


TARGETS = (_decode, _connection, _framer, _pcap, _cli)


def test_one_input(data: bytes) -> None:
    if data:
        TARGETS[data[0] % len(TARGETS)](data[1:])


def write_seed_corpus(directory: Path) -> int:
    """Every distinct frame and PDU of the reference recordings, once per target."""
    seeds: set[bytes] = set()
    for line in (REFERENCE / "messages.jsonl").read_text().splitlines():
        record = json.loads(line)
        raw = bytes.fromhex(record["raw_hex"])
        seeds.add(bytes([1]) + bytes([3]) + raw)
        seeds.add(bytes([2]) + raw)
        seeds.add(bytes([4]) + raw)
        if "rspro_hex" in record:
            seeds.add(bytes([0]) + bytes.fromhex(record["rspro_hex"]))
    first = next(pcap.read_packets(REFERENCE / "s1_basic_mapping.pcap"))
    for packet in pcap.read_packets(REFERENCE / "s1_basic_mapping.pcap"):
        if pcap.parse_tcp(packet) is not None and packet.number < 200:
            n = len(packet.data)
            ts = packet.time - first.time
            seeds.add(bytes([3]) + struct.pack("<IIII", int(ts), 0, n, n) + packet.data)
    directory.mkdir(parents=True, exist_ok=True)
    for i, seed in enumerate(sorted(seeds)):
        (directory / f"seed-{i:04d}").write_bytes(seed)
    return len(seeds)


def main() -> None:
    if len(sys.argv) == 3 and sys.argv[1] == "--seed-corpus":
        print(write_seed_corpus(Path(sys.argv[2])), "seeds written")
        return
    atheris.Setup(sys.argv, test_one_input)
    atheris.Fuzz()


if __name__ == "__main__":
    main()
