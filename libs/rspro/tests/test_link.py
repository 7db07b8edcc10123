"""The connecting side's link FSM (procedures.md §3.1, current-version back-off)."""

from __future__ import annotations

import asyncio
import itertools

from rspro import (
    ClientSlot,
    ComponentIdentity,
    ComponentType,
    ConnectClientReq,
    ConnectClientRes,
    ResultCode,
    RsproStream,
    start_server,
)
from rspro.link import (
    BACKOFF_TABLE,
    CloseTcp,
    LinkFsm,
    LinkState,
    NotifyConnected,
    NotifyLost,
    OpenTcp,
    RsproLink,
    SendConnectReq,
)

SERVER = ComponentType.REMSIM_SERVER


def connected_fsm() -> LinkFsm:
    fsm = LinkFsm(SERVER)
    fsm.establish(0.0)
    assert fsm.timeout(fsm.deadline or 0) == [OpenTcp()]
    assert fsm.tcp_up(1.0) == [SendConnectReq()]
    assert fsm.connect_res(ResultCode.OK, SERVER, 1.0) == [NotifyConnected()]
    return fsm


def test_backoff_table_has_the_originals_shape() -> None:
    assert len(BACKOFF_TABLE) == 124
    assert BACKOFF_TABLE[:4] == (0, 0, 0, 1) and BACKOFF_TABLE[-1] == 16


def test_establish_connects_at_once_then_waits_for_the_response() -> None:
    fsm = LinkFsm(SERVER)
    assert fsm.establish(100.0) == []
    assert fsm.state is LinkState.REESTABLISH_DELAY
    assert fsm.deadline == 100.001
    assert fsm.timeout(100.001) == [OpenTcp()]
    assert fsm.state is LinkState.REESTABLISH and fsm.deadline == 110.001
    assert fsm.tcp_up(100.002) == [SendConnectReq()]
    assert fsm.state is LinkState.ESTABLISHED and fsm.deadline == 110.002
    assert fsm.connect_res(ResultCode.OK, SERVER, 100.003) == [NotifyConnected()]
    assert fsm.state is LinkState.CONNECTED and fsm.deadline is None


def test_a_long_lived_connection_that_drops_reconnects_immediately() -> None:
    fsm = connected_fsm()
    assert fsm.tcp_down(500.0) == [NotifyLost(), CloseTcp()]
    assert fsm.state is LinkState.REESTABLISH_DELAY
    assert fsm.deadline == 500.001


def test_a_refusing_peer_is_retried_on_the_backoff_table_from_its_first_step() -> None:
    fsm = LinkFsm(SERVER)
    now = 0.0
    fsm.establish(now)
    waits = []
    for _ in range(6):
        start = fsm.deadline or 0.0
        waits.append(round(start - now, 3))
        now = start
        assert fsm.timeout(now) == [OpenTcp()]
        assert fsm.tcp_down(now) == []  # connection refused: nothing to close
        assert fsm.state is LinkState.REESTABLISH_DELAY
    assert waits == [0.001, 0.001, 0.001, 1.0, 1.0, 1.0]


def test_a_peer_that_drops_and_refuses_is_reached_within_a_second_once_back() -> None:
    fsm = connected_fsm()
    now = 500.0  # a long-lived connection drops: the table starts over
    fsm.tcp_down(now)
    attempts = []
    while now < 520.0:
        now = fsm.deadline or 0.0
        assert fsm.timeout(now) == [OpenTcp()]
        attempts.append(now)
        fsm.tcp_down(now)  # refused while the peer restarts
    gaps = [later - earlier for earlier, later in itertools.pairwise(attempts)]
    assert max(gaps) < 1.01  # so the first attempt after its return is at most 1 s late


def test_a_connect_without_any_answer_is_given_up_after_t2() -> None:
    fsm = LinkFsm(SERVER)
    fsm.establish(0.0)
    fsm.timeout(0.001)
    assert fsm.state is LinkState.REESTABLISH and fsm.deadline == 10.001
    assert fsm.timeout(10.001) == [CloseTcp()]
    assert fsm.state is LinkState.REESTABLISH_DELAY


def test_a_rejecting_peer_is_tried_three_times_at_once_then_backs_off() -> None:
    fsm = LinkFsm(SERVER)
    now = 0.0
    fsm.establish(now)
    waits = []
    for _ in range(6):
        start = fsm.deadline or 0.0
        waits.append(round(start - now, 3))
        now = start
        assert fsm.timeout(now) == [OpenTcp()]
        fsm.tcp_up(now)
        actions = fsm.connect_res(ResultCode.IDENTITY_IN_USE, SERVER, now)
        assert actions == [CloseTcp()]
    # table entries 0, 0, 0 (the first attempt and two retries), then 1 s each
    assert waits == [0.001, 0.001, 0.001, 1.0, 1.0, 1.0]


def test_no_connect_response_within_t1_reconnects() -> None:
    fsm = LinkFsm(SERVER)
    fsm.establish(0.0)
    fsm.timeout(0.001)
    fsm.tcp_up(0.002)
    assert fsm.timeout(10.002) == [CloseTcp()]
    assert fsm.state is LinkState.REESTABLISH_DELAY


def test_a_peer_of_the_wrong_type_stops_the_link() -> None:
    fsm = LinkFsm(SERVER)
    fsm.establish(0.0)
    fsm.timeout(0.001)
    fsm.tcp_up(0.002)
    assert fsm.connect_res(ResultCode.OK, ComponentType.REMSIM_BANKD, 0.003) == [CloseTcp()]
    assert fsm.state is LinkState.INIT and fsm.deadline is None


def test_disconnect_goes_to_init_without_reconnect() -> None:
    fsm = connected_fsm()
    assert fsm.disconnect() == [NotifyLost(), CloseTcp()]
    assert fsm.state is LinkState.INIT and fsm.deadline is None


SERVER_ID = ComponentIdentity(ComponentType.REMSIM_SERVER, "srv", "remsim-server", "1.0.0")
CLIENT_ID = ComponentIdentity(ComponentType.REMSIM_CLIENT, "cli", "remsim-client", "1.0.0")


async def test_link_connects_and_reconnects_when_the_server_drops_it() -> None:
    accepted: list[RsproStream] = []

    async def server(stream: RsproStream) -> None:
        accepted.append(stream)
        pdu = await stream.recv()
        assert isinstance(pdu.msg, ConnectClientReq)
        stream.send(ConnectClientRes(SERVER_ID, ResultCode.OK))
        await stream.wait_closed()

    srv = await start_server(server, "127.0.0.1", 0)
    port = srv.sockets[0].getsockname()[1]
    events: list[str] = []
    up = asyncio.Event()

    def connected() -> None:
        events.append("connected")
        up.set()

    link = RsproLink(
        name="server",
        connect_req=lambda: ConnectClientReq(CLIENT_ID, ClientSlot(23, 0)),
        peer_type=ComponentType.REMSIM_SERVER,
        on_pdu=lambda pdu: None,
        on_connected=connected,
        on_lost=lambda: events.append("lost"),
    )
    link.establish("127.0.0.1", port)
    await asyncio.wait_for(up.wait(), 5)
    up.clear()
    accepted[0].close()
    await asyncio.wait_for(up.wait(), 5)
    assert events == ["connected", "lost", "connected"]
    assert len(accepted) == 2
    await link.aclose()
    srv.close()
    await srv.wait_closed()
