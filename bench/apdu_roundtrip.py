"""APDU round trip through remsim-bankd versus straight to the reader, interleaved in one run.

    .venv/bin/python bench/apdu_roundtrip.py [--rounds 20] [--per-round 100] [--breakdown]

Starts a virtual SIM bank (pcscd + vpcd + remsim-vcard software SIMs), a scripted server
and ``remsim-bankd`` as its own process (shared PC/SC access; bank slots B1:0 and B1:1 both
open "Virtual PCD 00 00", so every path uses the same card). Three paths to that card:

* ``direct``: pyscard ``SCardTransmit`` on the reader;
* ``minimal``: a minimal blocking RSPRO client (C23:0 → B1:0), one ``send``/``recv`` per TPDU,
  no event loop: the bankd's own cost with the least client around it;
* ``RemoteCard``: our client, ``remsim_client.RemoteCard`` (C24:0 → B1:1): the real client
  core, asyncio, with its server link (the scripted server sends it the configClientBankReq)
  and its bankd link.

For each APDU the three paths take turns (the order rotating per round) in blocks of
``--per-round`` round trips, ``--rounds`` times. Median overhead = median over the rounds of
(path median - direct median); p99 overhead = p99(path) - median(direct), over all samples.
``--breakdown`` times the stages of the RemoteCard path inside the client, by wrapping its
methods in this process (perf_counter stamps).
"""

from __future__ import annotations

import argparse
import asyncio
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
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from smartcard import scard

import rspro
from remsim_bankd.testbed import VirtualSimBank
from remsim_client import RemoteCard
from rspro import (
    BankSlot,
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
SERVER_ID = ComponentIdentity(ComponentType.REMSIM_SERVER, "bench", "remsim-server", "bench")
CLIENT_ID = ComponentIdentity(ComponentType.REMSIM_CLIENT, "bench", "remsim-client", "bench")
PATHS = ("direct", "minimal", "RemoteCard")
LABELS = {
    "direct": "direct pyscard",
    "minimal": "minimal blocking RSPRO client → bankd",
    "RemoteCard": "RemoteCard (client core, asyncio) → bankd",
}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class ScriptedServer(threading.Thread):
    """A remsim server that maps C23:0 → B1:0 and C24:0 → B1:1 when the bankd registers, and
    sends client C24:0 (the RemoteCard) to the bankd."""

    def __init__(self, port: int, bankd_port: int) -> None:
        super().__init__(daemon=True)
        self.port = port
        self.bankd_port = bankd_port
        self.mapped = threading.Event()
        self.loop = asyncio.new_event_loop()

    def run(self) -> None:
        self.loop.run_until_complete(self._main())

    async def _main(self) -> None:
        async def handler(stream: RsproStream) -> None:
            req = (await stream.recv()).msg
            if isinstance(req, ConnectBankReq):
                stream.send(ConnectBankRes(SERVER_ID, ResultCode.OK))
                for client, bank in ((MINIMAL_SLOT, MINIMAL_BANK), (REMOTE_SLOT, REMOTE_BANK)):
                    stream.send(CreateMappingReq(client, bank))
                    res = (await stream.recv()).msg
                    assert isinstance(res, CreateMappingRes) and res.result is ResultCode.OK, res
                self.mapped.set()
            elif isinstance(req, ConnectClientReq):
                stream.send(ConnectClientRes(SERVER_ID, ResultCode.OK))
                bankd = IpPort(ipaddress.IPv4Address("127.0.0.1"), self.bankd_port)
                stream.send(ConfigClientBankReq(REMOTE_BANK, bankd))
            async for _ in stream:
                pass

        await rspro.start_server(handler, "127.0.0.1", self.port)
        await asyncio.Event().wait()


class MinimalClient:
    """A minimal blocking RSPRO client on the bankd's data link (no keepalive needed)."""

    def __init__(self, port: int) -> None:
        self.sock = socket.create_connection(("127.0.0.1", port))
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
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
    # protocol.data_received afresh at every read).
    wrapped = [
        (card.client, "modem_tpdu", "core", None),
        (stream.conn, "send", None, "encoded"),
        (stream, "_arm_timer", "written", None),  # _flush: transport.write, then the timer
        (stream, "send", None, "timer armed"),
        (stream, "data_received", "bytes in", "decoded"),
        (bankd_link, "_dispatch", "link task", None),
        (card._frontend, "card_to_modem", "answer", None),
    ]
    for obj, name, before, after in wrapped:
        _wrap(obj, name, before, after, stamps)
    try:
        yield stamps
    finally:
        for obj, name, _, _ in wrapped:
            delattr(obj, name)


REMOTE_STAGES = ("core", "encoded", "written", "timer armed", "bytes in", "decoded",
                 "link task", "answer", "returned")  # fmt: skip
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


async def bench(args: argparse.Namespace, bank: VirtualSimBank, server: ScriptedServer) -> None:
    if not await asyncio.to_thread(server.mapped.wait, 10):
        raise SystemExit("the bankd did not register at the scripted server")
    minimal = MinimalClient(server.bankd_port)
    direct = DirectCard(bank.readers[0])
    async with RemoteCard(
        "127.0.0.1", 24, 0, port=server.port, timeout=10, name="bench", sw_version="bench"
    ) as remote:
        timers: dict[str, Timer] = {
            "direct": blocking_timer(direct.transmit),
            "minimal": blocking_timer(minimal.transmit),
            "RemoteCard": async_timer(remote.transmit),
        }
        print(f"# {machine()}")
        print(f"# ATR {minimal.atr.hex()} (RemoteCard: {remote.atr.hex()})")
        for path in PATHS:
            print(f"# {path:10} = {LABELS[path]}")
        print(f"# {args.rounds} rounds x {args.per_round} round trips per path")
        print(
            "# overhead: median = median over rounds of (path median - direct median); "
            "p99 = p99(path) - median(direct), all samples"
        )
        for name, apdu in APDUS.items():
            answers = {minimal.transmit(apdu), direct.transmit(apdu), await remote.transmit(apdu)}
            assert len(answers) == 1 or apdu[1] == 0x84, answers  # GET CHALLENGE counts
            for timed in timers.values():
                await timed(apdu, args.warmup)
            samples: dict[str, list[float]] = {p: [] for p in PATHS}
            medians: dict[str, list[float]] = {p: [] for p in PATHS}
            for r in range(args.rounds):
                for path in PATHS[r % 3 :] + PATHS[: r % 3]:
                    xs = await timers[path](apdu, args.per_round)
                    samples[path] += xs
                    medians[path].append(statistics.median(xs))
            print(f"\n{name}")
            head = ("min", "median", "p90", "p99", "max")
            print(f"  {'path':10} " + " ".join(f"{h:>7}" for h in head) + "  (ms)")
            for path in PATHS:
                xs = samples[path]
                print(
                    f"  {path:10} {min(xs):7.3f} {statistics.median(xs):7.3f} "
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
            if args.breakdown:
                n = args.rounds * args.per_round
                for path, stages in (
                    ("minimal", minimal_breakdown(minimal, apdu, n)),
                    ("RemoteCard", await remote_breakdown(remote, apdu, n)),
                ):
                    print(f"  {path} stages (median µs of {n}):")
                    for stage, us in stages:
                        print(f"    {stage:24} {us:7.1f}")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--rounds", type=int, default=20)
    ap.add_argument("--per-round", type=int, default=100)
    ap.add_argument("--warmup", type=int, default=200)
    ap.add_argument("--breakdown", action="store_true", help="time the RemoteCard's stages")
    args = ap.parse_args()

    with VirtualSimBank() as bank, tempfile.TemporaryDirectory() as tmp:
        server = ScriptedServer(free_port(), free_port())
        server.start()
        csv = Path(tmp, "bankd_pcsc_slots.csv")
        csv.write_text(f'"1","0","{bank.readers[0]}"\n"1","1","{bank.readers[0]}"\n')
        bankd = subprocess.Popen(
            [sys.executable, "-m", "remsim_bankd.main", "-i", "127.0.0.1", "-p", str(server.port),
             "-b", "1", "-n", "2", "-I", "127.0.0.1", "-P", str(server.bankd_port), "-s",
             "--slots-csv", str(csv), "-e", "7"],
            env={**os.environ, **bank.env},
        )  # fmt: skip
        try:
            asyncio.run(bench(args, bank, server))
        finally:
            bankd.terminate()
            bankd.wait(10)
    return 0


if __name__ == "__main__":
    sys.exit(main())
