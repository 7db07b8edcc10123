"""The vpcd front-end: the remote card in a PC/SC reader through vsmartcard's vpcd.

Layers, bottom up:

* :mod:`.card` - ``VpcdCard``, the sans-IO card as vpcd sees it (events and time in,
  actions out),
* :mod:`.frontend` - ``VpcdFrontend``, the asyncio front-end around it for ``Client``,
* :mod:`.cli` - ``remsim-client-vpcd``: its options and main.
"""

from .card import (
    DEFAULT_APDU_TIMEOUT,
    STATUS_RESET,
    SW_WRONG_LENGTH,
    ConnectVpcd,
    DisconnectVpcd,
    ReportStatus,
    SendApdu,
    SendToVpcd,
    SendTpdu,
    VpcdCard,
)
from .frontend import VpcdFrontend

__all__ = [
    "DEFAULT_APDU_TIMEOUT",
    "STATUS_RESET",
    "SW_WRONG_LENGTH",
    "ConnectVpcd",
    "DisconnectVpcd",
    "ReportStatus",
    "SendApdu",
    "SendToVpcd",
    "SendTpdu",
    "VpcdCard",
    "VpcdFrontend",
]
