"""The bankd's APDU path (``ClientConnection._fast_tpdu``): from a session's second TPDU on,
each one is relayed from pre-encoded frames, with the same bytes, the same decisions of the
core and the same counts as the general path; whatever is not exactly one TPDU of the
session's slot pair still takes the general path."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import Any

import pytest

from remsim_bankd import clients, metrics
from remsim_bankd.bankd import Bankd, BankdConfig, bankd_identity
from remsim_bankd.drivers import StaticCards
from remsim_testing.bankd import ScriptedServer, connect_client, create_mapping, remove_mapping
from remsim_testing.rspro_peers import ScriptedConnection, frame
from rspro import (
    BankSlot,
    ClientSlot,
    ErrorInd,
    ResultCode,
    RsproPdu,
    TpduCardToModem,
    TpduModemToCard,
    encode,
    rspro_frame,
)

C23, B0, B1 = ClientSlot(23, 0), BankSlot(1, 0), BankSlot(1, 1)
SELECT_MF = bytes.fromhex("a0a40000023f00")
GET_CHALLENGE = bytes.fromhex("0084000080")
LONG = bytes(range(255))  # long-form DER lengths in both directions

pytestmark = pytest.mark.timeout(30)


class EchoCard:
    """Answers every APDU with its reverse and 9000; remembers what it was sent."""

    atr = b"\x3b\x00"

    def __init__(self) -> None:
        self.apdus: list[bytes] = []

    def connect(self) -> bytes:
        return self.atr

    def transmit(self, apdu: bytes) -> bytes:
        self.apdus.append(apdu)
        return apdu[::-1] + b"\x90\x00"

    def reset(self, warm: bool = False) -> bytes:
        return self.atr

    def disconnect(self) -> None:
        pass


def answer(data: bytes, bank: BankSlot = B0) -> bytes:
    """The frame the general path sends for the card's answer ``data``."""
    return rspro_frame(encode(RsproPdu(TpduCardToModem(bank, C23, data))))


@pytest.fixture
def fast(monkeypatch: pytest.MonkeyPatch) -> list[bool]:
    """What each ``_fast_tpdu`` call returned (True: the TPDU took the fast path)."""
    taken: list[bool] = []
    original: Callable[..., bool] = clients.ClientConnection._fast_tpdu

    def spy(self: Any, data: bytes) -> bool:
        taken.append(original(self, data))
        return taken[-1]

    monkeypatch.setattr(clients.ClientConnection, "_fast_tpdu", spy)
    return taken


@asynccontextmanager
async def mapped(server: ScriptedServer, card: EchoCard) -> AsyncIterator[ScriptedConnection]:
    """A bankd with C23:0 mapped to B1:0 (``card``) and C23:0 connected, its ATR received."""
    config = BankdConfig(
        identity=bankd_identity("fast", "1.0.0"),
        bank_id=1,
        num_slots=2,
        server=("127.0.0.1", server.port),
        bind=("127.0.0.1", 0),
        inventory="off",
    )
    bankd = Bankd(config, StaticCards({B0: card, B1: EchoCard()}))
    await bankd.start()
    try:
        peer = await server.bankd()
        assert await create_mapping(peer, C23, B0) is ResultCode.OK
        client, msgs = await connect_client(bankd.port, C23)
        assert len(msgs) == 2  # connectClientRes ok, setAtrReq
        client.server = peer  # type: ignore[attr-defined]
        yield client
    finally:
        await bankd.aclose()


async def test_every_tpdu_after_the_first_takes_the_fast_path_with_the_same_bytes(
    server: ScriptedServer, fast: list[bool]
) -> None:
    card = EchoCard()
    to_card = metrics.TO_CARD._value.get()
    to_modem = metrics.TO_MODEM._value.get()
    async with mapped(server, card) as client:
        for apdu in (SELECT_MF, GET_CHALLENGE, SELECT_MF, LONG):
            client.send(TpduModemToCard(C23, B0, apdu))
            _, raw = await client.expect(TpduCardToModem)
            assert raw == answer(apdu[::-1] + b"\x90\x00")
        assert card.apdus == [SELECT_MF, GET_CHALLENGE, SELECT_MF, LONG]
    # (the spy notes a fast TPDU once its answer is out: read after the bankd stopped)
    assert fast == [True, True, True]  # the first one went the general way
    assert metrics.TO_CARD._value.get() - to_card == 4
    assert metrics.TO_MODEM._value.get() - to_modem == 4


async def test_what_is_not_one_tpdu_of_the_session_takes_the_general_path(
    server: ScriptedServer, fast: list[bool]
) -> None:
    card = EchoCard()
    async with mapped(server, card) as client:
        client.send(TpduModemToCard(C23, B0, SELECT_MF))
        await client.expect(TpduCardToModem)
        # another tag (two bytes), then two TPDUs in one write: answered as always
        client.send(frame(TpduModemToCard(C23, B0, GET_CHALLENGE), tag=2342))
        _, raw = await client.expect(TpduCardToModem)
        assert raw == answer(GET_CHALLENGE[::-1] + b"\x90\x00")
        two = rspro_frame(encode(RsproPdu(TpduModemToCard(C23, B0, SELECT_MF))))
        client.send(two + two)
        for _ in range(2):
            _, raw = await client.expect(TpduCardToModem)
            assert raw == answer(SELECT_MF[::-1] + b"\x90\x00")
        assert fast == [False, False]
        # a TPDU for another bank slot is the core's protocol error, as before
        client.send(TpduModemToCard(C23, B1, SELECT_MF))
        error, _ = await client.expect(ErrorInd)
        assert "TPDU for" in (error.error_string or "")
        await client.expect_closed()
        assert fast == [False, False, False]
        assert card.apdus == [SELECT_MF, GET_CHALLENGE, SELECT_MF, SELECT_MF]


async def test_no_tpdu_reaches_the_card_once_the_map_is_removed(
    server: ScriptedServer, fast: list[bool]
) -> None:
    card = EchoCard()
    async with mapped(server, card) as client:
        client.send(TpduModemToCard(C23, B0, SELECT_MF))
        await client.expect(TpduCardToModem)
        peer = client.server  # type: ignore[attr-defined]
        assert await remove_mapping(peer, C23, B0) is ResultCode.OK
        client.send(TpduModemToCard(C23, B0, SELECT_MF))  # the session is closed meanwhile
        msgs = await client.closed_by_peer()
        assert not any(isinstance(m, TpduCardToModem) for m in msgs), msgs
        assert card.apdus == [SELECT_MF]
