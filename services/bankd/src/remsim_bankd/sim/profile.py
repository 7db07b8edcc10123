"""Card profiles: what one software SIM holds (identities, keys, PINs, file contents).

Loaded from JSON or YAML. Byte strings are written as hex; ICCID and IMSI as the digits
people read (the EF encodings are derived from them).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    PlainSerializer,
    ValidationError,
    model_validator,
)

from ..errors import ConfigError
from .atr import parse_atr
from .milenage import opc_from_op

__all__ = [
    "DEFAULT_ATRS",
    "LARGE_EF_FID",
    "RECORDED_ATR",
    "T0T1_ATR",
    "T1_ATR",
    "CardProfile",
    "Protocol",
    "encode_iccid",
    "encode_imsi",
    "load_profile",
]

# ATR of the virtual card used for the upstream recordings: T=0 only (a SIM).
RECORDED_ATR = bytes.fromhex("3B9F96801FC78031A073BE21136743200718000001A5")
# T=1 only: TA1 96, TD1 81 (T=1), TD2 31 (T=1: TA3 IFSC 254, TB3 BWI 4 CWI 5), historical
# bytes "remsimT1", TCK.
T1_ATR = bytes.fromhex("3B98968131FE4572656D73696D54316D")
# T=0 first, then T=1: as T1_ATR but TD1 80 (T=0), historical bytes "remsimT01".
T0T1_ATR = bytes.fromhex("3B99968031FE4572656D73696D5430315D")

Protocol = Literal["t0", "t1", "t0t1"]
# The ATR of a profile that gives none, by protocol.
DEFAULT_ATRS: dict[str, bytes] = {"t0": RECORDED_ATR, "t1": T1_ATR, "t0t1": T0T1_ATR}
# The protocols each setting's ATRs must offer, in order.
_OFFERS = {"t1": (1,), "t0t1": (0, 1)}

# FID of the large transparent test EF under the MF (profile field `large_ef`).
LARGE_EF_FID = 0x2F50


def _hex(value: Any) -> Any:
    if isinstance(value, str):
        return bytes.fromhex(value.replace(" ", "").replace(":", ""))
    return value


Hex = Annotated[bytes, BeforeValidator(_hex), PlainSerializer(lambda b: b.hex(), return_type=str)]


def _pin_bytes(value: str) -> bytes:
    """PIN/PUK/ADM as on the card: ASCII digits padded with FF to 8 bytes (16 hex digits = raw)."""
    if len(value) == 16 and not value.isdigit():
        return bytes.fromhex(value)
    return value.encode("ascii").ljust(8, b"\xff")


def _swap_nibbles(digits: str) -> bytes:
    if len(digits) % 2:
        digits += "f"
    return bytes(int(digits[i + 1] + digits[i], 16) for i in range(0, len(digits), 2))


def encode_iccid(iccid: str) -> bytes:
    """EF_ICCID contents: BCD with swapped nibbles ("8949…" → 98 94 …), F-padded."""
    return _swap_nibbles(iccid)


def encode_imsi(imsi: str) -> bytes:
    """EF_IMSI contents (TS 31.102 §4.2.2): length byte, then parity nibble + digits, swapped."""
    parity = "9" if len(imsi) % 2 else "1"
    body = _swap_nibbles(parity + imsi)
    return bytes([len(body)]) + body.ljust(8, b"\xff")


def _digits(lo: int, hi: int) -> Any:
    return Field(pattern=rf"^[0-9]{{{lo},{hi}}}$")


class CardProfile(BaseModel):
    """One software SIM card."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str = ""
    # Transmission protocol: "t0" (a SIM), "t1" (T=1 only: Le and extended lengths honoured)
    # or "t0t1" (offers both, T=0 first). The default ATR follows it (DEFAULT_ATRS).
    protocol: Protocol = "t0"
    atr: Hex = RECORDED_ATR
    # For tests of ATR changes: successive cold resets (power-ups) answer atr, atr_cycle[0],
    # atr_cycle[1], ..., then atr again. Warm resets keep the current ATR.
    atr_cycle: tuple[Hex, ...] = ()
    iccid: str = _digits(18, 20)
    imsi: str = _digits(6, 15)
    ki: Hex
    opc: Hex | None = None
    op: Hex | None = None  # alternative to opc: OPc is derived from OP and Ki
    pin1: str = Field(default="1234", pattern=r"^[0-9]{4,8}$")
    pin1_enabled: bool = True
    pin1_retries: int = Field(default=3, ge=1, le=15)
    puk1: str = Field(default="12345678", pattern=r"^[0-9]{8}$")
    puk1_retries: int = Field(default=10, ge=1, le=15)
    pin2: str = Field(default="5678", pattern=r"^[0-9]{4,8}$")
    pin2_enabled: bool = True
    pin2_retries: int = Field(default=3, ge=1, le=15)
    puk2: str = Field(default="87654321", pattern=r"^[0-9]{8}$")
    puk2_retries: int = Field(default=10, ge=1, le=15)
    adm1: str | None = None  # 8 digits, or 16 hex digits for a raw key; None: no ADM access
    adm1_retries: int = Field(default=10, ge=1, le=15)
    sqn: int = Field(default=0, ge=0, lt=1 << 48)  # SQN_MS: highest SQN accepted so far
    ad: Hex = bytes.fromhex("00000002")  # EF_AD: normal operation, 2-digit MNC
    ust: Hex = bytes.fromhex("0000000420000000")  # EF_UST: services 27, 38 (GSM access, context)
    loci: Hex = bytes.fromhex("ffffffffffffff0000ff01")  # EF_LOCI: no TMSI, not updated
    # GET CHALLENGE: "random" (os.urandom) or "counting" (00 01 02 ..., as the recorded card).
    challenge: Literal["random", "counting"] = "random"
    # Size of EF.LARGE (FID 2F50 under the MF, transparent, read/update always allowed),
    # contents byte i = i % 251; 0: no such file.
    large_ef: int = Field(default=0, ge=0, le=0xFFFF)

    @model_validator(mode="before")
    @classmethod
    def _default_atr(cls, data: Any) -> Any:
        if isinstance(data, dict) and "atr" not in data and data.get("protocol") in _OFFERS:
            data = {**data, "atr": DEFAULT_ATRS[data["protocol"]]}
        return data

    @model_validator(mode="after")
    def _keys(self) -> CardProfile:
        if len(self.ki) != 16:
            raise ValueError("ki must be 16 bytes")
        if (self.opc is None) == (self.op is None):
            raise ValueError("give exactly one of opc and op")
        for key in (self.opc, self.op):
            if key is not None and len(key) != 16:
                raise ValueError("opc/op must be 16 bytes")
        for atr in (self.atr, *self.atr_cycle):
            if not 2 <= len(atr) <= 33:
                raise ValueError("an ATR has 2..33 bytes")
            offers = _OFFERS.get(self.protocol)
            if offers is not None:  # t0 profiles keep any ATR, as before
                info = parse_atr(atr)  # ValueError names what is wrong
                if info.protocols != offers:
                    want = " and ".join(f"T={t}" for t in offers)
                    raise ValueError(f"protocol {self.protocol}: ATR {atr.hex()} must offer {want}")
                if not info.tck_ok:
                    raise ValueError(f"ATR {atr.hex()} has a wrong TCK")
        if self.adm1 is not None:
            _pin_bytes(self.adm1)
        return self

    @property
    def opc_value(self) -> bytes:
        """OPc, derived from OP if the profile gives OP."""
        if self.opc is not None:
            return self.opc
        assert self.op is not None
        return opc_from_op(self.ki, self.op)

    @property
    def protocols(self) -> tuple[int, ...]:
        """The protocols the card offers, first the default one: (0,), (1,) or (0, 1)."""
        return _OFFERS.get(self.protocol, (0,))

    @property
    def ef_iccid(self) -> bytes:
        return encode_iccid(self.iccid)

    @property
    def ef_imsi(self) -> bytes:
        return encode_imsi(self.imsi)

    def pin_bytes(self, which: str) -> bytes | None:
        """The stored value of `pin1`, `puk1`, `pin2`, `puk2` or `adm1`, card-encoded."""
        value: str | None = getattr(self, which)
        return None if value is None else _pin_bytes(value)


def load_profile(path: str | Path) -> CardProfile:
    """Read a profile from a .json (or .yaml/.yml) file.

    Raises ``ConfigError`` with a one-line message naming the file and what is wrong.
    """
    path = Path(path)
    try:
        text = path.read_text()
    except OSError as exc:
        raise ConfigError(f"cannot load profile {path}: {exc.strerror or exc}") from exc
    except UnicodeDecodeError as exc:
        raise ConfigError(f"cannot load profile {path}: not a text file ({exc.reason})") from exc
    try:
        yaml_file = path.suffix in (".yaml", ".yml")
        return CardProfile.model_validate(yaml.safe_load(text) if yaml_file else json.loads(text))
    except yaml.YAMLError as exc:
        raise ConfigError(f"cannot load profile {path}: bad YAML{_yaml_where(exc)}") from exc
    except json.JSONDecodeError as exc:
        where = f"line {exc.lineno}, column {exc.colno}"
        raise ConfigError(f"cannot load profile {path}: bad JSON at {where}: {exc.msg}") from exc
    except ValidationError as exc:
        raise ConfigError(f"cannot load profile {path}: {_validation_summary(exc)}") from exc


def _yaml_where(exc: yaml.YAMLError) -> str:
    if isinstance(exc, yaml.MarkedYAMLError) and exc.problem_mark is not None:
        mark = exc.problem_mark
        return f" at line {mark.line + 1}, column {mark.column + 1}: {exc.problem}"
    return ": " + " ".join(str(exc).split())


def _validation_summary(exc: ValidationError) -> str:
    """pydantic's errors on one line: ``ki: Value error, ki must be 16 bytes; pin1: …``."""
    parts = []
    for error in exc.errors():
        where = ".".join(str(x) for x in error["loc"]) or "profile"
        parts.append(f"{where}: {error['msg']}")
    return "; ".join(parts)
