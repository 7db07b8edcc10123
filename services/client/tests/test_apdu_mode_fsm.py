"""CLIENT_MAIN in remsim's APDU mode, sans-IO (issue 17, docs/architecture.md "APDU mode").

A bankd link that came up in APDU mode takes whole C-APDUs from the modem (apduModemToCard,
short or extended) and answers each with the R-APDU or the card's failure; in TPDU mode the
FSM does exactly what it did before (no new action, no new message).
"""

from __future__ import annotations

import ipaddress
import logging

import pytest

from remsim_client.config import atr_protocols, is_extended_apdu
from remsim_client.main_fsm import (
    CardError,
    CardInsert,
    CardRemove,
    CardToModem,
    ClientFsm,
    MainState,
    SendToBankd,
    SetApduMode,
    SetAtr,
    SimLocal,
    SimRemote,
)
from rspro import (
    MAX_APDU,
    MIN_APDU,
    ApduCardToModem,
    ApduModemToCard,
    BankSlot,
    ClientSlot,
    ConfigClientBankReq,
    IpPort,
    ResultCode,
    SetAtrReq,
    SetAtrRes,
    TpduCardToModem,
    TpduModemToCard,
)

C23 = ClientSlot(23, 0)
B1_5 = BankSlot(1, 5)
CARD_ATR = bytes.fromhex("3b9f96801fc78031a073be21136743200718000001a5")
SELECT_USIM = bytes.fromhex("00a4040407a0000000871002") + b"\x00"  # case 4, Le = 00
READ_32K = bytes.fromhex("00b00000000000")  # case 2E: READ BINARY, extended Le = 65536


def wait_bankd() -> ClientFsm:
    fsm = ClientFsm(C23)
    fsm.server_connected()
    fsm.server_message(ConfigClientBankReq(B1_5, IpPort(ipaddress.ip_address("10.0.0.2"), 9999)))
    return fsm


def operational(apdu_mode: bool) -> ClientFsm:
    fsm = wait_bankd()
    fsm.bankd_connected(apdu_mode=apdu_mode)
    return fsm


class TestEnteringAndLeaving:
    def test_an_apdu_mode_link_tells_the_front_end_before_the_card_shows(self) -> None:
        fsm = wait_bankd()
        actions = fsm.bankd_connected(apdu_mode=True)
        assert fsm.state is MainState.OPERATIONAL and fsm.apdu_mode
        assert actions[0] == SetApduMode(True)
        assert actions.index(SetApduMode(True)) < actions.index(CardInsert())

    def test_leaving_takes_it_back_after_the_card_went(self) -> None:
        fsm = operational(apdu_mode=True)
        actions = fsm.bankd_lost()
        assert actions[-1] == SetApduMode(False)
        assert actions.index(CardRemove()) < actions.index(SetApduMode(False))
        assert not fsm.apdu_mode

    def test_tpdu_mode_has_the_actions_of_before(self) -> None:
        fsm = wait_bankd()
        entering = fsm.bankd_connected()
        leaving = fsm.bankd_lost()
        assert not any(isinstance(a, SetApduMode) for a in entering + leaving)
        assert entering[:1] == [SimRemote()] and SimLocal() in leaving

    def test_a_reconnect_in_tpdu_mode_ends_the_apdu_mode(self) -> None:
        fsm = operational(apdu_mode=True)
        fsm.bankd_lost()
        fsm.bankd_connected(apdu_mode=False)
        assert not fsm.apdu_mode
        assert fsm.modem_apdu(SELECT_USIM) == []


class TestApdus:
    def test_a_whole_apdu_becomes_one_apdu_modem_to_card(self) -> None:
        fsm = operational(apdu_mode=True)
        assert fsm.modem_apdu(SELECT_USIM) == [SendToBankd(ApduModemToCard(C23, B1_5, SELECT_USIM))]

    @pytest.mark.parametrize("size", [MIN_APDU, 261, 4096, MAX_APDU])
    def test_any_length_that_fits_a_frame(self, size: int) -> None:
        capdu = bytes([0x00, 0xD6, 0, 0, 0]) + bytes(size - 5) if size > 4 else bytes(4)
        (action,) = operational(apdu_mode=True).modem_apdu(capdu)
        assert isinstance(action, SendToBankd) and action.msg == ApduModemToCard(C23, B1_5, capdu)

    @pytest.mark.parametrize("size", [0, MIN_APDU - 1, MAX_APDU + 1])
    def test_other_lengths_are_dropped(self, size: int, caplog: pytest.LogCaptureFixture) -> None:
        assert operational(apdu_mode=True).modem_apdu(bytes(size)) == []
        assert f"illegal APDU length {size}" in caplog.text

    def test_not_in_tpdu_mode(self, caplog: pytest.LogCaptureFixture) -> None:
        assert operational(apdu_mode=False).modem_apdu(SELECT_USIM) == []
        assert "TPDU mode" in caplog.text

    def test_not_without_a_card(self) -> None:
        assert wait_bankd().modem_apdu(SELECT_USIM) == []

    def test_tpdus_still_work_in_apdu_mode(self) -> None:
        fsm = operational(apdu_mode=True)
        tpdu = bytes.fromhex("a0a40000023f00")
        assert fsm.modem_tpdu(tpdu) == [SendToBankd(TpduModemToCard(C23, B1_5, tpdu))]
        rsp = TpduCardToModem(B1_5, C23, bytes.fromhex("9f16"))
        assert fsm.bankd_message(rsp) == [CardToModem(bytes.fromhex("9f16"))]


class TestAnswers:
    def test_the_r_apdu_goes_to_the_modem(self) -> None:
        rapdu = bytes(32768) + b"\x90\x00"
        msg = ApduCardToModem(B1_5, C23, ResultCode.OK, rapdu)
        assert operational(apdu_mode=True).bankd_message(msg) == [CardToModem(rapdu)]

    @pytest.mark.parametrize(
        "result",
        [
            ResultCode.CARD_NOT_PRESENT,
            ResultCode.CARD_UNRESPONSIVE,
            ResultCode.CARD_TRANSMISSION_ERROR,
        ],
    )
    def test_a_card_failure_is_an_error_with_the_bankd_text(
        self, result: ResultCode, caplog: pytest.LogCaptureFixture
    ) -> None:
        msg = ApduCardToModem(B1_5, C23, result, b"", "card mute after 3 s")
        with caplog.at_level(logging.WARNING):
            actions = operational(apdu_mode=True).bankd_message(msg)
        assert actions == [CardError(result, "card mute after 3 s")]
        assert f"{result.name}: card mute after 3 s" in caplog.text

    def test_an_apdu_answer_on_a_tpdu_link_is_dropped(
        self, caplog: pytest.LogCaptureFixture
    ) -> None:
        msg = ApduCardToModem(B1_5, C23, ResultCode.OK, b"\x90\x00")
        assert operational(apdu_mode=False).bankd_message(msg) == []
        assert "TPDU mode" in caplog.text

    def test_the_card_protocol_comes_with_its_atr(self) -> None:
        fsm = operational(apdu_mode=True)
        assert fsm.card_protocol is None
        actions = fsm.bankd_message(SetAtrReq(C23, CARD_ATR, protocol=1))
        assert actions == [SetAtr(CARD_ATR), SendToBankd(SetAtrRes(ResultCode.OK))]
        assert fsm.card_protocol == 1
        fsm.bankd_lost()
        fsm.bankd_connected()
        assert fsm.card_protocol is None  # a new link: unknown until its setAtrReq


class TestHelpers:
    @pytest.mark.parametrize(
        ("apdu", "extended"),
        [
            (bytes.fromhex("00b00000"), False),  # case 1
            (bytes.fromhex("00b0000000"), False),  # case 2S, Le = 256
            (bytes.fromhex("00a40000023f00"), False),  # case 3S
            (SELECT_USIM, False),  # case 4S
            (READ_32K, True),  # case 2E
            (bytes.fromhex("00d60000000003") + bytes(3), True),  # case 3E
            (bytes.fromhex("00d60000000003") + bytes(3) + b"\x00\x00", True),  # case 4E
        ],
    )
    def test_extended_apdus_are_told_apart(self, apdu: bytes, extended: bool) -> None:
        assert is_extended_apdu(apdu) is extended

    @pytest.mark.parametrize(
        ("atr", "protocols"),
        [
            ("3b00", {0}),  # no TD1: T=0 alone
            ("3b9f96801fc78031a073be21136743200718000001a5", {0}),  # TD1 T=0, TD2 T=15
            ("3b8080018101", {0, 1}),
            ("3b901801", {1}),  # TA1 TD1: T=1 only
            ("3b9f", {0}),  # truncated: what it names
        ],
    )
    def test_the_protocols_an_atr_offers(self, atr: str, protocols: set[int]) -> None:
        assert atr_protocols(bytes.fromhex(atr)) == protocols
