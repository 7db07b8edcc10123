"""The bankd with mutual TLS on both RSPRO endpoints: its client port and its control link.

Real handshakes on 127.0.0.1 with certificates of a throw-away CA (``remsim_testing.pki``);
the RSPRO bytes inside are the plaintext ones. A peer that fails the handshake is closed
with one log line, and never holds up the accept loop or the other clients.

Identities (issue 11): a client is who its certificate names. One that claims another
client's slot (the SIM hijack) gets ``illegalClientId`` and is closed, and the real client
loses no APDU; the control link talks only to a peer whose certificate names the server.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from pathlib import Path

import pytest

from remsim_bankd.bankd import Bankd, BankdConfig, bankd_identity
from remsim_bankd.drivers import StaticCards
from remsim_bankd.sim import SimCardDriver, load_profile
from remsim_common import TransportSecurity, peer_uris
from remsim_testing.bankd import CLIENT_IDENTITY, ScriptedServer, create_mapping, transceive
from remsim_testing.pki import TestCA
from remsim_testing.rspro_peers import ScriptedConnection, frame
from rspro import (
    BankSlot,
    ClientSlot,
    ConnectBankReq,
    ConnectClientReq,
    ConnectClientRes,
    Message,
    ResultCode,
    SetAtrReq,
    TpduModemToCard,
)
from rspro.ipa import IpaFramer
from rspro.link import LinkState

PROFILES = Path(__file__).parents[1] / "profiles"
C23, C24, B0 = ClientSlot(23, 0), ClientSlot(24, 0), BankSlot(1, 0)
SELECT_MF = bytes.fromhex("a0a40000023f00")
ATR = bytes.fromhex("3b9f96801fc78031a073be21136743200718000001a5")  # card0
BANKD_URI = "urn:remsim:bankd:1"
TIMEOUT = 5.0
APDUS = 50  # TPDUs the real client exchanges while an impostor claims its slot

pytestmark = pytest.mark.timeout(30)


class Pki:
    """One CA, and a certificate for each peer of the bankd."""

    def __init__(self, directory: Path) -> None:
        ca = TestCA(directory / "ca")
        self.bankd = ca.issue("bankd-1", BANKD_URI).security()
        self.server = ca.issue("server", "urn:remsim:server").security()
        self.client = ca.issue("client-23", "urn:remsim:client:23").security()
        self.impostor = ca.issue("client-24", "urn:remsim:client:24").security()
        self.ca = ca
        # A client whose certificate another CA signed (it trusts the bankd's, though).
        other = TestCA(directory / "other-ca").issue("client-24", "urn:remsim:client:24")
        self.stranger = TransportSecurity.mutual_tls(other.cert, other.key, ca.ca_file)


@pytest.fixture
def pki(tmp_path: Path) -> Pki:
    return Pki(tmp_path)


@pytest.fixture
async def tls_server(pki: Pki) -> AsyncIterator[ScriptedServer]:
    async with ScriptedServer(ssl=pki.server.server_context) as server:
        yield server


@asynccontextmanager
async def tls_bankd(server: ScriptedServer, security: TransportSecurity) -> AsyncIterator[Bankd]:
    config = BankdConfig(
        identity=bankd_identity("fixme-name", "1.0.0"),
        num_slots=2,
        server=("127.0.0.1", server.port),
        bind=("127.0.0.1", 0),
    )
    card = SimCardDriver(load_profile(PROFILES / "card0.json"))
    async with Bankd(config, StaticCards({B0: card}), security) as bankd:
        yield bankd


async def tls_client(port: int, security: TransportSecurity) -> ScriptedConnection:
    return await ScriptedConnection.connect(port, ssl=security.client_context)


async def tls_connect_client(
    port: int, security: TransportSecurity, slot: ClientSlot = C23
) -> tuple[ScriptedConnection, list[Message]]:
    """As ``remsim_testing.bankd.connect_client``, over TLS: the peer and its answers."""
    client = await tls_client(port, security)
    client.send(ConnectClientReq(CLIENT_IDENTITY, slot))
    res, _ = await client.expect(ConnectClientRes)
    msgs: list[Message] = [res]
    if res.result is ResultCode.OK:
        msgs.append((await client.recv())[0])
    return client, msgs


async def until_closed(reader: asyncio.StreamReader) -> bytes:
    """Everything the bankd sends until it closes the connection (a TLS alert may end it)."""
    received = b""
    async with asyncio.timeout(TIMEOUT):
        with contextlib.suppress(OSError):  # ssl.SSLError, ConnectionResetError
            while chunk := await reader.read(65536):
                received += chunk
    return received


async def until(condition: Callable[[], bool]) -> None:
    async with asyncio.timeout(TIMEOUT):
        while not condition():
            await asyncio.sleep(0.01)


def handshake_failures(caplog: pytest.LogCaptureFixture) -> list[logging.LogRecord]:
    return [r for r in caplog.records if "TLS handshake failed" in r.getMessage()]


async def test_a_tls_client_is_served_over_a_tls_control_link(
    pki: Pki, tls_server: ScriptedServer
) -> None:
    async with tls_bankd(tls_server, pki.bankd) as bankd:
        peer = await tls_server.bankd()  # connectBankReq / connectBankRes, inside TLS
        assert peer_uris(peer.writer.get_extra_info("ssl_object")) == (BANKD_URI,)
        assert await create_mapping(peer, C23, B0) is ResultCode.OK
        client, msgs = await tls_connect_client(bankd.port, pki.client)
        assert peer_uris(client.writer.get_extra_info("ssl_object")) == (BANKD_URI,)
        assert msgs[0] == ConnectClientRes(bankd.config.identity, ResultCode.OK)
        assert msgs[1] == SetAtrReq(C23, ATR)
        assert await transceive(client, SELECT_MF, C23, B0) == bytes.fromhex("9f16")
        await client.aclose()


async def test_the_rspro_bytes_inside_tls_are_the_plaintext_ones(
    pki: Pki, tls_server: ScriptedServer
) -> None:
    async with ScriptedServer() as plain_server:
        async with tls_bankd(plain_server, TransportSecurity.PLAINTEXT):
            plain = await plain_server.accept()
            _, plain_connect = await plain.expect(ConnectBankReq)
        async with tls_bankd(tls_server, pki.bankd):
            tls = await tls_server.accept()
            _, tls_connect = await tls.expect(ConnectBankReq)
    assert tls_connect == plain_connect


async def test_a_plaintext_client_on_the_tls_port_gets_nothing_and_is_closed(
    pki: Pki, tls_server: ScriptedServer, caplog: pytest.LogCaptureFixture
) -> None:
    async with tls_bankd(tls_server, pki.bankd) as bankd:
        peer = await tls_server.bankd()
        assert await create_mapping(peer, C23, B0) is ResultCode.OK
        reader, writer = await asyncio.open_connection("127.0.0.1", bankd.port)
        writer.write(frame(ConnectClientReq(CLIENT_IDENTITY, C23)))
        answer = await until_closed(reader)
        writer.close()
        assert IpaFramer().feed(answer) == []  # at most a TLS alert: no RSPRO
        await until(lambda: not bankd.connections)
        client, msgs = await tls_connect_client(bankd.port, pki.client)  # the port still works
        assert msgs[1] == SetAtrReq(C23, ATR)
        await client.aclose()
    (failure,) = handshake_failures(caplog)
    assert failure.name == "remsim.bankd.clients" and failure.exc_info is None


async def test_a_client_of_another_ca_is_refused(
    pki: Pki, tls_server: ScriptedServer, caplog: pytest.LogCaptureFixture
) -> None:
    async with tls_bankd(tls_server, pki.bankd) as bankd:
        peer = await tls_server.bankd()
        assert await create_mapping(peer, C23, B0) is ResultCode.OK
        answer = b""
        with contextlib.suppress(OSError):  # refused during or right after its handshake
            reader, writer = await asyncio.open_connection(
                "127.0.0.1", bankd.port, ssl=pki.stranger.client_context
            )
            writer.write(frame(ConnectClientReq(CLIENT_IDENTITY, C23)))
            answer = await until_closed(reader)
            writer.close()
        assert IpaFramer().feed(answer) == []
        await until(lambda: not bankd.connections)
    (failure,) = handshake_failures(caplog)
    assert failure.exc_info is None


async def test_a_slow_handshake_holds_up_no_other_client(
    pki: Pki, tls_server: ScriptedServer
) -> None:
    async with tls_bankd(tls_server, pki.bankd) as bankd:
        peer = await tls_server.bankd()
        assert await create_mapping(peer, C23, B0) is ResultCode.OK
        _, silent = await asyncio.open_connection("127.0.0.1", bankd.port)  # never says hello
        try:
            client, msgs = await tls_connect_client(bankd.port, pki.client)
            assert msgs[1] == SetAtrReq(C23, ATR)
            assert await transceive(client, SELECT_MF, C23, B0) == bytes.fromhex("9f16")
            await client.aclose()
        finally:
            silent.close()


async def test_the_control_link_refuses_a_server_of_another_ca(
    pki: Pki, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    other = TestCA(tmp_path / "third-ca").issue("server", "urn:remsim:server").security()
    caplog.set_level(logging.WARNING, "rspro")
    server = ScriptedServer(ssl=other.server_context)
    async with server, tls_bankd(server, pki.bankd) as bankd:
        await until(lambda: any("connect to" in r.getMessage() for r in caplog.records))
        assert bankd.control is not None and not bankd.control.connected
    (failure,) = [r for r in caplog.records if r.name == "rspro.link"]
    assert "certificate verify failed" in failure.getMessage() and failure.exc_info is None


# --- identities -------------------------------------------------------------------------------


def warnings(caplog: pytest.LogCaptureFixture) -> list[logging.LogRecord]:
    return [r for r in caplog.records if r.levelno >= logging.WARNING]


async def test_a_c24_certificate_claiming_c23s_mapped_slot_is_refused_and_c23_loses_no_apdu(
    pki: Pki, tls_server: ScriptedServer, caplog: pytest.LogCaptureFixture
) -> None:
    """The SIM hijack, with TLS on: while C23:0's real client exchanges TPDUs with its card,
    a client holding C24's certificate claims C23:0."""
    async with tls_bankd(tls_server, pki.bankd) as bankd:
        peer = await tls_server.bankd()
        assert await create_mapping(peer, C23, B0) is ResultCode.OK
        real, msgs = await tls_connect_client(bankd.port, pki.client)
        assert msgs[1] == SetAtrReq(C23, ATR)
        answered = 0

        async def real_client_session() -> None:
            nonlocal answered
            for _ in range(APDUS):  # any other PDU (an ErrorInd) or a close fails the test
                assert await transceive(real, SELECT_MF, C23, B0) == bytes.fromhex("9f16")
                answered += 1

        async def hijack() -> list[Message]:
            impostor = await tls_client(bankd.port, pki.impostor)
            impostor.send(ConnectClientReq(CLIENT_IDENTITY, C23))
            impostor.send(TpduModemToCard(C23, B0, SELECT_MF))  # no waiting for the answer
            return await impostor.closed_by_peer()

        _, stolen = await asyncio.gather(real_client_session(), hijack())
        assert stolen == [ConnectClientRes(bankd.config.identity, ResultCode.ILLEGAL_CLIENT_ID)]
        assert answered == APDUS
        await real.expect_nothing()
        assert await transceive(real, SELECT_MF, C23, B0) == bytes.fromhex("9f16")
        await real.aclose()
    (line,) = warnings(caplog)
    cause = "certificate 'commonName=client-24' (client:24) claims C23:0"
    assert line.name == "remsim.bankd.session" and line.getMessage().endswith(cause)
    assert (line.client_slot, line.bank_slot, line.cause) == ("C23:0", "B1:0", cause)  # type: ignore[attr-defined]
    assert line.peer.startswith("127.0.0.1:")  # type: ignore[attr-defined]


async def test_a_certificate_naming_several_clients_serves_any_of_them(
    pki: Pki, tls_server: ScriptedServer, caplog: pytest.LogCaptureFixture
) -> None:
    both = pki.ca.issue("modem-bay", "urn:remsim:client:23", "urn:remsim:client:24").security()
    async with tls_bankd(tls_server, pki.bankd) as bankd:
        peer = await tls_server.bankd()
        assert await create_mapping(peer, C24, B0) is ResultCode.OK
        client, msgs = await tls_connect_client(bankd.port, both, C24)
        assert msgs[1] == SetAtrReq(C24, ATR)
        assert await transceive(client, SELECT_MF, C24, B0) == bytes.fromhex("9f16")
        await client.aclose()
    assert warnings(caplog) == []


async def test_the_control_link_refuses_a_peer_whose_certificate_is_not_the_servers(
    pki: Pki, caplog: pytest.LogCaptureFixture
) -> None:
    """A squatter with a certificate of the operator's CA, but not the server's: the bankd
    closes before its connectBankReq and keeps trying (as for a server it cannot reach)."""
    squatter = pki.ca.issue("squatter", "urn:remsim:bankd:2").security()
    caplog.set_level(logging.WARNING, "rspro")
    server = ScriptedServer(ssl=squatter.server_context)
    async with server, tls_bankd(server, pki.bankd) as bankd:
        conn = await server.accept()
        await conn.expect_closed()  # no connectBankReq: at most the first PING
        assert bankd.control is not None and not bankd.control.connected
        assert bankd.control.state is LinkState.REESTABLISH  # the next attempt is due
    (line,) = [r for r in caplog.records if r.name == "rspro.link"]
    assert line.levelno == logging.WARNING and line.getMessage() == (
        f"server link: refusing 127.0.0.1:{server.port}: "
        "certificate 'commonName=squatter' (bankd:2), not urn:remsim:server"
    )
