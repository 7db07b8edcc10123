"""The whole st2 client without hardware: the real ``Client`` core over TCP on 127.0.0.1
against scripted server and bankd peers, the st2 front-end on a simulated SIMtrace2, and a
scripted modem. Byte strings are the worked examples of client.md §7 and
simtrace2-cardem.md §9 (client C23:0, bank slot B1:5)."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

from remsim_client import Client, MainState
from remsim_client.st2.frontend import St2Frontend
from remsim_client.st2.protocol import (
    CardInsert,
    Config,
    ModemReset,
    ResetAction,
    SetAtr,
    SimSelect,
)
from remsim_testing.client import (
    C23,
    TIMEOUT,
    ScriptedPeer,
    client_config,
    config_bank,
    eventually,
)
from remsim_testing.rspro_peers import ScriptedConnection
from remsim_testing.st2_firmware import SimulatedBackend, SimulatedDevice
from rspro import (
    BankSlot,
    ClientSlotStatusInd,
    ConfigClientBankRes,
    SetAtrReq,
    SetAtrRes,
    TpduCardToModem,
    TpduModemToCard,
)

T = TypeVar("T")
B1_5 = BankSlot(1, 5)
CARD_ATR = bytes.fromhex("3b9f96801fc78031a073be21136743200718000001a5")

# client.md §7 and simtrace2-cardem.md §9.4, with the IPA header.
REF_TPDU_SELECT_MF = bytes.fromhex(
    "00 34 ee 07 30 31 80 01 02 81 01 00 a2 29 ac 27 30 06 02 01 17 02 01 00 30 06 02 01 01"
    "02 01 05 30 0c 01 01 00 01 01 00 01 01 00 01 01 00 04 07 a0 a4 00 00 02 3f 00"
)
REF_TPDU_READ_BINARY = bytes.fromhex(
    "00 32 ee 07 30 2f 80 01 02 81 01 00 a2 27 ac 25 30 06 02 01 17 02 01 00 30 06 02 01 01"
    "02 01 05 30 0c 01 01 00 01 01 00 01 01 00 01 01 00 04 05 a0 b0 00 00 04"
)
REF_STATUS_RUNNING = bytes.fromhex(  # rst=0 vcc=1 clk=1, card presence not sent
    "00 28 ee 07 30 25 80 01 02 81 01 00 a2 1d ae 1b 30 06 02 01 17 02 01 00 30 06 02 01 01"
    "02 01 05 30 09 80 01 00 81 01 ff 82 01 ff"
)

EVENT_SCRIPT = """#!/bin/sh
echo "$1 $REMSIM_USB_PATH $REMSIM_USB_INTERFACE" > "%s/$$-$1"
"""


def written(runs: Path) -> list[str]:
    """The lines of the event scripts that have written theirs."""
    return [text for path in runs.iterdir() if (text := path.read_text()).endswith("\n")]


async def in_thread(fn: Callable[..., T], *args: Any) -> T:
    return await asyncio.to_thread(fn, *args)


def modem_starts(fn: Callable[..., T], *args: Any) -> asyncio.Task[T]:
    """A modem action running on its own while the test plays the bankd."""
    return asyncio.create_task(in_thread(fn, *args))


async def running_after_reset(bk: ScriptedConnection) -> None:
    """Pass the ClientSlotStatusInds of a modem reset, up to RST released."""
    was_reset = False
    while True:
        _, raw = await bk.expect(ClientSlotStatusInd)
        if was_reset and raw == REF_STATUS_RUNNING:
            return
        was_reset = was_reset or raw[-9:-6] == bytes.fromhex("8001ff")  # resetActive TRUE


def operational_entry(atr: bytes) -> list[object]:
    """client.md §6.3 on the USB, then the bankd's ATR."""
    reset = ModemReset(ResetAction.PULSE, 300)
    return [SimSelect(True), SetAtr(b"\x3b\x00"), CardInsert(True), reset, SetAtr(atr)]


async def test_st2_client_session(
    server: ScriptedPeer, bankd: ScriptedPeer, tmp_path: Path
) -> None:
    runs = tmp_path / "runs"
    runs.mkdir()
    script = tmp_path / "event-script"
    script.write_text(EVENT_SCRIPT % runs)
    script.chmod(0o755)
    sim = SimulatedDevice("SIMtrace 2", bus=2, address=5, ports=(1, 1))
    slot, modem = sim.slots[0], sim.modem()
    frontend = await St2Frontend.open(backend=SimulatedBackend([sim]))
    config = client_config(server, event_script=str(script))
    run = asyncio.create_task(frontend.run())
    try:
        async with Client(config, frontend) as client:
            srv, _ = await server.accept_client()
            await eventually(lambda: client.state is MainState.UNCONFIGURED)
            srv.send(config_bank(bankd, B1_5))
            await srv.expect(ConfigClientBankRes)

            # bankd connected: the firmware is switched over and gets the card's ATR
            bk, _ = await bankd.accept_client()
            bk.send(SetAtrReq(C23, CARD_ATR))
            await bk.expect(SetAtrRes, skip=(ClientSlotStatusInd,))
            await frontend.drain()
            assert slot.host_messages[:2] == [Config(1, 0, 0)] * 2  # CONFIG first, twice
            assert slot.host_messages[2:] == operational_entry(CARD_ATR)
            assert await in_thread(modem.cold_reset) == CARD_ATR
            await running_after_reset(bk)

            # TPDUs: the bankd sees the whole command, the modem the card's answer
            transact = modem_starts(modem.transact, bytes.fromhex("a0a40000023f00"))
            _, raw = await bk.expect(TpduModemToCard)
            assert raw == REF_TPDU_SELECT_MF
            bk.send(TpduCardToModem(B1_5, C23, bytes.fromhex("9f17")))
            assert await transact == bytes.fromhex("9f17")
            transact = modem_starts(modem.transact, bytes.fromhex("a0b0000004"))
            _, raw = await bk.expect(TpduModemToCard)
            assert raw == REF_TPDU_READ_BINARY
            bk.send(TpduCardToModem(B1_5, C23, bytes.fromhex("01020304 9000")))
            assert await transact == bytes.fromhex("01020304 9000")
            assert modem.last_wire == bytes.fromhex("b0 01 02 03 04 90 00")

            # bankd lost: card removed, local SIM, modem reset; the client reconnects
            entries = len(slot.host_messages)
            bk.close()
            bk, _ = await bankd.accept_client()
            bk.send(SetAtrReq(C23, CARD_ATR))
            await bk.expect(SetAtrRes, skip=(ClientSlotStatusInd,))
            await frontend.drain()
            assert slot.host_messages[entries:] == [
                CardInsert(False),
                SimSelect(False),
                ModemReset(ResetAction.PULSE, 300),
                *operational_entry(CARD_ATR),
            ]
            assert await in_thread(modem.cold_reset) == CARD_ATR
            await running_after_reset(bk)  # a real ATR lasts longer than this takes
            transact = modem_starts(modem.transact, bytes.fromhex("a0a40000023f00"))
            _, raw = await bk.expect(TpduModemToCard)
            assert raw == REF_TPDU_SELECT_MF
            bk.send(TpduCardToModem(B1_5, C23, bytes.fromhex("9f17")))
            assert await transact == bytes.fromhex("9f17")
            assert client.state is MainState.OPERATIONAL
            # (a script's file exists a moment before its line is in it)
            await eventually(lambda: len(written(runs)) >= 14)
    finally:
        await frontend.aclose()
        await asyncio.wait_for(run, TIMEOUT)

    causes = {}
    for line in written(runs):
        cause, usb_path, interface = line.split()
        causes[cause] = (usb_path, interface)
    assert set(causes) >= {
        "event-server-connect",
        "event-config-bankd",
        "request-sim-remote",
        "request-card-insert",
        "request-modem-reset",
        "event-bankd-connect",
        "event-modem-status",
        "request-card-remove",
        "request-sim-local",
    }
    assert set(causes.values()) == {("2-1.1", "0")}
