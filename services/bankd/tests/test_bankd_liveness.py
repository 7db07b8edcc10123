"""Liveness on the client port: the identification timeout, the IPA keepalive, and no
takeover of a live session (issue 12).

The keepalive and takeover tests run ``remsim-bankd`` as a process with a scripted server
and real client processes (``data/apdu_client.py``) that are frozen (SIGSTOP) or killed
(SIGKILL); timing knobs are shortened through the options.
"""

from __future__ import annotations

import asyncio
import logging
import os
import resource
import signal
import socket
import sys
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from remsim_bankd.bankd import Bankd, BankdConfig, bankd_identity
from remsim_bankd.drivers import StaticCards
from remsim_bankd.sim import SimCardDriver, load_profile
from remsim_testing.bankd import (
    CLIENT_IDENTITY,
    ScriptedServer,
    connect_client,
    create_mapping,
    transceive,
)
from remsim_testing.rspro_peers import ScriptedConnection
from rspro import BankSlot, ClientSlot, ConnectClientReq, ConnectClientRes, ResultCode, SetAtrReq
from rspro.ipa import CcmType, ccm_frame

PROFILES = Path(__file__).parents[1] / "profiles"
CLIENT = Path(__file__).parent / "data" / "apdu_client.py"
C23, C24 = ClientSlot(23, 0), ClientSlot(24, 0)
B0, B1 = BankSlot(1, 0), BankSlot(1, 1)
SELECT_MF = bytes.fromhex("a0a40000023f00")
WAIT = 15.0


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@asynccontextmanager
async def bankd_process(
    tmp_path: Path, server: ScriptedServer, *options: str, max_fds: int | None = None
) -> AsyncIterator[tuple[int, int]]:
    """``remsim-bankd`` with two software SIMs, its log in ``tmp_path/bankd.log``, with at
    most ``max_fds`` file descriptors (``ulimit -n``); yields its client port and process id
    once it registered and B1:0 <- C23:0, B1:1 <- C24:0 are mapped."""

    def limit_fds() -> None:
        if max_fds is not None:
            resource.setrlimit(resource.RLIMIT_NOFILE, (max_fds, max_fds))

    port = free_port()
    with (tmp_path / "bankd.log").open("wb") as log:
        proc = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "remsim_bankd.main", "-i", "127.0.0.1",
            "-p", str(server.port), "-n", "2", "-I", "127.0.0.1", "-P", str(port),
            "--card-driver", "sim", "--sim-profile", str(PROFILES / "card0.json"),
            "--sim-profile", str(PROFILES / "card1.json"), *options,
            cwd=tmp_path, stderr=log, preexec_fn=limit_fds,
        )  # fmt: skip
    try:
        peer = await server.bankd(timeout=WAIT)
        assert await create_mapping(peer, C23, B0) is ResultCode.OK
        assert await create_mapping(peer, C24, B1) is ResultCode.OK
        yield port, proc.pid
    finally:
        if proc.returncode is None:
            proc.kill()
        await proc.wait()


async def wait_log(tmp_path: Path, text: str, timeout: float = WAIT) -> None:
    deadline = time.monotonic() + timeout
    while text not in (tmp_path / "bankd.log").read_text(errors="replace"):
        assert time.monotonic() < deadline, f"no {text!r} in the bankd log"
        await asyncio.sleep(0.05)


class ClientProcess:
    """``apdu_client.py``: a client sending SELECT MF continuously."""

    def __init__(self, proc: asyncio.subprocess.Process) -> None:
        self.proc = proc

    @classmethod
    async def start(cls, port: int, client_id: int, bank_slot: int) -> ClientProcess:
        proc = await asyncio.create_subprocess_exec(
            sys.executable, str(CLIENT), str(port), str(client_id), str(bank_slot),
            stdout=asyncio.subprocess.PIPE,
        )  # fmt: skip
        client = cls(proc)
        assert await client.line() == "mapped"
        return client

    async def line(self) -> str:
        assert self.proc.stdout is not None
        return (await asyncio.wait_for(self.proc.stdout.readline(), WAIT)).decode().strip()

    async def answered(self) -> int:
        """The count of the next ``ok <n>`` line (20 more APDUs answered)."""
        line = await self.line()
        assert line.startswith("ok "), line
        return int(line[3:])

    async def stop(self) -> None:
        if self.proc.returncode is None:
            self.proc.kill()
        await self.proc.wait()


async def test_a_frozen_client_loses_its_card_within_the_keepalive_window(
    tmp_path: Path,
) -> None:
    async with (
        ScriptedServer() as server,
        bankd_process(
            tmp_path, server, "--client-keepalive-interval", "0.2",
            "--client-keepalive-timeout", "0.5",
        ) as (port, _),
    ):  # fmt: skip
        frozen = await ClientProcess.start(port, 23, 0)
        live, _ = await connect_client(port, C24)  # answers PINGs
        try:
            await frozen.answered()
            frozen.proc.send_signal(signal.SIGSTOP)
            await wait_log(tmp_path, "closing: keepalive: no PONG within 0.5s client_slot=C23:0")
        finally:
            frozen.proc.send_signal(signal.SIGCONT)
        while (line := await frozen.line()) != "closed":  # its connection is gone
            assert line.startswith("ok "), line
        await frozen.stop()
        # its card is free at once; the live client kept its own through many PINGs
        client, msgs = await connect_client(port, C23)
        assert msgs[0].result is ResultCode.OK  # type: ignore[attr-defined]
        assert await transceive(client, SELECT_MF, C23, B0) == bytes.fromhex("9f16")
        assert live.pings >= 2
        assert await transceive(live, SELECT_MF, C24, B1) == bytes.fromhex("9f16")


async def test_a_live_session_is_not_taken_over_and_a_dead_one_is_replaced_at_once(
    tmp_path: Path,
) -> None:
    async with ScriptedServer() as server, bankd_process(tmp_path, server) as (port, _):
        live = await ClientProcess.start(port, 23, 0)
        try:
            before = await live.answered()
            newcomer, msgs = await connect_client(port, C23)  # the same client slot
            assert msgs[0].result is ResultCode.IDENTITY_IN_USE  # type: ignore[attr-defined]
            assert await newcomer.closed_by_peer() == []
            assert await live.answered() > before  # no APDU lost, still served
            live.proc.kill()  # kill -9: its socket is gone
            await live.proc.wait()
            started = time.monotonic()
            client, msgs = await connect_client(port, C23)
            assert isinstance(msgs[1], SetAtrReq)
            assert time.monotonic() - started < 2.0
            assert await transceive(client, SELECT_MF, C23, B0) == bytes.fromhex("9f16")
        finally:
            await live.stop()


# --- the identification timeout (in-process bankd) ------------------------------------------------


@asynccontextmanager
async def bankd(identify_timeout: float) -> AsyncIterator[Bankd]:
    config = BankdConfig(
        identity=bankd_identity("fixme-name", "1.0.0"),
        num_slots=1,
        bind=("127.0.0.1", 0),
        identify_timeout=identify_timeout,
    )
    card = SimCardDriver(load_profile(PROFILES / "card0.json"))
    async with Bankd(config, StaticCards({B0: card})) as running:
        yield running


@pytest.mark.parametrize(
    "sent",
    [b"", bytes.fromhex("0010ee07"), ccm_frame(CcmType.ID_GET, bytes.fromhex("0108"))],
    ids=["nothing", "a partial frame", "only ID_GET"],
)
async def test_a_connection_that_does_not_identify_is_closed(
    sent: bytes, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO)
    async with bankd(identify_timeout=0.3) as running:
        peer = await ScriptedConnection.connect(running.port)
        peer.send(sent)
        assert await peer.closed_by_peer() == []  # no error message either
    lines = [r for r in caplog.records if r.name.startswith("remsim.bankd.")]
    (line,) = [r.getMessage() for r in lines if "connectClientReq" in r.getMessage()]
    assert line.endswith("closing: no connectClientReq within 0.3s")
    assert not any(r.exc_info for r in caplog.records)


async def test_an_identified_client_is_not_timed_out() -> None:
    async with bankd(identify_timeout=0.3) as running:
        peer = await ScriptedConnection.connect(running.port)
        peer.send(ConnectClientReq(CLIENT_IDENTITY, C23))
        res, _ = await peer.expect(ConnectClientRes)
        assert res.result is ResultCode.CARD_NOT_PRESENT  # no map: it waits, connected
        await peer.expect_nothing(within=0.6)
        assert not peer.closed.is_set()


# --- connection limits -------------------------------------------------------------------------


async def connect_from(port: int, source: str) -> ScriptedConnection:
    reader, writer = await asyncio.open_connection("127.0.0.1", port, local_addr=(source, 0))
    return ScriptedConnection(reader, writer)


async def test_connections_over_a_limit_are_closed_at_once(
    caplog: pytest.LogCaptureFixture,
) -> None:
    config = BankdConfig(
        identity=bankd_identity("fixme-name", "1.0.0"),
        num_slots=1,
        bind=("127.0.0.1", 0),
        max_clients=3,
        max_clients_per_host=2,
    )
    async with Bankd(config, StaticCards({})) as running:
        port = running.port
        first = [await connect_from(port, "127.0.0.1") for _ in range(2)]
        await wait_until(lambda: len(running.connections) == 2)
        over_host = await connect_from(port, "127.0.0.1")
        assert await over_host.closed_by_peer() == []
        other = await connect_from(port, "127.0.0.2")  # another address: the third
        await wait_until(lambda: len(running.connections) == 3)
        over_port = await connect_from(port, "127.0.0.3")
        assert await over_port.closed_by_peer() == []
        await first[0].aclose()  # room again for 127.0.0.1
        await wait_until(lambda: len(running.connections) == 2)
        again = await connect_from(port, "127.0.0.1")
        await wait_until(lambda: len(running.connections) == 3)
        assert not any(peer.closed.is_set() for peer in (first[1], other, again))
    refusals = [r for r in caplog.records if "refused" in r.getMessage()]
    assert len(refusals) == 1  # the second within the interval is only counted
    source = over_host.writer.get_extra_info("sockname")[1]
    assert refusals[0].getMessage() == (
        f"client connection from 127.0.0.1:{source} refused: 2 client connections from "
        "127.0.0.1 (1 refused since the last such line)"
    )


async def wait_until(condition: object, timeout: float = WAIT) -> None:
    deadline = time.monotonic() + timeout
    while not condition():  # type: ignore[operator]
        assert time.monotonic() < deadline, "timed out"
        await asyncio.sleep(0.01)


def open_fds(pid: int) -> int:
    return len(os.listdir(f"/proc/{pid}/fd"))


SILENT = 2000
BATCH = 250


async def test_thousands_of_silent_connections_under_ulimit_1024(tmp_path: Path) -> None:
    """2,000 silent connections to a bankd limited to 1,024 file descriptors: a mapped
    client keeps getting answers, and the descriptors come back once they are gone."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < SILENT + 256:
        if hard != resource.RLIM_INFINITY and hard < SILENT + 256:
            pytest.skip(f"the test needs {SILENT + 256} file descriptors, the limit is {hard}")
        resource.setrlimit(resource.RLIMIT_NOFILE, (SILENT + 256, hard))
    metrics_port = free_port()

    async def handled() -> int:
        """Silent connections the bankd accepted or refused so far."""
        text = (await http.get("/metrics")).text
        values = {
            (sample.name, tuple(sorted(sample.labels.items()))): sample.value
            for family in text_string_to_metric_families(text)
            for sample in family.samples
        }
        refused = sum(values.get(("remsim_connections_refused_total", (("cause", c),)), 0)
                      for c in ("port", "host", "fds"))  # fmt: skip
        waiting = values.get(
            ("remsim_connections", (("role", "client"), ("state", "CONN_WAIT_ID"))), 0
        )
        return int(refused + waiting)

    async with (
        ScriptedServer() as server,
        bankd_process(
            tmp_path, server, "--max-clients-per-host", "5000",
            "--metrics-host", "127.0.0.1", "--metrics-port", str(metrics_port), max_fds=1024,
        ) as (port, pid),
        httpx.AsyncClient(base_url=f"http://127.0.0.1:{metrics_port}") as http,
    ):  # fmt: skip
        client, msgs = await connect_client(port, C23)
        assert isinstance(msgs[1], SetAtrReq)
        idle = open_fds(pid)
        silent: list[socket.socket] = []
        try:
            while len(silent) < SILENT:
                for _ in range(BATCH):
                    sock = socket.socket()
                    sock.setblocking(False)
                    sock.connect_ex(("127.0.0.1", port))  # queued, accepted or refused
                    silent.append(sock)
                deadline = time.monotonic() + WAIT
                while await handled() < len(silent):
                    assert time.monotonic() < deadline, f"{await handled()} of {len(silent)}"
                    await asyncio.sleep(0.05)
                assert await transceive(client, SELECT_MF, C23, B0) == bytes.fromhex("9f16")
        finally:
            for sock in silent:
                sock.close()
        assert await transceive(client, SELECT_MF, C23, B0) == bytes.fromhex("9f16")
        await wait_until(lambda: open_fds(pid) <= idle)
        log = (tmp_path / "bankd.log").read_text(errors="replace")
        assert "serving at most 480 client connections (file descriptor limit 1024)" in log
        assert "refused: 480 client connections already" in log
        assert "Traceback" not in log
        assert log.count("refused") <= 3  # rate-limited
