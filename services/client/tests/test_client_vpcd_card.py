"""The vpcd front-end's sans-IO core, VpcdCard: client.md §12 and vpcd.md, clock injected."""

from __future__ import annotations

from collections.abc import Sequence

import pytest

from remsim_client.frontend import POWER_OFF as STATUS_POWER_OFF
from remsim_client.frontend import POWER_ON as STATUS_POWER_ON
from remsim_client.vpcd import (
    STATUS_RESET,
    ConnectVpcd,
    DisconnectVpcd,
    ReportStatus,
    SendToVpcd,
    SendTpdu,
    VpcdCard,
)
from rspro import SlotPhysStatus
from vpcd import GET_ATR, POWER_OFF, POWER_ON, RESET, frame

CONFIGURED_ATR = bytes.fromhex("3b00")
CARD_ATR = bytes.fromhex("3b9f96801fc78031a073be21136743200718000001a5")
SELECT_MF = bytes.fromhex("a0a40000023f00")


def control(code: int) -> bytes:
    return frame(bytes([code]))


def operational(card: VpcdCard) -> list[object]:
    """The hooks as the core calls them on entering OPERATIONAL, then the bankd's ATR."""
    actions: list[object] = []
    actions += card.set_atr(CONFIGURED_ATR)
    actions += card.card_insert()
    actions += card.set_atr(CARD_ATR)
    return actions


def in_reader(**kwargs: object) -> VpcdCard:
    """A card that is OPERATIONAL with the bankd's ATR and connected to vpcd."""
    card = VpcdCard(**kwargs)  # type: ignore[arg-type]
    assert operational(card) == [ConnectVpcd()]
    assert card.vpcd_connected() == []
    return card


def statuses(actions: Sequence[object]) -> list[SlotPhysStatus]:
    return [a.status for a in actions if isinstance(a, ReportStatus)]


class TestPresence:
    def test_the_card_enters_the_reader_only_with_the_bankds_atr(self) -> None:
        card = VpcdCard()
        assert card.set_atr(CONFIGURED_ATR) == []  # configured ATR, before the insertion
        assert card.card_insert() == []  # bankd link up, but its ATR is not there yet
        assert not card.present
        assert card.set_atr(CARD_ATR) == [ConnectVpcd()]
        assert card.present and card.atr == CARD_ATR

    def test_with_atr_ignore_rspro_the_configured_atr_is_shown_at_once(self) -> None:
        card = VpcdCard(atr_ignore_rspro=True)
        assert card.set_atr(CONFIGURED_ATR) == []
        assert card.card_insert() == [ConnectVpcd()]
        assert card.atr == CONFIGURED_ATR

    def test_card_remove_takes_the_card_out_of_the_reader(self) -> None:
        card = in_reader()
        assert card.card_remove() == [DisconnectVpcd()]
        assert not card.present and not card.connected
        assert card.card_remove() == []  # not in the reader any more: nothing to do
        # Back in OPERATIONAL: the configured ATR first, the card only with the bankd's ATR.
        assert card.set_atr(CONFIGURED_ATR) == []
        assert card.card_insert() == []
        assert card.set_atr(CARD_ATR) == [ConnectVpcd()]

    def test_removal_before_the_atr_came(self) -> None:
        card = VpcdCard()
        card.set_atr(CONFIGURED_ATR)
        card.card_insert()
        assert card.card_remove() == []

    def test_a_new_atr_reinserts_the_card_so_pcscd_reads_it(self) -> None:
        card = in_reader()
        assert card.set_atr(CARD_ATR) == []  # the same again: nothing changes
        other = bytes.fromhex("3b9f96801fc78031a073be21136743200718000001a6")
        assert card.set_atr(other) == [DisconnectVpcd(), ConnectVpcd()]
        assert card.atr == other and not card.connected


class TestControlMessages:
    def test_get_atr_is_answered_from_memory_any_time(self) -> None:
        card = in_reader()
        reply = [SendToVpcd(frame(CARD_ATR))]
        assert card.vpcd_data(control(GET_ATR), 0.0) == reply
        assert statuses(card.vpcd_data(control(POWER_OFF), 0.1)) == [STATUS_POWER_OFF]
        assert card.vpcd_data(control(GET_ATR), 0.5) == reply  # also while powered off

    def test_power_and_reset_as_the_original_ifdhandler(self) -> None:
        card = in_reader()
        assert card.vpcd_data(control(POWER_ON), 0.0) == [ReportStatus(STATUS_POWER_ON)]
        assert card.vpcd_data(control(POWER_OFF), 0.0) == [ReportStatus(STATUS_POWER_OFF)]
        assert card.vpcd_data(control(RESET), 0.0) == [
            ReportStatus(STATUS_RESET),
            ReportStatus(STATUS_POWER_ON),
        ]
        assert SlotPhysStatus(False, True, True, True) == STATUS_POWER_ON
        assert SlotPhysStatus(True, False, False, True) == STATUS_POWER_OFF
        assert SlotPhysStatus(True, True, True, True) == STATUS_RESET

    def test_every_power_action_goes_to_the_bank_by_default(self) -> None:
        card = in_reader()
        cycles = control(POWER_ON) + control(POWER_OFF) + control(POWER_ON) + control(POWER_OFF)
        assert statuses(card.vpcd_data(cycles, 0.0)) == [
            STATUS_POWER_ON,
            STATUS_POWER_OFF,
            STATUS_POWER_ON,
            STATUS_POWER_OFF,
        ]

    def test_idle_power_cycles_stay_local_when_asked(self) -> None:
        card = in_reader(ignore_idle_power_cycles=True)
        pcscd = [GET_ATR, POWER_ON, GET_ATR, GET_ATR, POWER_OFF, GET_ATR, POWER_ON, GET_ATR]
        actions = card.vpcd_data(b"".join(control(c) for c in pcscd), 0.0)
        assert statuses(actions) == [STATUS_POWER_ON]  # only the first power-up
        assert actions.count(SendToVpcd(frame(CARD_ATR))) == 5
        # An explicit reset still reaches the card; later idle power cycles still do not.
        assert statuses(card.vpcd_data(control(RESET), 0.0)) == [STATUS_RESET, STATUS_POWER_ON]
        assert card.vpcd_data(control(POWER_OFF) + control(POWER_ON), 0.0) == []

    def test_a_new_bankd_session_gets_the_first_power_up_again(self) -> None:
        card = in_reader(ignore_idle_power_cycles=True)
        assert statuses(card.vpcd_data(control(POWER_ON), 0.0)) == [STATUS_POWER_ON]
        card.card_remove()
        operational(card)
        card.vpcd_connected()
        assert statuses(card.vpcd_data(control(POWER_ON), 0.0)) == [STATUS_POWER_ON]

    def test_unknown_control_messages_are_not_answered(self) -> None:
        card = in_reader()
        assert card.vpcd_data(control(0x07), 0.0) == []


class TestApdus:
    def test_apdu_to_the_bank_and_the_answer_back(self) -> None:
        card = in_reader()
        assert card.vpcd_data(frame(SELECT_MF), 1.0) == [SendTpdu(SELECT_MF)]
        assert card.apdu_pending and card.next_deadline() == 11.0  # default timeout 10 s
        assert card.card_to_modem(b"\x9f\x16") == [SendToVpcd(frame(b"\x9f\x16"))]
        assert not card.apdu_pending and card.next_deadline() is None

    def test_messages_split_anywhere(self) -> None:
        card = in_reader()
        stream = control(GET_ATR) + frame(SELECT_MF)
        actions = [a for b in stream for a in card.vpcd_data(bytes([b]), 0.0)]
        assert actions == [SendToVpcd(frame(CARD_ATR)), SendTpdu(SELECT_MF)]

    def test_a_case_1_apdu_gets_p3(self) -> None:
        card = in_reader()
        assert card.vpcd_data(frame(bytes.fromhex("00b00000")), 0.0) == [
            SendTpdu(bytes.fromhex("00b0000000"))
        ]

    @pytest.mark.parametrize("length", [0, 2, 3, 261, 300])
    def test_apdus_the_bank_would_refuse_are_answered_6700(self, length: int) -> None:
        card = in_reader()
        assert card.vpcd_data(frame(bytes(length)) if length else b"\x00\x00", 0.0) == [
            SendToVpcd(frame(b"\x67\x00"))
        ]
        assert not card.apdu_pending

    def test_the_longest_apdu_goes_to_the_bank(self) -> None:
        card = in_reader()
        apdu = bytes.fromhex("a0d60000ff") + bytes(255)
        assert card.vpcd_data(frame(apdu), 0.0) == [SendTpdu(apdu)]

    def test_timeout_takes_the_card_out_until_the_bank_answers_again(self) -> None:
        """client.md §12, vpcd.md §7: close the connection, do not invent a status word."""
        card = in_reader(apdu_timeout=2.0)
        card.vpcd_data(frame(SELECT_MF), 10.0)
        assert card.handle_timeout(11.9) == []
        assert card.handle_timeout(12.0) == [DisconnectVpcd()]
        assert card.timeouts == 1 and card.next_deadline() is None
        assert not card.present and not card.connected
        # The late answer is dropped, and shows the bank is usable again: the card returns.
        assert card.card_to_modem(b"\x9f\x16") == [ConnectVpcd()]
        assert card.present
        card.vpcd_connected()
        assert card.vpcd_data(frame(SELECT_MF), 20.0) == [SendTpdu(SELECT_MF)]
        assert card.card_to_modem(b"\x9f\x16") == [SendToVpcd(frame(b"\x9f\x16"))]

    def test_after_a_timeout_a_new_atr_brings_the_card_back(self) -> None:
        card = in_reader(apdu_timeout=2.0)
        card.vpcd_data(frame(SELECT_MF), 0.0)
        assert card.handle_timeout(2.0) == [DisconnectVpcd()]
        assert card.set_atr(CARD_ATR) == [ConnectVpcd()]  # e.g. the bankd reset the card
        card.vpcd_connected()
        assert card.card_to_modem(b"\x9f\x16") == []  # still late: answers nothing

    def test_after_a_timeout_a_new_bankd_session_brings_the_card_back(self) -> None:
        card = in_reader(apdu_timeout=2.0)
        card.vpcd_data(frame(SELECT_MF), 0.0)
        card.handle_timeout(2.0)
        assert card.card_remove() == []  # already out of the reader
        assert operational(card) == [ConnectVpcd()]
        card.vpcd_connected()
        card.vpcd_data(frame(SELECT_MF), 3.0)
        assert card.card_to_modem(b"\x9f\x16") == [SendToVpcd(frame(b"\x9f\x16"))]

    def test_an_answer_nobody_asked_for_is_dropped(self) -> None:
        card = in_reader()
        assert card.card_to_modem(b"\x90\x00") == []

    def test_an_empty_answer_reinserts_the_card(self) -> None:
        card = in_reader()
        card.vpcd_data(frame(SELECT_MF), 0.0)
        assert card.card_to_modem(b"") == [DisconnectVpcd(), ConnectVpcd()]
        assert card.present and not card.apdu_pending

    def test_vpcd_gone_during_an_exchange(self) -> None:
        card = in_reader()
        card.vpcd_data(frame(SELECT_MF), 0.0)
        assert card.vpcd_closed() == []
        assert card.next_deadline() is None and card.present  # the front-end reconnects
        card.vpcd_connected()
        assert card.card_to_modem(b"\x9f\x16") == []  # the answer for the lost connection
        card.vpcd_data(frame(SELECT_MF), 1.0)
        assert card.card_to_modem(b"\x9f\x16") == [SendToVpcd(frame(b"\x9f\x16"))]

    def test_card_removed_during_an_exchange(self) -> None:
        card = in_reader()
        card.vpcd_data(frame(SELECT_MF), 0.0)
        assert card.card_remove() == [DisconnectVpcd()]
        assert card.next_deadline() is None
        operational(card)
        card.vpcd_connected()
        card.vpcd_data(frame(SELECT_MF), 1.0)
        # The old bankd link is gone with whatever it owed: this answer is the new one's.
        assert card.card_to_modem(b"\x9f\x16") == [SendToVpcd(frame(b"\x9f\x16"))]
