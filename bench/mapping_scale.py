"""Mapping at scale: 1,000 bank slots, 1,000 clients, 1,000 slotmap POSTs.

Measures the time from the first of N ``POST /slotmaps`` until every client has its ATR
(server pushes createMappingReq to the bankd, gets the answer, configures the client, the
client connects to the bankd and receives the ATR), and the memory of every process:

- single host: one ``remsim-server`` (``REMSIM_STORE=memory``, as ``RemsimProcess`` starts a
  core without Redis: in-memory store and bus, REST API embedded);
- distributed: two server cores and one ``remsim-api`` on a real redis-server and
  nats-server; bankds and clients spread over both cores, so most maps cross cores.

Bankds and clients are simulated RSPRO peers on libs/rspro (``tests.fixtures.servers``), all
in this process: 4 bankds x N/4 slots, N clients.

    python bench/mapping_scale.py [--maps 1000] [--mode single|distributed|both]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import resource
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

import httpx  # noqa: E402

import rspro  # noqa: E402
from tests.fixtures.servers import (  # noqa: E402
    LocalServer,
    RemsimProcess,
    SimBankd,
    SimClient,
    _nats_argv,
    _redis_argv,
    backend_env,
    find_binary,
)
from tests.system import free_port  # noqa: E402

BANKS = 4
POST_CONCURRENCY = 32
CONNECT_BATCH = 50
TIMEOUT = 300.0


@dataclass
class Result:
    mode: str
    maps: int
    connect_s: float
    post_s: float
    all_atr_s: float
    memory_kib: dict[str, int]


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


def _raise_fd_limit() -> None:
    # Each client holds two connections here, and the cores one per peer.
    _, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    if hard < 8192:
        print(f"warning: open file limit {hard} may be too low", file=sys.stderr)


async def _wait_registered(http: httpx.AsyncClient, banks: int, clients: int) -> None:
    deadline = time.monotonic() + TIMEOUT
    while time.monotonic() < deadline:
        b = (await http.get("/banks")).json()["banks"]
        c = (await http.get("/clients")).json()["clients"]
        if len(b) == banks and len(c) == clients:
            return
        await asyncio.sleep(0.1)
    raise TimeoutError("bankds and clients did not all register")


async def run(
    mode: str, maps: int, cores: list[RemsimProcess], api: RemsimProcess, data_ports: list[int]
) -> Result:
    servers = [("127.0.0.1", core.rspro_port) for core in cores]
    slots = -(-maps // BANKS)
    bankds = [
        SimBankd(bank_id, slots, [servers[bank_id % len(servers)]], retry=0.5)
        for bank_id in range(BANKS)
    ]
    for bankd, port in zip(bankds, data_ports, strict=True):
        await bankd.start(port)
    clients = [
        SimClient(rspro.ClientSlot(n, 0), [servers[(n + 1) % len(servers)]], retry=0.5)
        for n in range(maps)
    ]
    started = time.perf_counter()
    # In batches, so that no listen backlog overflows (a dropped SYN costs a 1 s retry).
    async with asyncio.timeout(TIMEOUT):
        for batch in range(0, maps, CONNECT_BATCH):
            for client in clients[batch : batch + CONNECT_BATCH]:
                await client.start()
            while not all(client.server for client in clients[batch : batch + CONNECT_BATCH]):
                await asyncio.sleep(0.01)
    limits = httpx.Limits(max_connections=POST_CONCURRENCY)
    async with httpx.AsyncClient(base_url=api.rest_url, timeout=60, limits=limits) as http:
        await _wait_registered(http, BANKS, maps)
        connect_s = time.perf_counter() - started

        pairs = [
            (rspro.BankSlot(n % BANKS, n // BANKS), rspro.ClientSlot(n, 0)) for n in range(maps)
        ]
        semaphore = asyncio.Semaphore(POST_CONCURRENCY)

        async def post(bank: rspro.BankSlot, client: rspro.ClientSlot) -> None:
            async with semaphore:
                response = await http.post(
                    "/slotmaps",
                    json={
                        "bank": {"bankId": bank.bank_id, "slotNr": bank.slot_nr},
                        "client": {"clientId": client.client_id, "slotNr": client.slot_nr},
                    },
                )
                response.raise_for_status()

        t0 = time.perf_counter()
        await asyncio.gather(*(post(bank, client) for bank, client in pairs))
        post_s = time.perf_counter() - t0
        await asyncio.wait_for(
            asyncio.gather(*(client.has_atr.wait() for client in clients)), TIMEOUT
        )
        all_atr_s = time.perf_counter() - t0

    memory = {p.name: p.memory()["VmHWM"] for p in [*cores, api] if p.running}
    memory["bench (peers)"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    for client in clients:
        await client.aclose()
    for bankd in bankds:
        await bankd.aclose()
    return Result(mode, maps, connect_s, post_s, all_atr_s, memory)


def _data_ports() -> tuple[list[int], dict[str, str]]:
    """A client port per simulated bankd, and the core settings announcing them."""
    ports = [free_port() for _ in range(BANKS)]
    addresses = {str(bank): f"127.0.0.1:{port}" for bank, port in enumerate(ports)}
    return ports, {"REMSIM_BANKD_ADDRESSES": json.dumps(addresses), "REMSIM_LOG_LEVEL": "WARNING"}


async def single_host(maps: int, workdir: Path) -> Result:
    ports, env = _data_ports()
    core = RemsimProcess("core", "server", env, workdir)
    await asyncio.to_thread(core.start)
    try:
        return await run("single host", maps, [core], core, ports)
    finally:
        core.stop()


async def distributed(maps: int, workdir: Path) -> Result:
    nats_binary, redis_binary = find_binary("nats-server"), find_binary("redis-server")
    if nats_binary is None or redis_binary is None:
        raise SystemExit("distributed mode needs nats-server and redis-server")
    nats = LocalServer("nats-server", "nats", _nats_argv(nats_binary), workdir, (b"", b"INFO"))
    redis = LocalServer(
        "redis-server", "redis", _redis_argv(redis_binary, workdir), workdir, (b"PING\r\n", b"+")
    )
    nats.start()
    redis.start()
    ports, data_env = _data_ports()
    env = {**backend_env(redis.url, nats.url, 15.0), **data_env}
    cores = [RemsimProcess("core", f"core-{n}", env, workdir) for n in "ab"]
    api = RemsimProcess("api", "api", env, workdir)
    try:
        await asyncio.gather(*(asyncio.to_thread(p.start) for p in [*cores, api]))
        result = await run("2 cores + API, Redis, NATS", maps, cores, api, ports)
        for service in (nats, redis):
            status = Path(f"/proc/{service._proc.pid}/status").read_text()  # type: ignore[union-attr]
            hwm = next(line for line in status.splitlines() if line.startswith("VmHWM"))
            result.memory_kib[service.name] = int(hwm.split()[1])
        return result
    finally:
        for p in [*cores, api]:
            p.stop()
        nats.stop()
        redis.stop()


def report(results: list[Result]) -> None:
    print(f"machine: {_machine()}")
    for r in results:
        rate = r.maps / r.all_atr_s
        print(
            f"{r.mode}: {r.maps} maps | peers registered in {r.connect_s:.2f} s | "
            f"{r.maps} POSTs in {r.post_s:.2f} s | every client has its ATR after "
            f"{r.all_atr_s:.2f} s ({rate:.0f} maps/s)"
        )
        memory = ", ".join(f"{name} {kib / 1024:.0f} MiB" for name, kib in r.memory_kib.items())
        print(f"  peak RSS: {memory}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--maps", type=int, default=1000, help="slotmaps = clients (1000)")
    parser.add_argument(
        "--mode", choices=["single", "distributed", "both"], default="both", help="(both)"
    )
    args = parser.parse_args()
    _raise_fd_limit()
    results = []
    with tempfile.TemporaryDirectory(prefix="remsim-bench-") as tmp:
        if args.mode in ("single", "both"):
            results.append(asyncio.run(single_host(args.maps, Path(tmp))))
        if args.mode in ("distributed", "both"):
            results.append(asyncio.run(distributed(args.maps, Path(tmp))))
    report(results)


if __name__ == "__main__":
    main()
