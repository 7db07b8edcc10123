"""The server's limits on its RSPRO listeners (counted by ``remsim_common.limits``) and
on its peer log lines.

The file descriptor limit (``ulimit -n``, systemd's ``LimitNOFILE``) caps the connections
too: ``FD_RESERVE`` descriptors stay free for everything else, and of the rest, REST
connections take ``1 - RSPRO_FD_SHARE`` but at most ``REST_CONNECTIONS_MAX``, and RSPRO
connections (one descriptor each, on all RSPRO ports together) the remainder
(``fd_caps``). Over a cap a connection is refused at once, so the process never runs out
of descriptors: with ``ulimit -n 1024``, 480 RSPRO and 480 REST connections; with 20,000,
18,912 RSPRO (10,000 clients fit) and 1,024 REST."""

from __future__ import annotations

from remsim_common.limits import connections_allowed

__all__ = [
    "FD_RESERVE",
    "LOG_INTERVAL",
    "MAX_CONNECTIONS",
    "MAX_CONNECTIONS_PER_ADDRESS",
    "REST_CONNECTIONS_MAX",
    "RSPRO_FD_SHARE",
    "fd_caps",
]

MAX_CONNECTIONS = 1000
"""Connections one RSPRO port holds at most (the file descriptor limit may lower it:
``fd_caps``)."""
MAX_CONNECTIONS_PER_ADDRESS = 256
"""Connections one source address holds at most on all RSPRO ports together."""

FD_RESERVE = 64
"""File descriptors kept free of connections: the listeners, the event loop, the logs,
the store (SQLite) and the links to Redis and NATS."""
RSPRO_FD_SHARE = 0.5
"""The share of the other file descriptors that RSPRO connections may take at least; REST
connections (closed once idle or slow, ``rest_request_timeout``) get the rest, up to
``REST_CONNECTIONS_MAX``."""
REST_CONNECTIONS_MAX = 1024
"""REST connections at most, however many descriptors there are: back-ends, apitool and
dashboards need far fewer, and the descriptors beyond are for RSPRO peers (two per client
and bankd slot in a large fleet)."""

LOG_INTERVAL = 10.0
"""Seconds between two log lines of the same peer error (``RateLimitedLog``)."""


def fd_caps(fds: int) -> tuple[int, int]:
    """The RSPRO connections (all ports together) and the REST connections a server with
    ``fds`` file descriptors holds at most."""
    rest = min(
        connections_allowed(fds, reserve=FD_RESERVE, share=1 - RSPRO_FD_SHARE),
        REST_CONNECTIONS_MAX,
    )
    rspro = connections_allowed(fds, reserve=FD_RESERVE + rest)
    return rspro, rest
