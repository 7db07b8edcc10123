"""SIMtrace2 card emulation ("cardem") front-end for remsim-client-st2.

Layers, bottom up:

* :mod:`.protocol` - sans-IO codec of the SIMtrace2 USB messages,
* :mod:`.tpdu` - sans-IO T=0 TPDU assembly (procedure bytes, forwarding, responses),
* :mod:`.usb` - device discovery/selection with pyusb and an asyncio transport,
* :mod:`.frontend` - the modem front-end the client core drives,
* :mod:`.simulator` - a cardem firmware + modem simulator behind a pyusb backend (tests),
* :mod:`.cli` - the st2 command-line options and ``--list``.
"""

from .errors import DeviceError, DeviceGone, ProtocolError, SelectionError, St2Error

__all__ = ["DeviceError", "DeviceGone", "ProtocolError", "SelectionError", "St2Error"]
