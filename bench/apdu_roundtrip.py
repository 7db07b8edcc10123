"""APDU round trip through remsim-bankd versus straight to the reader, interleaved in one run.

    .venv/bin/python bench/apdu_roundtrip.py [--rounds 10] [--per-round 100]

Starts a virtual SIM bank (pcscd + vpcd + remsim-vcard software SIMs), a scripted server
that maps C23:0 to B1:0, and ``remsim-bankd`` as its own process (shared PC/SC access, so
both paths use the same card). Then, for each APDU, alternates blocks of ``--per-round``
round trips: the remsim path (a blocking RSPRO client → bankd → pcscd → card) and the direct
path (pyscard ``SCardTransmit`` on the same reader). The overhead is the median over the
rounds of (remsim median - direct median); p99 overhead is p99(remsim) - p99(direct).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import platform
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

from smartcard import scard

import rspro
from remsim_bankd.testbed import VirtualSimBank
from rspro import (
    BankSlot,
    ClientSlot,
    ComponentIdentity,
    ComponentType,
    ConnectBankReq,
    ConnectBankRes,
    ConnectClientReq,
    ConnectClientRes,
    CreateMappingReq,
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
CLIENT_SLOT, BANK_SLOT = ClientSlot(23, 0), BankSlot(1, 0)
SERVER_ID = ComponentIdentity(ComponentType.REMSIM_SERVER, "bench", "remsim-server", "bench")
CLIENT_ID = ComponentIdentity(ComponentType.REMSIM_CLIENT, "bench", "remsim-client", "bench")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class ScriptedServer(threading.Thread):
    """A remsim server that only maps C23:0 to B1:0 when the bankd registers."""

    def __init__(self, port: int) -> None:
        super().__init__(daemon=True)
        self.port = port
        self.mapped = threading.Event()
        self.loop = asyncio.new_event_loop()

    def run(self) -> None:
        self.loop.run_until_complete(self._main())

    async def _main(self) -> None:
        async def handler(stream: RsproStream) -> None:
            req = (await stream.recv()).msg
            assert isinstance(req, ConnectBankReq)
            stream.send(ConnectBankRes(SERVER_ID, ResultCode.OK))
            stream.send(CreateMappingReq(CLIENT_SLOT, BANK_SLOT))
            print(f"server: {(await stream.recv()).msg}", file=sys.stderr)
            self.mapped.set()
            async for _ in stream:
                pass

        await rspro.start_server(handler, "127.0.0.1", self.port)
        await asyncio.Event().wait()


class RemsimClient:
    """A minimal blocking RSPRO client on the bankd's data link (no keepalive needed)."""

    def __init__(self, port: int) -> None:
        self.sock = socket.create_connection(("127.0.0.1", port))
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.framer = rspro.IpaFramer()
        self.pending: list[rspro.IpaFrame] = []
        self.send(ConnectClientReq(CLIENT_ID, CLIENT_SLOT))
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
        self.send(TpduModemToCard(CLIENT_SLOT, BANK_SLOT, apdu))
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


def timed(transmit: object, apdu: bytes, n: int) -> list[float]:
    assert callable(transmit)
    out = []
    clock = time.perf_counter
    for _ in range(n):
        t0 = clock()
        transmit(apdu)
        out.append((clock() - t0) * 1e3)
    return out


def machine() -> str:
    cpu = "?"
    with open("/proc/cpuinfo") as f:
        for line in f:
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    system = f"{platform.platform()}; Python {platform.python_version()}"
    return f"{platform.node()}: {os.cpu_count()} x {cpu}; {system}"


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--rounds", type=int, default=10)
    ap.add_argument("--per-round", type=int, default=100)
    ap.add_argument("--warmup", type=int, default=200)
    args = ap.parse_args()

    with VirtualSimBank() as bank, tempfile.TemporaryDirectory() as tmp:
        server_port, bankd_port = free_port(), free_port()
        server = ScriptedServer(server_port)
        server.start()
        csv = Path(tmp, "bankd_pcsc_slots.csv")
        csv.write_text("".join(f'"1","{i}","{r}"\n' for i, r in enumerate(bank.readers)))
        bankd = subprocess.Popen(
            [sys.executable, "-m", "remsim_bankd.main", "-i", "127.0.0.1", "-p", str(server_port),
             "-b", "1", "-n", "2", "-I", "127.0.0.1", "-P", str(bankd_port), "-s",
             "--slots-csv", str(csv), "-e", "7"],
            env={**os.environ, **bank.env},
        )  # fmt: skip
        try:
            if not server.mapped.wait(10):
                raise SystemExit("the bankd did not register at the scripted server")
            client = RemsimClient(bankd_port)
            direct = DirectCard(bank.readers[0])
            print(f"# {machine()}")
            print(f"# ATR {client.atr.hex()}; {args.rounds} rounds x {args.per_round} per path")
            for name, apdu in APDUS.items():
                assert client.transmit(apdu) == direct.transmit(apdu) or apdu[1] == 0x84
                timed(client.transmit, apdu, args.warmup)
                timed(direct.transmit, apdu, args.warmup)
                remsim: list[float] = []
                straight: list[float] = []
                overheads = []
                for _ in range(args.rounds):
                    r = timed(client.transmit, apdu, args.per_round)
                    d = timed(direct.transmit, apdu, args.per_round)
                    overheads.append(statistics.median(r) - statistics.median(d))
                    remsim += r
                    straight += d
                print(f"\n{name}")
                head = ("min", "median", "p90", "p99", "max")
                print(f"  {'path':8} " + " ".join(f"{h:>7}" for h in head) + "  (ms)")
                for label, xs in (("direct", straight), ("remsim", remsim)):
                    print(
                        f"  {label:8} {min(xs):7.3f} {statistics.median(xs):7.3f} "
                        f"{percentile(xs, 90):7.3f} {percentile(xs, 99):7.3f} {max(xs):7.3f}"
                    )
                p99 = percentile(remsim, 99) - percentile(straight, 99)
                print(
                    f"  overhead: median {statistics.median(overheads):.3f} ms "
                    f"(rounds {min(overheads):.3f}..{max(overheads):.3f}), p99 {p99:.3f} ms"
                )
        finally:
            bankd.terminate()
            bankd.wait(10)
    return 0


if __name__ == "__main__":
    sys.exit(main())
