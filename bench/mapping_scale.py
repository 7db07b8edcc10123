"""Mapping at scale: N bank slots, N clients, N slotmap POSTs; then N DELETEs, and a
global reset of N maps.

For each N (``--maps 100,1000,10000``) and each set-up, on fresh server processes:

- **map**: N ``POST /slotmaps`` (32 in flight) until every client has its ATR (the server
  pushes createMappingReq to the bankd, gets the answer, configures the client, the client
  connects to the bankd and receives the ATR);
- **remove**: N ``DELETE /slotmaps/{id}`` until every client has let its card go (it was
  sent the "no bankd" configuration and closed its bankd session);
- **map (batch)**: the N maps again, as ``POST /api/v1/slotmaps:batch`` of 1,000 maps
  (2 in flight), until every client has its ATR;
- **reset**: ``POST /global-reset`` until every client has let its card go.

Printed per phase: the time the requests took, the time until every client is done,
maps/s, and the CPU seconds of every process; per run the peak RSS of every process.

Set-ups: **single host**, one ``remsim-server`` (``REMSIM_STORE=memory``: in-memory store
and bus, REST API embedded); **distributed**, two server cores and one ``remsim-api`` on a
real redis-server and nats-server, bankds and clients spread over both cores (bank *b* on
core *b* mod 2, client *n* on core (*n*+1) mod 2), so most maps cross cores.

The simulated bankds and clients (RSPRO peers on libs/rspro, ``tests.fixtures.servers``)
run in worker processes of this script (``--worker``; the bankds in one, the clients
``CLIENTS_PER_WORKER`` to a worker), so that neither their CPU nor their file descriptors
are the benchmark's limit; the load generator is a minimal HTTP/1.1 client on asyncio
streams (``LeanHttp``: about 0.1 ms of CPU a request, where httpx took 1 ms).

``--quick`` (CI, ``tests/test_benchmarks.py``): N = ``QUICK_MAPS`` in both set-ups; fails
(exit 1) only on a gross regression: the server processes' CPU per map over 3x the
recorded figure (``RECORDED_CPU_MS_PER_MAP``), in two runs in a row.

    python bench/mapping_scale.py [--maps 100,1000,10000] [--mode single|distributed|both]
        [--quick] [--profile DIR]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import math
import os
import platform
import resource
import signal
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

import rspro  # noqa: E402
from tests.fixtures.servers import (  # noqa: E402
    REST_PREFIX,
    RemsimProcess,
    SimBankd,
    SimClient,
    backend_env,
    find_binary,
    local_nats_server,
    local_redis_server,
)
from tests.system import OWN_PREFIX, free_port  # noqa: E402

BANK_SLOTS = 1000
"""Slots of one simulated bankd at most: 10,000 maps are 10 bankds x 1,000 slots."""
MIN_BANKS = 4
POST_CONCURRENCY = 32
"""Requests in flight (connections of the load generator)."""
IDLE_REUSE = 2.0
"""Seconds a keep-alive connection of the load generator may have been idle to be used
again (the server closes it after 5: ``remsim_api.limits.KEEPALIVE_TIMEOUT``)."""
BATCH_SIZE = 1000
"""Maps per ``POST /api/v1/slotmaps:batch`` in the batch phase."""
BATCH_CONCURRENCY = 2
"""Batch requests in flight."""
CONNECT_BATCH = 50
"""Clients a worker connects at a time (so that no listen backlog overflows: a dropped SYN
costs a 1 s retry)."""
CLIENTS_PER_WORKER = 2500
"""Simulated clients per worker process: two sockets each, well within ``ulimit -n``."""
TIMEOUT = 300.0
CONNECTION_LIMIT = 100_000
"""The cores' RSPRO connection limits (per port, per address) in the benchmark: every peer
connects from 127.0.0.1."""
QUICK_MAPS = 200
REGRESSION_FACTOR = 3.0
RECORDED_CPU_MS_PER_MAP = {"single": 0.9, "distributed": 3.5}
"""Server CPU per map (ms, map phase, all server processes together) recorded at
``QUICK_MAPS`` on the reference machine (docs/benchmarks.md); ``--quick`` fails over
``REGRESSION_FACTOR`` times that."""
PROFILE_DIR: Path | None = None
"""``--profile``: every server process runs under cProfile, one phase at a time, and writes
``<name>-<phase>.prof`` here (``PROFILED``)."""
PROFILE_START, PROFILE_STOP = signal.SIGUSR1, signal.SIGUSR2
"""What the benchmark sends a server process under ``--profile`` at the start and the end of
a phase: its profiler is on during the phase only (not during start-up and connecting)."""
PROFILE_WRITE_TIMEOUT = 10.0
"""Seconds the benchmark waits for the profiles of a phase to be written."""
PROFILED = """
import cProfile, os, signal, sys
from pathlib import Path
from {package}.main import main
profile, phase, name = cProfile.Profile(), Path({phase!r}), ""
output = {output!r}

def start(*_):
    global profile, name
    profile, name = cProfile.Profile(), phase.read_text().strip()
    profile.enable()

def stop(*_):
    profile.disable()
    profile.dump_stats(output.format(name) + ".part")
    os.replace(output.format(name) + ".part", output.format(name))

signal.signal({start}, start)
signal.signal({stop}, stop)
sys.argv[0] = {name!r}
main()
"""
"""A server process under ``--profile``: its profiler starts and stops on signals; the
benchmark writes the phase's name into ``PROFILE_DIR/phase`` first."""


class Process(RemsimProcess):
    """A server process, profiled phase by phase with ``--profile``."""

    def argv(self) -> list[str]:
        if PROFILE_DIR is None:
            return super().argv()
        package = "remsim_server" if self.kind == "core" else "remsim_api"
        code = PROFILED.format(
            package=package,
            phase=str(PROFILE_DIR / "phase"),
            output=str(PROFILE_DIR / f"{self.name}-{{}}.prof"),
            start=int(PROFILE_START),
            stop=int(PROFILE_STOP),
            name=self.name,
        )
        return [sys.executable, "-c", code]


async def signal_profilers(
    processes: Iterable[RemsimProcess], what: signal.Signals, phase: str
) -> None:
    """Start (``PROFILE_START``) or stop the profilers of ``processes`` for ``phase``; a stop
    returns once they have written their profiles (so that the next start cannot overtake
    it)."""
    if PROFILE_DIR is None:
        return
    name = phase.replace(" ", "_").replace("(", "").replace(")", "")
    running = [process for process in processes if process.running]
    outputs = [PROFILE_DIR / f"{process.name}-{name}.prof" for process in running]
    if what == PROFILE_START:  # read by the processes' start handlers: replaced atomically
        for output in outputs:
            output.unlink(missing_ok=True)
        (PROFILE_DIR / "phase.new").write_text(name)
        (PROFILE_DIR / "phase.new").replace(PROFILE_DIR / "phase")
    for process in running:
        os.kill(process.pid, what)
    if what == PROFILE_STOP:
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(PROFILE_WRITE_TIMEOUT):
                while not all(output.exists() for output in outputs):
                    await asyncio.sleep(0.05)


def cpu_seconds(pid: int) -> float:
    """User + system CPU of process ``pid`` (all its threads) so far."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def peak_rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1])
    return 0


# --- the load generator ---------------------------------------------------------------------


class LeanHttp:
    """HTTP/1.1 with keep-alive on ``connections`` connections to ``host:port``: just what
    the benchmark sends (JSON bodies, Content-Length answers)."""

    def __init__(self, host: str, port: int, connections: int = POST_CONCURRENCY) -> None:
        self.host, self.port = host, port
        self._idle: asyncio.Queue[tuple[asyncio.StreamReader, asyncio.StreamWriter] | None]
        self._idle = asyncio.Queue()
        self._used: dict[asyncio.StreamWriter, float] = {}
        for _ in range(connections):
            self._idle.put_nowait(None)  # connected on first use

    async def request(self, method: str, path: str, body: Any = None) -> tuple[int, bytes]:
        data = b"" if body is None else json.dumps(body).encode()
        head = (
            f"{method} {path} HTTP/1.1\r\nHost: {self.host}:{self.port}\r\n"
            f"Content-Type: application/json\r\nContent-Length: {len(data)}\r\n\r\n"
        ).encode()
        conn = await self._idle.get()
        try:
            if conn is not None and time.monotonic() - self._used.pop(conn[1], 0) > IDLE_REUSE:
                conn[1].close()  # the server may be closing it right now
                conn = None
            if conn is None or conn[0].at_eof() or conn[1].is_closing():
                conn = await asyncio.open_connection(self.host, self.port)
            reader, writer = conn
            writer.write(head + data)
            status_line, *lines = (await reader.readuntil(b"\r\n\r\n")).decode().split("\r\n")
            headers = dict(
                (name.strip().lower(), value.strip())
                for name, _, value in (line.partition(":") for line in lines if line)
            )
            answer = await reader.readexactly(int(headers.get("content-length", "0")))
            if headers.get("connection", "").lower() == "close":
                writer.close()
                conn = None
            else:
                self._used[writer] = time.monotonic()
            return int(status_line.split()[1]), answer
        except BaseException:
            if conn is not None:
                conn[1].close()
            conn = None
            raise
        finally:
            self._idle.put_nowait(conn)

    async def json(self, method: str, path: str, body: Any = None, expect: int = 200) -> Any:
        status, answer = await self.request(method, path, body)
        if status != expect:
            raise RuntimeError(f"{method} {path}: {status} {answer[:300]!r}")
        return json.loads(answer) if answer else None

    async def many(
        self, requests: Iterable[tuple[str, str, Any, int]], concurrency: int = POST_CONCURRENCY
    ) -> None:
        """Every request (method, path, body, expected status), ``concurrency`` in flight."""
        pending = iter(requests)

        async def worker() -> None:
            for method, path, body, expect in pending:
                await self.json(method, path, body, expect)

        await asyncio.gather(*(worker() for _ in range(concurrency)))

    async def aclose(self) -> None:
        while not self._idle.empty():
            if (conn := self._idle.get_nowait()) is not None:
                conn[1].close()


# --- the simulated peers, in worker processes -------------------------------------------


class BenchClient(SimClient):
    """A ``SimClient`` that notes when it got its ATR and when it let its card go."""

    def __init__(self, slot: rspro.ClientSlot, servers: list[tuple[str, int]]) -> None:
        super().__init__(slot, servers, retry=0.5)
        self.released = asyncio.Event()

    def _configure(self, config: rspro.ConfigClientBankReq) -> None:
        super()._configure(config)  # a bankd session for a bankd, none for 0.0.0.0:0
        if config.bankd.port == 0:
            self.released.set()
        else:
            self.released.clear()


async def _last(events: list[asyncio.Event]) -> float:
    """When the last of ``events`` is set (``time.monotonic()``, the same clock in every
    process of the host)."""
    latest = 0.0

    async def stamp(event: asyncio.Event) -> None:
        nonlocal latest
        await event.wait()
        latest = max(latest, time.monotonic())

    await asyncio.wait_for(asyncio.gather(*(stamp(event) for event in events)), TIMEOUT)
    return latest


async def worker_main() -> None:
    """``--worker``: serve commands (JSON lines on stdin), answer on stdout."""
    _raise_fd_limit()
    loop = asyncio.get_running_loop()
    reader = asyncio.StreamReader(limit=1 << 24)  # a start command names thousands of peers
    await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), sys.stdin)
    bankds: list[SimBankd] = []
    clients: list[BenchClient] = []

    def answer(**fields: Any) -> None:
        sys.stdout.write(json.dumps(fields) + "\n")
        sys.stdout.flush()

    while line := await reader.readline():
        command = json.loads(line)
        what = command["cmd"]
        if what == "start":
            for bank_id, slots, data_port, host, port in command["banks"]:
                bankd = SimBankd(bank_id, slots, [(host, port)], retry=0.5)
                await bankd.start(data_port)
                bankds.append(bankd)
            for client_id, slot_nr, host, port in command["clients"]:
                clients.append(BenchClient(rspro.ClientSlot(client_id, slot_nr), [(host, port)]))
            for first in range(0, len(clients), CONNECT_BATCH):
                batch = clients[first : first + CONNECT_BATCH]
                for client in batch:
                    await client.start()
                async with asyncio.timeout(TIMEOUT):
                    while not all(client.server for client in batch):
                        await asyncio.sleep(0.005)
            async with asyncio.timeout(TIMEOUT):
                while not all(bankd.server for bankd in bankds):
                    await asyncio.sleep(0.005)
            answer(done="start")
        elif what == "wait":
            events = [
                client.has_atr if command["for"] == "atr" else client.released for client in clients
            ]
            answer(done="wait", at=await _last(events) if events else 0.0)
        elif what == "stats":
            usage = resource.getrusage(resource.RUSAGE_SELF)
            answer(done="stats", rss_kib=usage.ru_maxrss, cpu_s=usage.ru_utime + usage.ru_stime)
        elif what == "stop":
            for client in clients:
                await client.aclose()
            for bankd in bankds:
                await bankd.aclose()
            answer(done="stop")
            return


class Worker:
    """A worker process of simulated peers, seen from the benchmark."""

    def __init__(self, name: str) -> None:
        self.name = name
        self._proc: asyncio.subprocess.Process | None = None

    async def start(self) -> None:
        self._proc = await asyncio.create_subprocess_exec(
            sys.executable,
            __file__,
            "--worker",
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE,
            limit=1 << 20,
        )

    async def call(self, cmd: str, **fields: Any) -> dict[str, Any]:
        """Send a command; its answer (``TIMEOUT`` at most)."""
        assert self._proc is not None and self._proc.stdin and self._proc.stdout
        self._proc.stdin.write((json.dumps({"cmd": cmd, **fields}) + "\n").encode())
        await self._proc.stdin.drain()
        line = await asyncio.wait_for(self._proc.stdout.readline(), TIMEOUT + 10)
        if not line:
            raise RuntimeError(f"worker {self.name} ended (exit {await self._proc.wait()})")
        answer: dict[str, Any] = json.loads(line)
        return answer

    @property
    def pid(self) -> int:
        assert self._proc is not None
        return self._proc.pid

    async def stop(self) -> None:
        if self._proc is None:
            return
        with contextlib.suppress(Exception):
            await asyncio.wait_for(self.call("stop"), 30)
        with contextlib.suppress(ProcessLookupError):
            self._proc.kill()
        await self._proc.wait()


# --- one run --------------------------------------------------------------------------------


@dataclass
class Phase:
    requests_s: float
    done_s: float
    cpu_s: dict[str, float]


@dataclass
class Result:
    mode: str
    maps: int
    banks: int
    connect_s: float
    phases: dict[str, Phase] = field(default_factory=dict)
    memory_kib: dict[str, int] = field(default_factory=dict)

    def server_cpu_ms_per_map(self) -> float:
        """CPU of the remsim processes per map in the map phase (ms)."""
        cpu = self.phases["map"].cpu_s
        server = sum(v for k, v in cpu.items() if k.startswith(("server", "core", "api")))
        return 1000 * server / self.maps


def layout(maps: int) -> tuple[int, list[tuple[rspro.BankSlot, rspro.ClientSlot]]]:
    """How many bankds, and the N (bank slot, client slot) pairs: map *n* is bank slot
    (*n* mod banks, *n* div banks) to client slot (*n* mod 1000, *n* div 1000)."""
    banks = max(MIN_BANKS, math.ceil(maps / BANK_SLOTS))
    pairs = [
        (rspro.BankSlot(n % banks, n // banks), rspro.ClientSlot(n % 1000, n // 1000))
        for n in range(maps)
    ]
    return banks, pairs


def _slot(slot: rspro.BankSlot | rspro.ClientSlot) -> dict[str, int]:
    key = "bankId" if isinstance(slot, rspro.BankSlot) else "clientId"
    number = slot.bank_id if isinstance(slot, rspro.BankSlot) else slot.client_id
    return {key: number, "slotNr": slot.slot_nr}


class Run:
    def __init__(
        self,
        mode: str,
        maps: int,
        cores: Sequence[RemsimProcess],
        api: RemsimProcess,
        data_ports: list[int],
    ) -> None:
        self.mode, self.maps, self.cores, self.api = mode, maps, cores, api
        self.data_ports = data_ports
        self.banks, self.pairs = layout(maps)
        self.bank_worker = Worker("bankds")
        self.client_workers = [
            Worker(f"clients-{n + 1}") for n in range(math.ceil(maps / CLIENTS_PER_WORKER))
        ]
        self.http = LeanHttp("127.0.0.1", api.rest_port)
        self.services: dict[str, int] = {}
        """Further processes to account for (redis-server, nats-server): name -> pid."""

    @property
    def workers(self) -> list[Worker]:
        return [self.bank_worker, *self.client_workers]

    def _cpu(self) -> dict[str, float]:
        cpu = {p.name: cpu_seconds(p.pid) for p in [*self.cores, self.api] if p.running}
        cpu |= {name: cpu_seconds(pid) for name, pid in self.services.items()}
        cpu |= {w.name: cpu_seconds(w.pid) for w in self.workers}
        cpu["bench"] = sum(resource.getrusage(resource.RUSAGE_SELF)[:2])
        return cpu

    async def _timed(
        self, phase: str, requests: Callable[[], Awaitable[None]], wait_for: str
    ) -> Phase:
        """Send ``requests()`` while every client worker waits for ``wait_for``."""
        servers = {*self.cores, self.api}
        await signal_profilers(servers, PROFILE_START, phase)
        before = self._cpu()
        t0 = time.monotonic()
        waits = [
            asyncio.create_task(w.call("wait", **{"for": wait_for})) for w in self.client_workers
        ]
        await asyncio.sleep(0)  # the wait commands are written before the first request
        await requests()
        requests_s = time.monotonic() - t0
        done = max(answer["at"] for answer in await asyncio.gather(*waits))
        after = self._cpu()
        await signal_profilers(servers, PROFILE_STOP, phase)
        cpu = {name: after[name] - before.get(name, 0.0) for name in after}
        return Phase(requests_s, done - t0, cpu)

    async def execute(self) -> Result:
        await asyncio.gather(*(w.start() for w in self.workers))
        servers = [("127.0.0.1", core.rspro_port) for core in self.cores]
        slots = math.ceil(self.maps / self.banks)
        banks = [
            [bank, slots, self.data_ports[bank], *servers[bank % len(servers)]]
            for bank in range(self.banks)
        ]
        started = time.monotonic()
        await self.bank_worker.call("start", banks=banks, clients=[])
        share = CLIENTS_PER_WORKER
        await asyncio.gather(
            *(
                worker.call(
                    "start",
                    banks=[],
                    clients=[
                        [c.client_id, c.slot_nr, *servers[(n + 1) % len(servers)]]
                        for n, (_, c) in enumerate(self.pairs)
                        if n // share == w
                    ],
                )
                for w, worker in enumerate(self.client_workers)
            )
        )
        await self._wait_registered()
        result = Result(self.mode, self.maps, self.banks, time.monotonic() - started)

        create = [
            ("POST", f"{REST_PREFIX}/slotmaps", {"bank": _slot(b), "client": _slot(c)}, 201)
            for b, c in self.pairs
        ]
        result.phases["map"] = await self._timed("map", lambda: self.http.many(create), "atr")
        delete = [
            ("DELETE", f"{REST_PREFIX}/slotmaps/{b.bank_id << 16 | b.slot_nr}", None, 200)
            for b, _ in self.pairs
        ]
        result.phases["remove"] = await self._timed(
            "remove", lambda: self.http.many(delete), "released"
        )
        batches = [
            (
                "POST",
                f"{OWN_PREFIX}/slotmaps:batch",
                {"slotmaps": [{"bank": _slot(b), "client": _slot(c)} for b, c in chunk]},
                200,
            )
            for chunk in (
                self.pairs[first : first + BATCH_SIZE] for first in range(0, self.maps, BATCH_SIZE)
            )
        ]
        result.phases["map (batch)"] = await self._timed(
            "map (batch)", lambda: self.http.many(batches, BATCH_CONCURRENCY), "atr"
        )
        reset = [("POST", f"{REST_PREFIX}/global-reset", None, 200)]
        result.phases["reset"] = await self._timed(
            "reset", lambda: self.http.many(reset), "released"
        )

        result.memory_kib = {p.name: peak_rss_kib(p.pid) for p in [*self.cores, self.api]}
        result.memory_kib |= {name: peak_rss_kib(pid) for name, pid in self.services.items()}
        for worker in self.workers:
            result.memory_kib[worker.name] = (await worker.call("stats"))["rss_kib"]
        result.memory_kib["bench"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        return result

    async def _wait_registered(self) -> None:
        deadline = time.monotonic() + TIMEOUT
        while time.monotonic() < deadline:
            banks = (await self.http.json("GET", f"{REST_PREFIX}/banks"))["banks"]
            clients = (await self.http.json("GET", f"{REST_PREFIX}/clients"))["clients"]
            if len(banks) == self.banks and len(clients) == self.maps:
                return
            await asyncio.sleep(0.1)
        raise TimeoutError("bankds and clients did not all register")

    async def aclose(self) -> None:
        await self.http.aclose()
        await asyncio.gather(*(w.stop() for w in self.workers))


def _data_ports(banks: int) -> tuple[list[int], dict[str, str]]:
    """A client port per simulated bankd, and the core settings announcing them. Every
    peer connects from 127.0.0.1: the per-address and per-port limits are lifted."""
    ports = [free_port() for _ in range(banks)]
    addresses = {str(bank): f"127.0.0.1:{port}" for bank, port in enumerate(ports)}
    return ports, {
        "REMSIM_BANKD_ADDRESSES": json.dumps(addresses),
        "REMSIM_LOG_LEVEL": "WARNING",
        "REMSIM_MAX_CONNECTIONS_PER_ADDRESS": str(CONNECTION_LIMIT),
        "REMSIM_MAX_CONNECTIONS": str(CONNECTION_LIMIT),
    }


async def single_host(maps: int, workdir: Path) -> Result:
    ports, env = _data_ports(layout(maps)[0])
    core = Process("core", "server", env, workdir)
    await asyncio.to_thread(core.start)
    run = Run("single host", maps, [core], core, ports)
    try:
        return await run.execute()
    finally:
        await run.aclose()
        core.stop()


async def distributed(maps: int, workdir: Path) -> Result:
    nats_binary, redis_binary = find_binary("nats-server"), find_binary("redis-server")
    if nats_binary is None or redis_binary is None:
        raise SystemExit("distributed mode needs nats-server and redis-server")
    nats = local_nats_server(nats_binary, workdir)
    redis = local_redis_server(redis_binary, workdir)
    nats.start()
    redis.start()
    ports, data_env = _data_ports(layout(maps)[0])
    env = {**backend_env(redis.url, nats.url, 15.0), **data_env}
    cores = [Process("core", f"core-{n}", env, workdir) for n in "ab"]
    api = Process("api", "api", env, workdir)
    run: Run | None = None
    try:
        await asyncio.gather(*(asyncio.to_thread(p.start) for p in [*cores, api]))
        run = Run("2 cores + API, Redis, NATS", maps, cores, api, ports)
        for service in (nats, redis):
            run.services[service.name] = service._proc.pid  # type: ignore[union-attr]
        return await run.execute()
    finally:
        if run is not None:
            await run.aclose()
        for p in [*cores, api]:
            p.stop()
        nats.stop()
        redis.stop()


# --- the report -----------------------------------------------------------------------------

DONE = {
    "map": "every client has its ATR",
    "remove": "every client let its card go",
    "map (batch)": "every client has its ATR",
    "reset": "every client let its card go",
}
REQUESTS = {
    "map": "POSTs",
    "remove": "DELETEs",
    "map (batch)": f"maps in POST /api/v1/slotmaps:batch ({BATCH_SIZE} a request)",
    "reset": "maps, one global reset",
}


def _machine() -> str:
    cpu = "?"
    with open("/proc/cpuinfo") as info:
        for line in info:
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    return (
        f"{cpu}, {os.cpu_count()} CPUs, {platform.system()} {platform.release()}, "
        f"Python {platform.python_version()}"
    )


def report(result: Result) -> None:
    r = result
    print(
        f"{r.mode}: {r.maps} maps ({r.banks} bankds) | peers registered in {r.connect_s:.2f} s",
        flush=True,
    )
    for name, phase in r.phases.items():
        rate = r.maps / phase.done_s if phase.done_s > 0 else float("inf")
        cpu = ", ".join(f"{k} {v:.2f}" for k, v in phase.cpu_s.items() if v >= 0.005)
        print(
            f"  {name}: {r.maps} {REQUESTS[name]} in {phase.requests_s:.2f} s | "
            f"{DONE[name]} after {phase.done_s:.2f} s ({rate:.0f} maps/s, "
            f"{1000 * phase.done_s / r.maps:.3f} ms/map) | CPU s: {cpu}"
        )
    memory = ", ".join(f"{name} {kib / 1024:.0f} MiB" for name, kib in r.memory_kib.items())
    print(f"  peak RSS: {memory}", flush=True)


def _raise_fd_limit() -> None:
    # Each client holds two connections, the bankds one per mapped client, the cores one
    # per peer (docs/operations.md: 10,000 clients on one core).
    _, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))


async def _one(mode: str, maps: int) -> Result:
    with tempfile.TemporaryDirectory(prefix="remsim-bench-") as tmp:
        run = single_host if mode == "single" else distributed
        return await run(maps, Path(tmp))


def quick(modes: list[str]) -> int:
    """The regression guard: 0, or 1 on a gross regression (twice in a row)."""
    failed = 0
    for mode in modes:
        limit = REGRESSION_FACTOR * RECORDED_CPU_MS_PER_MAP[mode]
        for attempt in (1, 2):
            result = asyncio.run(_one(mode, QUICK_MAPS))
            report(result)
            figure = result.server_cpu_ms_per_map()
            print(
                f"  regression guard: server CPU {figure:.2f} ms/map (recorded "
                f"{RECORDED_CPU_MS_PER_MAP[mode]:g}, limit {limit:g})"
            )
            if figure <= limit:
                break
            if attempt == 2:
                print(f"GROSS REGRESSION ({mode}): {figure:.2f} ms/map > {limit:g}")
                failed = 1
    return failed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--maps", default="100,1000,10000", help="slotmaps = clients, comma-separated list"
    )
    parser.add_argument(
        "--mode", choices=["single", "distributed", "both"], default="both", help="(both)"
    )
    parser.add_argument("--quick", action="store_true", help="CI: the regression guard")
    parser.add_argument(
        "--profile",
        type=Path,
        metavar="DIR",
        help="profile the servers (cProfile) phase by phase, into DIR/<process>-<phase>.prof",
    )
    parser.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        asyncio.run(worker_main())
        return
    if args.profile is not None:
        global PROFILE_DIR
        PROFILE_DIR = args.profile.resolve()
        PROFILE_DIR.mkdir(parents=True, exist_ok=True)
    _raise_fd_limit()
    modes = ["single", "distributed"] if args.mode == "both" else [args.mode]
    print(f"machine: {_machine()}", flush=True)
    if args.quick:
        sys.exit(quick(modes))
    for maps in (int(n) for n in args.maps.split(",")):
        for mode in modes:
            report(asyncio.run(_one(mode, maps)))


if __name__ == "__main__":
    main()
