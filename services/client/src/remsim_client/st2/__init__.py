"""SIMtrace2 card emulation ("cardem") front-end for remsim-client-st2.

Layers, bottom up:

* :mod:`.protocol` - sans-IO codec of the SIMtrace2 USB messages,
* :mod:`.framing` - sans-IO assembly of those messages from USB IN packets,
* :mod:`.tpdu` - sans-IO T=0 TPDU assembly (procedure bytes, forwarding, responses),
* :mod:`.transfers` - queued (asynchronous) IN transfers under pyusb,
* :mod:`.usb` - device discovery/selection with pyusb and an asyncio transport,
* :mod:`.frontend` - the modem front-end the client core drives,
* :mod:`.cli` - the st2 command-line options and ``--list``.

The firmware simulator the tests run this against is test support:
``remsim_testing.st2_firmware``.
"""

from .errors import DeviceError, DeviceGone, ProtocolError, SelectionError, St2Error

__all__ = ["DeviceError", "DeviceGone", "ProtocolError", "SelectionError", "St2Error"]
