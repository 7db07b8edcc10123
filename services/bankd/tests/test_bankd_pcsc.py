"""The bankd on the real card stack: pcscd + vpcd with two virtual readers holding software SIMs.

``virtual_sim_bank`` (tests/fixtures/pcsc.py) runs pcscd and one remsim-vcard per card;
the bankd opens "Virtual PCD 00 00" (card0) and "Virtual PCD 00 01" (card1) by the slot
file's patterns. A scripted server maps the slots; scripted clients talk RSPRO.
"""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import sys
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager, contextmanager
from pathlib import Path

import pytest
from smartcard import scard

from remsim_bankd.bankd import Bankd, BankdConfig, bankd_identity
from remsim_bankd.config import parse_slots_csv
from remsim_bankd.pcsc_card import PcscCards
from remsim_bankd.sim import CardProfile, Milenage
from remsim_testing.bankd import (
    ScriptedServer,
    connect_client,
    create_mapping,
    transceive,
)
from remsim_testing.rspro_peers import ScriptedConnection
from remsim_testing.simbank import VirtualSimBank
from rspro import (
    BankSlot,
    ClientSlot,
    ClientSlotStatusInd,
    ConnectClientRes,
    ErrorInd,
    ResultCode,
    SetAtrReq,
    SlotPhysStatus,
    TpduModemToCard,
)

pytestmark = [pytest.mark.pcsc, pytest.mark.timeout(60)]

ATR = bytes.fromhex("3b9f96801fc78031a073be21136743200718000001a5")  # card0, the recorded card
CARD1_ATR = bytes.fromhex("3b9f96801fc78031a073be21136743200718000101a4")
RESET_ATR = bytes.fromhex("3b9f96801fc78031a073be21136743200718000201a7")
C23 = ClientSlot(23, 0)
B0, B1 = BankSlot(1, 0), BankSlot(1, 1)
SLOTS_CSV = '"1","0","Virtual PCD 00 00"\n"1","1","Virtual PCD 00 01"\n'

# 3GPP TS 35.208 test set 1 (card0's Ki and OPc) and its GSM conversion (TS 55.205).
RAND = bytes.fromhex("23553cbe9637a89d218ae64dae47bf35")
RES = bytes.fromhex("a54211d5e3ba50bf")
CK = bytes.fromhex("b40ba9a3c58b2a05bbf0d987b21bf8cb")
IK = bytes.fromhex("f769bcd751044604127672711c6d3441")
SRES, KC = bytes.fromhex("46f8416a"), bytes.fromhex("eae4be823af9a08b")


def h(text: str) -> bytes:
    return bytes.fromhex(text.replace(" ", ""))


@asynccontextmanager
async def bankd_on(server: ScriptedServer, shared: bool = False) -> AsyncIterator[Bankd]:
    config = BankdConfig(
        identity=bankd_identity("fixme-name", "1.0.0"),
        num_slots=2,
        server=("127.0.0.1", server.port),
        bind=("127.0.0.1", 0),
        card_retry=0.2,
    )
    async with Bankd(config, PcscCards(parse_slots_csv(SLOTS_CSV), shared=shared)) as bankd:
        yield bankd


async def session(
    bankd: Bankd, server: ScriptedServer
) -> tuple[ScriptedConnection, ScriptedConnection]:
    """Register the bankd, map C23:0 to B1:0, connect the client: (control peer, client)."""
    peer = await server.bankd()
    assert await create_mapping(peer, C23, B0) is ResultCode.OK
    client, msgs = await connect_client(bankd.port, C23)
    assert msgs == [ConnectClientRes(bankd.config.identity, ResultCode.OK), SetAtrReq(C23, ATR)]
    return peer, client


async def test_select_read_imsi_and_authenticate(
    virtual_sim_bank: VirtualSimBank, server: ScriptedServer
) -> None:
    async with bankd_on(server) as bankd:
        _, client = await session(bankd, server)

        async def apdu(text: str) -> str:
            return (await transceive(client, h(text), C23, B0)).hex()

        # GSM: SELECT answers 9Fxx, the data comes with GET RESPONSE; a wrong Le gives 6Cxx
        assert await apdu("a0a40000023f00") == "9f16"
        assert await apdu("a0a40000027f20") == "9f16"
        assert await apdu("a0a40000026f07") == "9f0f"
        assert await apdu("a0b000000a") == "6c09"
        assert await apdu("a0b0000009") == "082926000000100000" + "9000"  # EF_IMSI
        assert await apdu("a088000010" + RAND.hex()) == "9f0c"  # RUN GSM ALGORITHM
        assert await apdu("a0c000000c") == (SRES + KC).hex() + "9000"
        # UICC: SELECT answers 61xx; AUTHENTICATE in the 3G context
        assert (await apdu("00a40004023f00")).startswith("61")
        sqn, amf = (1).to_bytes(6, "big"), b"\x80\x00"
        mil = Milenage(h("465b5ce8b199b49faa5f0a2ee238a6bc"), h("cd63cb71954a9f4e48a5994e37a02baf"))
        mac_a, _ = mil.f1(RAND, sqn, amf)
        ak = mil.f2345(RAND)[3]
        autn = bytes(a ^ b for a, b in zip(sqn, ak, strict=True)) + amf + mac_a
        assert await apdu("0088008122" + "10" + RAND.hex() + "10" + autn.hex()) == "6135"
        expected = b"\xdb\x08" + RES + b"\x10" + CK + b"\x10" + IK + b"\x08" + KC
        assert await apdu("00c0000035") == expected.hex() + "9000"


@contextmanager
def card_in_reader_0(bank: VirtualSimBank, profile: CardProfile) -> Iterator[None]:
    """Another card in "Virtual PCD 00 00" for a while; card0 goes back in afterwards."""
    bank.stop_card(0)
    try:
        bank.start_card(0, profile=profile)
        yield
    finally:
        # not from a helper thread: the card process would die with that thread
        bank.stop_card(0)
        bank.start_card(0)


async def test_reset_sends_the_new_atr(
    virtual_sim_bank: VirtualSimBank, server: ScriptedServer, card_profiles: list[CardProfile]
) -> None:
    # card0 whose ATR changes on every cold reset (power-up): ATR, RESET_ATR, ATR, ...
    changing = card_profiles[0].model_copy(update={"atr_cycle": (RESET_ATR,)})
    with card_in_reader_0(virtual_sim_bank, changing):
        async with bankd_on(server) as bankd:
            peer = await server.bankd()
            assert await create_mapping(peer, C23, B0) is ResultCode.OK
            client, msgs = await connect_client(bankd.port, C23)
            assert msgs[0] == ConnectClientRes(bankd.config.identity, ResultCode.OK)
            assert isinstance(msgs[1], SetAtrReq)
            # pcscd powers the card up and down on its own, so either ATR may come first
            atrs = [msgs[1].atr]
            assert await transceive(client, h("a0a40000027f20"), C23, B0) == h("9f16")
            reset = SlotPhysStatus(True, vcc_present=False, clk_active=False, card_present=True)
            for _ in range(2):
                client.send(ClientSlotStatusInd(C23, B0, reset))
                msg = (await client.recv())[0]
                assert isinstance(msg, SetAtrReq) and msg.slot == C23
                atrs.append(msg.atr)
            assert atrs in ([ATR, RESET_ATR, ATR], [RESET_ATR, ATR, RESET_ATR])
            # after the power cycle the card is back at the MF: EF_ICCID is found from there
            assert await transceive(client, h("a0a40000022fe2"), C23, B0) == h("9f0f")


async def test_card_removed_mid_session_and_back(
    virtual_sim_bank: VirtualSimBank, server: ScriptedServer
) -> None:
    async with bankd_on(server) as bankd:
        _, client = await session(bankd, server)
        try:
            await asyncio.to_thread(virtual_sim_bank.stop_card, 0)
            client.send(TpduModemToCard(C23, B0, h("a0a40000023f00")))
            (ind,) = await client.closed_by_peer()
            assert isinstance(ind, ErrorInd) and (ind.bank_slot, ind.client_slot) == (B0, C23)
            client, msgs = await connect_client(bankd.port, C23)
            assert msgs == [ConnectClientRes(bankd.config.identity, ResultCode.CARD_NOT_PRESENT)]
        finally:
            # not from a helper thread: the card process would die with that thread
            virtual_sim_bank.start_card(0)
        assert (await client.recv(timeout=5))[0] == SetAtrReq(C23, ATR)
        assert await transceive(client, h("a0a40000023f00"), C23, B0) == h("9f16")


async def test_remap_to_the_other_card(
    virtual_sim_bank: VirtualSimBank, server: ScriptedServer
) -> None:
    read_iccid = [h("a0a40000022fe2"), h("a0b000000a")]
    async with bankd_on(server) as bankd:
        peer, client = await session(bankd, server)
        for apdu in read_iccid:
            iccid = await transceive(client, apdu, C23, B0)
        assert iccid == h("98942000000000000000 9000")
        assert await create_mapping(peer, C23, B1) is ResultCode.OK
        assert await client.closed_by_peer() == []
        client, msgs = await connect_client(bankd.port, C23)
        assert msgs[1] == SetAtrReq(C23, CARD1_ATR)  # the other card: its ATR
        for apdu in read_iccid:
            iccid = await transceive(client, apdu, C23, B1)
        assert iccid == h("98942000000000000001 9000")


async def test_exclusive_unless_shared(
    virtual_sim_bank: VirtualSimBank, server: ScriptedServer
) -> None:
    hr, ctx = scard.SCardEstablishContext(scard.SCARD_SCOPE_USER)
    assert hr == scard.SCARD_S_SUCCESS
    reader = virtual_sim_bank.readers[0]

    def direct_connect() -> int:
        shared, t0 = scard.SCARD_SHARE_SHARED, scard.SCARD_PROTOCOL_T0
        hr, card, _ = scard.SCardConnect(ctx, reader, shared, t0)
        if hr == scard.SCARD_S_SUCCESS:
            scard.SCardDisconnect(card, scard.SCARD_LEAVE_CARD)
        return int(hr)

    try:
        async with bankd_on(server) as bankd:
            await session(bankd, server)
            assert direct_connect() == scard.SCARD_E_SHARING_VIOLATION
        async with ScriptedServer() as server2, bankd_on(server2, shared=True) as bankd:
            await session(bankd, server2)
            assert direct_connect() == scard.SCARD_S_SUCCESS
    finally:
        scard.SCardReleaseContext(ctx)


async def test_bankd_process_restart_while_the_server_keeps_the_map(
    virtual_sim_bank: VirtualSimBank, server: ScriptedServer, tmp_path: Path
) -> None:
    """remsim-bankd as its own process, with its slot file; killed and started again."""
    (tmp_path / "bankd_pcsc_slots.csv").write_text(SLOTS_CSV)
    port = free_port()
    argv = [sys.executable, "-m", "remsim_bankd.main", "-i", "127.0.0.1", "-p", str(server.port),
            "-n", "2", "-I", "127.0.0.1", "-P", str(port), "--card-retry", "0.2"]  # fmt: skip

    async def start_bankd() -> asyncio.subprocess.Process:
        return await asyncio.create_subprocess_exec(*argv, cwd=tmp_path, env=dict(os.environ))

    bankd = await start_bankd()
    try:
        peer = await server.bankd(timeout=10)
        assert await create_mapping(peer, C23, B0) is ResultCode.OK
        client, msgs = await connect_client(port, C23)
        assert msgs[1] == SetAtrReq(C23, ATR)
        bankd.send_signal(signal.SIGTERM)
        assert await bankd.wait() == 0
        assert await client.closed_by_peer() == []
        bankd = await start_bankd()
        peer = await server.bankd(timeout=10)  # the server pushes the map it kept
        assert await create_mapping(peer, C23, B0) is ResultCode.OK
        client, msgs = await connect_client(port, C23)
        assert msgs[1] == SetAtrReq(C23, ATR)
        assert await transceive(client, h("a0a40000023f00"), C23, B0) == h("9f16")
    finally:
        if bankd.returncode is None:
            bankd.terminate()
            await bankd.wait()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])
