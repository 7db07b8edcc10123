"""Scripted modem sessions: the real client on a simulated SIMtrace2, scripted peers.

Each session runs the whole client: the ``Client`` core over TCP on 127.0.0.1 with a
scripted server and bankd (``remsim_testing.client``), the st2 front-end through pyusb on
the firmware simulator, and a modem speaking T=0 on the other side of the board. The bankd
answers TPDUs with a small SIM (:func:`card`) and collects the modem status the client
reports.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import pytest

from remsim_client import Client, MainState
from remsim_client.st2.errors import DeviceError, DeviceGone
from remsim_client.st2.frontend import St2Frontend
from remsim_client.st2.protocol import (
    CardInsert,
    Config,
    ModemReset,
    Pts,
    ResetAction,
    SetAtr,
    SimSelect,
    Status,
    StatusFlags,
    TxData,
    decode,
)
from remsim_client.st2.usb import BULK_IN_QUEUE, Selector
from remsim_testing.client import (
    C23,
    ScriptedPeer,
    client_config,
    config_bank,
    eventually,
)
from remsim_testing.rspro_peers import ScriptedConnection
from remsim_testing.st2_firmware import (
    FirmwareSlot,
    ModemError,
    SimulatedBackend,
    SimulatedDevice,
    SimulatedModem,
)
from rspro import (
    BankSlot,
    ClientSlotStatusInd,
    ConfigClientBankRes,
    SetAtrReq,
    SetAtrRes,
    SlotPhysStatus,
    TpduCardToModem,
    TpduModemToCard,
)

T = TypeVar("T")
B1_5 = BankSlot(1, 5)
USIM_ATR = bytes.fromhex("3b9f96801fc78031a073be21136743200718000001a5")
EF_DATA = bytes(range(256))
FCP = bytes.fromhex("621a8202782183023f00a50f8001718302" + "00" * 6 + "8a01058b032f0601")[:28]
RESET_PULSE = ModemReset(ResetAction.PULSE, 300)
Responder = Callable[[bytes], bytes | None]


def card(tpdu: bytes) -> bytes:
    """A tiny SIM: GSM SELECT → 9F17, ISO SELECT → 61xx, GET RESPONSE, READ/UPDATE BINARY."""
    cla, ins, _p1, p2, p3 = tpdu[:5]
    if ins == 0xA4:
        if cla == 0xA0:
            return b"\x9f\x17"
        return b"\x90\x00" if p2 == 0x0C else bytes([0x61, len(FCP)])
    if ins == 0xC0:
        return (FCP if cla == 0x00 else bytes(0x17))[: p3 or 256] + b"\x90\x00"
    if ins == 0xB0:
        return EF_DATA[: p3 or 256] + b"\x90\x00"
    if ins == 0xD6:
        return b"\x90\x00"
    return b"\x6d\x00"


class Bank:
    """The bankd's side of one card session: answers each TPDU with ``responder`` (None:
    stays silent) and queues the modem status the client reports."""

    def __init__(self, conn: ScriptedConnection, responder: Responder) -> None:
        self.conn = conn
        self.responder = responder
        self.tpdus: list[bytes] = []
        self.statuses: asyncio.Queue[SlotPhysStatus] = asyncio.Queue()
        self.atr_acks = 0
        self.task = asyncio.create_task(self._serve())

    async def _serve(self) -> None:
        while True:
            try:
                msg, _ = await self.conn.recv(timeout=None)
            except ConnectionError:
                return  # the client (or the test) closed this bankd connection
            match msg:
                case TpduModemToCard(data=data):
                    self.tpdus.append(data)
                    if (rapdu := self.responder(data)) is not None:
                        self.answer(rapdu)
                case ClientSlotStatusInd(slot_phys_status=status):
                    self.statuses.put_nowait(status)
                case SetAtrRes():
                    self.atr_acks += 1

    def answer(self, rapdu: bytes) -> None:
        self.conn.send(TpduCardToModem(B1_5, C23, rapdu))

    async def status(self) -> tuple[int, int, int]:
        """(reset, vcc, clk) of the next ClientSlotStatusInd."""
        s = await asyncio.wait_for(self.statuses.get(), 2)
        assert s.card_present is None  # the firmware cannot tell
        return int(s.reset_active), int(bool(s.vcc_present)), int(bool(s.clk_active))

    async def statuses_until(self, last: tuple[int, int, int]) -> list[tuple[int, int, int]]:
        seen = [await self.status()]
        while seen[-1] != last:
            seen.append(await self.status())
        return seen


@dataclass
class Rig:
    sim: SimulatedDevice
    frontend: St2Frontend
    client: Client
    usb: asyncio.Task[None]  # St2Frontend.run()
    server: ScriptedConnection
    bankd: ScriptedPeer
    slot_nr: int
    bank: Bank | None = None

    @property
    def slot(self) -> FirmwareSlot:
        return self.sim.slots[self.slot_nr]

    @property
    def modem(self) -> SimulatedModem:
        return self.slot.modem

    async def map(self, responder: Responder = card, atr: bytes | None = USIM_ATR) -> Bank:
        """The server maps C23:0 to B1:5; the client connects to the bankd, which sends
        ``atr`` (None: no SetAtrReq); returns once the USB messages are written."""
        self.server.send(config_bank(self.bankd, B1_5))
        await self.server.expect(ConfigClientBankRes)
        return await self.bankd_back(responder, atr)

    async def bankd_back(self, responder: Responder = card, atr: bytes | None = USIM_ATR) -> Bank:
        """The bankd accepts the client's (next) connection and sends the card's ATR."""
        conn, _ = await self.bankd.accept_client()
        self.bank = bank = Bank(conn, responder)
        await eventually(lambda: self.client.state is MainState.OPERATIONAL)
        if atr is not None:
            conn.send(SetAtrReq(C23, atr))
            await eventually(lambda: bank.atr_acks == 1)
        await self.frontend.drain()
        return bank

    async def unmap(self) -> None:
        """The server removes the slotmap (port 0)."""
        self.server.send(config_bank(None))
        await self.server.expect(ConfigClientBankRes)
        await self.frontend.drain()

    def tx_data(self) -> list[TxData]:
        return [m for m in self.slot.host_messages if isinstance(m, TxData)]


async def in_thread(fn: Callable[..., T], *args: Any) -> T:
    """Run a blocking modem action off the event loop, as a real modem is."""
    return await asyncio.to_thread(fn, *args)


Opener = Callable[..., Awaitable[Rig]]


@pytest.fixture
async def open_rig(server: ScriptedPeer, bankd: ScriptedPeer) -> AsyncIterator[Opener]:
    rigs: list[Rig] = []

    async def opener(
        board: str = "SIMtrace 2",
        selector: Selector | None = None,
        presence_high: bool | None = None,
        sim: SimulatedDevice | None = None,  # a board used before (a restart)
        **config: Any,
    ) -> Rig:
        sim = sim or SimulatedDevice(board, bus=2, address=5, ports=(1, 1))
        frontend = await St2Frontend.open(
            selector, backend=SimulatedBackend([sim]), presence_high=presence_high
        )
        client = Client(client_config(server, **config), frontend)
        usb = asyncio.create_task(frontend.run())
        await client.start()
        srv, _ = await server.accept_client()
        await eventually(lambda: client.state is MainState.UNCONFIGURED)
        rig = Rig(sim, frontend, client, usb, srv, bankd, frontend.usb_interface)
        rigs.append(rig)
        return rig

    yield opener
    for rig in rigs:
        await rig.client.aclose(leave=not rig.usb.done())
        await rig.frontend.aclose()
        await asyncio.wait_for(asyncio.gather(rig.usb, return_exceptions=True), 2)
        if rig.bank is not None:
            rig.bank.task.cancel()


async def running(open_rig: Opener, responder: Responder = card, **kwargs: Any) -> Rig:
    """A mapped card whose modem has powered and reset it (the bankd's ATR read)."""
    rig = await open_rig(**kwargs)
    bank = await rig.map(responder)
    assert await in_thread(rig.modem.cold_reset) == USIM_ATR
    assert await bank.statuses_until((0, 1, 1))
    return rig


# --- start-up, OPERATIONAL, ATR ---------------------------------------------------------


@pytest.mark.parametrize(("presence_high", "pres_pol"), [(None, "00"), (True, "03"), (False, "02")])
async def test_startup_enables_status_irq_with_presence_polarity(
    open_rig: Opener, presence_high: bool | None, pres_pol: str
) -> None:
    rig = await open_rig(presence_high=presence_high)
    config = bytes.fromhex("01 08 00 00 00 00 0e 00 01 00 00 00 00" + pres_pol)
    # CONFIG comes first, twice (a restart may lose the first packet of each endpoint),
    # and nothing else is sent before the card is mapped.
    assert rig.slot.transfers == [config, config]
    assert rig.slot.features == 1
    if presence_high is not None:
        assert rig.slot.presence_high is presence_high


async def test_mapping_and_unmapping_send_upstreams_sequence(
    open_rig: Opener, caplog: pytest.LogCaptureFixture
) -> None:
    rig = await open_rig()
    bank = await rig.map()
    with caplog.at_level(logging.DEBUG, logger="remsim.client"):
        await rig.unmap()
        await bank.conn.wait_closed()
    assert rig.slot.host_messages[2:] == [
        SimSelect(True),
        SetAtr(b"\x3b\x00"),
        CardInsert(True),
        RESET_PULSE,
        SetAtr(USIM_ATR),
        CardInsert(False),
        SimSelect(False),
        RESET_PULSE,
    ]
    assert rig.slot.transfers[2:6] == [
        bytes.fromhex("02 02 00 00 00 00 09 00 01"),
        bytes.fromhex("01 02 00 00 00 00 0b 00 02 3b 00"),
        bytes.fromhex("01 05 00 00 00 00 09 00 01"),
        bytes.fromhex("02 01 00 00 00 00 0b 00 02 2c 01"),
    ]
    assert rig.slot.errors == []
    # The bankd link we dropped ourselves is no error (it used to be, on every unmap).
    assert "bankd link closed as configured" in caplog.text
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR]


async def test_reset_gives_the_bankds_atr(open_rig: Opener) -> None:
    rig = await open_rig()
    await rig.map()
    assert await in_thread(rig.modem.cold_reset) == USIM_ATR
    assert await in_thread(rig.modem.warm_reset) == USIM_ATR


async def test_without_the_bankds_atr_the_modem_sees_the_configured_one(
    open_rig: Opener,
) -> None:
    """``-a``: the ATR shown until the bankd sends one."""
    rig = await open_rig(atr=bytes.fromhex("3b9f96801f"))
    await rig.map(atr=None)
    assert await in_thread(rig.modem.cold_reset) == bytes.fromhex("3b9f96801f")


async def test_atr_ignore_rspro_keeps_the_configured_atr(open_rig: Opener) -> None:
    """``-r``: the bankd's ATR is acknowledged but never reaches the firmware."""
    rig = await open_rig(atr=bytes.fromhex("3b9f96801f"), atr_ignore_rspro=True)
    await rig.map()
    assert await in_thread(rig.modem.cold_reset) == bytes.fromhex("3b9f96801f")
    assert [m for m in rig.slot.host_messages if isinstance(m, SetAtr)] == [
        SetAtr(bytes.fromhex("3b9f96801f"))
    ]


async def test_an_atr_over_33_bytes_is_refused_with_an_error_and_the_event_script(
    open_rig: Opener, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """The firmware would silently keep the previous ATR: the client says so instead."""
    causes = tmp_path / "causes"
    script = tmp_path / "event-script"
    script.write_text(f'#!/bin/sh\necho "$1" >> "{causes}"\n')
    script.chmod(0o755)
    rig = await open_rig(event_script=str(script))
    too_long = b"\x3b" + bytes(33)
    with caplog.at_level(logging.ERROR):
        await rig.map(atr=too_long)
    assert SetAtr(too_long) not in rig.slot.host_messages  # never sent
    assert "has 34 bytes, the card emulator takes at most 33: not sent" in caplog.text
    await eventually(lambda: causes.exists() and "event-atr-rejected" in causes.read_text())
    assert await in_thread(rig.modem.cold_reset) == b"\x3b\x00"  # the previous ATR


async def test_an_atr_of_33_bytes_is_used(open_rig: Opener) -> None:
    rig = await open_rig()
    longest = b"\x3b" + bytes(range(32))
    await rig.map(atr=longest)
    assert await in_thread(rig.modem.cold_reset) == longest


async def test_no_atr_before_the_card_is_mapped(open_rig: Opener) -> None:
    rig = await open_rig()
    with pytest.raises(ModemError, match="no ATR"):
        await in_thread(rig.modem.cold_reset, 0.2)


# --- TPDUs ---------------------------------------------------------------------------------


async def test_select_with_command_data(open_rig: Opener) -> None:
    """§9.2: ACK, command data collected, whole TPDU forwarded, SW back."""
    rig = await running(open_rig)
    assert await in_thread(rig.modem.transact, bytes.fromhex("a0a40000023f00")) == b"\x9f\x17"
    assert rig.modem.last_wire == bytes.fromhex("a4 9f 17")
    assert rig.bank is not None and rig.bank.tpdus == [bytes.fromhex("a0a40000023f00")]
    assert bytes.fromhex("01 01 00 00 00 00 0f 00 08 00 00 00 01 00 a4") in rig.slot.transfers
    assert rig.slot.transfers[-1] == bytes.fromhex(
        "01 01 00 00 00 00 10 00 06 00 00 00 02 00 9f 17"
    )


async def test_read_binary_with_response_data(open_rig: Opener) -> None:
    """§9.4: INS, data, SW on the wire; header forwarded at once."""
    rig = await running(open_rig)
    assert await in_thread(rig.modem.transact, bytes.fromhex("a0b0000004")) == bytes.fromhex(
        "00010203 9000"
    )
    assert rig.modem.last_wire == bytes.fromhex("b0 00 01 02 03 90 00")
    assert rig.bank is not None and rig.bank.tpdus == [bytes.fromhex("a0b0000004")]


async def test_61xx_then_get_response(open_rig: Opener) -> None:
    """The 61xx reaches the modem unchanged; its own GET RESPONSE goes to the bankd."""
    rig = await running(open_rig)
    modem = rig.modem
    sw = await in_thread(modem.transact, bytes.fromhex("00a40004023f00"))
    assert sw == bytes([0x61, len(FCP)])
    assert modem.last_wire == b"\xa4" + sw  # ACK for the file id, then the 61xx
    response = await in_thread(modem.transact, bytes([0x00, 0xC0, 0, 0, sw[1]]))
    assert response == FCP + b"\x90\x00"
    assert rig.bank is not None
    assert rig.bank.tpdus == [bytes.fromhex("00a40004023f00"), bytes([0x00, 0xC0, 0, 0, sw[1]])]


async def test_gsm_select_then_get_response(open_rig: Opener) -> None:
    """§9.3: the 9F17 of a GSM SELECT followed by GET RESPONSE of 0x17 bytes."""
    rig = await running(open_rig)
    await in_thread(rig.modem.transact, bytes.fromhex("a0a40000023f00"))
    assert await in_thread(rig.modem.transact, bytes.fromhex("a0c0000017")) == (
        bytes(23) + b"\x90\x00"
    )
    assert rig.tx_data()[-2].data == b"\xc0" + bytes(23)


async def test_update_binary_case_3(open_rig: Opener) -> None:
    rig = await running(open_rig)
    assert await in_thread(rig.modem.transact, bytes.fromhex("00d6000003aabbcc")) == b"\x90\x00"
    assert rig.bank is not None and rig.bank.tpdus == [bytes.fromhex("00d6000003aabbcc")]


async def test_error_status_without_data(open_rig: Opener) -> None:
    """§9.6: the SW1 takes the procedure byte's place."""
    rig = await running(open_rig, responder=lambda tpdu: b"\x94\x04")
    assert await in_thread(rig.modem.transact, bytes.fromhex("a0b0000004")) == b"\x94\x04"
    assert rig.modem.last_wire == b"\x94\x04"


@pytest.mark.parametrize("le", [49, 0])
async def test_long_responses(open_rig: Opener, le: int) -> None:
    """49 bytes make a 64-byte TX_DATA (the firmware waits for the SW transfer); 0 = 256."""
    rig = await running(open_rig)
    response = await in_thread(rig.modem.transact, bytes([0xA0, 0xB0, 0, 0, le]))
    assert response == EF_DATA[: le or 256] + b"\x90\x00"
    assert rig.slot.errors == []


async def test_pts_is_answered_by_the_firmware_and_logged(
    open_rig: Opener, caplog: pytest.LogCaptureFixture
) -> None:
    rig = await running(open_rig)
    with caplog.at_level(logging.INFO, logger="remsim.client"):
        assert await in_thread(rig.modem.pps, bytes.fromhex("ff109679")) == bytes.fromhex(
            "ff109679"
        )
        await eventually(lambda: "PTS Indication (ff109679)" in caplog.text)
    assert rig.slot.d_index == 6
    assert await in_thread(rig.modem.transact, bytes.fromhex("a0b0000002")) == b"\x00\x01\x90\x00"


async def test_pps_with_a_bad_checksum_is_dropped(
    open_rig: Opener, caplog: pytest.LogCaptureFixture
) -> None:
    rig = await running(open_rig)
    with caplog.at_level(logging.INFO, logger="remsim.client"), pytest.raises(ModemError):
        await in_thread(rig.modem.pps, bytes.fromhex("ff109678"), 0.2)
    assert "PTS Indication" not in caplog.text


# --- status, card presence, modem reset -----------------------------------------------------


async def test_vcc_off_and_on_are_reported_to_the_bankd(open_rig: Opener) -> None:
    rig = await open_rig()
    bank = await rig.map()
    assert await bank.status() == (1, 0, 0)  # emulation on: RST held, no power
    modem = rig.modem
    await in_thread(modem.power_on)
    assert [await bank.status(), await bank.status()] == [(1, 1, 0), (1, 1, 1)]
    await in_thread(modem.release_reset)
    assert await bank.status() == (0, 1, 1)
    await in_thread(modem.power_off)
    assert await bank.statuses_until((1, 0, 0)) == [(0, 0, 1), (0, 0, 0), (1, 0, 0)]
    await in_thread(modem.power_on)
    assert await bank.statuses_until((1, 1, 1)) == [(1, 1, 0), (1, 1, 1)]


async def test_status_carries_no_card_presence(open_rig: Opener) -> None:
    rig = await open_rig("ngff-cardem")
    bank = await rig.map()
    await bank.status()
    await in_thread(rig.modem.power_on)
    status = await asyncio.wait_for(bank.statuses.get(), 2)
    assert status == SlotPhysStatus(reset_active=True, vcc_present=True, clk_active=False)


async def test_card_insert_and_remove(open_rig: Opener) -> None:
    rig = await open_rig("OWHW", selector=Selector(interface=1))
    assert rig.modem.card_present is False
    await rig.map()
    assert rig.modem.card_present is True
    await rig.unmap()
    assert rig.modem.card_present is False


async def test_card_insert_on_a_board_without_presence_line(open_rig: Opener) -> None:
    rig = await open_rig("SIMtrace 2")
    await rig.map()
    assert CardInsert(True) in rig.slot.host_messages
    assert rig.modem.card_present is None  # the event script must do it


@pytest.mark.parametrize(("board", "pulses"), [("sysmoQMOD (Quad Modem)", 1), ("SIMtrace 2", 0)])
async def test_modem_reset(open_rig: Opener, board: str, pulses: int) -> None:
    rig = await open_rig(board, selector=Selector(interface=0))
    await rig.map()
    assert rig.modem.reset_pulses == [RESET_PULSE] * pulses


async def test_reset_during_a_pending_tpdu_drops_its_late_response(
    open_rig: Opener, caplog: pytest.LogCaptureFixture
) -> None:
    rig = await running(open_rig, responder=lambda tpdu: None)  # bankd stays silent
    bank, modem = rig.bank, rig.modem
    assert bank is not None
    with pytest.raises(ModemError):
        await in_thread(modem.transact, bytes.fromhex("a0b0000004"), 0.2)
    assert bank.tpdus == [bytes.fromhex("a0b0000004")]
    await in_thread(modem.warm_reset)
    await bank.statuses_until((0, 1, 1))
    sent = len(rig.tx_data())
    bank.answer(bytes.fromhex("01020304 9000"))  # too late
    await eventually(lambda: "without a pending TPDU; ignored" in caplog.text)
    await rig.frontend.drain()
    assert len(rig.tx_data()) == sent
    bank.responder = card
    assert await in_thread(modem.transact, bytes.fromhex("a0b0000001")) == b"\x00\x90\x00"


async def test_bankd_lost_and_back(open_rig: Opener, caplog: pytest.LogCaptureFixture) -> None:
    rig = await running(open_rig)
    modem = rig.modem
    assert await in_thread(modem.transact, bytes.fromhex("a0b0000002")) == b"\x00\x01\x90\x00"

    assert rig.bank is not None
    rig.bank.responder = lambda tpdu: None
    with pytest.raises(ModemError):
        await in_thread(modem.transact, bytes.fromhex("a0b0000002"), 0.2)
    rig.bank.conn.close()  # bankd gone without answering: card removed, local SIM, reset
    await eventually(lambda: rig.client.state is MainState.WAIT_BANKD)
    await rig.frontend.drain()
    assert rig.slot.host_messages[-3:] == [CardInsert(False), SimSelect(False), RESET_PULSE]
    assert not rig.slot.enabled  # emulation off: the modem's contacts are dead
    with pytest.raises(ModemError):
        await in_thread(modem.warm_reset, 0.2)

    bank = await rig.bankd_back()  # the client reconnected by itself
    sent = len(rig.tx_data())
    bank.answer(b"\x00\x01\x90\x00")  # a straggler nobody asked for: dropped
    await eventually(lambda: "without a pending TPDU; ignored" in caplog.text)
    assert await in_thread(modem.cold_reset) == USIM_ATR
    await bank.statuses_until((0, 1, 1))  # a real ATR lasts longer than this takes
    assert len(rig.tx_data()) == sent
    assert await in_thread(modem.transact, bytes.fromhex("a0a40000023f00")) == b"\x9f\x17"
    assert rig.slot.errors == []


# --- a clean stop -----------------------------------------------------------------------------


async def test_a_clean_stop_gives_the_modem_its_own_sim_back(open_rig: Opener) -> None:
    rig = await running(open_rig, board="ngff-cardem")  # resets the modem, drives presence
    assert rig.modem.card_present is True and rig.slot.enabled
    entries = len(rig.slot.host_messages)
    await rig.client.aclose()  # e.g. SIGTERM
    await rig.frontend.aclose()
    assert rig.slot.host_messages[entries:] == [
        CardInsert(False),
        SimSelect(False),
        RESET_PULSE,
    ]
    assert rig.modem.card_present is False  # the modem sees the card removed
    assert not rig.slot.enabled  # and is back on its local SIM
    assert rig.modem.reset_pulses == [RESET_PULSE] * 2
    assert rig.bank is not None
    await rig.bank.conn.wait_closed()


async def test_a_stop_without_a_card_sends_nothing(open_rig: Opener) -> None:
    rig = await open_rig()
    await rig.client.aclose()
    await rig.frontend.drain()
    assert rig.slot.host_messages == [Config(1, 0, 0)] * 2


# --- the event loop, the device, the script environment --------------------------------------


async def ticks_during(coro: Awaitable[Any], interval: float = 0.01) -> tuple[int, float]:
    """How often a 10 ms ticker ran while ``coro`` ran, and its worst lateness."""
    ticks, worst = 0, 0.0
    done = asyncio.Event()

    async def ticker() -> None:
        nonlocal ticks, worst
        while not done.is_set():
            start = time.monotonic()
            await asyncio.sleep(interval)
            worst = max(worst, time.monotonic() - start - interval)
            ticks += 1

    task = asyncio.create_task(ticker())
    try:
        await coro
    finally:
        done.set()
        await task
    return ticks, worst


async def test_a_slow_usb_write_does_not_block_the_event_loop(open_rig: Opener) -> None:
    rig = await open_rig()
    rig.sim.latency = 0.1
    start = time.monotonic()
    rig.server.send(config_bank(rig.bankd, B1_5))  # four USB writes when the card comes
    await rig.bankd.accept_client()
    await eventually(lambda: rig.client.state is MainState.OPERATIONAL)
    assert time.monotonic() - start < 0.1  # the hooks never block...
    ticks, worst = await ticks_during(rig.frontend.drain())  # ...the writes happen meanwhile
    assert time.monotonic() - start >= 0.4
    assert ticks >= 10  # a blocked loop would tick once
    assert worst < 0.2  # well under the 0.4 s of USB writes, even on a busy machine
    assert rig.slot.host_messages[-1] == RESET_PULSE


async def test_waiting_for_the_modem_does_not_block_the_event_loop(open_rig: Opener) -> None:
    rig = await running(open_rig)
    ticks, worst = await ticks_during(asyncio.sleep(0.3))  # readers blocked in USB meanwhile
    assert ticks >= 5  # a blocked loop would tick once
    assert worst < 0.2  # well under the 0.3 s USB wait, even on a busy machine
    ticks, worst = await ticks_during(in_thread(rig.modem.transact, bytes.fromhex("a0b0000004")))
    assert worst < 0.2


async def test_a_status_long_after_the_last_one_is_delivered(open_rig: Opener) -> None:
    """The interrupt endpoint is read without a timeout: nothing depends on a poll."""
    rig = await open_rig()
    bank = await rig.map()
    assert await bank.status() == (1, 0, 0)
    await asyncio.sleep(0.5)
    await in_thread(rig.modem.power_on)
    assert await bank.statuses_until((1, 1, 1)) == [(1, 1, 0), (1, 1, 1)]


async def test_unplugging_the_device_ends_run_with_device_gone(open_rig: Opener) -> None:
    rig = await open_rig()
    rig.sim.unplug()
    with pytest.raises(DeviceGone):
        await asyncio.wait_for(rig.usb, 2)
    start = time.monotonic()
    await rig.frontend.aclose()
    assert time.monotonic() - start < 1


async def test_close_ends_run(open_rig: Opener) -> None:
    rig = await open_rig()
    start = time.monotonic()
    await rig.frontend.aclose()
    await asyncio.wait_for(rig.usb, 1)
    assert time.monotonic() - start < 1
    assert rig.sim.claimed == set()


async def test_script_environment(open_rig: Opener) -> None:
    rig = await open_rig("sysmoQMOD (Quad Modem)", selector=Selector(interface=1))
    assert rig.frontend.script_env() == {
        "REMSIM_USB_PATH": "2-1.1",
        "REMSIM_USB_INTERFACE": "1",
    }


async def test_firmware_confirmation_is_not_an_event(
    open_rig: Opener, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.DEBUG):
        rig = await open_rig()
        await asyncio.sleep(0.05)
    assert isinstance(rig.slot.host_messages[0], Config)
    assert "firmware config" in caplog.text
    assert "not permitted" not in caplog.text  # no modem event reached the core


async def test_a_failed_write_ends_run(open_rig: Opener) -> None:
    rig = await open_rig()
    rig.sim.halted.add(0x04)  # bulk OUT stalls
    rig.server.send(config_bank(rig.bankd, B1_5))
    await rig.bankd.accept_client()  # the card comes: USB writes
    with pytest.raises(DeviceError, match="bulk OUT"):
        await asyncio.wait_for(rig.usb, 2)
    rig.sim.halted.clear()
    start = time.monotonic()
    await rig.frontend.aclose()  # still stops its reader threads
    assert time.monotonic() - start < 0.5
    assert rig.sim.claimed == set()


# --- the USB as a real board has it ------------------------------------------------------


def update_binary(length: int) -> bytes:
    """UPDATE BINARY (case 3) with ``length`` bytes: RX_DATA of 14 + ``length`` bytes."""
    return bytes([0x00, 0xD6, 0x00, 0x00, length]) + bytes(i & 0xFF for i in range(length))


@pytest.mark.parametrize("length", [0, 1, 50, 113, 114, 178, 242, 255])
async def test_command_data_of_every_size_is_forwarded_and_answered(
    open_rig: Opener, length: int
) -> None:
    """The firmware ends a message of 64 bytes (50 data bytes) with a zero-length packet,
    one of 128, 192 or 256 bytes (114, 178, 242) on a full packet with nothing after it;
    P3 = 0 forwards the header alone (the firmware would wait for data after an ACK)."""
    rig = await running(open_rig)
    tpdu = update_binary(length)
    assert await in_thread(rig.modem.transact, tpdu) == b"\x90\x00"
    assert rig.bank is not None and rig.bank.tpdus == [tpdu]
    sent = [m.data for m in rig.sim.in_messages if m.endpoint == 0x85]
    assert len(sent[-1]) == (14 + length if length else 19)  # the last RX_DATA, as one message
    assert rig.slot.errors == []


async def test_one_message_over_three_reads(open_rig: Opener) -> None:
    rig = await running(open_rig)
    assert await in_thread(rig.modem.transact, update_binary(178)) == b"\x90\x00"
    final = rig.sim.in_messages[-1].data
    assert len(final) == 192
    reads = [r.data for r in rig.sim.reads_done if r.endpoint == 0x85][-3:]
    assert reads == [final[:64], final[64:128], final[128:]]


async def test_several_messages_in_one_read(
    open_rig: Opener, caplog: pytest.LogCaptureFixture
) -> None:
    """A device that packed its messages (the firmware does not) would be understood too."""
    rig = await running(open_rig)
    pts = Pts(4, bytes.fromhex("ff109679"), bytes.fromhex("ff109679"))
    with caplog.at_level(logging.DEBUG):
        rig.slot.send_packed(pts, Status(StatusFlags.VCC_PRESENT), Config(1, 0, 3))
        await eventually(lambda: "firmware config" in caplog.text)
    assert "PTS Indication (ff109679)" in caplog.text and "firmware status" in caplog.text
    (read,) = [r for r in rig.sim.reads_done if len(r.data) == 21 + 21 + 14]  # one packet
    assert read.endpoint == 0x85
    assert await in_thread(rig.modem.transact, bytes.fromhex("a0b0000002")) == b"\x00\x01\x90\x00"


async def test_a_pps_followed_at_once_by_a_tpdu_is_answered(open_rig: Opener) -> None:
    """What once hung upstream with a Quectel EC20 and a single queued read."""
    rig = await running(open_rig)
    modem = rig.modem

    def pps_then_select() -> bytes:
        assert modem.pps(bytes.fromhex("ff109679")) == bytes.fromhex("ff109679")
        return modem.transact(bytes.fromhex("a0a40000023f00"))

    assert await in_thread(pps_then_select) == b"\x9f\x17"
    assert rig.slot.d_index == 6


async def test_reads_stay_queued_on_bulk_in_during_a_tpdu_exchange(open_rig: Opener) -> None:
    """Seen from the board: when it sends each RX_DATA, the host has reads waiting."""
    rig = await running(open_rig)
    start = len(rig.sim.in_messages)
    assert await in_thread(rig.modem.transact, update_binary(178)) == b"\x90\x00"
    assert await in_thread(rig.modem.transact, bytes.fromhex("a0b0000004")) == bytes.fromhex(
        "00010203 9000"
    )
    exchanged = [m for m in rig.sim.in_messages[start:] if m.endpoint == 0x85]
    assert len(exchanged) == 3  # header + data, header
    assert [m.reads_queued for m in exchanged] == [BULK_IN_QUEUE] * 3
    assert BULK_IN_QUEUE >= 2


@pytest.mark.parametrize(
    ("out_lost", "in_lost"),
    [(True, True), (True, False), (False, True)],
    ids=["both-lose-one", "out-loses-one", "in-loses-one"],
)
async def test_a_restart_after_set_interfaces_stall_works_because_config_comes_first(
    open_rig: Opener, out_lost: bool, in_lost: bool
) -> None:
    """SET_INTERFACE's STALL resets the host's data toggles, not the firmware's: after a
    restart the first packet on an endpoint is lost when its toggle count was odd. The
    client starts with two CONFIGs, so what is lost is always a CONFIG or its answer."""
    first = await running(open_rig)
    assert await in_thread(first.modem.transact, update_binary(3)) == b"\x90\x00"
    await first.client.aclose()
    await first.frontend.aclose()
    sim = first.sim
    # The toggles the first session left, as after an odd (lost) or even number of packets
    # on each endpoint; the interrupt endpoint's goes with bulk IN.
    for ep, odd in ((0x04, out_lost), (0x85, in_lost), (0x86, in_lost)):
        sim.endpoints[ep].device_toggle = sim.endpoints[ep].host_toggle = int(odd)
    sim.dropped.clear()

    second = await open_rig(sim=sim)
    assert sim.set_interface_requests == 2
    bank = await second.map()
    assert await in_thread(second.modem.cold_reset) == USIM_ATR
    # The modem was still running: (0, 1, 1) on SIM_SELECT already. Wait for the reset's.
    assert await bank.statuses_until((1, 1, 1))
    assert await bank.statuses_until((0, 1, 1))
    assert await in_thread(second.modem.transact, bytes.fromhex("a0a40000023f00")) == b"\x9f\x17"
    assert bank.tpdus == [bytes.fromhex("a0a40000023f00")]
    lost = {ep: [decode(d.data) for d in sim.dropped if d.endpoint == ep] for ep in (4, 0x85)}
    assert lost == {0x04: [Config(1, 0, 0)] * out_lost, 0x85: [Config(1, 0, 3)] * in_lost}
    assert second.slot.host_messages[0] == Config(1, 0, 0)
