"""``remsim-client-st2``: a modem or phone on a SIMtrace2-family card emulator (USB) uses a
remote card. The client core with the st2 front-end (``remsim_client.st2``)."""

from __future__ import annotations

import asyncio
import signal
import sys
from typing import Any

from remsim_common import TransportSecurity

from .client import Client
from .config import ClientConfig
from .options import CATEGORIES, client_parser, client_program, configure
from .st2.cli import St2Options, St2Settings, add_st2_arguments
from .st2.errors import St2Error
from .st2.frontend import St2Frontend

PROGRAM = client_program("remsim-client-st2", {**CATEGORIES, "DST2": ("remsim.client.st2",)})


async def run_st2_client(
    config: ClientConfig,
    options: St2Options,
    *,
    backend: Any = None,
    security: TransportSecurity = TransportSecurity.PLAINTEXT,
) -> int:
    """Run until SIGTERM/SIGINT (0) or until the USB device fails or is not found (1).

    On SIGTERM/SIGINT with the card in use, the modem is switched back to its own SIM first.
    """
    try:
        frontend = await St2Frontend.open(
            options.selector, backend=backend, presence_high=options.presence_high
        )
    except St2Error as exc:
        print(f"remsim-client-st2: {exc}", file=sys.stderr)
        return 1
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    usb = asyncio.create_task(frontend.run())
    stopper = asyncio.create_task(stop.wait())
    client = Client(config, frontend, security=security)
    try:
        await client.start()
        await asyncio.wait((usb, stopper), return_when=asyncio.FIRST_COMPLETED)
    finally:
        # A clean stop takes the card away from the modem (card remove, local SIM, modem
        # reset) before the USB closes; with the device failed there is nobody to tell.
        await client.aclose(leave=not usb.done())
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.remove_signal_handler(sig)
        stopper.cancel()
        await frontend.aclose()
    try:
        await usb
    except St2Error as exc:
        print(f"remsim-client-st2: USB device failed: {exc}", file=sys.stderr)
        return 1
    return 0


def main(argv: list[str] | None = None) -> None:
    parser = client_parser(PROGRAM, "remsim client for a modem on a SIMtrace2 card emulator (USB)")
    add_st2_arguments(parser)
    args = parser.parse_args(argv)
    settings, security = configure(PROGRAM, St2Settings, parser, args)
    config = settings.client_config()
    sys.exit(asyncio.run(run_st2_client(config, settings.st2_options(), security=security)))


if __name__ == "__main__":
    main()
