"""A small pure-Python capture reader: IPA frames out of the TCP streams of a pcap file.

Reads classic pcap (µs or ns timestamps, either byte order) and pcapng; understands
Ethernet (with VLAN tags), Linux cooked (SLL, SLL2), BSD loopback and raw IP link types,
IPv4 and IPv6. Each direction of each TCP connection is put back in sequence-number order
(retransmissions dropped, out-of-order segments held back) and fed to its own
``IpaFramer``, so frames split over segments or sharing one segment come out whole.
"""

from __future__ import annotations

import ipaddress
import struct
from collections.abc import Collection, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import BinaryIO

from .errors import IpaFramingError, RsproError
from .ipa import HEADER_SIZE, IpaFrame, IpaFramer

__all__ = [
    "DEFAULT_PORTS",
    "Endpoint",
    "IpaMessage",
    "Packet",
    "PcapError",
    "StreamError",
    "TcpSegment",
    "TcpStream",
    "ipa_messages",
    "parse_tcp",
    "read_packets",
]

DEFAULT_PORTS = (9998, 9999)
"""The server's RSPRO port and the bankd's."""

# Any 16-bit IPA length: a debugging tool shows oversized frames instead of giving up.
_MAX_FRAME = 0xFFFF + HEADER_SIZE


class PcapError(RsproError):
    """The file is not a capture this reader understands."""


# --- capture files ------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Packet:
    number: int
    """1-based, as Wireshark counts frames."""
    time: float
    """Seconds since the epoch."""
    linktype: int
    data: bytes


# magic -> (byte order, timestamp units per second)
_PCAP_MAGIC = {
    b"\xd4\xc3\xb2\xa1": ("<", 10**6),
    b"\xa1\xb2\xc3\xd4": (">", 10**6),
    b"\x4d\x3c\xb2\xa1": ("<", 10**9),
    b"\xa1\xb2\x3c\x4d": (">", 10**9),
}
_PCAPNG_SHB = 0x0A0D0D0A


def read_packets(source: str | Path | BinaryIO) -> Iterator[Packet]:
    """Every packet of a pcap or pcapng file, in file order.

    A record cut short at the end of the file (a capture that was killed) ends the
    iteration quietly; a file that is not a capture raises PcapError.
    """
    if isinstance(source, str | Path):
        with open(source, "rb") as f:
            yield from read_packets(f)
        return
    head = source.read(4)
    if head in _PCAP_MAGIC:
        yield from _read_pcap(source, *_PCAP_MAGIC[head])
    elif len(head) == 4 and int.from_bytes(head, "little") == _PCAPNG_SHB:
        yield from _read_pcapng(source, head)
    else:
        raise PcapError(f"not a pcap or pcapng file (magic {head.hex() or 'empty'})")


def _read_pcap(f: BinaryIO, order: str, units: int) -> Iterator[Packet]:
    header = f.read(20)
    if len(header) < 20:
        raise PcapError("truncated pcap file header")
    # the upper bits of the link-type word may carry FCS information
    linktype = struct.unpack(order + "HHiIII", header)[5] & 0xFFFF
    record = struct.Struct(order + "IIII")
    number = 0
    while len(raw := f.read(record.size)) == record.size:
        sec, frac, caplen, _ = record.unpack(raw)
        data = f.read(caplen)
        if len(data) < caplen:
            return
        number += 1
        # one division: the same float as the pcapng path and as tshark prints
        yield Packet(number, (sec * units + frac) / units, linktype, data)


@dataclass(slots=True)
class _Interface:
    linktype: int
    units: int = 10**6
    """Timestamp units per second."""
    offset: int = 0


def _read_pcapng(f: BinaryIO, head: bytes) -> Iterator[Packet]:
    order = "<"
    interfaces: list[_Interface] = []
    number = 0
    block_type = int.from_bytes(head, "little")
    while True:
        raw_len = f.read(4)
        if len(raw_len) < 4:
            return
        if block_type == _PCAPNG_SHB:
            # the byte-order magic that follows the length tells the section's endianness
            magic = f.read(4)
            if magic == b"\x4d\x3c\x2b\x1a":
                order = "<"
            elif magic == b"\x1a\x2b\x3c\x4d":
                order = ">"
            else:
                raise PcapError("bad pcapng byte-order magic")
            (length,) = struct.unpack(order + "I", raw_len)
            body = magic + f.read(length - 16)
            interfaces = []
        else:
            (length,) = struct.unpack(order + "I", raw_len)
            if length < 12 or length % 4:
                raise PcapError(f"bad pcapng block length {length}")
            body = f.read(length - 12)
        if len(body) < length - 12 or len(f.read(4)) < 4:
            return
        if block_type == 1:  # Interface Description Block
            interfaces.append(_interface(body, order))
        elif block_type in (2, 3, 6):  # Packet, Simple Packet, Enhanced Packet Block
            packet = _packet_block(block_type, body, order, interfaces, number + 1)
            if packet is not None:
                number += 1
                yield packet
        raw_type = f.read(4)
        if len(raw_type) < 4:
            return
        (block_type,) = struct.unpack(order + "I", raw_type)


def _interface(body: bytes, order: str) -> _Interface:
    linktype = struct.unpack_from(order + "H", body)[0]
    iface = _Interface(linktype)
    pos = 8
    while pos + 4 <= len(body):
        code, size = struct.unpack_from(order + "HH", body, pos)
        value = body[pos + 4 : pos + 4 + size]
        if code == 0:
            break
        if code == 9 and size == 1:  # if_tsresol: 10^-n, or 2^-n with the top bit set
            n = value[0]
            iface.units = 2 ** (n & 0x7F) if n & 0x80 else 10**n
        elif code == 14 and size == 8:  # if_tsoffset, in seconds
            iface.offset = struct.unpack(order + "q", value)[0]
        pos += 4 + (size + 3) // 4 * 4
    return iface


def _packet_block(
    kind: int, body: bytes, order: str, interfaces: list[_Interface], number: int
) -> Packet | None:
    if kind == 3:  # Simple Packet Block: interface 0, no timestamp
        if not interfaces:
            return None
        (origlen,) = struct.unpack_from(order + "I", body)
        return Packet(number, 0.0, interfaces[0].linktype, body[4 : 4 + origlen])
    if kind == 6:
        iface_id, hi, lo, caplen, _ = struct.unpack_from(order + "IIIII", body)
        data = body[20 : 20 + caplen]
    else:
        iface_id, _, hi, lo, caplen, _ = struct.unpack_from(order + "HHIIII", body)
        data = body[20 : 20 + caplen]
    if iface_id >= len(interfaces):
        raise PcapError(f"packet on undeclared pcapng interface {iface_id}")
    iface = interfaces[iface_id]
    ticks = (hi << 32) | lo
    return Packet(number, ticks / iface.units + iface.offset, iface.linktype, data)


# --- link, network and transport layers ---------------------------------------------------


@dataclass(frozen=True, slots=True, order=True)
class Endpoint:
    host: str
    port: int

    def __str__(self) -> str:
        return f"[{self.host}]:{self.port}" if ":" in self.host else f"{self.host}:{self.port}"


@dataclass(frozen=True, slots=True)
class TcpSegment:
    src: Endpoint
    dst: Endpoint
    seq: int
    flags: int
    payload: bytes

    @property
    def syn(self) -> bool:
        return bool(self.flags & 0x02)

    @property
    def ack(self) -> bool:
        return bool(self.flags & 0x10)


_ETH_IPV4, _ETH_IPV6, _ETH_VLAN = 0x0800, 0x86DD, (0x8100, 0x88A8, 0x9100)
_BSD_AF_INET6 = (24, 28, 30)  # AF_INET6 differs between the BSDs


def _network(linktype: int, data: bytes) -> bytes | None:
    """The IP packet inside a link-layer frame (None: not IP or unknown link type)."""
    if linktype == 1:  # Ethernet
        ethertype, pos = int.from_bytes(data[12:14], "big"), 14
        while ethertype in _ETH_VLAN:
            ethertype, pos = int.from_bytes(data[pos + 2 : pos + 4], "big"), pos + 4
        return data[pos:] if ethertype in (_ETH_IPV4, _ETH_IPV6) else None
    if linktype == 113:  # Linux cooked v1
        ethertype = int.from_bytes(data[14:16], "big")
        return data[16:] if ethertype in (_ETH_IPV4, _ETH_IPV6) else None
    if linktype == 276:  # Linux cooked v2
        ethertype = int.from_bytes(data[0:2], "big")
        return data[20:] if ethertype in (_ETH_IPV4, _ETH_IPV6) else None
    if linktype in (0, 108):  # BSD loopback: family in host order (0) or big endian (108)
        family = {int.from_bytes(data[:4], "little"), int.from_bytes(data[:4], "big")}
        return data[4:] if family & {2, *_BSD_AF_INET6} else None
    if linktype in (12, 14, 101, 228, 229):  # raw IP
        return data
    return None


_IPV6_SKIPPABLE = (0, 43, 60)  # hop-by-hop, routing, destination options


def parse_tcp(packet: Packet) -> TcpSegment | None:
    """The TCP segment in a packet, or None for anything else (incl. IP fragments)."""
    ip = _network(packet.linktype, packet.data)
    if not ip:
        return None
    version = ip[0] >> 4
    src: ipaddress.IPv4Address | ipaddress.IPv6Address
    dst: ipaddress.IPv4Address | ipaddress.IPv6Address
    if version == 4:
        if len(ip) < 20:
            return None
        ihl = (ip[0] & 0x0F) * 4
        total = int.from_bytes(ip[2:4], "big")
        if ip[9] != 6 or int.from_bytes(ip[6:8], "big") & 0x3FFF:  # not TCP, or a fragment
            return None
        src, dst = ipaddress.IPv4Address(ip[12:16]), ipaddress.IPv4Address(ip[16:20])
        # total length trims the Ethernet padding of short frames (0: TSO, keep all)
        tcp = ip[ihl:total] if total else ip[ihl:]
    elif version == 6:
        if len(ip) < 40:
            return None
        next_header, pos = ip[6], 40
        payload_len = int.from_bytes(ip[4:6], "big")
        while next_header in _IPV6_SKIPPABLE and pos + 2 <= len(ip):
            next_header, pos = ip[pos], pos + (ip[pos + 1] + 1) * 8
        if next_header != 6:
            return None
        src, dst = ipaddress.IPv6Address(ip[8:24]), ipaddress.IPv6Address(ip[24:40])
        tcp = ip[pos : 40 + payload_len] if payload_len else ip[pos:]
    else:
        return None
    if len(tcp) < 20:
        return None
    sport, dport, seq = struct.unpack_from(">HHI", tcp)
    offset = (tcp[12] >> 4) * 4
    return TcpSegment(
        Endpoint(str(src), sport), Endpoint(str(dst), dport), seq, tcp[13], tcp[offset:]
    )


# --- TCP reassembly -----------------------------------------------------------------------


@dataclass(eq=False, slots=True)
class TcpStream:
    """One TCP connection; ``client`` is the side that sent the SYN (or a guess)."""

    index: int
    """Connection number within the capture, counting every TCP connection (as tshark's
    ``tcp.stream``)."""
    client: Endpoint
    server: Endpoint
    isn: int | None = None
    _directions: dict[Endpoint, _Direction] = field(default_factory=dict, init=False, repr=False)


@dataclass(frozen=True, slots=True)
class IpaMessage:
    """One IPA frame, stamped with the packet that completed it."""

    number: int
    time: float
    stream: TcpStream
    src: Endpoint
    dst: Endpoint
    frame: IpaFrame

    @property
    def from_client(self) -> bool:
        return self.src == self.stream.client


@dataclass(frozen=True, slots=True)
class StreamError:
    """A direction of a stream whose bytes are not IPA; nothing more is read from it."""

    number: int
    time: float
    stream: TcpStream
    src: Endpoint
    dst: Endpoint
    error: str


class _Direction:
    """One direction of a TCP connection: reorders segments and feeds an IpaFramer."""

    def __init__(self) -> None:
        self.next_seq: int | None = None
        self.pending: dict[int, bytes] = {}
        self.framer = IpaFramer(_MAX_FRAME)
        self.broken = False

    def syn(self, seq: int) -> None:
        self.next_seq = (seq + 1) & 0xFFFFFFFF
        self.pending.clear()

    def data(self, seq: int, payload: bytes) -> list[IpaFrame]:
        if self.next_seq is None:  # capture started mid-connection
            self.next_seq = seq
        self.pending.setdefault(seq, payload)
        stream = bytearray()
        progress = True
        while progress:
            progress = False
            for start, chunk in list(self.pending.items()):
                ahead = (start - self.next_seq) & 0xFFFFFFFF
                if ahead >= 0x80000000:  # starts before next_seq: retransmission
                    ahead -= 1 << 32
                if ahead > 0:
                    continue  # a gap before it: keep it for later
                del self.pending[start]
                fresh = chunk[-ahead:] if ahead else chunk
                if fresh:
                    stream += fresh
                    self.next_seq = (self.next_seq + len(fresh)) & 0xFFFFFFFF
                    progress = True
        return self.framer.feed(bytes(stream)) if stream else []


def ipa_messages(
    source: str | Path | BinaryIO, ports: Collection[int] = DEFAULT_PORTS
) -> Iterator[IpaMessage | StreamError]:
    """Every IPA frame sent on a TCP connection with one of ``ports`` at either end."""
    streams: dict[tuple[Endpoint, Endpoint], TcpStream] = {}
    count = 0
    for packet in read_packets(source):
        seg = parse_tcp(packet)
        if seg is None:
            continue
        key = (seg.src, seg.dst) if seg.src < seg.dst else (seg.dst, seg.src)
        stream = streams.get(key)
        new_syn = seg.syn and not seg.ack
        if stream is None or (new_syn and stream.isn is not None and stream.isn != seg.seq):
            # a fresh connection; without a SYN, the side on a listed port is the server
            client, server = seg.src, seg.dst
            if not new_syn and seg.src.port in ports and seg.dst.port not in ports:
                client, server = seg.dst, seg.src
            stream = streams[key] = TcpStream(count, client, server)
            count += 1
        if new_syn:
            stream.isn = seg.seq
        if seg.src.port not in ports and seg.dst.port not in ports:
            continue
        direction = stream._directions.setdefault(seg.src, _Direction())
        if seg.syn:
            direction.syn(seg.seq)
        if not seg.payload or direction.broken:
            continue
        try:
            frames = direction.data(seg.seq, seg.payload)
        except IpaFramingError as exc:
            direction.broken = True
            yield StreamError(packet.number, packet.time, stream, seg.src, seg.dst, str(exc))
            continue
        for frame in frames:
            yield IpaMessage(packet.number, packet.time, stream, seg.src, seg.dst, frame)
