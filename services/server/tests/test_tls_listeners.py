"""The server's RSPRO listeners while a fleet moves to TLS (issue 11, docs/server.md).

With certificates and ``--tls-port`` the control port stays plaintext (the original's
programs keep working) and TLS peers use the TLS port, at the same time; ``--require-tls``
ends the migration: no plaintext listener is left. Also the real ``remsim-server`` process
with these options.
"""

from __future__ import annotations

import asyncio
import logging
import signal
import socket
import ssl
import sys
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest

import rspro
from remsim_server.main import parse_args
from remsim_server.server import RemsimServer
from remsim_testing.pki import Credentials, TestCA
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
OK = rspro.ResultCode.OK


@pytest.fixture
def ca(tmp_path: Path) -> TestCA:
    return TestCA(tmp_path / "ca")


@pytest.fixture
def server_files(ca: TestCA) -> Credentials:
    return ca.issue("server", "urn:remsim:server")


@pytest.fixture
async def mixed(server_files: Credentials) -> AsyncIterator[RemsimServer]:
    """A server with a plaintext control port and a TLS port."""
    settings = server_settings(
        tls_cert=server_files.cert, tls_key=server_files.key, tls_ca=server_files.ca, tls_port=0
    )
    async with running_server(settings) as running:
        yield running


async def test_a_plaintext_bankd_and_a_tls_client_share_one_server(
    mixed: RemsimServer, ca: TestCA
) -> None:
    assert mixed.rspro_port != mixed.tls_port
    bankd = await connect_bankd(mixed.rspro_port)  # an original bankd: plaintext
    security = ca.issue("client-23", "urn:remsim:client:23").security()
    client = await ScriptedConnection.connect(mixed.tls_port, ssl=security.client_context)
    client.send(rspro.ConnectClientReq(CLIENT_IDENTITY, rspro.ClientSlot(23, 0)))
    assert (await client.expect(rspro.ConnectClientRes))[0].result is OK
    async with https(ca, mixed.rest_port) as rest:
        body = {"bank": {"bankId": 1, "slotNr": 0}, "client": {"clientId": 23, "slotNr": 0}}
        assert (await rest.post("/api/backend/v1/slotmaps", json=body)).status_code == 201
    await bankd.expect(rspro.CreateMappingReq)
    bankd.send(rspro.CreateMappingRes(OK))
    config, _ = await client.expect(rspro.ConfigClientBankReq)
    assert config.bank_slot == rspro.BankSlot(1, 0)
    await bankd.aclose()
    await client.aclose()


async def test_the_tls_port_refuses_a_plaintext_peer(mixed: RemsimServer) -> None:
    plaintext = await ScriptedConnection.connect(mixed.tls_port)
    plaintext.send(rspro.ConnectBankReq(BANKD_IDENTITY, bank_id=1, number_of_slots=2))
    await plaintext.expect_closed(TIMEOUT)
    await (await connect_bankd(mixed.rspro_port)).aclose()  # the control port serves on


async def test_require_tls_leaves_no_plaintext_listener(
    server_files: Credentials, ca: TestCA
) -> None:
    control_port = free_port()
    settings = server_settings(
        rspro_port=control_port,
        tls_cert=server_files.cert,
        tls_key=server_files.key,
        tls_ca=server_files.ca,
        tls_port=0,
        require_tls=True,
    )
    async with running_server(settings) as server:
        assert server.core.sockets == []
        with pytest.raises(ConnectionRefusedError):
            await ScriptedConnection.connect(control_port)
        security = ca.issue("bankd-1", "urn:remsim:bankd:1").security()
        bankd = await ScriptedConnection.connect(server.tls_port, ssl=security.client_context)
        bankd.send(rspro.ConnectBankReq(BANKD_IDENTITY, bank_id=1, number_of_slots=2))
        assert (await bankd.expect(rspro.ConnectBankRes))[0].result is OK
        await bankd.aclose()


async def test_require_tls_without_a_tls_port_closes_a_plaintext_peer(
    server_files: Credentials, caplog: pytest.LogCaptureFixture
) -> None:
    settings = server_settings(
        tls_cert=server_files.cert, tls_key=server_files.key, tls_ca=server_files.ca,
        require_tls=True,
    )  # fmt: skip
    caplog.set_level(logging.INFO)
    async with running_server(settings) as server:
        plaintext = await ScriptedConnection.connect(server.rspro_port)
        plaintext.send(rspro.ConnectBankReq(BANKD_IDENTITY, bank_id=1, number_of_slots=2))
        await plaintext.expect_closed(TIMEOUT)
    failures = [r for r in caplog.records if "TLS handshake failed" in r.getMessage()]
    assert len(failures) == 1 and "does not speak TLS" in failures[0].getMessage()
    assert not [r for r in caplog.records if r.exc_info]


# --- options ------------------------------------------------------------------------------


def test_tls_port_and_audit_days_options(
    server_files: Credentials, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    for name in ("REMSIM_TLS_PORT", "REMSIM_AUDIT_DAYS", "REMSIM_REQUIRE_TLS"):
        monkeypatch.delenv(name, raising=False)
    tls = ["--tls-cert", str(server_files.cert), "--tls-key", str(server_files.key),
           "--tls-ca", str(server_files.ca)]  # fmt: skip
    defaults = parse_args([])
    assert (defaults.tls_port, defaults.audit_days) == (None, 90)
    monkeypatch.setenv("REMSIM_TLS_PORT", "19996")
    monkeypatch.setenv("REMSIM_AUDIT_DAYS", "7")
    settings = parse_args(tls)
    assert (settings.tls_port, settings.audit_days) == (19996, 7)
    assert parse_args([*tls, "--tls-port", "19995"]).tls_port == 19995
    with pytest.raises(SystemExit) as exited:
        parse_args(["--tls-port", "19995"])  # TLS without its files
    assert exited.value.code == 2
    assert "tls_port needs tls_cert" in capsys.readouterr().err


# --- the process --------------------------------------------------------------------------


async def test_the_process_serves_plaintext_and_tls_and_refuses_a_false_bankd(
    server_files: Credentials, ca: TestCA
) -> None:
    control_port, tls_port, rest_port = free_port(), free_port(), free_port()
    code = "from remsim_server.main import main; main()"
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-c", code,
        "--rspro-host", "127.0.0.1", "--rspro-port", str(control_port),
        "--rest-host", "127.0.0.1", "--rest-port", str(rest_port),
        "--tls-cert", str(server_files.cert), "--tls-key", str(server_files.key),
        "--tls-ca", str(server_files.ca), "--tls-port", str(tls_port), "--audit-days", "7",
        "--store", "memory",
        stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    try:
        await until_ready(ca, rest_port)
        plaintext = await connect_bankd(control_port, bank_id=1)
        b2 = ca.issue("bankd-2", "urn:remsim:bankd:2").security()
        fake = await ScriptedConnection.connect(tls_port, ssl=b2.client_context)
        fake.send(rspro.ConnectBankReq(BANKD_IDENTITY, bank_id=3, number_of_slots=2))
        answer, _ = await fake.expect(rspro.ConnectBankRes)
        assert answer.result is rspro.ResultCode.ILLEGAL_BANK_ID
        await fake.expect_closed(TIMEOUT)
        real = await ScriptedConnection.connect(tls_port, ssl=b2.client_context)
        real.send(rspro.ConnectBankReq(BANKD_IDENTITY, bank_id=2, number_of_slots=2))
        assert (await real.expect(rspro.ConnectBankRes))[0].result is OK
        async with https(ca, rest_port) as rest:
            banks = (await rest.get("/api/backend/v1/banks")).json()["banks"]
        assert sorted(bank["bankId"] for bank in banks) == [1, 2]
        await plaintext.aclose()
        await real.aclose()
    finally:
        process.send_signal(signal.SIGTERM)
        _, stderr = await asyncio.wait_for(process.communicate(), TIMEOUT)
    assert process.returncode == 0
    log = stderr.decode()
    assert f"RSPRO control listening on 127.0.0.1:{control_port}\n" in log
    assert f"RSPRO control listening on 127.0.0.1:{tls_port} (mutual TLS)" in log
    (refusal,) = [line for line in log.splitlines() if "connect request refused" in line]
    assert "illegalBankId" in refusal and "commonName=bankd-2" in refusal
    assert "bankd 3" in refusal and "bank=3" in refusal
    assert "Traceback" not in log


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


async def until_ready(ca: TestCA, rest_port: int) -> None:
    async with https(ca, rest_port) as http, asyncio.timeout(20):
        while True:
            try:
                if (await http.get("/healthz")).status_code == 200:
                    return
            except httpx.TransportError:
                pass
            await asyncio.sleep(0.05)


def https(ca: TestCA, port: int, path: str = "") -> httpx.AsyncClient:
    """A client of the REST API, which speaks HTTPS with the server's certificate."""
    trust = ssl.create_default_context(cafile=ca.ca_file)
    trust.check_hostname = False  # the certificate names localhost, the URL 127.0.0.1
    return httpx.AsyncClient(
        base_url=f"https://127.0.0.1:{port}{path}", verify=trust, timeout=TIMEOUT
    )
