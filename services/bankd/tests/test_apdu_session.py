"""remsim's APDU mode in the bankd, over TCP with raw RSPRO (docs/architecture.md, "APDU
mode"): a client of ours offers it in its connectClientReq, the bankd accepts it (unless
``apdu_mode`` is off), and each ApduModemToCard is answered with exactly one
ApduCardToModem, the T=0 card's GET RESPONSEs done by the bankd. A client that offers
nothing (the original) gets the original's bytes, and TPDUs work in either mode."""

from __future__ import annotations

import asyncio
import logging
import socket
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import pytest

from remsim_bankd import metrics
from remsim_bankd.bankd import Bankd, BankdConfig, bankd_identity
from remsim_bankd.card import T1, Card
from remsim_bankd.config import parse_args
from remsim_bankd.drivers import StaticCards
from remsim_bankd.gsmtap import gsmtap_packet
from remsim_bankd.sim import LARGE_EF_FID, SimCardDriver, load_profile
from remsim_bankd.sim.fs import large_ef_content
from remsim_bankd.sim.profile import T1_ATR
from remsim_testing.bankd import CLIENT_IDENTITY, ScriptedServer, create_mapping
from remsim_testing.rspro_peers import ScriptedConnection
from rspro import (
    MAX_APDU,
    ApduCardToModem,
    ApduModemToCard,
    BankSlot,
    ClientSlot,
    ClientSlotStatusInd,
    ConnectClientReq,
    ConnectClientRes,
    ErrorInd,
    Message,
    RemsimFeatures,
    ResultCode,
    RsproPdu,
    SetAtrReq,
    SlotPhysStatus,
    TpduCardToModem,
    TpduModemToCard,
    encode,
)
from rspro.ipa import MAX_FRAME, rspro_frame

PROFILES = Path(__file__).parents[1] / "profiles"
C23, B0 = ClientSlot(23, 0), BankSlot(1, 0)
ATR = bytes.fromhex("3b9f96801fc78031a073be21136743200718000001a5")  # card0
OFFER = RemsimFeatures(apdu=True)
# The original bankd's frames (reference/upstream-1.0.0), as in test_bankd_core.py.
CONNECT_CLIENT_RES_OK = bytes.fromhex(
    "0037ee07303480010281020926a22ba32930240a0102160a6669786d652d6e616d65800c72656d73696d2d"
    "62616e6b648105312e302e300a0100"
)
SET_ATR_REQ = bytes.fromhex(
    "002dee07302a800102810100a222aa20300602011702010004163b9f96801fc78031a073be21136743200718"
    "000001a5"
)
SELECT_MF_FCP = bytes.fromhex("00a4000402 3f00 00")  # case 4: SELECT MF, FCP wanted
SELECT_MF_GSM = bytes.fromhex("a0a4000002 3f00 00")  # case 4, class A0: answered 9Fxx
SELECT_MF_TPDU = bytes.fromhex("00a4000402 3f00")  # the same as a T=0 TPDU (Le dropped)

pytestmark = pytest.mark.timeout(30)


def h(text: str) -> bytes:
    return bytes.fromhex(text.replace(" ", ""))


class RecordingSim(SimCardDriver):
    """card0, noting every TPDU it is given."""

    def __init__(self) -> None:
        super().__init__(load_profile(PROFILES / "card0.json"))
        self.tpdus: list[bytes] = []

    def transmit(self, apdu: bytes) -> bytes:
        self.tpdus.append(apdu)
        return super().transmit(apdu)


class T1Card:
    """A T=1 card: answers every C-APDU with ``answer`` (default: its reverse and 9000)."""

    atr = bytes.fromhex("3b80800101")  # T=1 only
    protocol = T1

    def __init__(self, answer: bytes | None = None) -> None:
        self.answer = answer
        self.apdus: list[bytes] = []
        self.opened_with: list[bool] = []

    def connect(self, *, any_protocol: bool = False) -> bytes:
        self.opened_with.append(any_protocol)
        return self.atr

    def transmit(self, apdu: bytes) -> bytes:
        self.apdus.append(apdu)
        return apdu[::-1] + h("9000") if self.answer is None else self.answer

    def reset(self, warm: bool = False) -> bytes:
        return self.atr

    def disconnect(self) -> None:
        pass


@asynccontextmanager
async def bankd_with(server: ScriptedServer, card: Card, **kw: object) -> AsyncIterator[Bankd]:
    """A bankd whose B1:0 holds ``card``, mapped to C23:0 by the server."""
    config = BankdConfig(
        identity=bankd_identity("fixme-name", "1.0.0"),
        bank_id=1,
        num_slots=1,
        server=("127.0.0.1", server.port),
        bind=("127.0.0.1", 0),
        inventory="off",
        **kw,  # type: ignore[arg-type]
    )
    async with Bankd(config, StaticCards({B0: card})) as bankd:
        peer = await server.bankd()
        assert await create_mapping(peer, C23, B0) is ResultCode.OK
        yield bankd


async def connect(
    port: int, features: RemsimFeatures | None = OFFER
) -> tuple[ScriptedConnection, tuple[ConnectClientRes, bytes], tuple[SetAtrReq, bytes]]:
    """Connect as C23:0 offering ``features``; the connectClientRes and the setAtrReq."""
    client = await ScriptedConnection.connect(port)
    client.send(ConnectClientReq(CLIENT_IDENTITY, C23, features))
    res = await client.expect(ConnectClientRes)
    assert res[0].result is ResultCode.OK
    return client, res, await client.expect(SetAtrReq)


def big_frame(msg: Message) -> bytes:
    """The frame of ``msg`` when it is larger than the original's limit (APDU mode)."""
    return rspro_frame(encode(RsproPdu(msg)), MAX_FRAME)


async def apdu(client: ScriptedConnection, capdu: bytes) -> ApduCardToModem:
    """One APDU exchange: exactly one frame comes back, an ApduCardToModem."""
    before = len(client.frames)
    client.send(big_frame(ApduModemToCard(C23, B0, capdu)))
    res, _ = await client.expect(ApduCardToModem)
    assert (res.from_bank_slot, res.to_client_slot) == (B0, C23)
    await client.expect_nothing(0.1)
    assert len(client.frames) == before + 1, client.frames[before:]
    return res


async def tpdu(client: ScriptedConnection, data: bytes) -> bytes:
    client.send(TpduModemToCard(C23, B0, data))
    res, _ = await client.expect(TpduCardToModem)
    return res.data


# --- negotiation ------------------------------------------------------------------------------


async def test_an_offer_is_accepted_and_the_atr_says_the_protocol(server: ScriptedServer) -> None:
    async with bankd_with(server, RecordingSim()) as bankd:
        client, (res, _), (atr, _) = await connect(bankd.port)
        assert res.features == RemsimFeatures(apdu=True)
        assert (atr.atr, atr.protocol) == (ATR, 0)  # card0 is a T=0 card
        await client.aclose()


async def test_without_an_offer_the_bytes_are_the_originals(server: ScriptedServer) -> None:
    async with bankd_with(server, RecordingSim()) as bankd:
        client, (res, raw_res), (atr, raw_atr) = await connect(bankd.port, features=None)
        assert (raw_res, raw_atr) == (CONNECT_CLIENT_RES_OK, SET_ATR_REQ)
        assert res.features is None and atr.protocol is None
        # TPDU mode: the modem does T=0's GET RESPONSE itself
        sw = await tpdu(client, SELECT_MF_TPDU)
        assert sw[0] == 0x61
        assert (await tpdu(client, h("00c00000") + sw[1:]))[-2:] == h("9000")
        await client.aclose()


async def test_apdu_mode_off_ignores_the_offer(server: ScriptedServer) -> None:
    async with bankd_with(server, RecordingSim(), apdu_mode="off") as bankd:
        client, (res, raw_res), (_, raw_atr) = await connect(bankd.port)
        assert (raw_res, raw_atr) == (CONNECT_CLIENT_RES_OK, SET_ATR_REQ)
        assert res.features is None
        client.send(ApduModemToCard(C23, B0, SELECT_MF_FCP))
        assert [type(m) for m in await client.closed_by_peer()] == [ErrorInd]


def test_the_apdu_mode_option() -> None:
    assert parse_args(["-i", "srv"]).apdu_mode == "auto"
    settings = parse_args(["-i", "srv", "--apdu-mode", "off"])
    assert BankdConfig.from_settings(settings).apdu_mode == "off"
    with pytest.raises(SystemExit):
        parse_args(["-i", "srv", "--apdu-mode", "on"])


def test_the_apdu_mode_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("REMSIM_BANKD_APDU_MODE", "off")
    assert parse_args(["-i", "srv"]).apdu_mode == "off"


# --- APDUs on a T=0 card ------------------------------------------------------------------------


async def test_a_case_4_select_on_t0_is_one_apdu_round_trip(server: ScriptedServer) -> None:
    card = RecordingSim()
    async with bankd_with(server, card) as bankd:
        client, _, _ = await connect(bankd.port)
        # TPDU mode first, in the same session: two round trips, as the modem does them
        sw = await tpdu(client, SELECT_MF_TPDU)
        assert sw[0] == 0x61
        fcp = await tpdu(client, h("00c00000") + sw[1:])
        card.tpdus.clear()
        # APDU mode: one ApduModemToCard, one ApduCardToModem; the bankd fetched the FCP
        res = await apdu(client, SELECT_MF_FCP)
        assert (res.result, res.rapdu, res.error) == (ResultCode.OK, fcp, None)
        assert card.tpdus == [SELECT_MF_TPDU, h("00c00000") + sw[1:]]
        # class A0 (GSM 11.11): 9Fxx, GET RESPONSE in class A0
        res = await apdu(client, SELECT_MF_GSM)
        assert res.result is ResultCode.OK and res.rapdu[-2:] == h("9000")
        assert card.tpdus[2][:5] == h("a0a4000002") and card.tpdus[3][:4] == h("a0c00000")
        # and TPDUs still work after APDUs (the fast path too)
        for _ in range(2):
            assert (await tpdu(client, h("a0a40000023f00")))[0] == 0x9F
        await client.aclose()


async def test_case_1_2_3_on_t0(server: ScriptedServer) -> None:
    card = RecordingSim()
    async with bankd_with(server, card) as bankd:
        client, _, _ = await connect(bankd.port)
        res = await apdu(client, h("00a40004 02 3f00"))  # case 3: its 61xx as it is
        assert res.rapdu[0] == 0x61 and card.tpdus[-1] == h("00a40004 02 3f00")
        res = await apdu(client, h("00c00000") + res.rapdu[1:])  # case 2: the FCP
        assert res.rapdu[0] == 0x62 and res.rapdu[-2:] == h("9000")
        res = await apdu(client, h("00a40000 02 2fe2 00"))  # EF_ICCID, case 4
        res = await apdu(client, h("00b00000 00"))  # case 2, Le 00: as much as there is
        assert len(res.rapdu) == 10 + 2 and res.rapdu[-2:] == h("9000")
        assert card.tpdus[-1] == h("00b0000000")
        res = await apdu(client, h("00b00000 04"))
        assert len(res.rapdu) == 4 + 2
        await client.aclose()


async def test_extended_or_malformed_apdus_on_t0_are_answered_6700_and_the_session_goes_on(
    server: ScriptedServer,
) -> None:
    card = RecordingSim()
    async with bankd_with(server, card) as bankd:
        client, _, _ = await connect(bankd.port)
        res = await apdu(client, h("00b00000 00 0000"))
        assert (res.result, res.rapdu) == (ResultCode.OK, h("6700"))
        assert res.error is not None and "extended lengths need a T=1 card" in res.error
        res = await apdu(client, h("00a40004 05 3f00"))
        assert (res.result, res.rapdu) == (ResultCode.OK, h("6700"))
        assert res.error is not None and "malformed C-APDU" in res.error
        assert card.tpdus == []  # the card saw none of them
        assert (await apdu(client, SELECT_MF_FCP)).rapdu[-2:] == h("9000")
        await client.aclose()


def roundtrips() -> float:
    """Round trips observed so far (``remsim_tpdu_roundtrip_seconds_count``)."""
    (family,) = metrics.TPDU_ROUNDTRIP.collect()
    return next(s.value for s in family.samples if s.name.endswith("_count"))


async def test_an_apdu_counts_as_one_tpdu_each_way(server: ScriptedServer) -> None:
    to_card, to_modem = metrics.TO_CARD._value.get(), metrics.TO_MODEM._value.get()
    observed = roundtrips()
    async with bankd_with(server, RecordingSim()) as bankd:
        client, _, _ = await connect(bankd.port)
        await apdu(client, SELECT_MF_FCP)  # two TPDUs to the card, one APDU
        await apdu(client, h("00b00000 00 0000"))  # answered by the bankd: not counted
        assert bankd.core.tpdus.counts == [1]  # card activity
        await client.aclose()
    assert metrics.TO_CARD._value.get() - to_card == 1
    assert metrics.TO_MODEM._value.get() - to_modem == 1
    assert roundtrips() - observed == 1  # the whole exchange, GET RESPONSE included


async def test_gsmtap_traces_each_tpdu_of_an_apdu(server: ScriptedServer) -> None:
    rx = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    rx.bind(("127.0.0.1", 0))
    rx.settimeout(2)
    try:
        gsmtap = {"gsmtap_host": "127.0.0.1", "gsmtap_port": rx.getsockname()[1]}
        async with bankd_with(server, RecordingSim(), **gsmtap) as bankd:
            client, _, _ = await connect(bankd.port)
            res = await apdu(client, SELECT_MF_FCP)
            loop = asyncio.get_running_loop()
            packets = [await loop.run_in_executor(None, rx.recv, 2048) for _ in range(3)]
            await client.aclose()
    finally:
        rx.close()
    sw = bytes((0x61, len(res.rapdu) - 2))
    assert packets[0] == gsmtap_packet(1, ATR)
    assert packets[1] == gsmtap_packet(0, SELECT_MF_TPDU + sw)
    assert packets[2] == gsmtap_packet(0, h("00c00000") + sw[1:] + res.rapdu)


# --- T=1 cards, large APDUs -------------------------------------------------------------------


async def test_a_t1_card_gets_the_apdus_as_they_are_extended_and_large(
    server: ScriptedServer,
) -> None:
    card = T1Card()
    async with bankd_with(server, card) as bankd:
        client, _, (atr, _) = await connect(bankd.port)
        assert (atr.atr, atr.protocol) == (T1Card.atr, 1)
        assert card.opened_with == [True]  # T=0 or T=1, the card's choice
        for capdu in (SELECT_MF_FCP, h("00b00000 00 0000"), h("00d60000 00 9c40") + bytes(40000)):
            res = await apdu(client, capdu)
            assert (res.result, res.rapdu) == (ResultCode.OK, capdu[::-1] + h("9000"))
        assert card.apdus[-1] == h("00d60000 00 9c40") + bytes(40000)
        await client.aclose()


async def test_a_32k_read_binary_with_extended_le_on_a_t1_software_sim(
    server: ScriptedServer,
) -> None:
    profile = load_profile(PROFILES / "card0.json").model_copy(
        update={"protocol": "t1", "atr": T1_ATR, "large_ef": 32768}
    )
    async with bankd_with(server, SimCardDriver(profile)) as bankd:
        client, _, (atr, _) = await connect(bankd.port)
        assert (atr.atr, atr.protocol) == (T1_ATR, 1)
        select = bytes((0x00, 0xA4, 0x00, 0x0C, 0x02)) + LARGE_EF_FID.to_bytes(2, "big")
        assert (await apdu(client, select)).rapdu == h("9000")
        res = await apdu(client, h("00b00000 00 0000"))  # extended Le 0000: all of it
        assert (res.result, res.rapdu) == (ResultCode.OK, large_ef_content(32768) + h("9000"))
        await client.aclose()


async def test_after_a_reset_the_atr_says_the_protocol_again(server: ScriptedServer) -> None:
    async with bankd_with(server, T1Card()) as bankd:
        client, _, _ = await connect(bankd.port)
        reset = SlotPhysStatus(True, vcc_present=False, clk_active=False, card_present=True)
        client.send(ClientSlotStatusInd(C23, B0, reset))
        atr, _ = await client.expect(SetAtrReq)
        assert (atr.atr, atr.protocol) == (T1Card.atr, 1)
        await client.aclose()


async def test_a_t1_card_in_tpdu_mode_gets_the_tpdus_as_they_are(server: ScriptedServer) -> None:
    card = T1Card()
    async with bankd_with(server, card) as bankd:
        client, _, (atr, _) = await connect(bankd.port, features=None)
        assert atr.protocol is None and card.opened_with == [False]
        assert await tpdu(client, SELECT_MF_TPDU) == SELECT_MF_TPDU[::-1] + h("9000")
        await client.aclose()


async def test_an_r_apdu_larger_than_a_frame_is_a_transmission_error(
    server: ScriptedServer,
) -> None:
    card = T1Card(answer=bytes(MAX_APDU - 1) + h("9000"))
    async with bankd_with(server, card) as bankd:
        client, _, _ = await connect(bankd.port)
        res = await apdu(client, h("00b00000 00 0000"))
        assert (res.result, res.rapdu, res.error) == (
            ResultCode.CARD_TRANSMISSION_ERROR,
            b"",
            f"R-APDU of {MAX_APDU + 1} bytes from the card is larger than the {MAX_APDU} "
            "bytes one RSPRO frame carries",
        )
        card.answer = bytes(MAX_APDU - 2) + h("9000")  # the largest that fits: one frame
        res = await apdu(client, h("00b00000 00 0000"))
        assert (res.result, len(res.rapdu)) == (ResultCode.OK, MAX_APDU)
        await client.aclose()


# --- errors -----------------------------------------------------------------------------------


async def test_a_card_pulled_is_the_apdus_result_then_the_session_ends(
    server: ScriptedServer,
) -> None:
    card = RecordingSim()
    async with bankd_with(server, card) as bankd:
        client, _, _ = await connect(bankd.port)
        card.remove()
        client.send(ApduModemToCard(C23, B0, SELECT_MF_FCP))
        res, _ = await client.expect(ApduCardToModem)
        assert (res.result, res.rapdu, res.error) == (
            ResultCode.CARD_NOT_PRESENT,
            b"",
            "no card in the slot",
        )
        assert [type(m) for m in await client.closed_by_peer()] == [ErrorInd]


async def test_an_apdu_in_a_tpdu_mode_session_closes_it_with_one_log_line(
    server: ScriptedServer, caplog: pytest.LogCaptureFixture
) -> None:
    card = RecordingSim()
    async with bankd_with(server, card) as bankd:
        client, _, _ = await connect(bankd.port, features=None)
        caplog.clear()
        with caplog.at_level(logging.INFO, logger="remsim"):
            client.send(ApduModemToCard(C23, B0, SELECT_MF_FCP))
            msgs = await client.closed_by_peer()
            await asyncio.sleep(0.1)  # the connection's thread finishes
        assert [type(m) for m in msgs] == [ErrorInd]
        assert card.tpdus == []
        lines = [r for r in caplog.records if r.levelno >= logging.INFO]
        (line,) = lines  # (the session's state in it is the one when it is formatted)
        assert line.getMessage().endswith("closing: apduModemToCard in a session in TPDU mode")
        assert not any(r.exc_info for r in caplog.records)
