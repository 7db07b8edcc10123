"""Soak: the whole system as real processes under a steady mixed workload; the RSS and the
open file descriptors of every process over time must stay flat.

    python bench/soak.py [--duration 600] [--interval 5] [--apdu-rate 100] [--json FILE]
    python bench/soak.py --duration 60        # CI (.ci/run)
    python bench/soak.py --distributed        # Redis, NATS, two cores, remsim-api

Processes (``tests.system.RemsimSystem`` on a ``VirtualSimBank``): ``remsim-server`` with
its embedded SQLite store (``--state-dir`` in a temporary directory) or, ``--distributed``,
``redis-server``, ``nats-server``, two cores (``remsim-server`` on both) and ``remsim-api``
(the bankd on core A, the clients on core B: every map crosses cores; REST through the
API); ``remsim-bankd`` B1 on the two software SIMs, the bank's ``pcscd`` and its two
``remsim-vcard`` cards, and two ``remsim-client-shell`` clients:

* C23:0 → B1:0, *steady*: APDUs all the time (SELECT MF, SELECT EF_ICCID, READ BINARY),
  paced at ``--apdu-rate``; every answer's status word is checked;
* C24:0 → B1:1, *churn*: every cycle its map is deleted and created again over REST (the
  client gets its ATR again and one APDU answered), and every ``RECONNECT_EVERY`` cycles the
  client process is restarted (SIGKILL and SIGTERM in turn; new connections to the server
  and the bankd). It is sampled but not judged: it is a new process each time.

Every ``CYCLE`` seconds besides: REST reads (``/slotmaps``, ``/banks``, ``/clients``,
``/metrics``, ``/healthz``) and ``GARBAGE_PER_PORT`` hostile connections to each RSPRO port
(the server's or both cores'; the bankd's client port) and each REST port (the server's;
the API's and core A's): silent, random bytes, a partial IPA header, a connect request
then an undecodable frame, a connect request then gone; for REST a partial request and
non-HTTP bytes. They are held ``GARBAGE_HOLD`` seconds, then closed.

Every ``--interval`` seconds, each process's VmRSS (``/proc/PID/status``) and number of open
FDs (``/proc/PID/fd``) are sampled and printed as a row of the table. A process is flat
(``judge``) when, after the warm-up (``WARMUP_FRACTION`` of the run, at least
``MIN_WARMUP`` seconds):

* its FDs at the end equal its FDs at the start, both counted at a *quiet point* (between
  cycles: every garbage connection closed, the churn client connected); at the end the FDs
  have ``QUIET_TIMEOUT`` seconds to come back;
* its RSS grows by less than ``RSS_GROWTH_LIMIT_KIB`` from start to end, and, in a run
  judged over ``SLOPE_MIN_WINDOW`` seconds or more, the least squares slope of its RSS over
  the samples is below ``RSS_SLOPE_LIMIT_KIB_PER_MIN``.

Exit status 1, with one ``NOT FLAT:`` line per process that is not, otherwise 0. The
figures and the choice of the limits: docs/benchmarks.md.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import random
import signal
import socket
import statistics
import sys
import tempfile
import threading
import time
import urllib.request
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import ExitStack, closing, contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from remsim_bankd.sim.profile import load_profile  # noqa: E402
from remsim_testing.rspro_peers import frame  # noqa: E402
from remsim_testing.simbank import VirtualSimBank, default_profiles  # noqa: E402
from rspro import ClientSlot, ComponentIdentity, ComponentType, ConnectClientReq  # noqa: E402
from tests.fixtures.servers import (  # noqa: E402
    RemsimProcess,
    backend_env,
    find_binary,
    local_nats_server,
    local_redis_server,
)
from tests.system import (  # noqa: E402
    READ_ICCID,
    SELECT_EF_ICCID,
    SELECT_MF,
    RemsimSystem,
    ShellClient,
    free_port,
)

DEFAULT_DURATION = 600.0
"""Seconds of workload (``--duration``); CI runs 60."""
DEFAULT_INTERVAL = 5.0
"""Seconds between two samples of every process (``--interval``)."""
DEFAULT_APDU_RATE = 100.0
"""APDUs per second of the steady client (``--apdu-rate``): a per-APDU leak of 100 bytes
shows as 5.7 MiB in 10 minutes, and the machine stays usable."""
WARMUP_FRACTION = 0.2
MIN_WARMUP = 15.0
"""The warm-up (caches, the SQLite page cache, the allocator's arenas) is not judged."""
CYCLE = 5.0
"""Seconds from the start of one workload cycle to the start of the next."""
RECONNECT_EVERY = 3
"""Cycles between two restarts of the churn client."""
GARBAGE_PER_PORT = 10
GARBAGE_HOLD = 1.0
"""Hostile connections per port and cycle, and how long each stays open (seconds)."""
QUIET_SETTLE = 1.0
QUIET_TIMEOUT = 15.0
"""At a quiet point the FDs must stay unchanged for QUIET_SETTLE seconds (start) or come
back to their start values (end), within QUIET_TIMEOUT seconds."""
LEASE_TTL = 15.0
"""``--distributed``: the cores' lease TTL (the default)."""
APDU_TIMEOUT = 5.0
ATR_TIMEOUT = 20.0
RSS_GROWTH_LIMIT_KIB = 2048
RSS_SLOPE_LIMIT_KIB_PER_MIN = 256.0
SLOPE_MIN_WINDOW = 300.0
"""The RSS limits: growth from the first to the last quiet point, and the slope, judged
over a window of at least SLOPE_MIN_WINDOW seconds after the warm-up (over a shorter one a
process still filling its caches shows a steep slope of a few hundred KiB: measured figures
and the reasoning in docs/benchmarks.md)."""

STEADY, CHURN = (23, 0), (24, 0)
STEADY_APDUS = ((SELECT_MF, 0x9F), (SELECT_EF_ICCID, 0x9F), (READ_ICCID, 0x90))
RAW_CLIENT = ComponentIdentity(ComponentType.REMSIM_CLIENT, "soak", "remsim-soak", "soak")
PARTIAL_IPA = b"\x00\x40\xee\x07"  # an RSPRO frame announcing 64 bytes, 1 sent
UNDECODABLE = b"\x00\x05\xee\x07\xff\xff\xff\xff"  # an RSPRO frame holding no RSPRO PDU


# --- the judgement: a pure function of the samples ---------------------------------------


@dataclass(frozen=True)
class Sample:
    """One process at one time: seconds since the start, VmRSS (KiB), open FDs; ``quiet``
    for a sample at a quiet point."""

    t: float
    rss_kib: int
    fds: int
    quiet: bool = False


@dataclass(frozen=True)
class Limits:
    growth_kib: int = RSS_GROWTH_LIMIT_KIB
    slope_kib_per_min: float = RSS_SLOPE_LIMIT_KIB_PER_MIN
    slope_window: float = SLOPE_MIN_WINDOW


@dataclass(frozen=True)
class Verdict:
    """A process's figures after the warm-up, and why it is not flat (nothing: flat)."""

    name: str
    rss_start_kib: int
    rss_end_kib: int
    rss_max_kib: int
    slope_kib_per_min: float
    fds_start: int
    fds_end: int
    fds_max: int
    problems: tuple[str, ...] = ()

    @property
    def flat(self) -> bool:
        return not self.problems


def judge(name: str, samples: Sequence[Sample], warmup: float, limits: Limits) -> Verdict:
    """Whether one process's RSS and FDs stayed flat after ``warmup`` seconds: FDs equal at
    the first and the last quiet point, RSS growth within ``limits``, and so its slope if
    those points are at least ``limits.slope_window`` seconds apart."""
    after = [s for s in samples if s.t >= warmup]
    quiet = [s for s in after if s.quiet]
    if len(quiet) < 2 or len(after) < 3:
        return Verdict(name, 0, 0, 0, 0.0, 0, 0, 0, ("too few samples after the warm-up",))
    start, end = quiet[0], quiet[-1]
    minutes = [s.t / 60 for s in after]
    slope = statistics.linear_regression(minutes, [s.rss_kib for s in after]).slope
    growth = end.rss_kib - start.rss_kib
    problems = []
    if end.fds != start.fds:
        problems.append(f"FDs {start.fds} → {end.fds} between the quiet points")
    if growth >= limits.growth_kib:
        problems.append(f"RSS grew {growth} KiB (limit {limits.growth_kib} KiB)")
    if end.t - start.t >= limits.slope_window and slope >= limits.slope_kib_per_min:
        problems.append(
            f"RSS slope {slope:.0f} KiB/min (limit {limits.slope_kib_per_min:.0f} KiB/min)"
        )
    return Verdict(
        name,
        rss_start_kib=start.rss_kib,
        rss_end_kib=end.rss_kib,
        rss_max_kib=max(s.rss_kib for s in after),
        slope_kib_per_min=slope,
        fds_start=start.fds,
        fds_end=end.fds,
        fds_max=max(s.fds for s in after),
        problems=tuple(problems),
    )


def warmup_of(duration: float) -> float:
    return max(MIN_WARMUP, WARMUP_FRACTION * duration)


# --- sampling ------------------------------------------------------------------------------


def read_process(pid: int) -> tuple[int, int] | None:
    """(VmRSS in KiB, open FDs) of a process, or None if it is gone."""
    try:
        with open(f"/proc/{pid}/status") as status:
            rss = next(int(line.split()[1]) for line in status if line.startswith("VmRSS:"))
        return rss, len(os.listdir(f"/proc/{pid}/fd"))
    except (OSError, StopIteration):
        return None


class Sampler:
    """The processes by name (their current PIDs, read at every sample) and their samples."""

    def __init__(self, pids: Mapping[str, Callable[[], int | None]], t0: float) -> None:
        self.pids = pids
        self.t0 = t0
        self.samples: dict[str, list[Sample]] = {name: [] for name in pids}
        self.lock = threading.Lock()

    def read(self) -> dict[str, tuple[int, int]]:
        readings = {}
        for name, pid in self.pids.items():
            current = pid()
            reading = None if current is None else read_process(current)
            if reading is not None:
                readings[name] = reading
        return readings

    def record(self, readings: Mapping[str, tuple[int, int]], quiet: bool = False) -> float:
        t = time.monotonic() - self.t0
        with self.lock:
            for name, (rss, fds) in readings.items():
                self.samples[name].append(Sample(round(t, 2), rss, fds, quiet))
        return t

    def header(self) -> str:
        return "     t  " + "".join(f"{name:>17}" for name in self.pids)

    def row(self, t: float, readings: Mapping[str, tuple[int, int]], mark: str = "") -> str:
        cells = []
        for name in self.pids:
            if name in readings:
                rss, fds = readings[name]
                cells.append(f"{rss / 1024:8.1f} MiB {fds:4d}")
            else:
                cells.append(f"{'-':>17}")
        return f"{t:6.0f}{mark:2}" + "".join(f"{c:>17}" for c in cells)


# --- the workload ----------------------------------------------------------------------------


@dataclass
class Counts:
    apdus: int = 0
    apdu_errors: int = 0
    cycles: int = 0
    remaps: int = 0
    reconnects: int = 0
    garbage_connections: int = 0
    rest_reads: int = 0
    elapsed: float = 0.0
    errors: list[str] = field(default_factory=list)

    def error(self, what: str) -> None:
        self.errors.append(what)
        print(f"error: {what}", file=sys.stderr, flush=True)


def steady_apdus(client: ShellClient, rate: float, stop: threading.Event, counts: Counts) -> None:
    """APDUs on the steady client at ``rate`` per second until ``stop``."""
    period = 1 / rate
    due = time.monotonic()
    while not stop.is_set():
        for apdu, sw1 in STEADY_APDUS:
            try:
                answer = client.transmit(apdu, timeout=APDU_TIMEOUT)
            except TimeoutError:
                answer = b""
            counts.apdus += 1
            if answer[-2:-1] != bytes([sw1]):
                counts.apdu_errors += 1
                counts.error(f"steady client: {apdu} answered {answer.hex() or 'nothing'}")
            due += period
            stop.wait(max(0.0, due - time.monotonic()))


@contextmanager
def garbage(ports: Sequence[int], rest_ports: Sequence[int], counts: Counts) -> Iterator[None]:
    """GARBAGE_PER_PORT hostile connections to each RSPRO port and each REST port, open
    while the context runs."""
    rspro_payloads = [
        b"",
        random.randbytes(64),
        PARTIAL_IPA,
        frame(ConnectClientReq(RAW_CLIENT, ClientSlot(99, 0))) + UNDECODABLE,
        frame(ConnectClientReq(RAW_CLIENT, ClientSlot(98, 0))),
    ]
    rest_payloads = [b"", b"GET /healthz HTTP/1.1\r\nHost: 127.", random.randbytes(64)]
    targets = [(port, rspro_payloads) for port in ports]
    targets += [(port, rest_payloads) for port in rest_ports]
    with ExitStack() as stack:
        for port, payloads in targets:
            for i in range(GARBAGE_PER_PORT):
                try:
                    sock = stack.enter_context(
                        closing(socket.create_connection(("127.0.0.1", port), timeout=5))
                    )
                    if payloads[i % len(payloads)]:
                        sock.sendall(payloads[i % len(payloads)])
                    counts.garbage_connections += 1
                except OSError as exc:
                    counts.error(f"garbage connection to port {port}: {exc}")
        yield


@dataclass
class Site:
    """A running system: ``system`` (REST, the bankd, the clients), every other process of
    it by name (its current PID), and the ports that get garbage."""

    system: RemsimSystem
    processes: dict[str, Callable[[], int | None]]
    rspro_ports: list[int]
    rest_ports: list[int]


@contextmanager
def single_host(bank: VirtualSimBank, workdir: Path) -> Iterator[Site]:
    """remsim-server with its SQLite store in ``workdir/state``, and the bankd."""
    state_dir = workdir / "state"
    state_dir.mkdir()
    with RemsimSystem(bank, workdir, store="sqlite", state_dir=state_dir) as system:
        assert system.server is not None
        server = system.server.proc
        ports = [system.rspro_port, system.bankd_port]
        yield Site(system, {"server": lambda: server.pid}, ports, [system.rest_port])


@contextmanager
def distributed(bank: VirtualSimBank, workdir: Path) -> Iterator[Site]:
    """Redis, NATS, two cores and remsim-api; the bankd on core A, the clients on core B
    (every map crosses cores), REST through the API."""
    nats_binary, redis_binary = find_binary("nats-server"), find_binary("redis-server")
    if nats_binary is None or redis_binary is None:
        raise SystemExit("--distributed needs nats-server and redis-server")
    nats = local_nats_server(nats_binary, workdir)
    redis = local_redis_server(redis_binary, workdir)
    bankd_port = free_port()
    env = backend_env(redis.url, nats.url, LEASE_TTL) | {"REMSIM_BANKD_PORT": str(bankd_port)}
    core_a, core_b = (RemsimProcess("core", f"core-{n}", env, workdir) for n in "ab")
    api = RemsimProcess("api", "api", env, workdir)
    system = RemsimSystem(
        bank, workdir, rest_port=api.rest_port, rspro_port=core_a.rspro_port, bankd_port=bankd_port
    )
    with ExitStack() as stack:
        for service in (nats, redis, core_a, core_b, api):
            stack.callback(service.stop)
            service.start()
        stack.callback(system.stop)
        system.start_bankd()
        system.rspro_port = core_b.rspro_port  # where the clients go
        processes: dict[str, Callable[[], int | None]] = {
            "redis": lambda: redis.pid,
            "nats": lambda: nats.pid,
            "core-a": lambda: core_a.pid,
            "core-b": lambda: core_b.pid,
            "api": lambda: api.pid,
        }
        ports = [core_a.rspro_port, core_b.rspro_port, bankd_port]
        yield Site(system, processes, ports, [api.rest_port, core_a.rest_port])


class Workload:
    def __init__(self, site: Site, churn: ShellClient, counts: Counts) -> None:
        self.site = site
        self.system = system = site.system
        self.churn = churn
        self.counts = counts
        self.atr = load_profile(default_profiles()[1]).atr  # card 1, in B1:1
        self.root_url = f"http://127.0.0.1:{system.rest_port}"

    def cycle(self) -> None:
        """One cycle: REST reads, garbage connections, the churn client's map deleted and
        created again (and every RECONNECT_EVERY cycles the client restarted)."""
        self.counts.cycles += 1
        self.rest_reads()
        with garbage(self.site.rspro_ports, self.site.rest_ports, self.counts):
            time.sleep(GARBAGE_HOLD)
        self.system.unmap(1)
        if self.counts.cycles % RECONNECT_EVERY == 0:
            self.restart_churn_client()
        self.system.map(bank_slot=1, client_id=CHURN[0], client_slot=CHURN[1])
        self.counts.remaps += 1
        self.expect_card()

    def rest_reads(self) -> None:
        for path in ("/slotmaps", "/banks", "/clients"):
            status, _ = self.system.rest("GET", path)
            self.check_status(path, status)
        for path in ("/metrics", "/healthz"):
            with urllib.request.urlopen(self.root_url + path, timeout=5) as response:
                response.read()
                self.check_status(path, response.status)

    def check_status(self, path: str, status: int) -> None:
        self.counts.rest_reads += 1
        if status != 200:
            self.counts.error(f"GET {path}: {status}")

    def restart_churn_client(self) -> None:
        while not self.churn.lines.empty():  # lines of the old process
            self.churn.lines.get_nowait()
        self.counts.reconnects += 1
        self.churn.restart(signal.SIGKILL if self.counts.reconnects % 2 else signal.SIGTERM)

    def expect_card(self) -> None:
        try:
            self.churn.expect_atr(self.atr, timeout=ATR_TIMEOUT)
            answer = self.churn.transmit(SELECT_MF, timeout=APDU_TIMEOUT)
            if answer[:1] != b"\x9f":
                self.counts.error(f"churn client: SELECT MF answered {answer.hex()}")
        except TimeoutError as exc:
            self.counts.error(f"churn client: {exc}")

    def quiet_point(self, sampler: Sampler, judged: Sequence[str], target: bool) -> float:
        """Wait until the FDs settle (``target`` False) or come back to their values at the
        first quiet point (True), within QUIET_TIMEOUT; record it as a quiet sample."""
        first = {}
        if target:
            first = {n: next(s.fds for s in sampler.samples[n] if s.quiet) for n in judged}
        deadline = time.monotonic() + QUIET_TIMEOUT
        previous = sampler.read()
        while True:
            time.sleep(QUIET_SETTLE)
            readings = sampler.read()
            fds = {n: readings[n][1] for n in judged if n in readings}
            if target:
                done = fds == first
            else:
                done = fds == {n: previous[n][1] for n in judged if n in previous}
            if done or time.monotonic() > deadline:
                break
            previous = readings
        t = sampler.record(readings, quiet=True)
        print(sampler.row(t, readings, " q"), flush=True)
        return t


# --- the run ---------------------------------------------------------------------------------


def machine() -> str:
    cpu = "?"
    with open("/proc/cpuinfo") as info:
        for line in info:
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    load = " ".join(f"{x:.1f}" for x in os.getloadavg())
    return f"{os.cpu_count()} x {cpu}, Python {platform.python_version()}, load {load}"


def soak(args: argparse.Namespace, workdir: Path) -> tuple[list[Verdict], Counts, Sampler]:
    counts = Counts()
    with ExitStack() as stack:
        bank = stack.enter_context(VirtualSimBank())
        start = distributed if args.distributed else single_host
        site = stack.enter_context(start(bank, workdir))
        system = site.system
        steady = system.start_shell_client(*STEADY)
        churn = system.start_shell_client(*CHURN)
        system.map(bank_slot=0, client_id=STEADY[0], client_slot=STEADY[1])
        steady.expect_atr(load_profile(default_profiles()[0]).atr, timeout=ATR_TIMEOUT)
        workload = Workload(site, churn, counts)
        system.map(bank_slot=1, client_id=CHURN[0], client_slot=CHURN[1])
        workload.expect_card()
        assert system.bankd is not None and bank.pcscd
        bankd, pcscd = system.bankd.proc, bank.pcscd

        def vcard(i: int) -> Callable[[], int | None]:
            return lambda: None if (card := bank.vcards[i]) is None else card.pid

        pids: dict[str, Callable[[], int | None]] = {
            **site.processes,
            "bankd": lambda: bankd.pid,
            "client-C23:0": lambda: steady.proc.pid,
            "client-C24:0 *": lambda: churn.proc.pid,
            "pcscd": lambda: pcscd.pid,
            "vcard0": vcard(0),
            "vcard1": vcard(1),
        }
        judged = [name for name in pids if not name.endswith("*")]
        t0 = time.monotonic()
        sampler = Sampler(pids, t0)
        warmup = warmup_of(args.duration)
        print(f"machine: {machine()}")
        print(f"soak: {args.duration:.0f} s, warm-up {warmup:.0f} s, a sample every "
              f"{args.interval:.0f} s; RSS in MiB and open FDs per process (* not judged: "
              "restarted every few cycles; q: quiet point)")  # fmt: skip
        print(sampler.header(), flush=True)

        stop = threading.Event()
        apdus = threading.Thread(
            target=steady_apdus, args=(steady, args.apdu_rate, stop, counts), daemon=True
        )
        apdus.start()

        def sample_loop() -> None:
            while not stop.wait(args.interval):
                readings = sampler.read()
                print(sampler.row(sampler.record(readings), readings), flush=True)

        sampling = threading.Thread(target=sample_loop, daemon=True)
        sampling.start()
        started_quiet = False
        try:
            while time.monotonic() - t0 < args.duration:
                cycle_start = time.monotonic()
                workload.cycle()
                if not started_quiet and time.monotonic() - t0 >= warmup:
                    workload.quiet_point(sampler, judged, target=False)
                    started_quiet = True
                time.sleep(max(0.0, CYCLE - (time.monotonic() - cycle_start)))
            workload.quiet_point(sampler, judged, target=True)
        finally:
            stop.set()
            apdus.join(APDU_TIMEOUT * 2)
            sampling.join(args.interval * 2)
        counts.elapsed = time.monotonic() - t0
        for name in set(judged) - set(sampler.read()):
            counts.error(f"{name} is no longer running")
        verdicts = [judge(name, sampler.samples[name], warmup, Limits()) for name in judged]
    return verdicts, counts, sampler


def report(verdicts: Sequence[Verdict], counts: Counts) -> None:
    print()
    print(f"{'process':14} {'RSS start':>10} {'end':>9} {'max':>9} {'slope':>13}"
          f" {'FDs start':>10} {'end':>4} {'max':>4}  flat")  # fmt: skip
    for v in verdicts:
        print(
            f"{v.name:14} {v.rss_start_kib / 1024:6.1f} MiB {v.rss_end_kib / 1024:5.1f} MiB"
            f" {v.rss_max_kib / 1024:5.1f} MiB {v.slope_kib_per_min:+7.0f} KiB/min"
            f" {v.fds_start:10d} {v.fds_end:4d} {v.fds_max:4d}  {'yes' if v.flat else 'NO'}"
        )
    rate = counts.apdus / counts.elapsed if counts.elapsed else 0.0
    print(
        f"\nworkload: {counts.apdus} APDUs ({rate:.0f}/s), {counts.apdu_errors} failed; "
        f"{counts.cycles} cycles: {counts.remaps} remaps, {counts.reconnects} client "
        f"restarts, {counts.garbage_connections} garbage connections, {counts.rest_reads} "
        f"REST reads; {len(counts.errors)} errors"
    )
    print(f"load average at the end: {' '.join(f'{x:.1f}' for x in os.getloadavg())}")
    print(
        f"limits after the warm-up: FDs equal at the quiet points; RSS growth < "
        f"{RSS_GROWTH_LIMIT_KIB} KiB, and slope < {RSS_SLOPE_LIMIT_KIB_PER_MIN:.0f} KiB/min "
        f"over {SLOPE_MIN_WINDOW:.0f} s or more"
    )
    for v in verdicts:
        for problem in v.problems:
            print(f"NOT FLAT: {v.name}: {problem}")
    if counts.errors:
        print(f"FAILED: {len(counts.errors)} workload errors, the first: {counts.errors[0]}")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--duration", type=float, default=DEFAULT_DURATION,
                        help=f"seconds of workload ({DEFAULT_DURATION:.0f})")  # fmt: skip
    parser.add_argument("--interval", type=float, default=DEFAULT_INTERVAL,
                        help=f"seconds between samples ({DEFAULT_INTERVAL:.0f})")  # fmt: skip
    parser.add_argument("--apdu-rate", type=float, default=DEFAULT_APDU_RATE,
                        help=f"APDUs/s of the steady client ({DEFAULT_APDU_RATE:.0f})")  # fmt: skip
    parser.add_argument("--distributed", action="store_true",
                        help="Redis, NATS, two cores and remsim-api, not one server")  # fmt: skip
    parser.add_argument("--json", type=Path, help="write the samples and figures to FILE")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="remsim-soak-") as tmp:
        verdicts, counts, sampler = soak(args, Path(tmp))
    report(verdicts, counts)
    if args.json:
        args.json.write_text(json.dumps({
            "duration": args.duration, "interval": args.interval, "machine": machine(),
            "distributed": args.distributed,
            "samples": {n: [asdict(s) for s in ss] for n, ss in sampler.samples.items()},
            "verdicts": [asdict(v) | {"flat": v.flat} for v in verdicts],
            "counts": asdict(counts),
        }, indent=1))  # fmt: skip
    return 0 if all(v.flat for v in verdicts) and not counts.errors else 1


if __name__ == "__main__":
    sys.exit(main())
