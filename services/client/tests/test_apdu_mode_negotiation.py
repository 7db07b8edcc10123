"""Who offers the APDU mode to whom (issue 17): the client's setting ``apdu_mode``.

The client offers ``features=RemsimFeatures(apdu=True)`` in its connectClientReq on the
bankd link only, when ``on``, or ``auto`` and the bankd link is TLS with a certificate naming
our bankd; never on the server link, never from a front-end speaking T=0 TPDUs (st2). The
link is in APDU mode when the bankd's connectClientRes accepts. Without the offer the bytes
are the original's (reference/upstream-1.0.0), pinned here as in test_client_tcp.py.

The peers are scripted (``remsim_testing.client``), over plaintext or mutual TLS with a
throw-away CA; the client core runs with a recording front-end.
"""

from __future__ import annotations

import logging
import os
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import pytest

from remsim_client import ApduMode, Client, MainState, ModemFrontend
from remsim_client.options import ClientSettings, client_parser
from remsim_client.shell import PROGRAM
from remsim_common import TransportSecurity
from remsim_testing.client import (
    B1_0,
    BANKD_IDENTITY,
    C23,
    SERVER_IDENTITY,
    ScriptedPeer,
    client_config,
    config_bank,
    eventually,
)
from remsim_testing.pki import TestCA
from remsim_testing.rspro_peers import ScriptedConnection
from rspro import (
    MAX_APDU,
    ApduCardToModem,
    ApduModemToCard,
    ConfigClientBankRes,
    ConnectClientReq,
    ConnectClientRes,
    RemsimFeatures,
    ResultCode,
    RsproPdu,
    SetAtrReq,
    SetAtrRes,
    encode,
)
from rspro.ipa import MAX_FRAME, rspro_frame

# The original's connectClientReq (reference/upstream-1.0.0), to the server and the bankd.
REF_CONNECT_CLIENT_REQ = bytes.fromhex(
    "0034ee073031800102810100a229a227301d0a01001602766d800d72656d73696d2d636c69656e74"
    "8105312e302e303006020117020100"
)
APDU = RemsimFeatures(apdu=True)
CARD_ATR = bytes.fromhex("3b9f96801fc78031a073be21136743200718000001a5")
T1_ONLY_ATR = bytes.fromhex("3b901801")  # TA1, TD1 = T=1: no T=0 offered
MODE_LINES = ("bankd link in APDU mode", "bankd link in TPDU mode")


class Modem(ModemFrontend):
    """A front-end that sends whole APDUs (as RemoteCard, the shell and vpcd do)."""

    whole_apdus = True

    def __init__(self) -> None:
        self.answers: list[bytes] = []
        self.errors: list[tuple[ResultCode, str | None]] = []
        self.atrs: list[bytes] = []

    def set_atr(self, atr: bytes) -> None:
        self.atrs.append(atr)

    def card_to_modem(self, data: bytes) -> None:
        self.answers.append(data)

    def card_error(self, result: ResultCode, error: str | None) -> None:
        self.errors.append((result, error))


class TpduModem(Modem):
    """A front-end whose modem speaks T=0 TPDUs (as st2's)."""

    whole_apdus = False


def large_frame(msg: ApduCardToModem) -> bytes:
    """A frame of an APDU-mode link (up to IPA's own limit)."""
    return rspro_frame(encode(RsproPdu(msg)), MAX_FRAME)


class Link:
    """The scripted server and bankd of one client, up to the bankd's connectClientReq."""

    def __init__(self, client: Client, server: ScriptedPeer, bankd: ScriptedPeer) -> None:
        self.client, self.server, self.bankd = client, server, bankd
        self.server_req: tuple[ConnectClientReq, bytes] | None = None

    async def configure(self) -> ScriptedConnection:
        """Accept the client at the server and send it to the bankd."""
        srv = await self.server.accept()
        self.server_req = await srv.expect(ConnectClientReq)
        srv.send(ConnectClientRes(SERVER_IDENTITY, ResultCode.OK))
        await eventually(lambda: self.client.state is MainState.UNCONFIGURED)
        srv.send(config_bank(self.bankd))
        await srv.expect(ConfigClientBankRes)
        return srv

    async def bankd_connect(
        self, features: RemsimFeatures | None
    ) -> tuple[ScriptedConnection, ConnectClientReq, bytes]:
        """The bankd's next connection: its connectClientReq, answered with ``features``."""
        bk = await self.bankd.accept()
        req, raw = await bk.expect(ConnectClientReq)
        bk.send(ConnectClientRes(BANKD_IDENTITY, ResultCode.OK, features))
        await eventually(lambda: self.client.state is MainState.OPERATIONAL)
        return bk, req, raw


@asynccontextmanager
async def client_of(
    server: ScriptedPeer,
    bankd: ScriptedPeer,
    mode: ApduMode,
    frontend: ModemFrontend | None = None,
    security: TransportSecurity = TransportSecurity.PLAINTEXT,
) -> AsyncIterator[Link]:
    config = client_config(server, apdu_mode=mode)
    async with Client(config, frontend or Modem(), security=security) as client:
        yield Link(client, server, bankd)


def mode_lines(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.getMessage().startswith(MODE_LINES)]


@pytest.fixture(autouse=True)
def info_logs(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, "remsim.client")


# --- plaintext -------------------------------------------------------------------------------


async def test_auto_over_plaintext_offers_nothing_the_bytes_are_the_originals(
    server: ScriptedPeer, bankd: ScriptedPeer, caplog: pytest.LogCaptureFixture
) -> None:
    async with client_of(server, bankd, ApduMode.AUTO) as link:
        await link.configure()
        _, req, raw = await link.bankd_connect(None)
        assert link.server_req is not None and link.server_req[1] == REF_CONNECT_CLIENT_REQ
        assert raw == REF_CONNECT_CLIENT_REQ and req.features is None
        assert not link.client.apdu_mode and not link.client.frontend.apdu_mode
        assert mode_lines(caplog) == ["bankd link in TPDU mode"]


async def test_on_offers_on_the_bankd_link_only(
    server: ScriptedPeer, bankd: ScriptedPeer, caplog: pytest.LogCaptureFixture
) -> None:
    async with client_of(server, bankd, ApduMode.ON) as link:
        await link.configure()
        _, req, _ = await link.bankd_connect(APDU)
        assert link.server_req is not None and link.server_req[1] == REF_CONNECT_CLIENT_REQ
        assert req == ConnectClientReq(link.client.config.identity, C23, features=APDU)
        assert link.client.apdu_mode and link.client.frontend.apdu_mode
        assert mode_lines(caplog) == ["bankd link in APDU mode"]


async def test_an_apdu_mode_link_carries_apdus_of_any_length_both_ways(
    server: ScriptedPeer, bankd: ScriptedPeer
) -> None:
    modem = Modem()
    async with client_of(server, bankd, ApduMode.ON, modem) as link:
        await link.configure()
        bk, _, _ = await link.bankd_connect(APDU)
        capdu = bytes.fromhex("00d6000000ff00") + bytes(0xFF00)  # UPDATE BINARY, Lc = 65280
        assert link.client.modem_apdu(capdu)
        msg, raw = await bk.expect(ApduModemToCard)
        assert msg == ApduModemToCard(C23, B1_0, capdu) and len(raw) > 0xFF00
        rapdu = bytes(range(256)) * 255 + b"\x90\x00"  # 65,282 bytes
        bk.send(large_frame(ApduCardToModem(B1_0, C23, ResultCode.OK, rapdu)))
        await eventually(lambda: modem.answers == [rapdu])
        assert link.client.modem_apdu(bytes(MAX_APDU))  # the largest that fits a frame
        assert (await bk.expect(ApduModemToCard))[0].capdu == bytes(MAX_APDU)
        bk.send(ApduCardToModem(B1_0, C23, ResultCode.CARD_UNRESPONSIVE, b"", "card mute"))
        await eventually(lambda: modem.errors == [(ResultCode.CARD_UNRESPONSIVE, "card mute")])


async def test_a_bankd_that_ignores_the_offer_keeps_the_link_in_tpdu_mode(
    server: ScriptedPeer, bankd: ScriptedPeer, caplog: pytest.LogCaptureFixture
) -> None:
    async with client_of(server, bankd, ApduMode.ON) as link:
        await link.configure()
        bk, req, _ = await link.bankd_connect(None)  # an original bankd: no features
        assert req.features == APDU
        assert not link.client.apdu_mode and not link.client.frontend.apdu_mode
        assert not link.client.modem_apdu(bytes.fromhex("00b0000000"))
        await bk.expect_nothing()
        assert mode_lines(caplog) == ["bankd link in TPDU mode (the bankd declined the APDU mode)"]


async def test_every_bankd_connect_says_its_mode_once(
    server: ScriptedPeer, bankd: ScriptedPeer, caplog: pytest.LogCaptureFixture
) -> None:
    async with client_of(server, bankd, ApduMode.ON) as link:
        await link.configure()
        bk, _, _ = await link.bankd_connect(APDU)
        bk.close()  # the bankd restarts and comes back without accepting
        await eventually(lambda: link.client.state is MainState.WAIT_BANKD)
        assert not link.client.frontend.apdu_mode  # taken back when the card went
        _, req, _ = await link.bankd_connect(RemsimFeatures(apdu=False))
        assert req.features == APDU  # offered again on the new connection
        assert not link.client.apdu_mode
        assert len(mode_lines(caplog)) == 2
        assert mode_lines(caplog)[0] == "bankd link in APDU mode"


async def test_off_never_offers(server: ScriptedPeer, bankd: ScriptedPeer) -> None:
    async with client_of(server, bankd, ApduMode.OFF) as link:
        await link.configure()
        _, _, raw = await link.bankd_connect(APDU)  # accepting what was never offered
        assert raw == REF_CONNECT_CLIENT_REQ
        assert not link.client.apdu_mode


async def test_a_tpdu_front_end_never_offers(
    server: ScriptedPeer, bankd: ScriptedPeer, caplog: pytest.LogCaptureFixture
) -> None:
    async with client_of(server, bankd, ApduMode.ON, TpduModem()) as link:
        await link.configure()
        _, _, raw = await link.bankd_connect(APDU)
        assert raw == REF_CONNECT_CLIENT_REQ
        assert not link.client.apdu_mode
    assert "this front-end speaks T=0 TPDUs only" in caplog.text


async def test_a_tpdu_front_end_is_warned_of_an_atr_without_t0(
    server: ScriptedPeer, bankd: ScriptedPeer, caplog: pytest.LogCaptureFixture
) -> None:
    modem = TpduModem()
    async with client_of(server, bankd, ApduMode.AUTO, modem) as link:
        await link.configure()
        bk, _, _ = await link.bankd_connect(None)
        bk.send(SetAtrReq(C23, CARD_ATR))  # T=0: fine
        await bk.expect(SetAtrRes)
        assert "offers no T=0" not in caplog.text
        bk.send(SetAtrReq(C23, T1_ONLY_ATR))
        await bk.expect(SetAtrRes)
        assert modem.atrs[-1] == T1_ONLY_ATR  # presented all the same
    (warning,) = [r for r in caplog.records if "offers no T=0" in r.getMessage()]
    assert warning.levelno == logging.WARNING and "only T=1" in warning.getMessage()


# --- TLS -------------------------------------------------------------------------------------


class Pki:
    def __init__(self, directory: Path) -> None:
        ca = TestCA(directory / "ca")
        self.server = ca.issue("server", "urn:remsim:server").security()
        self.bankd = ca.issue("bankd-1", "urn:remsim:bankd:1").security()
        self.client = ca.issue("client-23", "urn:remsim:client:23").security()


@pytest.fixture
def pki(tmp_path: Path) -> Pki:
    return Pki(tmp_path)


@pytest.fixture
async def tls_server(pki: Pki) -> AsyncIterator[ScriptedPeer]:
    peer = ScriptedPeer(SERVER_IDENTITY)
    peer.ssl = pki.server.server_context
    async with peer:
        yield peer


@pytest.fixture
async def tls_bankd(pki: Pki) -> AsyncIterator[ScriptedPeer]:
    peer = ScriptedPeer(BANKD_IDENTITY)
    peer.ssl = pki.bankd.server_context
    async with peer:
        yield peer


async def test_auto_over_tls_offers_to_the_certified_bankd_only(
    pki: Pki, tls_server: ScriptedPeer, tls_bankd: ScriptedPeer
) -> None:
    async with client_of(tls_server, tls_bankd, ApduMode.AUTO, security=pki.client) as link:
        await link.configure()
        _, req, _ = await link.bankd_connect(APDU)
        assert link.server_req is not None
        assert link.server_req[0].features is None  # never on the server link
        assert link.server_req[1] == REF_CONNECT_CLIENT_REQ  # inside TLS: the same bytes
        assert req.features == APDU
        assert link.client.apdu_mode


async def test_off_over_tls_never_offers(
    pki: Pki, tls_server: ScriptedPeer, tls_bankd: ScriptedPeer
) -> None:
    async with client_of(tls_server, tls_bankd, ApduMode.OFF, security=pki.client) as link:
        await link.configure()
        _, _, raw = await link.bankd_connect(APDU)
        assert raw == REF_CONNECT_CLIENT_REQ
        assert not link.client.apdu_mode


# --- the setting -----------------------------------------------------------------------------


@pytest.fixture
def clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for key in list(os.environ):
        if key.startswith("REMSIM_"):
            monkeypatch.delenv(key)


@pytest.mark.usefixtures("clean_env")
class TestSetting:
    def settings(self, *argv: str) -> ClientSettings:
        return PROGRAM.load(ClientSettings, client_parser(PROGRAM, "t"), list(argv))

    def test_auto_by_default(self) -> None:
        assert self.settings().client_config().apdu_mode is ApduMode.AUTO

    @pytest.mark.parametrize("mode", list(ApduMode))
    def test_on_the_command_line(self, mode: ApduMode) -> None:
        assert self.settings("--apdu-mode", mode.value).client_config().apdu_mode is mode

    def test_in_the_environment(self, monkeypatch: pytest.MonkeyPatch) -> None:
        monkeypatch.setenv("REMSIM_CLIENT_APDU_MODE", "off")
        assert self.settings().client_config().apdu_mode is ApduMode.OFF
        assert self.settings("--apdu-mode", "on").client_config().apdu_mode is ApduMode.ON

    def test_of_every_flavour(self) -> None:
        from remsim_client.st2.cli import St2Settings, add_st2_arguments
        from remsim_client.st2_client import PROGRAM as ST2
        from remsim_client.vpcd.cli import PROGRAM as VPCD
        from remsim_client.vpcd.cli import VpcdSettings, build_parser

        vpcd = VPCD.load(VpcdSettings, build_parser(), ["--apdu-mode", "on"])
        assert vpcd.client_config().apdu_mode is ApduMode.ON
        parser = client_parser(ST2, "t")
        add_st2_arguments(parser)
        # The st2 client takes the setting too, and stays in TPDU mode whatever it says
        # (its front-end has no whole_apdus: test_a_tpdu_front_end_never_offers).
        st2 = ST2.load(St2Settings, parser, ["--apdu-mode", "on"])
        assert st2.client_config().apdu_mode is ApduMode.ON

    def test_a_bad_value_is_a_usage_error(self, capsys: pytest.CaptureFixture[str]) -> None:
        from remsim_client.shell import main

        with pytest.raises(SystemExit) as exc:
            main(["--apdu-mode", "always"])
        assert exc.value.code == 2
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and "apdu" in err
