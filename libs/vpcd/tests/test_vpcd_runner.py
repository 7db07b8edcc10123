"""VpcdCardRunner against a fake vpcd (vpcd.md §7, §8): a blocking virtual card."""

from __future__ import annotations

import contextlib
import socket
import statistics
import threading
import time
from collections.abc import Iterator

import pytest

from remsim_testing.vpcd_peers import FakeVpcd
from vpcd import (
    GET_ATR,
    MAX_RAPDU,
    POWER_OFF,
    POWER_ON,
    RESET,
    CardGone,
    VpcdCardRunner,
)
from vpcd.runner import SW_TOO_LONG

ATR = bytes.fromhex("3b9f96801fc78031a073be21136743200718000001a5")
SELECT_MF = bytes.fromhex("a0a40000023f00")


class EchoCard:
    """A VirtualCard: answers every APDU with its INS and 9000, records power calls."""

    def __init__(self) -> None:
        self.present = True
        self.atr = ATR
        self.broken = False
        self.calls: list[str] = []

    def power_on(self) -> None:
        self.calls.append("on")
        if self.broken:
            raise CardGone("mute")

    def power_off(self) -> None:
        self.calls.append("off")

    def reset(self) -> None:
        self.calls.append("reset")

    def transmit(self, apdu: bytes) -> bytes:
        if self.broken:
            raise CardGone("mute")
        if apdu[1] == 0xB0:  # READ BINARY: as many bytes as P1 P2 say, then 9000
            return bytes(int.from_bytes(apdu[2:4], "big")) + b"\x90\x00"
        if apdu[1] == 0xEE:  # a card that answers nothing
            return b""
        return apdu[1:2] + b"\x90\x00"


def _assert_closed(sock: socket.socket) -> None:
    with contextlib.suppress(ConnectionResetError):  # closed with unread data: a reset
        assert sock.recv(1) == b""


@pytest.fixture
def vpcd() -> Iterator[FakeVpcd]:
    fake = FakeVpcd()
    yield fake
    fake.listener.close()


@pytest.fixture
def card() -> EchoCard:
    return EchoCard()


@pytest.fixture
def runner(vpcd: FakeVpcd, card: EchoCard) -> Iterator[VpcdCardRunner]:
    r = VpcdCardRunner(card, "127.0.0.1", vpcd.port, reconnect_interval=0.05)
    thread = threading.Thread(target=r.run, daemon=True)
    thread.start()
    yield r
    r.stop()
    thread.join(5)
    assert not thread.is_alive()


def test_serves_atr_power_and_apdus(vpcd: FakeVpcd, runner: VpcdCardRunner, card: EchoCard) -> None:
    sock = vpcd.accept()
    assert vpcd.exchange(sock, bytes([GET_ATR])) == ATR
    for code in (POWER_ON, RESET, POWER_OFF, 0x07):
        vpcd.send(sock, bytes([code]))  # not answered
    assert vpcd.exchange(sock, SELECT_MF) == b"\xa4\x90\x00"
    assert vpcd.exchange(sock, bytes([GET_ATR])) == ATR  # also while powered off
    assert card.calls == ["on", "reset", "off"]
    assert runner.connected.is_set()
    sock.close()


def test_a_card_that_is_gone_leaves_the_reader(
    vpcd: FakeVpcd, runner: VpcdCardRunner, card: EchoCard
) -> None:
    sock = vpcd.accept()
    card.broken = True
    vpcd.send(sock, SELECT_MF)
    _assert_closed(sock)  # no made-up status word: the card leaves
    sock = vpcd.accept()  # present again at once: it comes back
    vpcd.send(sock, bytes([POWER_ON]))  # and fails on power-up: leaves again
    _assert_closed(sock)
    card.present = False
    with pytest.raises(TimeoutError):
        vpcd.accept(timeout=0.3)  # stays away while it is not present
    card.present, card.broken = True, False
    sock = vpcd.accept()
    assert vpcd.exchange(sock, bytes([GET_ATR])) == ATR
    sock.close()


def test_rapdu_size_limits(
    vpcd: FakeVpcd, runner: VpcdCardRunner, caplog: pytest.LogCaptureFixture
) -> None:
    """vpcd's 2-byte length carries R-APDUs up to 65,535 bytes; longer ones become 6700."""
    sock = vpcd.accept()
    largest = MAX_RAPDU - 2  # data bytes, + SW1 SW2
    rapdu = vpcd.exchange(sock, b"\x00\xb0" + largest.to_bytes(2, "big") + b"\x00\x00\x00")
    assert len(rapdu) == MAX_RAPDU == 65535 and rapdu[-2:] == b"\x90\x00"
    too_long = b"\x00\xb0" + (largest + 1).to_bytes(2, "big") + b"\x00\x00\x00"
    assert vpcd.exchange(sock, too_long) == SW_TOO_LONG == b"\x67\x00"
    assert "R-APDU of 65536 bytes to 00b0fffe exceeds vpcd's 65535-byte limit" in caplog.text
    assert vpcd.exchange(sock, SELECT_MF) == b"\xa4\x90\x00"  # the card is still there
    vpcd.send(sock, b"\x00\xee\x00\x00")  # an empty answer would hang vpcd: leave instead
    _assert_closed(sock)
    sock.close()


def test_reconnects_when_vpcd_drops_it(vpcd: FakeVpcd, runner: VpcdCardRunner) -> None:
    vpcd.accept().close()  # pcscd restart: vpcd goes away
    sock = vpcd.accept()
    assert vpcd.exchange(sock, bytes([GET_ATR])) == ATR
    sock.close()


def test_apdus_are_fast_against_a_nagling_vpcd(vpcd: FakeVpcd, runner: VpcdCardRunner) -> None:
    """TCP_QUICKACK re-armed on every read: no ~40 ms delayed-ACK stall per APDU."""
    sock = vpcd.accept()
    times = []
    for _ in range(30):
        t = time.perf_counter()
        assert vpcd.exchange(sock, SELECT_MF) == b"\xa4\x90\x00"
        times.append(time.perf_counter() - t)
    assert statistics.median(times) < 0.010
    sock.close()


def test_stop_is_prompt(vpcd: FakeVpcd, card: EchoCard) -> None:
    r = VpcdCardRunner(card, "127.0.0.1", vpcd.port, reconnect_interval=10)
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


def test_waits_for_vpcd(card: EchoCard) -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    r = VpcdCardRunner(card, "127.0.0.1", port, reconnect_interval=0.05)
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
