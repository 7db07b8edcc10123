"""``remsim-client-vpcd``: the remote card in a PC/SC reader, through vsmartcard's vpcd.

The options of every client (``remsim_client.options``) plus ``--vpcd-host``,
``--vpcd-port``, ``--apdu-timeout`` and ``--ignore-idle-power-cycles`` (client.md §12),
each also ``REMSIM_CLIENT_<FIELD>`` in the environment.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import signal
import sys

from pydantic import Field

from remsim_common import TransportSecurity
from vpcd import VPCD_PORT

from ..client import Client
from ..config import ClientConfig
from ..options import ClientSettings, client_parser, client_program, configure
from .card import DEFAULT_APDU_TIMEOUT
from .frontend import VpcdFrontend

__all__ = ["PROGRAM", "VpcdSettings", "build_parser", "main", "run_vpcd_client"]

log = logging.getLogger("remsim.client.vpcd")

PROGRAM = client_program("remsim-client-vpcd")


class VpcdSettings(ClientSettings):
    """The client settings plus the vpcd ones (``REMSIM_CLIENT_VPCD_HOST`` etc.)."""

    vpcd_host: str = Field("127.0.0.1", min_length=1)
    vpcd_port: int = Field(VPCD_PORT, ge=1, le=65535)
    apdu_timeout: float = Field(DEFAULT_APDU_TIMEOUT, gt=0)
    ignore_idle_power_cycles: bool = False

    def frontend(self) -> VpcdFrontend:
        return VpcdFrontend(
            self.vpcd_host,
            self.vpcd_port,
            apdu_timeout=self.apdu_timeout,
            ignore_idle_power_cycles=self.ignore_idle_power_cycles,
            atr_ignore_rspro=self.atr_ignore_rspro,
        )


def build_parser() -> argparse.ArgumentParser:
    p = client_parser(
        PROGRAM,
        "remsim client showing the remote card to PC/SC applications in a vsmartcard vpcd reader",
    )
    add = p.add_argument
    add("--vpcd-host", metavar="HOST", help="where vpcd (in pcscd) listens (default 127.0.0.1)")
    add("--vpcd-port", metavar="PORT",
        help=f"vpcd port: {VPCD_PORT} is its reader slot 0, {VPCD_PORT + 1} slot 1 "
        f"(default {VPCD_PORT})")  # fmt: skip
    add("--apdu-timeout", metavar="SECONDS",
        help="take the card out of the reader if it has not answered an APDU by then "
        f"(default {DEFAULT_APDU_TIMEOUT:g})")  # fmt: skip
    add("--ignore-idle-power-cycles", "--ignore-power-off", action="store_const", const=True,
        help="keep pcscd's power-off of an idle card local instead of cold-resetting the "
        "remote card")  # fmt: skip
    return p


async def run_vpcd_client(
    config: ClientConfig,
    frontend: VpcdFrontend,
    *,
    security: TransportSecurity = TransportSecurity.PLAINTEXT,
) -> int:
    """Run until SIGTERM/SIGINT; the exit status."""
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    try:
        async with Client(config, frontend, security=security):
            log.info("the card will appear at vpcd %s:%d", frontend.host, frontend.port)
            try:
                await stop.wait()
            finally:
                await frontend.aclose()
    finally:
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.remove_signal_handler(sig)
    return 0


def main(argv: list[str] | None = None) -> None:
    parser = build_parser()
    settings, security = configure(PROGRAM, VpcdSettings, parser, parser.parse_args(argv))
    config = settings.client_config()
    sys.exit(asyncio.run(run_vpcd_client(config, settings.frontend(), security=security)))
