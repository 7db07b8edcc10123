"""End to end through PC/SC on both sides, every part a real process:

    pyscard -> pcscd -> vpcd "Virtual PCD 00 01" -> remsim-client-vpcd C24:0
      -> RSPRO -> remsim-bankd B1:0 -> pcscd -> vpcd "Virtual PCD 00 00" -> remsim-vcard (card0)

with remsim-server holding the slotmap B1:0 <-> C24:0 (created through its REST API). Both
readers belong to the session's virtual SIM bank (one pcscd): its card 1 is taken out for
this module, so that reader holds the remote card instead.
"""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from remsim_bankd.sim import CardProfile, Milenage
from remsim_bankd.sim.fs import USIM_AID
from remsim_bankd.testbed import VirtualSimBank
from tests.fixtures.servers import free_port, http_get, wait_until

pytestmark = [pytest.mark.integration, pytest.mark.pcsc]

REST_PREFIX = "/api/backend/v1"
RAND = bytes.fromhex("23553cbe9637a89d218ae64dae47bf35")
BIN = Path(sys.executable).parent
WAIT = 15.0


class Daemon:
    """A remsim program as a child process, its output in a log file."""

    def __init__(self, name: str, argv: list[str], workdir: Path) -> None:
        self.name = name
        self.log = workdir / f"{name}.log"
        with self.log.open("ab") as out:
            self.proc = subprocess.Popen(
                argv, stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT
            )

    def stop(self) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(5)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        return self.proc.returncode

    def tail(self, size: int = 2000) -> str:
        return f"--- {self.name} ---\n" + self.log.read_text(errors="replace")[-size:]


class Stack:
    """remsim-server and remsim-bankd; remsim-client-vpcd processes come and go."""

    def __init__(self, bank: VirtualSimBank, workdir: Path) -> None:
        self.bank = bank
        self.workdir = workdir
        self.rest_port, self.rspro_port, self.bankd_port = free_port(), free_port(), free_port()
        self.rest = f"http://127.0.0.1:{self.rest_port}{REST_PREFIX}"
        self.daemons: list[Daemon] = []
        self.client: Daemon | None = None

    def start(self) -> None:
        rspro = ["-i", "127.0.0.1", "-p", str(self.rspro_port)]
        self.daemons.append(Daemon("server", [
            str(BIN / "remsim-server"), "--rest-host", "127.0.0.1",
            "--rest-port", str(self.rest_port), "--rspro-host", "127.0.0.1",
            "--rspro-port", str(self.rspro_port), "--bankd-port", str(self.bankd_port),
        ], self.workdir))  # fmt: skip
        self.wait(lambda: http_get(f"{self.rest}/banks", 0.5)[0] == 200, "the server")
        slots = self.workdir / "bankd_pcsc_slots.csv"
        slots.write_text(f'"1","0","{self.bank.readers[0]}"\n')
        # The bankd finds the bank's pcscd through PCSCLITE_CSOCK_NAME, inherited.
        self.daemons.append(Daemon("bankd", [
            str(BIN / "remsim-bankd"), *rspro, "-b", "1", "-n", "1", "-I", "127.0.0.1",
            "-P", str(self.bankd_port), "--slots-csv", str(slots),
        ], self.workdir))  # fmt: skip
        self.wait(lambda: http_get(f"{self.rest}/banks/1", 0.5)[0] == 200, "bankd B1")
        self.map()

    def start_client(self, *options: str) -> None:
        assert self.client is None
        self.client = Daemon("client", [
            str(BIN / "remsim-client-vpcd"), "-i", "127.0.0.1", "-p", str(self.rspro_port),
            "-c", "24", "-n", "0", "--vpcd-port", str(self.bank.ports[0] + 1), "-L", *options,
        ], self.workdir)  # fmt: skip

    def stop_client(self) -> int:
        client, self.client = self.client, None
        return client.stop() if client else 0

    def stop(self) -> None:
        self.stop_client()
        for daemon in reversed(self.daemons):
            daemon.stop()

    def map(self) -> None:
        """Slotmap B1:0 <-> C24:0."""
        self._rest("POST", "/slotmaps", {"bank": {"bankId": 1, "slotNr": 0},
                                         "client": {"clientId": 24, "slotNr": 0}})  # fmt: skip

    def unmap(self) -> None:
        self._rest("DELETE", f"/slotmaps/{1 << 16 | 0}")

    def _rest(self, method: str, path: str, body: object = None) -> None:
        request = urllib.request.Request(
            self.rest + path,
            data=None if body is None else json.dumps(body).encode(),
            headers={"Content-Type": "application/json"},
            method=method,
        )
        with urllib.request.urlopen(request, timeout=5) as response:
            assert response.status in (200, 201), response.read()

    def wait(self, condition: Callable[[], object], what: str) -> None:
        try:
            wait_until(condition, WAIT)
        except AssertionError:
            raise AssertionError(f"waiting for {what}:\n{self.logs()}") from None

    def logs(self) -> str:
        daemons = [*self.daemons, *([self.client] if self.client else [])]
        return "\n".join(d.tail() for d in daemons)


@pytest.fixture(scope="module")
def remote_reader(virtual_sim_bank: VirtualSimBank) -> Iterator[str]:
    """Reader "Virtual PCD 00 01" emptied of its software SIM, for the remote card."""
    virtual_sim_bank.stop_card(1)
    try:
        yield virtual_sim_bank.readers[1]
    finally:
        virtual_sim_bank.start_card(1)


@pytest.fixture(scope="module")
def stack(
    virtual_sim_bank: VirtualSimBank, remote_reader: str, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Stack]:
    stack = Stack(virtual_sim_bank, tmp_path_factory.mktemp("vpcd-client"))
    try:
        stack.start()
        yield stack
    finally:
        stack.stop()


@pytest.fixture
def client(stack: Stack, request: pytest.FixtureRequest) -> Iterator[Stack]:
    """remsim-client-vpcd with the test's options (``@pytest.mark.parametrize`` indirect)."""
    stack.start_client(*getattr(request, "param", ()))
    try:
        stack.wait(lambda: stack.bank.card_present(1), "the remote card in the reader")
        yield stack
    finally:
        assert stack.stop_client() == 0  # SIGTERM: a clean exit, and the card goes
        stack.bank.wait_card(1, present=False)


class Connection:
    """pyscard, T=0, answers as bytes (data + SW)."""

    def __init__(self, reader_name: str) -> None:
        from smartcard.CardConnection import CardConnection
        from smartcard.System import readers

        reader = next(r for r in readers() if str(r) == reader_name)
        self.conn = reader.createConnection()
        self.conn.connect(CardConnection.T0_protocol)
        self.protocol = self.conn.getProtocol()
        self.atr = bytes(self.conn.getATR())

    def tx(self, apdu: bytes | str) -> bytes:
        if isinstance(apdu, str):
            apdu = bytes.fromhex(apdu)
        data, sw1, sw2 = self.conn.transmit(list(apdu))
        return bytes([*data, sw1, sw2])

    def cold_reset(self) -> None:
        """SCardReconnect(SCARD_UNPOWER_CARD): vpcd POWER OFF, POWER ON."""
        from smartcard.scard import SCARD_UNPOWER_CARD

        self.conn.reconnect(disposition=SCARD_UNPOWER_CARD)

    def close(self) -> None:
        try:
            self.conn.disconnect()
        finally:
            self.conn.release()


@pytest.fixture
def card(client: Stack, remote_reader: str) -> Iterator[Connection]:
    conn = Connection(remote_reader)
    yield conn
    conn.close()


def network_autn(m: Milenage, sqn: int, amf: bytes = b"\x80\x00") -> bytes:
    ak = m.f2345(RAND)[3]
    mac_a, _ = m.f1(RAND, sqn.to_bytes(6, "big"), amf)
    return bytes(a ^ b for a, b in zip(sqn.to_bytes(6, "big"), ak, strict=True)) + amf + mac_a


def authenticate(card: Connection, autn: bytes) -> bytes:
    sw = card.tx(b"\x00\x88\x00\x81\x22\x10" + RAND + b"\x10" + autn)
    assert sw[0] == 0x61, sw.hex()
    rsp = card.tx(bytes([0x00, 0xC0, 0x00, 0x00, sw[1]]))
    assert rsp[-2:] == b"\x90\x00"
    return rsp[:-2]


def select_imsi(card: Connection) -> None:
    sw = card.tx(bytes([0x00, 0xA4, 0x04, 0x04, len(USIM_AID)]) + USIM_AID)
    assert sw[0] == 0x61, sw.hex()
    fcp = card.tx(bytes([0x00, 0xC0, 0x00, 0x00, sw[1]]))
    assert fcp[0] == 0x62 and USIM_AID in fcp
    assert card.tx("00a4000c026f07") == b"\x90\x00"


def test_pcsc_application_uses_the_remote_sim(
    card: Connection, card_profiles: list[CardProfile]
) -> None:
    from smartcard.CardConnection import CardConnection

    profile = card_profiles[0]
    assert card.atr == profile.atr  # the bankd's ATR, as the card in reader 00 00 gave it
    assert card.protocol == CardConnection.T0_protocol
    assert card.tx("a0a40000023f00") == b"\x9f\x16"  # passed through, no GET RESPONSE
    assert card.tx("a0c0000016")[-2:] == b"\x90\x00"
    assert card.tx("a0a40000022fe2") == b"\x9f\x0f"
    assert card.tx("a0b000000a")[-2:] == b"\x90\x00"
    select_imsi(card)
    assert card.tx("00b0000009") == profile.ef_imsi + b"\x90\x00"

    m = Milenage(profile.ki, profile.opc_value)
    res, ck, ik, _ = m.f2345(RAND)
    data = authenticate(card, network_autn(m, 1 << 20))
    if data[0] == 0xDC:
        # An earlier test of the session moved the card's SQN on: resynchronise from AUTS.
        sqn_ms = bytes(a ^ b for a, b in zip(data[2:8], m.f5star(RAND), strict=True))
        data = authenticate(card, network_autn(m, int.from_bytes(sqn_ms, "big") + 32))
    assert data[:2] == b"\xdb\x08"
    assert data[2:10] == res
    assert data[10:27] == b"\x10" + ck
    assert data[27:44] == b"\x10" + ik


@pytest.mark.parametrize(
    ("client", "kept"),
    [((), False), (("--ignore-idle-power-cycles",), True)],
    indirect=["client"],
    ids=["power-off-forwarded", "ignore-idle-power-cycles"],
)
def test_power_off_resets_the_remote_sim_unless_ignored(
    card: Connection, card_profiles: list[CardProfile], kept: bool
) -> None:
    """vpcd cannot tell pcscd's idle power-down from an application's: SCardReconnect with
    SCARD_UNPOWER_CARD gives the same POWER OFF at once, without waiting for pcscd."""
    select_imsi(card)
    card.cold_reset()
    imsi = card.tx("00b0000009")
    if kept:
        assert imsi == card_profiles[0].ef_imsi + b"\x90\x00"  # still selected
    else:
        assert imsi[-2:] != b"\x90\x00"  # the bankd cold-reset the SIM: nothing selected


def test_the_card_leaves_the_reader_with_its_slotmap(client: Stack) -> None:
    """Slotmap deleted: the bankd link goes, so does the card; back with a new slotmap."""
    client.unmap()
    try:
        client.bank.wait_card(1, present=False)
    finally:
        client.map()
    client.bank.wait_card(1, present=True)
