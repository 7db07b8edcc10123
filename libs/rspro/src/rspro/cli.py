"""``rspro``: decode RSPRO for people debugging a remsim network.

* ``rspro decode HEX...`` prints each IPA frame or bare BER PDU in the hex as one JSON line.
* ``rspro pcap FILE`` prints every RSPRO and IPA CCM message of the capture's TCP streams
  (ports 9998 and 9999 unless ``--ports`` says otherwise) with time, direction and content,
  as text or, with ``--json``, as JSON lines.
* ``rspro --version`` prints ``rspro VERSION``.

The JSON uses the field names of the reference recordings (``messages.jsonl``) and renders
a PDU as asn1tools does (a CHOICE is ``{"alternative": value}``, an OCTET STRING is hex),
so output can be compared with those recordings directly.
"""

from __future__ import annotations

import argparse
import dataclasses
import enum
import ipaddress
import json
import sys
from collections.abc import Sequence
from importlib import metadata
from pathlib import Path
from typing import Any

from . import ipa
from .codec import decode
from .errors import RsproError
from .messages import (
    NO_FLAGS,
    BankSlot,
    ClientSlot,
    ComponentType,
    ConnectBankReq,
    ConnectBankRes,
    ConnectClientReq,
    ConnectClientRes,
    IpPort,
    RsproPdu,
    camel,
)
from .pcap import DEFAULT_PORTS, Endpoint, IpaMessage, TcpStream, ipa_messages, read_packets

__all__ = ["frame_to_json", "main", "pdu_to_json"]


# --- JSON rendering -----------------------------------------------------------------------


def _value(value: Any, compact: bool = False) -> Any:
    """asn1tools-style rendering; ``compact`` is for people: slots as ``C23:0``/``B1:0``,
    addresses as ``host:port``, all-false TPDU flags left out."""
    if isinstance(value, enum.Enum):
        # a value unknown to us has no identifier; asn1tools renders it as null too
        return camel(value.name) if value.name in type(value).__members__ else None
    if isinstance(value, bytes):
        return value.hex()
    if isinstance(value, IpPort):
        if compact:
            return str(value)
        kind = "ipv4" if isinstance(value.ip, ipaddress.IPv4Address) else "ipv6"
        return {"ip": {kind: value.ip.packed.hex()}, "port": value.port}
    if compact and isinstance(value, ClientSlot | BankSlot):
        return str(value)
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {
            camel(f.name): _value(item, compact)
            for f in dataclasses.fields(value)
            if (item := getattr(value, f.name)) is not None and not (compact and item == NO_FLAGS)
        }
    return value


def pdu_to_json(pdu: RsproPdu) -> dict[str, Any]:
    """A PDU as the asn1tools-style dict of the reference recordings' ``pdu`` field."""
    return {
        "version": pdu.version,
        "tag": pdu.tag,
        "msg": {pdu.msg.ASN_NAME: _value(pdu.msg)},
    }


def _identities(body: bytes, ccm: ipa.CcmType) -> dict[str, str] | list[str]:
    """The identity tags of an ID_GET, or the tag/value pairs of an ID_RESP."""

    def name(tag: int) -> str:
        return ipa.IdTag(tag).name if tag in ipa.IdTag.__members__.values() else f"0x{tag:02x}"

    if ccm == ipa.CcmType.ID_GET:
        return [name(tag) for tag in ipa.parse_id_get(body)]
    values: dict[str, str] = {}
    pos = 0
    while pos + 3 <= len(body):
        size = int.from_bytes(body[pos : pos + 2], "big")
        raw = body[pos + 3 : pos + 2 + size]
        values[name(body[pos + 2])] = raw.split(b"\0", 1)[0].decode("ascii", "replace")
        pos += 2 + max(size, 1)
    return values


def _rspro_fields(pdu_bytes: bytes) -> dict[str, Any]:
    out: dict[str, Any] = {"kind": "RSPRO", "rspro_hex": pdu_bytes.hex()}
    try:
        pdu = decode(pdu_bytes)
    except RsproError as exc:
        out["error"] = str(exc)
        return out
    out |= {
        "msg_type": pdu.msg.ASN_NAME,
        "rspro_version": pdu.version,
        "rspro_tag": pdu.tag,
        "pdu": pdu_to_json(pdu),
    }
    return out


def frame_to_json(frame: ipa.IpaFrame) -> dict[str, Any]:
    """One IPA frame, decoded, with the field names of the reference ``messages.jsonl``."""
    out: dict[str, Any] = {
        "ipa_len": len(frame.payload),
        "ipa_proto": f"0x{frame.proto:02x}",
        "raw_hex": frame.to_bytes().hex(),
    }
    payload = frame.payload
    if frame.proto == ipa.IPA_PROTO_CCM and payload:
        out["kind"] = "IPA_CCM"
        out["ccm_msg_type"] = payload[0]
        if payload[0] in ipa.CcmType.__members__.values():
            ccm = ipa.CcmType(payload[0])
            out["ccm_msg_name"] = ccm.name
            if ccm in (ipa.CcmType.ID_GET, ipa.CcmType.ID_RESP):
                out["ids"] = _identities(payload[1:], ccm)
    elif frame.proto == ipa.IPA_PROTO_OSMO and payload:
        out["ipa_ext"] = f"0x{payload[0]:02x}"
        if payload[0] == ipa.IPA_EXT_RSPRO:
            out |= _rspro_fields(payload[1:])
        else:
            out["kind"] = "IPA_OSMO"
    else:
        out["kind"] = "IPA"
    return out


def _summary(item: dict[str, Any]) -> str:
    """One-line text form of a decoded frame."""
    kind = item["kind"]
    if kind == "RSPRO":
        if "error" in item:
            return f"RSPRO undecodable ({item['error']}): {item['rspro_hex']}"
        tag = f" tag={item['rspro_tag']}" if item["rspro_tag"] else ""
        version = f" version={item['rspro_version']}" if item["rspro_version"] != 2 else ""
        msg = decode(bytes.fromhex(item["rspro_hex"])).msg
        body = json.dumps(_value(msg, compact=True))
        return f"RSPRO {item['msg_type']}{version}{tag} {body}"
    if kind == "IPA_CCM":
        name = item.get("ccm_msg_name", f"type 0x{item['ccm_msg_type']:02x}")
        ids = f" {json.dumps(item['ids'])}" if "ids" in item else ""
        return f"IPA CCM {name}{ids}"
    if kind == "IPA_OSMO":
        return f"IPA OSMO extension {item['ipa_ext']}: {item['raw_hex']}"
    return f"IPA proto {item['ipa_proto']}: {item['raw_hex']}"


# --- rspro decode -------------------------------------------------------------------------


def _parse_hex(words: Sequence[str]) -> bytes:
    """Hex as people paste it: spaces, colons and 0x prefixes are allowed."""
    tokens = " ".join(words).replace(":", " ").split()
    return bytes.fromhex("".join(t[2:] if t.lower().startswith("0x") else t for t in tokens))


def _ber_end(data: bytes, pos: int) -> int:
    """End of the BER TLV at pos (the rest of the data for an indefinite length)."""
    if pos + 2 > len(data):
        return len(data)
    first = data[pos + 1]
    if first < 0x80:
        return pos + 2 + first
    width = first & 0x7F
    if width == 0:
        return len(data)
    return pos + 2 + width + int.from_bytes(data[pos + 2 : pos + 2 + width], "big")


def _split(data: bytes) -> list[dict[str, Any]]:
    """Cut the bytes into IPA frames and bare PDUs (a PDU starts with 0x30, which no IPA
    frame within the size limits does) and decode each."""
    items: list[dict[str, Any]] = []
    pos = 0
    while pos < len(data):
        if data[pos] == 0x30:
            end = _ber_end(data, pos)
            items.append(_rspro_fields(data[pos:end]))
        else:
            end = pos + ipa.HEADER_SIZE + int.from_bytes(data[pos : pos + 2], "big")
            if end > len(data):
                items.append({"error": "truncated IPA frame", "raw_hex": data[pos:].hex()})
            else:
                items.append(frame_to_json(ipa.IpaFrame(data[pos + 2], data[pos + 3 : end])))
        pos = end
    return items


def _cmd_decode(args: argparse.Namespace) -> int:
    words = args.hex or sys.stdin.read().split()
    try:
        data = _parse_hex(words)
    except ValueError as exc:
        print(f"rspro decode: not hex: {exc}", file=sys.stderr)
        return 2
    items = _split(data)
    for item in items:
        print(json.dumps(item))
    return 1 if any("error" in item for item in items) else 0


# --- rspro pcap ---------------------------------------------------------------------------

_ROLE_BY_TYPE = {
    ComponentType.REMSIM_CLIENT: "client",
    ComponentType.REMSIM_SERVER: "server",
    ComponentType.REMSIM_BANKD: "bankd",
}
_ROLE_BY_PORT = {9998: "server", 9999: "bankd"}
_CONNECT = (ConnectBankReq, ConnectBankRes, ConnectClientReq, ConnectClientRes)


class _Roles:
    """Names the two ends of each stream: from the identities in connect messages, else
    from the well-known ports."""

    def __init__(self) -> None:
        self._known: dict[tuple[int, Endpoint], str] = {}

    def learn(self, message: IpaMessage) -> None:
        frame = message.frame
        if frame.proto != ipa.IPA_PROTO_OSMO or frame.payload[:1] != b"\x07":
            return
        try:
            msg = decode(frame.payload[1:]).msg
        except RsproError:
            return
        if isinstance(msg, _CONNECT):
            role = _ROLE_BY_TYPE.get(msg.identity.type)
            if role is not None:
                self._known[(message.stream.index, message.src)] = role

    def name(self, stream: TcpStream, end: Endpoint) -> str:
        role = self._known.get((stream.index, end))
        if role is not None:
            return role
        if end == stream.server:
            return _ROLE_BY_PORT.get(end.port, f"port{end.port}")
        return "client" if self.name(stream, stream.server) == "bankd" else "peer"


def _cmd_pcap(args: argparse.Namespace) -> int:
    try:
        ports = {int(p) for p in args.ports.split(",") if p.strip()}
    except ValueError:
        print(f"rspro pcap: bad --ports {args.ports!r}", file=sys.stderr)
        return 2
    path = Path(args.file)
    try:
        origin = next(iter(read_packets(path)), None)
        records = list(ipa_messages(path, ports))
    except (OSError, RsproError) as exc:
        print(f"rspro pcap: {path}: {exc}", file=sys.stderr)
        return 2
    t0 = origin.time if origin is not None else 0.0
    roles = _Roles()
    for rec in records:
        if isinstance(rec, IpaMessage):
            roles.learn(rec)
    for rec in records:
        direction = f"{roles.name(rec.stream, rec.src)}->{roles.name(rec.stream, rec.dst)}"
        item: dict[str, Any] = {
            "frame": rec.number,
            "time": round(rec.time, 9),
            "t_rel": round(rec.time - t0, 9),
            "tcp_stream": rec.stream.index,
            "src": str(rec.src),
            "dst": str(rec.dst),
            "src_port": rec.src.port,
            "dst_port": rec.dst.port,
            "direction": direction,
        }
        if isinstance(rec, IpaMessage):
            item |= frame_to_json(rec.frame)
            text = _summary(item)
        else:
            item |= {"kind": "ERROR", "error": rec.error}
            text = f"not IPA, stream ignored from here: {rec.error}"
        if args.json:
            print(json.dumps(item))
        else:
            print(
                f"{item['t_rel']:12.6f} #{rec.number:<6} {direction:<15} "
                f"{rec.src} > {rec.dst}  {text}"
            )
    return 0


def _version() -> str:
    """The installed ``rspro`` distribution's version (rspro depends on no remsim package)."""
    try:
        return metadata.version("rspro")
    except metadata.PackageNotFoundError:
        return "0+unknown"


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="rspro",
        description="Decode RSPRO (remote SIM protocol) for debugging a remsim network.",
        epilog="examples: rspro decode 0001fe00 000dee07300a800102810100a202b300\n"
        "          rspro pcap capture.pcapng --ports 9998,9999,10000 --json",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("-V", "--version", action="version", version=f"rspro {_version()}")
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("decode", help="decode IPA frames / RSPRO PDUs given in hex")
    p.add_argument("hex", nargs="*", help="hex bytes (read from stdin when absent)")
    p.set_defaults(run=_cmd_decode)
    p = sub.add_parser("pcap", help="print the RSPRO and IPA messages of a capture file")
    p.add_argument("file", help="pcap or pcapng file")
    p.add_argument(
        "--ports",
        default=",".join(map(str, DEFAULT_PORTS)),
        help="comma-separated TCP ports carrying RSPRO (default: %(default)s)",
    )
    p.add_argument("--json", action="store_true", help="one JSON object per line")
    p.set_defaults(run=_cmd_pcap)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    try:
        result: int = args.run(args)
        sys.stdout.flush()
    except BrokenPipeError:  # `rspro pcap ... | head`
        sys.stdout = open("/dev/null", "w")  # noqa: SIM115 - keep interpreter exit quiet
        return 0
    return result
