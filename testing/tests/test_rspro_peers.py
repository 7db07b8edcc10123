"""The scripted peer itself: two scripted ends talk to each other over 127.0.0.1."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from remsim_testing.rspro_peers import ScriptedConnection, ScriptedListener, frame
from rspro import (
    ComponentIdentity,
    ComponentType,
    ConnectBankReq,
    ResetStateReq,
    ResetStateRes,
    ResultCode,
)
from rspro.ipa import ID_ACK, PING, PONG

BANKD = ComponentIdentity(ComponentType.REMSIM_BANKD, "fixme-name", "remsim-bankd", "1.0.0")
CONNECT_BANK_REQ = ConnectBankReq(BANKD, 1, 2)


@pytest.fixture
async def pair() -> AsyncIterator[tuple[ScriptedConnection, ScriptedConnection]]:
    async with ScriptedListener() as listener:
        near = await ScriptedConnection.connect(listener.port)
        far = await listener.accept()
        yield near, far
        near.close()


async def test_pdus_arrive_with_their_exact_frames(
    pair: tuple[ScriptedConnection, ScriptedConnection],
) -> None:
    near, far = pair
    near.send(CONNECT_BANK_REQ)
    near.send(frame(ResetStateReq(), tag=77))
    msg, raw = await far.expect(ConnectBankReq)
    assert (msg, raw) == (CONNECT_BANK_REQ, frame(CONNECT_BANK_REQ))
    assert await far.recv() == (ResetStateReq(), frame(ResetStateReq(), tag=77))
    assert far.frames == [frame(CONNECT_BANK_REQ), frame(ResetStateReq(), tag=77)]
    await far.expect_nothing()


async def test_expect_skips_only_the_kinds_it_is_told(
    pair: tuple[ScriptedConnection, ScriptedConnection],
) -> None:
    near, far = pair
    near.send(ResetStateRes(ResultCode.OK))
    near.send(ResetStateReq())
    assert (await far.expect(ResetStateReq, skip=(ResetStateRes,)))[0] == ResetStateReq()
    near.send(ResetStateRes(ResultCode.OK))
    with pytest.raises(AssertionError, match="expected ResetStateReq"):
        await far.expect(ResetStateReq)


async def test_pings_are_answered_counted_and_recorded_unless_pong_is_off(
    pair: tuple[ScriptedConnection, ScriptedConnection],
) -> None:
    near, far = pair
    near.send(PING)
    assert await near.frame_at(0) == PONG
    assert (far.pings, far.ccm, near.ccm) == (1, [PING], [PONG])
    far.pong = False
    near.send(PING + ID_ACK)
    await far.frame_at(2)
    assert far.pings == 2 and far.ccm == [PING, PING, ID_ACK]
    await near.expect_nothing()
    assert near.frames == [PONG]  # no second PONG


async def test_a_frame_written_in_pieces_is_counted(
    pair: tuple[ScriptedConnection, ScriptedConnection],
) -> None:
    near, far = pair
    data = frame(ResetStateReq())
    near.send(data[:3])
    await near.writer.drain()
    await far.expect_nothing(0.05)
    near.send(data[3:])
    assert await far.recv() == (ResetStateReq(), data)
    assert far.split_frames == 1


async def test_close_is_seen_with_what_came_before(
    pair: tuple[ScriptedConnection, ScriptedConnection],
) -> None:
    near, far = pair
    near.send(ResetStateReq())
    near.close()
    assert await far.closed_by_peer() == [ResetStateReq()]
    with pytest.raises(ConnectionError):
        await far.recv()
    await far.wait_closed()
    assert far.closed.is_set()


async def test_expect_closed_fails_on_a_pdu_before_the_close(
    pair: tuple[ScriptedConnection, ScriptedConnection],
) -> None:
    near, far = pair
    near.send(ResetStateReq())
    await near.aclose()
    with pytest.raises(AssertionError, match="unexpected"):
        await far.expect_closed()


async def test_abort_resets_the_connection(
    pair: tuple[ScriptedConnection, ScriptedConnection],
) -> None:
    near, far = pair
    near.abort()
    await far.expect_closed()
    await near.wait_closed()


async def test_listener_tells_untaken_connections_and_closes_them_on_stop() -> None:
    async with ScriptedListener() as listener:
        assert listener.no_new_connection()
        with pytest.raises(TimeoutError):
            await listener.accept(timeout=0.05)
        conn = await ScriptedConnection.connect(listener.port)
        accepted = await listener.accept()
        assert listener.no_new_connection() and listener.conns == [accepted]
        second = await ScriptedConnection.connect(listener.port)
        await second.expect_nothing(0.05)
        assert not listener.no_new_connection()
    await conn.expect_closed()  # stop() closed every connection it accepted
    await second.expect_closed()
