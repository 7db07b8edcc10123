"""The RSPRO control port with mutual TLS (``--tls-cert``, ``--tls-key``, ``--tls-ca``): a
bankd presenting a certificate of the operator's CA registers as over plaintext; a peer
that does not do TLS, or whose certificate another CA signed, is closed with one log line
and no traceback, and the server goes on serving."""

from __future__ import annotations

import asyncio
import logging
import ssl
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import httpx
import pytest

import rspro
from remsim_common import TransportSecurity, peer_uris
from remsim_server.server import RemsimServer
from remsim_testing.pki import TestCA
from remsim_testing.rspro_peers import ScriptedConnection
from remsim_testing.server import BANKD_IDENTITY, running_server, server_settings

TIMEOUT = 10.0
"""Seconds any one step may take."""


@pytest.fixture
def ca(tmp_path: Path) -> TestCA:
    return TestCA(tmp_path / "ca")


@pytest.fixture
async def server(ca: TestCA) -> AsyncIterator[RemsimServer]:
    files = ca.issue("server", "urn:remsim:server")
    settings = server_settings(tls_cert=files.cert, tls_key=files.key, tls_ca=files.ca)
    async with running_server(settings) as running:
        yield running


async def register_bankd(port: int, security: TransportSecurity) -> rspro.RsproStream:
    """A bankd over TLS that has sent connectBankReq and been accepted."""
    stream = await rspro.open_connection("127.0.0.1", port, ssl=security.client_context)
    stream.send(rspro.ConnectBankReq(BANKD_IDENTITY, bank_id=1, number_of_slots=2))
    async with asyncio.timeout(TIMEOUT):
        pdu = await stream.recv()
    assert isinstance(pdu.msg, rspro.ConnectBankRes), pdu.msg
    assert pdu.msg.result is rspro.ResultCode.OK
    return stream


async def test_a_bankd_with_a_certificate_of_the_ca_registers(
    server: RemsimServer, ca: TestCA
) -> None:
    bankd = ca.issue("bankd-1", "urn:remsim:bankd:1").security()
    stream = await register_bankd(server.rspro_port, bankd)
    async with stream:
        assert peer_uris(stream.get_extra_info("ssl_object")) == ("urn:remsim:server",)
        async with https(ca, server.rest_port) as http:
            banks = (await http.get("/api/backend/v1/banks")).json()["banks"]
        assert [bank["bankId"] for bank in banks] == [1]


async def test_a_plaintext_peer_on_the_tls_port_is_closed_with_one_log_line(
    server: RemsimServer, ca: TestCA, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO)
    plaintext = await ScriptedConnection.connect(server.rspro_port)
    plaintext.send(rspro.ConnectBankReq(BANKD_IDENTITY, bank_id=1, number_of_slots=2))
    await plaintext.expect_closed(TIMEOUT)
    await _until(lambda: bool(_handshake_failures(caplog)))
    (record,) = _handshake_failures(caplog)
    assert record.levelno == logging.WARNING and record.exc_info is None
    assert "127.0.0.1" in record.getMessage()
    assert not [r for r in caplog.records if r.exc_info or r.levelno >= logging.ERROR]
    # the port still serves TLS peers
    bankd = ca.issue("bankd-1", "urn:remsim:bankd:1").security()
    await (await register_bankd(server.rspro_port, bankd)).aclose()


async def test_a_certificate_of_another_ca_is_refused(
    server: RemsimServer, ca: TestCA, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    files = TestCA(tmp_path / "other").issue("bankd-1", "urn:remsim:bankd:1")
    stranger = TransportSecurity.mutual_tls(files.cert, files.key, ca.ca_file)  # trusts ours
    caplog.set_level(logging.INFO)
    with pytest.raises((ConnectionError, OSError, rspro.RsproError)):
        stream = await rspro.open_connection(
            "127.0.0.1", server.rspro_port, ssl=stranger.client_context
        )
        # TLS 1.3: the server's verdict on the client's certificate comes after the
        # client's handshake has ended, as an alert on the first read
        async with asyncio.timeout(TIMEOUT):
            await stream.recv()
    await _until(lambda: bool(_handshake_failures(caplog)))
    (record,) = _handshake_failures(caplog)
    assert "certificate" in record.getMessage() and record.exc_info is None


def _handshake_failures(caplog: pytest.LogCaptureFixture) -> list[logging.LogRecord]:
    return [r for r in caplog.records if "TLS handshake failed" in r.getMessage()]


async def _until(condition: Callable[[], bool]) -> None:
    async with asyncio.timeout(TIMEOUT):
        while not condition():
            await asyncio.sleep(0.01)


def https(ca: TestCA, port: int, path: str = "") -> httpx.AsyncClient:
    """A client of the REST API, which speaks HTTPS with the server's certificate."""
    trust = ssl.create_default_context(cafile=ca.ca_file)
    trust.check_hostname = False  # the certificate names localhost, the URL 127.0.0.1
    return httpx.AsyncClient(
        base_url=f"https://127.0.0.1:{port}{path}", verify=trust, timeout=TIMEOUT
    )
