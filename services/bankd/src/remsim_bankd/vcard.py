"""remsim-vcard: serve a software SIM to a local pcscd through vpcd.

    remsim-vcard --profile card0.json [--port 35963] [--host 127.0.0.1]

The card appears in pcscd's reader "Virtual PCD 00 00" (port 35963) or "... 00 01" (35964)
while this runs; SIGTERM/SIGINT remove it and exit 0. Options also come from
``REMSIM_VCARD_<FIELD>`` (logging from ``REMSIM_<FIELD>`` too) or a ``--config`` file.
Every log line carries the vpcd address as ``peer``, so the cards of one host tell apart.
"""

from __future__ import annotations

import argparse
import logging
import signal
import sys
from collections.abc import Sequence
from pathlib import Path
from types import FrameType

from pydantic import Field
from pydantic_settings import SettingsConfigDict

from remsim_common import CommonSettings, Program
from vpcd import VPCD_PORT, VpcdCardRunner

from .errors import ConfigError
from .sim.driver import SimCardDriver
from .sim.profile import load_profile
from .vpcd import CardAsVirtualCard

__all__ = ["PROGRAM", "VcardSettings", "main"]

log = logging.getLogger("remsim.vcard")

PROGRAM = Program("remsim-vcard", "remsim-bankd", categories={"DMAIN": ("remsim.vcard", "vpcd")})

RECONNECT_INTERVAL = 1.0
"""Seconds between attempts to reach vpcd."""

BAD_PROFILE = 2
"""The exit status for a profile that cannot be loaded (as for a bad option)."""


class VcardSettings(CommonSettings):
    """Every option of ``remsim-vcard``; environment variables ``REMSIM_VCARD_<FIELD>``."""

    model_config = SettingsConfigDict(env_prefix="REMSIM_VCARD_", extra="forbid")

    profile: Path = Field(description="card profile (.json or .yaml)")
    host: str = Field(default="127.0.0.1", min_length=1)
    port: int = Field(default=VPCD_PORT, ge=1, le=65535)
    reconnect_interval: float = Field(default=RECONNECT_INTERVAL, gt=0)


def _parser() -> argparse.ArgumentParser:
    p = PROGRAM.parser(__doc__.split("\n\n")[0])
    p.add_argument("--profile", metavar="PATH", help="card profile (.json, or .yaml); required")
    p.add_argument("--host", metavar="HOST", help="vpcd address (127.0.0.1)")
    p.add_argument("--port", metavar="PORT", help=f"vpcd port of the slot ({VPCD_PORT})")
    p.add_argument(
        "--reconnect-interval",
        metavar="SECONDS",
        help=f"seconds between attempts to reach vpcd ({RECONNECT_INTERVAL:g})",
    )
    return p


class _VpcdPeer(logging.Filter):
    """Adds the vpcd address to every log line as ``peer``."""

    def __init__(self, peer: str) -> None:
        super().__init__()
        self.peer = peer

    def filter(self, record: logging.LogRecord) -> bool:
        if not hasattr(record, "peer"):
            record.peer = self.peer
        return True


def main(argv: Sequence[str] | None = None) -> int:
    settings = PROGRAM.load(VcardSettings, _parser(), argv)
    PROGRAM.setup_logging(settings)
    peer = _VpcdPeer(f"{settings.host}:{settings.port}")
    for handler in logging.getLogger().handlers:
        handler.addFilter(peer)
    try:
        profile = load_profile(settings.profile)
    except ConfigError as e:
        log.error("%s", e)
        return BAD_PROFILE
    runner = VpcdCardRunner(
        CardAsVirtualCard(SimCardDriver(profile)),
        settings.host,
        settings.port,
        reconnect_interval=settings.reconnect_interval,
    )

    def _stop(signum: int, frame: FrameType | None) -> None:
        runner.stop()

    signal.signal(signal.SIGTERM, _stop)
    signal.signal(signal.SIGINT, _stop)
    log.info(
        "serving card %s (ICCID %s, IMSI %s, %s) to vpcd %s:%d",
        profile.name or settings.profile,
        profile.iccid,
        profile.imsi,
        "/".join(f"T={t}" for t in profile.protocols),
        settings.host,
        settings.port,
    )
    runner.run()
    log.info("stopped")
    return 0


if __name__ == "__main__":
    sys.exit(main())
