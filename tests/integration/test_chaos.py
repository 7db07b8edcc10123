"""Chaos (issue 12): APDUs run continuously while, in turn, every process the card path and
the maps depend on is killed (SIGKILL) and started again, and every port gets garbage.

Single host: remsim-server (SQLite state directory) and remsim-bankd on the virtual SIM
bank. Distributed: two remsim-server cores and a remsim-api on a real redis-server and
nats-server, the real remsim-bankd on core A, the clients on core B. The clients are the
real client core (``remsim_client.RemoteCard``), reading EF_ICCID over and over; an APDU
that fails (link lost, no answer, no card) is retried, from SELECT MF, until it succeeds.

After every fault the test waits (bounded) until the cards answer again. At the end: no map
was lost and every map is ACTIVE, every failed APDU was retried successfully, no answer
was wrong, no process logged a traceback. The counts are printed (``pytest -s`` / ``-rA``).
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import socket
import ssl
from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any

import httpx
import pytest

import rspro
from remsim_bankd.sim import CardProfile
from remsim_client import RemoteCard
from remsim_client.errors import RemsimClientError
from remsim_testing.simbank import VirtualSimBank
from tests.fixtures.servers import RemsimProcess, ServiceFixture
from tests.integration.test_distributed import Cluster, running_cluster
from tests.system import (
    READ_ICCID,
    SELECT_EF_ICCID,
    SELECT_MF,
    RemsimSystem,
    free_port,
)

pytestmark = [pytest.mark.integration, pytest.mark.pcsc, pytest.mark.slow]

APDU_TIMEOUT = 10.0
"""Seconds a client waits for one R-APDU before the APDU counts as failed."""
APDU_INTERVAL = 0.02
"""Seconds between two EF_ICCID reads of one client: traffic, not a load test."""
RECOVERY = 30.0
"""Upper bound in seconds for the cards to answer again after a fault (generous: two busy
cores; the 2 s recovery goal has its own test, test_fast_recovery)."""
GARBAGE_TIMEOUT = 5.0
"""Seconds for a port to take one garbage connection."""
SEED = 12


# --- the clients' traffic ---------------------------------------------------------------------


@dataclass
class Traffic:
    """One client reading EF_ICCID continuously; every APDU counted."""

    card: RemoteCard
    iccid: bytes
    ok: int = 0
    """APDUs answered as the card answers them."""
    failed: int = 0
    """APDUs that raised (link lost, no answer in time, no card mapped)."""
    retried: int = 0
    """Failed APDUs whose retry later succeeded (a whole EF_ICCID read after them did)."""
    reads: int = 0
    """Whole EF_ICCID reads (SELECT MF, SELECT EF, READ BINARY) that succeeded."""
    wrong: list[str] = field(default_factory=list)
    """Answers that were not the card's: must stay empty."""
    errors: Counter[str] = field(default_factory=Counter)
    _unretried: int = 0

    @property
    def unretried(self) -> int:
        return self._unretried

    async def run(self) -> None:
        while True:
            try:
                await self.read_iccid()
            except RemsimClientError as exc:
                self.failed += 1
                self._unretried += 1
                self.errors[type(exc).__name__] += 1
                with contextlib.suppress(RemsimClientError):
                    await self.card.wait_ready(APDU_TIMEOUT)
            else:
                self.reads += 1
                self.retried += self._unretried
                self._unretried = 0
            await asyncio.sleep(APDU_INTERVAL)

    async def read_iccid(self) -> None:
        # A reset card (new bankd session) has MF selected: the sequence holds after one.
        await self._apdu(SELECT_MF, lambda r: len(r) == 2 and r[0] == 0x9F)
        await self._apdu(SELECT_EF_ICCID, lambda r: r == b"\x9f\x0f")
        await self._apdu(READ_ICCID, lambda r: r == self.iccid + b"\x90\x00")

    async def _apdu(self, apdu: str, right: Callable[[bytes], bool]) -> None:
        rsp = await self.card.transmit(bytes.fromhex(apdu), timeout=APDU_TIMEOUT)
        if not right(rsp):
            self.wrong.append(f"{apdu} -> {rsp.hex()}")
            raise WrongAnswer(self.wrong[-1])
        self.ok += 1

    def summary(self) -> str:
        return (
            f"C{self.card.client_slot.client_id}: {self.ok} APDUs ok, {self.failed} failed, "
            f"{self.retried} of them retried ok, {self.reads} EF_ICCID reads, "
            f"errors {dict(self.errors)}, {len(self.wrong)} wrong answers"
        )


class WrongAnswer(RemsimClientError):
    """An R-APDU that is not the card's answer to the C-APDU."""


class Traffics:
    """The traffic of every client, running as tasks."""

    def __init__(self, traffics: list[Traffic]) -> None:
        self.all = traffics
        self._tasks = [asyncio.create_task(t.run()) for t in traffics]

    def marks(self) -> list[int]:
        return [t.reads for t in self.all]

    async def recovered(self, what: str) -> None:
        """Every client has completed a whole read (after its failures) since now."""
        marks = self.marks()

        def every_card_answers() -> bool:
            self._check_running()
            return all(
                t.reads > m and not t.unretried for t, m in zip(self.all, marks, strict=True)
            )

        await eventually(every_card_answers, RECOVERY, f"the cards answering after {what}")

    async def failure_seen(self, what: str) -> None:
        failed = [t.failed for t in self.all]
        await eventually(
            lambda: any(t.failed > f for t, f in zip(self.all, failed, strict=True)),
            RECOVERY,
            f"a client noticing {what}",
        )

    def failures(self) -> int:
        return sum(t.failed for t in self.all)

    def _check_running(self) -> None:
        for task in self._tasks:
            if task.done():
                task.result()  # re-raises what ended it
                raise AssertionError("a traffic task ended")

    def check(self) -> None:
        """Every failed APDU retried successfully, no wrong answer."""
        self._check_running()
        for t in self.all:
            assert not t.unretried, t.summary()
            assert t.failed == t.retried, t.summary()
            assert not t.wrong, t.summary()
            assert t.reads > 0, t.summary()

    def print_counts(self, title: str, faults: list[str]) -> None:
        print(f"\nchaos, {title}: faults in turn: {', '.join(faults)}")
        for t in self.all:
            print("  " + t.summary())

    async def aclose(self) -> None:
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)


@contextlib.asynccontextmanager
async def cards(port: int, clients: list[tuple[int, bytes]]) -> AsyncIterator[Traffics]:
    """A RemoteCard per (client id, its card's EF_ICCID) on the server at ``port``, each
    reading its card continuously once it has it."""
    remote = [
        RemoteCard("127.0.0.1", client_id, 0, port=port, timeout=RECOVERY,
                   apdu_timeout=APDU_TIMEOUT)
        for client_id, _ in clients
    ]  # fmt: skip
    async with contextlib.AsyncExitStack() as stack:
        for card in remote:
            await stack.enter_async_context(card)
        traffics = Traffics(
            [Traffic(card, iccid) for card, (_, iccid) in zip(remote, clients, strict=True)]
        )
        try:
            yield traffics
        finally:
            await traffics.aclose()


async def eventually(condition: Callable[[], Any], timeout: float, what: str) -> Any:
    """Await ``condition()`` (sync or async) until truthy (an OSError counts as not yet);
    fail after ``timeout`` s."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while True:
        try:
            result = condition()
            if isinstance(result, Awaitable):
                result = await result
        except OSError:
            result = None
        if result:
            return result
        if loop.time() > deadline:
            raise AssertionError(f"{what}: not reached within {timeout:.0f} s")
        await asyncio.sleep(0.05)


# --- garbage ----------------------------------------------------------------------------------


def tls_client_hello() -> bytes:
    """The first flight of a TLS client: what a TLS peer sends to a plaintext port."""
    context = ssl.create_default_context()
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    incoming, outgoing = ssl.MemoryBIO(), ssl.MemoryBIO()
    tls = context.wrap_bio(incoming, outgoing, server_hostname="localhost")
    with contextlib.suppress(ssl.SSLWantReadError):
        tls.do_handshake()
    return outgoing.read()


def garbage() -> dict[str, bytes]:
    """Hostile first bytes of a connection, by name."""
    rng = random.Random(SEED)
    hello = rspro.ConnectClientReq(
        rspro.ComponentIdentity(rspro.ComponentType.REMSIM_CLIENT, "chaos", "chaos", "0"),
        rspro.ClientSlot(999, 0),
    )
    connect = rspro.rspro_frame(rspro.encode(rspro.RsproPdu(hello)))
    return {
        "nothing": b"",
        "random bytes": rng.randbytes(1500),
        "half an IPA frame": b"\x00\x40\xee\x07" + rng.randbytes(20),
        "an oversized IPA frame": b"\xff\xff\xee\x07" + rng.randbytes(200),
        "an undecodable RSPRO PDU": rspro.rspro_frame(b"\x30\x03\x02\x01"),
        "a connect request, then an undecodable PDU": connect + rspro.rspro_frame(b"\xa1\x80"),
        "an unknown IPA CCM message": b"\x00\x02\xfe\x7f\x00",
        "an HTTP request": b"GET / HTTP/1.1\r\nHost: x\r\n\r\n",
        "a bogus HTTP request": b"BLAH /\x00\xff HTTP/9.9\r\nContent-Length: -1\r\n\r\n",
        "a truncated HTTP body": (
            b"POST /api/backend/v1/slotmaps HTTP/1.1\r\nHost: x\r\n"
            b'Content-Type: application/json\r\nContent-Length: 1000\r\n\r\n{"bank"'
        ),
        "a TLS ClientHello": tls_client_hello(),
    }


def send_garbage(port: int, data: bytes) -> None:
    """One connection to ``port``: ``data``, then close (the port must take it)."""
    with socket.create_connection(("127.0.0.1", port), timeout=GARBAGE_TIMEOUT) as sock:
        sock.sendall(data)


async def garbage_to_every_port(ports: dict[str, int]) -> int:
    """Every garbage to every port (by name); the number of connections."""
    sent = 0
    for what, data in garbage().items():
        for name, port in ports.items():
            try:
                await asyncio.to_thread(send_garbage, port, data)
            except OSError as exc:
                raise AssertionError(f"the {name} port did not take {what}: {exc}") from exc
            sent += 1
    return sent


def assert_no_traceback(logs: dict[str, Path]) -> None:
    for name, log in logs.items():
        text = log.read_text(errors="replace") if log.exists() else ""
        assert "Traceback" not in text, f"--- {name} ---\n{text[-6000:]}"


# --- single host ------------------------------------------------------------------------------


@pytest.fixture
def metrics_port() -> int:
    """The bankd's health and metrics port."""
    return free_port()


@pytest.fixture
def system(
    virtual_sim_bank: VirtualSimBank, tmp_path: Path, metrics_port: int
) -> Iterator[RemsimSystem]:
    """Server (SQLite state directory under tmp_path) and bankd, with its metrics port."""
    system = RemsimSystem(virtual_sim_bank, tmp_path, store="sqlite")
    try:
        system.start_server()
        system.start_bankd(["--metrics-port", str(metrics_port), "--metrics-host", "127.0.0.1"])
        yield system
    except BaseException:
        print(system.logs())
        raise
    finally:
        system.stop()


def single_host_maps(system: RemsimSystem) -> dict[int, str] | None:
    """Bank slot -> state of every slotmap (None: the server does not answer yet)."""
    status, body = system.rest("GET", "/slotmaps")
    return {m["bank"]["slotNr"]: m["state"] for m in body["slotmaps"]} if status == 200 else None


async def test_chaos_single_host(
    system: RemsimSystem, card_profiles: list[CardProfile], metrics_port: int
) -> None:
    for slot, client_id in enumerate((23, 24)):
        await asyncio.to_thread(system.map, slot, client_id)
    clients = [(23, card_profiles[0].ef_iccid), (24, card_profiles[1].ef_iccid)]
    server, bankd = system.server, system.bankd
    assert server is not None and bankd is not None
    expected = {0: "ACTIVE", 1: "ACTIVE"}

    async def maps_intact() -> None:
        await eventually(lambda: single_host_maps(system) == expected, RECOVERY, "every map ACTIVE")

    faults: list[str] = []
    async with cards(system.rspro_port, clients) as traffic:
        await traffic.recovered("the start")

        faults.append("kill -9 bankd")
        bankd.kill()
        await traffic.failure_seen("the bankd's death")
        await asyncio.to_thread(bankd.restart)
        await maps_intact()
        await traffic.recovered("the bankd's restart")

        faults.append("kill -9 server")
        server.kill()
        await asyncio.to_thread(server.restart)
        await asyncio.to_thread(system.wait_bank_connected)
        await maps_intact()
        await traffic.recovered("the server's restart")

        faults.append("garbage")
        failures = traffic.failures()
        sent = await garbage_to_every_port({
            "server RSPRO": system.rspro_port, "server REST": system.rest_port,
            "bankd clients": system.bankd_port,
            "bankd metrics": metrics_port,
        })  # fmt: skip
        faults[-1] = f"{sent} garbage connections"
        await traffic.recovered("the garbage")
        assert traffic.failures() == failures, "garbage disturbed a client"
        assert server.running and bankd.running

        await maps_intact()
        traffic.check()
        traffic.print_counts("single host", faults)
    assert_no_traceback({"server": server.log, "bankd": bankd.log})


# --- distributed ------------------------------------------------------------------------------


@pytest.fixture
async def cluster(
    own_redis_server: ServiceFixture, own_nats_server: ServiceFixture, tmp_path: Path
) -> AsyncIterator[Cluster]:
    async with running_cluster(own_redis_server, own_nats_server, tmp_path) as cluster:
        yield cluster


async def test_chaos_distributed(
    cluster: Cluster,
    virtual_sim_bank: VirtualSimBank,
    card_profiles: list[CardProfile],
    tmp_path: Path,
) -> None:
    core_a, core_b = cluster.cores
    # The real bankd on core A (its REST answers for the whole cluster), the clients on B.
    bank = RemsimSystem(
        virtual_sim_bank, tmp_path, rest_port=core_a.rest_port, rspro_port=core_a.rspro_port,
        bankd_port=cluster.bankd_port,
    )  # fmt: skip
    try:
        await asyncio.to_thread(bank.start_bankd)
        bankd = bank.bankd
        assert bankd is not None
        for slot, client_id in enumerate((23, 24)):
            response = await cluster.map(rspro.BankSlot(1, slot), rspro.ClientSlot(client_id, 0))
            assert response.status_code == 201, response.text
        expected = {(1, 0): "ACTIVE", (1, 1): "ACTIVE"}

        async def maps_intact() -> None:
            async def intact() -> bool:
                with contextlib.suppress(AssertionError, httpx.HTTPError):
                    return await cluster.slotmaps() == expected
                return False

            await eventually(intact, RECOVERY, "every map ACTIVE")

        clients = [(23, card_profiles[0].ef_iccid), (24, card_profiles[1].ef_iccid)]
        faults: list[str] = []
        async with cards(core_b.rspro_port, clients) as traffic:
            await traffic.recovered("the start")
            await maps_intact()

            faults.append("kill -9 bankd")
            bankd.kill()
            await traffic.failure_seen("the bankd's death")
            await asyncio.to_thread(bankd.restart)
            await maps_intact()
            await traffic.recovered("the bankd's restart")

            async def api_lacks(backend: str) -> bool:
                with contextlib.suppress(httpx.HTTPError):
                    status, ready = await cluster.readiness(cluster.api)
                    return status == 503 and not ready.get(backend, True)
                return False

            victims: list[tuple[str, RemsimProcess | ServiceFixture, str | None]] = [
                ("core A (the bankd's)", core_a, None), ("core B (the clients')", core_b, None),
                ("redis-server", cluster.redis, "store"), ("nats-server", cluster.nats, "bus"),
            ]  # fmt: skip
            for name, process, backend in victims:
                faults.append(f"kill -9 {name}")
                process.kill()
                if backend is not None:  # down until the cluster notices
                    await eventually(partial(api_lacks, backend), RECOVERY, f"{name} missed")
                await asyncio.to_thread(process.start)
                await maps_intact()
                await traffic.recovered(f"the restart of {name}")

            failures = traffic.failures()
            ports = {"API": cluster.api.rest_port, "bankd clients": cluster.bankd_port}
            for core in cluster.cores:
                ports |= {
                    f"{core.name} RSPRO": core.rspro_port,
                    f"{core.name} REST": core.rest_port,
                }
            sent = await garbage_to_every_port(ports)
            faults.append(f"{sent} garbage connections")
            await traffic.recovered("the garbage")
            assert traffic.failures() == failures, "garbage disturbed a client"
            assert all(p.running for p in (*cluster.cores, cluster.api)) and bankd.running

            await maps_intact()
            traffic.check()
            traffic.print_counts("distributed", faults)
        logs = {p.name: tmp_path / f"{p.name}.log" for p in (*cluster.cores, cluster.api)}
        assert_no_traceback({**logs, "bankd": bankd.log})
    except BaseException:
        print(bank.logs())
        raise
    finally:
        bank.stop()
