"""The bankd core, sans-IO: slotmap orders, client sessions, card results (bankd.md §4-§8)."""

from __future__ import annotations

import logging

import pytest

from remsim_bankd.bankd import bankd_identity
from remsim_bankd.card import CardError, CardNotPresentError, CardUnresponsiveError
from remsim_bankd.core import (
    RESET_GRACE,
    Action,
    BankdCore,
    CheckAlive,
    Close,
    OpenCard,
    ReleaseCard,
    ResetCard,
    Send,
    SessionState,
    Transmit,
)
from remsim_bankd.mapping import MappingTable
from remsim_common import PeerIdentity
from rspro import (
    BankSlot,
    ClientSlot,
    ClientSlotStatusInd,
    ComponentIdentity,
    ComponentType,
    ConnectClientReq,
    ConnectClientRes,
    CreateMappingReq,
    CreateMappingRes,
    ErrorInd,
    RemoveMappingRes,
    ResultCode,
    RsproPdu,
    SetAtrReq,
    SetAtrRes,
    SlotPhysStatus,
    TpduCardToModem,
    TpduModemToCard,
    decode,
    encode,
    rspro_frame,
)

ATR = bytes.fromhex("3b9f96801fc78031a073be21136743200718000001a5")
C23, C24 = ClientSlot(23, 0), ClientSlot(24, 0)
B0, B1 = BankSlot(1, 0), BankSlot(1, 1)
CLIENT = ComponentIdentity(ComponentType.REMSIM_CLIENT, "vm", "remsim-client", "1.0.0")
SELECT_MF = bytes.fromhex("a0a40000023f00")

# Frames the original bankd sent (reference/upstream-1.0.0, README and messages.jsonl).
REF = {
    "createMappingRes ok": "0010ee07300d800102810100a205a5030a0100",
    "createMappingRes illegalSlotId": "0010ee07300d800102810100a205a5030a0103",
    "removeMappingRes ok": "0010ee07300d800102810100a205a7030a0100",
    "removeMappingRes illegalSlotId": "0010ee07300d800102810100a205a7030a0103",
    "connectClientRes ok": "0037ee07303480010281020926a22ba32930240a0102160a6669786d652d6e616d65"
    "800c72656d73696d2d62616e6b648105312e302e300a0100",
    "connectClientRes cardNotPresent": "0037ee07303480010281020926a22ba32930240a0102160a6669786d65"
    "2d6e616d65800c72656d73696d2d62616e6b648105312e302e300a0164",
    "setAtrReq": "002dee07302a800102810100a222aa20300602011702010004163b9f96801fc78031a073be2113674"
    "3200718000001a5",
    "tpduCardToModem": "002fee07302c800102810100a224ad2230060201010201003006020117020100300c0101"
    "0001010001010001010004029f16",
}


def frame(msg: object) -> str:
    assert not isinstance(msg, RsproPdu)
    return rspro_frame(encode(RsproPdu(msg))).hex()  # type: ignore[arg-type]


def sent(actions: list[Action]) -> list[object]:
    return [a.msg for a in actions if isinstance(a, Send)]


@pytest.fixture
def core() -> BankdCore:
    return BankdCore(1, 2, bankd_identity("fixme-name", "1.0.0"), card_retry=10.0)


def connect(core: BankdCore, slot: ClientSlot = C23) -> tuple[int, list[Action]]:
    sid = core.session_opened()
    return sid, core.receive(sid, ConnectClientReq(CLIENT, slot))


def mapped_session(core: BankdCore) -> int:
    """C23:0 mapped to B1:0, connected, card open."""
    assert core.create_mapping(C23, B0)[0] is ResultCode.OK
    sid, actions = connect(core)
    assert actions == [OpenCard(sid, B0)]
    core.card_opened(sid, ATR)
    return sid


# --- slotmap table (bankd.md §4.2-4.4) ------------------------------------------------------------


def test_create_mapping_checks_in_order() -> None:
    t = MappingTable(bank_id=1, num_slots=2)
    assert t.create(C23, BankSlot(2, 0)).result is ResultCode.ILLEGAL_BANK_ID
    assert t.create(C23, BankSlot(2, 5)).result is ResultCode.ILLEGAL_BANK_ID
    assert t.create(C23, BankSlot(1, 2)).result is ResultCode.ILLEGAL_SLOT_ID
    change = t.create(C23, B0)
    assert (change.result, change.removed, change.added) == (ResultCode.OK, [], (B0, C23))
    identical = t.create(C23, B0)
    assert (identical.result, identical.removed, identical.added) == (ResultCode.OK, [], None)


def test_negative_or_out_of_range_ids_are_refused() -> None:
    """The decoder takes ``02 01 FF`` as -1; upstream's uint16 makes it 65535 ≥ num_slots."""
    t = MappingTable(bank_id=1, num_slots=2)
    for bank in (BankSlot(1, -1), BankSlot(1, -65536)):
        assert t.create(C23, bank).result is ResultCode.ILLEGAL_SLOT_ID
        assert t.remove(C23, bank).result is ResultCode.ILLEGAL_SLOT_ID
    assert t.create(C23, BankSlot(-1, 0)).result is ResultCode.ILLEGAL_BANK_ID
    for client in (ClientSlot(-1, 0), ClientSlot(23, -1), ClientSlot(1024, 0), ClientSlot(0, 1024)):
        assert t.create(client, B0).result is ResultCode.ILLEGAL_CLIENT_ID
        assert t.remove(client, B0).result is ResultCode.ILLEGAL_CLIENT_ID
    assert len(t) == 0
    assert t.create(ClientSlot(1023, 1023), B1).result is ResultCode.OK


def test_a_negative_slot_from_the_wire_is_refused(core: BankdCore) -> None:
    """createMappingReq C23:0 -> B1:-1 exactly as it arrives (SlotNumber ``02 01 FF``)."""
    raw = bytes.fromhex("301a800102810100a212a410300602011702010030060201010201ff")
    req = decode(raw).msg
    assert isinstance(req, CreateMappingReq) and req.bank == BankSlot(1, -1)
    result, actions = core.create_mapping(req.client, req.bank)
    assert frame(CreateMappingRes(result)) == REF["createMappingRes illegalSlotId"]
    assert actions == [] and len(core.maps) == 0


def test_create_mapping_replaces_conflicting_maps() -> None:
    t = MappingTable(1, 4)
    t.create(C23, B0)
    t.create(C24, B1)
    change = t.create(C24, B0)  # B1:0 had C23:0, C24:0 was on B1:1
    assert change.result is ResultCode.OK
    assert sorted(change.removed) == [(B0, C23), (B1, C24)]
    assert t.items() == [(B0, C24)]
    assert t.bank_of(C23) is None and t.client_of(B1) is None


def test_remove_mapping_result_codes() -> None:
    t = MappingTable(1, 2)
    t.create(C23, B0)
    assert t.remove(C23, BankSlot(3, 0)).result is ResultCode.ILLEGAL_BANK_ID
    assert t.remove(C23, BankSlot(1, 2)).result is ResultCode.ILLEGAL_SLOT_ID
    assert t.remove(C23, B1).result is ResultCode.UNKNOWN_SLOTMAP
    assert t.remove(C24, B0).result is ResultCode.UNKNOWN_SLOTMAP
    change = t.remove(C23, B0)
    assert (change.result, change.removed) == (ResultCode.OK, [(B0, C23)])
    assert len(t) == 0


def test_reset_removes_everything() -> None:
    t = MappingTable(1, 2)
    t.create(C23, B0)
    t.create(C24, B1)
    change = t.reset()
    assert change.result is ResultCode.OK and len(change.removed) == 2 and len(t) == 0


def test_control_replies_match_the_original_bytes(core: BankdCore) -> None:
    assert frame(CreateMappingRes(core.create_mapping(C23, B0)[0])) == REF["createMappingRes ok"]
    bad = core.create_mapping(C23, BankSlot(1, 5))[0]
    assert frame(CreateMappingRes(bad)) == REF["createMappingRes illegalSlotId"]
    assert frame(RemoveMappingRes(core.remove_mapping(C23, B0)[0])) == REF["removeMappingRes ok"]
    bad = core.remove_mapping(C23, BankSlot(1, 5))[0]
    assert frame(RemoveMappingRes(bad)) == REF["removeMappingRes illegalSlotId"]


# --- client sessions (bankd.md §5-§7) ---------------------------------------------------------


def test_mapped_client_gets_ok_then_atr_with_the_original_bytes(core: BankdCore) -> None:
    core.create_mapping(C23, B0)
    sid, actions = connect(core)
    assert actions == [OpenCard(sid, B0)]  # the answer waits for the card
    assert core.sessions[sid].state is SessionState.CONN_CLIENT_MAPPED
    msgs = sent(core.card_opened(sid, ATR))
    assert [frame(m) for m in msgs] == [REF["connectClientRes ok"], REF["setAtrReq"]]
    assert core.sessions[sid].state is SessionState.CONN_CLIENT_MAPPED_CARD
    assert core.receive(sid, SetAtrRes(ResultCode.OK)) == []


def test_tpdu_is_passed_through_with_the_original_bytes(core: BankdCore) -> None:
    sid = mapped_session(core)
    tpdu = TpduModemToCard(C23, B0, SELECT_MF)
    assert core.receive(sid, tpdu) == [Transmit(sid, B0, tpdu)]
    (msg,) = sent(core.card_response(sid, tpdu, bytes.fromhex("9f16")))
    assert frame(msg) == REF["tpduCardToModem"]
    for sw in ("6112", "6c09", "9f0f", "9404"):  # procedure-level SWs reach the client as they are
        (msg,) = sent(core.card_response(sid, tpdu, bytes.fromhex(sw)))
        assert isinstance(msg, TpduCardToModem) and msg.data.hex() == sw


def test_unmapped_client_gets_card_not_present_and_waits(core: BankdCore) -> None:
    sid, actions = connect(core)
    assert [frame(m) for m in sent(actions)] == [REF["connectClientRes cardNotPresent"]]
    assert not any(isinstance(a, Close) for a in actions)  # the connection stays open
    assert core.sessions[sid].state is SessionState.CONN_CLIENT_WAIT_MAP
    # the map arrives later: the card is opened and the ATR sent (the original sends none)
    result, actions = core.create_mapping(C23, B0)
    assert (result, actions) == (ResultCode.OK, [OpenCard(sid, B0)])
    assert sent(core.card_opened(sid, ATR)) == [SetAtrReq(C23, ATR)]


def test_card_open_failure_is_reported_and_retried(core: BankdCore) -> None:
    core.create_mapping(C23, B0)
    sid, _ = connect(core)
    actions = core.card_failed(sid, CardNotPresentError("no card"), now=100.0)
    assert [m.result for m in sent(actions) if isinstance(m, ConnectClientRes)] == [
        ResultCode.CARD_NOT_PRESENT
    ]
    assert core.next_deadline() == 110.0
    assert core.handle_timeout(109.0) == []
    assert core.handle_timeout(110.0) == [OpenCard(sid, B0)]
    assert core.next_deadline() is None
    assert sent(core.card_failed(sid, CardUnresponsiveError("mute"), now=110.5)) == []  # once
    assert core.handle_timeout(120.5) == [OpenCard(sid, B0)]
    assert sent(core.card_opened(sid, ATR)) == [SetAtrReq(C23, ATR)]


@pytest.mark.parametrize(
    ("error", "result"),
    [
        (CardNotPresentError("x"), ResultCode.CARD_NOT_PRESENT),
        (CardUnresponsiveError("x"), ResultCode.CARD_UNRESPONSIVE),
        (CardError("x"), ResultCode.CARD_TRANSMISSION_ERROR),
    ],
)
def test_open_failure_result_codes(core: BankdCore, error: CardError, result: ResultCode) -> None:
    core.create_mapping(C23, B0)
    sid, _ = connect(core)
    (msg,) = sent(core.card_failed(sid, error, now=0.0))
    assert msg == ConnectClientRes(core.identity, result)


def test_card_lost_mid_session_sends_error_ind_and_closes(core: BankdCore) -> None:
    sid = mapped_session(core)
    tpdu = TpduModemToCard(C23, B0, SELECT_MF)
    core.receive(sid, tpdu)
    actions = core.card_failed(sid, CardNotPresentError("card removed"), now=0.0)
    (ind,) = sent(actions)
    assert isinstance(ind, ErrorInd) and ind.sender is ComponentType.REMSIM_BANKD
    assert (ind.bank_slot, ind.client_slot) == (B0, C23)
    assert ind.error_string is not None and "card removed" in ind.error_string
    assert [type(a) for a in actions] == [Send, ReleaseCard, Close]
    assert core.card_response(sid, tpdu, b"\x90\x00") == []  # late answers are dropped
    assert core.session_closed(sid) == []
    # the client comes back while the card is still out: the card is opened once released
    sid2, actions = connect(core)
    assert actions == []
    assert core.card_released(B0) == [OpenCard(sid2, B0)]


def test_removing_the_map_disconnects_the_client_and_releases_the_card(core: BankdCore) -> None:
    sid = mapped_session(core)
    result, actions = core.remove_mapping(C23, B0)
    assert result is ResultCode.OK
    assert actions == [ReleaseCard(sid, B0), Close(sid, "map B1:0 <-> C23:0 removed")]
    assert core.sessions[sid].state is SessionState.CLOSED
    assert core.receive(sid, TpduModemToCard(C23, B0, SELECT_MF)) == []
    assert core.session_closed(sid) == []


def test_identical_map_leaves_the_session_alone(core: BankdCore) -> None:
    sid = mapped_session(core)
    assert core.create_mapping(C23, B0) == (ResultCode.OK, [])
    assert core.sessions[sid].state is SessionState.CONN_CLIENT_MAPPED_CARD


def test_remapping_the_client_to_another_slot_drops_its_session(core: BankdCore) -> None:
    sid = mapped_session(core)
    result, actions = core.create_mapping(C23, B1)
    assert result is ResultCode.OK
    assert actions == [ReleaseCard(sid, B0), Close(sid, "map B1:0 <-> C23:0 removed")]
    core.session_closed(sid)
    sid2, actions = connect(core)
    assert actions == [OpenCard(sid2, B1)]  # B1:1 was free all along
    assert core.card_released(B0) == []


def test_reset_state_drops_every_session_whose_map_does_not_come_back(core: BankdCore) -> None:
    sid = mapped_session(core)
    core.create_mapping(C24, B1)
    sid2, _ = connect(core, C24)
    result, actions = core.reset_state(now=100.0)
    assert result is ResultCode.OK and actions == []  # the server re-pushes its maps at once
    assert core.next_deadline() == 100.0 + RESET_GRACE
    assert core.handle_timeout(100.0 + RESET_GRACE - 0.01) == []
    actions = core.handle_timeout(100.0 + RESET_GRACE)
    assert {a.sid for a in actions if isinstance(a, Close)} == {sid, sid2}
    assert {a.slot for a in actions if isinstance(a, ReleaseCard)} == {B0, B1}
    assert core.next_deadline() is None


def test_a_map_pushed_again_after_a_reset_keeps_its_session(core: BankdCore) -> None:
    """A server restart: resetStateReq, then the same maps; the modem loses nothing."""
    sid = mapped_session(core)
    core.create_mapping(C24, B1)
    sid2, _ = connect(core, C24)
    core.reset_state(now=100.0)
    assert core.create_mapping(C23, B0) == (ResultCode.OK, [])
    assert core.create_mapping(C24, B1) == (ResultCode.OK, [])
    assert core.handle_timeout(200.0) == []
    assert core.sessions[sid].state.name == "CONN_CLIENT_MAPPED_CARD"  # untouched
    assert core.sessions[sid2].state.name == "CONN_CLIENT_MAPPED"  # still opening its card


def test_another_map_for_a_slot_after_a_reset_closes_its_session_at_once(core: BankdCore) -> None:
    sid = mapped_session(core)
    core.reset_state(now=100.0)
    result, actions = core.create_mapping(C24, B0)
    assert result is ResultCode.OK
    assert Close(sid, "map B1:0 <-> C23:0 removed by resetState") in actions
    assert ReleaseCard(sid, B0) in actions
    assert core.next_deadline() is None


def test_a_released_slot_is_not_reopened_before_the_release_is_done(core: BankdCore) -> None:
    sid = mapped_session(core)
    core.session_closed(sid)  # the client dropped; its card is being released
    sid2, actions = connect(core)  # ... and reconnected at once
    assert actions == []  # no answer yet, no card call: the release comes first
    assert core.card_released(B0) == [OpenCard(sid2, B0)]
    assert sent(core.card_opened(sid2, ATR))[0] == ConnectClientRes(core.identity, ResultCode.OK)


def test_a_session_closing_before_its_deferred_open_releases_nothing(core: BankdCore) -> None:
    sid = mapped_session(core)
    core.session_closed(sid)
    sid2, _ = connect(core)
    assert core.session_closed(sid2) == []  # it never got the card
    sid3, actions = connect(core)
    assert actions == []
    assert core.card_released(B0) == [OpenCard(sid3, B0)]


def test_client_disconnect_releases_the_card(core: BankdCore) -> None:
    sid = mapped_session(core)
    assert core.session_closed(sid) == [ReleaseCard(sid, B0)]
    assert sid not in core.sessions
    assert core.maps.bank_of(C23) == B0  # the map stays


def test_a_live_session_is_never_taken_over(core: BankdCore) -> None:
    """A second connection claims C23:0: the session holding it is checked first; it
    answers, so the newcomer is refused (identityInUse) and the card stays where it is."""
    sid = mapped_session(core)
    sid2, actions = connect(core)
    assert actions == [CheckAlive(sid)]
    sid3, actions = connect(core)  # a third one while the check is under way
    assert actions == []
    actions = core.alive(sid)
    refused = ConnectClientRes(core.identity, ResultCode.IDENTITY_IN_USE)
    assert actions == [
        Send(sid2, refused),
        Close(sid2, f"C23:0 is in use by the live session {sid}"),
        Send(sid3, refused),
        Close(sid3, f"C23:0 is in use by the live session {sid}"),
    ]
    tpdu = TpduModemToCard(C23, B0, SELECT_MF)
    assert core.receive(sid, tpdu) == [Transmit(sid, B0, tpdu)]


def test_a_dead_session_is_replaced_at_once(core: BankdCore) -> None:
    """The client's host died without a FIN and the client is back: the old session does
    not answer the check, is dropped, and the newcomer gets the card."""
    sid = mapped_session(core)
    sid2, actions = connect(core)
    assert actions == [CheckAlive(sid)]
    why = "no PONG within 1s"
    actions = core.drop(sid, why)
    (ind,) = sent(actions)
    assert isinstance(ind, ErrorInd) and ind.error_string == why
    assert actions == [Send(sid, ind), ReleaseCard(sid, B0), Close(sid, why)]
    assert core.sessions[sid2].state is SessionState.CONN_CLIENT_MAPPED
    # the new one gets the card once the old one has released it
    assert core.session_closed(sid) == []
    assert core.card_released(B0) == [OpenCard(sid2, B0)]
    msgs = sent(core.card_opened(sid2, ATR))
    assert msgs == [ConnectClientRes(core.identity, ResultCode.OK), SetAtrReq(C23, ATR)]


def test_a_checked_session_that_closes_leaves_the_slot_to_the_newcomer(core: BankdCore) -> None:
    sid, _ = connect(core)  # no map yet: waits
    sid2, actions = connect(core)
    assert actions == [CheckAlive(sid)]
    assert core.session_closed(sid) == [
        Send(sid2, ConnectClientRes(core.identity, ResultCode.CARD_NOT_PRESENT)),
    ]
    assert core.create_mapping(C23, B0)[1] == [OpenCard(sid2, B0)]


def test_a_silent_connection_is_dropped_without_error_ind(core: BankdCore) -> None:
    """The identification timeout: nothing was claimed, nothing is said."""
    sid = core.session_opened()
    assert core.drop(sid, "no connectClientReq within 10s") == [
        Close(sid, "no connectClientReq within 10s")
    ]
    assert core.session_closed(sid) == []


def test_other_client_slots_are_not_affected(core: BankdCore) -> None:
    sid = mapped_session(core)
    _, actions = connect(core, C24)
    assert all(a.sid != sid for a in actions)


@pytest.mark.parametrize(
    ("msg", "why"),
    [
        (TpduModemToCard(C23, B1, SELECT_MF), "TPDU for C23:0 -> B1:1"),
        (TpduModemToCard(C24, B0, SELECT_MF), "TPDU for C24:0 -> B1:0"),
        (TpduModemToCard(C23, B0, b"\xa0\xa4\x00\x00"), "TPDU of 4 bytes"),
        (TpduModemToCard(C23, B0, bytes(261)), "TPDU of 261 bytes"),
        (CreateMappingReq(C23, B0), "unexpected CreateMappingReq"),
    ],
)
def test_protocol_errors_close_with_error_ind(core: BankdCore, msg: object, why: str) -> None:
    sid = mapped_session(core)
    actions = core.receive(sid, msg)  # type: ignore[arg-type]
    (ind,) = sent(actions)
    assert isinstance(ind, ErrorInd) and ind.error_string == why
    assert actions[-1] == Close(sid, why)
    assert ReleaseCard(sid, B0) in actions


def test_tpdu_before_the_card_is_open_is_refused(core: BankdCore) -> None:
    sid, _ = connect(core)
    actions = core.receive(sid, TpduModemToCard(C23, B0, SELECT_MF))
    assert actions[-1] == Close(sid, "TPDU while no card is open")


def test_second_connect_client_req_is_illegal(core: BankdCore) -> None:
    sid = mapped_session(core)
    actions = core.receive(sid, ConnectClientReq(CLIENT, C23))
    assert sent(actions) == [ConnectClientRes(core.identity, ResultCode.ILLEGAL_CLIENT_ID)]
    assert actions[-1] == Close(sid, "second connectClientReq")


def test_connect_client_req_without_slot_is_illegal(core: BankdCore) -> None:
    sid = core.session_opened()
    actions = core.receive(sid, ConnectClientReq(CLIENT))
    assert sent(actions) == [ConnectClientRes(core.identity, ResultCode.ILLEGAL_CLIENT_ID)]
    assert actions[-1] == Close(sid, "connectClientReq without slot")


@pytest.mark.parametrize("slot", [ClientSlot(-1, 0), ClientSlot(23, -1), ClientSlot(1024, 0)])
def test_connect_client_req_for_a_client_slot_out_of_range_is_illegal(
    core: BankdCore, slot: ClientSlot
) -> None:
    sid = core.session_opened()
    actions = core.receive(sid, ConnectClientReq(CLIENT, slot))
    assert sent(actions) == [ConnectClientRes(core.identity, ResultCode.ILLEGAL_CLIENT_ID)]
    assert actions[-1] == Close(sid, f"connectClientReq for {slot} (ids are 0..1023)")


# --- identity: a TLS client is who its certificate names (issue 11) -------------------------

C23_CERT = PeerIdentity("client", frozenset({23}), "commonName=client-23")
C24_CERT = PeerIdentity("client", frozenset({24}), "commonName=client-24")


def tls_connect(
    core: BankdCore, identity: PeerIdentity | None, slot: ClientSlot = C23
) -> tuple[int, list[Action]]:
    sid = core.session_opened("127.0.0.1:40000")
    core.session_secured(sid, identity)
    return sid, core.receive(sid, ConnectClientReq(CLIENT, slot))


def test_a_tls_client_gets_the_slot_its_certificate_names(core: BankdCore) -> None:
    assert core.create_mapping(C23, B0)[0] is ResultCode.OK
    sid, actions = tls_connect(core, C23_CERT)
    assert actions == [OpenCard(sid, B0)]
    several = PeerIdentity("client", frozenset({23, 24}), "commonName=modem-bay")
    sid24, actions = tls_connect(core, several, C24)  # one certificate, several client ids
    assert sent(actions) == [ConnectClientRes(core.identity, ResultCode.CARD_NOT_PRESENT)]
    assert core.sessions[sid24].state is SessionState.CONN_CLIENT_WAIT_MAP


@pytest.mark.parametrize(
    ("identity", "named"),
    [
        (C24_CERT, "certificate 'commonName=client-24' (client:24)"),
        (PeerIdentity("bankd", frozenset({1}), "commonName=bankd-1"),
         "certificate 'commonName=bankd-1' (bankd:1)"),
        (PeerIdentity("server", subject="commonName=server"),
         "certificate 'commonName=server' (server)"),
        (None, "a certificate naming no remsim peer"),
    ],
)  # fmt: skip
def test_a_claim_the_certificate_does_not_name_is_refused_and_the_real_client_keeps_its_card(
    core: BankdCore, identity: PeerIdentity | None, named: str, caplog: pytest.LogCaptureFixture
) -> None:
    real = mapped_session(core)  # C23:0 on B1:0, card open
    sid, actions = tls_connect(core, identity)  # claims C23:0
    cause = f"{named} claims C23:0"
    assert actions == [
        Send(sid, ConnectClientRes(core.identity, ResultCode.ILLEGAL_CLIENT_ID)),
        Close(sid, cause),
    ]
    assert core.sessions[sid].state is SessionState.CLOSED
    (line,) = [r for r in caplog.records if r.levelno >= logging.WARNING]
    assert line.getMessage() == f"[{sid} CLOSED] connectClientReq refused: {cause}"
    assert (line.peer, line.client_slot, line.bank_slot, line.cause) == (  # type: ignore[attr-defined]
        "127.0.0.1:40000", "C23:0", "B1:0", cause,
    )  # fmt: skip
    # The real client's session is untouched: its TPDUs still reach the card.
    assert core.sessions[real].state is SessionState.CONN_CLIENT_MAPPED_CARD
    tpdu = TpduModemToCard(C23, B0, SELECT_MF)
    assert core.receive(real, tpdu) == [Transmit(real, B0, tpdu)]
    assert core.session_closed(sid) == []


def test_without_tls_the_claim_alone_counts(core: BankdCore) -> None:
    """Plaintext: no certificate, a claim of a held slot only gets the holder checked."""
    sid = mapped_session(core)
    _, actions = connect(core)
    assert actions == [CheckAlive(sid)]


# --- reset (bankd.md §8) ----------------------------------------------------------------------

SHELL_RESET = SlotPhysStatus(
    reset_active=True, vcc_present=False, clk_active=False, card_present=True
)
POWER_UP = SlotPhysStatus(reset_active=False, vcc_present=True, clk_active=True, card_present=True)


def status(core: BankdCore, sid: int, st: SlotPhysStatus) -> list[Action]:
    return core.receive(sid, ClientSlotStatusInd(C23, B0, st))


def test_reset_request_resets_the_card_and_sends_the_new_atr(core: BankdCore) -> None:
    sid = mapped_session(core)
    assert status(core, sid, SHELL_RESET) == [ResetCard(sid, B0, warm=False)]
    new_atr = bytes.fromhex("3b00")
    assert sent(core.card_opened(sid, new_atr)) == [SetAtrReq(C23, new_atr)]
    # the shell client's RESET sends the same indication every time: each one resets
    assert status(core, sid, SHELL_RESET) == [ResetCard(sid, B0, warm=False)]


def test_reset_edges() -> None:
    core = BankdCore(1, 2, bankd_identity("b", "1"))
    sid = mapped_session(core)
    assert status(core, sid, POWER_UP) == []  # VCC on, RST off: nothing to do
    warm = SlotPhysStatus(reset_active=True, vcc_present=True, clk_active=True)
    assert status(core, sid, warm) == [ResetCard(sid, B0, warm=True)]  # RST rising
    held = SlotPhysStatus(reset_active=True, vcc_present=True, clk_active=False)
    assert status(core, sid, held) == []  # still in reset: only CLK changed
    assert status(core, sid, POWER_UP) == []
    cold = SlotPhysStatus(reset_active=True, vcc_present=False)
    assert status(core, sid, cold) == [ResetCard(sid, B0, warm=False)]  # VCC falling
    assert status(core, sid, SlotPhysStatus(reset_active=True)) == []  # VCC unknown: still off


def test_reset_without_an_open_card_is_ignored(core: BankdCore) -> None:
    sid, _ = connect(core)
    assert status(core, sid, SHELL_RESET) == []


def test_reset_failure_counts_as_card_lost(core: BankdCore) -> None:
    sid = mapped_session(core)
    status(core, sid, SHELL_RESET)
    actions = core.card_failed(sid, CardNotPresentError("gone"), now=0.0)
    assert isinstance(sent(actions)[0], ErrorInd) and actions[-1].sid == sid
