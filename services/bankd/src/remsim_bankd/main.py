"""``remsim-bankd``: the command-line entry point."""

from __future__ import annotations

import asyncio
import logging
import signal
import sys
from collections.abc import Sequence

from remsim_common import TransportSecurity

from .bankd import Bankd, BankdConfig
from .config import PROGRAM, BankdSettings, load_slots_csv, parse_args
from .drivers import CardSource, sim_cards
from .errors import ConfigError

__all__ = ["card_source", "main", "run"]

log = logging.getLogger("remsim.bankd")


def card_source(settings: BankdSettings) -> CardSource:
    if settings.card_driver == "sim":
        return sim_cards(settings.bank_id, settings.sim_profile)  # ConfigError if one is bad
    from .pcsc_card import PcscCards  # pyscard is only needed for this driver

    return PcscCards(load_slots_csv(settings.slots_csv), shared=settings.permit_shared_pcsc)


async def run(
    config: BankdConfig,
    cards: CardSource,
    security: TransportSecurity = TransportSecurity.PLAINTEXT,
) -> None:
    """Run a bankd until SIGINT/SIGTERM."""
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    bankd = Bankd(config, cards, security)
    await bankd.start()
    log.info(
        "remsim-bankd %s: bank %d, %d slots, clients on port %d",
        config.identity.sw_version,
        config.bank_id,
        config.num_slots,
        bankd.port,
        extra={"bank": config.bank_id},
    )
    try:
        await stop.wait()
    finally:
        log.info("shutting down")
        await bankd.aclose()


def main(argv: Sequence[str] | None = None) -> int:
    settings = parse_args(argv)
    PROGRAM.setup_logging(settings)
    try:
        cards = card_source(settings)
        security = TransportSecurity.from_settings(settings)
    except ConfigError as exc:
        log.error("%s", exc)
        return 1
    except OSError as exc:  # TLS files that cannot be used (ssl.SSLError included)
        log.error("cannot use the TLS files: %s", exc)
        return 1
    try:
        asyncio.run(run(BankdConfig.from_settings(settings), cards, security))
    except OSError as exc:  # a port cannot be bound, GSMTAP host unknown, ...
        log.error("cannot start: %s", exc)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
