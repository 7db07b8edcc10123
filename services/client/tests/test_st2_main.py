"""remsim-client-st2 as a program: device selection errors, a clean stop on SIGTERM, and a
failing USB device ending the program (simulated SIMtrace2 on the pyusb backend)."""

from __future__ import annotations

import asyncio
import os
import signal

import pytest

from remsim_client.config import ClientConfig
from remsim_client.st2.cli import St2Options
from remsim_client.st2.simulator import SimulatedBackend, SimulatedDevice
from remsim_client.st2.usb import Selector
from remsim_client.st2_client import run_st2_client
from rspro import ClientSlot

ANY = St2Options(Selector(), None)


def config(port: int) -> ClientConfig:
    return ClientConfig(server_host="127.0.0.1", server_port=port, client_slot=ClientSlot(23, 0))


async def test_no_device_is_a_clear_error(capsys: pytest.CaptureFixture[str]) -> None:
    assert await run_st2_client(config(1), ANY, backend=SimulatedBackend([])) == 1
    assert "remsim-client-st2:" in capsys.readouterr().err


async def test_two_devices_list_the_candidates(capsys: pytest.CaptureFixture[str]) -> None:
    devices = [
        SimulatedDevice("SIMtrace 2", bus=1, address=2, ports=(1,)),
        SimulatedDevice("SIMtrace 2", bus=1, address=3, ports=(2,)),
    ]
    assert await run_st2_client(config(1), ANY, backend=SimulatedBackend(devices)) == 1
    err = capsys.readouterr().err
    assert "1-1" in err and "1-2" in err


async def test_sigterm_stops_cleanly() -> None:
    device = SimulatedDevice("SIMtrace 2", bus=1, address=2, ports=(1,))
    run = asyncio.create_task(run_st2_client(config(1), ANY, backend=SimulatedBackend([device])))
    await asyncio.sleep(0.3)
    os.kill(os.getpid(), signal.SIGTERM)
    assert await asyncio.wait_for(run, 10) == 0


async def test_an_unplugged_device_ends_the_program(capsys: pytest.CaptureFixture[str]) -> None:
    device = SimulatedDevice("SIMtrace 2", bus=1, address=2, ports=(1,))
    backend = SimulatedBackend([device])
    run = asyncio.create_task(run_st2_client(config(1), ANY, backend=backend))
    await asyncio.sleep(0.3)
    backend.unplug(device)
    assert await asyncio.wait_for(run, 10) == 1
    assert "USB device failed" in capsys.readouterr().err
