"""Review fixes of the control core: out-of-range ids are refused at identification, a
failing bus subscription fails the start, lost events are made up for by the periodic
resync, an API with Redis but without NATS is refused, and remsim-apitool's port checks."""

import asyncio
from collections.abc import AsyncIterator, Callable
from contextlib import AbstractAsyncContextManager, asynccontextmanager

import httpx
import pytest

import rspro
from remsim_api import apitool
from remsim_api.main import serve
from remsim_api.settings import ApiSettings
from remsim_control import BackendUnavailable, MemoryBus, MemoryStore
from remsim_control.backends import open_backends
from remsim_control.bus import Event
from remsim_server.core import ControlCore
from remsim_testing.rspro_peers import ScriptedConnection
from remsim_testing.server import (
    BANKD_IDENTITY,
    CLIENT_IDENTITY,
    connect_bankd,
    running_server,
    server_settings,
)

MAP = {"bank": {"bankId": 1, "slotNr": 0}, "client": {"clientId": 23, "slotNr": 0}}
SERVER_IDENTITY = rspro.ComponentIdentity(
    rspro.ComponentType.REMSIM_SERVER, "fixme-name", "remsim-server", "1.0.0"
)


@pytest.mark.parametrize(
    ("hello", "answer", "result"),
    [
        (
            rspro.ConnectBankReq(BANKD_IDENTITY, 5000, 2),
            rspro.ConnectBankRes,
            rspro.ResultCode.ILLEGAL_BANK_ID,
        ),
        (
            rspro.ConnectClientReq(CLIENT_IDENTITY, rspro.ClientSlot(5000, 0)),
            rspro.ConnectClientRes,
            rspro.ResultCode.ILLEGAL_CLIENT_ID,
        ),
        (
            rspro.ConnectClientReq(CLIENT_IDENTITY, rspro.ClientSlot(23, 4096)),
            rspro.ConnectClientRes,
            rspro.ResultCode.ILLEGAL_CLIENT_ID,
        ),
    ],
    ids=["bank 5000", "client 5000", "client slot 4096"],
)
async def test_an_out_of_range_id_is_refused_and_the_connection_closed(
    hello: rspro.Message,
    answer: type[rspro.Message],
    result: rspro.ResultCode,
    caplog: pytest.LogCaptureFixture,
) -> None:
    settings = server_settings()
    async with running_server(settings) as server:
        server.core.reject_delay = 0.05
        peer = await ScriptedConnection.connect(server.rspro_port)
        peer.send(hello)
        refusal, _ = await peer.expect(answer)
        assert refusal.result is result  # type: ignore[attr-defined]
        await peer.expect_closed()
        assert await server.store.list_banks() == []
        assert await server.store.list_clients() == []
    assert not [r for r in caplog.records if r.exc_info is not None]


class _FailingBus(MemoryBus):
    def subscribe(self) -> AbstractAsyncContextManager[AsyncIterator[Event]]:  # type: ignore[override]
        @asynccontextmanager
        async def failing() -> AsyncIterator[AsyncIterator[Event]]:
            raise BackendUnavailable("NATS refused the subscription")
            yield  # pragma: no cover

        return failing()


async def test_a_failing_bus_subscription_fails_the_start() -> None:
    core = ControlCore(MemoryStore(), _FailingBus(), identity=SERVER_IDENTITY, core_id="core-a")
    async with asyncio.timeout(5):
        with pytest.raises(BackendUnavailable, match="subscription"):
            await core.start("127.0.0.1", 0)
    assert core.sockets == []


class _LossyBus(MemoryBus):
    """Loses every publication while ``losing`` (as NATS dropping a slow consumer's
    messages, or a publication buffered when the connection broke)."""

    losing = True

    async def publish(self, event: Event) -> None:
        if not self.losing:
            await super().publish(event)


async def _eventually(condition: Callable[[], bool], timeout: float = 5.0) -> None:
    async with asyncio.timeout(timeout):
        while not condition():
            await asyncio.sleep(0.02)


async def test_a_lost_event_is_made_up_for_by_the_periodic_resync() -> None:
    bus = _LossyBus()
    settings = server_settings(resync_interval=0.2)
    async with running_server(settings, MemoryStore(), bus) as server:
        bankd = await connect_bankd(server.rspro_port)
        base_url = f"http://127.0.0.1:{server.rest_port}/api/backend/v1"
        async with httpx.AsyncClient(base_url=base_url, timeout=5) as http:
            assert (await http.post("/slotmaps", json=MAP)).status_code == 201
        # The API's event is lost; the core finds the map at its next resync.
        request, _ = await bankd.expect(rspro.CreateMappingReq, timeout=2)
        assert request.bank == rspro.BankSlot(1, 0)


async def test_an_api_with_redis_but_without_nats_is_refused() -> None:
    settings = ApiSettings(redis_url="redis://127.0.0.1:1/0", rest_host="127.0.0.1", rest_port=0)
    with pytest.raises(ValueError, match="REMSIM_NATS_URL"):
        await open_backends(settings)
    assert await serve(settings) == 1


@pytest.mark.parametrize("port", ["abc", "0", "65536", "-1"])
def test_apitool_refuses_a_bad_port_without_a_traceback(
    port: str, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as exited:
        apitool.main(["-p", port, "-b"])
    assert exited.value.code == 2
    err = capsys.readouterr().err
    assert "not a TCP port" in err and "Traceback" not in err


def test_apitool_reports_a_bad_host_in_one_line(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exited:
        apitool.main(["-H", "zz:", "-b"])
    assert exited.value.code == 1
    err = capsys.readouterr().err
    assert err.startswith("remsim-apitool: GET") and err.count("\n") == 1
