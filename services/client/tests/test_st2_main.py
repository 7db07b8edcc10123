"""remsim-client-st2 as a program: device selection errors, a clean stop on SIGTERM (which
gives the modem its own SIM back), and a failing USB device ending the program (simulated
SIMtrace2 on the pyusb backend)."""

from __future__ import annotations

import asyncio
import io
import logging
import os
import signal
from pathlib import Path

import pytest

from remsim_client.config import ClientConfig
from remsim_client.options import client_parser
from remsim_client.st2.cli import St2Options, St2Settings
from remsim_client.st2.protocol import CardInsert, ModemReset, ResetAction, SetAtr, SimSelect
from remsim_client.st2.usb import Selector
from remsim_client.st2_client import PROGRAM, main, run_st2_client
from remsim_testing.client import C23, ScriptedPeer, config_bank, eventually
from remsim_testing.st2_firmware import SimulatedBackend, SimulatedDevice
from rspro import ClientSlot, ConfigClientBankRes, SetAtrReq, SetAtrRes

ANY = St2Options(Selector(), None)


@pytest.fixture
def clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    """No REMSIM_* variables from the environment the tests run in."""
    for key in list(os.environ):
        if key.startswith("REMSIM_"):
            monkeypatch.delenv(key)


@pytest.mark.usefixtures("clean_env")
@pytest.mark.parametrize("where", ["flag", "environment", "config file"])
def test_a_bad_usb_option_is_one_line_naming_option_and_value(
    where: str, monkeypatch: pytest.MonkeyPatch, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    argv: list[str] = []
    if where == "flag":
        argv = ["-V", "zz"]
    elif where == "environment":
        monkeypatch.setenv("REMSIM_CLIENT_USB_VENDOR", "zz")
    else:
        (tmp_path / "st2.toml").write_text('server_port = 9998\nusb_vendor = "zz"\n')
        argv = ["--config", str(tmp_path / "st2.toml")]
    with pytest.raises(SystemExit) as exit_:
        main(argv)
    assert exit_.value.code == 2
    assert capsys.readouterr().err.splitlines() == [
        "remsim-client-st2: bad value 'zz' for -V/--usb-vendor (REMSIM_CLIENT_USB_VENDOR): "
        "not a hexadecimal id such as 1d50 or 0x1d50"
    ]


@pytest.mark.usefixtures("clean_env")
def test_dst2_is_the_log_category_of_the_st2_front_end() -> None:
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    stream = io.StringIO()
    try:
        settings = PROGRAM.load(St2Settings, client_parser(PROGRAM, "t"), ["-d", "DMAIN,7:DST2,1"])
        PROGRAM.setup_logging(settings, stream)
        logging.getLogger("remsim.client.st2").debug("st2 shown")
        logging.getLogger("remsim.client").info("core not shown")
    finally:
        root.handlers[:], root.level = handlers, level
        logging.captureWarnings(False)
        for name in ("remsim.client", "remsim.client.st2", "rspro"):
            logging.getLogger(name).setLevel(logging.NOTSET)
    assert "st2 shown" in stream.getvalue() and "not shown" not in stream.getvalue()


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


async def test_sigterm_with_the_card_in_use_gives_the_modem_its_own_sim_back(
    server: ScriptedPeer, bankd: ScriptedPeer
) -> None:
    device = SimulatedDevice("ngff-cardem", bus=1, address=2, ports=(1,))
    slot, modem = device.slots[0], device.modem()
    run = asyncio.create_task(
        run_st2_client(config(server.port), ANY, backend=SimulatedBackend([device]))
    )
    srv, _ = await server.accept_client()
    srv.send(config_bank(bankd))
    await srv.expect(ConfigClientBankRes)
    bk, _ = await bankd.accept_client()
    bk.send(SetAtrReq(C23, bytes.fromhex("3b00")))
    await bk.expect(SetAtrRes)
    # the bankd's ATR is the last thing the client tells the board before the card is in use
    atr = SetAtr(bytes.fromhex("3b00"))
    await eventually(lambda: modem.card_present and slot.enabled and atr in slot.host_messages)
    entries = len(slot.host_messages)
    os.kill(os.getpid(), signal.SIGTERM)
    assert await asyncio.wait_for(run, 10) == 0
    assert slot.host_messages[entries : entries + 3] == [
        CardInsert(False),
        SimSelect(False),
        ModemReset(ResetAction.PULSE, 300),
    ]
    assert modem.card_present is False and not slot.enabled
    await bk.wait_closed()


async def test_an_unplugged_device_ends_the_program(capsys: pytest.CaptureFixture[str]) -> None:
    device = SimulatedDevice("SIMtrace 2", bus=1, address=2, ports=(1,))
    backend = SimulatedBackend([device])
    run = asyncio.create_task(run_st2_client(config(1), ANY, backend=backend))
    await asyncio.sleep(0.3)
    backend.unplug(device)
    assert await asyncio.wait_for(run, 10) == 1
    assert "USB device failed" in capsys.readouterr().err
