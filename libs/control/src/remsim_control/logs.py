"""Logging for the control-plane processes: stderr, human text by default or JSON lines."""

from __future__ import annotations

import json
import logging
import sys
import time
from typing import Literal

LogFormat = Literal["text", "json"]

# libosmocore's numeric levels, as given to the original's ``-d`` option.
_OSMO_LEVELS = {1: logging.DEBUG, 3: logging.INFO, 5: logging.INFO, 7: logging.ERROR, 8: 50}


def level_from_debug_mask(mask: str) -> str:
    """The most verbose level named in an original-style ``-d`` mask (``DMAIN,1:DRSPRO,3``);
    an item without a level (``DMAIN``) means everything."""
    levels = []
    for item in filter(None, mask.split(":")):
        _, _, level = item.partition(",")
        number = int(level) if level.strip().isdigit() else 0
        levels.append(_OSMO_LEVELS.get(number, logging.DEBUG) if number else logging.DEBUG)
    return logging.getLevelName(min(levels, default=logging.INFO))


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        line = {
            "time": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created))
            + f".{int(record.msecs):03d}Z",
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        if record.exc_info:
            line["exception"] = self.formatException(record.exc_info)
        return json.dumps(line)


def setup_logging(level: str = "INFO", log_format: LogFormat = "text") -> None:
    handler = logging.StreamHandler(sys.stderr)
    if log_format == "json":
        handler.setFormatter(JsonFormatter())
    else:
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)-7s %(name)s: %(message)s"))
    root = logging.getLogger()
    for old in root.handlers[:]:
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(level.upper())
