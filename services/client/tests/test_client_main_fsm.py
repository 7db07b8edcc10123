"""CLIENT_MAIN, sans-IO: client.md §6 / procedures.md §3.4, event by event."""

from __future__ import annotations

import ipaddress
import logging
from collections.abc import Callable

import pytest

from remsim_client.frontend import POWER_OFF, POWER_ON
from remsim_client.main_fsm import (
    BankSlotStatus,
    CardInsert,
    CardRemove,
    CardToModem,
    Cause,
    ClientFsm,
    ConnectBankd,
    DisconnectBankd,
    MainState,
    ModemReset,
    RunScript,
    SendToBankd,
    SendToServer,
    SetAtr,
    SimLocal,
    SimRemote,
)
from rspro import (
    BankSlot,
    BankSlotStatusInd,
    ClientSlot,
    ClientSlotStatusInd,
    ComponentType,
    ConfigClientBankReq,
    ConfigClientBankRes,
    ConfigClientIdReq,
    ConfigClientIdRes,
    ErrorCode,
    ErrorInd,
    ErrorSeverity,
    IpPort,
    ResetStateReq,
    ResultCode,
    RsproPdu,
    SetAtrReq,
    SetAtrRes,
    SlotPhysStatus,
    TpduCardToModem,
    TpduModemToCard,
    encode,
    rspro_frame,
)

C23 = ClientSlot(23, 0)
B1_5 = BankSlot(1, 5)
CARD_ATR = bytes.fromhex("3b9f96801fc78031a073be21136743200718000001a5")
OK = ResultCode.OK


def config_bank(ip: str, port: int, bank: BankSlot = B1_5) -> ConfigClientBankReq:
    return ConfigClientBankReq(bank, IpPort(ipaddress.ip_address(ip), port))


def unconfigured(**kwargs: object) -> ClientFsm:
    fsm = ClientFsm(C23, **kwargs)  # type: ignore[arg-type]
    fsm.server_connected()
    return fsm


def wait_bankd(**kwargs: object) -> ClientFsm:
    fsm = unconfigured(**kwargs)
    fsm.server_message(config_bank("192.168.1.10", 9999))
    return fsm


def operational(**kwargs: object) -> ClientFsm:
    fsm = wait_bankd(**kwargs)
    fsm.bankd_connected()
    return fsm


ENTER_OPERATIONAL = [
    SimRemote(),
    RunScript(Cause.REQUEST_SIM_REMOTE),
    SetAtr(bytes.fromhex("3b00")),
    CardInsert(),
    RunScript(Cause.REQUEST_CARD_INSERT),
    ModemReset(),
    RunScript(Cause.REQUEST_MODEM_RESET),
]
LEAVE_OPERATIONAL = [
    CardRemove(),
    RunScript(Cause.REQUEST_CARD_REMOVE),
    SimLocal(),
    RunScript(Cause.REQUEST_SIM_LOCAL),
    ModemReset(),
    RunScript(Cause.REQUEST_MODEM_RESET),
]
CONFIG_DONE = [SendToServer(ConfigClientBankRes(OK)), RunScript(Cause.EVENT_CONFIG_BANKD)]


class TestServerLink:
    def test_starts_in_init(self) -> None:
        assert ClientFsm(C23).state is MainState.INIT

    def test_first_server_connection_leads_to_unconfigured(self) -> None:
        fsm = ClientFsm(C23)
        assert fsm.server_connected() == [
            DisconnectBankd(),
            RunScript(Cause.EVENT_SERVER_CONNECT),
        ]
        assert fsm.state is MainState.UNCONFIGURED

    def test_a_server_reconnect_is_not_announced_again(self) -> None:
        fsm = unconfigured()
        assert fsm.server_lost() == []
        assert fsm.server_connected() == []
        assert fsm.state is MainState.UNCONFIGURED

    @pytest.mark.parametrize("make", [unconfigured, wait_bankd, operational])
    def test_a_server_restart_is_no_error(
        self, make: type[ClientFsm], caplog: pytest.LogCaptureFixture
    ) -> None:
        fsm = make()
        fsm.server_lost()
        with caplog.at_level(logging.DEBUG):
            assert fsm.server_connected() == []
        assert [r.levelno for r in caplog.records] == [logging.INFO]

    @pytest.mark.parametrize("make", [unconfigured, wait_bankd, operational])
    def test_losing_the_server_changes_nothing(self, make: type[ClientFsm]) -> None:
        fsm = make()
        state = fsm.state
        assert fsm.server_lost() == []
        assert fsm.state is state

    def test_config_client_id_req_sets_the_client_slot_of_both_links(self) -> None:
        fsm = unconfigured()
        assert fsm.server_message(ConfigClientIdReq(ClientSlot(7, 3))) == [
            SendToServer(ConfigClientIdRes(OK))
        ]
        assert fsm.client_slot == ClientSlot(7, 3)
        assert fsm.state is MainState.UNCONFIGURED

    @pytest.mark.parametrize(
        "msg",
        [
            ResetStateReq(),
            ErrorInd(ComponentType.REMSIM_SERVER, ErrorSeverity.MINOR, ErrorCode(1)),
        ],
    )
    def test_other_server_messages_are_ignored(self, msg: object) -> None:
        fsm = operational()
        assert fsm.server_message(msg) == []  # type: ignore[arg-type]
        assert fsm.state is MainState.OPERATIONAL


class TestConfigClientBankReq:
    def test_unconfigured_connects_to_the_bankd(self) -> None:
        fsm = unconfigured()
        actions = fsm.server_message(config_bank("192.168.1.10", 9999))
        assert actions == [ConnectBankd("192.168.1.10", 9999), *CONFIG_DONE]
        assert fsm.state is MainState.WAIT_BANKD
        assert (fsm.bankd_host, fsm.bankd_port, fsm.bank_slot) == ("192.168.1.10", 9999, B1_5)

    def test_unconfigured_with_port_0_stays_but_answers(self) -> None:
        fsm = unconfigured()
        assert fsm.server_message(config_bank("0.0.0.0", 0)) == CONFIG_DONE
        assert fsm.state is MainState.UNCONFIGURED

    def test_wait_bankd_with_another_bankd_reconnects_there(self) -> None:
        fsm = wait_bankd()
        actions = fsm.server_message(config_bank("10.0.0.2", 9999))
        assert actions == [ConnectBankd("10.0.0.2", 9999), *CONFIG_DONE]
        assert fsm.state is MainState.WAIT_BANKD

    def test_wait_bankd_with_port_0_drops_the_bankd_link(self) -> None:
        fsm = wait_bankd()
        assert fsm.server_message(config_bank("0.0.0.0", 0)) == [DisconnectBankd(), *CONFIG_DONE]
        assert fsm.state is MainState.UNCONFIGURED

    def test_operational_with_port_0_removes_the_card(self) -> None:
        fsm = operational()
        actions = fsm.server_message(config_bank("0.0.0.0", 0))
        assert actions == [*LEAVE_OPERATIONAL, DisconnectBankd(), *CONFIG_DONE]
        assert fsm.state is MainState.UNCONFIGURED

    def test_operational_switching_to_another_bankd(self) -> None:
        fsm = operational()
        actions = fsm.server_message(config_bank("10.0.0.2", 9999, BankSlot(2, 0)))
        assert actions == [*LEAVE_OPERATIONAL, ConnectBankd("10.0.0.2", 9999), *CONFIG_DONE]
        assert fsm.state is MainState.WAIT_BANKD
        assert fsm.bank_slot == BankSlot(2, 0)

    def test_operational_another_bank_slot_on_the_same_bankd_reconnects(self) -> None:
        fsm = operational()
        actions = fsm.server_message(config_bank("192.168.1.10", 9999, BankSlot(1, 6)))
        assert actions == [*LEAVE_OPERATIONAL, ConnectBankd("192.168.1.10", 9999), *CONFIG_DONE]

    def test_operational_unchanged_configuration_keeps_the_session(self) -> None:
        fsm = operational()
        assert fsm.server_message(config_bank("192.168.1.10", 9999)) == CONFIG_DONE
        assert fsm.state is MainState.OPERATIONAL

    def test_ipv6_bankd_address(self) -> None:
        fsm = unconfigured()
        actions = fsm.server_message(config_bank("2001:db8::1", 9999))
        assert actions[0] == ConnectBankd("2001:db8::1", 9999)

    def test_not_accepted_before_the_server_connected(self) -> None:
        fsm = ClientFsm(C23)
        assert fsm.server_message(config_bank("192.168.1.10", 9999)) == []
        assert fsm.state is MainState.INIT


class TestBankdLink:
    def test_bankd_connected_makes_the_card_operational(self) -> None:
        fsm = wait_bankd()
        assert fsm.bankd_connected() == [*ENTER_OPERATIONAL, RunScript(Cause.EVENT_BANKD_CONNECT)]
        assert fsm.state is MainState.OPERATIONAL

    def test_the_configured_atr_is_presented_first(self) -> None:
        fsm = wait_bankd(atr=bytes.fromhex("3b02aabb"))
        assert SetAtr(bytes.fromhex("3b02aabb")) in fsm.bankd_connected()

    def test_bankd_lost_removes_the_card(self) -> None:
        fsm = operational()
        assert fsm.bankd_lost() == LEAVE_OPERATIONAL
        assert fsm.state is MainState.WAIT_BANKD

    def test_bankd_lost_while_unconfigured_is_dropped(self) -> None:
        fsm = unconfigured()
        assert fsm.bankd_lost() == []
        assert fsm.state is MainState.UNCONFIGURED

    @pytest.mark.parametrize(("ip", "port"), [("0.0.0.0", 0), ("10.0.0.2", 9999)])
    def test_the_loss_of_the_link_we_dropped_is_no_error(
        self, ip: str, port: int, caplog: pytest.LogCaptureFixture
    ) -> None:
        fsm = operational()
        fsm.server_message(config_bank(ip, port))  # port 0 on every unmap, or another bankd
        with caplog.at_level(logging.DEBUG, logger="remsim.client"):
            caplog.clear()  # only what the losses log: other tests may have left it at INFO
            assert fsm.bankd_lost() == []
            assert fsm.bankd_lost() == []  # a second one is unexpected
        assert [r.levelno for r in caplog.records if r.name == "remsim.client"] == [
            logging.DEBUG,
            logging.ERROR,
        ]

    def test_stop_in_operational_removes_the_card(self) -> None:
        fsm = operational()
        assert fsm.stop() == LEAVE_OPERATIONAL
        assert fsm.state is MainState.INIT

    @pytest.mark.parametrize("make", [unconfigured, wait_bankd])
    def test_stop_without_a_card_does_nothing(self, make: Callable[[], ClientFsm]) -> None:
        fsm = make()
        assert fsm.stop() == []

    def test_set_atr_req_goes_to_the_modem_and_is_answered(self) -> None:
        fsm = operational()
        assert fsm.bankd_message(SetAtrReq(C23, CARD_ATR)) == [
            SetAtr(CARD_ATR),
            SendToBankd(SetAtrRes(OK)),
        ]

    def test_set_atr_req_with_atr_ignore_rspro_is_only_answered(self) -> None:
        fsm = operational(atr_ignore_rspro=True)
        assert fsm.bankd_message(SetAtrReq(C23, CARD_ATR)) == [SendToBankd(SetAtrRes(OK))]

    def test_tpdu_card_to_modem_goes_to_the_modem(self) -> None:
        fsm = operational()
        msg = TpduCardToModem(B1_5, C23, bytes.fromhex("9f17"))
        assert fsm.bankd_message(msg) == [CardToModem(bytes.fromhex("9f17"))]

    def test_bank_slot_status_goes_to_the_frontend(self) -> None:
        fsm = operational()
        status = SlotPhysStatus(False, True, True, True)
        assert fsm.bankd_message(BankSlotStatusInd(B1_5, C23, status)) == [BankSlotStatus(status)]

    def test_bankd_messages_outside_operational_are_dropped(self) -> None:
        fsm = wait_bankd()
        assert fsm.bankd_message(TpduCardToModem(B1_5, C23, b"\x90\x00")) == []
        assert fsm.bankd_message(SetAtrReq(C23, CARD_ATR)) == []


class TestModem:
    APDU = bytes.fromhex("a0a40000023f00")

    def test_a_tpdu_goes_to_the_bankd_with_both_slots(self) -> None:
        fsm = operational()
        assert fsm.modem_tpdu(self.APDU) == [SendToBankd(TpduModemToCard(C23, B1_5, self.APDU))]

    def test_the_tpdu_matches_the_worked_encoding(self) -> None:
        (action,) = operational().modem_tpdu(self.APDU)
        assert isinstance(action, SendToBankd)
        assert rspro_frame(encode(RsproPdu(action.msg))).hex(" ") == (
            "00 34 ee 07 30 31 80 01 02 81 01 00 a2 29 ac 27 30 06 02 01 17 02 01 00 30 06 02 "
            "01 01 02 01 05 30 0c 01 01 00 01 01 00 01 01 00 01 01 00 04 07 a0 a4 00 00 02 3f 00"
        )

    @pytest.mark.parametrize("size", [0, 4, 261])
    def test_illegal_tpdu_lengths_are_dropped(self, size: int) -> None:
        assert operational().modem_tpdu(bytes(size)) == []

    @pytest.mark.parametrize("size", [5, 260])
    def test_tpdu_length_limits(self, size: int) -> None:
        assert len(operational().modem_tpdu(bytes(size))) == 1

    def test_tpdus_are_dropped_until_operational(self) -> None:
        assert wait_bankd().modem_tpdu(self.APDU) == []
        assert unconfigured().modem_tpdu(self.APDU) == []

    def test_status_goes_to_the_bankd_and_runs_the_script_when_changed(self) -> None:
        fsm = operational()
        assert fsm.modem_status(POWER_OFF) == [
            SendToBankd(ClientSlotStatusInd(C23, B1_5, POWER_OFF)),
            RunScript(Cause.EVENT_MODEM_STATUS),
        ]
        assert fsm.modem_status_last == POWER_OFF  # stored before the script runs

    def test_an_unchanged_status_runs_no_script(self) -> None:
        fsm = operational()
        fsm.modem_status(POWER_ON)
        assert fsm.modem_status(POWER_ON) == [
            SendToBankd(ClientSlotStatusInd(C23, B1_5, POWER_ON)),
        ]

    def test_upstream_compatible_status_script_fires_when_unchanged(self) -> None:
        fsm = operational(modem_status_upstream=True)
        assert RunScript(Cause.EVENT_MODEM_STATUS) not in fsm.modem_status(POWER_ON)
        assert RunScript(Cause.EVENT_MODEM_STATUS) in fsm.modem_status(POWER_ON)

    def test_the_shell_reset_matches_the_reference_bytes(self) -> None:
        fsm = unconfigured()
        fsm.server_message(config_bank("127.0.0.1", 9999, BankSlot(1, 0)))
        fsm.bankd_connected()
        action = fsm.modem_status(POWER_OFF)[0]
        assert isinstance(action, SendToBankd)
        assert rspro_frame(encode(RsproPdu(action.msg))).hex() == (
            "002bee073028800102810100a220ae1e30060201170201003006020101020100"
            "300c8001ff8101008201008301ff"
        )

    def test_status_outside_operational_is_dropped(self) -> None:
        fsm = wait_bankd()
        assert fsm.modem_status(POWER_OFF) == []
        assert fsm.modem_status_last != POWER_OFF

    def test_pts_is_only_logged(self) -> None:
        assert operational().modem_pts(bytes.fromhex("ff1096")) == []
