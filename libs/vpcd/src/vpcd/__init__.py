"""vsmartcard's vpcd protocol, virtual card side (shared/spec/vpcd.md).

vpcd (the pcscd reader driver) listens on TCP 35963 + slot; a virtual card connects to it.
Every message both ways is a 2-byte big-endian length followed by that many bytes. From
vpcd, a 1-byte message is a control command (power off / power on / reset: no reply; get
ATR: reply the ATR), anything else a C-APDU (reply the R-APDU). Closing the connection is
how a card leaves the reader.

:class:`VpcdConnection` is the sans-IO part (bytes in, events out, framed replies out);
:class:`VpcdCardRunner` connects to vpcd and serves any :class:`VirtualCard`, blocking.
No third-party dependencies: a remsim client uses it without the bankd's PC/SC stack.
"""

from .errors import CardGone, MessageTooLong, VpcdError
from .protocol import (
    GET_ATR,
    MAX_CAPDU,
    MAX_MESSAGE,
    MAX_RAPDU,
    POWER_OFF,
    POWER_ON,
    RESET,
    VPCD_PORT,
    Apdu,
    Control,
    VpcdConnection,
    frame,
)
from .runner import SW_TOO_LONG, VirtualCard, VpcdCardRunner

__all__ = [
    "GET_ATR",
    "MAX_CAPDU",
    "MAX_MESSAGE",
    "MAX_RAPDU",
    "POWER_OFF",
    "POWER_ON",
    "RESET",
    "SW_TOO_LONG",
    "VPCD_PORT",
    "Apdu",
    "CardGone",
    "Control",
    "MessageTooLong",
    "VirtualCard",
    "VpcdCardRunner",
    "VpcdConnection",
    "VpcdError",
    "frame",
]
