"""The server side of one control connection, without sockets (procedures.md §3.2)."""

from ipaddress import IPv4Address

import pytest

import rspro
from remsim_control import BankdAddress, BankSlot, ClientConfig, ClientSlot, ComponentType
from remsim_server.role import (
    BankHello,
    ClientHello,
    Close,
    ConfigAcknowledged,
    Ignored,
    MappingCreated,
    MappingRemoved,
    RequestTimedOut,
    Role,
    ServerConnection,
    StateReset,
)

SERVER = rspro.ComponentIdentity(
    rspro.ComponentType.REMSIM_SERVER, "fixme-name", "remsim-server", "1.0.0"
)
BANKD = rspro.ComponentIdentity(
    rspro.ComponentType.REMSIM_BANKD, "fixme-name", "remsim-bankd", "1.0.0"
)
CLIENT = rspro.ComponentIdentity(rspro.ComponentType.REMSIM_CLIENT, "vm", "remsim-client", "1.0.0")
OK, ILLEGAL_SLOT = rspro.ResultCode.OK, rspro.ResultCode.ILLEGAL_SLOT_ID
B1_0, B1_1 = BankSlot(bank_id=1, slot_nr=0), BankSlot(bank_id=1, slot_nr=1)
C23_0, C24_0 = ClientSlot(client_id=23, slot_nr=0), ClientSlot(client_id=24, slot_nr=0)


def pdu(msg: rspro.Message) -> rspro.RsproPdu:
    return rspro.RsproPdu(msg)


def bank_connection() -> ServerConnection:
    conn = ServerConnection(SERVER, now=0.0)
    hello = conn.receive(pdu(rspro.ConnectBankReq(BANKD, 1, 2)))
    assert hello == BankHello(conn.hello.identity, 1, 2)  # type: ignore[union-attr]
    conn.accept()
    return conn


def client_connection() -> ServerConnection:
    conn = ServerConnection(SERVER, now=0.0)
    conn.receive(pdu(rspro.ConnectClientReq(CLIENT, rspro.ClientSlot(23, 0))))
    conn.accept()
    return conn


def test_a_bankd_identifies_and_is_answered_with_the_servers_identity() -> None:
    conn = ServerConnection(SERVER, now=0.0)
    hello = conn.receive(pdu(rspro.ConnectBankReq(BANKD, 1, 2)))
    assert isinstance(hello, BankHello)
    assert (hello.bank_id, hello.number_of_slots) == (1, 2)
    assert hello.identity.type is ComponentType.BANKD
    assert conn.peer == "B1"
    assert conn.accept() == rspro.ConnectBankRes(SERVER, OK)
    assert conn.role is Role.CONNECTED_BANKD
    assert conn.next_deadline() is None


def test_a_client_identifies_with_its_client_slot() -> None:
    conn = ServerConnection(SERVER, now=0.0)
    hello = conn.receive(pdu(rspro.ConnectClientReq(CLIENT, rspro.ClientSlot(23, 0))))
    assert isinstance(hello, ClientHello) and hello.client == C23_0
    assert conn.peer == "C23:0"
    assert conn.accept() == rspro.ConnectClientRes(SERVER, OK)
    assert conn.role is Role.CONNECTED_CLIENT


@pytest.mark.parametrize(
    "request_",
    [
        rspro.ConnectBankReq(CLIENT, 1, 2),
        rspro.ConnectClientReq(BANKD, rspro.ClientSlot(23, 0)),
        rspro.ConnectClientReq(CLIENT, None),
    ],
    ids=["bank-req-from-client", "client-req-from-bankd", "no-client-slot"],
)
def test_a_bad_connect_request_closes_without_reply(request_: rspro.Message) -> None:
    conn = ServerConnection(SERVER, now=0.0)
    assert isinstance(conn.receive(pdu(request_)), Close)
    assert conn.role is Role.CLOSED


def test_a_peer_that_does_not_identify_within_10_s_is_closed() -> None:
    conn = ServerConnection(SERVER, now=100.0)
    assert conn.next_deadline() == 110.0
    assert conn.handle_timeout(109.9) == []
    assert isinstance(conn.receive(pdu(rspro.CreateMappingRes(OK))), Ignored)
    assert [type(due) for due in conn.handle_timeout(110.0)] == [Close]


def test_a_refused_peer_reads_identity_in_use_and_is_closed_1_s_later() -> None:
    conn = ServerConnection(SERVER, now=0.0)
    conn.receive(pdu(rspro.ConnectClientReq(CLIENT, rspro.ClientSlot(23, 0))))
    answer = conn.reject(now=5.0)
    assert answer == rspro.ConnectClientRes(SERVER, rspro.ResultCode.IDENTITY_IN_USE)
    assert conn.role is Role.REJECTED
    assert isinstance(conn.receive(pdu(rspro.ConfigClientBankRes(OK))), Ignored)
    assert conn.handle_timeout(5.5) == []
    assert conn.handle_timeout(6.0) == [Close("refused")]


def test_responses_are_matched_to_requests_by_order_per_kind() -> None:
    conn = bank_connection()
    conn.create_mapping(10, B1_0, C23_0, now=0.0)
    conn.create_mapping(11, B1_1, C24_0, now=0.0)
    conn.remove_mapping(10, B1_0, C23_0, now=0.0)
    assert conn.awaiting_create(10) and conn.awaiting_create(11) and conn.awaiting_remove(10)
    assert conn.receive(pdu(rspro.CreateMappingRes(OK))) == MappingCreated(10, OK)
    assert conn.receive(pdu(rspro.CreateMappingRes(ILLEGAL_SLOT))) == MappingCreated(
        11, ILLEGAL_SLOT
    )
    assert conn.receive(pdu(rspro.RemoveMappingRes(OK))) == MappingRemoved(10, OK)
    # Nothing is outstanding any more: further responses answer nothing.
    assert isinstance(conn.receive(pdu(rspro.CreateMappingRes(OK))), Ignored)
    assert isinstance(conn.receive(pdu(rspro.RemoveMappingRes(OK))), Ignored)


def test_the_connection_knows_which_requests_are_outstanding() -> None:
    conn = bank_connection()
    conn.create_mapping(10, B1_0, C23_0, now=0.0)
    conn.remove_mapping(11, B1_1, C24_0, now=0.0)
    assert (conn.awaiting_create(10), conn.awaiting_create(11)) == (True, False)
    assert (conn.awaiting_remove(11), conn.awaiting_remove(10)) == (True, False)
    conn.receive(pdu(rspro.CreateMappingRes(OK)))
    assert not conn.awaiting_create(10)


def test_a_map_request_unanswered_in_time_times_out_and_its_late_answer_is_dropped() -> None:
    conn = ServerConnection(SERVER, now=0.0, map_request_timeout=10.0)
    conn.receive(pdu(rspro.ConnectBankReq(BANKD, 1, 2)))
    conn.accept()
    conn.create_mapping(10, B1_0, C23_0, now=0.0)
    conn.remove_mapping(11, B1_1, C24_0, now=5.0)
    assert conn.next_deadline() == 10.0
    assert conn.handle_timeout(9.9) == []
    assert conn.handle_timeout(10.0) == [RequestTimedOut(10, "createMappingReq")]
    assert not conn.awaiting_create(10)
    assert conn.next_deadline() == 15.0
    assert conn.handle_timeout(15.0) == [RequestTimedOut(11, "removeMappingReq")]
    assert conn.next_deadline() is None and conn.handle_timeout(99.0) == []
    conn.create_mapping(10, B1_0, C23_0, now=20.0)  # retried
    # The late answer goes to the request that timed out, the next to the retry.
    assert isinstance(conn.receive(pdu(rspro.CreateMappingRes(OK))), Ignored)
    assert conn.receive(pdu(rspro.CreateMappingRes(OK))) == MappingCreated(10, OK)
    assert isinstance(conn.receive(pdu(rspro.RemoveMappingRes(OK))), Ignored)


def test_a_bankd_is_reset_and_its_answer_reported() -> None:
    conn = bank_connection()
    assert conn.reset_state() == rspro.ResetStateReq()
    assert conn.receive(pdu(rspro.ResetStateRes(OK))) == StateReset(OK)
    assert isinstance(conn.receive(pdu(rspro.ResetStateRes(OK))), Ignored)  # none outstanding
    with pytest.raises(RuntimeError):
        client_connection().reset_state()


def test_a_response_without_a_request_is_ignored() -> None:
    conn = bank_connection()
    assert isinstance(conn.receive(pdu(rspro.CreateMappingRes(OK))), Ignored)
    assert isinstance(conn.receive(pdu(rspro.RemoveMappingRes(OK))), Ignored)
    assert conn.role is Role.CONNECTED_BANKD


def test_requests_carry_the_slots_as_the_original() -> None:
    conn = bank_connection()
    assert conn.create_mapping(1, B1_0, C23_0, now=0.0) == rspro.CreateMappingReq(
        rspro.ClientSlot(23, 0), rspro.BankSlot(1, 0)
    )
    assert conn.remove_mapping(1, B1_0, C23_0, now=0.0) == rspro.RemoveMappingReq(
        rspro.ClientSlot(23, 0), rspro.BankSlot(1, 0)
    )


def test_a_client_configuration_is_remembered_and_acknowledged() -> None:
    conn = client_connection()
    config = ClientConfig(bank=B1_0, bankd=BankdAddress(host="127.0.0.1", port=9999))
    request = conn.configure(config)
    assert request == rspro.ConfigClientBankReq(
        rspro.BankSlot(1, 0), rspro.IpPort(IPv4Address("127.0.0.1"), 9999)
    )
    assert conn.sent == config
    assert conn.receive(pdu(rspro.ConfigClientBankRes(OK))) == ConfigAcknowledged(config, OK)


def test_messages_for_the_other_role_are_ignored() -> None:
    bank, client = bank_connection(), client_connection()
    assert isinstance(bank.receive(pdu(rspro.ConfigClientBankRes(OK))), Ignored)
    assert isinstance(client.receive(pdu(rspro.CreateMappingRes(OK))), Ignored)
    assert isinstance(bank.receive(pdu(rspro.ConnectBankReq(BANKD, 1, 2))), Ignored)
    with pytest.raises(RuntimeError):
        client.create_mapping(1, B1_0, C23_0, now=0.0)
