"""remsim's APDU mode in the bankd core, sans-IO: the offer and its answer, how the card is
opened, the setAtrReq's protocol, and what an ApduModemToCard leads to."""

from __future__ import annotations

import pytest

from remsim_bankd.bankd import bankd_identity
from remsim_bankd.card import CardNotPresentError, CardUnresponsiveError
from remsim_bankd.core import (
    Action,
    BankdCore,
    Close,
    OpenCard,
    ReleaseCard,
    Send,
    SessionState,
    TransmitApdu,
)
from rspro import (
    MAX_APDU,
    ApduCardToModem,
    ApduModemToCard,
    BankSlot,
    ClientSlot,
    ComponentIdentity,
    ComponentType,
    ConnectClientReq,
    ConnectClientRes,
    ErrorInd,
    RemsimFeatures,
    ResultCode,
    SetAtrReq,
)

ATR = bytes.fromhex("3b9f96801fc78031a073be21136743200718000001a5")
C23, B0 = ClientSlot(23, 0), BankSlot(1, 0)
CLIENT = ComponentIdentity(ComponentType.REMSIM_CLIENT, "vm", "remsim-client", "1.0.0")
BANKD = bankd_identity("fixme-name", "1.0.0")
OFFER = RemsimFeatures(apdu=True)
SELECT = bytes.fromhex("00a4000402 3f00 00")


def make_core(apdu_mode: bool = True) -> BankdCore:
    core = BankdCore(1, 1, BANKD, card_retry=10.0, apdu_mode=apdu_mode)
    assert core.create_mapping(C23, B0)[0] is ResultCode.OK
    return core


def connected(core: BankdCore, features: RemsimFeatures | None = OFFER) -> tuple[int, list[Action]]:
    """C23:0 connected offering ``features``, its card opened (T=1): the actions of both."""
    sid = core.session_opened()
    actions = core.receive(sid, ConnectClientReq(CLIENT, C23, features))
    return sid, actions + core.card_opened(sid, ATR, protocol=1)


def test_an_offer_is_accepted_the_card_opened_with_any_protocol_and_the_atr_says_which() -> None:
    core = make_core()
    sid, actions = connected(core)
    assert actions == [
        OpenCard(sid, B0, any_protocol=True),
        Send(sid, ConnectClientRes(BANKD, ResultCode.OK, RemsimFeatures(apdu=True))),
        Send(sid, SetAtrReq(C23, ATR, protocol=1)),
    ]
    assert core.sessions[sid].apdu


@pytest.mark.parametrize(
    ("apdu_mode", "features"),
    [(True, None), (True, RemsimFeatures()), (True, RemsimFeatures(apdu=False)), (False, OFFER)],
)
def test_no_offer_or_mode_off_is_the_original_session(
    apdu_mode: bool, features: RemsimFeatures | None
) -> None:
    core = make_core(apdu_mode)
    sid, actions = connected(core, features)
    assert actions == [
        OpenCard(sid, B0),
        Send(sid, ConnectClientRes(BANKD, ResultCode.OK)),
        Send(sid, SetAtrReq(C23, ATR)),
    ]
    closed = core.receive(sid, ApduModemToCard(C23, B0, SELECT))
    assert isinstance(closed[0], Send) and isinstance(closed[0].msg, ErrorInd)
    assert closed[0].msg.error_string == "apduModemToCard in a session in TPDU mode"
    assert [type(a) for a in closed[1:]] == [ReleaseCard, Close]


def test_a_waiting_client_is_told_the_mode_at_once_and_opens_with_any_protocol_later() -> None:
    core = BankdCore(1, 1, BANKD)
    sid = core.session_opened()
    res = core.receive(sid, ConnectClientReq(CLIENT, C23, OFFER))
    assert res == [Send(sid, ConnectClientRes(BANKD, ResultCode.CARD_NOT_PRESENT, OFFER))]
    _, actions = core.create_mapping(C23, B0)
    assert actions == [OpenCard(sid, B0, any_protocol=True)]
    assert core.card_opened(sid, ATR) == [Send(sid, SetAtrReq(C23, ATR, protocol=0))]


def test_an_apdu_is_transmitted_and_answered_once() -> None:
    core = make_core()
    sid, _ = connected(core)
    msg = ApduModemToCard(C23, B0, SELECT)
    assert core.receive(sid, msg) == [TransmitApdu(sid, B0, msg)]
    answer = core.apdu_response(sid, msg, b"\x62\x00\x90\x00")
    assert answer == [Send(sid, ApduCardToModem(B0, C23, ResultCode.OK, b"\x62\x00\x90\x00"))]


@pytest.mark.parametrize(
    ("msg", "why"),
    [
        (ApduModemToCard(ClientSlot(24, 0), B0, SELECT), "APDU for C24:0 -> B1:0"),
        (ApduModemToCard(C23, BankSlot(1, 1), SELECT), "APDU for C23:0 -> B1:1"),
        (ApduModemToCard(C23, B0, b"\x00\xa4\x00"), "C-APDU of 3 bytes"),
    ],
)
def test_an_apdu_for_other_slots_or_too_short_is_a_protocol_error(
    msg: ApduModemToCard, why: str
) -> None:
    core = make_core()
    sid, _ = connected(core)
    actions = core.receive(sid, msg)
    assert isinstance(actions[0], Send) and isinstance(actions[0].msg, ErrorInd)
    assert why in (actions[0].msg.error_string or "")
    assert isinstance(actions[-1], Close)


def test_an_apdu_before_the_card_is_open_is_a_protocol_error() -> None:
    core = make_core()
    sid = core.session_opened()
    core.receive(sid, ConnectClientReq(CLIENT, C23, OFFER))
    actions = core.receive(sid, ApduModemToCard(C23, B0, SELECT))
    assert isinstance(actions[0], Send) and isinstance(actions[0].msg, ErrorInd)
    assert actions[0].msg.error_string == "APDU while no card is open"


def test_a_card_error_is_the_apdus_result_then_the_card_is_lost() -> None:
    core = make_core()
    sid, _ = connected(core)
    msg = ApduModemToCard(C23, B0, SELECT)
    actions = core.apdu_failed(sid, msg, CardUnresponsiveError("mute: é"), now=0.0)
    assert actions[0] == Send(
        sid, ApduCardToModem(B0, C23, ResultCode.CARD_UNRESPONSIVE, b"", "mute: ?")
    )  # an ErrorString is IA5
    assert isinstance(actions[1], Send) and isinstance(actions[1].msg, ErrorInd)
    assert [type(a) for a in actions[2:]] == [ReleaseCard, Close]
    assert core.sessions[sid].state is SessionState.CLOSED
    # a late answer of a closed session goes nowhere
    assert core.apdu_response(sid, msg, b"\x90\x00") == []
    assert core.apdu_failed(sid, msg, CardNotPresentError("gone"), now=0.0) == []


def test_error_texts_are_cut_to_an_error_string() -> None:
    core = make_core()
    sid, _ = connected(core)
    msg = ApduModemToCard(C23, B0, SELECT)
    (send,) = core.apdu_response(sid, msg, b"\x67\x00", "x" * 300)
    assert isinstance(send, Send) and isinstance(send.msg, ApduCardToModem)
    assert send.msg.error == "x" * 255
    (send,) = core.apdu_response(sid, msg, b"\x67\x00", "")
    assert isinstance(send, Send) and isinstance(send.msg, ApduCardToModem)
    assert send.msg.error is None


def test_an_r_apdu_too_large_for_a_frame_is_a_transmission_error_and_the_session_goes_on() -> None:
    core = make_core()
    sid, _ = connected(core)
    msg = ApduModemToCard(C23, B0, SELECT)
    (send,) = core.apdu_response(sid, msg, bytes(MAX_APDU + 1))
    assert isinstance(send, Send) and isinstance(send.msg, ApduCardToModem)
    assert (send.msg.result, send.msg.rapdu) == (ResultCode.CARD_TRANSMISSION_ERROR, b"")
    assert f"{MAX_APDU + 1} bytes" in (send.msg.error or "")
    assert core.sessions[sid].state is SessionState.CONN_CLIENT_MAPPED_CARD
    assert core.receive(sid, msg) == [TransmitApdu(sid, B0, msg)]
