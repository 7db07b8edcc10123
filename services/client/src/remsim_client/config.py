"""Client configuration and the hex formats of the original's command line and stdout."""

from __future__ import annotations

import enum
import socket
from dataclasses import dataclass, field

from remsim_common import CONTROL_PORT, distribution_version
from rspro import ClientSlot, ComponentIdentity, ComponentType, Keepalive

from .errors import ConfigError

DEFAULT_ATR = bytes.fromhex("3b00")
"""The shortest possible ATR, shown to the modem until the bankd sends the card's."""
MAX_ATR = 55
SOFTWARE = "remsim-client"
DISTRIBUTION = "remsim-client"
NO_CLIENT_SLOT = ClientSlot(0, 0)
"""What the original sends when -c/-n are not given."""
DEFAULT_KEEPALIVE = Keepalive()
NAME_MAX = 32  # ComponentName is IA5String (SIZE (1..32))


class ApduMode(enum.StrEnum):
    """Whether the client offers remsim's APDU mode to its bankd (``--apdu-mode``).

    In APDU mode the client sends whole command APDUs (short or extended, up to
    ``rspro.MAX_APDU`` bytes) and gets whole response APDUs, one round trip each; the bankd
    speaks T=0 or T=1 to the card. The offer goes on the bankd link only, and only from a
    front-end that sends whole APDUs (not st2); the bankd must accept it.
    """

    AUTO = "auto"
    """Offer it only to a bankd that is ours: over TLS, whose certificate names
    ``urn:remsim:bankd:<id>`` (the original speaks no TLS). Plaintext: the original's bytes."""
    ON = "on"
    """Offer it also over plaintext, for an operator who knows the bankd is ours."""
    OFF = "off"
    """Never: TPDU mode, the original's bytes."""


def package_version() -> str:
    """The installed remsim-client's version: the RSPRO identity's default swVersion."""
    return distribution_version(DISTRIBUTION)


def host_name() -> str:
    """The RSPRO identity name: the host name, cut to what the ASN.1 type allows."""
    return (socket.gethostname() or "remsim-client")[:NAME_MAX]


@dataclass(frozen=True, slots=True)
class ClientConfig:
    server_host: str = "127.0.0.1"
    server_port: int = CONTROL_PORT
    client_slot: ClientSlot = NO_CLIENT_SLOT
    atr: bytes = DEFAULT_ATR
    atr_ignore_rspro: bool = False
    """Keep presenting ``atr`` whatever ATR the bankd sends (still answered ok)."""
    event_script: str | None = None
    modem_status_upstream: bool = False
    """Run ``event-modem-status`` when the status did *not* change, like the original."""
    name: str = field(default_factory=host_name)
    software: str = SOFTWARE
    sw_version: str = field(default_factory=package_version)
    keepalive: Keepalive | None = DEFAULT_KEEPALIVE
    apdu_mode: ApduMode = ApduMode.AUTO
    """Whether to offer the bankd remsim's APDU mode (see :class:`ApduMode`)."""

    @property
    def identity(self) -> ComponentIdentity:
        return ComponentIdentity(
            ComponentType.REMSIM_CLIENT,
            self.name[:NAME_MAX],
            self.software[:NAME_MAX],
            self.sw_version[:NAME_MAX],
        )


_HEX_DIGITS = frozenset("0123456789abcdefABCDEF")


def parse_hex(text: str, whitespace: str = " \t\r\n") -> bytes:
    """Hex digits with whitespace allowed anywhere; raises ValueError unless well-formed."""
    digits = "".join(c for c in text if c not in whitespace)
    if len(digits) % 2 or not _HEX_DIGITS.issuperset(digits):
        raise ValueError(f"not an even number of hex digits: {text!r}")
    return bytes.fromhex(digits)


def parse_atr(text: str) -> bytes:
    """An ATR option value: 2..55 bytes of hex (the original rejects anything else)."""
    try:
        atr = parse_hex(text)
    except ValueError:
        raise ConfigError("ATR malformed") from None
    if not 2 <= len(atr) <= MAX_ATR:
        raise ConfigError("ATR malformed")
    return atr


def is_extended_apdu(apdu: bytes) -> bool:
    """Whether a C-APDU uses extended lengths (ISO 7816-4 §5.1: a zero byte after the header
    and more to follow), which only the APDU mode carries: a short APDU's fifth byte is a
    non-zero Lc or is the last byte (Le), and a T=0 TPDU with P3 = 0 carries no data."""
    return len(apdu) >= 7 and apdu[4] == 0


def atr_protocols(atr: bytes) -> frozenset[int]:
    """The transmission protocols (T=0, T=1, ...) an ATR offers (ISO 7816-3 §8.2.3): those
    its TDi bytes name, or T=0 alone without TD1. A truncated ATR offers what it names."""
    protocols: set[int] = set()
    i, y = 1, atr[1] >> 4 if len(atr) > 1 else 0  # T0's Y1
    while y:
        i += bin(y & 0x7).count("1")  # TAi, TBi, TCi
        if not y & 0x8 or i + 1 >= len(atr):
            break
        i += 1
        td = atr[i]
        if td & 0x0F != 0x0F:  # T=15: global interface bytes, not a protocol
            protocols.add(td & 0x0F)
        y = td >> 4
    return frozenset(protocols) or frozenset({0})


def hexdump(data: bytes) -> str:
    """The original's stdout format: lower-case hex, a space after every byte (``9f 17 ``)."""
    return data.hex(" ") + " " if data else ""
