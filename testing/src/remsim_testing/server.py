"""Scripted bankds and clients (``remsim_testing.rspro_peers.ScriptedConnection``, over
real TCP, keeping the exact bytes of every frame) registered with a server, and a server on
free ports."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator

import rspro
from remsim_control import Bus, Store
from remsim_server.server import RemsimServer
from remsim_server.settings import ServerSettings
from remsim_testing.rspro_peers import ScriptedConnection

BANKD_IDENTITY = rspro.ComponentIdentity(
    rspro.ComponentType.REMSIM_BANKD, "fixme-name", "remsim-bankd", "1.0.0"
)
CLIENT_IDENTITY = rspro.ComponentIdentity(
    rspro.ComponentType.REMSIM_CLIENT, "vm", "remsim-client", "1.0.0"
)


async def connect_bankd(port: int, bank_id: int = 1, slots: int = 2) -> ScriptedConnection:
    """A bankd that has connected, been accepted, and answered the server's resetStateReq
    (the maps it must hold come next)."""
    bankd = await ScriptedConnection.connect(port)
    bankd.send(rspro.ConnectBankReq(BANKD_IDENTITY, bank_id, slots))
    answer, _ = await bankd.expect(rspro.ConnectBankRes)
    assert answer.result is rspro.ResultCode.OK
    await bankd.expect(rspro.ResetStateReq)
    bankd.send(rspro.ResetStateRes(rspro.ResultCode.OK))
    return bankd


async def connect_client(port: int, client_id: int = 23, slot_nr: int = 0) -> ScriptedConnection:
    """A client that has connected and been accepted."""
    client = await ScriptedConnection.connect(port)
    client.send(rspro.ConnectClientReq(CLIENT_IDENTITY, rspro.ClientSlot(client_id, slot_nr)))
    answer, _ = await client.expect(rspro.ConnectClientRes)
    assert answer.result is rspro.ResultCode.OK
    return client


def server_settings(**overrides: object) -> ServerSettings:
    """Settings for a server on free ports of 127.0.0.1 with the reference identity, its
    store in memory (whatever ``REMSIM_STORE``/``REMSIM_STATE_DIR`` say) unless
    ``overrides`` name a state directory or Redis."""
    shared = {"state_dir", "redis_url", "nats_url"} & set(overrides)
    values: dict[str, object] = {"store": None if shared else "memory", "state_dir": None}
    values |= {
        "rspro_host": "127.0.0.1",
        "rspro_port": 0,
        "rest_host": "127.0.0.1",
        "rest_port": 0,
        "identity_name": "fixme-name",
        "sw_version": "1.0.0",
        "log_level": "WARNING",
    }
    values.update(overrides)
    return ServerSettings(**values)  # type: ignore[arg-type]


@contextlib.asynccontextmanager
async def running_server(
    settings: ServerSettings | None = None, store: Store | None = None, bus: Bus | None = None
) -> AsyncIterator[RemsimServer]:
    server = RemsimServer(settings or server_settings(), store, bus)
    await server.start()
    try:
        yield server
    finally:
        await server.aclose()
