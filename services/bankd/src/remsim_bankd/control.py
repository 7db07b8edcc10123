"""The control link to the remsim server: register the bank, take slotmap orders.

A reconnecting ``rspro.link.RsproLink`` (keepalive, back-off as the original's current
version) sends ``connectBankReq`` on every (re)connect; each request from the server
(``createMappingReq``, ``removeMappingReq``, ``resetStateReq``) is answered with what the
handler returns. A request the handler fails on is still answered (``illegalSlotId``, the
closest code RSPRO has): the server pairs replies with its requests by their order, so a
missing one would pin every later reply on the wrong slotmap. Replies carry the request's
operation tag (upstream's requests carry 0, so the bytes are the original's).

The link's socket security is the ``ssl`` context given (the bankd's
``TransportSecurity.client_context``; None: plaintext). With TLS, only a peer whose
certificate names ``urn:remsim:server`` is the server: any other is closed before the
connectBankReq (one log line) and retried as a connect that failed.

The card inventory (``report``) goes to the server as ``cardInventoryInd``, remsim's own
message: the latest report at every (re)connect and each new one at once. The bankd reports
only to a server known to be remsim's (``config.InventoryMode``).

Link events are counted in ``remsim_reconnects_total{link="server"}`` (connected again
after having been connected) and ``remsim_keepalive_timeouts_total{link="server"}``.
"""

from __future__ import annotations

import logging
import ssl as _ssl
from collections.abc import Callable
from typing import Any

from remsim_common import PeerIdentity
from rspro import (
    CardInfo,
    CardInventoryInd,
    ComponentIdentity,
    ComponentType,
    ConnectBankReq,
    CreateMappingReq,
    CreateMappingRes,
    Keepalive,
    KeepaliveTimeoutError,
    Message,
    RemoveMappingReq,
    RemoveMappingRes,
    ResetStateReq,
    ResetStateRes,
    ResultCode,
    RsproPdu,
)
from rspro.connection import DEFAULT_KEEPALIVE
from rspro.link import LinkState, RsproLink

from .core import certificate
from .metrics import SERVER_KEEPALIVE_TIMEOUTS, SERVER_RECONNECTS

__all__ = ["ControlLink"]

log = logging.getLogger("remsim.bankd.control")

# The reply type of each request the server sends, for the error reply.
_REPLIES: dict[type[Message], type[CreateMappingRes | RemoveMappingRes | ResetStateRes]] = {
    CreateMappingReq: CreateMappingRes,
    RemoveMappingReq: RemoveMappingRes,
    ResetStateReq: ResetStateRes,
}


def only_the_server(ssl_object: Any) -> str | None:
    """Why the TLS peer is not the server (its certificate does not name
    ``urn:remsim:server``), or None."""
    peer = PeerIdentity.from_peer(ssl_object)
    if peer is not None and peer.names("server"):
        return None
    return f"{certificate(peer)}, not urn:remsim:server"


class ControlLink:
    """The bankd's RSPRO link to the server (create it on the running loop)."""

    def __init__(
        self,
        handle: Callable[[Message], Message | None],
        identity: ComponentIdentity,
        bank_id: int,
        num_slots: int,
        *,
        keepalive: Keepalive = DEFAULT_KEEPALIVE,
        ssl: _ssl.SSLContext | None = None,
    ) -> None:
        self.identity = identity
        self.bank_id = bank_id
        self.num_slots = num_slots
        self._handle = handle
        self._was_connected = False
        self.inventory: CardInventoryInd | None = None
        """The latest card inventory report (sent at every (re)connect)."""
        self.link = RsproLink(
            name="server",
            connect_req=lambda: ConnectBankReq(identity, bank_id, num_slots),
            peer_type=ComponentType.REMSIM_SERVER,
            on_pdu=self._on_pdu,
            on_connected=self._on_connected,
            on_lost=self._on_lost,
            keepalive=keepalive,
            ssl=ssl,
            accept_peer=None if ssl is None else only_the_server,
        )

    @property
    def state(self) -> LinkState:
        return self.link.state

    @property
    def connected(self) -> bool:
        return self.link.connected

    def start(self, host: str, port: int) -> None:
        log.info("connecting to server %s:%s", host, port, extra={"bank": self.bank_id})
        self.link.establish(host, port)

    async def aclose(self) -> None:
        await self.link.aclose()

    def report(self, cards: tuple[CardInfo, ...]) -> None:
        """Send the card inventory now if connected, and at every later (re)connect."""
        self.inventory = CardInventoryInd(self.bank_id, cards)
        if self.connected:
            self.link.send(self.inventory)

    def _on_connected(self) -> None:
        if self._was_connected:
            SERVER_RECONNECTS.inc()
        self._was_connected = True
        if self.inventory is not None:
            self.link.send(self.inventory)

    def _on_lost(self) -> None:
        if isinstance(self.link.last_error, KeepaliveTimeoutError):
            SERVER_KEEPALIVE_TIMEOUTS.inc()

    def _on_pdu(self, pdu: RsproPdu) -> None:
        try:
            reply = self._handle(pdu.msg)
        except Exception:
            log.exception("handling %s failed", pdu.msg)
            reply_type = _REPLIES.get(type(pdu.msg))
            if reply_type is None:
                return
            reply = reply_type(ResultCode.ILLEGAL_SLOT_ID)
        if reply is None:
            log.error("unexpected %s from the server: ignored", type(pdu.msg).__name__)
        else:
            self.link.send(RsproPdu(reply, tag=pdu.tag))
