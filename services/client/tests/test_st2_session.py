"""Scripted modem sessions: the st2 front-end against the cardem firmware simulator.

The front-end runs its real code path through pyusb (simulator backend); the modem on the
other side of the simulated board speaks T=0; the "bankd" is a function from TPDU to R-APDU,
driven by a small stand-in for the client core.
"""

import asyncio
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any, TypeVar

import pytest

from remsim_client.frontend import ModemCore
from remsim_client.st2.errors import DeviceError, DeviceGone
from remsim_client.st2.frontend import St2Frontend
from remsim_client.st2.protocol import (
    CardInsert,
    Config,
    ModemReset,
    ResetAction,
    SetAtr,
    SimSelect,
    TxData,
)
from remsim_client.st2.simulator import ModemError, SimulatedBackend, SimulatedDevice
from remsim_client.st2.usb import Selector
from rspro import SlotPhysStatus

T = TypeVar("T")
USIM_ATR = bytes.fromhex("3b9f96801fc78031a073be21136743200718000001a5")
EF_DATA = bytes(range(256))
FCP = bytes.fromhex("621a8202782183023f00a50f8001718302" + "00" * 6 + "8a01058b032f0601")[:28]
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


class Core(ModemCore):
    """Stands in for the client core in OPERATIONAL: the bankd is ``responder``."""

    def __init__(self, frontend: St2Frontend, responder: Responder) -> None:
        self.frontend = frontend
        self.responder = responder
        self.tpdus: list[bytes] = []
        self.statuses: asyncio.Queue[SlotPhysStatus] = asyncio.Queue()
        self.pts: list[bytes] = []
        frontend.attach(self)
        self.task = asyncio.create_task(frontend.run())

    def modem_tpdu(self, data: bytes) -> None:
        self.tpdus.append(data)
        rapdu = self.responder(data)
        if rapdu is not None:
            self.frontend.card_to_modem(rapdu)

    def modem_status(self, status: SlotPhysStatus) -> None:
        self.statuses.put_nowait(status)

    def modem_pts(self, pts: bytes) -> None:
        self.pts.append(pts)

    async def enter_operational(self, atr: bytes = b"\x3b\x00") -> None:
        """client.md §6.3: sim-remote, configured ATR, card-insert, modem-reset."""
        self.frontend.sim_remote()
        self.frontend.set_atr(atr)
        self.frontend.card_insert()
        self.frontend.modem_reset()
        await self.frontend.drain()

    async def leave_operational(self) -> None:
        self.frontend.card_remove()
        self.frontend.sim_local()
        self.frontend.modem_reset()
        await self.frontend.drain()

    async def status(self) -> tuple[int, int, int]:
        """(reset, vcc, clk) of the next status indication."""
        s = await asyncio.wait_for(self.statuses.get(), 2)
        assert s.card_present is None  # the firmware cannot tell
        return int(s.reset_active), int(bool(s.vcc_present)), int(bool(s.clk_active))

    async def statuses_until(self, last: tuple[int, int, int]) -> list[tuple[int, int, int]]:
        seen = [await self.status()]
        while seen[-1] != last:
            seen.append(await self.status())
        return seen


async def in_thread(fn: Callable[..., T], *args: Any) -> T:
    """Run a blocking modem action off the event loop, as a real modem is."""
    return await asyncio.to_thread(fn, *args)


Opener = Callable[..., Awaitable[tuple[SimulatedDevice, St2Frontend, Core]]]


@pytest.fixture
async def open_board() -> AsyncIterator[Opener]:
    opened: list[tuple[St2Frontend, Core]] = []

    async def opener(
        board: str = "SIMtrace 2",
        responder: Responder = card,
        selector: Selector | None = None,
        presence_high: bool | None = None,
    ) -> tuple[SimulatedDevice, St2Frontend, Core]:
        sim = SimulatedDevice(board, bus=2, address=5, ports=(1, 1))
        backend = SimulatedBackend([sim])
        frontend = await St2Frontend.open(
            selector, backend=backend, presence_high=presence_high, irq_poll_ms=20
        )
        core = Core(frontend, responder)
        opened.append((frontend, core))
        return sim, frontend, core

    yield opener
    for frontend, core in opened:
        await frontend.aclose()
        await asyncio.wait_for(asyncio.gather(core.task, return_exceptions=True), 2)


async def operational(open_board: Opener, **kwargs: Any) -> tuple[SimulatedDevice, Core]:
    """A board whose modem has powered and reset the emulated card (ATR read)."""
    sim, frontend, core = await open_board(**kwargs)
    await core.enter_operational()
    frontend.set_atr(USIM_ATR)  # the bankd's SetAtrReq
    await frontend.drain()
    assert await in_thread(sim.modem().cold_reset) == USIM_ATR
    assert await core.statuses_until((0, 1, 1))
    return sim, core


def tx_data(sim: SimulatedDevice) -> list[TxData]:
    return [m for m in sim.slots[0].host_messages if isinstance(m, TxData)]


# --- start-up and OPERATIONAL -------------------------------------------------------------


@pytest.mark.parametrize(("presence_high", "pres_pol"), [(None, "00"), (True, "03"), (False, "02")])
async def test_startup_enables_status_irq_with_presence_polarity(
    open_board: Opener, presence_high: bool | None, pres_pol: str
) -> None:
    sim, _frontend, _core = await open_board(presence_high=presence_high)
    config = bytes.fromhex("01 08 00 00 00 00 0e 00 01 00 00 00 00" + pres_pol)
    assert sim.slots[0].transfers[0] == config
    assert sim.slots[0].features == 1
    if presence_high is not None:
        assert sim.slots[0].presence_high is presence_high


async def test_entering_and_leaving_operational_send_upstreams_sequence(open_board: Opener) -> None:
    sim, _frontend, core = await open_board()
    await core.enter_operational()
    await core.leave_operational()
    assert sim.slots[0].host_messages[1:] == [
        SimSelect(True),
        SetAtr(b"\x3b\x00"),
        CardInsert(True),
        ModemReset(ResetAction.PULSE, 300),
        CardInsert(False),
        SimSelect(False),
        ModemReset(ResetAction.PULSE, 300),
    ]
    assert sim.slots[0].transfers[1:5] == [
        bytes.fromhex("02 02 00 00 00 00 09 00 01"),
        bytes.fromhex("01 02 00 00 00 00 0b 00 02 3b 00"),
        bytes.fromhex("01 05 00 00 00 00 09 00 01"),
        bytes.fromhex("02 01 00 00 00 00 0b 00 02 2c 01"),
    ]
    assert sim.slots[0].errors == []


# --- reset and ATR --------------------------------------------------------------------------


async def test_reset_gives_the_bankds_atr(open_board: Opener) -> None:
    sim, frontend, core = await open_board()
    await core.enter_operational()
    frontend.set_atr(USIM_ATR)
    await frontend.drain()
    modem = sim.modem()
    assert await in_thread(modem.cold_reset) == USIM_ATR
    assert await in_thread(modem.warm_reset) == USIM_ATR


async def test_without_the_bankds_atr_the_modem_sees_the_configured_one(
    open_board: Opener,
) -> None:
    """What ``-r`` (ignore the RSPRO ATR) or ``-a`` amount to at the modem."""
    sim, _frontend, core = await open_board()
    await core.enter_operational(atr=bytes.fromhex("3b9f96801f"))
    assert await in_thread(sim.modem().cold_reset) == bytes.fromhex("3b9f96801f")


async def test_an_atr_longer_than_33_bytes_is_ignored_by_the_firmware(open_board: Opener) -> None:
    sim, frontend, core = await open_board()
    await core.enter_operational()
    frontend.set_atr(b"\x3b" + bytes(54))
    await frontend.drain()
    assert await in_thread(sim.modem().cold_reset) == b"\x3b\x00"


async def test_no_atr_while_emulation_is_off(open_board: Opener) -> None:
    sim, _frontend, _core = await open_board()
    with pytest.raises(ModemError, match="no ATR"):
        await in_thread(sim.modem().cold_reset, 0.2)


# --- TPDUs ---------------------------------------------------------------------------------


async def test_select_with_command_data(open_board: Opener) -> None:
    """§9.2: ACK, command data collected, whole TPDU forwarded, SW back."""
    sim, core = await operational(open_board)
    modem = sim.modem()
    assert await in_thread(modem.transact, bytes.fromhex("a0a40000023f00")) == b"\x9f\x17"
    assert modem.last_wire == bytes.fromhex("a4 9f 17")
    assert core.tpdus == [bytes.fromhex("a0a40000023f00")]
    assert bytes.fromhex("01 01 00 00 00 00 0f 00 08 00 00 00 01 00 a4") in sim.slots[0].transfers
    assert sim.slots[0].transfers[-1] == bytes.fromhex(
        "01 01 00 00 00 00 10 00 06 00 00 00 02 00 9f 17"
    )


async def test_read_binary_with_response_data(open_board: Opener) -> None:
    """§9.4: INS, data, SW on the wire; header forwarded at once."""
    sim, core = await operational(open_board)
    modem = sim.modem()
    assert await in_thread(modem.transact, bytes.fromhex("a0b0000004")) == bytes.fromhex(
        "00010203 9000"
    )
    assert modem.last_wire == bytes.fromhex("b0 00 01 02 03 90 00")
    assert core.tpdus == [bytes.fromhex("a0b0000004")]


async def test_61xx_then_get_response(open_board: Opener) -> None:
    sim, core = await operational(open_board)
    modem = sim.modem()
    sw = await in_thread(modem.transact, bytes.fromhex("00a40004023f00"))
    assert sw == bytes([0x61, len(FCP)])
    assert modem.last_wire == b"\xa4" + sw  # ACK for the file id, then the 61xx
    response = await in_thread(modem.transact, bytes([0x00, 0xC0, 0, 0, sw[1]]))
    assert response == FCP + b"\x90\x00"
    assert core.tpdus == [bytes.fromhex("00a40004023f00"), bytes([0x00, 0xC0, 0, 0, sw[1]])]


async def test_gsm_select_then_get_response(open_board: Opener) -> None:
    """§9.3: the 9F17 of a GSM SELECT followed by GET RESPONSE of 0x17 bytes."""
    sim, _core = await operational(open_board)
    modem = sim.modem()
    await in_thread(modem.transact, bytes.fromhex("a0a40000023f00"))
    assert await in_thread(modem.transact, bytes.fromhex("a0c0000017")) == bytes(23) + b"\x90\x00"
    assert tx_data(sim)[-2].data == b"\xc0" + bytes(23)


async def test_update_binary_case_3(open_board: Opener) -> None:
    sim, core = await operational(open_board)
    assert await in_thread(sim.modem().transact, bytes.fromhex("00d6000003aabbcc")) == b"\x90\x00"
    assert core.tpdus == [bytes.fromhex("00d6000003aabbcc")]


async def test_error_status_without_data(open_board: Opener) -> None:
    """§9.6: the SW1 takes the procedure byte's place."""
    sim, _core = await operational(open_board, responder=lambda tpdu: b"\x94\x04")
    modem = sim.modem()
    assert await in_thread(modem.transact, bytes.fromhex("a0b0000004")) == b"\x94\x04"
    assert modem.last_wire == b"\x94\x04"


@pytest.mark.parametrize("le", [49, 0])
async def test_long_responses(open_board: Opener, le: int) -> None:
    """49 bytes make a 64-byte TX_DATA (the firmware waits for the SW transfer); 0 = 256."""
    sim, _core = await operational(open_board)
    response = await in_thread(sim.modem().transact, bytes([0xA0, 0xB0, 0, 0, le]))
    assert response == EF_DATA[: le or 256] + b"\x90\x00"
    assert sim.slots[0].errors == []


async def test_pts(open_board: Opener) -> None:
    sim, core = await operational(open_board)
    modem = sim.modem()
    assert await in_thread(modem.pps, bytes.fromhex("ff109679")) == bytes.fromhex("ff109679")
    await asyncio.sleep(0.05)
    assert core.pts == [bytes.fromhex("ff109679")]
    assert sim.slots[0].d_index == 6
    assert await in_thread(modem.transact, bytes.fromhex("a0b0000002")) == b"\x00\x01\x90\x00"


async def test_pps_with_a_bad_checksum_is_dropped(open_board: Opener) -> None:
    sim, core = await operational(open_board)
    with pytest.raises(ModemError):
        await in_thread(sim.modem().pps, bytes.fromhex("ff109678"), 0.2)
    await asyncio.sleep(0.05)
    assert core.pts == []


# --- status, card presence, modem reset -----------------------------------------------------


async def test_vcc_off_and_on_are_reported(open_board: Opener) -> None:
    sim, frontend, core = await open_board()
    frontend.sim_remote()
    await frontend.drain()
    assert await core.status() == (1, 0, 0)  # emulation on: RST held, no power
    modem = sim.modem()
    await in_thread(modem.power_on)
    assert [await core.status(), await core.status()] == [(1, 1, 0), (1, 1, 1)]
    await in_thread(modem.release_reset)
    assert await core.status() == (0, 1, 1)
    await in_thread(modem.power_off)
    assert await core.statuses_until((1, 0, 0)) == [(0, 0, 1), (0, 0, 0), (1, 0, 0)]
    await in_thread(modem.power_on)
    assert await core.statuses_until((1, 1, 1)) == [(1, 1, 0), (1, 1, 1)]


async def test_status_carries_the_card_parameters(open_board: Opener) -> None:
    sim, frontend, core = await open_board("ngff-cardem")
    frontend.sim_remote()
    await frontend.drain()
    await core.status()
    await in_thread(sim.modem().power_on)
    status = await asyncio.wait_for(core.statuses.get(), 2)
    assert status == SlotPhysStatus(reset_active=True, vcc_present=True, clk_active=False)


async def test_card_insert_and_remove(open_board: Opener) -> None:
    sim, frontend, _core = await open_board("OWHW", selector=Selector(interface=1))
    modem = sim.modem(1)
    assert modem.card_present is False
    frontend.card_insert()
    await frontend.drain()
    assert modem.card_present is True
    frontend.card_remove()
    await frontend.drain()
    assert modem.card_present is False


async def test_card_insert_on_a_board_without_presence_line(open_board: Opener) -> None:
    sim, frontend, _core = await open_board("SIMtrace 2")
    frontend.card_insert()
    await frontend.drain()
    assert sim.slots[0].host_messages[-1] == CardInsert(True)
    assert sim.modem().card_present is None  # the event script must do it


@pytest.mark.parametrize(("board", "pulses"), [("sysmoQMOD (Quad Modem)", 1), ("SIMtrace 2", 0)])
async def test_modem_reset(open_board: Opener, board: str, pulses: int) -> None:
    sim, frontend, _core = await open_board(board, selector=Selector(interface=0))
    frontend.modem_reset()
    await frontend.drain()
    assert sim.modem().reset_pulses == [ModemReset(ResetAction.PULSE, 300)] * pulses


async def test_reset_during_a_pending_tpdu_drops_its_late_response(open_board: Opener) -> None:
    sim, frontend, core = await open_board(responder=lambda tpdu: None)  # bankd stays silent
    await core.enter_operational()
    modem = sim.modem()
    await in_thread(modem.cold_reset)
    await core.statuses_until((0, 1, 1))
    with pytest.raises(ModemError):
        await in_thread(modem.transact, bytes.fromhex("a0b0000004"), 0.2)
    assert core.tpdus == [bytes.fromhex("a0b0000004")]
    await in_thread(modem.warm_reset)
    await core.statuses_until((0, 1, 1))
    sent = len(tx_data(sim))
    frontend.card_to_modem(bytes.fromhex("01020304 9000"))  # too late
    await frontend.drain()
    assert len(tx_data(sim)) == sent
    core.responder = card
    assert await in_thread(modem.transact, bytes.fromhex("a0b0000001")) == b"\x00\x90\x00"


async def test_bankd_lost_and_back(open_board: Opener) -> None:
    answers: list[Responder] = [card]
    sim, core = await operational(open_board, responder=lambda tpdu: answers[0](tpdu))
    frontend = core.frontend
    modem = sim.modem()
    assert await in_thread(modem.transact, bytes.fromhex("a0b0000002")) == b"\x00\x01\x90\x00"

    answers[0] = lambda tpdu: None  # bankd gone: the TPDU gets no answer
    with pytest.raises(ModemError):
        await in_thread(modem.transact, bytes.fromhex("a0b0000002"), 0.2)
    await core.leave_operational()  # card removed, local SIM, modem reset
    assert await core.statuses_until((0, 0, 0))  # emulation off: contacts dead
    sent = len(tx_data(sim))
    frontend.card_to_modem(b"\x00\x01\x90\x00")  # a straggler from the old link
    await frontend.drain()
    assert len(tx_data(sim)) == sent
    with pytest.raises(ModemError):
        await in_thread(modem.warm_reset, 0.2)

    answers[0] = card  # bankd back
    await core.enter_operational()
    frontend.set_atr(USIM_ATR)
    await frontend.drain()
    assert await in_thread(modem.cold_reset) == USIM_ATR
    await core.statuses_until((0, 1, 1))  # a real ATR lasts longer than this takes
    assert await in_thread(modem.transact, bytes.fromhex("a0a40000023f00")) == b"\x9f\x17"
    assert sim.slots[0].errors == []


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


async def test_a_slow_usb_write_does_not_block_the_event_loop(open_board: Opener) -> None:
    sim, frontend, _core = await open_board()
    sim.latency = 0.3
    start = time.monotonic()
    frontend.card_insert()  # a hook never blocks...
    assert time.monotonic() - start < 0.05
    ticks, worst = await ticks_during(frontend.drain())  # ...the USB write happens meanwhile
    assert time.monotonic() - start >= 0.3
    assert ticks >= 5  # a blocked loop would tick once
    assert worst < 0.2  # well under the 0.3 s USB wait, even on a busy machine
    assert sim.slots[0].host_messages[-1] == CardInsert(True)


async def test_waiting_for_the_modem_does_not_block_the_event_loop(open_board: Opener) -> None:
    sim, _core = await operational(open_board)
    ticks, worst = await ticks_during(asyncio.sleep(0.3))  # readers blocked in USB meanwhile
    assert ticks >= 5  # a blocked loop would tick once
    assert worst < 0.2  # well under the 0.3 s USB wait, even on a busy machine
    ticks, worst = await ticks_during(in_thread(sim.modem().transact, bytes.fromhex("a0b0000004")))
    assert worst < 0.2  # well under the 0.3 s USB wait, even on a busy machine


async def test_unplugging_the_device_ends_run_with_device_gone(open_board: Opener) -> None:
    sim, frontend, core = await open_board()
    sim.unplug()
    with pytest.raises(DeviceGone):
        await asyncio.wait_for(core.task, 2)
    start = time.monotonic()
    await frontend.aclose()
    assert time.monotonic() - start < 1


async def test_close_ends_run(open_board: Opener) -> None:
    _sim, frontend, core = await open_board()
    start = time.monotonic()
    await frontend.aclose()
    await asyncio.wait_for(core.task, 1)
    assert time.monotonic() - start < 1


async def test_script_environment(open_board: Opener) -> None:
    _sim, frontend, _core = await open_board(
        "sysmoQMOD (Quad Modem)", selector=Selector(interface=1)
    )
    assert frontend.script_env() == {"REMSIM_USB_PATH": "2-1.1", "REMSIM_USB_INTERFACE": "1"}


async def test_firmware_confirmation_is_not_an_event(open_board: Opener) -> None:
    sim, _frontend, core = await open_board()
    await asyncio.sleep(0.05)
    assert core.statuses.empty() and core.pts == [] and core.tpdus == []
    assert isinstance(sim.slots[0].host_messages[0], Config)


async def test_a_failed_write_ends_run(open_board: Opener) -> None:
    sim, frontend, core = await open_board()
    sim.halted.add(0x04)  # bulk OUT stalls
    frontend.card_insert()
    with pytest.raises(DeviceError, match="bulk OUT"):
        await asyncio.wait_for(core.task, 2)
    sim.halted.clear()
    start = time.monotonic()
    await frontend.aclose()  # still stops its reader threads
    assert time.monotonic() - start < 0.5
    assert sim.claimed == set()
