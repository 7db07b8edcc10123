"""BER/DER codec for RSPRO PDUs.

The general path is asn1tools, compiled from our ASN.1 module. The two TPDU messages carry
every APDU of every card session, and the two APDU messages of remsim's APDU mode every APDU
of such a session, so they have a hand-written DER fast path that produces the same bytes
(checked against asn1tools in the tests) and falls back to asn1tools for anything it does
not recognise.
"""

from __future__ import annotations

import copy
import dataclasses
import functools
import ipaddress
import types
import typing
from typing import Any

from .errors import RsproDecodeError, RsproEncodeError
from .messages import (
    MESSAGE_BY_ASN_NAME,
    ApduCardToModem,
    ApduModemToCard,
    BankSlot,
    ClientSlot,
    IpPort,
    Message,
    ResultCode,
    RsproPdu,
    TpduCardToModem,
    TpduFlags,
    TpduModemToCard,
    _AsnEnum,
    _ExtensibleAsnEnum,
    camel,
)

__all__ = ["decode", "encode", "schema"]


@functools.cache
def schema() -> Any:
    """The compiled ASN.1 module (asn1tools, BER codec), from its shipped parsed form.

    Imported on first use: asn1tools costs a quarter of a second at start-up, and most
    processes meet a non-TPDU PDU only when they connect.
    """
    import asn1tools

    from ._parsed_schema import PARSED

    _fix_indefinite_additions()
    return asn1tools.compile_dict(copy.deepcopy(PARSED), "ber")  # it edits its argument


def _fix_indefinite_additions() -> None:
    """asn1tools (0.169) looks for a SEQUENCE's extension additions after the end-of-contents
    octets that ended its root members in the indefinite-length form, and so reads into the
    enclosing value (or past the end). Here the additions of a SEQUENCE whose end was found
    are not looked for (their defaults still apply): a SetAtrReq or ConnectClientReq in the
    indefinite form, from any BER encoder, decodes as it did before remsim's additions."""
    from asn1tools.codecs import ber

    def decode_content(self: Any, data: bytearray, offset: int, length: int | None) -> Any:
        end_offset = None if length is None else offset + length
        values: dict[str, Any] = {}
        offset, out_of_data = self.decode_members(
            self.root_members, data, values, offset, end_offset
        )
        if self.additions:
            ended = offset if out_of_data and end_offset is None else end_offset
            offset, out_of_data = self.decode_members(
                ber.flatten(self.additions), data, values, offset, ended, ignore_missing=True
            )
        if out_of_data:
            return values, offset
        if end_offset is None:
            raise ber.NoEndOfContentsTagError(
                "Could not find end-of-contents tag for indefinite length field.", offset=offset
            )
        return values, end_offset  # extra data is allowed for versioned additions

    ber.MembersType.decode_content = decode_content


@functools.cache
def _fields(cls: type) -> tuple[tuple[str, str, Any], ...]:
    """(python name, ASN.1 name, type) of each field of a message dataclass."""
    hints = typing.get_type_hints(cls)
    return tuple((f.name, camel(f.name), hints[f.name]) for f in dataclasses.fields(cls))


def _to_asn(value: Any) -> Any:
    if isinstance(value, _AsnEnum):
        return value.asn_name
    if isinstance(value, IpPort):
        kind = "ipv4" if value.ip.version == 4 else "ipv6"
        return {"ip": (kind, value.ip.packed), "port": value.port}
    if isinstance(value, tuple):  # SEQUENCE OF
        return [_to_asn(item) for item in value]
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {
            asn: _to_asn(getattr(value, py))
            for py, asn, _ in _fields(type(value))
            if getattr(value, py) is not None
        }
    return value


def _from_asn(tp: Any, value: Any) -> Any:
    if isinstance(tp, types.UnionType):  # X | None
        (tp,) = [t for t in typing.get_args(tp) if t is not type(None)]
    if tp is IpPort:
        kind, packed = value["ip"]
        ip = ipaddress.IPv4Address(packed) if kind == "ipv4" else ipaddress.IPv6Address(packed)
        return IpPort(ip, value["port"])
    if typing.get_origin(tp) is tuple:  # SEQUENCE OF: tuple[X, ...]
        (item, _) = typing.get_args(tp)
        return tuple(_from_asn(item, v) for v in value)
    if isinstance(tp, type) and issubclass(tp, _AsnEnum):
        # asn1tools gives the identifier of a known value and None for an unknown one
        if value is None and issubclass(tp, _ExtensibleAsnEnum):
            return tp.unknown()
        return tp.from_asn_name(value)
    if isinstance(tp, type) and dataclasses.is_dataclass(tp):
        kwargs = {py: _from_asn(t, value[asn]) for py, asn, t in _fields(tp) if asn in value}
        return tp(**kwargs)
    return value


# --- DER fast path for the TPDU messages ----------------------------------------------------


class _NotFast(Exception):
    """The input is not in the shape the fast path handles; use asn1tools."""


def _der_len(n: int) -> bytes:
    if n >= 0x10000:
        raise _NotFast
    if n < 0x80:
        return bytes((n,))
    if n < 0x100:
        return bytes((0x81, n))
    return bytes((0x82, n >> 8, n & 0xFF))


def _der_int(n: int) -> bytes:
    if not 0 <= n < 2**31:
        raise _NotFast
    body = n.to_bytes(n.bit_length() // 8 + 1, "big")  # minimal two's complement, n >= 0
    return b"\x02" + bytes((len(body),)) + body


_BOOL = (b"\x01\x01\x00", b"\x01\x01\xff")


def _der_flags(f: TpduFlags) -> bytes:
    return (
        b"\x30\x0c"
        + _BOOL[f.tpdu_header_present]
        + _BOOL[f.final_part]
        + _BOOL[f.proc_byte_continue_tx]
        + _BOOL[f.proc_byte_continue_rx]
    )


def _der_slot(a: int, b: int) -> bytes:
    body = _der_int(a) + _der_int(b)
    return b"\x30" + bytes((len(body),)) + body


def _encode_tpdu(pdu: RsproPdu, msg: TpduModemToCard | TpduCardToModem) -> bytes:
    if isinstance(msg, TpduModemToCard):
        alt = 0xAC
        first = _der_slot(msg.from_client_slot.client_id, msg.from_client_slot.slot_nr)
        second = _der_slot(msg.to_bank_slot.bank_id, msg.to_bank_slot.slot_nr)
    else:
        alt = 0xAD
        first = _der_slot(msg.from_bank_slot.bank_id, msg.from_bank_slot.slot_nr)
        second = _der_slot(msg.to_client_slot.client_id, msg.to_client_slot.slot_nr)
    body = first + second + _der_flags(msg.flags) + b"\x04" + _der_len(len(msg.data)) + msg.data
    choice = bytes((alt,)) + _der_len(len(body)) + body
    return _envelope(pdu, choice)


def _envelope(pdu: RsproPdu, choice: bytes) -> bytes:
    envelope = (
        b"\x80" + _der_int(pdu.version)[1:] + b"\x81" + _der_int(pdu.tag)[1:]
        + b"\xa2" + _der_len(len(choice)) + choice
    )  # fmt: skip
    return b"\x30" + _der_len(len(envelope)) + envelope


def _encode_apdu(pdu: RsproPdu, msg: ApduModemToCard | ApduCardToModem) -> bytes:
    if isinstance(msg, ApduModemToCard):
        alt = b"\xbf\x41"
        body = (
            _der_slot(msg.from_client_slot.client_id, msg.from_client_slot.slot_nr)
            + _der_slot(msg.to_bank_slot.bank_id, msg.to_bank_slot.slot_nr)
            + b"\x04" + _der_len(len(msg.capdu)) + msg.capdu
        )  # fmt: skip
    else:
        if msg.error is not None or not 0 <= msg.result < 0x80:
            raise _NotFast
        alt = b"\xbf\x42"
        body = (
            _der_slot(msg.from_bank_slot.bank_id, msg.from_bank_slot.slot_nr)
            + _der_slot(msg.to_client_slot.client_id, msg.to_client_slot.slot_nr)
            + bytes((0x0A, 1, msg.result))
            + b"\x04" + _der_len(len(msg.rapdu)) + msg.rapdu
        )  # fmt: skip
    return _envelope(pdu, alt + _der_len(len(body)) + body)


def _tlv(buf: bytes, pos: int, tag: int) -> tuple[int, int]:
    """Return (start, end) of the content of the TLV at pos, which must carry tag."""
    if buf[pos] != tag:
        raise _NotFast
    n = buf[pos + 1]
    pos += 2
    if n & 0x80:
        width = n & 0x7F
        if width not in (1, 2):
            raise _NotFast
        n = int.from_bytes(buf[pos : pos + width], "big")
        pos += width
    end = pos + n
    if end > len(buf):
        raise _NotFast
    return pos, end


def _int_at(buf: bytes, pos: int, tag: int) -> tuple[int, int]:
    start, end = _tlv(buf, pos, tag)
    if not 0 < end - start <= 4:
        raise _NotFast
    return int.from_bytes(buf[start:end], "big", signed=True), end


def _slot_at(buf: bytes, pos: int) -> tuple[int, int, int]:
    start, end = _tlv(buf, pos, 0x30)
    a, p = _int_at(buf, start, 0x02)
    b, p = _int_at(buf, p, 0x02)
    if p != end:
        raise _NotFast
    return a, b, end


def _decode_apdu(buf: bytes, version: int, tag: int, start: int, end: int) -> RsproPdu:
    """apduModemToCard (BF 41) / apduCardToModem (BF 42) at ``start``, the choice's end."""
    second = buf[start + 1]
    if second not in (0x41, 0x42):
        raise _NotFast
    body, end3 = _tlv(buf, start + 1, second)  # the tag's second byte, then the length
    if end3 != end:
        raise _NotFast
    a1, a2, p = _slot_at(buf, body)
    b1, b2, p = _slot_at(buf, p)
    msg: Message
    if second == 0x41:
        dstart, p = _tlv(buf, p, 0x04)
        if p != end:
            raise _NotFast
        msg = ApduModemToCard(ClientSlot(a1, a2), BankSlot(b1, b2), bytes(buf[dstart:p]))
    else:
        rstart, p = _tlv(buf, p, 0x0A)
        if p - rstart != 1 or buf[rstart] >= 0x80:
            raise _NotFast
        dstart, p = _tlv(buf, p, 0x04)
        if p != end:  # an error string, or more: asn1tools
            raise _NotFast
        result = ResultCode(buf[rstart])
        msg = ApduCardToModem(BankSlot(a1, a2), ClientSlot(b1, b2), result, bytes(buf[dstart:p]))
    return RsproPdu(msg, version, tag)


def _decode_tpdu(buf: bytes) -> RsproPdu:
    start, end = _tlv(buf, 0, 0x30)
    version, p = _int_at(buf, start, 0x80)
    tag, p = _int_at(buf, p, 0x81)
    start, end2 = _tlv(buf, p, 0xA2)
    if end2 != end:
        raise _NotFast
    alt = buf[start]
    if alt == 0xBF:
        return _decode_apdu(buf, version, tag, start, end)
    if alt not in (0xAC, 0xAD):
        raise _NotFast
    start, end3 = _tlv(buf, start, alt)
    if end3 != end:
        raise _NotFast
    a1, a2, p = _slot_at(buf, start)
    b1, b2, p = _slot_at(buf, p)
    fstart, p = _tlv(buf, p, 0x30)
    if p - fstart != 12:
        raise _NotFast
    bools = []
    for i in range(fstart, p, 3):
        if buf[i] != 0x01 or buf[i + 1] != 0x01:
            raise _NotFast
        bools.append(buf[i + 2] != 0)
    flags = TpduFlags(*bools)
    dstart, p = _tlv(buf, p, 0x04)
    if p != end3:
        raise _NotFast
    data = bytes(buf[dstart:p])
    msg: Message
    if alt == 0xAC:
        msg = TpduModemToCard(ClientSlot(a1, a2), BankSlot(b1, b2), data, flags)
    else:
        msg = TpduCardToModem(BankSlot(a1, a2), ClientSlot(b1, b2), data, flags)
    return RsproPdu(msg, version, tag)


# --- public API ---------------------------------------------------------------------------


def encode(pdu: RsproPdu) -> bytes:
    """Encode a PDU to DER, exactly as the deployed components do."""
    msg = pdu.msg
    if isinstance(msg, TpduModemToCard | TpduCardToModem):
        try:
            return _encode_tpdu(pdu, msg)
        except _NotFast:
            pass
    elif isinstance(msg, ApduModemToCard | ApduCardToModem):
        try:
            return _encode_apdu(pdu, msg)
        except _NotFast:
            pass
    value = {"version": pdu.version, "tag": pdu.tag, "msg": (msg.ASN_NAME, _to_asn(msg))}
    try:
        return bytes(schema().encode("RsproPDU", value))
    except Exception as exc:
        raise RsproEncodeError(f"cannot encode {type(msg).__name__}: {exc}") from exc


def decode(data: bytes) -> RsproPdu:
    """Decode one BER-encoded PDU; trailing bytes after it are ignored, as upstream does."""
    if len(data) > 16 and data[0] == 0x30:
        try:
            return _decode_tpdu(data)
        except (_NotFast, IndexError, ValueError):
            pass
    try:
        value = schema().decode("RsproPDU", bytes(data))
        name, body = value["msg"]
    except Exception as exc:
        raise RsproDecodeError(f"invalid RSPRO PDU: {exc}") from exc
    cls = MESSAGE_BY_ASN_NAME.get(name) if isinstance(name, str) else None
    if cls is None:
        raise RsproDecodeError(f"unknown RSPRO message {name!r}")
    try:
        msg = _from_asn(cls, body)
        return RsproPdu(msg, value["version"], value["tag"])
    except Exception as exc:
        raise RsproDecodeError(f"invalid {cls.__name__}: {exc}") from exc
