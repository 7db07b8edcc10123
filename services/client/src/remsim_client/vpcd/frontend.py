"""``VpcdFrontend``: the client's front-end for vpcd, the pcscd reader driver of vsmartcard.

It plays the remote card for vpcd: while its :class:`~.card.VpcdCard` says the card is in
the reader, it keeps a TCP connection to vpcd (``127.0.0.1:35963`` = reader ``Virtual PCD
00 00``; 35964 = ``Virtual PCD 00 01``), so every PC/SC application on the host sees the
remote card there; closing the connection removes the card. This module only moves bytes
and timers between the socket, the client core and the sans-IO card. It sends whole APDUs
when the bankd link is in remsim's APDU mode (see ``card.py``).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket

from rspro import ResultCode
from vpcd import VPCD_PORT

from ..frontend import ModemFrontend
from .card import (
    DEFAULT_APDU_TIMEOUT,
    Action,
    ConnectVpcd,
    DisconnectVpcd,
    ReportStatus,
    SendApdu,
    SendToVpcd,
    SendTpdu,
    VpcdCard,
)

__all__ = ["RECONNECT_INTERVAL", "VpcdFrontend"]

log = logging.getLogger("remsim.client.vpcd")

RECONNECT_INTERVAL = 1.0
"""Seconds between connection attempts while vpcd is unreachable."""
RESTART_PAUSE = 0.1
"""Seconds before reconnecting after vpcd closed the connection (pcscd restarting)."""

_QUICKACK: int | None = getattr(socket, "TCP_QUICKACK", None)


class _VpcdProtocol(asyncio.Protocol):
    def __init__(self, frontend: VpcdFrontend) -> None:
        self.frontend = frontend
        self.owner = asyncio.current_task()  # the connector that opened this connection
        self.transport: asyncio.Transport | None = None
        self._sock: socket.socket | None = None
        self.lost: asyncio.Future[None] = asyncio.get_running_loop().create_future()

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport
        # Kept for _quickack, which runs on every read.
        self._sock = sock = transport.get_extra_info("socket")
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self._quickack()
        self.frontend._vpcd_made(self)

    def _quickack(self) -> None:
        # Linux leaves quick-ACK mode by itself: re-arm it before every read, or vpcd's
        # length-then-body writes wait ~40 ms for our delayed ACK on every message.
        if _QUICKACK is not None and self._sock is not None:
            with contextlib.suppress(OSError):
                self._sock.setsockopt(socket.IPPROTO_TCP, _QUICKACK, 1)

    def data_received(self, data: bytes) -> None:
        self.frontend._vpcd_data(self, data)
        self._quickack()

    def connection_lost(self, exc: Exception | None) -> None:
        if not self.lost.done():
            self.lost.set_result(None)
        self.frontend._vpcd_lost(self)


class VpcdFrontend(ModemFrontend):
    """The client's front-end for vpcd: connects to ``host:port`` as the remote card.

    ``reconnect_interval``: how often to retry while vpcd is unreachable. Call
    :meth:`aclose` when done.
    """

    whole_apdus = True

    def __init__(
        self,
        host: str = "127.0.0.1",
        port: int = VPCD_PORT,
        *,
        apdu_timeout: float = DEFAULT_APDU_TIMEOUT,
        ignore_idle_power_cycles: bool = False,
        atr_ignore_rspro: bool = False,
        reconnect_interval: float = RECONNECT_INTERVAL,
    ) -> None:
        self.host = host
        self.port = port
        self.reconnect_interval = reconnect_interval
        self.card = VpcdCard(
            apdu_timeout=apdu_timeout,
            ignore_idle_power_cycles=ignore_idle_power_cycles,
            atr_ignore_rspro=atr_ignore_rspro,
        )
        self._protocol: _VpcdProtocol | None = None
        self._connector: asyncio.Task[None] | None = None
        self._timer: asyncio.TimerHandle | None = None

    @property
    def connected(self) -> bool:
        """Whether the card is in vpcd's reader (the TCP connection is up)."""
        return self._protocol is not None

    async def aclose(self) -> None:
        """Take the card out of the reader and stop reconnecting."""
        connector = self._connector
        self._do(self.card.card_remove())
        self._disconnect()
        if connector is not None:
            with contextlib.suppress(asyncio.CancelledError):
                await connector

    # --- hooks of the client core ------------------------------------------------------------

    def set_atr(self, atr: bytes) -> None:
        self._do(self.card.set_atr(atr))

    def card_insert(self) -> None:
        self._do(self.card.card_insert(apdu_mode=self.apdu_mode))

    def card_remove(self) -> None:
        self._do(self.card.card_remove())

    def card_to_modem(self, data: bytes) -> None:
        self._do(self.card.card_to_modem(data))

    def card_error(self, result: ResultCode, error: str | None) -> None:
        self._do(self.card.card_error(result, error))

    # --- carrying out actions ----------------------------------------------------------------

    def _do(self, actions: list[Action]) -> None:
        for action in actions:
            match action:
                case SendToVpcd(data):
                    if self._protocol is not None and self._protocol.transport is not None:
                        self._protocol.transport.write(data)
                case SendTpdu(data):
                    assert self.core is not None
                    self.core.modem_tpdu(data)
                case SendApdu(data):
                    assert self.core is not None
                    self.core.modem_apdu(data)
                case ReportStatus(status):
                    assert self.core is not None
                    self.core.modem_status(status)
                case ConnectVpcd():
                    if self._connector is None or self._connector.done():
                        self._connector = asyncio.get_running_loop().create_task(
                            self._keep_inserted(), name="vpcd"
                        )
                case DisconnectVpcd():
                    self._disconnect()
        self._arm_timer()

    def _arm_timer(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        deadline = self.card.next_deadline()
        if deadline is not None:
            self._timer = asyncio.get_running_loop().call_at(deadline, self._on_timer)

    def _on_timer(self) -> None:
        self._timer = None
        self._do(self.card.handle_timeout(asyncio.get_running_loop().time()))

    def _disconnect(self) -> None:
        connector, self._connector = self._connector, None
        if connector is not None:
            connector.cancel()
        protocol, self._protocol = self._protocol, None
        if protocol is not None and protocol.transport is not None:
            protocol.transport.close()  # FIN after what is queued: vpcd sees the card go
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None

    # --- the vpcd connection -----------------------------------------------------------------

    async def _keep_inserted(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            try:
                _, protocol = await loop.create_connection(
                    lambda: _VpcdProtocol(self), self.host, self.port
                )
            except OSError as exc:
                log.debug("vpcd %s:%d not reachable: %s", self.host, self.port, exc)
                await asyncio.sleep(self.reconnect_interval)
                continue
            try:
                await protocol.lost
            except asyncio.CancelledError:
                if protocol.transport is not None:
                    protocol.transport.close()
                raise
            log.info("vpcd: %s:%d closed the connection", self.host, self.port)
            # pcscd going away: do not spin while it restarts.
            await asyncio.sleep(min(self.reconnect_interval, RESTART_PAUSE))

    def _vpcd_made(self, protocol: _VpcdProtocol) -> None:
        # Here rather than after create_connection returns: vpcd's first message may be
        # delivered before the connector task runs again.
        if protocol.owner is not self._connector or protocol.transport is None:
            if protocol.transport is not None:
                protocol.transport.close()  # the card was removed meanwhile
            return
        self._protocol = protocol
        self._do(self.card.vpcd_connected())
        log.info("vpcd: connected to %s:%d, the card is in the reader", self.host, self.port)

    def _vpcd_data(self, protocol: _VpcdProtocol, data: bytes) -> None:
        if protocol is self._protocol:
            self._do(self.card.vpcd_data(data, asyncio.get_running_loop().time()))

    def _vpcd_lost(self, protocol: _VpcdProtocol) -> None:
        if protocol is self._protocol:  # not a connection we closed ourselves
            self._protocol = None
            self._do(self.card.vpcd_closed())
