"""Logging to stderr, configured like the original's ``-d MASK`` (client.md §13).

Log categories are logger names: ``DMAIN`` (client core), ``DRSPRO`` (the ``rspro``
library), ``DST2`` (SIMtrace2 front-end). ``MASK = CATEGORY[,LEVEL](:CATEGORY[,LEVEL])*``
disables everything, then enables each listed category from the libosmocore LEVEL on
(1 DEBUG, 3 INFO, 5 NOTICE, 7 ERROR, 8 FATAL; no LEVEL = everything).
"""

from __future__ import annotations

import json
import logging
import sys
from typing import TextIO

NOTICE = 25
logging.addLevelName(NOTICE, "NOTICE")

CATEGORIES: dict[str, tuple[str, ...]] = {
    "DMAIN": ("DMAIN",),
    "DRSPRO": ("DRSPRO", "rspro"),
    "DST2": ("DST2",),
}
_OFF = logging.CRITICAL + 10


def osmo_level(level: int) -> int:
    """A libosmocore numeric log level as a Python logging level."""
    if level <= 2:
        return logging.DEBUG
    if level <= 4:
        return logging.INFO
    if level <= 6:
        return NOTICE
    return logging.ERROR if level == 7 else logging.CRITICAL


def parse_debug_mask(mask: str) -> dict[str, int]:
    """``DMAIN,5:DRSPRO,1`` -> {"DMAIN": NOTICE, "DRSPRO": DEBUG}; raises ValueError."""
    levels: dict[str, int] = {}
    for token in filter(None, mask.split(":")):
        category, _, level = token.partition(",")
        category = category.strip().upper()
        if category not in CATEGORIES:
            raise ValueError(f"unknown log category {category!r}")
        levels[category] = osmo_level(int(level) if level.strip() else 0)
    return levels


class _ColorFormatter(logging.Formatter):
    _COLORS = {
        logging.DEBUG: "\033[1;34m",
        logging.INFO: "\033[1;32m",
        NOTICE: "\033[1;37m",
        logging.WARNING: "\033[1;33m",
        logging.ERROR: "\033[1;31m",
        logging.CRITICAL: "\033[1;35m",
    }

    def format(self, record: logging.LogRecord) -> str:
        text = super().format(record)
        color = self._COLORS.get(record.levelno)
        return f"{color}{text}\033[0m" if color else text


class _JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        entry = {
            "ts": round(record.created, 6),
            "level": record.levelname,
            "logger": record.name,
            "msg": record.getMessage(),
        }
        if record.exc_info:
            entry["exc"] = self.formatException(record.exc_info)
        return json.dumps(entry)


def setup_logging(
    debug: str | None = None,
    *,
    color: bool = True,
    log_format: str = "text",
    stream: TextIO | None = None,
) -> None:
    """Log to stderr: everything at INFO, or what ``debug`` (a ``-d`` mask) asks for."""
    stream = stream or sys.stderr
    handler = logging.StreamHandler(stream)
    fmt = "%(asctime)s %(name)s %(levelname)s %(message)s"
    if log_format == "json":
        handler.setFormatter(_JsonFormatter())
    elif color and stream.isatty():
        handler.setFormatter(_ColorFormatter(fmt))
    else:
        handler.setFormatter(logging.Formatter(fmt))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    if debug is None:
        root.setLevel(logging.INFO)
        return
    root.setLevel(_OFF)
    for names in CATEGORIES.values():
        for name in names:
            logging.getLogger(name).setLevel(_OFF)
    for category, level in parse_debug_mask(debug).items():
        for name in CATEGORIES[category]:
            logging.getLogger(name).setLevel(level)
