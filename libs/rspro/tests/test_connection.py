"""The sans-IO connection (rspro-wire.md §2.3): keepalive timing on an injected clock, CCM
replies per role, PDU events, framing errors."""

from __future__ import annotations

import pytest

from rspro import (
    BankSlot,
    ClientSlot,
    ComponentIdentity,
    ComponentType,
    ConnectClientReq,
    ConnectClientRes,
    ConnectionClosedError,
    InvalidPdu,
    IpaFramingError,
    Keepalive,
    KeepaliveTimedOut,
    PduReceived,
    ResultCode,
    RsproConnection,
    RsproDecodeError,
    RsproPdu,
    TpduModemToCard,
    decode,
    encode,
    ipa,
    rspro_frame,
)

CLIENT = ComponentIdentity(ComponentType.REMSIM_CLIENT, "modemhost", "remsim-client", "1.0.0")
SERVER = ComponentIdentity(ComponentType.REMSIM_SERVER, "srvhost", "remsim-server", "1.0.0")
CONNECT = ConnectClientReq(CLIENT, ClientSlot(23, 0))
TPDU = TpduModemToCard(ClientSlot(23, 0), BankSlot(1, 0), bytes.fromhex("a0a40000023f00"))


def frame(msg: ConnectClientReq | TpduModemToCard | RsproPdu) -> bytes:
    return rspro_frame(encode(msg if isinstance(msg, RsproPdu) else RsproPdu(msg)))


def started(now: float = 0.0, **kwargs: object) -> RsproConnection:
    conn = RsproConnection(initiator=True, **kwargs)  # type: ignore[arg-type]
    conn.start(now)
    return conn


# --- keepalive ----------------------------------------------------------------------------


def test_ping_on_start_then_wait_10_s_for_the_pong() -> None:
    conn = started(100.0)
    assert conn.data_to_send() == ipa.PING
    assert conn.next_deadline() == 110.0


def test_the_first_ping_goes_out_before_the_first_pdu() -> None:
    conn = started()
    conn.send(CONNECT)
    assert conn.data_to_send() == ipa.PING + frame(CONNECT)
    assert conn.data_to_send() == b""


def test_next_ping_30_s_after_the_pong_not_after_the_ping() -> None:
    conn = started(0.0)
    conn.data_to_send()
    assert conn.receive_data(ipa.PONG, now=4.0) == []
    assert conn.next_deadline() == 34.0
    assert conn.handle_timeout(33.9) == []
    assert conn.data_to_send() == b""
    assert conn.handle_timeout(34.0) == []
    assert conn.data_to_send() == ipa.PING
    assert conn.next_deadline() == 44.0


def test_no_pong_within_10_s_means_the_peer_is_dead() -> None:
    conn = started(0.0)
    assert conn.handle_timeout(9.99) == []
    assert conn.handle_timeout(10.0) == [KeepaliveTimedOut()]
    assert conn.next_deadline() is None
    assert conn.handle_timeout(100.0) == []  # reported once


def test_a_late_pong_does_not_revive_a_dead_link() -> None:
    conn = started(0.0)
    conn.handle_timeout(10.0)
    conn.receive_data(ipa.PONG, now=11.0)
    assert conn.next_deadline() is None


def test_an_unsolicited_pong_while_idle_is_ignored() -> None:
    conn = started(0.0)
    conn.receive_data(ipa.PONG, now=1.0)
    conn.receive_data(ipa.PONG, now=20.0)
    assert conn.next_deadline() == 31.0


def test_a_long_healthy_link_pings_every_30_s_plus_round_trip() -> None:
    conn = started(0.0)
    pings = []
    now = 0.0
    while now < 300.0:
        if conn.data_to_send() == ipa.PING:
            pings.append(now)
            now += 0.5  # round trip
            conn.receive_data(ipa.PONG, now)
        deadline = conn.next_deadline()
        assert deadline is not None
        now = deadline
        assert conn.handle_timeout(now) == []
    assert pings[:4] == [0.0, 30.5, 61.0, 91.5]


def test_timing_is_configurable() -> None:
    conn = started(0.0, keepalive=Keepalive(interval=2.0, timeout=0.5))
    assert conn.next_deadline() == 0.5
    conn.receive_data(ipa.PONG, now=0.1)
    assert conn.next_deadline() == 2.1


def test_without_keepalive_no_ping_is_sent_but_pings_are_answered() -> None:
    """As the original bankd on its client port (wire spec §2.3)."""
    conn = started(0.0, keepalive=None)
    assert conn.data_to_send() == b""
    assert conn.next_deadline() is None
    assert conn.handle_timeout(1e9) == []
    conn.receive_data(ipa.PING, now=1.0)
    assert conn.data_to_send() == ipa.PONG


def test_an_idle_start_pings_only_after_one_interval() -> None:
    """The bankd's client port: nothing unasked before the client's connectClientReq."""
    conn = RsproConnection(initiator=False, keepalive=Keepalive(interval=20.0, timeout=10.0))
    conn.start(0.0, idle=True)
    assert conn.data_to_send() == b""
    assert conn.next_deadline() == 20.0
    assert conn.handle_timeout(20.0) == []
    assert conn.data_to_send() == ipa.PING
    assert conn.handle_timeout(30.0) == [KeepaliveTimedOut()]


def test_a_liveness_check_pings_now_with_its_own_timeout() -> None:
    conn = RsproConnection(initiator=False, keepalive=Keepalive(interval=20.0, timeout=10.0))
    conn.start(0.0, idle=True)
    conn.ping(5.0, timeout=1.0)
    assert conn.data_to_send() == ipa.PING
    assert conn.next_deadline() == 6.0
    conn.receive_data(ipa.PONG, now=5.2)
    assert conn.last_pong == 5.2
    assert conn.next_deadline() == 25.2  # back to the keepalive interval
    conn.ping(30.0, timeout=1.0)
    assert conn.handle_timeout(31.0) == [KeepaliveTimedOut()]


# --- CCM replies per role -----------------------------------------------------------------

ID_GET = ipa.ccm_frame(ipa.CcmType.ID_GET, bytes([1, ipa.IdTag.UNIT]))
ID_RESP = ipa.id_resp_frame([ipa.IdTag.UNIT])


@pytest.mark.parametrize(
    ("received", "initiator_sends", "acceptor_sends"),
    [
        (ipa.PING, ipa.PONG, ipa.PONG),
        (ipa.PONG, b"", b""),
        (ID_GET, ID_RESP + ipa.ID_ACK, b""),
        (ipa.ID_ACK, b"", ipa.ID_ACK),
        (ID_RESP, b"", b""),
        (ipa.ccm_frame(ipa.CcmType.ID_NACK), b"", b""),
        (b"\x00\x01\xfe\x42", b"", b""),  # unknown CCM type
    ],
    ids=["PING", "PONG", "ID_GET", "ID_ACK", "ID_RESP", "ID_NACK", "unknown"],
)
def test_ccm_replies(received: bytes, initiator_sends: bytes, acceptor_sends: bytes) -> None:
    for initiator, expected in ((True, initiator_sends), (False, acceptor_sends)):
        conn = RsproConnection(initiator=initiator, keepalive=None)
        assert conn.receive_data(received, now=0.0) == []
        assert conn.data_to_send() == expected


def test_id_resp_is_the_all_zero_identity() -> None:
    assert ID_RESP == b"\x00\x0a\xfe\x05\x00\x07\x08" + b"0/0/0\0"


# --- PDUs ---------------------------------------------------------------------------------


def test_pdus_become_events() -> None:
    conn = RsproConnection(initiator=False)
    events = conn.receive_data(frame(CONNECT) + frame(TPDU), now=0.0)
    assert events == [PduReceived(RsproPdu(CONNECT)), PduReceived(RsproPdu(TPDU))]


def test_events_do_not_depend_on_segmentation() -> None:
    stream = ipa.PING + frame(CONNECT) + ipa.PONG + frame(TPDU)
    conn = RsproConnection(initiator=False, keepalive=None)
    events = [e for i in range(len(stream)) for e in conn.receive_data(stream[i : i + 1], 0.0)]
    assert events == [PduReceived(RsproPdu(CONNECT)), PduReceived(RsproPdu(TPDU))]
    assert conn.data_to_send() == ipa.PONG


def test_a_bare_message_gets_the_default_envelope() -> None:
    conn = RsproConnection(initiator=False, keepalive=None)
    conn.send(ConnectClientRes(SERVER, ResultCode.OK))
    sent = conn.data_to_send()
    pdu = decode(sent[4:])
    assert (pdu.version, pdu.tag) == (2, 2342)


def test_an_undecodable_pdu_is_an_event_and_the_stream_stays_in_sync() -> None:
    garbage = b"\x30\x03\x02\x01\x00"
    conn = RsproConnection(initiator=False)
    events = conn.receive_data(rspro_frame(garbage) + frame(TPDU), now=0.0)
    assert isinstance(events[0], InvalidPdu)
    assert isinstance(events[0].error, RsproDecodeError)
    assert events[0].payload == garbage
    assert events[1:] == [PduReceived(RsproPdu(TPDU))]


@pytest.mark.parametrize(
    "data",
    [
        b"\x00\x02\x42\x00\x00",  # unknown IPA protocol
        b"\x00\x03\xee\x05\x30\x00",  # OSMO extension other than RSPRO (GSUP)
        b"\x05\x00\xee",  # longer than 1200 bytes
    ],
    ids=["protocol", "extension", "size"],
)
def test_broken_framing_raises(data: bytes) -> None:
    conn = RsproConnection(initiator=True)
    with pytest.raises(IpaFramingError):
        conn.receive_data(data, now=0.0)


def test_after_close_nothing_is_sent_or_received() -> None:
    conn = started()
    conn.close()
    assert conn.next_deadline() is None
    assert conn.receive_data(frame(TPDU), now=1.0) == []
    with pytest.raises(ConnectionClosedError):
        conn.send(TPDU)


def test_two_ends_wired_together_for_five_minutes() -> None:
    """Client and server both ping; a TPDU every 7 s; nobody times out."""
    client = RsproConnection(initiator=True)
    server = RsproConnection(initiator=False)
    client.start(0.0)
    server.start(0.0)
    received: list[RsproPdu] = []
    now = 0.0
    next_tpdu = 0.0
    while now < 300.0:
        if now >= next_tpdu:
            client.send(TPDU)
            next_tpdu += 7.0
        for _ in range(3):  # let replies to replies settle
            for events in (
                server.receive_data(client.data_to_send(), now),
                client.receive_data(server.data_to_send(), now),
            ):
                received += [e.pdu for e in events if isinstance(e, PduReceived)]
        deadlines = [d for d in (client.next_deadline(), server.next_deadline()) if d]
        now = min([*deadlines, next_tpdu])
        assert client.handle_timeout(now) == []
        assert server.handle_timeout(now) == []
    assert received == [RsproPdu(TPDU)] * 43
