"""Scripted server and bankds (remsim_testing.client) on free ports of 127.0.0.1, and our
real bankd with a software SIM (``t0_bankd``, ``t1_bankd``)."""

import ipaddress
from collections.abc import AsyncIterator, Callable
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from pathlib import Path

import pytest

from remsim_common import TransportSecurity
from remsim_testing.bankd import ScriptedServer, create_mapping
from remsim_testing.client import B1_0, BANKD_IDENTITY, C23, SERVER_IDENTITY, ScriptedPeer
from remsim_testing.rspro_peers import ScriptedConnection
from remsim_testing.wire_proxy import WireProxy
from rspro import ConfigClientBankReq, ConnectClientReq, ConnectClientRes, IpPort, ResultCode


@pytest.fixture
async def server() -> AsyncIterator[ScriptedPeer]:
    async with ScriptedPeer(SERVER_IDENTITY) as peer:
        yield peer


@pytest.fixture
async def bankd() -> AsyncIterator[ScriptedPeer]:
    async with ScriptedPeer(BANKD_IDENTITY) as peer:
        yield peer


@pytest.fixture
async def bankd2() -> AsyncIterator[ScriptedPeer]:
    async with ScriptedPeer(BANKD_IDENTITY) as peer:
        yield peer


# --- our real bankd with a software SIM (the APDU-mode tests) --------------------------------

PROFILES = Path(__file__).parents[2] / "bankd" / "profiles"


class SimBankd:
    """Our bankd (in-process) serving a software SIM in B1:0, mapped to C23:0 by a scripted
    server on its control link, behind ``proxy``, a WireProxy counting the RSPRO messages."""

    def __init__(self, proxy: WireProxy) -> None:
        self.proxy = proxy

    async def send_client(self, server: ScriptedPeer) -> ScriptedConnection:
        """Play the client's server: accept the client, send it to this bankd (the proxy)."""
        srv = await server.accept()
        await srv.expect(ConnectClientReq)
        srv.send(ConnectClientRes(SERVER_IDENTITY, ResultCode.OK))
        srv.send(
            ConfigClientBankReq(B1_0, IpPort(ipaddress.IPv4Address("127.0.0.1"), self.proxy.port))
        )
        return srv


@asynccontextmanager
async def _sim_bankd(
    profile: str,
    security: TransportSecurity = TransportSecurity.PLAINTEXT,
    server_security: TransportSecurity = TransportSecurity.PLAINTEXT,
) -> AsyncIterator[SimBankd]:
    """``profile`` (services/bankd/profiles) in B1:0 of our bankd; with TLS, ``security`` is
    the bankd's (both its ports) and ``server_security`` its control link's server's."""
    # Imported here: the other client tests do not need the bankd to import.
    from remsim_bankd.bankd import Bankd, BankdConfig, bankd_identity
    from remsim_bankd.drivers import StaticCards
    from remsim_bankd.sim import SimCardDriver, load_profile

    async with ScriptedServer(ssl=server_security.server_context) as control:
        config = BankdConfig(
            identity=bankd_identity("fixme-name", "1.0.0"),
            num_slots=1,
            server=("127.0.0.1", control.port),
            bind=("127.0.0.1", 0),
        )
        card = SimCardDriver(load_profile(PROFILES / f"{profile}.json"))
        async with Bankd(config, StaticCards({B1_0: card}), security) as bankd:
            assert await create_mapping(await control.bankd(), C23, B1_0) is ResultCode.OK
            with WireProxy(("127.0.0.1", bankd.port)) as proxy:
                yield SimBankd(proxy)


SimBankdFactory = Callable[..., AbstractAsyncContextManager[SimBankd]]


@pytest.fixture
def sim_bankd() -> SimBankdFactory:
    """``sim_bankd(profile, security, server_security)``: our bankd with that card, as an
    async context manager (for TLS; otherwise ``t0_bankd`` and ``t1_bankd``)."""
    return _sim_bankd


@pytest.fixture
async def t0_bankd() -> AsyncIterator[SimBankd]:
    """card0: a T=0 SIM (the recordings' card)."""
    async with _sim_bankd("card0") as bankd:
        yield bankd


@pytest.fixture
async def t1_bankd() -> AsyncIterator[SimBankd]:
    """card-t1: a T=1 card with a 32 KiB transparent EF (2F50) taking extended lengths."""
    async with _sim_bankd("card-t1") as bankd:
        yield bankd
