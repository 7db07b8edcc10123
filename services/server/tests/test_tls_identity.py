"""Identity bound to the certificate at the server (issue 11), over real TLS and sockets.

On a TLS control connection a connectBankReq is accepted only if the peer's certificate
names that bankd (``urn:remsim:bankd:<bankId>``), a connectClientReq only if it names that
client (``urn:remsim:client:<clientId>``); otherwise the answer is ``illegalBankId`` /
``illegalClientId``, then the close, with one log line naming the certificate's subject and
the claimed id. Every identity accepted or refused and every slotmap state change the core
makes is written to the audit log; a store that cannot take an entry costs the entry only.
"""

from __future__ import annotations

import asyncio
import logging
import ssl
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import httpx
import pytest

import rspro
from remsim_common import PeerIdentity
from remsim_control import AuditEntry, AuditKind, AuditQuery, BackendUnavailable, MemoryStore
from remsim_server.role import BankHello, ClientHello, Refused, ServerConnection
from remsim_server.server import RemsimServer
from remsim_testing.pki import TestCA
from remsim_testing.rspro_peers import ScriptedConnection
from remsim_testing.server import (
    BANKD_IDENTITY,
    CLIENT_IDENTITY,
    connect_bankd,
    running_server,
    server_settings,
)

TIMEOUT = 10.0
"""Seconds any one step may take."""
ILLEGAL_BANK_ID = rspro.ResultCode.ILLEGAL_BANK_ID
ILLEGAL_CLIENT_ID = rspro.ResultCode.ILLEGAL_CLIENT_ID
SERVER = rspro.ComponentIdentity(
    rspro.ComponentType.REMSIM_SERVER, "fixme-name", "remsim-server", "1.0.0"
)


# --- the decision, sans-IO (remsim_server.role) ---------------------------------------------


def connection(*uris: str, subject: str = "commonName=peer") -> ServerConnection:
    """A TLS connection whose peer's certificate names ``uris``."""
    identity = PeerIdentity.from_uris(uris, subject)
    return ServerConnection(SERVER, 0.0, tls_subject=subject, certificate=identity)


def bank_req(bank_id: int) -> rspro.RsproPdu:
    return rspro.RsproPdu(rspro.ConnectBankReq(BANKD_IDENTITY, bank_id, 2))


def client_req(client_id: int, slot_nr: int = 0) -> rspro.RsproPdu:
    slot = rspro.ClientSlot(client_id, slot_nr)
    return rspro.RsproPdu(rspro.ConnectClientReq(CLIENT_IDENTITY, slot))


def test_a_bankd_is_the_bank_its_certificate_names() -> None:
    assert isinstance(connection("urn:remsim:bankd:1").receive(bank_req(1)), BankHello)
    refused = connection("urn:remsim:bankd:2", subject="commonName=bankd-2").receive(bank_req(1))
    assert isinstance(refused, Refused) and refused.result is ILLEGAL_BANK_ID
    assert "commonName=bankd-2" in refused.reason and "bankd 1" in refused.reason


def test_a_client_certificate_may_name_several_clients() -> None:
    for client_id in (23, 24):
        conn = connection("urn:remsim:client:23", "urn:remsim:client:24")
        assert isinstance(conn.receive(client_req(client_id, 1)), ClientHello)
    refused = connection("urn:remsim:client:24").receive(client_req(23))
    assert isinstance(refused, Refused) and refused.result is ILLEGAL_CLIENT_ID


@pytest.mark.parametrize(
    ("uris", "request_", "result"),
    [
        (("urn:remsim:client:1",), bank_req(1), ILLEGAL_BANK_ID),
        (("urn:remsim:bankd:23",), client_req(23), ILLEGAL_CLIENT_ID),
        (("urn:remsim:server",), bank_req(1), ILLEGAL_BANK_ID),
        ((), client_req(23), ILLEGAL_CLIENT_ID),  # no remsim identity in the certificate
    ],
    ids=["bank-req-with-client-cert", "client-req-with-bankd-cert", "server-cert", "no-uri"],
)
def test_a_certificate_of_another_role_is_refused(
    uris: tuple[str, ...], request_: rspro.RsproPdu, result: rspro.ResultCode
) -> None:
    refused = connection(*uris).receive(request_)
    assert isinstance(refused, Refused) and refused.result is result


def test_a_plaintext_peer_is_taken_at_its_word() -> None:
    assert isinstance(ServerConnection(SERVER, 0.0).receive(bank_req(7)), BankHello)
    assert isinstance(ServerConnection(SERVER, 0.0).receive(client_req(23)), ClientHello)


# --- over TLS ---------------------------------------------------------------------------------


@pytest.fixture
def ca(tmp_path: Path) -> TestCA:
    return TestCA(tmp_path / "ca")


@pytest.fixture
def store() -> MemoryStore:
    return MemoryStore()


@pytest.fixture
async def server(ca: TestCA, store: MemoryStore) -> AsyncIterator[RemsimServer]:
    files = ca.issue("server", "urn:remsim:server")
    settings = server_settings(tls_cert=files.cert, tls_key=files.key, tls_ca=files.ca)
    async with running_server(settings, store) as running:
        yield running


@pytest.fixture
async def rest(server: RemsimServer, ca: TestCA) -> AsyncIterator[httpx.AsyncClient]:
    async with https(ca, server.rest_port, "/api/backend/v1") as client:
        yield client


async def tls_peer(ca: TestCA, port: int, name: str, *uris: str) -> ScriptedConnection:
    context = ca.issue(name, *uris).security().client_context
    return await ScriptedConnection.connect(port, ssl=context)


async def test_a_bankd_certificate_for_b2_claiming_b1_is_refused(
    server: RemsimServer, ca: TestCA, store: MemoryStore, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, "remsim.server")
    fake = await tls_peer(ca, server.rspro_port, "bankd-2", "urn:remsim:bankd:2")
    fake.send(rspro.ConnectBankReq(BANKD_IDENTITY, bank_id=1, number_of_slots=2))
    answer, _ = await fake.expect(rspro.ConnectBankRes)
    assert answer.result is ILLEGAL_BANK_ID
    await fake.expect_closed(TIMEOUT)
    (line,) = refusals(caplog)
    assert line.levelno == logging.WARNING and line.exc_info is None
    assert line.getMessage() == "connect request refused (illegalBankId)"
    assert line.bank == 1 and line.peer.startswith("127.0.0.1:")  # type: ignore[attr-defined]
    assert "commonName=bankd-2" in line.cause and "bankd 1" in line.cause  # type: ignore[attr-defined]
    assert await store.list_banks() == []
    (entry,) = await audit(store, AuditKind.IDENTITY)
    assert (entry.actor, entry.action, entry.result) == (
        "commonName=bankd-2",
        "connectBankReq",
        "refused",
    )
    assert (entry.bank_id, entry.address) == (1, line.peer)  # type: ignore[attr-defined]
    assert entry.detail is not None and entry.detail.startswith("B1: ")
    # the real B1 registers
    real = await tls_peer(ca, server.rspro_port, "bankd-1", "urn:remsim:bankd:1")
    real.send(rspro.ConnectBankReq(BANKD_IDENTITY, bank_id=1, number_of_slots=2))
    answer, _ = await real.expect(rspro.ConnectBankRes)
    assert answer.result is rspro.ResultCode.OK
    await real.aclose()


async def test_a_client_certificate_for_c24_claiming_c23_is_refused(
    server: RemsimServer, ca: TestCA, store: MemoryStore, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, "remsim.server")
    fake = await tls_peer(ca, server.rspro_port, "client-24", "urn:remsim:client:24")
    fake.send(rspro.ConnectClientReq(CLIENT_IDENTITY, rspro.ClientSlot(23, 0)))
    answer, _ = await fake.expect(rspro.ConnectClientRes)
    assert answer.result is ILLEGAL_CLIENT_ID
    await fake.expect_closed(TIMEOUT)
    (line,) = refusals(caplog)
    assert line.client_slot == "C23:0"  # type: ignore[attr-defined]
    assert "commonName=client-24" in line.cause and "client 23" in line.cause  # type: ignore[attr-defined]
    assert await store.list_clients() == []
    (entry,) = await audit(store, AuditKind.IDENTITY)
    assert (entry.actor, entry.action, entry.result) == (
        "commonName=client-24",
        "connectClientReq",
        "refused",
    )
    assert (entry.client_id, entry.client_slot) == (23, 0)


async def test_an_expired_certificate_is_refused_in_the_handshake(
    server: RemsimServer, ca: TestCA, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO)
    expired = ca.issue("bankd-1", "urn:remsim:bankd:1", expired=True).security()
    with pytest.raises((ConnectionError, OSError, rspro.RsproError)):
        stream = await rspro.open_connection(
            "127.0.0.1", server.rspro_port, ssl=expired.client_context
        )
        stream.send(rspro.ConnectBankReq(BANKD_IDENTITY, bank_id=1, number_of_slots=2))
        async with asyncio.timeout(TIMEOUT):  # TLS 1.3: the verdict comes as an alert
            await stream.recv()
    await until(lambda: bool(handshake_failures(caplog)))
    (line,) = handshake_failures(caplog)
    assert "expired" in line.getMessage() and line.exc_info is None
    assert not [r for r in caplog.records if r.exc_info or r.levelno >= logging.ERROR]


async def test_identities_and_slotmap_changes_are_audited(
    server: RemsimServer, ca: TestCA, store: MemoryStore, rest: httpx.AsyncClient
) -> None:
    bankd = await tls_peer(ca, server.rspro_port, "bankd-1", "urn:remsim:bankd:1")
    bankd.send(rspro.ConnectBankReq(BANKD_IDENTITY, bank_id=1, number_of_slots=2))
    assert (await bankd.expect(rspro.ConnectBankRes))[0].result is rspro.ResultCode.OK
    await bankd.expect(rspro.ResetStateReq)
    client = await tls_peer(ca, server.rspro_port, "client-23", "urn:remsim:client:23")
    client.send(rspro.ConnectClientReq(CLIENT_IDENTITY, rspro.ClientSlot(23, 0)))
    assert (await client.expect(rspro.ConnectClientRes))[0].result is rspro.ResultCode.OK

    assert (await rest.post("/slotmaps", json=slotmap(1, 0, 23, 0))).status_code == 201
    await bankd.expect(rspro.CreateMappingReq)
    bankd.send(rspro.CreateMappingRes(rspro.ResultCode.OK))
    await client.expect(rspro.ConfigClientBankReq)
    assert (await rest.delete("/slotmaps/65536")).status_code == 200
    await bankd.expect(rspro.RemoveMappingReq)
    bankd.send(rspro.RemoveMappingRes(rspro.ResultCode.OK))
    await until_async(lambda: _slotmap_entries(store, 4))

    first, second = await audit(store, AuditKind.IDENTITY)
    assert (first.actor, first.action, first.result, first.bank_id, first.detail) == (
        "commonName=bankd-1",
        "connectBankReq",
        "accepted",
        1,
        "B1",
    )
    assert (second.actor, second.action, second.result, second.detail) == (
        "commonName=client-23",
        "connectClientReq",
        "accepted",
        "C23:0",
    )
    assert second.address is not None and second.address.startswith("127.0.0.1:")
    changes = await audit(store, AuditKind.SLOTMAP)
    assert [(e.action, e.result) for e in changes] == [
        ("NEW -> UNACKNOWLEDGED", "UNACKNOWLEDGED"),
        ("UNACKNOWLEDGED -> ACTIVE", "ACTIVE"),
        ("DELETE_REQ -> DELETING", "DELETING"),
        ("DELETING -> DELETED", "DELETED"),
    ]
    for entry in changes:
        assert entry.actor == server.core.core_id and entry.detail
        assert (entry.bank_id, entry.bank_slot, entry.client_id, entry.client_slot) == (
            1,
            0,
            23,
            0,
        )
    await bankd.aclose()
    await client.aclose()


async def test_a_refused_slotmap_and_a_lost_bankd_are_audited(
    server: RemsimServer, ca: TestCA, store: MemoryStore, rest: httpx.AsyncClient
) -> None:
    bankd = await tls_peer(ca, server.rspro_port, "bankd-1", "urn:remsim:bankd:1")
    bankd.send(rspro.ConnectBankReq(BANKD_IDENTITY, bank_id=1, number_of_slots=2))
    await bankd.expect(rspro.ConnectBankRes)
    await bankd.expect(rspro.ResetStateReq)
    for slot_nr in (0, 1):
        assert (
            await rest.post("/slotmaps", json=slotmap(1, slot_nr, 23, slot_nr))
        ).status_code == 201
        await bankd.expect(rspro.CreateMappingReq)
    bankd.send(rspro.CreateMappingRes(rspro.ResultCode.ILLEGAL_SLOT_ID))
    bankd.send(rspro.CreateMappingRes(rspro.ResultCode.OK))
    await until_async(lambda: _slotmap_entries(store, 4))
    await bankd.aclose()
    await until_async(lambda: _slotmap_entries(store, 5))
    changes = await audit(store, AuditKind.SLOTMAP)
    refused, active, gone = changes[2], changes[3], changes[4]
    assert (refused.action, refused.result, refused.bank_slot) == (
        "UNACKNOWLEDGED -> NEW",
        "illegalSlotId",
        0,
    )
    assert (active.action, active.bank_slot) == ("UNACKNOWLEDGED -> ACTIVE", 1)
    assert (gone.action, gone.result, gone.bank_slot) == ("ACTIVE -> NEW", "NEW", 1)
    assert gone.detail == "its bankd is gone"


async def test_plaintext_identities_are_audited_as_plaintext(store: MemoryStore) -> None:
    async with running_server(store=store) as server:
        bankd = await connect_bankd(server.rspro_port)
        await until_async(lambda: _has(store, AuditKind.IDENTITY))
        (entry,) = await audit(store, AuditKind.IDENTITY)
        assert (entry.actor, entry.result, entry.detail) == ("plaintext", "accepted", "B1")
        await bankd.aclose()


class AuditlessStore(MemoryStore):
    """A store whose audit log does not answer."""

    async def add_audit(self, entry: AuditEntry) -> AuditEntry:
        raise BackendUnavailable("the audit log is away")


async def test_an_audit_log_that_fails_costs_the_entry_not_the_connection(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.WARNING, "remsim.server")
    async with running_server(store=AuditlessStore()) as server:
        bankd = await connect_bankd(server.rspro_port)  # accepted all the same
        await until(lambda: bool(lost(caplog)))
        await bankd.expect_nothing()  # and kept
        (line,) = lost(caplog)
        assert line.exc_info is None and "connectBankReq accepted" in line.getMessage()
        await bankd.aclose()


def lost(caplog: pytest.LogCaptureFixture) -> list[logging.LogRecord]:
    return [r for r in caplog.records if r.getMessage().startswith("audit entry lost")]


async def test_the_core_prunes_entries_older_than_audit_days(store: MemoryStore) -> None:
    now = time.time()
    for age_days in (40, 20):
        old = AuditEntry(
            time=now - age_days * 86400, kind=AuditKind.REST, actor="a", action="x", result="200"
        )
        await store.add_audit(old)
    async with running_server(server_settings(audit_days=30), store):
        await until_async(lambda: _count(store, 1))
    (kept,) = await store.list_audit(AuditQuery())
    assert kept.time == pytest.approx(now - 20 * 86400)


# --- helpers ------------------------------------------------------------------------------


def slotmap(bank_id: int, bank_slot: int, client_id: int, client_slot: int) -> dict[str, Any]:
    """The REST body creating B<bank_id>:<bank_slot> <-> C<client_id>:<client_slot>."""
    return {
        "bank": {"bankId": bank_id, "slotNr": bank_slot},
        "client": {"clientId": client_id, "slotNr": client_slot},
    }


def refusals(caplog: pytest.LogCaptureFixture) -> list[logging.LogRecord]:
    return [r for r in caplog.records if r.getMessage().startswith("connect request refused")]


def handshake_failures(caplog: pytest.LogCaptureFixture) -> list[logging.LogRecord]:
    return [r for r in caplog.records if "TLS handshake failed" in r.getMessage()]


async def audit(store: MemoryStore, kind: AuditKind) -> list[AuditEntry]:
    return await store.list_audit(AuditQuery(kind=kind))


async def _slotmap_entries(store: MemoryStore, count: int) -> bool:
    return len(await audit(store, AuditKind.SLOTMAP)) >= count


async def _has(store: MemoryStore, kind: AuditKind) -> bool:
    return bool(await audit(store, kind))


async def _count(store: MemoryStore, count: int) -> bool:
    return len(await store.list_audit(AuditQuery())) == count


async def until(condition: Callable[[], bool]) -> None:
    async with asyncio.timeout(TIMEOUT):
        while not condition():
            await asyncio.sleep(0.01)


async def until_async(condition: Callable[[], Awaitable[bool]]) -> None:
    async with asyncio.timeout(TIMEOUT):
        while not await condition():
            await asyncio.sleep(0.01)


def https(ca: TestCA, port: int, path: str = "") -> httpx.AsyncClient:
    """A client of the REST API, which speaks HTTPS with the server's certificate."""
    trust = ssl.create_default_context(cafile=ca.ca_file)
    trust.check_hostname = False  # the certificate names localhost, the URL 127.0.0.1
    return httpx.AsyncClient(
        base_url=f"https://127.0.0.1:{port}{path}", verify=trust, timeout=TIMEOUT
    )
