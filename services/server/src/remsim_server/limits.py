"""The server's limits on its RSPRO listeners (counted by ``remsim_common.limits``) and
on its peer log lines."""

from __future__ import annotations

__all__ = ["LOG_INTERVAL", "MAX_CONNECTIONS", "MAX_CONNECTIONS_PER_ADDRESS"]

MAX_CONNECTIONS = 1000
"""Connections one RSPRO port holds at most (keep it below the process's file limit)."""
MAX_CONNECTIONS_PER_ADDRESS = 256
"""Connections one source address holds at most on all RSPRO ports together."""

LOG_INTERVAL = 10.0
"""Seconds between two log lines of the same peer error (``RateLimitedLog``)."""
