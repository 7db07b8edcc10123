"""Scripted RSPRO peers playing the remsim-server and the bankds a client connects to, shared
by the tests of every client front-end.

A ``ScriptedPeer`` is a ``remsim_testing.rspro_peers.ScriptedListener`` on 127.0.0.1; each
connection it accepts is a ``ScriptedConnection`` that reads in the background, answers
PINGs and keeps every frame exactly as it arrived, so a test can compare what the client
sends byte for byte with the recordings of the original (reference/upstream-1.0.0: identity
"vm", swVersion "1.0.0", client C23:0) and see whether a frame was written in pieces.
"""

from __future__ import annotations

import asyncio
import dataclasses
import ipaddress
from collections.abc import Callable
from typing import Any

from remsim_client.config import ClientConfig
from remsim_testing.rspro_peers import TIMEOUT, ScriptedConnection, ScriptedListener
from rspro import (
    BankSlot,
    ClientSlot,
    ComponentIdentity,
    ComponentType,
    ConfigClientBankReq,
    ConnectClientReq,
    ConnectClientRes,
    IpPort,
    ResultCode,
)

__all__ = [
    "B1_0",
    "BANKD_IDENTITY",
    "C23",
    "SERVER_IDENTITY",
    "TIMEOUT",
    "ScriptedPeer",
    "client_config",
    "config_bank",
    "eventually",
]

C23 = ClientSlot(23, 0)  # the client of the recordings
B1_0 = BankSlot(1, 0)
SERVER_IDENTITY = ComponentIdentity(
    ComponentType.REMSIM_SERVER, "fixme-name", "remsim-server", "1.0.0"
)
BANKD_IDENTITY = ComponentIdentity(
    ComponentType.REMSIM_BANKD, "fixme-name", "remsim-bankd", "1.0.0"
)


class ScriptedPeer(ScriptedListener):
    """A scripted remsim-server or bankd on 127.0.0.1 (a free port) for a client to use."""

    def __init__(self, identity: ComponentIdentity) -> None:
        super().__init__()
        self.identity = identity  # sent in every ConnectClientRes

    async def accept_client(
        self, result: ResultCode = ResultCode.OK
    ) -> tuple[ScriptedConnection, bytes]:
        """Accept a client and answer its ConnectClientReq; returns the request's frame."""
        conn = await self.accept()
        _, raw = await conn.expect(ConnectClientReq)
        conn.send(ConnectClientRes(self.identity, result))
        return conn, raw


def config_bank(peer: ScriptedPeer | None, bank: BankSlot = B1_0) -> ConfigClientBankReq:
    """The server's configClientBankReq for the bankd ``peer``; None: no bankd (0.0.0.0:0)."""
    if peer is None:
        return ConfigClientBankReq(bank, IpPort(ipaddress.IPv4Address(0), 0))
    return ConfigClientBankReq(bank, IpPort(ipaddress.IPv4Address("127.0.0.1"), peer.port))


def client_config(
    server: ScriptedPeer, client_slot: ClientSlot = C23, **overrides: Any
) -> ClientConfig:
    """A client of ``server`` with the identity of the original's recordings."""
    config = ClientConfig(
        server_host="127.0.0.1",
        server_port=server.port,
        client_slot=client_slot,
        name="vm",
        sw_version="1.0.0",
    )
    return dataclasses.replace(config, **overrides)


async def eventually(predicate: Callable[[], bool], timeout: float = TIMEOUT) -> None:
    """Until ``predicate()`` holds (polled, since the client runs on the same loop)."""
    async with asyncio.timeout(timeout):
        while not predicate():
            await asyncio.sleep(0.002)
