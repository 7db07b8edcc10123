"""Logging for every remsim program: stderr, ``text`` or ``json``, the original's level rules.

Levels are given as names (``DEBUG``, ``INFO``, ``NOTICE``, ``WARNING``, ``ERROR``, ``FATAL``)
or as libosmocore's numbers (1 DEBUG, 3 INFO, 5 NOTICE, 7 ERROR, 8 FATAL; a number between
two levels means the next one up, 0 means everything), so ``-e INFO`` and ``-e 3`` are the
same.

The original's ``-d MASK`` (``CATEGORY[,LEVEL](:CATEGORY[,LEVEL])*``, e.g.
``DMAIN,1:DRSPRO,5``) works as in libosmocore: every category of the program is switched
off, then each listed one is switched on from its LEVEL (no LEVEL: everything). A program
names its categories and the loggers behind each (``{"DRSPRO": ("rspro",)}``); categories it
does not have (libosmocore's own, such as ``DLINP``) are ignored with a warning. The global
level (``-e``) is a floor over everything.

One JSON layout everywhere, one object per line::

    {"time": "2026-12-01T22:18:56.123+00:00", "level": "INFO", "logger": "remsim.bankd",
     "message": "client connected", "bank": 1, "slot": 0, "client": 23}

Structured fields come from ``extra=``: use the names in ``FIELDS`` (``log.info("client
connected", extra={"bank": 1, "slot": 0})``) rather than ids in the message text. The text
layout shows them as ``key=value`` after the message.
"""

from __future__ import annotations

import datetime
import logging
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any, Literal, TextIO

from pythonjsonlogger.core import RESERVED_ATTRS
from pythonjsonlogger.json import JsonFormatter

__all__ = [
    "FIELDS",
    "NOTICE",
    "RATE_LIMIT_INTERVAL",
    "LogFormat",
    "RateLimitedLog",
    "parse_level",
    "parse_mask",
    "setup_logging",
]

LogFormat = Literal["text", "json"]

NOTICE = 25
"""libosmocore's NOTICE, between INFO and WARNING."""
logging.addLevelName(NOTICE, "NOTICE")

OFF = logging.CRITICAL + 10
"""A logger level above every record's: the category is switched off."""

FIELDS = ("bank", "slot", "client", "client_slot", "bank_slot", "peer", "map", "core", "cause")
"""Structured fields a log call may pass in ``extra``; shown in both layouts."""

_NAMES = {
    "DEBUG": logging.DEBUG,
    "INFO": logging.INFO,
    "NOTICE": NOTICE,
    "WARNING": logging.WARNING,
    "WARN": logging.WARNING,
    "ERROR": logging.ERROR,
    "FATAL": logging.CRITICAL,
    "CRITICAL": logging.CRITICAL,
}
# libosmocore's numeric levels, lowest first
_OSMO = ((1, logging.DEBUG), (3, logging.INFO), (5, NOTICE), (7, logging.ERROR), (8, 50))


def parse_level(value: str | int) -> int:
    """A log level from its name or libosmocore number, as a Python level; ValueError."""
    text = str(value).strip()
    if text.isdigit():
        number = int(text)
        if number == 0:
            return logging.DEBUG
        for osmo, level in _OSMO:
            if number <= osmo:
                return level
        raise ValueError(f"log level {number} is out of range: 0..8")
    try:
        return _NAMES[text.upper()]
    except KeyError:
        raise ValueError(
            f"unknown log level {text!r}: one of DEBUG, INFO, NOTICE, WARNING, ERROR, FATAL "
            "or a number 0..8"
        ) from None


def parse_mask(mask: str) -> dict[str, int]:
    """``DMAIN,1:DRSPRO`` -> ``{"DMAIN": DEBUG, "DRSPRO": DEBUG}``; ValueError if malformed."""
    levels: dict[str, int] = {}
    for item in mask.split(":"):
        category, _, level = item.strip().partition(",")
        category = category.strip().upper()
        if not category:
            continue
        levels[category] = parse_level(level) if level.strip() else logging.DEBUG
    return levels


def _rfc3339(created: float) -> str:
    moment = datetime.datetime.fromtimestamp(created, tz=datetime.UTC)
    return moment.isoformat(timespec="milliseconds")


class _Json(JsonFormatter):
    """python-json-logger with remsim's keys: time, level, logger, message, then fields."""

    def __init__(self) -> None:
        super().__init__(
            "{asctime}{levelname}{name}{message}",
            style="{",
            rename_fields={
                "asctime": "time",
                "levelname": "level",
                "name": "logger",
                "exc_info": "exception",
            },
            reserved_attrs=[*RESERVED_ATTRS, "taskName", "color_message"],
        )

    def formatTime(self, record: logging.LogRecord, datefmt: str | None = None) -> str:
        return _rfc3339(record.created)


class _Text(logging.Formatter):
    """``TIME LEVEL LOGGER: message key=value …``."""

    def __init__(self, timestamps: bool) -> None:
        super().__init__(
            ("%(asctime)s " if timestamps else "") + "%(levelname)s %(name)s: %(message)s"
        )

    def formatTime(self, record: logging.LogRecord, datefmt: str | None = None) -> str:
        return _rfc3339(record.created)

    def format(self, record: logging.LogRecord) -> str:
        text = super().format(record)
        fields = " ".join(f"{key}={getattr(record, key)}" for key in FIELDS if hasattr(record, key))
        if not fields:
            return text
        head, newline, rest = text.partition("\n")  # a traceback stays below the first line
        return f"{head} {fields}{newline}{rest}"


def setup_logging(
    *,
    level: int | None = None,
    mask: str | None = None,
    log_format: LogFormat = "text",
    categories: Mapping[str, Sequence[str]] | None = None,
    timestamps: bool = True,
    stream: TextIO | None = None,
) -> None:
    """Configure the root logger for this process, replacing what was there.

    ``level`` is the global floor (``-e``; None: INFO without a mask, no floor with one);
    ``mask`` the original's ``-d`` over the program's ``categories``.
    """
    handler = logging.StreamHandler(stream or sys.stderr)
    handler.setFormatter(_Json() if log_format == "json" else _Text(timestamps))
    handler.setLevel(logging.NOTSET if level is None else level)
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(logging.INFO if level is None else level)
    logging.captureWarnings(True)
    categories = categories or {}
    wanted = {} if mask is None else parse_mask(mask)
    for names in categories.values():
        for name in names:
            logging.getLogger(name).setLevel(logging.NOTSET if mask is None else OFF)
    unknown = []
    for category, category_level in wanted.items():
        if category not in categories:
            unknown.append(category)
            continue
        for name in categories[category]:
            logging.getLogger(name).setLevel(category_level)
    if unknown:
        logging.getLogger("remsim").warning(
            "log categories %s are not used by this program (it has %s)",
            ", ".join(unknown),
            ", ".join(categories) or "none",
        )


def log_extra(**fields: Any) -> dict[str, Any]:
    """``extra=`` for a log call, without the fields that are None."""
    return {key: value for key, value in fields.items() if value is not None}


# --- log lines about peers under attack ---------------------------------------------------

RATE_LIMIT_INTERVAL = 10.0
"""Seconds between two log lines of the same cause (``RateLimitedLog``'s default)."""


class RateLimitedLog:
    """``log(level, cause, msg, ...)`` writes to ``logger`` unless a line of the same
    ``cause`` was written less than ``interval`` seconds ago. Causes are a few fixed
    words (never a peer address), so the memory is bounded."""

    def __init__(
        self,
        logger: logging.Logger,
        interval: float = RATE_LIMIT_INTERVAL,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.logger = logger
        self.interval = interval
        self.clock = clock
        self._last: dict[str, float] = {}
        self._left_out: dict[str, int] = {}

    def log(
        self,
        level: int,
        cause: str,
        msg: str,
        *args: object,
        extra: Mapping[str, Any] | None = None,
    ) -> bool:
        """Write the line (True), or count it as left out (False)."""
        now = self.clock()
        last = self._last.get(cause)
        if last is not None and now - last < self.interval:
            self._left_out[cause] = self._left_out.get(cause, 0) + 1
            return False
        self._last[cause] = now
        if left_out := self._left_out.pop(cause, 0):
            msg = f"{msg} (and {left_out} more like it since the last such line)"
        self.logger.log(level, msg, *args, extra=extra)
        return True
