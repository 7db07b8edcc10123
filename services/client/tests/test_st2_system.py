"""The whole system with a modem on a SIMtrace2: the st2 client (the real ``Client`` core and
st2 front-end, through pyusb on the faithful firmware simulator) on remsim-server and
remsim-bankd as real processes, the bankd serving a software SIM of the virtual SIM bank:

    modem (T=0) -> simulated SIMtrace2 -> remsim-client-st2 C23:0 -> RSPRO
      -> remsim-bankd B1:0 -> pcscd -> vpcd -> remsim-vcard (card0)
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import Any, TypeVar

import pytest

from remsim_bankd.sim import CardProfile, Milenage
from remsim_bankd.sim.fs import USIM_AID
from remsim_client import Client, MainState
from remsim_client.config import ClientConfig
from remsim_client.st2.frontend import St2Frontend
from remsim_testing.client import eventually
from remsim_testing.simbank import VirtualSimBank
from remsim_testing.st2_firmware import SimulatedBackend, SimulatedDevice, SimulatedModem
from rspro import ClientSlot
from tests.system import WAIT, RemsimSystem

pytestmark = [pytest.mark.integration, pytest.mark.pcsc]

T = TypeVar("T")
RAND = bytes.fromhex("23553cbe9637a89d218ae64dae47bf35")


async def in_thread(fn: Callable[..., T], *args: Any) -> T:
    return await asyncio.to_thread(fn, *args)


@pytest.fixture
def system(virtual_sim_bank: VirtualSimBank, tmp_path: Path) -> Iterator[RemsimSystem]:
    with RemsimSystem(virtual_sim_bank, tmp_path, num_slots=1) as system:
        yield system


@pytest.fixture
async def modem(
    system: RemsimSystem, card_profiles: list[CardProfile]
) -> AsyncIterator[SimulatedModem]:
    """The modem on slot 0 of a simulated SIMtrace 2, whose st2 client C23:0 has the card of
    bank slot B1:0 (mapped over REST): its ATR is set, the modem has not reset it yet."""
    sim = SimulatedDevice("SIMtrace 2", bus=2, address=5, ports=(1, 1))
    frontend = await St2Frontend.open(backend=SimulatedBackend([sim]))
    config = ClientConfig(
        server_host="127.0.0.1", server_port=system.rspro_port, client_slot=ClientSlot(23, 0)
    )
    run = asyncio.create_task(frontend.run())
    client = Client(config, frontend)
    try:
        await client.start()
        await eventually(lambda: client.state is MainState.UNCONFIGURED, WAIT)
        await in_thread(system.map, 0, 23)
        await eventually(lambda: sim.slots[0].atr == card_profiles[0].atr, WAIT)
        modem = sim.modem()
        modem.timeout = WAIT  # the bankd resets the card on the modem's power-up first
        yield modem
    finally:
        await client.aclose()
        await frontend.aclose()
        await asyncio.wait_for(run, WAIT)


def authenticate(modem: SimulatedModem, autn: bytes) -> bytes:
    """USIM AUTHENTICATE (case 4, 34 data bytes), then GET RESPONSE."""
    sw = modem.transact(b"\x00\x88\x00\x81\x22\x10" + RAND + b"\x10" + autn)
    assert sw[0] == 0x61, sw.hex()
    rsp = modem.transact(bytes([0x00, 0xC0, 0x00, 0x00, sw[1]]))
    assert rsp[-2:] == b"\x90\x00"
    return rsp[:-2]


def session(modem: SimulatedModem, profile: CardProfile) -> None:
    """What a modem does with its SIM, over T=0 (runs on a thread, as a modem does)."""
    assert modem.cold_reset() == profile.atr
    assert modem.transact(bytes.fromhex("a0a40000023f00"))[0] == 0x9F  # GSM SELECT MF
    assert modem.transact(bytes.fromhex("a0a40000022fe2")) == b"\x9f\x0f"  # EF_ICCID
    assert modem.transact(bytes.fromhex("a0b000000a")) == profile.ef_iccid + b"\x90\x00"
    # 242 bytes of command data make a 256-byte RX_DATA, which ends on a full USB packet;
    # the card refuses the length (EF_ICCID has 10 bytes), but the answer reaches the modem.
    sw = modem.transact(bytes([0xA0, 0xD6, 0, 0, 242]) + bytes(242))
    assert len(sw) == 2 and sw != b"\x90\x00"
    sw = modem.transact(bytes([0x00, 0xA4, 0x04, 0x04, len(USIM_AID)]) + USIM_AID)
    assert sw[0] == 0x61, sw.hex()
    fcp = modem.transact(bytes([0x00, 0xC0, 0x00, 0x00, sw[1]]))
    assert fcp[0] == 0x62 and USIM_AID in fcp
    assert modem.transact(bytes.fromhex("00a4000c026f07")) == b"\x90\x00"  # EF_IMSI
    assert modem.transact(bytes.fromhex("00b0000009")) == profile.ef_imsi + b"\x90\x00"

    m = Milenage(profile.ki, profile.opc_value)
    res, ck, ik, _ = m.f2345(RAND)
    data = authenticate(modem, m.autn(RAND, 1 << 20))
    if data[0] == 0xDC:
        # An earlier test of the session moved the card's SQN on: resynchronise from AUTS.
        data = authenticate(modem, m.autn(RAND, m.sqn_ms(RAND, data[2:16]) + 32))
    assert data[:2] == b"\xdb\x08"
    assert data[2:10] == res
    assert data[10:27] == b"\x10" + ck
    assert data[27:44] == b"\x10" + ik


async def test_a_modem_on_a_simtrace2_uses_a_software_sim(
    modem: SimulatedModem, card_profiles: list[CardProfile]
) -> None:
    await in_thread(session, modem, card_profiles[0])
