"""The bankd over real TCP on 127.0.0.1: a scripted server and scripted clients, software SIMs.

The peers work on raw frames, so what the bankd sends is compared byte for byte with the
frames the original bankd sent in the reference recordings.
"""

from __future__ import annotations

import asyncio
import json
import socket
import threading
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import pytest

from remsim_bankd.bankd import Bankd, BankdConfig, bankd_identity
from remsim_bankd.card import Card, CardUnresponsiveError
from remsim_bankd.control import ControlLink
from remsim_bankd.drivers import StaticCards
from remsim_bankd.gsmtap import gsmtap_packet
from remsim_bankd.sim import SimCardDriver, load_profile
from remsim_testing import bankd as peers
from remsim_testing.bankd import (
    ScriptedServer,
    create_mapping,
    remove_mapping,
)
from remsim_testing.rspro_peers import ScriptedConnection, frame
from rspro import (
    BankSlot,
    ClientSlot,
    ClientSlotStatusInd,
    ConnectBankReq,
    ConnectBankRes,
    ConnectClientReq,
    ConnectClientRes,
    CreateMappingReq,
    CreateMappingRes,
    ErrorInd,
    Keepalive,
    Message,
    RemoveMappingReq,
    RemoveMappingRes,
    ResetStateReq,
    ResetStateRes,
    ResultCode,
    RsproPdu,
    SetAtrReq,
    SetAtrRes,
    SlotPhysStatus,
    TpduCardToModem,
    TpduModemToCard,
    decode,
)

PROFILES = Path(__file__).parents[1] / "profiles"
DATA = Path(__file__).parent / "data"
ATR = bytes.fromhex("3b9f96801fc78031a073be21136743200718000001a5")  # card0, the recorded card
CARD1_ATR = bytes.fromhex("3b9f96801fc78031a073be21136743200718000101a4")
RESET_ATR = bytes.fromhex("3b9f96801fc78031a073be21136743200718000201a7")  # after a cold reset
C23, C24 = ClientSlot(23, 0), ClientSlot(24, 0)
B0, B1 = BankSlot(1, 0), BankSlot(1, 1)
SERVER, CLIENT = peers.SERVER_IDENTITY, peers.CLIENT_IDENTITY
SELECT_MF = bytes.fromhex("a0a40000023f00")
PING, PONG = bytes.fromhex("0001fe00"), bytes.fromhex("0001fe01")

CONNECT_BANK_REQ = (
    "0039ee073036800102810100a22ea02c30240a0102160a6669786d652d6e616d65800c72656d73696d2d62"
    "616e6b648105312e302e30020101020102"
)
CREATE_MAPPING_REQ = "001dee07301a800102810100a212a41030060201170201003006020101020100"
CREATE_MAPPING_RES_OK = "0010ee07300d800102810100a205a5030a0100"
REMOVE_MAPPING_REQ = "001dee07301a800102810100a212a61030060201170201003006020101020100"
REMOVE_MAPPING_RES_OK = "0010ee07300d800102810100a205a7030a0100"
CONNECT_CLIENT_RES_OK = (
    "0037ee07303480010281020926a22ba32930240a0102160a6669786d652d6e616d65800c72656d73696d2d"
    "62616e6b648105312e302e300a0100"
)
SET_ATR_REQ = (
    "002dee07302a800102810100a222aa20300602011702010004163b9f96801fc78031a073be21136743200718"
    "000001a5"
)

pytestmark = pytest.mark.timeout(30)


async def connect_client(
    port: int, slot: ClientSlot = C23
) -> tuple[ScriptedConnection, list[Message]]:
    return await peers.connect_client(port, slot)


async def transceive(
    client: ScriptedConnection, data: bytes, slot: ClientSlot = C23, bank: BankSlot = B0
) -> bytes:
    return await peers.transceive(client, data, slot, bank)


def sim(name: str, *atr_cycle: bytes) -> SimCardDriver:
    """A shipped card; with ``atr_cycle``, one whose cold resets answer ATR, *atr_cycle in turn."""
    profile = load_profile(PROFILES / f"{name}.json")
    return SimCardDriver(profile.model_copy(update={"atr_cycle": atr_cycle}))


class GatedCard:
    """A software SIM whose transmit waits until the test opens the gate (a slow card)."""

    def __init__(self, card: Card) -> None:
        self.card = card
        self.gate = threading.Event()
        self.entered = threading.Event()

    @property
    def atr(self) -> bytes:
        return self.card.atr

    def connect(self) -> bytes:
        return self.card.connect()

    def transmit(self, apdu: bytes) -> bytes:
        self.entered.set()
        if not self.gate.wait(10):
            raise CardUnresponsiveError("gate never opened")
        return self.card.transmit(apdu)

    def reset(self, warm: bool = False) -> bytes:
        return self.card.reset(warm)

    def disconnect(self) -> None:
        self.card.disconnect()


@asynccontextmanager
async def running_bankd(
    server: ScriptedServer | None, cards: dict[BankSlot, Card], **kw: object
) -> AsyncIterator[Bankd]:
    config = BankdConfig(
        identity=bankd_identity("fixme-name", "1.0.0"),
        bank_id=1,
        num_slots=2,
        server=None if server is None else ("127.0.0.1", server.port),
        bind=("127.0.0.1", 0),
        card_retry=0.05,
        **kw,  # type: ignore[arg-type]
    )
    bankd = Bankd(config, StaticCards(cards))
    await bankd.start()
    try:
        yield bankd
    finally:
        await bankd.aclose()


# --- control link -------------------------------------------------------------------------------


async def test_registers_with_the_original_bytes_and_answers_map_orders(
    server: ScriptedServer,
) -> None:
    async with running_bankd(server, {B0: sim("card0")}):
        peer = await server.accept()
        _, connect = await peer.recv()
        assert peer.frames[:2] == [PING, connect]  # PING queued before the connectBankReq
        assert connect.hex() == CONNECT_BANK_REQ
        peer.send(ConnectBankRes(SERVER, ResultCode.OK))
        peer.send(bytes.fromhex(CREATE_MAPPING_REQ))
        assert (await peer.recv())[1].hex() == CREATE_MAPPING_RES_OK
        peer.send(CreateMappingReq(C23, BankSlot(1, 5)))
        assert (await peer.recv())[0] == CreateMappingRes(ResultCode.ILLEGAL_SLOT_ID)
        peer.send(CreateMappingReq(C23, BankSlot(2, 0)))
        assert (await peer.recv())[0] == CreateMappingRes(ResultCode.ILLEGAL_BANK_ID)
        peer.send(RemoveMappingReq(C24, B0))
        assert (await peer.recv())[0] == RemoveMappingRes(ResultCode.UNKNOWN_SLOTMAP)
        peer.send(bytes.fromhex(REMOVE_MAPPING_REQ))
        assert (await peer.recv())[1].hex() == REMOVE_MAPPING_RES_OK
        peer.send(ResetStateReq())
        assert (await peer.recv())[0] == ResetStateRes(ResultCode.OK)
        peer.send(frame(CreateMappingReq(C23, B0), tag=77))  # a tag is echoed
        _, echoed = await peer.recv()
        assert decode(echoed[4:]) == RsproPdu(CreateMappingRes(ResultCode.OK), tag=77)
        peer.send(ConnectClientRes(SERVER, ResultCode.OK))  # not for us: logged, link kept
        peer.send(PING)
        assert await peer.frame_at(peer.frames.index(echoed) + 1) == PONG


async def test_control_link_reconnects_and_keeps_maps_and_sessions(server: ScriptedServer) -> None:
    async with running_bankd(server, {B0: sim("card0")}) as bankd:
        peer = await server.bankd()
        assert await create_mapping(peer, C23, B0) is ResultCode.OK
        client, msgs = await connect_client(bankd.port)
        assert msgs[0] == ConnectClientRes(bankd.config.identity, ResultCode.OK)
        peer.close()  # the server goes away ...
        peer = await server.bankd()  # ... and the bankd is back at once
        assert await create_mapping(peer, C23, B0) is ResultCode.OK  # re-push: identical
        assert await transceive(client, SELECT_MF) == bytes.fromhex("9f16")  # untouched


async def test_keepalive_timeout_on_the_control_link_reconnects(server: ScriptedServer) -> None:
    fast = Keepalive(interval=0.1, timeout=0.1)
    async with running_bankd(server, {}, server_keepalive=fast):
        peer = await server.accept()
        await peer.expect(ConnectBankReq)  # answers PING, never registers ...
        peer.pong = False
        peer.send(ConnectBankRes(SERVER, ResultCode.OK))
        # ... and never answers the bankd's PINGs: the bankd gives up and comes back
        async with asyncio.timeout(3):
            again = await server.accept()
        await again.expect(ConnectBankReq)


async def test_a_request_the_bankd_fails_on_is_still_answered_in_order(
    server: ScriptedServer, caplog: pytest.LogCaptureFixture
) -> None:
    """The server pairs replies with requests by order: a handler error must not skip one."""

    def handle(msg: Message) -> Message | None:
        if msg == CreateMappingReq(C23, B1) or isinstance(msg, ResetStateReq):
            raise RuntimeError("broken")
        return CreateMappingRes(ResultCode.OK) if isinstance(msg, CreateMappingReq) else None

    control = ControlLink(handle, bankd_identity("fixme-name", "1.0.0"), 1, 2)
    control.start("127.0.0.1", server.port)
    try:
        peer = await server.bankd()
        peer.send(CreateMappingReq(C23, B1))
        peer.send(CreateMappingReq(C23, B0))
        peer.send(ResetStateReq())
        assert [(await peer.recv())[0] for _ in range(3)] == [
            CreateMappingRes(ResultCode.ILLEGAL_SLOT_ID),
            CreateMappingRes(ResultCode.OK),
            ResetStateRes(ResultCode.ILLEGAL_SLOT_ID),
        ]
        assert "handling" in caplog.text and "RuntimeError: broken" in caplog.text
    finally:
        await control.aclose()


# --- client sessions ----------------------------------------------------------------------------


async def test_map_connect_atr_and_tpdus(server: ScriptedServer) -> None:
    async with running_bankd(server, {B0: sim("card0")}) as bankd:
        peer = await server.bankd()
        assert await create_mapping(peer, C23, B0) is ResultCode.OK
        client = await ScriptedConnection.connect(bankd.port)
        client.send(ConnectClientReq(CLIENT, C23))
        assert (await client.recv())[1].hex() == CONNECT_CLIENT_RES_OK
        assert (await client.recv())[1].hex() == SET_ATR_REQ
        client.send(SetAtrRes(ResultCode.OK))
        assert await transceive(client, SELECT_MF) == bytes.fromhex("9f16")
        received = len(client.frames)
        client.send(PING)
        assert await client.frame_at(received) == PONG


async def test_replay_of_the_recorded_session(server: ScriptedServer) -> None:
    """Scenario s1: every frame the clients sent, answered as the original bankd answered.

    The card is not the recorded one: a twin of each software SIM, fed the same commands,
    tells what the card says; the frames around it must be the recorded ones, byte for byte.
    """
    frames = json.loads((DATA / "s1_client_bankd.json").read_text())["frames"]
    twins = {"client C23:0": sim("card0"), "client C24:0": sim("card1")}
    differing_cards = differing_atrs = 0
    async with running_bankd(server, {B0: sim("card0"), B1: sim("card1")}) as bankd:
        peer = await server.bankd()
        assert await create_mapping(peer, C23, B0) is ResultCode.OK
        assert await create_mapping(peer, C24, B1) is ResultCode.OK
        clients: dict[str, ScriptedConnection] = {}
        answer = b""
        for f in frames:
            who, raw = f["peer"], bytes.fromhex(f["frame"])
            if f["seq"] == 93:  # the map was deleted and re-created in between
                clients.pop(who).close()
            if f["dir"] == "to_bankd":
                if who not in clients:
                    clients[who] = await ScriptedConnection.connect(bankd.port)
                    twins[who].connect()
                clients[who].send(raw)
                msg = decode(raw[4:]).msg
                if isinstance(msg, TpduModemToCard):
                    answer = twins[who].transmit(msg.data)
                elif isinstance(msg, ClientSlotStatusInd):  # RESET: we send the new ATR
                    assert (await clients[who].recv())[1].hex() == SET_ATR_REQ
                    twins[who].reset()
            else:
                got = (await clients[who].recv())[1]
                recorded = decode(raw[4:]).msg
                if isinstance(recorded, TpduCardToModem) and recorded.data != answer:
                    differing_cards += 1
                    raw = frame(
                        TpduCardToModem(recorded.from_bank_slot, recorded.to_client_slot, answer)
                    )
                elif isinstance(recorded, SetAtrReq) and recorded.atr != twins[who].atr:
                    differing_atrs += 1
                    raw = frame(SetAtrReq(recorded.slot, twins[who].atr))
                assert got.hex() == raw.hex(), f["seq"]
    # only the software SIM's DF details (SELECT MF/DF GSM) and UPDATE BINARY support differ
    assert differing_cards == 3
    # and card1's ATR: the recorded cards had the same one, ours differ (card0 is the recorded)
    assert differing_atrs == 1


async def test_unmapped_client_waits_and_gets_the_atr_when_mapped(server: ScriptedServer) -> None:
    async with running_bankd(server, {B0: sim("card0")}) as bankd:
        peer = await server.bankd()
        client, msgs = await connect_client(bankd.port)
        assert msgs == [ConnectClientRes(bankd.config.identity, ResultCode.CARD_NOT_PRESENT)]
        assert await create_mapping(peer, C23, B0) is ResultCode.OK
        assert (await client.recv())[0] == SetAtrReq(C23, ATR)
        assert await transceive(client, SELECT_MF) == bytes.fromhex("9f16")


async def test_reset_gives_the_new_atr(server: ScriptedServer) -> None:
    card = sim("card0", RESET_ATR)  # its ATR changes on every cold reset
    async with running_bankd(server, {B0: card}) as bankd:
        peer = await server.bankd()
        await create_mapping(peer, C23, B0)
        client, msgs = await connect_client(bankd.port)
        assert msgs[1] == SetAtrReq(C23, ATR)
        assert await transceive(client, bytes.fromhex("a0a40000027f20")) == bytes.fromhex("9f16")
        reset = SlotPhysStatus(True, vcc_present=False, clk_active=False, card_present=True)
        for new_atr in (RESET_ATR, ATR):  # every RESET of the shell client resets the card
            client.send(ClientSlotStatusInd(C23, B0, reset))
            assert (await client.recv())[0] == SetAtrReq(C23, new_atr)
            # the reset card is back at the MF: SELECT EF_ICCID (only under the MF) works
            assert await transceive(client, bytes.fromhex("a0a40000022fe2")) == bytes.fromhex(
                "9f0f"
            )


async def test_card_removed_mid_session_and_back(server: ScriptedServer) -> None:
    card = sim("card0")
    async with running_bankd(server, {B0: card}) as bankd:
        peer = await server.bankd()
        await create_mapping(peer, C23, B0)
        client, _ = await connect_client(bankd.port)
        card.remove()
        client.send(TpduModemToCard(C23, B0, SELECT_MF))
        (ind,) = await client.closed_by_peer()
        assert isinstance(ind, ErrorInd) and (ind.bank_slot, ind.client_slot) == (B0, C23)
        assert ind.error_string is not None and "no card" in ind.error_string
        # the client comes back while the card is out: told so, connection kept
        client, msgs = await connect_client(bankd.port)
        assert msgs == [ConnectClientRes(bankd.config.identity, ResultCode.CARD_NOT_PRESENT)]
        card.insert()
        assert (await client.recv())[0] == SetAtrReq(C23, ATR)  # retried until the card is back
        assert await transceive(client, SELECT_MF) == bytes.fromhex("9f16")


class MuteCard(GatedCard):
    """A software SIM that stops answering (``mute``): card calls time out."""

    mute = False

    def connect(self) -> bytes:
        if self.mute:
            raise CardUnresponsiveError("no ATR")
        return self.card.connect()

    def transmit(self, apdu: bytes) -> bytes:
        if self.mute:
            raise CardUnresponsiveError("no answer within the timeout")
        return self.card.transmit(apdu)


async def test_unresponsive_card(server: ScriptedServer) -> None:
    card = MuteCard(sim("card0"))
    async with running_bankd(server, {B0: card}) as bankd:
        peer = await server.bankd()
        await create_mapping(peer, C23, B0)
        client, _ = await connect_client(bankd.port)
        card.mute = True
        client.send(TpduModemToCard(C23, B0, SELECT_MF))
        (ind,) = await client.closed_by_peer()
        assert isinstance(ind, ErrorInd) and ind.error_string is not None
        assert "no answer within the timeout" in ind.error_string
        client, msgs = await connect_client(bankd.port)
        assert msgs == [ConnectClientRes(bankd.config.identity, ResultCode.CARD_UNRESPONSIVE)]
        card.mute = False
        assert (await client.recv())[0] == SetAtrReq(C23, ATR)


async def test_removing_the_map_disconnects_the_client_and_powers_the_card_down(
    server: ScriptedServer,
) -> None:
    card = sim("card0")
    async with running_bankd(server, {B0: card}) as bankd:
        peer = await server.bankd()
        await create_mapping(peer, C23, B0)
        client, _ = await connect_client(bankd.port)
        assert card.atr == ATR
        assert await remove_mapping(peer, C23, B0) is ResultCode.OK
        assert await client.closed_by_peer() == []  # a clean close, nothing else
        async with asyncio.timeout(3):
            while card.atr:  # powered down by the connection's thread right after
                await asyncio.sleep(0.01)


async def test_remap_to_the_other_card(server: ScriptedServer) -> None:
    async with running_bankd(server, {B0: sim("card0"), B1: sim("card1")}) as bankd:
        peer = await server.bankd()
        await create_mapping(peer, C23, B0)
        client, _ = await connect_client(bankd.port)
        read_iccid = [bytes.fromhex("a0a40000022fe2"), bytes.fromhex("a0b000000a")]
        for apdu in read_iccid:
            res = await transceive(client, apdu)
        assert res.hex() == "989420000000000000009000"
        assert await create_mapping(peer, C23, B1) is ResultCode.OK  # the server moves C23:0
        assert await client.closed_by_peer() == []
        client, msgs = await connect_client(bankd.port)
        assert msgs[1] == SetAtrReq(C23, CARD1_ATR)
        for apdu in read_iccid:
            res = await transceive(client, apdu, bank=B1)
        assert res.hex() == "989420000000000000019000"


async def test_frames_split_into_single_bytes(server: ScriptedServer) -> None:
    async with running_bankd(server, {B0: sim("card0")}) as bankd:
        peer = await server.bankd()
        await create_mapping(peer, C23, B0)
        client = await ScriptedConnection.connect(bankd.port)

        async def send_bytewise(data: bytes) -> None:
            for i in range(len(data)):
                client.send(data[i : i + 1])
                await client.writer.drain()
                await asyncio.sleep(0)

        await send_bytewise(frame(ConnectClientReq(CLIENT, C23)))
        assert [(await client.recv())[0] for _ in range(2)] == [
            ConnectClientRes(bankd.config.identity, ResultCode.OK),
            SetAtrReq(C23, ATR),
        ]
        await send_bytewise(frame(TpduModemToCard(C23, B0, SELECT_MF)))
        assert (await client.recv())[0] == TpduCardToModem(B0, C23, bytes.fromhex("9f16"))
        # and several frames in one segment
        client.send(frame(TpduModemToCard(C23, B0, SELECT_MF)) * 3)
        assert [(await client.recv())[0] for _ in range(3)] == [
            TpduCardToModem(B0, C23, bytes.fromhex("9f16"))
        ] * 3


async def test_a_slow_card_delays_neither_other_slots_nor_the_control_link(
    server: ScriptedServer,
) -> None:
    slow = GatedCard(sim("card0"))
    async with running_bankd(server, {B0: slow, B1: sim("card1")}) as bankd:
        peer = await server.bankd()
        await create_mapping(peer, C23, B0)
        await create_mapping(peer, C24, B1)
        client0, _ = await connect_client(bankd.port, C23)
        client1, _ = await connect_client(bankd.port, C24)
        client0.send(TpduModemToCard(C23, B0, SELECT_MF))
        await asyncio.get_running_loop().run_in_executor(None, slow.entered.wait, 3)
        # slot 0 is stuck in its card call; slot 1 and the control link carry on
        assert await transceive(client1, SELECT_MF, C24, B1) == bytes.fromhex("9f16")
        assert await remove_mapping(peer, C24, B1) is ResultCode.OK
        slow.gate.set()
        assert (await client0.recv())[0] == TpduCardToModem(B0, C23, bytes.fromhex("9f16"))


async def test_a_client_vanishing_mid_response_harms_nobody(server: ScriptedServer) -> None:
    slow = GatedCard(sim("card0"))
    async with running_bankd(server, {B0: slow, B1: sim("card1")}) as bankd:
        peer = await server.bankd()
        await create_mapping(peer, C23, B0)
        await create_mapping(peer, C24, B1)
        client0, _ = await connect_client(bankd.port, C23)
        client1, _ = await connect_client(bankd.port, C24)
        client0.send(TpduModemToCard(C23, B0, SELECT_MF))
        await asyncio.get_running_loop().run_in_executor(None, slow.entered.wait, 3)
        client0.abort()  # RST while the card is answering
        await asyncio.sleep(0.05)
        slow.gate.set()
        await asyncio.sleep(0.05)
        assert await transceive(client1, SELECT_MF, C24, B1) == bytes.fromhex("9f16")
        client0, msgs = await connect_client(bankd.port, C23)  # the slot is free again
        assert msgs[1] == SetAtrReq(C23, ATR)
        assert await transceive(client0, SELECT_MF) == bytes.fromhex("9f16")


async def test_a_client_back_after_its_host_died_gets_its_card_at_once(
    server: ScriptedServer,
) -> None:
    """The client host died without a FIN (no RST either): the old connection looks alive
    until TCP gives up. The same client slot connecting again: the old connection does
    not answer the PING that checks it, is dropped, and the newcomer gets the card."""
    card = sim("card0", RESET_ATR)
    async with running_bankd(server, {B0: card}) as bankd:
        peer = await server.bankd()
        await create_mapping(peer, C23, B0)
        dead, msgs = await connect_client(bankd.port)  # never closed by this test
        assert msgs[1] == SetAtrReq(C23, ATR)
        assert await transceive(dead, bytes.fromhex("a0a40000027f20")) == bytes.fromhex("9f16")
        dead.pong = False  # its host is gone
        client, msgs = await connect_client(bankd.port)
        # the card was released and opened again for the new connection: a fresh power-up
        assert msgs == [ConnectClientRes(bankd.config.identity, ResultCode.OK),
                        SetAtrReq(C23, RESET_ATR)]  # fmt: skip
        assert await transceive(client, bytes.fromhex("a0a40000022fe2")) == bytes.fromhex("9f0f")
        (ind,) = await dead.closed_by_peer()  # what the old one gets, should anyone read it
        assert isinstance(ind, ErrorInd) and (ind.bank_slot, ind.client_slot) == (B0, C23)
        assert ind.error_string == (
            "no PONG within 1s while another connection claims its client slot"
        )


async def test_protocol_errors_close_only_that_client(server: ScriptedServer) -> None:
    async with running_bankd(server, {B0: sim("card0"), B1: sim("card1")}) as bankd:
        peer = await server.bankd()
        await create_mapping(peer, C23, B0)
        await create_mapping(peer, C24, B1)
        client1, _ = await connect_client(bankd.port, C24)
        client0, _ = await connect_client(bankd.port, C23)
        client0.send(TpduModemToCard(C23, B1, SELECT_MF))  # not its bank slot
        (ind,) = await client0.closed_by_peer()
        assert isinstance(ind, ErrorInd) and ind.error_string == "TPDU for C23:0 -> B1:1"
        garbage = await ScriptedConnection.connect(bankd.port)
        garbage.send(bytes.fromhex("0003ee07ffff"))  # not a PDU
        assert await garbage.closed_by_peer() == []
        assert await transceive(client1, SELECT_MF, C24, B1) == bytes.fromhex("9f16")


async def test_bankd_restart_while_the_server_keeps_the_map(server: ScriptedServer) -> None:
    cards: dict[BankSlot, Card] = {B0: sim("card0")}
    async with running_bankd(server, cards) as bankd:
        peer = await server.bankd()
        await create_mapping(peer, C23, B0)
        port = bankd.port
        client, _ = await connect_client(port)
        assert await transceive(client, SELECT_MF) == bytes.fromhex("9f16")
    assert await client.closed_by_peer() == []  # the bankd went away
    config = BankdConfig(
        identity=bankd_identity("fixme-name", "1.0.0"),
        num_slots=2,
        server=("127.0.0.1", server.port),
        bind=("127.0.0.1", port),
    )
    async with Bankd(config, StaticCards(cards)) as bankd:
        client, msgs = await connect_client(port)  # the client is faster than the server
        assert msgs == [ConnectClientRes(bankd.config.identity, ResultCode.CARD_NOT_PRESENT)]
        peer = await server.bankd()  # the server pushes the map it kept
        assert await create_mapping(peer, C23, B0) is ResultCode.OK
        assert (await client.recv())[0] == SetAtrReq(C23, ATR)
        assert await transceive(client, SELECT_MF) == bytes.fromhex("9f16")


# --- GSMTAP -----------------------------------------------------------------------------------


async def test_gsmtap_traces_atr_and_apdus(server: ScriptedServer) -> None:
    rx = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    rx.bind(("127.0.0.1", 0))
    rx.settimeout(2)
    try:
        gsmtap = {"gsmtap_host": "127.0.0.1", "gsmtap_port": rx.getsockname()[1], "gsmtap_slot": 0}
        async with running_bankd(server, {B0: sim("card0"), B1: sim("card1")}, **gsmtap) as bankd:
            peer = await server.bankd()
            await create_mapping(peer, C24, B1)  # slot 1 is not traced
            client1, _ = await connect_client(bankd.port, C24)
            await transceive(client1, SELECT_MF, C24, B1)
            await create_mapping(peer, C23, B0)
            client0, _ = await connect_client(bankd.port, C23)
            await transceive(client0, SELECT_MF)
            loop = asyncio.get_running_loop()
            atr_packet = await loop.run_in_executor(None, rx.recv, 2048)
            apdu_packet = await loop.run_in_executor(None, rx.recv, 2048)
    finally:
        rx.close()
    assert atr_packet == bytes.fromhex("02040400000000000000000001000000") + ATR
    assert apdu_packet == gsmtap_packet(0, SELECT_MF + bytes.fromhex("9f16"))
