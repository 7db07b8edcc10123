"""The bankd's /healthz, /readyz and /metrics over real HTTP, and its metrics moving with the
control link and the TPDUs; the test bed's processes started from any thread.

The bankd's families live in one registry per process (``remsim_bankd.metrics``), shared by
every ``Bankd`` of a test run, so the tests compare values before and after.
"""

from __future__ import annotations

import asyncio
import os
import socket
import subprocess
import sys
import textwrap
import threading
import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from pathlib import Path

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from remsim_bankd.bankd import Bankd, BankdConfig, bankd_identity
from remsim_bankd.config import parse_args
from remsim_bankd.drivers import StaticCards
from remsim_bankd.main import main
from remsim_bankd.sim import SimCardDriver, load_profile
from remsim_testing.bankd import (
    SERVER_IDENTITY,
    ScriptedServer,
    connect_client,
    create_mapping,
    remove_mapping,
    transceive,
)
from remsim_testing.simbank import VirtualSimBank, can_isolate
from rspro import BankSlot, ClientSlot, ConnectBankReq, ConnectBankRes, Keepalive, ResultCode

PROFILES = Path(__file__).parents[1] / "profiles"
C23, B0 = ClientSlot(23, 0), BankSlot(1, 0)
SELECT_MF = bytes.fromhex("a0a40000023f00")

pytestmark = pytest.mark.timeout(30)

Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]


@asynccontextmanager
async def running_bankd(server: ScriptedServer, **kw: object) -> AsyncIterator[Bankd]:
    config = BankdConfig(
        identity=bankd_identity("bank1", "1.2.3"),
        num_slots=2,
        server=("127.0.0.1", server.port),
        bind=("127.0.0.1", 0),
        metrics=("127.0.0.1", 0),
        **kw,  # type: ignore[arg-type]
    )
    card = SimCardDriver(load_profile(PROFILES / "card0.json"))
    async with Bankd(config, StaticCards({B0: card})) as bankd:
        yield bankd


async def get(bankd: Bankd, path: str) -> httpx.Response:
    async with httpx.AsyncClient() as http:
        return await http.get(f"http://127.0.0.1:{bankd.metrics_port}{path}")


async def scrape(bankd: Bankd) -> Samples:
    """Every sample of /metrics by (name, labels)."""
    response = await get(bankd, "/metrics")
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/plain")
    return {
        (s.name, frozenset(s.labels.items())): s.value
        for family in text_string_to_metric_families(response.text)
        for s in family.samples
    }


def value(samples: Samples, name: str, **labels: str) -> float:
    return samples.get((name, frozenset(labels.items())), 0.0)


async def until(condition: Callable[[], bool], timeout: float = 3.0) -> None:
    async with asyncio.timeout(timeout):
        while not condition():
            await asyncio.sleep(0.01)


# --- endpoints ----------------------------------------------------------------------------------


async def test_healthz_and_readyz_follow_the_control_link(server: ScriptedServer) -> None:
    async with running_bankd(server) as bankd:
        assert bankd.control is not None
        health = await get(bankd, "/healthz")
        assert (health.status_code, health.text) == (200, "ok\n")
        peer = await server.accept()  # TCP is up, the bankd is not registered yet
        not_ready = await get(bankd, "/readyz")
        assert (not_ready.status_code, not_ready.json()) == (503, {"server": False})
        await peer.expect(ConnectBankReq)
        peer.send(ConnectBankRes(SERVER_IDENTITY, ResultCode.OK))
        await until(lambda: bankd.control is not None and bankd.control.connected)
        ready = await get(bankd, "/readyz")
        assert (ready.status_code, ready.json()) == (200, {"server": True})
        peer.close()  # the server goes away: not ready until the bankd is registered again
        await until(lambda: bankd.control is not None and not bankd.control.connected)
        assert (await get(bankd, "/readyz")).status_code == 503
        await server.bankd()
        await until(lambda: bankd.control is not None and bankd.control.connected)
        assert (await get(bankd, "/readyz")).status_code == 200


async def test_metrics_names_and_values_move_with_a_tpdu(server: ScriptedServer) -> None:
    async with running_bankd(server) as bankd:
        peer = await server.bankd()
        assert await create_mapping(peer, C23, B0) is ResultCode.OK
        client, _ = await connect_client(bankd.port, C23)
        before = await scrape(bankd)
        assert await transceive(client, SELECT_MF, C23, B0) == bytes.fromhex("9f16")
        after = await scrape(bankd)

    def moved(name: str, **labels: str) -> float:
        return value(after, name, **labels) - value(before, name, **labels)

    assert moved("remsim_tpdus_relayed_total", direction="modem_to_card") == 1
    assert moved("remsim_tpdus_relayed_total", direction="card_to_modem") == 1
    assert moved("remsim_tpdu_roundtrip_seconds_count") == 1
    assert 0 < moved("remsim_tpdu_roundtrip_seconds_sum") < 1
    assert moved("remsim_tpdu_roundtrip_seconds_bucket", le="+Inf") == 1
    assert value(after, "remsim_connections", role="server", state="CONNECTED") == 1
    assert value(after, "remsim_connections", role="client", state="CONN_CLIENT_MAPPED_CARD") == 1
    assert value(after, "remsim_build_info", component="remsim-bankd", version="1.2.3") == 1
    names = {name for name, _ in after}
    assert {"remsim_reconnects_total", "remsim_keepalive_timeouts_total"} <= names
    assert value(after, "remsim_slotmaps", state="ACTIVE") == 1  # the bankd's own map


async def test_slotmaps_count_the_maps_of_the_bankd(server: ScriptedServer) -> None:
    async with running_bankd(server) as bankd:
        peer = await server.bankd()
        assert value(await scrape(bankd), "remsim_slotmaps", state="ACTIVE") == 0
        assert await create_mapping(peer, C23, B0) is ResultCode.OK
        assert await create_mapping(peer, ClientSlot(24, 0), BankSlot(1, 1)) is ResultCode.OK
        assert value(await scrape(bankd), "remsim_slotmaps", state="ACTIVE") == 2
        assert await remove_mapping(peer, C23, B0) is ResultCode.OK
        assert value(await scrape(bankd), "remsim_slotmaps", state="ACTIVE") == 1


async def test_metrics_are_the_bankds_own(server: ScriptedServer) -> None:
    """Only the families the bankd measures, once each, next to the process collectors."""
    async with running_bankd(server) as bankd:
        response = await get(bankd, "/metrics")
    families = [f.name for f in text_string_to_metric_families(response.text)]
    created = {name for name in families if name.endswith("_created")}  # the counters' birth
    remsim = sorted(name for name in set(families) - created if name.startswith("remsim_"))
    assert len(families) == len(set(families))
    assert remsim == [
        "remsim_build_info",
        "remsim_connections",
        "remsim_connections_refused",
        "remsim_keepalive_timeouts",
        "remsim_reconnects",
        "remsim_slotmaps",
        "remsim_tpdu_roundtrip_seconds",
        "remsim_tpdus_relayed",
    ]
    assert "process_cpu_seconds" in families


async def test_a_waiting_client_is_counted_by_its_state(server: ScriptedServer) -> None:
    async with running_bankd(server) as bankd:
        await server.bankd()
        client, _ = await connect_client(bankd.port, ClientSlot(24, 0))  # no map
        waiting = await scrape(bankd)
        client.close()
        await until(lambda: not bankd.connections)
        gone = await scrape(bankd)
    key = {"role": "client", "state": "CONN_CLIENT_WAIT_MAP"}
    assert value(waiting, "remsim_connections", **key) == 1
    assert value(gone, "remsim_connections", **key) == 0


async def test_server_link_reconnects_are_counted(server: ScriptedServer) -> None:
    async with running_bankd(server) as bankd:
        peer = await server.bankd()
        await until(lambda: bankd.control is not None and bankd.control.connected)
        before = await scrape(bankd)
        peer.close()
        await server.bankd()
        await until(lambda: bankd.control is not None and bankd.control.connected)
        after = await scrape(bankd)
    name = "remsim_reconnects_total"
    assert value(after, name, link="server") - value(before, name, link="server") == 1


async def test_server_link_keepalive_timeouts_are_counted(server: ScriptedServer) -> None:
    fast = Keepalive(interval=0.1, timeout=0.1)
    async with running_bankd(server, server_keepalive=fast) as bankd:
        assert bankd.control is not None
        before = await scrape(bankd)
        peer = await server.accept()
        await peer.expect(ConnectBankReq)
        peer.pong = False
        peer.send(ConnectBankRes(SERVER_IDENTITY, ResultCode.OK))
        # ... and never answers the bankd's PINGs: the bankd gives up and comes back
        await server.bankd()
        await until(lambda: bankd.control is not None and bankd.control.connected)
        after = await scrape(bankd)
    name = "remsim_keepalive_timeouts_total"
    assert value(after, name, link="server") - value(before, name, link="server") == 1


# --- options ------------------------------------------------------------------------------------


def test_metrics_port_option_and_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("REMSIM_BANKD_METRICS_PORT", raising=False)

    def config(*argv: str) -> BankdConfig:
        return BankdConfig.from_settings(parse_args(["-i", "x", *argv]))

    assert config().metrics is None  # off by default
    assert config("--metrics-port", "9996", "--metrics-host", "127.0.0.1").metrics == (
        "127.0.0.1",
        9996,
    )
    monkeypatch.setenv("REMSIM_BANKD_METRICS_PORT", "9996")
    assert config().metrics == ("0.0.0.0", 9996)


def test_metrics_port_in_use_stops_start_up(capsys: pytest.CaptureFixture[str]) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        argv = ["-i", "127.0.0.1", "-I", "127.0.0.1", "-P", "0", "--card-driver", "sim",
                "--metrics-host", "127.0.0.1", "--metrics-port", str(port)]  # fmt: skip
        assert main(argv) == 1
    assert "cannot start" in capsys.readouterr().err


# --- the test bed -------------------------------------------------------------------------------


@pytest.mark.pcsc
def test_a_card_started_from_a_worker_thread_outlives_the_thread(
    virtual_sim_bank: VirtualSimBank,
) -> None:
    bank = virtual_sim_bank
    bank.stop_card(1)
    try:
        worker = threading.Thread(target=bank.start_card, args=(1,))
        worker.start()
        worker.join()
        card = bank.vcards[1]
        assert card is not None
        with pytest.raises(subprocess.TimeoutExpired):
            card.wait(0.5)  # a parent-death signal tied to the worker would have ended it
        assert bank.card_present(1)
    finally:
        bank.start_card(1)  # leave the shared bank as found


BANK_IN_A_PROCESS = textwrap.dedent("""
    import threading, time
    from remsim_testing.simbank import VirtualSimBank

    bank = VirtualSimBank()
    bank.start()
    bank.stop_card(0)
    worker = threading.Thread(target=bank.start_card, args=(0,))
    worker.start()
    worker.join()
    pids = [bank.pcscd.pid] + [card.pid for card in bank.vcards]
    print(" ".join(map(str, pids)), flush=True)
    time.sleep(60)
""")


def _alive(pid: int) -> bool:
    try:
        status = Path(f"/proc/{pid}/status").read_text()
    except FileNotFoundError:
        return False
    return "\nState:\tZ" not in status


@pytest.mark.pcsc
def test_no_pcscd_or_card_outlives_a_killed_test_process(
    virtual_sim_bank: VirtualSimBank,
) -> None:
    # A second, private bank (own pcscd socket and ports) in a process that is then killed.
    if not can_isolate():
        pytest.skip("a second pcscd needs isolation (root and unshare)")
    env = {k: v for k, v in os.environ.items() if k != "PCSCLITE_CSOCK_NAME"}
    proc = subprocess.Popen(
        [sys.executable, "-c", BANK_IN_A_PROCESS], stdout=subprocess.PIPE, text=True, env=env
    )
    try:
        assert proc.stdout is not None
        pids = [int(pid) for pid in proc.stdout.readline().split()]
        assert len(pids) == 3 and all(_alive(pid) for pid in pids)
    finally:
        proc.kill()
        proc.wait()
    deadline = time.monotonic() + 5
    while any(_alive(pid) for pid in pids) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not [pid for pid in pids if _alive(pid)]
