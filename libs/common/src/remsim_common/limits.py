"""Connection limits of a listener, sans-IO: at most ``per_port`` connections on one
listening port and ``per_address`` from one source address. A connection over a limit is
refused at once (closed before it is read), so that silent or hostile connections cannot
use up the process's file descriptors. The server's RSPRO ports and the bankd's client
port count their connections here."""

from __future__ import annotations

from collections import Counter
from typing import Literal

__all__ = ["ConnectionLimits", "Limit"]

Limit = Literal["port", "address"]


class ConnectionLimits:
    def __init__(self, per_port: int, per_address: int) -> None:
        self.per_port = per_port
        self.per_address = per_address
        self._ports: Counter[int] = Counter()
        self._addresses: Counter[str] = Counter()

    def admit(self, port: int, address: str) -> Limit | None:
        """Count a new connection on ``port`` from ``address``; the limit it is over
        (then it is not counted), or ``None``: admitted, ``release`` it when it ends."""
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
