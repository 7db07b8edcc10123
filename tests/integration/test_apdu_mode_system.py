"""APDU mode, T=1 cards and extended lengths end to end, every part real (issue 17):

    RemoteCard / remsim-client-vpcd -> WireProxy -> remsim-bankd B1 -> pcscd -> vpcd
      -> remsim-vcard: B1:0 a T=1 software SIM with a 32 KiB EF, B1:1 the T=0 card1

with remsim-server holding the slotmaps (REST). The server sends clients to the wire proxy
(``--bankd-port``), which forwards to the bankd's real port and counts the RSPRO messages,
so "one round trip" is counted on the wire.
"""

from __future__ import annotations

import asyncio
import itertools
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager

import pytest

from remsim_bankd.sim import CardProfile, Milenage
from remsim_bankd.sim.fs import USIM_AID
from remsim_bankd.sim.profile import LARGE_EF_FID, T1_ATR
from remsim_client import RemoteCard
from remsim_testing.simbank import ReaderConnection, VirtualSimBank
from remsim_testing.wire_proxy import WireProxy
from rspro import MAX_APDU
from tests.system import Daemon, RemsimSystem, free_port

pytestmark = [pytest.mark.integration, pytest.mark.pcsc]

RAND = bytes.fromhex("23553cbe9637a89d218ae64dae47bf35")
LARGE_EF_SIZE = 32768
LARGE_EF = bytes(i % 251 for i in range(LARGE_EF_SIZE))
SELECT_USIM = bytes((0x00, 0xA4, 0x04, 0x04, len(USIM_AID))) + USIM_AID  # T=0 TPDU form
SELECT_MF = bytes.fromhex("00a4000c023f00")
SELECT_LARGE_EF = bytes((0x00, 0xA4, 0x00, 0x0C, 0x02)) + LARGE_EF_FID.to_bytes(2, "big")
READ_ALL_EXTENDED = bytes.fromhex("00b00000000000")  # extended Le 0000: up to 65,536 bytes
READ_32K_EXTENDED = bytes.fromhex("00b00000008000")  # extended Le 8000: 32,768 bytes
SQN = itertools.count(1 << 20, 32)  # one step up for every AUTHENTICATE of this module


@pytest.fixture(scope="module")
def t1_profile(card_profiles: list[CardProfile]) -> CardProfile:
    """card0's subscriber, on a T=1-only card with a 32 KiB transparent EF."""
    return card_profiles[0].model_copy(
        update={"protocol": "t1", "atr": T1_ATR, "large_ef": LARGE_EF_SIZE}
    )


@pytest.fixture(scope="module")
def bank(virtual_sim_bank: VirtualSimBank, t1_profile: CardProfile) -> Iterator[VirtualSimBank]:
    """Reader 00 00 holds the T=1 card for this module; reader 00 01 keeps the T=0 card1."""
    virtual_sim_bank.stop_card(0)
    virtual_sim_bank.start_card(0, profile=t1_profile)
    try:
        yield virtual_sim_bank
    finally:
        virtual_sim_bank.stop_card(0)
        virtual_sim_bank.start_card(0)


@pytest.fixture(scope="module")
def proxy() -> Iterator[WireProxy]:
    with WireProxy(("127.0.0.1", free_port())) as proxy:
        yield proxy


@pytest.fixture(scope="module")
def system(
    bank: VirtualSimBank, proxy: WireProxy, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[RemsimSystem]:
    """remsim-server sending clients to the proxy; remsim-bankd B1 (two slots) behind it."""
    system = RemsimSystem(
        bank, tmp_path_factory.mktemp("apdu-mode"), bankd_port=proxy.port, num_slots=2
    )
    try:
        system.start_server()
        system.start_bankd(["-P", str(proxy.target[1])])  # the bankd's own port
        yield system
    finally:
        system.stop()


@asynccontextmanager
async def remote_card(
    system: RemsimSystem, bank_slot: int, client_id: int, apdu_mode: str
) -> AsyncIterator[RemoteCard]:
    """A RemoteCard mapped to B1:<bank_slot> for the time of the block."""
    system.map(bank_slot=bank_slot, client_id=client_id)
    try:
        async with RemoteCard(
            "127.0.0.1", client_id, 0, port=system.rspro_port, timeout=15, apdu_mode=apdu_mode
        ) as card:
            yield card
    finally:
        await asyncio.to_thread(system.unmap, bank_slot)


def authenticate_apdu(profile: CardProfile) -> tuple[bytes, bytes]:
    """A 3G AUTHENTICATE command APDU with a fresh AUTN, and the RES it must give."""
    m = Milenage(profile.ki, profile.opc_value)
    res = m.f2345(RAND)[0]
    return b"\x00\x88\x00\x81\x22\x10" + RAND + b"\x10" + m.autn(RAND, next(SQN)), res


def round_trips(proxy: WireProxy) -> dict[str, int]:
    up = proxy.counts("up")
    return {k: v for k, v in up.items() if k in ("tpduModemToCard", "apduModemToCard")}


async def test_a_t1_card_serves_remote_card_in_apdu_mode(
    system: RemsimSystem, proxy: WireProxy, t1_profile: CardProfile
) -> None:
    async with remote_card(system, 0, 40, "on") as card:
        assert card.apdu_mode and card.protocol == 1
        assert card.atr == T1_ATR
        # SELECT EF_ICCID with Le: the FCP comes at once over T=1 (no 61xx, no GET RESPONSE)
        fcp = await card.transmit(bytes.fromhex("00a40004022fe200"))
        assert fcp[0] == 0x62 and fcp[-2:] == b"\x90\x00", fcp.hex()
        assert await card.transmit(bytes.fromhex("00b000000a")) == t1_profile.ef_iccid + b"\x90\x00"
        fcp = await card.transmit(SELECT_USIM + b"\x00")
        assert fcp[0] == 0x62 and USIM_AID in fcp and fcp[-2:] == b"\x90\x00"
        command, res = authenticate_apdu(t1_profile)
        proxy.reset()
        rsp = await card.transmit(command + b"\x00")
        assert rsp[:2] == b"\xdb\x08" and rsp[2:10] == res and rsp[-2:] == b"\x90\x00", rsp.hex()
        assert round_trips(proxy) == {"apduModemToCard": 1}


async def test_a_32k_read_binary_with_extended_le_is_one_apdu(
    system: RemsimSystem, proxy: WireProxy
) -> None:
    async with remote_card(system, 0, 41, "on") as card:
        assert await card.transmit(SELECT_MF) == b"\x90\x00"
        assert await card.transmit(SELECT_LARGE_EF) == b"\x90\x00"
        for read in (READ_32K_EXTENDED, READ_ALL_EXTENDED):
            proxy.reset()
            rsp = await card.transmit(read)
            assert len(rsp) == LARGE_EF_SIZE + 2 and rsp[-2:] == b"\x90\x00"
            assert rsp[:-2] == LARGE_EF
            assert round_trips(proxy) == {"apduModemToCard": 1}
            assert proxy.count("down", "apduCardToModem") == 1
        # UPDATE BINARY of 32 KiB with extended Lc, read back, then the contents restored
        for data in (bytes(reversed(LARGE_EF)), LARGE_EF):
            assert await card.transmit(update_binary(data)) == b"\x90\x00"
            assert (await card.transmit(READ_32K_EXTENDED))[:-2] == data


def update_binary(data: bytes) -> bytes:
    """UPDATE BINARY at offset 0 with an extended Lc."""
    assert len(data) <= MAX_APDU - 7
    return bytes.fromhex("00d60000") + b"\x00" + len(data).to_bytes(2, "big") + data


async def test_a_t0_card_answers_case_4_in_one_round_trip_in_apdu_mode(
    system: RemsimSystem, proxy: WireProxy, card_profiles: list[CardProfile]
) -> None:
    profile = card_profiles[1]
    async with remote_card(system, 1, 42, "on") as card:
        assert card.apdu_mode and card.protocol == 0
        proxy.reset()
        fcp = await card.transmit(SELECT_USIM + b"\x00")
        assert fcp[0] == 0x62 and USIM_AID in fcp and fcp[-2:] == b"\x90\x00", fcp.hex()
        assert round_trips(proxy) == {"apduModemToCard": 1}  # the bankd did the GET RESPONSE
        command, res = authenticate_apdu(profile)
        proxy.reset()
        rsp = await card.transmit(command + b"\x00")
        if rsp[:1] == b"\xdc":  # an earlier test of the session moved card1's SQN on
            m = Milenage(profile.ki, profile.opc_value)
            sqn = m.sqn_ms(RAND, rsp[2:16]) + 32
            proxy.reset()
            rsp = await card.transmit(command[:22] + b"\x10" + m.autn(RAND, sqn) + b"\x00")
        assert rsp[:2] == b"\xdb\x08" and rsp[2:10] == res, rsp.hex()
        assert round_trips(proxy) == {"apduModemToCard": 1}
    # the same SELECT in TPDU mode: the command, then GET RESPONSE after 61xx
    async with remote_card(system, 1, 43, "off") as card:
        assert not card.apdu_mode
        card.auto_get_response = True
        proxy.reset()
        assert await card.transmit(SELECT_USIM) == fcp
        assert round_trips(proxy) == {"tpduModemToCard": 2}


async def test_tpdu_mode_on_a_t1_card_works_as_over_t0(
    system: RemsimSystem, proxy: WireProxy
) -> None:
    """A TPDU is a valid short APDU: sent as is, a case-4 command without Le gets 61xx and
    the client's GET RESPONSE fetches the data, as on a T=0 card (docs: "APDU mode")."""
    async with remote_card(system, 0, 44, "off") as card:
        assert not card.apdu_mode and card.protocol is None
        assert card.atr == T1_ATR
        proxy.reset()
        sw = await card.transmit(SELECT_USIM)
        assert sw[0] == 0x61, sw.hex()
        fcp = await card.transmit(bytes((0x00, 0xC0, 0x00, 0x00, sw[1])))
        assert fcp[0] == 0x62 and fcp[-2:] == b"\x90\x00"
        assert round_trips(proxy) == {"tpduModemToCard": 2}
        assert proxy.count("down", "apduCardToModem") == 0


async def test_a_client_in_auto_mode_over_plaintext_sends_nothing_new(
    system: RemsimSystem, proxy: WireProxy
) -> None:
    """Plaintext and auto: the client cannot know the bankd is ours, so it offers nothing
    and the link is the original's (the bytes are pinned by the client's and bankd's tests)."""
    async with remote_card(system, 1, 45, "auto") as card:
        assert not card.apdu_mode
        proxy.reset()
        assert (await card.transmit(bytes.fromhex("a0a40000023f00")))[:1] == b"\x9f"
        assert set(proxy.counts("up")) <= {"tpduModemToCard", "clientSlotStatusInd", "setAtrRes"}
        assert "apduCardToModem" not in proxy.counts("down")


@pytest.fixture
def vpcd_client(system: RemsimSystem, bank: VirtualSimBank) -> Iterator[Daemon]:
    """remsim-client-vpcd C46:0 in APDU mode on reader 00 01 (card1 taken out), mapped to the
    T=1 card in B1:0."""
    bank.stop_card(1)
    system.map(bank_slot=0, client_id=46)
    client = system.start_client(
        "remsim-client-vpcd", 46,
        options=["--vpcd-port", str(bank.ports[1]), "--apdu-mode", "on"],
    )  # fmt: skip
    try:
        system.wait(lambda: bank.card_present(1), "the remote card in reader 00 01")
        yield client
    finally:
        assert client.stop() == 0
        system.unmap(0)
        bank.wait_card(1, present=False)
        bank.start_card(1)


def test_a_pcsc_application_uses_the_remote_t1_card_through_the_vpcd_client(
    vpcd_client: Daemon, bank: VirtualSimBank, proxy: WireProxy, t1_profile: CardProfile
) -> None:
    from smartcard.CardConnection import CardConnection

    card = ReaderConnection(bank.readers[1], CardConnection.T1_protocol)
    try:
        assert card.atr == T1_ATR
        assert card.protocol == CardConnection.T1_protocol
        fcp = card.tx(SELECT_USIM + b"\x00")
        assert fcp[0] == 0x62 and fcp[-2:] == b"\x90\x00", fcp.hex()
        command, res = authenticate_apdu(t1_profile)
        rsp = card.tx(command + b"\x00")
        assert rsp[:2] == b"\xdb\x08" and rsp[2:10] == res, rsp.hex()
        assert card.tx(SELECT_MF) == b"\x90\x00"
        assert card.tx(SELECT_LARGE_EF) == b"\x90\x00"
        proxy.reset()
        rsp = card.tx(READ_32K_EXTENDED)
        assert rsp == LARGE_EF + b"\x90\x00"
        assert round_trips(proxy) == {"apduModemToCard": 1}
    finally:
        card.close()
