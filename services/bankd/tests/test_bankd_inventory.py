"""The card inventory: identifying unmapped cards (ATR, EF_ICCID, EF_IMSI), the core's rules
for when (never a mapped card), and the report to a server of ours only."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import pytest

from remsim_bankd.bankd import Bankd, BankdConfig, bankd_identity
from remsim_bankd.card import Card, CardUnresponsiveError
from remsim_bankd.core import (
    BankdCore,
    IdentifyCard,
    OpenCard,
    ReleaseCard,
    ReportCards,
)
from remsim_bankd.drivers import StaticCards
from remsim_bankd.inventory import decode_bcd, decode_iccid, decode_imsi, identify
from remsim_bankd.sim import SimCardDriver, load_profile
from remsim_testing import bankd as peers
from remsim_testing.bankd import ScriptedServer, create_mapping, remove_mapping
from remsim_testing.rspro_peers import ScriptedConnection
from rspro import (
    BankSlot,
    CardInfo,
    CardInventoryInd,
    CardState,
    ClientSlot,
    ConnectBankReq,
    ConnectBankRes,
    ConnectClientReq,
    CreateMappingReq,
    CreateMappingRes,
    RemoveMappingReq,
    RemoveMappingRes,
    ResultCode,
)

PROFILES = Path(__file__).parents[1] / "profiles"
C23 = ClientSlot(23, 0)
B0, B1 = BankSlot(1, 0), BankSlot(1, 1)
IDENTITY = bankd_identity("fixme-name", "1.0.0")
ATR0 = bytes.fromhex("3b9f96801fc78031a073be21136743200718000001a5")
ICCID0, IMSI0 = "89490200000000000000", "262000000010000"  # card0.json
ICCID1, IMSI1 = "89490200000000000010", "262000000010010"  # card1.json
ICCID2 = "89490200000000000029"
CARD0 = CardInfo(0, CardState.PRESENT, ATR0, ICCID0, IMSI0)
EMPTY1 = CardInfo(1, CardState.EMPTY)

pytestmark = pytest.mark.timeout(30)


def sim(name: str, **profile: object) -> SimCardDriver:
    return SimCardDriver(load_profile(PROFILES / f"{name}.json").model_copy(update=profile))


# --- decoding (TS 102 221 §13.2, TS 31.102 §4.2.2) --------------------------------------------


def test_bcd_is_read_low_nibble_first_and_the_f_padding_is_dropped() -> None:
    assert decode_bcd(bytes.fromhex("98942000000000000001")) == ICCID1
    assert decode_iccid(bytes.fromhex("989420000000000000f1")) == "8949020000000000001"  # 19
    assert decode_iccid(b"\xff" * 10) is None  # unprogrammed


def test_imsi_skips_its_length_byte_and_parity_nibble() -> None:
    assert decode_imsi(bytes.fromhex("082926000000100000")) == IMSI0  # 15 digits: parity 9
    assert decode_imsi(bytes.fromhex("0821430000001000f0")) == "23400000001000"  # 14: parity 1
    assert decode_imsi(bytes.fromhex("ffffffffffffffffff")) is None
    assert decode_imsi(bytes.fromhex("00ffffffffffffffff")) is None


# --- identify: the software SIMs answer as SIMs and UICCs do -----------------------------------


class UiccOnly:
    """A card that refuses the SIM class byte A0 (6E00), as a UICC without GSM support;
    with ``hide_df_gsm`` it has no DF_GSM either (EF_IMSI only in the USIM application)."""

    def __init__(self, card: Card, *, hide_df_gsm: bool = False) -> None:
        self.card = card
        self.hide_df_gsm = hide_df_gsm
        self.apdus: list[bytes] = []

    @property
    def atr(self) -> bytes:
        return self.card.atr

    def connect(self) -> bytes:
        return self.card.connect()

    def transmit(self, apdu: bytes) -> bytes:
        self.apdus.append(apdu)
        if apdu[0] == 0xA0:
            return b"\x6e\x00"
        if self.hide_df_gsm and apdu[1] == 0xA4 and apdu[5:7] == b"\x7f\x20":
            return b"\x6a\x82"
        return self.card.transmit(apdu)

    def reset(self, warm: bool = False) -> bytes:
        return self.card.reset(warm)

    def disconnect(self) -> None:
        self.card.disconnect()


class MuteCard:
    """A card with an ATR that never answers a command."""

    atr = ATR0

    def connect(self) -> bytes:
        return ATR0

    def transmit(self, apdu: bytes) -> bytes:
        raise CardUnresponsiveError("no procedure byte")

    def reset(self, warm: bool = False) -> bytes:
        return ATR0

    def disconnect(self) -> None:
        pass


def test_a_sim_gives_its_atr_iccid_and_imsi_in_class_a0() -> None:
    card = sim("card0")
    assert identify(card, 0) == CARD0
    assert card.atr == b""  # powered down again


def test_a_uicc_is_read_in_class_00() -> None:
    card = UiccOnly(sim("card1"))
    assert identify(card, 1) == CardInfo(1, CardState.PRESENT, card.card.sim.atr, ICCID1, IMSI1)
    assert {apdu[0] for apdu in card.apdus} == {0xA0, 0x00}  # A0 refused once, then 00


def test_a_uicc_without_df_gsm_gives_the_imsi_of_its_usim() -> None:
    card = UiccOnly(sim("card0"), hide_df_gsm=True)
    assert identify(card, 0) == CARD0
    assert any(apdu[:4] == bytes.fromhex("00a40404") for apdu in card.apdus)  # the USIM AID


@pytest.mark.parametrize("wrap", [lambda c: c, UiccOnly], ids=["sim", "uicc"])
def test_an_imsi_behind_a_pin_is_unknown_not_an_error(wrap: type[UiccOnly]) -> None:
    card = wrap(sim("card0", pin1_enabled=True))
    assert identify(card, 0) == CardInfo(0, CardState.PRESENT, ATR0, ICCID0, None)


def test_an_empty_slot_and_a_mute_card() -> None:
    card = sim("card0")
    card.remove()
    assert identify(card, 0) == CardInfo(0, CardState.EMPTY)
    assert identify(MuteCard(), 1) == CardInfo(1, CardState.UNRESPONSIVE)


# --- the core: which card is identified when ----------------------------------------------------


def inventory_core() -> BankdCore:
    return BankdCore(1, 2, IDENTITY, card_retry=10.0, inventory=True, inventory_poll=5.0)


def test_without_the_inventory_no_card_is_touched() -> None:
    core = BankdCore(1, 2, IDENTITY)
    assert core.start_inventory(0.0) == []
    assert core.next_deadline() is None


def test_every_free_card_is_identified_at_the_start_and_the_news_reported() -> None:
    core = inventory_core()
    assert core.start_inventory(0.0) == [IdentifyCard(B0), IdentifyCard(B1)]
    assert core.card_identified(CARD0) == [ReportCards((CARD0,))]
    assert core.card_identified(EMPTY1) == [ReportCards((CARD0, EMPTY1))]
    assert core.card_identified(EMPTY1) == []  # nothing new: nothing to report


def test_a_mapped_card_is_never_identified() -> None:
    core = inventory_core()
    assert core.create_mapping(C23, B0)[0] is ResultCode.OK
    assert core.start_inventory(0.0) == [IdentifyCard(B1)]
    core.card_identified(EMPTY1)
    assert core.handle_timeout(5.0) == [IdentifyCard(B1)]  # polls skip B0 too


def test_a_session_waits_for_an_identification_under_way() -> None:
    core = inventory_core()
    core.start_inventory(0.0)
    core.create_mapping(C23, B0)
    sid = core.session_opened()
    actions = core.receive(sid, ConnectClientReq(peers.CLIENT_IDENTITY, C23))
    assert not [a for a in actions if isinstance(a, OpenCard)]  # B0 is being identified
    assert core.card_identified(CARD0) == [ReportCards((CARD0,)), OpenCard(sid, B0)]


def test_a_card_is_identified_again_once_its_map_is_gone_and_its_session_released_it() -> None:
    core = inventory_core()
    core.start_inventory(0.0)
    core.card_identified(CARD0)
    core.create_mapping(C23, B0)
    sid = core.session_opened()
    core.receive(sid, ConnectClientReq(peers.CLIENT_IDENTITY, C23))
    core.card_opened(sid, ATR0)
    _, actions = core.remove_mapping(C23, B0)
    assert ReleaseCard(sid, B0) in actions and not [
        a for a in actions if isinstance(a, IdentifyCard)
    ]  # the session's card is released first
    assert core.card_released(B0) == [IdentifyCard(B0)]


def test_an_unmapped_idle_card_is_identified_at_once_when_its_map_goes() -> None:
    core = inventory_core()
    core.create_mapping(C23, B0)
    core.start_inventory(0.0)
    assert core.remove_mapping(C23, B0)[1] == [IdentifyCard(B0)]


def test_every_unmapped_slot_is_polled() -> None:
    core = inventory_core()
    core.start_inventory(0.0)
    core.card_identified(CARD0)
    core.card_identified(EMPTY1)
    assert core.next_deadline() == 5.0
    assert core.handle_timeout(5.0) == [IdentifyCard(B0), IdentifyCard(B1)]
    core.card_identified(CARD0)
    assert core.handle_timeout(7.0) == []  # B1 is still being identified; next poll at 10
    assert core.next_deadline() == 10.0


def test_a_card_found_in_another_slot_left_its_old_one() -> None:
    core = inventory_core()
    core.start_inventory(0.0)
    core.card_identified(CARD0)
    moved = CardInfo(1, CardState.PRESENT, ATR0, ICCID0, IMSI0)  # found in B1 now
    assert core.card_identified(moved) == [ReportCards((moved,)), IdentifyCard(B0)]
    empty0 = CardInfo(0, CardState.EMPTY)
    assert core.card_identified(empty0) == [ReportCards((empty0, moved))]


# --- the running bankd: the report goes to a server of ours only ----------------------------------


class SwappableCard:
    """A slot whose card the test can exchange for another (the operator swapped it)."""

    def __init__(self, card: Card) -> None:
        self.card = card

    @property
    def atr(self) -> bytes:
        return self.card.atr

    def connect(self) -> bytes:
        return self.card.connect()

    def transmit(self, apdu: bytes) -> bytes:
        return self.card.transmit(apdu)

    def reset(self, warm: bool = False) -> bytes:
        return self.card.reset(warm)

    def disconnect(self) -> None:
        self.card.disconnect()


@asynccontextmanager
async def running_bankd(
    server: ScriptedServer, cards: dict[BankSlot, Card], **kw: object
) -> AsyncIterator[Bankd]:
    config = BankdConfig(
        identity=IDENTITY,
        num_slots=2,
        server=("127.0.0.1", server.port),
        bind=("127.0.0.1", 0),
        card_retry=0.05,
        **kw,  # type: ignore[arg-type]
    )
    async with Bankd(config, StaticCards(cards)) as bankd:
        yield bankd


async def inventory(peer: ScriptedConnection) -> tuple[CardInfo, ...]:
    msg, _ = await peer.expect(CardInventoryInd)
    assert msg.bank_id == 1
    return msg.cards


async def test_the_inventory_reaches_the_server_at_every_connect(server: ScriptedServer) -> None:
    async with running_bankd(server, {B0: sim("card0")}, inventory="on"):
        peer = await server.bankd()
        cards = await inventory(peer)
        while len(cards) < 2:  # at the connect, B1 may not be identified yet
            cards = await inventory(peer)
        assert cards == (CARD0, EMPTY1)  # B1: no card configured
        peer.close()
        again = await server.bankd()
        assert await inventory(again) == (CARD0, EMPTY1)


async def test_an_inserted_card_is_found_and_a_swapped_one_once_its_map_is_gone(
    server: ScriptedServer,
) -> None:
    slot0, slot1 = SwappableCard(sim("card0")), sim("card1")
    slot1.remove()
    cards: dict[BankSlot, Card] = {B0: slot0, B1: slot1}
    async with running_bankd(server, cards, inventory="on", inventory_poll=0.05) as bankd:
        peer = await server.bankd()
        while await inventory(peer) != (CARD0, EMPTY1):
            pass
        slot1.insert()
        card1 = CardInfo(1, CardState.PRESENT, slot1.sim.atr, ICCID1, IMSI1)
        assert await inventory(peer) == (CARD0, card1)
        assert await create_mapping(peer, C23, B0) is ResultCode.OK
        client, _ = await peers.connect_client(bankd.port, C23)
        slot0.card = sim("card1", iccid=ICCID2)  # swapped while mapped: the bankd does not look
        await peer.expect_nothing(0.2)
        assert await remove_mapping(peer, C23, B0) is ResultCode.OK
        await client.closed_by_peer()
        [swapped, _] = await inventory(peer)
        assert (swapped.slot_nr, swapped.iccid) == (0, ICCID2)


@pytest.mark.parametrize("inventory_mode", ["auto", "off"])
async def test_a_plaintext_server_gets_nothing_new_unless_told_to(
    server: ScriptedServer, inventory_mode: str
) -> None:
    """The original server speaks no TLS and knows no cardInventoryInd: over plaintext the
    bankd sends exactly the original's PDUs (by default)."""
    card = sim("card0")
    async with running_bankd(server, {B0: card}, inventory=inventory_mode) as bankd:
        peer = await server.accept()
        msg, _ = await peer.recv()
        assert isinstance(msg, ConnectBankReq)
        peer.send(ConnectBankRes(peers.SERVER_IDENTITY, ResultCode.OK))
        await peer.expect_nothing(0.3)
        assert card.atr == b""  # never even powered up
        peer.send(CreateMappingReq(C23, B0))  # expect: any other message fails the test
        assert (await peer.expect(CreateMappingRes))[0].result is ResultCode.OK
        client, _ = await peers.connect_client(bankd.port, C23)
        peer.send(RemoveMappingReq(C23, B0))
        assert (await peer.expect(RemoveMappingRes))[0].result is ResultCode.OK
        await client.closed_by_peer()
        await peer.expect_nothing(0.3)


async def test_reports_wait_for_the_link(server: ScriptedServer) -> None:
    async with running_bankd(server, {B0: sim("card0")}, inventory="on") as bankd:
        assert bankd.control is not None
        async with asyncio.timeout(10):
            while bankd.control.inventory is None or len(bankd.control.inventory.cards) < 2:
                await asyncio.sleep(0.01)
        peer = await server.bankd()
        assert await inventory(peer) == (CARD0, EMPTY1)
