"""``remsim-bankd``: the command-line entry point."""

from __future__ import annotations

import asyncio
import json
import logging
import signal
import sys
from collections.abc import Sequence

from .bankd import Bankd, BankdConfig, bankd_identity
from .config import BankdSettings, load_slots_csv, package_version, parse_args
from .drivers import CardSource, sim_cards
from .errors import ConfigError

__all__ = ["configure_logging", "main", "run"]

log = logging.getLogger("remsim_bankd")

# The original's log categories (for -d) and the loggers they stand for.
CATEGORIES = {
    "DMAIN": ("remsim_bankd", "remsim_bankd.pcsc"),
    "DBANKDW": ("remsim_bankd.session", "remsim_bankd.clients", "remsim_bankd.worker"),
    "DSLOTMAP": ("remsim_bankd.mapping",),
    "DRSPRO": ("rspro", "remsim_bankd.control"),
    "DGSMTAP": ("remsim_bankd.gsmtap",),
}
# libosmocore's numeric levels
_LEVELS = {1: logging.DEBUG, 3: logging.INFO, 5: logging.INFO + 5, 7: logging.ERROR, 8: 50}


def _level(number: int) -> int:
    if number <= 0:
        return logging.DEBUG
    return next((lvl for n, lvl in sorted(_LEVELS.items()) if number <= n), logging.CRITICAL)


class _JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        entry = {
            "time": record.created,
            "level": record.levelname,
            "logger": record.name,
            "thread": record.threadName,
            "message": record.getMessage(),
        }
        if record.exc_info:
            entry["exc"] = self.formatException(record.exc_info)
        return json.dumps(entry)


def configure_logging(settings: BankdSettings) -> None:
    """stderr logging: ``-e`` level, ``-d`` category mask, ``-T`` timestamps, ``--log-format``."""
    handler = logging.StreamHandler(sys.stderr)
    if settings.log_format == "json":
        handler.setFormatter(_JsonFormatter())
    else:
        fmt = "%(levelname)s %(name)s: %(message)s"
        handler.setFormatter(
            logging.Formatter(("%(asctime)s " if settings.timestamp else "") + fmt)
        )
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(logging.INFO if settings.log_level is None else _level(settings.log_level))
    if settings.debug:
        # As libosmocore: the mask first disables every category, then enables those listed.
        for names in CATEGORIES.values():
            for name in names:
                logging.getLogger(name).setLevel(logging.CRITICAL + 1)
        for item in settings.debug.split(":"):
            category, _, level = item.partition(",")
            lvl = _level(int(level)) if level.strip().isdigit() else logging.DEBUG
            for name in CATEGORIES.get(category.strip().upper(), ()):
                logging.getLogger(name).setLevel(lvl)
        root.setLevel(min(root.level, logging.DEBUG))


def card_source(settings: BankdSettings) -> CardSource:
    if settings.card_driver == "sim":
        return sim_cards(settings.bank_id, settings.sim_profile)  # ConfigError if one is bad
    from .pcsc_card import PcscCards  # pyscard is only needed for this driver

    return PcscCards(load_slots_csv(settings.slots_csv), shared=settings.permit_shared_pcsc)


def config_from(settings: BankdSettings, sw_version: str | None = None) -> BankdConfig:
    port = settings.metrics_port
    return BankdConfig(
        identity=bankd_identity(settings.name, sw_version or package_version()),
        bank_id=settings.bank_id,
        num_slots=settings.num_slots,
        server=(settings.server_host, settings.server_port),
        bind=(settings.bind_ip or None, settings.bind_port),
        card_retry=settings.card_retry,
        gsmtap_host=settings.gsmtap_ip,
        gsmtap_slot=settings.gsmtap_slot,
        metrics=None if port is None else (settings.metrics_host, port),
    )


async def run(config: BankdConfig, cards: CardSource) -> None:
    """Run a bankd until SIGINT/SIGTERM."""
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    bankd = Bankd(config, cards)
    await bankd.start()
    log.info(
        "remsim-bankd %s: bank %d, %d slots, clients on port %d",
        config.identity.sw_version,
        config.bank_id,
        config.num_slots,
        bankd.port,
    )
    try:
        await stop.wait()
    finally:
        log.info("shutting down")
        await bankd.aclose()


def main(argv: Sequence[str] | None = None) -> int:
    settings = parse_args(argv)
    configure_logging(settings)
    try:
        cards = card_source(settings)
        config = config_from(settings)
    except ConfigError as exc:
        log.error("%s", exc)
        return 1
    try:
        asyncio.run(run(config, cards))
    except OSError as exc:  # a port cannot be bound, GSMTAP host unknown, ...
        log.error("cannot start: %s", exc)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
