"""The control link to the remsim server: register the bank, take slotmap orders.

A reconnecting ``rspro.link.RsproLink`` (keepalive, back-off as the original's current
version) carries ``connectBankReq``; the server's ``createMappingReq``,
``removeMappingReq`` and ``resetStateReq`` go to the core and are answered with its
result code. Responses carry the request's operation tag (upstream's requests carry 0, so
the bytes are the original's).
"""

from __future__ import annotations

import logging
from collections.abc import Callable

from rspro import (
    ComponentIdentity,
    ComponentType,
    ConnectBankReq,
    CreateMappingReq,
    CreateMappingRes,
    Keepalive,
    Message,
    RemoveMappingReq,
    RemoveMappingRes,
    ResetStateReq,
    ResetStateRes,
    RsproPdu,
)
from rspro.connection import DEFAULT_KEEPALIVE
from rspro.link import LinkState, RsproLink

from .core import Action, BankdCore

__all__ = ["ControlLink"]

log = logging.getLogger("remsim_bankd.control")


class ControlLink:
    """The bankd's RSPRO link to the server (create it on the running loop)."""

    def __init__(
        self,
        core: BankdCore,
        dispatch: Callable[[list[Action]], None],
        identity: ComponentIdentity,
        *,
        keepalive: Keepalive = DEFAULT_KEEPALIVE,
    ) -> None:
        self.core = core
        self.identity = identity
        self._dispatch = dispatch
        self.link = RsproLink(
            name="server",
            connect_req=self._connect_req,
            peer_type=ComponentType.REMSIM_SERVER,
            on_pdu=self._on_pdu,
            keepalive=keepalive,
        )

    @property
    def state(self) -> LinkState:
        return self.link.state

    @property
    def connected(self) -> bool:
        return self.link.connected

    def start(self, host: str, port: int) -> None:
        log.info("connecting to server %s:%s as bank %d", host, port, self.core.bank_id)
        self.link.establish(host, port)

    async def aclose(self) -> None:
        await self.link.aclose()

    def _connect_req(self) -> Message:
        return ConnectBankReq(self.identity, self.core.bank_id, self.core.num_slots)

    def _on_pdu(self, pdu: RsproPdu) -> None:
        msg = pdu.msg
        reply: Message
        if isinstance(msg, CreateMappingReq):
            result, actions = self.core.create_mapping(msg.client, msg.bank)
            reply = CreateMappingRes(result)
        elif isinstance(msg, RemoveMappingReq):
            result, actions = self.core.remove_mapping(msg.client, msg.bank)
            reply = RemoveMappingRes(result)
        elif isinstance(msg, ResetStateReq):
            result, actions = self.core.reset_state()
            reply = ResetStateRes(result)
        else:
            log.error("unexpected %s from the server: ignored", type(msg).__name__)
            return
        self._dispatch(actions)
        self.link.send(RsproPdu(reply, tag=pdu.tag))
