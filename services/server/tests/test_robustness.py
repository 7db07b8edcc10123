"""Robustness of the control core (issue 12): a bankd is brought to exactly the server's
view when it connects (``resetStateReq``, then its maps), map requests a bankd never answers
time out to a visible state and are retried at the next resync, and hostile connections
cost one log line per interval, never a traceback."""

import asyncio
import logging
import shutil
import subprocess
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import httpx
import pytest

import rspro
from remsim_control import MemoryBus, MemoryStore, SlotmapState
from remsim_server import metrics
from remsim_server.server import RemsimServer
from remsim_testing.pki import TestCA
from remsim_testing.rspro_peers import ScriptedConnection, frame
from remsim_testing.server import (
    BANKD_IDENTITY,
    CLIENT_IDENTITY,
    connect_bankd,
    connect_client,
    running_server,
    server_settings,
)

OK = rspro.ResultCode.OK
TIMEOUT = 5.0
"""Upper bound of every wait (the tests never wait for a default timing)."""


def body(bank: int, bank_slot: int, client: int, client_slot: int) -> dict[str, Any]:
    return {
        "bank": {"bankId": bank, "slotNr": bank_slot},
        "client": {"clientId": client, "slotNr": client_slot},
    }


async def eventually(check: Callable[[], Awaitable[bool]]) -> None:
    async with asyncio.timeout(TIMEOUT):
        while not await check():
            await asyncio.sleep(0.01)


def rest_client(server: RemsimServer) -> httpx.AsyncClient:
    base = f"http://127.0.0.1:{server.rest_port}/api/backend/v1"
    return httpx.AsyncClient(base_url=base, timeout=TIMEOUT)


async def create(rest: httpx.AsyncClient, *slots: int) -> None:
    response = await rest.post("/slotmaps", json=body(*slots))
    assert response.status_code == 201, response.text


async def slotmap(rest: httpx.AsyncClient, slotmap_id: int) -> dict[str, Any]:
    response = await rest.get(f"/slotmaps/{slotmap_id}")
    assert response.status_code == 200, response.text
    found: dict[str, Any] = response.json()
    return found


# --- reconciliation ------------------------------------------------------------------------


async def test_after_a_restart_the_bankd_drops_a_map_deleted_meanwhile() -> None:
    store, bus = MemoryStore(), MemoryBus()  # the state outlives the server process
    async with running_server(store=store, bus=bus) as server, rest_client(server) as rest:
        bankd = await connect_bankd(server.rspro_port)
        await create(rest, 1, 0, 23, 0)
        await create(rest, 1, 1, 24, 0)
        for _ in range(2):
            await bankd.expect(rspro.CreateMappingReq)
            bankd.send(rspro.CreateMappingRes(OK))
        await eventually(lambda: _all_active(store))
    await bankd.expect_closed()
    # While the server is down, the map of B1:0 is deleted from the store.
    [gone] = [m for m in await store.list_slotmaps() if m.bank.slot_nr == 0]
    assert await store.remove_slotmap(gone.serial, set(SlotmapState)) is not None

    async with running_server(store=store, bus=bus) as server:
        bankd = await ScriptedConnection.connect(server.rspro_port)
        bankd.send(rspro.ConnectBankReq(BANKD_IDENTITY, 1, 2))
        await bankd.expect(rspro.ConnectBankRes)
        # First the bankd drops every map it holds (B1:0 too) ...
        await bankd.expect(rspro.ResetStateReq)
        bankd.send(rspro.ResetStateRes(OK))
        # ... then it is given the one map the server knows, and nothing for B1:0.
        request, _ = await bankd.expect(rspro.CreateMappingReq)
        assert request.bank == rspro.BankSlot(1, 1)
        bankd.send(rspro.CreateMappingRes(OK))
        await bankd.expect_nothing(0.3)
        await eventually(lambda: _all_active(store))
    await store.close()


async def test_a_global_reset_resets_every_connected_bankd() -> None:
    async with running_server() as server, rest_client(server) as rest:
        bank1 = await connect_bankd(server.rspro_port, bank_id=1)
        bank2 = await connect_bankd(server.rspro_port, bank_id=2)
        assert (await rest.post("/global-reset")).status_code == 200
        for bankd in (bank1, bank2):  # even a bankd without any map
            await bankd.expect(rspro.ResetStateReq)
            bankd.send(rspro.ResetStateRes(OK))
            await bankd.expect_nothing()
        await create(rest, 1, 0, 23, 0)  # business as usual afterwards
        await bank1.expect(rspro.CreateMappingReq)


async def _all_active(store: MemoryStore) -> bool:
    return all(m.state is SlotmapState.ACTIVE for m in await store.list_slotmaps())


# --- map requests a bankd never answers ----------------------------------------------------


@pytest.fixture
async def impatient() -> AsyncIterator[RemsimServer]:
    """A server whose bankds have 0.2 s to answer a map request; the periodic resync comes
    when a test calls ``core.kick_all(retry=True)`` (its interval is far away)."""
    settings = server_settings(map_request_timeout=0.2, resync_interval=3600)
    async with running_server(settings) as server:
        yield server


async def test_a_create_without_answer_times_out_to_new_and_is_retried_at_the_resync(
    impatient: RemsimServer,
) -> None:
    async with rest_client(impatient) as rest:
        bankd = await connect_bankd(impatient.rspro_port)  # it never answers a map request
        client = await connect_client(impatient.rspro_port)
        await create(rest, 1, 0, 23, 0)
        await bankd.expect(rspro.CreateMappingReq)

        async def timed_out(slotmap_id: int) -> bool:
            found = await slotmap(rest, slotmap_id)
            return found["state"] == "NEW" and found.get("result") == "timeout"

        await eventually(lambda: timed_out(65536))  # visible: the original's NEW, and why
        await create(rest, 1, 1, 24, 0)  # other events do not retry it
        request, _ = await bankd.expect(rspro.CreateMappingReq)
        assert request.bank == rspro.BankSlot(1, 1)
        await eventually(lambda: timed_out(65537))
        await bankd.expect_nothing()
        impatient.core.kick_all(retry=True)  # the resync does, in the store's order
        for slot_nr in (0, 1):
            request, _ = await bankd.expect(rspro.CreateMappingReq)
            assert request.bank == rspro.BankSlot(1, slot_nr)
        for _ in range(4):  # the two late answers (dropped), then the retries' answers
            bankd.send(rspro.CreateMappingRes(OK))
        await eventually(lambda: _state_is(rest, 65536, "ACTIVE"))
        await eventually(lambda: _state_is(rest, 65537, "ACTIVE"))
        await client.expect(rspro.ConfigClientBankReq)


async def test_a_bankd_that_reconnects_is_sent_the_maps_that_timed_out(
    impatient: RemsimServer,
) -> None:
    async with rest_client(impatient) as rest:
        bankd = await connect_bankd(impatient.rspro_port)
        await create(rest, 1, 0, 23, 0)
        await bankd.expect(rspro.CreateMappingReq)
        await eventually(lambda: _state_is(rest, 65536, "NEW"))
        await bankd.aclose()
        bankd = await connect_bankd(impatient.rspro_port)
        await bankd.expect(rspro.CreateMappingReq)
        bankd.send(rspro.CreateMappingRes(OK))
        await eventually(lambda: _state_is(rest, 65536, "ACTIVE"))


async def test_a_remove_without_answer_is_retried_and_does_not_stay_deleting(
    impatient: RemsimServer,
) -> None:
    store = impatient.store
    async with rest_client(impatient) as rest:
        bankd = await connect_bankd(impatient.rspro_port)
        client = await connect_client(impatient.rspro_port)
        await create(rest, 1, 0, 23, 0)
        await bankd.expect(rspro.CreateMappingReq)
        bankd.send(rspro.CreateMappingRes(OK))
        await client.expect(rspro.ConfigClientBankReq)
        assert (await rest.delete("/slotmaps/65536")).status_code == 200
        await bankd.expect(rspro.RemoveMappingReq)  # never answered

        async def waiting_for_retry() -> bool:
            [found] = await store.list_slotmaps()
            return found.state is SlotmapState.DELETE_REQ and found.result == "timeout"

        await eventually(waiting_for_retry)
        await bankd.expect_nothing()
        impatient.core.kick_all(retry=True)
        await bankd.expect(rspro.RemoveMappingReq)
        bankd.send(rspro.RemoveMappingRes(OK))  # late: the first request's answer
        bankd.send(rspro.RemoveMappingRes(OK))  # the retry's
        await eventually(lambda: _no_slotmaps(store))
        unmap, _ = await client.expect(rspro.ConfigClientBankReq)
        assert unmap.bankd.port == 0


async def _state_is(rest: httpx.AsyncClient, slotmap_id: int, state: str) -> bool:
    return bool((await slotmap(rest, slotmap_id))["state"] == state)


async def _no_slotmaps(store: Any) -> bool:
    return not await store.list_slotmaps()


# --- hostile and excess connections --------------------------------------------------------

GARBAGE = bytes.fromhex("0005ee07deadbeef")
"""An IPA frame for RSPRO whose payload is no RSPRO PDU."""


def errors(cause: str) -> float:
    value = metrics.REGISTRY.get_sample_value("remsim_peer_errors_total", {"cause": cause})
    return value or 0.0


async def test_a_flood_of_connect_requests_then_garbage_costs_a_few_log_lines(
    server: RemsimServer, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO)
    before = errors("undecodable")
    peers = []
    for n in range(100):
        peer = await ScriptedConnection.connect(server.rspro_port)
        hello = rspro.ConnectClientReq(CLIENT_IDENTITY, rspro.ClientSlot(100 + n, 0))
        peer.send(frame(hello) + GARBAGE)  # one write: the connect request, then garbage
        peers.append(peer)
    for peer in peers:
        await peer.wait_closed()
    await eventually(lambda: _counted(before + 100))
    lines = [r for r in caplog.records if r.levelno >= logging.INFO]
    assert not [r for r in caplog.records if r.exc_info], "no traceback"
    assert len(lines) <= 3, [r.getMessage() for r in lines]
    [line] = [r for r in lines if r.getMessage().startswith("connection closed")]
    assert line.levelno == logging.WARNING
    assert (await rest_get(server, "/clients")) == {"clients": []}  # none registered


async def _counted(value: float) -> bool:
    return errors("undecodable") >= value


async def rest_get(server: RemsimServer, path: str) -> Any:
    async with rest_client(server) as rest:
        return (await rest.get(path)).json()


@pytest.mark.parametrize(
    ("limits", "limit"),
    [
        ({"max_connections": 3}, "port"),
        ({"max_connections_per_address": 3}, "address"),
    ],
)
async def test_connections_over_a_limit_are_refused_at_once_with_one_log_line(
    limits: dict[str, int], limit: str, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, "remsim.server")
    refused = "remsim_connections_refused_total"
    before = metrics.REGISTRY.get_sample_value(refused, {"limit": limit}) or 0.0
    async with running_server(server_settings(**limits)) as server:
        silent = [await ScriptedConnection.connect(server.rspro_port) for _ in range(3)]
        await eventually(lambda: _held(server, 3))
        excess = [await ScriptedConnection.connect(server.rspro_port) for _ in range(5)]
        for peer in excess:
            await peer.expect_closed()  # at once: no identification timeout runs
        assert metrics.REGISTRY.get_sample_value(refused, {"limit": limit}) == before + 5
        [line] = [r for r in caplog.records if r.getMessage().startswith("connection refused")]
        assert line.cause == f"{limit} limit"  # type: ignore[attr-defined]
        await silent[0].aclose()  # a connection that goes makes room
        await eventually(lambda: _held(server, 2))
        bankd = await connect_bankd(server.rspro_port)
        await bankd.aclose()


async def _held(server: RemsimServer, count: int) -> bool:
    return server.core.limits.held() == count


async def test_on_a_tls_port_a_connection_counts_before_its_handshake(tmp_path: Path) -> None:
    """Silent connections that never send a ClientHello hold a TLS handshake open for
    up to its timeout: they count against the limits from the moment they are accepted."""
    ca = TestCA(tmp_path / "ca")
    files = ca.issue("server", "urn:remsim:server")
    settings = server_settings(
        tls_cert=files.cert, tls_key=files.key, tls_ca=files.ca, max_connections_per_address=3
    )
    refused = "remsim_connections_refused_total"
    before = metrics.REGISTRY.get_sample_value(refused, {"limit": "address"}) or 0.0
    async with running_server(settings) as server:
        silent = [await ScriptedConnection.connect(server.rspro_port) for _ in range(3)]
        await eventually(lambda: _held(server, 3))  # no handshake done, yet counted
        excess = await ScriptedConnection.connect(server.rspro_port)
        await excess.expect_closed()
        assert metrics.REGISTRY.get_sample_value(refused, {"limit": "address"}) == before + 1
        for peer in silent:
            await peer.aclose()
        await eventually(lambda: _held(server, 0))  # a failed handshake releases its place
        bankd = ca.issue("bankd-1", "urn:remsim:bankd:1").security()
        stream = await rspro.open_connection(
            "127.0.0.1", server.rspro_port, ssl=bankd.client_context
        )
        await eventually(lambda: _held(server, 1))
        await stream.aclose()
        await eventually(lambda: _held(server, 0))


@pytest.mark.skipif(shutil.which("ss") is None, reason="needs ss (iproute2)")
async def test_every_listener_queues_at_least_1024_connections(server: RemsimServer) -> None:
    for port in (server.rspro_port, server.rest_port):
        # For a listening socket, ss shows the backlog as Send-Q.
        listing = subprocess.run(
            ["ss", "-ltnH", f"sport = :{port}"], capture_output=True, text=True, check=True
        ).stdout.split()
        assert int(listing[2]) >= 1024, listing


async def test_a_flood_of_plaintext_on_the_tls_port_costs_one_log_line(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    files = TestCA(tmp_path / "ca").issue("server", "urn:remsim:server")
    settings = server_settings(tls_cert=files.cert, tls_key=files.key, tls_ca=files.ca)
    caplog.set_level(logging.INFO)
    before = errors("tls")
    async with running_server(settings) as server:
        peers = [await ScriptedConnection.connect(server.rspro_port) for _ in range(20)]
        for peer in peers:
            peer.send(GARBAGE)
        for peer in peers:
            await peer.wait_closed()
        await eventually(lambda: _tls_failures(before + 20))
    failures = [r for r in caplog.records if "TLS handshake failed" in r.getMessage()]
    assert len(failures) == 1 and failures[0].exc_info is None


async def _tls_failures(value: float) -> bool:
    return errors("tls") >= value
