"""``RemoteCard`` in remsim's APDU mode (issue 17), against our real bankd with a software SIM.

    RemoteCard C23:0 -> WireProxy (counts the RSPRO messages) -> remsim bankd B1:0 -> SimCard

The bankd runs in-process (conftest's ``t0_bankd``/``t1_bankd``: its control link to a
scripted server that maps C23:0 to B1:0); the client's server is scripted and sends the
client to the proxy.
In APDU mode a case-4 command on a T=0 card is one apduModemToCard and one apduCardToModem
(the bankd fetches the response itself), where TPDU mode takes two TPDUs; a T=1 card reads
its 32 KiB EF in one extended APDU. TPDU mode refuses extended APDUs before anything goes
out. The card failing an APDU (a scripted bankd) is a ``CardError``.
"""

from __future__ import annotations

import asyncio
import ipaddress
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

from remsim_bankd.sim.fs import USIM_AID, large_ef_content
from remsim_client import (
    BlockingRemoteCard,
    CardError,
    CardTimeoutError,
    InvalidApduError,
    RemoteCard,
)
from remsim_testing.client import (
    B1_0,
    BANKD_IDENTITY,
    C23,
    SERVER_IDENTITY,
    ScriptedPeer,
    eventually,
)
from remsim_testing.pki import TestCA
from remsim_testing.rspro_peers import ScriptedConnection
from rspro import (
    MAX_APDU,
    ApduCardToModem,
    ApduModemToCard,
    ConfigClientBankReq,
    ConnectClientReq,
    ConnectClientRes,
    IpPort,
    RemsimFeatures,
    ResultCode,
    SetAtrReq,
    SetAtrRes,
)

if TYPE_CHECKING:
    from conftest import SimBankd, SimBankdFactory

pytestmark = pytest.mark.timeout(60)

SELECT_USIM = bytes([0x00, 0xA4, 0x04, 0x04, len(USIM_AID)]) + USIM_AID  # P2 04: FCP
LARGE_EF = 32768
SELECT_LARGE_EF = bytes.fromhex("00a4000c022f50")
READ_ALL = bytes.fromhex("00b00000000000")  # READ BINARY, extended Le = 65536: all there is


@asynccontextmanager
async def remote_card(
    server: ScriptedPeer, bankd: SimBankd, mode: str, **kwargs: object
) -> AsyncIterator[RemoteCard]:
    """A RemoteCard with ``apdu_mode=mode`` on ``bankd``'s card, opened."""
    card = RemoteCard("127.0.0.1", 23, 0, port=server.port, apdu_mode=mode, **kwargs)  # type: ignore[arg-type]
    opened = asyncio.create_task(card.open())
    await bankd.send_client(server)
    await opened
    proxy = bankd.proxy
    try:
        await eventually(lambda: proxy.count("up", "setAtrRes") == 1)
        proxy.reset()  # count the card's exchanges only
        yield card
    finally:
        await card.close()


def exchanged(bankd: SimBankd) -> tuple[dict[str, int], dict[str, int]]:
    """The RSPRO messages client -> bankd and back (since the last reset)."""
    return bankd.proxy.counts("up"), bankd.proxy.counts("down")


# --- real bankd, software SIM ------------------------------------------------------------------


async def test_a_case_4_command_on_a_t0_card_is_one_round_trip(
    server: ScriptedPeer, t0_bankd: SimBankd
) -> None:
    async with remote_card(server, t0_bankd, "on") as card:
        assert card.apdu_mode and card.protocol == 0
        fcp = await card.transmit(SELECT_USIM + b"\x00")  # case 4, Le = 00
    assert fcp[0] == 0x62 and USIM_AID in fcp and fcp[-2:] == b"\x90\x00"
    assert exchanged(t0_bankd) == ({"apduModemToCard": 1}, {"apduCardToModem": 1})


async def test_tpdu_mode_takes_two_round_trips_for_the_same(
    server: ScriptedPeer, t0_bankd: SimBankd
) -> None:
    async with remote_card(server, t0_bankd, "off", auto_get_response=True) as card:
        assert not card.apdu_mode and card.protocol is None
        fcp = await card.transmit(SELECT_USIM)  # T=0: 61xx, then GET RESPONSE
    assert fcp[0] == 0x62 and USIM_AID in fcp and fcp[-2:] == b"\x90\x00"
    assert exchanged(t0_bankd) == ({"tpduModemToCard": 2}, {"tpduCardToModem": 2})


async def test_a_t1_card_reads_32_kib_in_one_extended_apdu(
    server: ScriptedPeer, t1_bankd: SimBankd
) -> None:
    async with remote_card(server, t1_bankd, "on") as card:
        assert card.apdu_mode and card.protocol == 1
        assert await card.transmit(SELECT_LARGE_EF) == b"\x90\x00"
        t1_bankd.proxy.reset()
        data = await card.transmit(READ_ALL)
        assert exchanged(t1_bankd) == ({"apduModemToCard": 1}, {"apduCardToModem": 1})
        assert data == large_ef_content(LARGE_EF) + b"\x90\x00"
        # UPDATE BINARY with extended Lc, read back with a short and an extended Le.
        block = bytes(range(256)) * 4
        update = bytes.fromhex("00d60100") + b"\x00" + len(block).to_bytes(2, "big") + block
        assert await card.transmit(update) == b"\x90\x00"
        assert await card.transmit(bytes.fromhex("00b0010000")) == block[:256] + b"\x90\x00"
        assert await card.transmit(bytes.fromhex("00b00100000400")) == block + b"\x90\x00"


async def test_tpdu_mode_refuses_an_extended_apdu_before_sending_it(
    server: ScriptedPeer, t1_bankd: SimBankd
) -> None:
    async with remote_card(server, t1_bankd, "off") as card:
        assert not card.apdu_mode
        with pytest.raises(InvalidApduError, match="extended APDU of 7 bytes needs the APDU mode"):
            await card.transmit(READ_ALL)
        with pytest.raises(InvalidApduError, match="APDU mode"):
            await card.transmit(bytes.fromhex("00d6000000") + bytes(256))  # 261 bytes
        assert await card.transmit(SELECT_LARGE_EF) == b"\x90\x00"  # a short one still goes
    assert exchanged(t1_bankd) == ({"tpduModemToCard": 1}, {"tpduCardToModem": 1})


async def test_apdu_mode_refuses_what_no_frame_carries(
    server: ScriptedPeer, t1_bankd: SimBankd
) -> None:
    async with remote_card(server, t1_bankd, "on") as card:
        for size in (0, 3, MAX_APDU + 1):
            with pytest.raises(InvalidApduError, match=f"4..{MAX_APDU} bytes .*, not {size}$"):
                await card.transmit(bytes(size))
    assert exchanged(t1_bankd) == ({}, {})


async def test_the_blocking_remote_card_mirrors_the_mode(
    server: ScriptedPeer, t1_bankd: SimBankd
) -> None:
    def use_card() -> tuple[bool, int | None, bytes]:
        with BlockingRemoteCard("127.0.0.1", 23, 0, port=server.port, apdu_mode="on") as card:
            assert card.transmit(SELECT_LARGE_EF) == b"\x90\x00"
            return card.apdu_mode, card.protocol, card.transmit(READ_ALL)

    # Its own loop runs in a thread; the server and the bankd go on on this test's loop.
    used = asyncio.create_task(asyncio.to_thread(use_card))
    await t1_bankd.send_client(server)
    mode, protocol, data = await used
    assert (mode, protocol) == (True, 1)
    assert data == large_ef_content(LARGE_EF) + b"\x90\x00"


async def test_auto_over_tls_with_our_bankd_is_the_apdu_mode(
    tmp_path: Path, sim_bankd: SimBankdFactory
) -> None:
    """The default: no setting on either side, TLS with certificates naming each peer."""
    ca = TestCA(tmp_path / "ca")
    bankd_security = ca.issue("bankd-1", "urn:remsim:bankd:1").security()
    server_security = ca.issue("server", "urn:remsim:server").security()
    client_security = ca.issue("client-23", "urn:remsim:client:23").security()
    server = ScriptedPeer(SERVER_IDENTITY)
    server.ssl = server_security.server_context
    async with server, sim_bankd("card-t1", bankd_security, server_security) as bankd:
        # The wire proxy forwards TLS as it is: its port is the bankd's for the client.
        card = RemoteCard("127.0.0.1", 23, 0, port=server.port, security=client_security)
        opened = asyncio.create_task(card.open())
        await bankd.send_client(server)
        await opened
        try:
            assert card.apdu_mode and card.protocol == 1
            assert await card.transmit(SELECT_LARGE_EF) == b"\x90\x00"
            assert await card.transmit(READ_ALL) == large_ef_content(LARGE_EF) + b"\x90\x00"
        finally:
            await card.close()


# --- a scripted bankd: the card failing --------------------------------------------------------

T1_ATR = bytes.fromhex("3b98968131fe4572656d73696d54316d")


async def server_of(server: ScriptedPeer, bankd: ScriptedPeer) -> None:
    """The server's part: accept the client, send it to the scripted ``bankd``."""
    srv = await server.accept()
    await srv.expect(ConnectClientReq)
    srv.send(ConnectClientRes(SERVER_IDENTITY, ResultCode.OK))
    srv.send(ConfigClientBankReq(B1_0, IpPort(ipaddress.IPv4Address("127.0.0.1"), bankd.port)))


@asynccontextmanager
async def scripted_card(
    server: ScriptedPeer, bankd: ScriptedPeer, **kwargs: object
) -> AsyncIterator[tuple[RemoteCard, ScriptedConnection]]:
    """A RemoteCard in APDU mode on a scripted bankd of ours (T=1 card)."""
    card = RemoteCard("127.0.0.1", 23, 0, port=server.port, apdu_mode="on", **kwargs)  # type: ignore[arg-type]
    opened = asyncio.create_task(card.open())
    await server_of(server, bankd)
    bk = await bankd.accept()
    await bk.expect(ConnectClientReq)
    bk.send(ConnectClientRes(BANKD_IDENTITY, ResultCode.OK, RemsimFeatures(apdu=True)))
    bk.send(SetAtrReq(C23, T1_ATR, protocol=1))
    await opened
    await bk.expect(SetAtrRes)
    try:
        yield card, bk
    finally:
        await card.close()


async def test_a_card_failure_is_a_card_error_with_the_bankd_text(
    server: ScriptedPeer, bankd: ScriptedPeer
) -> None:
    async with scripted_card(server, bankd) as (card, bk):
        failed = asyncio.create_task(card.transmit(SELECT_LARGE_EF))
        msg, _ = await bk.expect(ApduModemToCard)
        assert msg == ApduModemToCard(C23, B1_0, SELECT_LARGE_EF)
        bk.send(ApduCardToModem(B1_0, C23, ResultCode.CARD_UNRESPONSIVE, b"", "card mute"))
        with pytest.raises(CardError, match=r"CARD_UNRESPONSIVE: card mute") as exc:
            await failed
        assert exc.value.result is ResultCode.CARD_UNRESPONSIVE
        again = asyncio.create_task(card.transmit(SELECT_LARGE_EF))
        await bk.expect(ApduModemToCard)
        bk.send(ApduCardToModem(B1_0, C23, ResultCode.OK, b"\x90\x00"))
        assert await again == b"\x90\x00"


async def test_a_late_answer_answers_nothing(server: ScriptedPeer, bankd: ScriptedPeer) -> None:
    async with scripted_card(server, bankd, apdu_timeout=0.1) as (card, bk):
        with pytest.raises(CardTimeoutError):
            await card.transmit(SELECT_LARGE_EF)
        await bk.expect(ApduModemToCard)
        next_one = asyncio.create_task(card.transmit(READ_ALL, timeout=5))
        msg, _ = await bk.expect(ApduModemToCard)
        assert msg.capdu == READ_ALL
        bk.send(ApduCardToModem(B1_0, C23, ResultCode.CARD_NOT_PRESENT))  # the first's: late
        bk.send(ApduCardToModem(B1_0, C23, ResultCode.OK, b"\x6a\x82"))
        assert await next_one == b"\x6a\x82"
        await eventually(lambda: card.ready)
