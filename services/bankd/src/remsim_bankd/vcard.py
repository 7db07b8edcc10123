"""remsim-vcard: serve a software SIM to a local pcscd through vpcd.

    remsim-vcard --profile card0.json [--port 35963] [--host 127.0.0.1]

The card appears in pcscd's reader "Virtual PCD 00 00" (port 35963) or "... 00 01" (35964)
while this runs; SIGTERM/SIGINT remove it and exit 0.
"""

from __future__ import annotations

import argparse
import logging
import signal
import sys
from types import FrameType

from vpcd import VPCD_PORT, VpcdCardRunner

from .errors import ConfigError
from .sim.driver import SimCardDriver
from .sim.profile import load_profile
from .vpcd import CardAsVirtualCard

__all__ = ["main"]

log = logging.getLogger("remsim_bankd.vcard")


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="remsim-vcard", description=__doc__.split("\n\n")[0])
    p.add_argument("--profile", required=True, help="card profile (.json, or .yaml)")
    p.add_argument("--host", default="127.0.0.1", help="vpcd address (default %(default)s)")
    p.add_argument(
        "--port", type=int, default=VPCD_PORT, help="vpcd port of the slot (default %(default)s)"
    )
    p.add_argument(
        "--reconnect-interval",
        type=float,
        default=1.0,
        help="seconds between attempts to reach vpcd (default %(default)s)",
    )
    p.add_argument(
        "--log-level",
        default="INFO",
        choices=["DEBUG", "INFO", "WARNING", "ERROR"],
        help="stderr log level; DEBUG logs every APDU (default %(default)s)",
    )
    return p


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    logging.basicConfig(
        level=args.log_level,
        stream=sys.stderr,
        format="%(asctime)s %(levelname)s vcard[:%(port)s] %(message)s".replace(
            "%(port)s", str(args.port)
        ),
    )
    try:
        profile = load_profile(args.profile)
    except ConfigError as e:
        log.error("%s", e)
        return 2
    runner = VpcdCardRunner(
        CardAsVirtualCard(SimCardDriver(profile)),
        args.host,
        args.port,
        reconnect_interval=args.reconnect_interval,
    )

    def _stop(signum: int, frame: FrameType | None) -> None:
        runner.stop()

    signal.signal(signal.SIGTERM, _stop)
    signal.signal(signal.SIGINT, _stop)
    log.info(
        "serving card %s (ICCID %s, IMSI %s) to vpcd %s:%d",
        profile.name or args.profile,
        profile.iccid,
        profile.imsi,
        args.host,
        args.port,
    )
    runner.run()
    log.info("stopped")
    return 0


if __name__ == "__main__":
    sys.exit(main())
