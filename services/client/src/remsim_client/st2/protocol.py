"""Sans-IO codec of the SIMtrace2 card-emulation USB messages (simtrace2-cardem.md §3-§5).

Every message is an 8-byte little-endian header (class, type, seq_nr, slot_nr, reserved,
msg_len including the header) followed by a type-specific payload. :func:`encode` turns a
message object into the bytes of one bulk OUT transfer; :func:`decode` parses exactly one
message, :func:`iter_messages` a transfer that may hold several (the firmware splits such
a buffer by ``msg_len`` and so do we). Bad input raises :class:`ProtocolError`.
"""

from __future__ import annotations

import struct
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from enum import IntEnum, IntFlag

from .errors import ProtocolError

__all__ = [
    "FEATURE_STATUS_IRQ",
    "HEADER_LEN",
    "MAX_ATR_LEN",
    "MAX_OUT_TRANSFER",
    "PRES_POL_PRES_H",
    "PRES_POL_VALID",
    "CardInsert",
    "CardemMsg",
    "Config",
    "DataFlags",
    "Message",
    "ModemMsg",
    "ModemReset",
    "ModemStatusRequest",
    "MsgClass",
    "ProtocolError",
    "Pts",
    "ResetAction",
    "RxData",
    "SetAtr",
    "SimSelect",
    "Status",
    "StatusFlags",
    "StatusRequest",
    "TxData",
    "Unknown",
    "decode",
    "encode",
    "iter_messages",
]

_HEADER = struct.Struct("<BBBBHH")
HEADER_LEN = _HEADER.size
#: The firmware reads host commands into a buffer of this size: no OUT transfer may be longer.
MAX_OUT_TRANSFER = 280
#: The firmware keeps at most TS + 32 ATR bytes; a longer SET_ATR is ignored.
MAX_ATR_LEN = 33


class MsgClass(IntEnum):
    GENERIC = 0
    CARDEM = 1
    MODEM = 2
    SNIFF = 3


class CardemMsg(IntEnum):
    TX_DATA = 1  # DT_CEMU_TX_DATA
    SET_ATR = 2  # DT_CEMU_SET_ATR
    STATS = 3  # BD_CEMU_STATS (not implemented by the firmware)
    STATUS = 4  # BD_CEMU_STATUS
    CARDINSERT = 5  # DT_CEMU_CARDINSERT
    RX_DATA = 6  # DO_CEMU_RX_DATA
    PTS = 7  # DO_CEMU_PTS
    CONFIG = 8  # BD_CEMU_CONFIG


class ModemMsg(IntEnum):
    RESET = 1  # DT_MODEM_RESET
    SIM_SELECT = 2  # DT_MODEM_SIM_SELECT
    STATUS = 3  # BD_MODEM_STATUS (ignored by the firmware)


class DataFlags(IntFlag):
    """Flags of TX_DATA / RX_DATA (same bit values in both directions)."""

    NONE = 0
    TPDU_HDR = 0x01  # RX: data is a fresh 5-byte TPDU header
    FINAL = 0x02  # RX: last part of the command data; TX: last part of the response
    PB_AND_TX = 0x04  # TX: first byte is a procedure byte, keep transmitting
    PB_AND_RX = 0x08  # TX: first byte is a procedure byte, then receive command data


class StatusFlags(IntFlag):
    NONE = 0
    VCC_PRESENT = 0x01
    CLK_ACTIVE = 0x02
    RCEMU_ACTIVE = 0x04
    CARD_INSERT = 0x08
    RESET_ACTIVE = 0x10


#: CONFIG feature bit: send STATUS on the interrupt endpoint on every VCC/CLK/RST change.
FEATURE_STATUS_IRQ = 0x00000001
#: CONFIG pres_pol bits: apply the polarity / card present is signalled as high level.
PRES_POL_VALID = 0x02
PRES_POL_PRES_H = 0x01


class ResetAction(IntEnum):
    DEASSERT = 0
    ASSERT = 1
    PULSE = 2


# --- messages ------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class TxData:
    """CARDEM/TX_DATA, host to device: bytes for the firmware to send to the modem."""

    flags: DataFlags
    data: bytes


@dataclass(frozen=True, slots=True)
class RxData:
    """CARDEM/RX_DATA, device to host: a TPDU header or command data from the modem."""

    flags: DataFlags
    data: bytes


@dataclass(frozen=True, slots=True)
class SetAtr:
    atr: bytes


@dataclass(frozen=True, slots=True)
class StatusRequest:
    """CARDEM/STATUS with an empty payload: ask for a STATUS reply on bulk IN."""


@dataclass(frozen=True, slots=True)
class Status:
    flags: StatusFlags
    voltage_mv: int = 0
    f_index: int = 1
    d_index: int = 1
    wi: int = 10
    waiting_time: int = 9600


@dataclass(frozen=True, slots=True)
class CardInsert:
    inserted: bool


@dataclass(frozen=True, slots=True)
class Pts:
    """CARDEM/PTS: the PPS the modem sent (``req``) and the firmware's answer (``resp``)."""

    pts_len: int
    req: bytes  # the 6-byte fields, zero padded (shorter values are padded here)
    resp: bytes

    def __post_init__(self) -> None:
        if len(self.req) > 6 or len(self.resp) > 6:
            raise ProtocolError("PTS request/response longer than 6 bytes")
        object.__setattr__(self, "req", bytes(self.req).ljust(6, b"\0"))
        object.__setattr__(self, "resp", bytes(self.resp).ljust(6, b"\0"))

    @property
    def request(self) -> bytes:
        return self.req[: self.pts_len]

    @property
    def response(self) -> bytes:
        return self.resp[: self.pts_len]


@dataclass(frozen=True, slots=True)
class Config:
    features: int
    slot_mux_nr: int = 0
    pres_pol: int = 0


@dataclass(frozen=True, slots=True)
class ModemReset:
    action: ResetAction
    pulse_ms: int = 0


@dataclass(frozen=True, slots=True)
class SimSelect:
    remote: bool


@dataclass(frozen=True, slots=True)
class ModemStatusRequest:
    """MODEM/STATUS (the firmware ignores it)."""


@dataclass(frozen=True, slots=True)
class Unknown:
    """A well-framed message of a class/type this codec does not interpret."""

    msg_class: int
    msg_type: int
    payload: bytes


Message = (
    TxData
    | RxData
    | SetAtr
    | StatusRequest
    | Status
    | CardInsert
    | Pts
    | Config
    | ModemReset
    | SimSelect
    | ModemStatusRequest
    | Unknown
)

# --- encoding ------------------------------------------------------------------------

_DATA = struct.Struct("<IH")
_STATUS = struct.Struct("<IHBBBI")
_CONFIG = struct.Struct("<IBB")
_RESET = struct.Struct("<BH")


def _frame(msg_class: int, msg_type: int, payload: bytes) -> bytes:
    length = HEADER_LEN + len(payload)
    if length > 0xFFFF:
        raise ProtocolError(f"message too long ({length} bytes)")
    return _HEADER.pack(msg_class, msg_type, 0, 0, 0, length) + payload


def _u(value: int, bits: int, what: str) -> int:
    if not 0 <= value < 1 << bits:
        raise ProtocolError(f"{what} {value} out of range")
    return value


def _data_payload(flags: int, data: bytes) -> bytes:
    return _DATA.pack(_u(int(flags), 32, "flags"), _u(len(data), 16, "data_len")) + data


def encode(msg: Message) -> bytes:
    """The bytes of ``msg`` (header included), as one USB transfer."""
    match msg:
        case TxData(flags, data):
            return _frame(MsgClass.CARDEM, CardemMsg.TX_DATA, _data_payload(flags, data))
        case RxData(flags, data):
            return _frame(MsgClass.CARDEM, CardemMsg.RX_DATA, _data_payload(flags, data))
        case SetAtr(atr):
            payload = bytes([_u(len(atr), 8, "atr_len")]) + atr
            return _frame(MsgClass.CARDEM, CardemMsg.SET_ATR, payload)
        case StatusRequest():
            return _frame(MsgClass.CARDEM, CardemMsg.STATUS, b"")
        case Status(flags, mv, f_index, d_index, wi, wt):
            payload = _STATUS.pack(
                _u(int(flags), 32, "flags"),
                _u(mv, 16, "voltage_mv"),
                _u(f_index, 8, "F_index"),
                _u(d_index, 8, "D_index"),
                _u(wi, 8, "wi"),
                _u(wt, 32, "waiting_time"),
            )
            return _frame(MsgClass.CARDEM, CardemMsg.STATUS, payload)
        case CardInsert(inserted):
            return _frame(MsgClass.CARDEM, CardemMsg.CARDINSERT, bytes([int(inserted)]))
        case Pts(pts_len, req, resp):
            payload = bytes([_u(pts_len, 8, "pts_len")]) + req + resp
            return _frame(MsgClass.CARDEM, CardemMsg.PTS, payload)
        case Config(features, mux, pres_pol):
            payload = _CONFIG.pack(
                _u(features, 32, "features"), _u(mux, 8, "slot_mux_nr"), _u(pres_pol, 8, "pres_pol")
            )
            return _frame(MsgClass.CARDEM, CardemMsg.CONFIG, payload)
        case ModemReset(action, pulse_ms):
            payload = _RESET.pack(_u(int(action), 8, "asserted"), _u(pulse_ms, 16, "pulse"))
            return _frame(MsgClass.MODEM, ModemMsg.RESET, payload)
        case SimSelect(remote):
            return _frame(MsgClass.MODEM, ModemMsg.SIM_SELECT, bytes([int(remote)]))
        case ModemStatusRequest():
            return _frame(MsgClass.MODEM, ModemMsg.STATUS, b"")
        case Unknown(msg_class, msg_type, payload):
            return _frame(_u(msg_class, 8, "class"), _u(msg_type, 8, "type"), payload)
    raise ProtocolError(f"cannot encode {msg!r}")


# --- decoding ------------------------------------------------------------------------


def _need(payload: bytes, size: int, what: str) -> None:
    if len(payload) < size:
        raise ProtocolError(f"{what}: payload of {len(payload)} bytes, need {size}")


def _data_fields(payload: bytes, what: str) -> tuple[DataFlags, bytes]:
    _need(payload, _DATA.size, what)
    flags, data_len = _DATA.unpack_from(payload)
    data = payload[_DATA.size : _DATA.size + data_len]
    if len(data) != data_len:
        raise ProtocolError(f"{what}: data_len {data_len} but {len(data)} bytes present")
    return DataFlags(flags), data


def _tx_data(payload: bytes) -> Message:
    return TxData(*_data_fields(payload, "TX_DATA"))


def _rx_data(payload: bytes) -> Message:
    return RxData(*_data_fields(payload, "RX_DATA"))


def _set_atr(payload: bytes) -> Message:
    _need(payload, 1, "SET_ATR")
    atr = payload[1 : 1 + payload[0]]
    if len(atr) != payload[0]:
        raise ProtocolError(f"SET_ATR: atr_len {payload[0]} but {len(atr)} bytes present")
    return SetAtr(atr)


def _status(payload: bytes) -> Message:
    if not payload:
        return StatusRequest()
    _need(payload, _STATUS.size, "STATUS")
    flags, mv, f_index, d_index, wi, wt = _STATUS.unpack_from(payload)
    return Status(StatusFlags(flags), mv, f_index, d_index, wi, wt)


def _card_insert(payload: bytes) -> Message:
    _need(payload, 1, "CARDINSERT")
    return CardInsert(bool(payload[0]))


def _pts(payload: bytes) -> Message:
    _need(payload, 13, "PTS")
    return Pts(payload[0], payload[1:7], payload[7:13])


def _config(payload: bytes) -> Message:
    # The optional trailing fields only count when present (older hosts send features only).
    _need(payload, 4, "CONFIG")
    (features,) = struct.unpack_from("<I", payload)
    mux = payload[4] if len(payload) > 4 else 0
    pres_pol = payload[5] if len(payload) > 5 else 0
    return Config(features, mux, pres_pol)


def _modem_reset(payload: bytes) -> Message:
    _need(payload, _RESET.size, "MODEM_RESET")
    action, pulse_ms = _RESET.unpack_from(payload)
    try:
        return ModemReset(ResetAction(action), pulse_ms)
    except ValueError:
        raise ProtocolError(f"MODEM_RESET: bad 'asserted' value {action}") from None


def _sim_select(payload: bytes) -> Message:
    _need(payload, 1, "SIM_SELECT")
    return SimSelect(bool(payload[0]))


def _modem_status(payload: bytes) -> Message:
    return ModemStatusRequest()


_DECODERS: dict[tuple[int, int], Callable[[bytes], Message]] = {
    (MsgClass.CARDEM, CardemMsg.TX_DATA): _tx_data,
    (MsgClass.CARDEM, CardemMsg.SET_ATR): _set_atr,
    (MsgClass.CARDEM, CardemMsg.STATUS): _status,
    (MsgClass.CARDEM, CardemMsg.CARDINSERT): _card_insert,
    (MsgClass.CARDEM, CardemMsg.RX_DATA): _rx_data,
    (MsgClass.CARDEM, CardemMsg.PTS): _pts,
    (MsgClass.CARDEM, CardemMsg.CONFIG): _config,
    (MsgClass.MODEM, ModemMsg.RESET): _modem_reset,
    (MsgClass.MODEM, ModemMsg.SIM_SELECT): _sim_select,
    (MsgClass.MODEM, ModemMsg.STATUS): _modem_status,
}


def _split(buf: bytes, offset: int) -> tuple[int, int, bytes, int]:
    """(class, type, payload, next offset) of the message starting at ``offset``."""
    if len(buf) - offset < HEADER_LEN:
        raise ProtocolError(f"truncated header ({len(buf) - offset} bytes)")
    msg_class, msg_type, _seq, _slot, _res, msg_len = _HEADER.unpack_from(buf, offset)
    if msg_len < HEADER_LEN:
        raise ProtocolError(f"msg_len {msg_len} shorter than the header")
    end = offset + msg_len
    if end > len(buf):
        raise ProtocolError(f"msg_len {msg_len} exceeds the {len(buf) - offset} bytes present")
    return msg_class, msg_type, bytes(buf[offset + HEADER_LEN : end]), end


def _interpret(msg_class: int, msg_type: int, payload: bytes) -> Message:
    decoder = _DECODERS.get((msg_class, msg_type))
    if decoder is None:
        return Unknown(msg_class, msg_type, payload)
    return decoder(payload)


def decode(buf: bytes) -> Message:
    """Parse exactly one message; ``msg_len`` must equal ``len(buf)``."""
    msg_class, msg_type, payload, end = _split(buf, 0)
    if end != len(buf):
        raise ProtocolError(f"{len(buf) - end} bytes after the message")
    return _interpret(msg_class, msg_type, payload)


def iter_messages(buf: bytes) -> Iterator[Message]:
    """The messages of one transfer, split by ``msg_len``; raises at the first bad one."""
    offset = 0
    while offset < len(buf):
        msg_class, msg_type, payload, offset = _split(buf, offset)
        yield _interpret(msg_class, msg_type, payload)
