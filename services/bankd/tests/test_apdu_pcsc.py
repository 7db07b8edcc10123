"""remsim's APDU mode on the real card stack (pcscd + vpcd + software SIMs, as
test_bankd_pcsc.py): an APDU-mode session opens the reader with T=0 or T=1 and gets the
protocol in its setAtrReq; a T=0 card's case-4 commands come back in one ApduCardToModem."""

from __future__ import annotations

import logging

import pytest

from remsim_bankd.bankd import Bankd, BankdConfig, bankd_identity
from remsim_bankd.card import T0
from remsim_bankd.config import parse_slots_csv
from remsim_bankd.pcsc_card import PcscCard, PcscCards
from remsim_testing.bankd import CLIENT_IDENTITY, ScriptedServer, create_mapping
from remsim_testing.rspro_peers import ScriptedConnection
from remsim_testing.simbank import VirtualSimBank
from rspro import (
    ApduCardToModem,
    ApduModemToCard,
    BankSlot,
    ClientSlot,
    ConnectClientReq,
    ConnectClientRes,
    RemsimFeatures,
    ResultCode,
    SetAtrReq,
)

pytestmark = [pytest.mark.pcsc, pytest.mark.timeout(60)]

C23, B0 = ClientSlot(23, 0), BankSlot(1, 0)
SLOTS_CSV = '"1","0","Virtual PCD 00 00"\n"1","1","Virtual PCD 00 01"\n'
ATR = bytes.fromhex("3b9f96801fc78031a073be21136743200718000001a5")  # card0


def h(text: str) -> bytes:
    return bytes.fromhex(text.replace(" ", ""))


def test_pcsc_card_reports_its_protocol_and_logs_it(
    virtual_sim_bank: VirtualSimBank, caplog: pytest.LogCaptureFixture
) -> None:
    (pattern,) = parse_slots_csv('"1","0","Virtual PCD 00 00"\n').values()
    card = PcscCard(pattern)
    for any_protocol in (False, True):
        with caplog.at_level(logging.DEBUG, logger="remsim.bankd.pcsc"):
            assert card.connect(any_protocol=any_protocol) == ATR
        try:
            assert card.protocol == T0  # card0's ATR offers T=0 only
            assert any("open with T=0" in r.getMessage() for r in caplog.records)
        finally:
            card.disconnect()
        caplog.clear()


async def test_an_apdu_mode_session_on_a_pcsc_card(
    virtual_sim_bank: VirtualSimBank, server: ScriptedServer
) -> None:
    config = BankdConfig(
        identity=bankd_identity("fixme-name", "1.0.0"),
        num_slots=2,
        server=("127.0.0.1", server.port),
        bind=("127.0.0.1", 0),
        card_retry=0.2,
        inventory="off",
    )
    async with Bankd(config, PcscCards(parse_slots_csv(SLOTS_CSV))) as bankd:
        peer = await server.bankd()
        assert await create_mapping(peer, C23, B0) is ResultCode.OK
        client = await ScriptedConnection.connect(bankd.port)
        client.send(ConnectClientReq(CLIENT_IDENTITY, C23, RemsimFeatures(apdu=True)))
        res, _ = await client.expect(ConnectClientRes)
        assert (res.result, res.features) == (ResultCode.OK, RemsimFeatures(apdu=True))
        atr, _ = await client.expect(SetAtrReq)
        assert (atr.atr, atr.protocol) == (ATR, 0)

        async def apdu(capdu: str) -> bytes:
            before = len(client.frames)
            client.send(ApduModemToCard(C23, B0, h(capdu)))
            answer, _ = await client.expect(ApduCardToModem)
            await client.expect_nothing(0.05)
            assert len(client.frames) == before + 1  # one round trip
            assert answer.result is ResultCode.OK, answer
            return answer.rapdu

        fcp = await apdu("00a40004 02 3f00 00")  # case 4 SELECT: the FCP at once
        assert fcp[0] == 0x62 and fcp[-2:] == h("9000")
        gsm = await apdu("a0a40000 02 7f20 00")  # class A0: 9Fxx fetched by the bankd
        assert len(gsm) == 0x16 + 2 and gsm[-2:] == h("9000")
        imsi = await apdu("a0a40000 02 6f07 00")
        assert imsi[-2:] == h("9000")
        assert await apdu("a0b00000 00") == h("082926000000100000 9000")  # 6Cxx: Le corrected
        await client.aclose()
