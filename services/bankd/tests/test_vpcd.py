"""vpcd protocol, card side: the sans-IO connection and the runner against a fake vpcd."""

from __future__ import annotations

import contextlib
import itertools
import signal
import socket
import statistics
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from remsim_bankd.sim import SimCardDriver, load_profile
from remsim_bankd.vpcd import (
    GET_ATR,
    POWER_OFF,
    POWER_ON,
    RESET,
    Apdu,
    CardAsVirtualCard,
    Control,
    VpcdCardRunner,
    VpcdConnection,
    frame,
)

PROFILE = Path(__file__).resolve().parents[1] / "profiles" / "card0.json"
ATR = bytes.fromhex("3b9f96801fc78031a073be21136743200718000001a5")
SELECT_MF = bytes.fromhex("a0a40000023f00")

# --- framing and the sans-IO connection -----------------------------------------------------


def test_frame() -> None:
    assert frame(b"\x04") == b"\x00\x01\x04"
    assert frame(b"\x9f\x16") == b"\x00\x02\x9f\x16"
    assert frame(bytes(0xFFFF))[:2] == b"\xff\xff"
    with pytest.raises(ValueError):
        frame(b"")  # vpcd would hang waiting for zero bytes
    with pytest.raises(ValueError):
        frame(bytes(0x10000))


STREAM_EVENTS: list[Control | Apdu] = [
    Control(GET_ATR),
    Control(POWER_ON),
    Control(GET_ATR),
    Apdu(SELECT_MF),
    Apdu(bytes.fromhex("00b00000")),  # 4-byte case 1 APDU, passed through verbatim
    Control(RESET),
    Control(0x07),  # unknown control: no reply either
    Apdu(bytes(300)),
    Control(POWER_OFF),
]
STREAM = b"".join(frame(e.data if isinstance(e, Apdu) else bytes([e.code])) for e in STREAM_EVENTS)


def test_feed_whole_stream() -> None:
    conn = VpcdConnection()
    assert conn.feed(STREAM) == STREAM_EVENTS
    assert conn.replies_owed == 5  # two GET ATR, three APDUs


@given(st.lists(st.integers(0, len(STREAM)), max_size=20))
def test_feed_any_slicing(cuts: list[int]) -> None:
    conn = VpcdConnection()
    events: list[Control | Apdu] = []
    bounds = [0, *sorted(cuts), len(STREAM)]
    for a, b in itertools.pairwise(bounds):
        events += conn.feed(STREAM[a:b])
    assert events == STREAM_EVENTS


def test_feed_byte_by_byte() -> None:
    conn = VpcdConnection()
    events = [e for i in range(len(STREAM)) for e in conn.feed(STREAM[i : i + 1])]
    assert events == STREAM_EVENTS


def test_replies_only_when_owed() -> None:
    conn = VpcdConnection()
    conn.feed(frame(bytes([POWER_ON])) + frame(bytes([POWER_OFF])) + frame(bytes([RESET])))
    with pytest.raises(RuntimeError):
        conn.reply(ATR)  # no unsolicited messages
    conn.feed(frame(bytes([GET_ATR])) + frame(SELECT_MF))
    assert conn.reply(ATR) == frame(ATR)
    assert conn.reply(b"\x9f\x16") == b"\x00\x02\x9f\x16"
    with pytest.raises(RuntimeError):
        conn.reply(b"\x90\x00")


# --- the runner against a fake vpcd ------------------------------------------------------------


class FakeVpcd:
    """vpcd's side of the socket: listens, and talks like Debian's vpcd 0.8 (length and body
    in two writes, Nagle on), which is what makes a card without quick ACKs slow."""

    def __init__(self) -> None:
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port: int = self.listener.getsockname()[1]
        self.listener.settimeout(5)

    def accept(self, timeout: float = 5.0) -> socket.socket:
        self.listener.settimeout(timeout)
        sock, _ = self.listener.accept()
        sock.settimeout(5)
        return sock

    @staticmethod
    def send(sock: socket.socket, payload: bytes) -> None:
        sock.sendall(len(payload).to_bytes(2, "big"))
        sock.sendall(payload)

    @staticmethod
    def recv(sock: socket.socket) -> bytes:
        head = _read_exactly(sock, 2)
        return _read_exactly(sock, int.from_bytes(head, "big"))

    def exchange(self, sock: socket.socket, payload: bytes) -> bytes:
        self.send(sock, payload)
        return self.recv(sock)

    def close(self) -> None:
        self.listener.close()


def _read_exactly(sock: socket.socket, n: int) -> bytes:
    buf = b""
    while len(buf) < n:
        chunk = sock.recv(n - len(buf))
        if not chunk:
            raise EOFError("vicc closed the connection")
        buf += chunk
    return buf


def _assert_closed(sock: socket.socket) -> None:
    sock.settimeout(5)
    with contextlib.suppress(ConnectionResetError):  # closed with unread data: a reset
        assert sock.recv(1) == b""


@pytest.fixture
def vpcd() -> Iterator[FakeVpcd]:
    fake = FakeVpcd()
    yield fake
    fake.close()


@pytest.fixture
def driver() -> SimCardDriver:
    return SimCardDriver(load_profile(PROFILE))


@pytest.fixture
def runner(vpcd: FakeVpcd, driver: SimCardDriver) -> Iterator[VpcdCardRunner]:
    r = VpcdCardRunner(CardAsVirtualCard(driver), "127.0.0.1", vpcd.port, reconnect_interval=0.05)
    thread = threading.Thread(target=r.run, daemon=True)
    thread.start()
    yield r
    r.stop()
    thread.join(5)
    assert not thread.is_alive()


def test_runner_serves_atr_power_and_apdus(vpcd: FakeVpcd, runner: VpcdCardRunner) -> None:
    sock = vpcd.accept()
    assert vpcd.exchange(sock, bytes([GET_ATR])) == ATR
    vpcd.send(sock, bytes([POWER_ON]))  # no reply to power and reset commands
    assert vpcd.exchange(sock, bytes([GET_ATR])) == ATR
    assert vpcd.exchange(sock, SELECT_MF) == b"\x9f\x16"
    assert vpcd.exchange(sock, bytes.fromhex("a0c0000016"))[-2:] == b"\x90\x00"
    vpcd.send(sock, bytes([RESET]))
    assert vpcd.exchange(sock, bytes.fromhex("a0c0000016")) == b"\x6f\x00"  # reset: state gone
    vpcd.send(sock, bytes([POWER_OFF]))
    vpcd.send(sock, bytes([0x07]))  # unknown: ignored, not answered
    assert vpcd.exchange(sock, bytes([GET_ATR])) == ATR  # still answered while powered off
    vpcd.send(sock, bytes([POWER_ON]))
    assert vpcd.exchange(sock, bytes.fromhex("00b00000")) == b"\x69\x86"  # 4-byte APDU
    assert runner.connected.is_set()
    sock.close()


def test_runner_apdus_are_fast_against_a_nagling_vpcd(
    vpcd: FakeVpcd, runner: VpcdCardRunner
) -> None:
    """TCP_QUICKACK re-armed on every read: no ~40 ms delayed-ACK stall per APDU."""
    sock = vpcd.accept()
    vpcd.send(sock, bytes([POWER_ON]))
    times = []
    for _ in range(30):
        t = time.perf_counter()
        assert vpcd.exchange(sock, SELECT_MF) == b"\x9f\x16"
        times.append(time.perf_counter() - t)
    assert statistics.median(times) < 0.010
    sock.close()


def test_runner_reconnects_when_vpcd_drops_it(vpcd: FakeVpcd, runner: VpcdCardRunner) -> None:
    vpcd.accept().close()  # pcscd restart: vpcd goes away
    sock = vpcd.accept()
    assert vpcd.exchange(sock, bytes([GET_ATR])) == ATR
    sock.close()


def test_runner_leaves_the_reader_when_the_card_is_removed(
    vpcd: FakeVpcd, runner: VpcdCardRunner, driver: SimCardDriver
) -> None:
    sock = vpcd.accept()
    vpcd.send(sock, bytes([POWER_ON]))
    assert vpcd.exchange(sock, SELECT_MF) == b"\x9f\x16"
    driver.remove()
    vpcd.send(sock, SELECT_MF)
    _assert_closed(sock)  # a failing card is a removed card: the connection closes
    with pytest.raises(TimeoutError):
        vpcd.accept(timeout=0.3)  # and stays away while the card is out
    driver.insert()
    sock = vpcd.accept()
    assert vpcd.exchange(sock, bytes([GET_ATR])) == ATR
    sock.close()


def test_runner_closes_on_presence_poll_of_a_removed_card(
    vpcd: FakeVpcd, runner: VpcdCardRunner, driver: SimCardDriver
) -> None:
    sock = vpcd.accept()
    assert vpcd.exchange(sock, bytes([GET_ATR])) == ATR
    driver.remove()
    vpcd.send(sock, bytes([POWER_OFF]))
    vpcd.send(sock, bytes([POWER_ON]))  # powering up a removed card fails: leave
    _assert_closed(sock)
    sock.close()


def test_runner_stop_is_prompt(vpcd: FakeVpcd, driver: SimCardDriver) -> None:
    r = VpcdCardRunner(CardAsVirtualCard(driver), "127.0.0.1", vpcd.port, reconnect_interval=10)
    thread = threading.Thread(target=r.run, daemon=True)
    thread.start()
    sock = vpcd.accept()
    assert r.connected.wait(5)
    t = time.monotonic()
    r.stop()
    thread.join(5)
    assert time.monotonic() - t < 1
    _assert_closed(sock)
    sock.close()


def test_runner_waits_for_vpcd(driver: SimCardDriver) -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    r = VpcdCardRunner(CardAsVirtualCard(driver), "127.0.0.1", port, reconnect_interval=0.05)
    thread = threading.Thread(target=r.run, daemon=True)
    thread.start()
    time.sleep(0.15)  # a few refused attempts
    with socket.create_server(("127.0.0.1", port)) as listener:
        listener.settimeout(5)
        sock, _ = listener.accept()
        sock.settimeout(5)
        FakeVpcd.send(sock, bytes([GET_ATR]))
        assert FakeVpcd.recv(sock) == ATR
        r.stop()
        thread.join(5)
        sock.close()


# --- the remsim-vcard program ------------------------------------------------------------------


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_remsim_vcard_serves_and_exits_cleanly_on_signals(vpcd: FakeVpcd, sig: int) -> None:
    cmd = [sys.executable, "-m", "remsim_bankd.vcard", "--profile", str(PROFILE)]
    proc = subprocess.Popen(
        [*cmd, "--port", str(vpcd.port)], stderr=subprocess.PIPE, stdin=subprocess.DEVNULL
    )
    try:
        sock = vpcd.accept(timeout=10)
        assert vpcd.exchange(sock, bytes([GET_ATR])) == ATR
        vpcd.send(sock, bytes([POWER_ON]))
        assert vpcd.exchange(sock, bytes.fromhex("a0a40000022fe2")) == b"\x9f\x0f"
        proc.send_signal(sig)
        assert proc.wait(5) == 0
        _assert_closed(sock)  # card removed
        sock.close()
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.stderr is not None
    log = proc.stderr.read().decode()
    assert "connected to vpcd" in log and "stopped" in log


def test_remsim_vcard_rejects_a_bad_profile(tmp_path: Path) -> None:
    bad = tmp_path / "bad.json"
    bad.write_text('{"iccid": "1"}')
    cmd = [sys.executable, "-m", "remsim_bankd.vcard", "--profile", str(bad)]
    result = subprocess.run(cmd, capture_output=True, timeout=10, check=False)
    assert result.returncode == 2
    assert b"cannot load profile" in result.stderr
