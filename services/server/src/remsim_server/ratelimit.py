"""Log lines about peers, at most one per interval and cause: a flood of hostile
connections costs a few lines, and the lines left out are counted in the next one."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Mapping
from typing import Any

LOG_INTERVAL = 10.0
"""Seconds between two log lines of the same cause."""


class RateLimitedLog:
    """``log(level, cause, msg, ...)`` writes to ``logger`` unless a line of the same
    ``cause`` was written less than ``interval`` seconds ago. Causes are a few fixed
    words (never a peer address), so the memory is bounded."""

    def __init__(
        self,
        logger: logging.Logger,
        interval: float = LOG_INTERVAL,
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
