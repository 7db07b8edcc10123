"""Scripted RSPRO peers for testing a bankd: the server's side of its control link, clients.

Built on ``remsim_testing.rspro_peers``: every peer is a ``ScriptedConnection`` that keeps
the frames as they arrived, so a test can compare what the bankd sends byte for byte with
recorded frames, split frames at will, or vanish mid-exchange. They answer PINGs as every peer does.
"""

from __future__ import annotations

from remsim_testing.rspro_peers import TIMEOUT, ScriptedConnection, ScriptedListener
from rspro import (
    BankSlot,
    CardInventoryInd,
    ClientSlot,
    ComponentIdentity,
    ComponentType,
    ConnectBankReq,
    ConnectBankRes,
    ConnectClientReq,
    ConnectClientRes,
    CreateMappingReq,
    CreateMappingRes,
    Message,
    RemoveMappingReq,
    RemoveMappingRes,
    ResultCode,
    TpduCardToModem,
    TpduModemToCard,
)

__all__ = [
    "CLIENT_IDENTITY",
    "SERVER_IDENTITY",
    "ScriptedServer",
    "connect_client",
    "create_mapping",
    "remove_mapping",
    "transceive",
]

SERVER_IDENTITY = ComponentIdentity(
    ComponentType.REMSIM_SERVER, "fixme-name", "remsim-server", "1.0.0"
)
CLIENT_IDENTITY = ComponentIdentity(ComponentType.REMSIM_CLIENT, "vm", "remsim-client", "1.0.0")


class ScriptedServer(ScriptedListener):
    """The remsim server's side of the bankd's control link, scripted by a test."""

    async def bankd(self, timeout: float = TIMEOUT) -> ScriptedConnection:
        """Accept the bankd's next connection and register it (connectBankRes ok)."""
        peer = await self.accept(timeout)
        msg, _ = await peer.recv(timeout)
        assert isinstance(msg, ConnectBankReq), msg
        peer.send(ConnectBankRes(SERVER_IDENTITY, ResultCode.OK))
        return peer


INVENTORY: tuple[type[Message], ...] = (CardInventoryInd,)
"""What a bankd may send a server of ours at any time (its card inventory): passed over
while waiting for an answer."""


async def create_mapping(
    server: ScriptedConnection, client: ClientSlot, bank: BankSlot
) -> ResultCode:
    server.send(CreateMappingReq(client, bank))
    res, _ = await server.expect(CreateMappingRes, skip=INVENTORY)
    return res.result


async def remove_mapping(
    server: ScriptedConnection, client: ClientSlot, bank: BankSlot
) -> ResultCode:
    server.send(RemoveMappingReq(client, bank))
    res, _ = await server.expect(RemoveMappingRes, skip=INVENTORY)
    return res.result


async def connect_client(
    port: int, slot: ClientSlot, timeout: float = TIMEOUT
) -> tuple[ScriptedConnection, list[Message]]:
    """Connect as client ``slot``; returns the peer and the answers (connectClientRes and,
    when it is ok, the setAtrReq)."""
    client = await ScriptedConnection.connect(port)
    client.send(ConnectClientReq(CLIENT_IDENTITY, slot))
    res, _ = await client.expect(ConnectClientRes, timeout=timeout)
    msgs: list[Message] = [res]
    if res.result is ResultCode.OK:
        msgs.append((await client.recv(timeout))[0])
    return client, msgs


async def transceive(
    client: ScriptedConnection, data: bytes, slot: ClientSlot, bank: BankSlot
) -> bytes:
    """One TPDU exchange; returns the R-APDU."""
    client.send(TpduModemToCard(slot, bank, data))
    res, _ = await client.expect(TpduCardToModem)
    assert (res.from_bank_slot, res.to_client_slot) == (bank, slot), res
    return res.data
