"""The control procedures over real TCP: scripted bankds and clients, REST over HTTP.

Frames the server sends in the reference scenarios are compared byte for byte with the
original's (shared/reference/upstream-1.0.0, server identity "fixme-name" / "1.0.0"), with
one deliberate difference: the original never sends ``resetStateReq``; this server sends it
to a bankd right after ``connectBankRes`` and on a global reset (the bankd drops every map,
then is sent the ones it must hold: reconciliation; the original bankd implements it).
"""

import asyncio
import logging
import socket
from collections.abc import Awaitable, Callable
from typing import Any

import httpx
import pytest

import rspro
from remsim_common.logs import FIELDS
from remsim_control import ClientSlot, MemoryBus, MemoryStore
from remsim_server.server import RemsimServer
from remsim_testing.rspro_peers import ScriptedConnection
from remsim_testing.server import (
    BANKD_IDENTITY,
    CLIENT_IDENTITY,
    connect_bankd,
    connect_client,
    running_server,
    server_settings,
)

OK = rspro.ResultCode.OK
ILLEGAL_SLOT = rspro.ResultCode.ILLEGAL_SLOT_ID

# The original server's frames (README.md of the reference, messages.jsonl src == "server").
CONNECT_BANK_RES = bytes.fromhex(
    "0037ee073034800102810100a22ca12a30250a0101160a6669786d652d6e616d65800d72656d73696d2d"
    "7365727665728105312e302e300a0100"
)
CONNECT_CLIENT_RES = bytes.fromhex(
    "0038ee07303580010281020926a22ca32a30250a0101160a6669786d652d6e616d65800d72656d73696d"
    "2d7365727665728105312e302e300a0100"
)
CREATE_B1_0_C23_0 = bytes.fromhex(
    "001dee07301a800102810100a212a41030060201170201003006020101020100"
)
CREATE_B1_1_C24_0 = bytes.fromhex(
    "001dee07301a800102810100a212a41030060201180201003006020101020101"
)
REMOVE_B1_0_C23_0 = bytes.fromhex(
    "001dee07301a800102810100a212a61030060201170201003006020101020100"
)
REMOVE_B1_1_C24_0 = bytes.fromhex(
    "001dee07301a800102810100a212a61030060201180201003006020101020101"
)
CONFIG_B1_0 = bytes.fromhex(
    "0021ee07301e800102810100a216b1143006020101020100300a80047f0000010202270f"
)
CONFIG_B1_1 = bytes.fromhex(
    "0021ee07301e800102810100a216b1143006020101020101300a80047f0000010202270f"
)
RESET_STATE_REQ = bytes.fromhex("000dee07300a800102810100a202b300")  # rspro-wire.md §7.4
UNMAP_B1_0 = bytes.fromhex("0020ee07301d800102810100a215b11330060201010201003009800400000000020100")
UNMAP_B1_1 = bytes.fromhex("0020ee07301d800102810100a215b11330060201010201013009800400000000020100")


def body(bank: int, bank_slot: int, client: int, client_slot: int) -> dict[str, Any]:
    return {
        "bank": {"bankId": bank, "slotNr": bank_slot},
        "client": {"clientId": client, "slotNr": client_slot},
    }


async def create(rest: httpx.AsyncClient, *slots: int) -> dict[str, Any]:
    response = await rest.post("/slotmaps", json=body(*slots))
    assert response.status_code == 201, response.text
    created: dict[str, Any] = response.json()
    return created


async def slotmaps(rest: httpx.AsyncClient) -> list[dict[str, Any]]:
    response = await rest.get("/slotmaps")
    listed: list[dict[str, Any]] = response.json()["slotmaps"]
    return listed


async def eventually(check: Callable[[], Awaitable[bool]], timeout: float = 2.0) -> None:
    async with asyncio.timeout(timeout):
        while not await check():
            await asyncio.sleep(0.01)


async def states(rest: httpx.AsyncClient) -> dict[int, str]:
    return {slotmap["id"]: slotmap["state"] for slotmap in await slotmaps(rest)}


async def map_and_activate(
    rest: httpx.AsyncClient, bankd: ScriptedConnection, client: ScriptedConnection
) -> None:
    """B1:0 <-> C23:0, acknowledged by the bankd and the client."""
    await create(rest, 1, 0, 23, 0)
    await bankd.expect(rspro.CreateMappingReq)
    bankd.send(rspro.CreateMappingRes(OK))
    await client.expect(rspro.ConfigClientBankReq)
    client.send(rspro.ConfigClientBankRes(OK))


# --- connecting ----------------------------------------------------------------------------


async def test_a_bankd_connects_and_is_listed(
    server: RemsimServer, rest: httpx.AsyncClient
) -> None:
    bankd = await ScriptedConnection.connect(server.rspro_port)
    bankd.send(rspro.ConnectBankReq(BANKD_IDENTITY, 1, 2))
    _, frame = await bankd.expect(rspro.ConnectBankRes)
    assert frame == CONNECT_BANK_RES
    assert bankd.pings == 1  # the server pings every accepted connection at once
    _, frame = await bankd.expect(rspro.ResetStateReq)  # not the original: reconciliation
    assert frame == RESET_STATE_REQ
    bankd.send(rspro.ResetStateRes(OK))
    [bank] = (await rest.get("/banks")).json()["banks"]
    assert bank["peer"] == "B1" and bank["state"] == "CONNECTED_BANKD"
    assert (bank["bankId"], bank["numberOfSlots"]) == (1, 2)
    assert bank["bankd"] == {"ip": "127.0.0.1", "port": 9999}
    await bankd.aclose()
    await eventually(lambda: _empty(rest, "/banks", "banks"))


async def test_a_client_connects_and_is_listed(
    server: RemsimServer, rest: httpx.AsyncClient
) -> None:
    client = await ScriptedConnection.connect(server.rspro_port)
    client.send(rspro.ConnectClientReq(CLIENT_IDENTITY, rspro.ClientSlot(23, 0)))
    _, frame = await client.expect(rspro.ConnectClientRes)
    assert frame == CONNECT_CLIENT_RES
    await client.expect_nothing()  # no map, no configuration
    response = await rest.get("/clients")
    assert response.content == (
        b'{"clients":[{"peer":"C23:0","state":"CONNECTED_CLIENT","component_id":{"type_":'
        b'"remsimClient","name":"vm","software":"remsim-client","swVersion":"1.0.0"},'
        b'"clientId":23,"slotNr":0}]}'
    )
    await client.aclose()


@pytest.mark.parametrize("kind", ["bankd", "client"])
async def test_a_duplicate_identity_is_refused_with_identity_in_use(
    server: RemsimServer, rest: httpx.AsyncClient, kind: str, caplog: pytest.LogCaptureFixture
) -> None:
    first = await (connect_bankd if kind == "bankd" else connect_client)(server.rspro_port)
    second = await ScriptedConnection.connect(server.rspro_port)
    if kind == "bankd":
        second.send(rspro.ConnectBankReq(BANKD_IDENTITY, 1, 2))
        answer: rspro.Message = (await second.expect(rspro.ConnectBankRes))[0]
    else:
        second.send(rspro.ConnectClientReq(CLIENT_IDENTITY, rspro.ClientSlot(23, 0)))
        answer = (await second.expect(rspro.ConnectClientRes))[0]
    assert answer.result is rspro.ResultCode.IDENTITY_IN_USE  # type: ignore[attr-defined]
    await second.expect_closed(timeout=3)  # 1 s later, as the original
    (refusal,) = [r for r in caplog.records if "identityInUse" in r.getMessage()]
    if kind == "bankd":
        assert refusal.bank == 1  # type: ignore[attr-defined]
    else:
        assert refusal.client_slot == "C23:0"  # type: ignore[attr-defined]
    assert refusal.peer.startswith("127.0.0.1:")  # type: ignore[attr-defined]
    listed = (await rest.get(f"/{kind.removesuffix('d')}s")).json()
    assert len(next(iter(listed.values()))) == 1
    await first.aclose()


@pytest.mark.parametrize(
    "request_",
    [
        rspro.ConnectBankReq(CLIENT_IDENTITY, 1, 2),
        rspro.ConnectClientReq(CLIENT_IDENTITY, None),
    ],
    ids=["wrong-identity-type", "no-client-slot"],
)
async def test_a_bad_connect_request_is_closed_without_reply(
    server: RemsimServer, request_: rspro.Message
) -> None:
    peer = await ScriptedConnection.connect(server.rspro_port)
    peer.send(request_)
    await peer.expect_closed()


async def test_a_connection_that_never_identifies_is_closed() -> None:
    async with running_server() as server:
        server.core.identify_timeout = 0.2
        peer = await ScriptedConnection.connect(server.rspro_port)
        await peer.expect_closed()


async def test_a_peer_that_stops_answering_pings_is_dropped() -> None:
    async with running_server(server_settings(keepalive_interval=0.1, keepalive_timeout=0.2)) as s:
        base = f"http://127.0.0.1:{s.rest_port}/api/backend/v1"
        async with httpx.AsyncClient(base_url=base) as rest:
            bankd = await connect_bankd(s.rspro_port)
            await asyncio.sleep(0.5)
            assert bankd.pings >= 2  # PING, PONG, 0.1 s idle, PING ...
            assert len((await rest.get("/banks")).json()["banks"]) == 1
            bankd.pong = False
            await bankd.expect_closed()
            assert (await rest.get("/banks")).json() == {"banks": []}


# --- the slotmap life cycle ----------------------------------------------------------------


async def test_create_pushes_the_map_to_the_bankd_then_configures_the_client(
    server: RemsimServer, rest: httpx.AsyncClient
) -> None:
    bankd = await connect_bankd(server.rspro_port)
    client = await connect_client(server.rspro_port)
    created = await create(rest, 1, 0, 23, 0)
    assert created["id"] == 65536 and created["state"] == "NEW"
    _, frame = await bankd.expect(rspro.CreateMappingReq)
    assert frame == CREATE_B1_0_C23_0
    assert await states(rest) == {65536: "UNACKNOWLEDGED"}
    await client.expect_nothing()  # not before the bankd has the map
    bankd.send(rspro.CreateMappingRes(OK))
    _, frame = await client.expect(rspro.ConfigClientBankReq)
    assert frame == CONFIG_B1_0
    assert await states(rest) == {65536: "ACTIVE"}
    client.send(rspro.ConfigClientBankRes(OK))
    await bankd.expect_nothing()


async def test_delete_removes_the_map_at_the_bankd_then_unconfigures_the_client(
    server: RemsimServer, rest: httpx.AsyncClient
) -> None:
    bankd = await connect_bankd(server.rspro_port)
    client = await connect_client(server.rspro_port)
    await map_and_activate(rest, bankd, client)
    assert (await rest.delete("/slotmaps/65536")).status_code == 200
    assert await slotmaps(rest) == []  # hidden at once, as the original
    assert (await rest.delete("/slotmaps/65536")).status_code == 404
    _, frame = await bankd.expect(rspro.RemoveMappingReq)
    assert frame == REMOVE_B1_0_C23_0
    await client.expect_nothing()  # only once the bankd has dropped it
    bankd.send(rspro.RemoveMappingRes(OK))
    _, frame = await client.expect(rspro.ConfigClientBankReq)
    assert frame == UNMAP_B1_0
    client.send(rspro.ConfigClientBankRes(OK))


async def test_global_reset_removes_every_map_the_same_way(
    server: RemsimServer, rest: httpx.AsyncClient
) -> None:
    bankd = await connect_bankd(server.rspro_port)
    c23 = await connect_client(server.rspro_port, 23)
    c24 = await connect_client(server.rspro_port, 24)
    await create(rest, 1, 0, 23, 0)
    await create(rest, 1, 1, 24, 0)
    assert (await bankd.expect(rspro.CreateMappingReq))[1] == CREATE_B1_0_C23_0
    assert (await bankd.expect(rspro.CreateMappingReq))[1] == CREATE_B1_1_C24_0
    bankd.send(rspro.CreateMappingRes(OK))
    bankd.send(rspro.CreateMappingRes(OK))
    assert (await c23.expect(rspro.ConfigClientBankReq))[1] == CONFIG_B1_0
    assert (await c24.expect(rspro.ConfigClientBankReq))[1] == CONFIG_B1_1
    assert (await rest.post("/global-reset")).status_code == 200
    assert await slotmaps(rest) == []
    # Not the original: the bankd also drops the maps the server does not know.
    assert (await bankd.expect(rspro.ResetStateReq))[1] == RESET_STATE_REQ
    bankd.send(rspro.ResetStateRes(OK))
    assert (await bankd.expect(rspro.RemoveMappingReq))[1] == REMOVE_B1_0_C23_0
    assert (await bankd.expect(rspro.RemoveMappingReq))[1] == REMOVE_B1_1_C24_0
    bankd.send(rspro.RemoveMappingRes(OK))
    bankd.send(rspro.RemoveMappingRes(OK))
    assert (await c23.expect(rspro.ConfigClientBankReq))[1] == UNMAP_B1_0
    assert (await c24.expect(rspro.ConfigClientBankReq))[1] == UNMAP_B1_1


async def test_a_map_for_an_absent_bankd_stays_new_and_goes_quietly(
    server: RemsimServer, rest: httpx.AsyncClient
) -> None:
    bankd = await connect_bankd(server.rspro_port)
    client = await connect_client(server.rspro_port, 31)
    await create(rest, 7, 3, 31, 0)
    assert await states(rest) == {458755: "NEW"}
    assert (await rest.delete("/slotmaps/458755")).status_code == 200
    await bankd.expect_nothing()
    await client.expect_nothing()


async def test_a_refused_map_does_not_become_active_and_says_why(
    server: RemsimServer, rest: httpx.AsyncClient
) -> None:
    bankd = await connect_bankd(server.rspro_port, slots=2)
    client = await connect_client(server.rspro_port)
    await create(rest, 1, 5, 23, 0)
    await bankd.expect(rspro.CreateMappingReq)
    bankd.send(rspro.CreateMappingRes(ILLEGAL_SLOT))

    async def refused() -> bool:
        [slotmap] = await slotmaps(rest)
        return slotmap["state"] == "NEW" and slotmap.get("result") == "illegalSlotId"

    await eventually(refused)
    assert (await rest.get("/slotmaps/65541")).json()["result"] == "illegalSlotId"
    await client.expect_nothing()  # the client is not sent to a bankd without its map
    await bankd.expect_nothing()  # and the bankd is not asked again ...
    await bankd.aclose()
    bankd = await connect_bankd(server.rspro_port, slots=8)  # ... until it connects again
    await bankd.expect(rspro.CreateMappingReq)
    bankd.send(rspro.CreateMappingRes(OK))
    await client.expect(rspro.ConfigClientBankReq)
    [slotmap] = await slotmaps(rest)
    assert slotmap["state"] == "ACTIVE" and "result" not in slotmap


async def test_responses_are_matched_with_several_requests_outstanding(
    server: RemsimServer, rest: httpx.AsyncClient
) -> None:
    bankd = await connect_bankd(server.rspro_port)
    c23 = await connect_client(server.rspro_port, 23)
    c24 = await connect_client(server.rspro_port, 24)
    await create(rest, 1, 0, 23, 0)
    await create(rest, 1, 1, 24, 0)
    await create(rest, 1, 7, 25, 0)
    for _ in range(3):
        await bankd.expect(rspro.CreateMappingReq)
    assert (await rest.delete("/slotmaps/65536")).status_code == 200  # still UNACKNOWLEDGED
    assert (await bankd.expect(rspro.RemoveMappingReq))[1] == REMOVE_B1_0_C23_0
    bankd.send(rspro.CreateMappingRes(OK))  # B1:0, being deleted: not activated
    bankd.send(rspro.CreateMappingRes(OK))  # B1:1
    bankd.send(rspro.CreateMappingRes(ILLEGAL_SLOT))  # B1:7
    bankd.send(rspro.RemoveMappingRes(OK))  # B1:0

    async def settled() -> bool:
        return await states(rest) == {65537: "ACTIVE", 65543: "NEW"}

    await eventually(settled)
    assert (await c24.expect(rspro.ConfigClientBankReq))[1] == CONFIG_B1_1
    await c23.expect_nothing()  # never configured for the map deleted in flight


# --- reconnects ----------------------------------------------------------------------------


async def test_a_bankd_that_reconnects_gets_its_maps_again(
    server: RemsimServer, rest: httpx.AsyncClient
) -> None:
    bankd = await connect_bankd(server.rspro_port)
    client = await connect_client(server.rspro_port)
    await map_and_activate(rest, bankd, client)
    await bankd.aclose()
    await eventually(lambda: _states_are(rest, {65536: "NEW"}))
    await client.expect_nothing()  # the client keeps its session while the bankd is away
    bankd = await connect_bankd(server.rspro_port)
    assert (await bankd.expect(rspro.CreateMappingReq))[1] == CREATE_B1_0_C23_0
    bankd.send(rspro.CreateMappingRes(OK))
    await eventually(lambda: _states_are(rest, {65536: "ACTIVE"}))
    await client.expect_nothing()  # same bankd address: nothing to tell the client


async def test_a_client_that_connects_later_gets_its_configuration(
    server: RemsimServer, rest: httpx.AsyncClient
) -> None:
    bankd = await connect_bankd(server.rspro_port)
    await create(rest, 1, 0, 23, 0)
    await bankd.expect(rspro.CreateMappingReq)
    bankd.send(rspro.CreateMappingRes(OK))
    await eventually(lambda: _states_are(rest, {65536: "ACTIVE"}))
    client = await ScriptedConnection.connect(server.rspro_port)
    client.send(rspro.ConnectClientReq(CLIENT_IDENTITY, rspro.ClientSlot(23, 0)))
    assert (await client.recv())[1] == CONNECT_CLIENT_RES
    assert (await client.recv())[1] == CONFIG_B1_0


async def test_a_client_that_closed_its_connection_is_configured_again(
    server: RemsimServer, rest: httpx.AsyncClient
) -> None:
    bankd = await connect_bankd(server.rspro_port)
    client = await connect_client(server.rspro_port)
    await map_and_activate(rest, bankd, client)
    await client.aclose()  # e.g. the client process was restarted: it remembers nothing
    await eventually(lambda: _empty(rest, "/clients", "clients"))
    client = await connect_client(server.rspro_port)
    assert (await client.expect(rspro.ConfigClientBankReq))[1] == CONFIG_B1_0


async def test_a_client_that_reconnects_with_its_configuration_unchanged_keeps_its_session() -> (
    None
):
    store, bus = MemoryStore(), MemoryBus()  # shared state outlives the core, as Redis would
    async with running_server(store=store, bus=bus) as server:
        base = f"http://127.0.0.1:{server.rest_port}/api/backend/v1"
        async with httpx.AsyncClient(base_url=base) as rest:
            bankd = await connect_bankd(server.rspro_port)
            client = await connect_client(server.rspro_port)
            await map_and_activate(rest, bankd, client)
            await eventually(lambda: _has_config(store))
    await client.expect_closed()  # the core went away, not the client
    async with running_server(store=store, bus=bus) as server:
        bankd = await connect_bankd(server.rspro_port)
        await bankd.expect(rspro.CreateMappingReq)
        bankd.send(rspro.CreateMappingRes(OK))
        client = await connect_client(server.rspro_port)
        await client.expect_nothing(0.3)  # no configClientBankReq: its bankd session stays
    await store.close()


async def test_a_client_is_told_when_the_map_of_its_absent_bankd_is_deleted(
    server: RemsimServer, rest: httpx.AsyncClient
) -> None:
    bankd = await connect_bankd(server.rspro_port)
    client = await connect_client(server.rspro_port)
    await map_and_activate(rest, bankd, client)
    await bankd.aclose()
    await eventually(lambda: _states_are(rest, {65536: "NEW"}))
    assert (await rest.delete("/slotmaps/65536")).status_code == 200
    assert (await client.expect(rspro.ConfigClientBankReq))[1] == UNMAP_B1_0


async def test_maps_being_deleted_when_the_bankd_goes_are_dropped(
    server: RemsimServer, rest: httpx.AsyncClient
) -> None:
    bankd = await connect_bankd(server.rspro_port)
    client = await connect_client(server.rspro_port)
    await map_and_activate(rest, bankd, client)
    await rest.delete("/slotmaps/65536")
    await bankd.expect(rspro.RemoveMappingReq)
    await bankd.aclose()
    assert (await client.expect(rspro.ConfigClientBankReq))[1] == UNMAP_B1_0
    await create(rest, 1, 0, 23, 0)  # the slots are free again
    assert await states(rest) == {65536: "NEW"}


# --- the bankd address given to clients ----------------------------------------------------


async def test_the_bankd_address_can_be_set_per_bank() -> None:
    settings = server_settings(bankd_addresses={1: "127.0.0.9:7777"}, bankd_port=9000)
    async with running_server(settings) as server:
        base = f"http://127.0.0.1:{server.rest_port}/api/backend/v1"
        async with httpx.AsyncClient(base_url=base) as rest:
            bankd = await connect_bankd(server.rspro_port)
            client = await connect_client(server.rspro_port)
            await create(rest, 1, 0, 23, 0)
            await bankd.expect(rspro.CreateMappingReq)
            bankd.send(rspro.CreateMappingRes(OK))
            config, _ = await client.expect(rspro.ConfigClientBankReq)
            assert str(config.bankd) == "127.0.0.9:7777"
            bank2 = await connect_bankd(server.rspro_port, bank_id=2)
            assert (await rest.get("/banks/2")).json()["bankd"] == {
                "ip": "127.0.0.1",
                "port": 9000,
            }
            await bank2.aclose()


async def test_unexpected_messages_are_logged_and_the_connection_kept(
    server: RemsimServer, rest: httpx.AsyncClient, caplog: pytest.LogCaptureFixture
) -> None:
    bankd = await connect_bankd(server.rspro_port)
    with caplog.at_level(logging.WARNING, logger="remsim.server"):
        bankd.send(rspro.CreateMappingRes(OK))  # nothing outstanding
        bankd.send(rspro.ResetStateRes(OK))
        await eventually(lambda: _ignored(caplog, 2))
    nothing_outstanding, reset = [r for r in caplog.records if r.getMessage() == "message ignored"]
    assert nothing_outstanding.cause == (  # type: ignore[attr-defined]
        "createMappingRes without an outstanding createMappingReq"
    )
    assert reset.cause.startswith("resetStateRes")  # type: ignore[attr-defined]
    assert (reset.bank, reset.peer) == (1, nothing_outstanding.peer)  # type: ignore[attr-defined]
    await create(rest, 1, 0, 23, 0)
    await bankd.expect(rspro.CreateMappingReq)


async def test_log_lines_carry_the_ids_as_fields(
    server: RemsimServer, rest: httpx.AsyncClient, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, "remsim")
    bankd = await connect_bankd(server.rspro_port)
    client = await connect_client(server.rspro_port)
    await map_and_activate(rest, bankd, client)
    slot_map = {"map": 65536, "bank_slot": "B1:0", "client_slot": "C23:0"}
    assert _fields(caplog, "remsim.api.slotmap", "slotmap added") == slot_map
    for change in ("NEW -> UNACKNOWLEDGED", "UNACKNOWLEDGED -> ACTIVE"):
        assert _fields(caplog, "remsim.server.slotmap", f"slotmap state change: {change}") == (
            slot_map
        )
    bank = _fields(caplog, "remsim.server", "bankd connected")
    assert bank.pop("peer").startswith("127.0.0.1:") and bank == {"bank": 1}
    config = _fields(caplog, "remsim.server", "Tx configClientBankReq(127.0.0.1:9999)")
    assert config.pop("peer").startswith("127.0.0.1:")
    assert config == {"client_slot": "C23:0", "bank_slot": "B1:0"}


def _fields(caplog: pytest.LogCaptureFixture, logger: str, message: str) -> dict[str, Any]:
    """The structured fields of the one line of ``logger`` whose message starts so."""
    (record,) = [
        r for r in caplog.records if r.name == logger and r.getMessage().startswith(message)
    ]
    return {key: getattr(record, key) for key in FIELDS if hasattr(record, key)}


async def _empty(rest: httpx.AsyncClient, path: str, key: str) -> bool:
    return bool((await rest.get(path)).json()[key] == [])


async def _states_are(rest: httpx.AsyncClient, expected: dict[int, str]) -> bool:
    return await states(rest) == expected


async def _has_config(store: MemoryStore) -> bool:
    return await store.get_client_config(ClientSlot(client_id=23, slot_nr=0)) is not None


async def _ignored(caplog: pytest.LogCaptureFixture, count: int) -> bool:
    return [r.getMessage() for r in caplog.records].count("message ignored") == count


def ipv6_loopback() -> bool:
    try:
        with socket.socket(socket.AF_INET6) as sock:
            sock.bind(("::1", 0))
    except OSError:
        return False
    return True


@pytest.mark.skipif(not ipv6_loopback(), reason="no IPv6 loopback")
async def test_a_bankd_reached_over_ipv6_is_given_to_clients_as_ipv6() -> None:
    async with running_server(server_settings(rspro_host="::1")) as server:
        base = f"http://127.0.0.1:{server.rest_port}/api/backend/v1"
        async with httpx.AsyncClient(base_url=base) as rest:
            bankd = await ScriptedConnection.connect(server.rspro_port, host="::1")
            bankd.send(rspro.ConnectBankReq(BANKD_IDENTITY, 1, 2))
            await bankd.expect(rspro.ConnectBankRes)
            await bankd.expect(rspro.ResetStateReq)
            client = await ScriptedConnection.connect(server.rspro_port, host="::1")
            client.send(rspro.ConnectClientReq(CLIENT_IDENTITY, rspro.ClientSlot(23, 0)))
            await client.expect(rspro.ConnectClientRes)
            await create(rest, 1, 0, 23, 0)
            await bankd.expect(rspro.CreateMappingReq)
            bankd.send(rspro.CreateMappingRes(OK))
            config, _ = await client.expect(rspro.ConfigClientBankReq)
            assert str(config.bankd) == "[::1]:9999"
