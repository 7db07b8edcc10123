"""A bankd card served to vpcd: CardAsVirtualCard in the vpcd runner against a fake vpcd, and
the remsim-vcard program. (The protocol itself is tested in libs/vpcd.)"""

from __future__ import annotations

import contextlib
import json
import signal
import socket
import subprocess
import sys
import threading
from collections.abc import Iterator
from importlib.metadata import version
from pathlib import Path

import pytest

from remsim_bankd.sim import SimCardDriver, load_profile
from remsim_bankd.vpcd import CardAsVirtualCard
from remsim_testing.vpcd_peers import FakeVpcd
from vpcd import GET_ATR, POWER_OFF, POWER_ON, RESET, VpcdCardRunner

PROFILE = Path(__file__).resolve().parents[1] / "profiles" / "card0.json"
ATR = bytes.fromhex("3b9f96801fc78031a073be21136743200718000001a5")
SELECT_MF = bytes.fromhex("a0a40000023f00")

# --- the runner against a fake vpcd ------------------------------------------------------------


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


def test_remsim_vcard_logs_json_lines_naming_its_vpcd(vpcd: FakeVpcd) -> None:
    cmd = [sys.executable, "-m", "remsim_bankd.vcard", "--profile", str(PROFILE)]
    proc = subprocess.Popen(
        [*cmd, "--port", str(vpcd.port), "--log-format", "json", "-e", "INFO"],
        stderr=subprocess.PIPE,
        stdin=subprocess.DEVNULL,
    )
    try:
        sock = vpcd.accept(timeout=10)
        assert vpcd.exchange(sock, bytes([GET_ATR])) == ATR
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(5) == 0
        sock.close()
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.stderr is not None
    entries = [json.loads(line) for line in proc.stderr.read().decode().splitlines()]
    assert [e["message"] for e in entries][-1] == "stopped"
    assert {e["peer"] for e in entries} == {f"127.0.0.1:{vpcd.port}"}
    assert {e["logger"] for e in entries} >= {"remsim.vcard", "vpcd.runner"}


def test_remsim_vcard_version() -> None:
    cmd = [sys.executable, "-m", "remsim_bankd.vcard", "--version"]
    result = subprocess.run(cmd, capture_output=True, text=True, timeout=10, check=True)
    assert result.stdout == f"remsim-vcard {version('remsim-bankd')}\n"
