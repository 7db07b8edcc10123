"""Client configuration and the hex formats of the original's command line and stdout."""

from __future__ import annotations

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


def hexdump(data: bytes) -> str:
    """The original's stdout format: lower-case hex, a space after every byte (``9f 17 ``)."""
    return data.hex(" ") + " " if data else ""
