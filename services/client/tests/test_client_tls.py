"""Both RSPRO links of the client over mutual TLS, with real handshakes on 127.0.0.1.

The server and the bankd are ``rspro.aio.start_server`` listeners with the TLS context of
certificates from a throw-away CA (``remsim_testing.pki``); the client presents
``urn:remsim:client:23``. With TLS the client completes the connect exchange on both links
and the card works; a server whose certificate comes from another CA is refused with one
log line, and the client keeps retrying as for any peer it cannot reach.

A peer is who its certificate names (issue 11): the server link takes only a certificate
naming ``urn:remsim:server``, the bankd link only one naming the bank the server sent the
client to. Any other peer is closed before the connectClientReq, with one log line.
"""

from __future__ import annotations

import asyncio
import ipaddress
import logging
import os
import sys
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from pathlib import Path

import pytest

from remsim_client import Client, ClientConfig, MainState, ModemFrontend, RemoteCard
from remsim_common import peer_uris
from remsim_testing.client import B1_0, BANKD_IDENTITY, C23, SERVER_IDENTITY, eventually
from remsim_testing.pki import Credentials, TestCA
from remsim_testing.rspro_peers import TIMEOUT
from rspro import (
    ComponentIdentity,
    ConfigClientBankReq,
    ConfigClientBankRes,
    ConnectClientReq,
    ConnectClientRes,
    IpPort,
    ResultCode,
    SetAtrReq,
    TpduCardToModem,
    TpduModemToCard,
)
from rspro.aio import RsproStream, start_server
from rspro.link import LinkState

CARD_ATR = bytes.fromhex("3b9f96801fc78031a073be21136743200718000001a5")
SELECT_MF = bytes.fromhex("a0a40000023f00")
CLIENT_URI = "urn:remsim:client:23"
BANKD_URI = "urn:remsim:bankd:1"

Script = Callable[[RsproStream], Awaitable[None]]


class TlsPeer:
    """A TLS RSPRO listener on 127.0.0.1 playing the server or a bankd: it answers the
    client's ConnectClientReq, then runs ``script``. ``clients`` holds the URI SANs of the
    certificate the client presented, one entry per connection that got through TLS;
    ``connects`` counts the connectClientReqs."""

    def __init__(self, identity: ComponentIdentity, credentials: Credentials) -> None:
        self.identity = identity
        self.security = credentials.security()
        self.clients: list[tuple[str, ...]] = []
        self.connects = 0
        self.script: Script = _hold
        self.port = 0
        self._server: asyncio.Server | None = None

    async def _handle(self, stream: RsproStream) -> None:
        self.clients.append(peer_uris(stream.get_extra_info("ssl_object")))
        assert isinstance((await stream.recv()).msg, ConnectClientReq)
        self.connects += 1
        stream.send(ConnectClientRes(self.identity, ResultCode.OK))
        await self.script(stream)

    async def start(self) -> TlsPeer:
        self._server = await start_server(
            self._handle, "127.0.0.1", 0, ssl=self.security.server_context
        )
        self.port = self._server.sockets[0].getsockname()[1]
        return self

    async def stop(self) -> None:
        assert self._server is not None
        self._server.close()
        await self._server.wait_closed()


async def _hold(stream: RsproStream) -> None:
    await stream.wait_closed()


def server_script(bankd: TlsPeer) -> Script:
    """The server's: a slotmap B1:0 <-> C23:0 on ``bankd``, then nothing more."""

    async def script(stream: RsproStream) -> None:
        stream.send(
            ConfigClientBankReq(B1_0, IpPort(ipaddress.IPv4Address("127.0.0.1"), bankd.port))
        )
        assert isinstance((await stream.recv()).msg, ConfigClientBankRes)
        await stream.wait_closed()

    return script


async def bankd_script(stream: RsproStream) -> None:
    """The bankd's: the card's ATR, then 9F16 to every TPDU."""
    stream.send(SetAtrReq(C23, CARD_ATR))
    async for pdu in stream:
        if isinstance(pdu.msg, TpduModemToCard):
            stream.send(TpduCardToModem(B1_0, C23, bytes.fromhex("9f16")))


@pytest.fixture
def ca(tmp_path: Path) -> TestCA:
    return TestCA(tmp_path / "ca")


@pytest.fixture
def client_credentials(ca: TestCA) -> Credentials:
    return ca.issue("client-23", CLIENT_URI)


@asynccontextmanager
async def tls_peers(
    server_credentials: Credentials, bankd_credentials: Credentials
) -> AsyncIterator[tuple[TlsPeer, TlsPeer]]:
    """A TLS server that maps C23:0 to B1:0 on a TLS bankd, with these certificates."""
    bankd = TlsPeer(BANKD_IDENTITY, bankd_credentials)
    server = TlsPeer(SERVER_IDENTITY, server_credentials)
    bankd.script = bankd_script
    server.script = server_script(bankd)
    await bankd.start()
    await server.start()
    try:
        yield server, bankd
    finally:
        await server.stop()
        await bankd.stop()


@pytest.fixture
async def peers(ca: TestCA) -> AsyncIterator[tuple[TlsPeer, TlsPeer]]:
    """The server and bankd B1 with the certificates they should have."""
    server, bankd = ca.issue("server", "urn:remsim:server"), ca.issue("bankd-1", BANKD_URI)
    async with tls_peers(server, bankd) as both:
        yield both


async def test_remote_card_over_mutual_tls_on_both_links(
    peers: tuple[TlsPeer, TlsPeer], client_credentials: Credentials
) -> None:
    server, bankd = peers
    async with RemoteCard(
        client_id=23, port=server.port, timeout=TIMEOUT, security=client_credentials.security()
    ) as card:
        assert card.atr == CARD_ATR
        assert await card.transmit(SELECT_MF) == bytes.fromhex("9f16")
        assert card.client.server_state is card.client.bankd_state is LinkState.CONNECTED
    # Each link presented the client's certificate: mutual TLS, not just a TLS server.
    assert server.clients == bankd.clients == [(CLIENT_URI,)]


async def test_the_shell_takes_its_tls_files_from_the_command_line(
    peers: tuple[TlsPeer, TlsPeer], client_credentials: Credentials
) -> None:
    server, bankd = peers
    creds = client_credentials
    env = {k: v for k, v in os.environ.items() if not k.startswith("REMSIM_")}
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "remsim_client.shell", "-p", str(server.port), "-c", "23",
        "--tls-cert", str(creds.cert), "--tls-key", str(creds.key), "--tls-ca", str(creds.ca),
        stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE, env=env,
    )  # fmt: skip
    assert proc.stdin is not None and proc.stdout is not None
    try:
        async with asyncio.timeout(TIMEOUT):
            assert await proc.stdout.readline() == b"SET_ATR: 3b 00 \n"
            assert await proc.stdout.readline() == f"SET_ATR: {CARD_ATR.hex(' ')} \n".encode()
            proc.stdin.write(SELECT_MF.hex().encode() + b"\n")
            assert await proc.stdout.readline() == b"R-APDU: 9f 16 \n"
            proc.stdin.close()
            assert await proc.wait() == 0
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
    assert server.clients == bankd.clients == [(CLIENT_URI,)]


class _Modem(ModemFrontend):
    def set_atr(self, atr: bytes) -> None:
        pass

    def card_to_modem(self, data: bytes) -> None:
        pass


def client_side(caplog: pytest.LogCaptureFixture) -> list[logging.LogRecord]:
    """What the client logged (the listener's ``rspro`` logger has its own line)."""
    return [r for r in caplog.records if r.name == "rspro.link" or r.name.startswith("remsim.")]


async def test_a_server_certificate_of_another_ca_is_refused_with_one_log_line(
    peers: tuple[TlsPeer, TlsPeer], tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    server, _ = peers
    stranger = TestCA(tmp_path / "other-ca", "another CA").issue("client-23", CLIENT_URI)
    config = ClientConfig(server_port=server.port, client_slot=C23)
    with caplog.at_level(logging.WARNING):
        async with Client(config, _Modem(), security=stranger.security()) as client:
            await eventually(lambda: bool(client_side(caplog)))
            assert client.state is MainState.INIT
            assert client.server_state is not LinkState.CONNECTED
    (record,) = client_side(caplog)  # the first failure; the retries log at DEBUG
    assert record.name == "rspro.link" and record.levelno == logging.WARNING
    assert "CERTIFICATE_VERIFY_FAILED" in record.getMessage()
    assert "\n" not in record.getMessage() and record.exc_info is None
    assert server.clients == []  # no connection got through TLS


# --- identities -------------------------------------------------------------------------------


def refusals(caplog: pytest.LogCaptureFixture) -> list[logging.LogRecord]:
    return [r for r in client_side(caplog) if "refusing" in r.getMessage()]


async def test_a_server_certificate_not_naming_the_server_is_refused(
    ca: TestCA, client_credentials: Credentials, caplog: pytest.LogCaptureFixture
) -> None:
    """A squatter with a certificate of the operator's CA (a bankd's): not the server."""
    squatter = ca.issue("squatter", BANKD_URI)
    async with tls_peers(squatter, ca.issue("bankd-1", BANKD_URI)) as (server, _):
        config = ClientConfig(server_port=server.port, client_slot=C23)
        with caplog.at_level(logging.WARNING):
            async with Client(config, _Modem(), security=client_credentials.security()) as client:
                await eventually(lambda: bool(refusals(caplog)))
                await eventually(lambda: client.server_state is LinkState.REESTABLISH)
                assert client.state is MainState.INIT
        assert server.connects == 0  # TLS was up (see the log line), no connectClientReq
    (record,) = client_side(caplog)
    assert record.name == "rspro.link" and record.levelno == logging.WARNING
    assert record.getMessage() == (
        f"server link: refusing 127.0.0.1:{server.port}: "
        "certificate 'commonName=squatter' (bankd:1), not urn:remsim:server"
    )


async def test_a_bankd_certificate_for_another_bank_is_refused(
    ca: TestCA, client_credentials: Credentials, caplog: pytest.LogCaptureFixture
) -> None:
    """The server sends the client to B1:0; the bankd there presents B2's certificate."""
    server_credentials = ca.issue("server", "urn:remsim:server")
    async with tls_peers(server_credentials, ca.issue("bankd-2", "urn:remsim:bankd:2")) as (
        server,
        bankd,
    ):
        config = ClientConfig(server_port=server.port, client_slot=C23)
        with caplog.at_level(logging.WARNING):
            async with Client(config, _Modem(), security=client_credentials.security()) as client:
                await eventually(lambda: bool(refusals(caplog)))
                await eventually(lambda: client.bankd_state is LinkState.REESTABLISH)
                assert client.state is MainState.WAIT_BANKD
                assert client.server_state is LinkState.CONNECTED
        assert server.connects == 1 and bankd.connects == 0
    (record,) = client_side(caplog)
    assert record.name == "rspro.link" and record.levelno == logging.WARNING
    assert record.getMessage() == (
        f"bankd link: refusing 127.0.0.1:{bankd.port}: "
        "certificate 'commonName=bankd-2' (bankd:2), not urn:remsim:bankd:1"
    )
