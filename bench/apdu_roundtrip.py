"""APDU round trip through remsim-bankd, plaintext and mTLS, versus straight to the reader,
interleaved in one run.

    .venv/bin/python bench/apdu_roundtrip.py [--rounds 20] [--per-round 100] [--breakdown]
    .venv/bin/python bench/apdu_roundtrip.py --quick     # a few seconds, for CI: the guard
    .venv/bin/python bench/apdu_roundtrip.py --pin 0     # everything on CPU 0

Starts a virtual SIM bank (pcscd + vpcd + remsim-vcard software SIMs) and two sites, each a
scripted server with a ``remsim-bankd`` as its own process: one plaintext, one with mutual
TLS on both of its RSPRO ports (certificates from ``remsim_testing.pki.TestCA``, the
``remsim-pki`` conventions: ``urn:remsim:server``, ``urn:remsim:bankd:1``,
``urn:remsim:client:23``/``24``). Both bankds share PC/SC access; their bank slots B1:0 and
B1:1 all open "Virtual PCD 00 00", so every path uses the same card. Five paths to that card:

* ``direct``: pyscard ``SCardTransmit`` on the reader;
* ``minimal``: a minimal blocking RSPRO client (C23:0 → B1:0), one ``send``/``recv`` per TPDU,
  no event loop: the bankd's own cost with the least client around it;
* ``RemoteCard``: our client, ``remsim_client.RemoteCard`` (C24:0 → B1:1): the real client
  core, asyncio, with its server link (the scripted server sends it the configClientBankReq)
  and its bankd link;
* ``minimal TLS`` and ``RemoteCard TLS``: the same two clients, with their certificates, to
  the TLS site (TLS 1.3 on the bankd's client port and, for RemoteCard, on the server link).

For each APDU the five paths take turns (the order rotating per round) in blocks of
``--per-round`` round trips, ``--rounds`` times. Median overhead = median over the rounds of
(path median - direct median); p99 overhead = p99(path) - median(direct), over all samples.
What TLS adds = median over the rounds of (TLS path median - plaintext path median); its p99 =
p99(TLS path) - p99(plaintext path).
Then **APDU mode against TPDU mode** for two case-4 commands (SELECT of the USIM with its
FCP, a 3G AUTHENTICATE): two RemoteCards of the plaintext site (C25:0 in TPDU mode, C26:0
offering the APDU mode), both through ``remsim_testing.wire_proxy.WireProxy`` to the bankd,
which counts the round trips on the wire and adds a delay each way: none, then 5 ms each way
(10 ms of round-trip time, made in the harness, not on the network). TPDU mode needs two round
trips (the command, GET RESPONSE after 61xx), APDU mode one (the bankd fetches the response).
The round-trip paths above all stay in TPDU mode (``apdu_mode="off"``): they measure TPDUs.
``--breakdown`` times the stages of the minimal and RemoteCard paths (plaintext and TLS)
inside the client, by wrapping the RemoteCard's methods in this process (perf_counter stamps).
``--quick`` is the regression guard: each path's overhead, on its least disturbed round, must
stay within ``GROSS`` times the one recorded in docs/benchmarks.md (``RECORDED_MS``), else it is
measured again, and a second miss exits 1.
``--pin CPU`` runs every process of the benchmark (pcscd, the cards, the bankds, the clients)
on that one CPU: no cross-CPU wake-ups, whose cost on a VM varies by tens of microseconds
from one exchange to the next, so the figures show the CPU work of each path.
The script re-executes itself with address-space randomization off (``ADDR_NO_RANDOMIZE``, as
``setarch -R``), inherited by every process it starts: with a random layout each process's
round trip settles on a level of its own for the whole run (the TLS paths' "TLS adds" from
11 to 34 µs from run to run). ``--aslr`` keeps the randomization.
"""

from __future__ import annotations

import argparse
import asyncio
import ctypes
import ipaddress
import os
import platform
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Awaitable, Callable, Iterator
from contextlib import AsyncExitStack, contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from smartcard import scard

import rspro
from remsim_bankd.sim import CardProfile, Milenage
from remsim_bankd.sim.fs import USIM_AID
from remsim_bankd.sim.profile import load_profile
from remsim_client import RemoteCard
from remsim_common import TransportSecurity
from remsim_testing.pki import Credentials, TestCA
from remsim_testing.simbank import VirtualSimBank, default_profiles
from remsim_testing.wire_proxy import WireProxy
from rspro import (
    BankSlot,
    CardInventoryInd,
    ClientSlot,
    ComponentIdentity,
    ComponentType,
    ConfigClientBankReq,
    ConnectBankReq,
    ConnectBankRes,
    ConnectClientReq,
    ConnectClientRes,
    CreateMappingReq,
    CreateMappingRes,
    IpPort,
    ResultCode,
    RsproPdu,
    RsproStream,
    SetAtrReq,
    TpduCardToModem,
    TpduModemToCard,
)

APDUS = {
    "SELECT MF (a0a40000023f00 → 9f16)": bytes.fromhex("a0a40000023f00"),
    "GET CHALLENGE 128 (0084000080 → 130 bytes)": bytes.fromhex("0084000080"),
}
MINIMAL_SLOT, MINIMAL_BANK = ClientSlot(23, 0), BankSlot(1, 0)
REMOTE_SLOT, REMOTE_BANK = ClientSlot(24, 0), BankSlot(1, 1)
TPDU_SLOT, TPDU_BANK = ClientSlot(25, 0), BankSlot(1, 2)
APDU_SLOT, APDU_BANK = ClientSlot(26, 0), BankSlot(1, 3)
MAPS = (
    (MINIMAL_SLOT, MINIMAL_BANK), (REMOTE_SLOT, REMOTE_BANK),
    (TPDU_SLOT, TPDU_BANK), (APDU_SLOT, APDU_BANK),
)  # fmt: skip
"""The maps the scripted server makes when a bankd registers (all four bank slots open the
same reader): the minimal client, RemoteCard, and the two RemoteCards of the mode comparison."""
RAND = bytes.fromhex("23553cbe9637a89d218ae64dae47bf35")
MODE_DELAYS = (0.0, 0.005)
"""One-way delays of the mode comparison's proxy (s): no added round-trip time, and 10 ms."""
MODE_ROUNDS = {"full": 40, "quick": 4}
"""Round trips of each mode per command and delay."""
SERVER_ID = ComponentIdentity(ComponentType.REMSIM_SERVER, "bench", "remsim-server", "bench")
CLIENT_ID = ComponentIdentity(ComponentType.REMSIM_CLIENT, "bench", "remsim-client", "bench")
PATHS = ("direct", "minimal", "RemoteCard", "minimal TLS", "RemoteCard TLS")
LABELS = {
    "direct": "direct pyscard",
    "minimal": "minimal blocking RSPRO client → bankd",
    "RemoteCard": "RemoteCard (client core, asyncio) → bankd",
    "minimal TLS": "minimal client → bankd, mTLS",
    "RemoteCard TLS": "RemoteCard → server and bankd, mTLS",
}
TLS_PAIRS = (("minimal", "minimal TLS"), ("RemoteCard", "RemoteCard TLS"))
TLS_GOAL_US = 30.0
"""What TLS may add to the median round trip (µs)."""
QUICK = {"rounds": 5, "per_round": 20, "warmup": 50}
"""``--quick``: enough to see every path work and a rough figure, in a few seconds."""
RECORDED_MS = {"minimal": 0.07, "RemoteCard": 0.09, "minimal TLS": 0.10, "RemoteCard TLS": 0.13}
"""Median overhead of each path (ms) recorded in docs/benchmarks.md, rounded up: unpinned
(as CI runs it), the machine under other load (2026-12-02, after the APDU fast path)."""
GROSS = 3.0
"""``--quick`` fails when a path's overhead is more than this many times its recorded one."""
ADDR_NO_RANDOMIZE = 0x0040000
"""personality(2) flag: no address-space randomization, inherited by every exec'd child."""
_PERSONALITY_QUERY = 0xFFFFFFFF


def fix_layout() -> bool:
    """Run this script, and so every process it starts, with address-space randomization
    off (re-exec under ``ADDR_NO_RANDOMIZE``, as ``setarch -R`` does). Each process's random
    layout puts its round trip on one of several levels for the whole run (TLS adds 11 to 34 µs,
    docs/benchmarks.md): a fixed layout makes runs comparable. True if the layout is fixed."""
    libc = ctypes.CDLL(None, use_errno=True)
    current = libc.personality(_PERSONALITY_QUERY)
    if current == -1:
        return False
    if current & ADDR_NO_RANDOMIZE:
        return True
    if libc.personality(current | ADDR_NO_RANDOMIZE) == -1:
        return False
    os.execv(sys.executable, sys.orig_argv)  # does not return


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class ScriptedServer(threading.Thread):
    """A remsim server that maps C23:0 → B1:0 and C24:0 → B1:1 when the bankd registers, and
    sends client C24:0 (the RemoteCard) to the bankd."""

    def __init__(
        self,
        port: int,
        bankd_port: int,
        security: TransportSecurity = TransportSecurity.PLAINTEXT,
    ) -> None:
        super().__init__(daemon=True)
        self.port = port
        self.bankd_port = bankd_port
        self.proxy_port = bankd_port
        """Where the clients of the mode comparison are sent (the wire proxy, once started)."""
        self.security = security
        self.mapped = threading.Event()
        self.loop = asyncio.new_event_loop()

    def run(self) -> None:
        self.loop.run_until_complete(self._main())

    async def _main(self) -> None:
        async def handler(stream: RsproStream) -> None:
            req = (await stream.recv()).msg
            if isinstance(req, ConnectBankReq):
                stream.send(ConnectBankRes(SERVER_ID, ResultCode.OK))
                for client, bank in MAPS:
                    stream.send(CreateMappingReq(client, bank))
                    res = (await stream.recv()).msg
                    while isinstance(res, CardInventoryInd):  # our bankd over TLS reports cards
                        res = (await stream.recv()).msg
                    assert isinstance(res, CreateMappingRes) and res.result is ResultCode.OK, res
                self.mapped.set()
            elif isinstance(req, ConnectClientReq):
                stream.send(ConnectClientRes(SERVER_ID, ResultCode.OK))
                bank = dict(MAPS)[req.client_slot] if req.client_slot else REMOTE_BANK
                port = self.bankd_port if bank == REMOTE_BANK else self.proxy_port
                bankd = IpPort(ipaddress.IPv4Address("127.0.0.1"), port)
                stream.send(ConfigClientBankReq(bank, bankd))
            async for _ in stream:
                pass

        await rspro.start_server(handler, "127.0.0.1", self.port, ssl=self.security.server_context)
        await asyncio.Event().wait()


class MinimalClient:
    """A minimal blocking RSPRO client on the bankd's data link (no keepalive needed)."""

    def __init__(
        self, port: int, security: TransportSecurity = TransportSecurity.PLAINTEXT
    ) -> None:
        sock = socket.create_connection(("127.0.0.1", port))
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.sock = security.wrap_connected(sock)
        self.framer = rspro.IpaFramer()
        self.pending: list[rspro.IpaFrame] = []
        self.send(ConnectClientReq(CLIENT_ID, MINIMAL_SLOT))
        res = self.recv()
        assert isinstance(res, ConnectClientRes) and res.result is ResultCode.OK, res
        atr = self.recv()
        assert isinstance(atr, SetAtrReq)
        self.atr = atr.atr

    def send(self, msg: rspro.Message) -> None:
        self.sock.sendall(rspro.rspro_frame(rspro.encode(RsproPdu(msg))))

    def recv(self) -> rspro.Message:
        while True:
            while self.pending:
                frame = self.pending.pop(0)
                if frame.proto == rspro.ipa.IPA_PROTO_OSMO:
                    return rspro.decode(frame.payload[1:]).msg
            data = self.sock.recv(4096)
            if not data:
                raise ConnectionError("bankd closed the connection")
            self.pending.extend(self.framer.feed(data))

    def transmit(self, apdu: bytes) -> bytes:
        self.send(TpduModemToCard(MINIMAL_SLOT, MINIMAL_BANK, apdu))
        res = self.recv()
        assert isinstance(res, TpduCardToModem)
        return res.data


class DirectCard:
    """pyscard straight to the reader (shared, T=0), as an application would."""

    def __init__(self, reader: str) -> None:
        hr, self.ctx = scard.SCardEstablishContext(scard.SCARD_SCOPE_USER)
        assert hr == 0, scard.SCardGetErrorMessage(hr)
        hr, self.card, self.proto = scard.SCardConnect(
            self.ctx, reader, scard.SCARD_SHARE_SHARED, scard.SCARD_PROTOCOL_T0
        )
        assert hr == 0, scard.SCardGetErrorMessage(hr)

    def transmit(self, apdu: bytes) -> bytes:
        hr, response = scard.SCardTransmit(self.card, self.proto, list(apdu))
        assert hr == 0, scard.SCardGetErrorMessage(hr)
        return bytes(response)


def percentile(values: list[float], p: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(p / 100 * (len(ordered) - 1)))]


Timer = Callable[[bytes, int], Awaitable[list[float]]]


def blocking_timer(transmit: Callable[[bytes], bytes]) -> Timer:
    """Times a blocking path (it blocks the event loop meanwhile, which is idle then)."""

    async def timed(apdu: bytes, n: int) -> list[float]:
        out = []
        clock = time.perf_counter
        for _ in range(n):
            t0 = clock()
            transmit(apdu)
            out.append((clock() - t0) * 1e3)
        return out

    return timed


def async_timer(transmit: Callable[[bytes], Awaitable[bytes]]) -> Timer:
    async def timed(apdu: bytes, n: int) -> list[float]:
        out = []
        clock = time.perf_counter
        for _ in range(n):
            t0 = clock()
            await transmit(apdu)
            out.append((clock() - t0) * 1e3)
        return out

    return timed


def machine() -> str:
    cpu = "?"
    with open("/proc/cpuinfo") as f:
        for line in f:
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    system = f"{platform.platform()}; Python {platform.python_version()}"
    load = " ".join(f"{x:.1f}" for x in os.getloadavg())
    return f"{platform.node()}: {os.cpu_count()} x {cpu}; {system}; load {load}"


# --- RemoteCard stage breakdown ----------------------------------------------------------------


class Stamps:
    """perf_counter stamps of one RemoteCard exchange, taken by wrapped client methods."""

    def __init__(self) -> None:
        self.on = False
        self.now: dict[str, float] = {}
        self.samples: list[dict[str, float]] = []

    def stamp(self, name: str) -> None:
        if self.on and name not in self.now:
            self.now[name] = time.perf_counter()


def _wrap(owner: Any, name: str, before: str | None, after: str | None, stamps: Stamps) -> None:
    original = getattr(owner, name)

    def wrapper(*args: Any, **kwargs: Any) -> Any:
        if before:
            stamps.stamp(before)
        result = original(*args, **kwargs)
        if after:
            stamps.stamp(after)
        return result

    setattr(owner, name, wrapper)


@contextmanager
def instrumented(card: RemoteCard) -> Iterator[Stamps]:
    """Stamp the stages of ``card``'s exchanges (only the bankd link's stream counts)."""
    from remsim_client import remote_card
    from rspro import aio
    from rspro.link import RsproLink

    stamps = Stamps()
    bankd_link = card.client._bankd
    assert bankd_link is not None
    stream = bankd_link._stream
    assert stream is not None
    assert isinstance(stream, aio.RsproStream) and isinstance(bankd_link, RsproLink)
    assert isinstance(card._frontend, remote_card._AppFrontend)
    # Instance attributes shadow the class methods for this one client / stream / link /
    # front-end: every caller looks them up on the instance (the transport, too, calls
    # protocol.data_received afresh at every read; with TLS, after decrypting). The link's
    # receiver is the stream's ``_receiver`` attribute (``set_receiver``), called from
    # ``data_received`` once the TPDU frame is parsed: it is wrapped in place and put back
    # afterwards. A TPDU goes out by ``_send_tpdu`` (pre-encoded frames, one write).
    wrapped = [
        (card.client, "modem_tpdu", "core", None),
        (stream, "_send_tpdu", "encode", "written"),
        (stream, "data_received", "bytes in", None),
        (stream, "_receiver", "link", None),
        (card._frontend, "card_to_modem", "answer", None),
    ]
    saved = [(obj, name, vars(obj).get(name, _UNSET)) for obj, name, _, _ in wrapped]
    for obj, name, before, after in wrapped:
        _wrap(obj, name, before, after, stamps)
    try:
        yield stamps
    finally:
        for obj, name, original in saved:
            if original is _UNSET:
                delattr(obj, name)
            else:
                setattr(obj, name, original)


_UNSET = object()
REMOTE_STAGES = ("core", "encode", "written", "bytes in", "link", "answer", "returned")
MINIMAL_STAGES = ("encoded", "written", "bytes in", "returned")


async def remote_breakdown(card: RemoteCard, apdu: bytes, n: int) -> list[tuple[str, float]]:
    """Median time of each stage of a RemoteCard exchange (µs)."""
    with instrumented(card) as stamps:
        for _ in range(n):
            stamps.now = {"called": time.perf_counter()}
            stamps.on = True
            await card.transmit(apdu)
            stamps.now["returned"] = time.perf_counter()
            stamps.on = False
            stamps.samples.append(stamps.now)
    return stage_medians(stamps.samples, REMOTE_STAGES)


def minimal_breakdown(client: MinimalClient, apdu: bytes, n: int) -> list[tuple[str, float]]:
    clock = time.perf_counter
    samples = []
    for _ in range(n):
        t = {"called": clock()}
        tpdu = TpduModemToCard(MINIMAL_SLOT, MINIMAL_BANK, apdu)
        frame = rspro.rspro_frame(rspro.encode(RsproPdu(tpdu)))
        t["encoded"] = clock()
        client.sock.sendall(frame)
        t["written"] = clock()
        data = client.sock.recv(4096)
        t["bytes in"] = clock()
        client.pending.extend(client.framer.feed(data))
        assert isinstance(client.recv(), TpduCardToModem)
        t["returned"] = clock()
        samples.append(t)
    return stage_medians(samples, MINIMAL_STAGES)


def stage_medians(
    samples: list[dict[str, float]], stages: tuple[str, ...]
) -> list[tuple[str, float]]:
    out = []
    previous = "called"
    for stage in stages:
        out.append((f"{previous} → {stage}", _median_gap(samples, previous, stage)))
        previous = stage
    out.append(("total", _median_gap(samples, "called", "returned")))
    return out


def _median_gap(samples: list[dict[str, float]], a: str, b: str) -> float:
    return statistics.median((s[b] - s[a]) * 1e6 for s in samples if a in s and b in s)


@dataclass(frozen=True)
class BenchPki:
    """The TLS site's certificates, one per peer, named as ``remsim-pki`` names them."""

    server: Credentials
    bankd: Credentials
    minimal: Credentials
    remote: Credentials

    @classmethod
    def create(cls, directory: Path) -> BenchPki:
        directory.mkdir()
        ca = TestCA(directory, "remsim bench CA")
        return cls(
            server=ca.issue("server", "urn:remsim:server"),
            bankd=ca.issue("bankd-1", "urn:remsim:bankd:1"),
            minimal=ca.issue("client-23", f"urn:remsim:client:{MINIMAL_SLOT.client_id}"),
            remote=ca.issue("client-24", f"urn:remsim:client:{REMOTE_SLOT.client_id}"),
        )


INVENTORY = ["--inventory", "off"]
"""Both bankds alike: the card inventory (on by default over TLS) is not on the TPDU path."""


def start_bankd(
    server: ScriptedServer, csv: Path, bank: VirtualSimBank, tls: Credentials | None
) -> subprocess.Popen[bytes]:
    """``remsim-bankd`` B1 (two slots on the same reader) registering at ``server``."""
    tls_args = [] if tls is None else [
        "--tls-cert", str(tls.cert), "--tls-key", str(tls.key), "--tls-ca", str(tls.ca),
    ]  # fmt: skip
    return subprocess.Popen(
        [sys.executable, "-m", "remsim_bankd.main", "-i", "127.0.0.1", "-p", str(server.port),
         "-b", "1", "-n", str(len(MAPS)), "-I", "127.0.0.1", "-P", str(server.bankd_port), "-s",
         "--slots-csv", str(csv), "-e", "7", *tls_args, *INVENTORY],
        env={**os.environ, **bank.env},
    )  # fmt: skip


def remote_card(
    server: ScriptedServer,
    security: TransportSecurity,
    slot: ClientSlot = REMOTE_SLOT,
    apdu_mode: str = "off",
) -> RemoteCard:
    """A RemoteCard; in TPDU mode unless asked (the round-trip paths compare TPDUs)."""
    return RemoteCard(
        "127.0.0.1", slot.client_id, slot.slot_nr, port=server.port, timeout=10,
        name="bench", sw_version="bench", security=security, apdu_mode=apdu_mode,
    )  # fmt: skip


def case4_commands(profile: CardProfile) -> Iterator[tuple[str, bytes, bytes]]:
    """(name, T=0 command TPDU, command APDU) of each case-4 command, again and again:
    SELECT of the USIM application with its FCP, and AUTHENTICATE with a fresh AUTN each time
    (its SQN one step higher), so that every answer is data and SW 9000."""
    milenage = Milenage(profile.ki, profile.opc_value)
    select = bytes((0x00, 0xA4, 0x04, 0x04, len(USIM_AID))) + USIM_AID
    sqn = 1 << 20
    while True:
        yield "SELECT USIM (FCP)", select, select + b"\x00"
        sqn += 32
        auth = b"\x00\x88\x00\x81\x22\x10" + RAND + b"\x10" + milenage.autn(RAND, sqn)
        yield "AUTHENTICATE (3G)", auth, auth + b"\x00"


async def compare_modes(
    server: ScriptedServer, proxy: WireProxy, profile: CardProfile, rounds: int
) -> None:
    """APDU mode against TPDU mode for case-4 commands, with and without added round-trip
    time: two RemoteCards on the plaintext bankd through the wire proxy, taking turns."""
    plain = TransportSecurity.PLAINTEXT
    async with (
        remote_card(server, plain, TPDU_SLOT, "off") as tpdu,
        remote_card(server, plain, APDU_SLOT, "on") as apdu,
    ):
        tpdu.auto_get_response = True  # as a modem does: GET RESPONSE after 61xx
        assert not tpdu.apdu_mode and apdu.apdu_mode, "the APDU mode was not agreed"
        print("\nAPDU mode vs TPDU mode, case-4 commands (RemoteCard → wire proxy → bankd)")
        print(f"  {rounds} commands per mode, command and delay; round trips counted on the wire")
        head = f"  {'added RTT':>9}  {'command':18} {'mode':5} {'round trips':>11} {'median':>9}"
        print(head + f" {'p90':>9}")
        commands = case4_commands(profile)
        for delay in MODE_DELAYS:
            proxy.delay = delay
            times: dict[tuple[str, str], list[float]] = {}
            trips: dict[tuple[str, str], int] = {}
            for _ in range(rounds * 2):
                name, tpdu_form, apdu_form = next(commands)
                for mode, card, command in (("TPDU", tpdu, tpdu_form), ("APDU", apdu, apdu_form)):
                    proxy.reset()
                    start = time.perf_counter()
                    rsp = await card.transmit(command)
                    times.setdefault((name, mode), []).append((time.perf_counter() - start) * 1e3)
                    assert rsp[-2:] == b"\x90\x00" and len(rsp) > 2, (name, mode, rsp.hex())
                    sent = proxy.counts("up")
                    trips[(name, mode)] = sent.get("tpduModemToCard", 0) + sent.get(
                        "apduModemToCard", 0
                    )
            for (name, mode), xs in times.items():
                print(
                    f"  {delay * 2e3:6.0f} ms  {name:18} {mode:5} {trips[(name, mode)]:>11} "
                    f"{statistics.median(xs):6.2f} ms {percentile(xs, 90):6.2f} ms"
                )


async def measure(
    timers: dict[str, Timer], apdu: bytes, rounds: int, per_round: int
) -> tuple[dict[str, list[float]], dict[str, list[float]]]:
    """Every sample of each path and each round's median (ms), the paths taking turns."""
    samples: dict[str, list[float]] = {p: [] for p in PATHS}
    medians: dict[str, list[float]] = {p: [] for p in PATHS}
    for r in range(rounds):
        turn = r % len(PATHS)
        for path in PATHS[turn:] + PATHS[:turn]:
            xs = await timers[path](apdu, per_round)
            samples[path] += xs
            medians[path].append(statistics.median(xs))
    return samples, medians


def guard(medians: dict[str, list[float]]) -> list[str]:
    """The paths whose overhead is grossly over the recorded one: judged on the least
    disturbed round (the smallest of the rounds' median overheads: load only adds)."""
    failed = []
    for path, recorded in RECORDED_MS.items():
        best = min(m - d for m, d in zip(medians[path], medians["direct"], strict=True))
        limit = GROSS * recorded
        verdict = "ok" if best <= limit else "REGRESSION"
        print(f"  guard {path:14} best round {best:.3f} ms (limit {limit:.3f}): {verdict}")
        if best > limit:
            failed.append(path)
    return failed


async def bench(
    args: argparse.Namespace,
    bank: VirtualSimBank,
    plain: ScriptedServer,
    tls: ScriptedServer,
    pki: BenchPki,
) -> list[str]:
    """Run the benchmark; with ``--quick``, the paths found grossly slower (else [])."""
    regressions: list[str] = []
    for server in (plain, tls):
        if not await asyncio.to_thread(server.mapped.wait, 10):
            raise SystemExit(f"a bankd did not register at the scripted server :{server.port}")
    minimal = MinimalClient(plain.bankd_port)
    minimal_tls = MinimalClient(tls.bankd_port, pki.minimal.security())
    direct = DirectCard(bank.readers[0])
    async with AsyncExitStack() as stack:
        remote = await stack.enter_async_context(remote_card(plain, TransportSecurity.PLAINTEXT))
        remote_tls = await stack.enter_async_context(remote_card(tls, pki.remote.security()))
        timers: dict[str, Timer] = {
            "direct": blocking_timer(direct.transmit),
            "minimal": blocking_timer(minimal.transmit),
            "RemoteCard": async_timer(remote.transmit),
            "minimal TLS": blocking_timer(minimal_tls.transmit),
            "RemoteCard TLS": async_timer(remote_tls.transmit),
        }
        tls_version = getattr(minimal_tls.sock, "version", lambda: "?")()
        tls_cipher = getattr(minimal_tls.sock, "cipher", lambda: ("?",))()[0]
        print(f"# {machine()}")
        print(f"# ATR {minimal.atr.hex()} (RemoteCard: {remote.atr.hex()})")
        for path in PATHS:
            print(f"# {path:14} = {LABELS[path]}")
        print(f"# TLS: {tls_version} {tls_cipher}, ECDSA P-256 certificates")
        print(f"# on CPUs {','.join(map(str, sorted(os.sched_getaffinity(0))))}")
        print(f"# address-space layout: {'fixed (ADDR_NO_RANDOMIZE)' if args.fixed else 'random'}")
        print(f"# {args.rounds} rounds x {args.per_round} round trips per path")
        print(
            "# overhead: median = median over rounds of (path median - direct median); "
            "p99 = p99(path) - median(direct), all samples"
        )
        print(
            "# TLS adds: median = median over rounds of (TLS path median - plaintext path "
            "median); p99 = p99(TLS path) - p99(plaintext path)"
        )
        for name, apdu in APDUS.items():
            answers = {
                minimal.transmit(apdu), direct.transmit(apdu), await remote.transmit(apdu),
                minimal_tls.transmit(apdu), await remote_tls.transmit(apdu),
            }  # fmt: skip
            assert len(answers) == 1 or apdu[1] == 0x84, answers  # GET CHALLENGE counts
            for timed in timers.values():
                await timed(apdu, args.warmup)
            print(f"\n{name}")
            samples, medians = await measure(timers, apdu, args.rounds, args.per_round)
            if args.quick:
                failed = guard(medians)
                if failed:  # noise rarely lasts: a second measurement must confirm it
                    print(f"  guard: {', '.join(failed)} over {GROSS:g}x: measuring again")
                    samples, medians = await measure(timers, apdu, args.rounds, args.per_round)
                    regressions += [f"{name}: {path}" for path in guard(medians)]
            head = ("min", "median", "p90", "p99", "max")
            print(f"  {'path':14} " + " ".join(f"{h:>7}" for h in head) + "  (ms)")
            for path in PATHS:
                xs = samples[path]
                print(
                    f"  {path:14} {min(xs):7.3f} {statistics.median(xs):7.3f} "
                    f"{percentile(xs, 90):7.3f} {percentile(xs, 99):7.3f} {max(xs):7.3f}"
                )
            direct_median = statistics.median(samples["direct"])
            for path in PATHS[1:]:
                overheads = [m - d for m, d in zip(medians[path], medians["direct"], strict=True)]
                p99 = percentile(samples[path], 99) - direct_median
                print(
                    f"  overhead {path}: median {statistics.median(overheads):.3f} ms "
                    f"(rounds {min(overheads):.3f}..{max(overheads):.3f}), p99 {p99:.3f} ms"
                )
            for plain_path, tls_path in TLS_PAIRS:
                added = [
                    (t - p) * 1e3
                    for t, p in zip(medians[tls_path], medians[plain_path], strict=True)
                ]
                p99_added = percentile(samples[tls_path], 99) - percentile(samples[plain_path], 99)
                median_added = statistics.median(added)
                verdict = "met" if median_added <= TLS_GOAL_US else "NOT met"
                print(
                    f"  TLS adds to {plain_path}: median {median_added:.1f} µs "
                    f"(rounds {min(added):.1f}..{max(added):.1f}), p99 {p99_added * 1e3:.1f} µs"
                    f"  (goal ≤ {TLS_GOAL_US:.0f} µs median: {verdict})"
                )
            if args.breakdown:
                n = args.rounds * args.per_round
                for path, stages in (
                    ("minimal", minimal_breakdown(minimal, apdu, n)),
                    ("minimal TLS", minimal_breakdown(minimal_tls, apdu, n)),
                    ("RemoteCard", await remote_breakdown(remote, apdu, n)),
                    ("RemoteCard TLS", await remote_breakdown(remote_tls, apdu, n)),
                ):
                    print(f"  {path} stages (median µs of {n}):")
                    for stage, us in stages:
                        print(f"    {stage:24} {us:7.1f}")
    with WireProxy(("127.0.0.1", plain.bankd_port)) as proxy:
        plain.proxy_port = proxy.port
        profile = load_profile(default_profiles()[0])
        await compare_modes(plain, proxy, profile, MODE_ROUNDS["quick" if args.quick else "full"])
    return regressions


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--rounds", type=int, default=20)
    ap.add_argument("--per-round", type=int, default=100)
    ap.add_argument("--warmup", type=int, default=200)
    ap.add_argument("--breakdown", action="store_true", help="time the clients' stages")
    ap.add_argument("--pin", type=int, metavar="CPU", help="run every process on this one CPU")
    ap.add_argument(
        "--quick",
        action="store_true",
        help=f"a short run for CI (--rounds {QUICK['rounds']} --per-round {QUICK['per_round']} "
        f"--warmup {QUICK['warmup']}); exits 1 if a path's overhead is over {GROSS:g}x the "
        "recorded one in two measurements",
    )
    ap.add_argument(
        "--aslr",
        action="store_true",
        help="keep address-space randomization (by default the layout is fixed, as with "
        "setarch -R: with a random one each run settles on its own level)",
    )
    args = ap.parse_args()
    args.fixed = not args.aslr and fix_layout()
    if args.quick:
        vars(args).update(QUICK)
    if args.pin is not None:
        os.sched_setaffinity(0, {args.pin})  # inherited by every process started below

    with VirtualSimBank() as bank, tempfile.TemporaryDirectory() as tmp:
        pki = BenchPki.create(Path(tmp, "pki"))
        plain = ScriptedServer(free_port(), free_port())
        tls = ScriptedServer(free_port(), free_port(), pki.server.security())
        csv = Path(tmp, "bankd_pcsc_slots.csv")
        csv.write_text("".join(f'"1","{b.slot_nr}","{bank.readers[0]}"\n' for _, b in MAPS))
        bankds: list[subprocess.Popen[bytes]] = []
        try:
            for server, credentials in ((plain, None), (tls, pki.bankd)):
                server.start()
                bankds.append(start_bankd(server, csv, bank, credentials))
            regressions = asyncio.run(bench(args, bank, plain, tls, pki))
        finally:
            for bankd in bankds:
                bankd.terminate()
            for bankd in bankds:
                bankd.wait(10)
    if regressions:
        print(
            f"\nREGRESSION (over {GROSS:g}x the recorded overhead, twice):", "; ".join(regressions)
        )
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
