"""Connection limits of listeners (``ConnectionLimits``, sans-IO): at most ``per_port``
connections on one listening port, ``total`` on all of them together and ``per_address``
from one source address. A connection over a limit is refused at once (closed before it
is read), so that silent or hostile connections cannot use up the process's file
descriptors. The server's RSPRO ports and the bankd's client port count their
connections here.

The file descriptor limit (``ulimit -n``, systemd's ``LimitNOFILE``) caps what a daemon
can hold: ``fd_limit()`` reads it and ``connections_allowed`` is what fits in it, so that
a daemon refuses connections over that cap instead of running out of descriptors (which
would break everything else it does: its other ports, its files, its backend links).

An asyncio listener accepts as many connections in one go as its listen backlog, each
holding a descriptor until its handler refuses or serves it: a burst of a thousand
connects would take a thousand descriptors beyond any cap. The daemons' asyncio listeners
therefore accept ``ACCEPT_BURST`` at a time (``accept_in_bursts``), and their descriptor
reserves hold a few such bursts."""

from __future__ import annotations

import os
import resource
import socket
from collections import Counter
from typing import Literal, Protocol

__all__ = [
    "ACCEPT_BURST",
    "ConnectionLimits",
    "Limit",
    "accept_in_bursts",
    "connections_allowed",
    "fd_limit",
]

ACCEPT_BURST = 4
"""Connections an asyncio listener accepts in one go, before any of them is handled."""


class Listener(Protocol):
    def fileno(self) -> int: ...


def accept_in_bursts(listener: Listener, backlog: int) -> None:
    """Give a listening socket that asyncio serves with ``backlog=ACCEPT_BURST`` (which
    asyncio makes both its burst and the socket's listen backlog) a kernel queue of
    ``backlog`` connections again; asyncio keeps accepting ``ACCEPT_BURST`` at a time.
    ``listener``: a socket, or asyncio's ``TransportSocket`` of one."""
    with socket.socket(fileno=os.dup(listener.fileno())) as sock:  # the same listener
        sock.listen(backlog)


Limit = Literal["port", "address", "total"]


def fd_limit() -> int | None:
    """The process's file descriptor limit (the soft ``RLIMIT_NOFILE``); None if unlimited."""
    soft, _ = resource.getrlimit(resource.RLIMIT_NOFILE)
    return None if soft == resource.RLIM_INFINITY else soft


def connections_allowed(
    fds: int, *, reserve: int, fds_per_connection: int = 1, share: float = 1.0
) -> int:
    """The connections that fit in ``fds`` file descriptors (at least one): ``reserve``
    of them stay free for everything else; of the rest, ``share`` is for these
    connections, each taking ``fds_per_connection``."""
    return max(1, int((fds - reserve) * share) // fds_per_connection)


class ConnectionLimits:
    """``total``: connections on all ports together at most (None: no such limit)."""

    def __init__(self, per_port: int, per_address: int, total: int | None = None) -> None:
        self.per_port = per_port
        self.per_address = per_address
        self.total = total
        self._ports: Counter[int] = Counter()
        self._addresses: Counter[str] = Counter()

    def admit(self, port: int, address: str) -> Limit | None:
        """Count a new connection on ``port`` from ``address``; the limit it is over
        (then it is not counted), or ``None``: admitted, ``release`` it when it ends."""
        if self.total is not None and self.held() >= self.total:
            return "total"
        if self._ports[port] >= self.per_port:
            return "port"
        if self._addresses[address] >= self.per_address:
            return "address"
        self._ports[port] += 1
        self._addresses[address] += 1
        return None

    def release(self, port: int, address: str) -> None:
        """An admitted connection ended."""
        self._ports[port] -= 1
        if self._ports[port] <= 0:
            del self._ports[port]
        self._addresses[address] -= 1
        if self._addresses[address] <= 0:
            del self._addresses[address]

    def held(self, port: int | None = None, address: str | None = None) -> int:
        """The connections admitted and not released, on ``port`` or from ``address``."""
        if port is not None:
            return self._ports[port]
        if address is not None:
            return self._addresses[address]
        return sum(self._ports.values())
