"""The shell and vpcd front-ends in remsim's APDU mode (issue 17).

Shell: in APDU mode a line is any whole C-APDU up to ``rspro.MAX_APDU`` bytes, sent as one
apduModemToCard; in TPDU mode longer or extended ones get a clear error line and nothing
goes out. vpcd: in APDU mode each C-APDU vpcd passes on (short or extended, within vpcd's
2-byte length) is one apduModemToCard; TPDU mode is as before, and an extended APDU is
answered 6700 locally. End to end: the shell as a process and the vpcd front-end with a
scripted vpcd, both on our real bankd with a T=1 software SIM (conftest's ``t1_bankd``).
"""

from __future__ import annotations

import asyncio
import io
import socket
import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import TYPE_CHECKING

import pytest

from remsim_bankd.sim.fs import large_ef_content
from remsim_client import ApduMode, Client
from remsim_client.shell import ShellFrontend
from remsim_client.vpcd import (
    ConnectVpcd,
    DisconnectVpcd,
    SendApdu,
    SendToVpcd,
    SendTpdu,
    VpcdCard,
    VpcdFrontend,
)
from remsim_testing.client import TIMEOUT, ScriptedPeer, client_config, eventually
from rspro import MAX_APDU, ResultCode, SlotPhysStatus
from vpcd import GET_ATR, POWER_ON, frame

if TYPE_CHECKING:
    from conftest import SimBankd

pytestmark = pytest.mark.timeout(60)

T1_ATR = bytes.fromhex("3b98968131fe4572656d73696d54316d")  # card-t1
LARGE_EF = 32768
SELECT_LARGE_EF = bytes.fromhex("00a4000c022f50")
READ_ALL = bytes.fromhex("00b00000000000")  # READ BINARY, extended Le = 65536
SW_OK = b"\x90\x00"


def update_binary(offset: int, data: bytes) -> bytes:
    """UPDATE BINARY with an extended Lc."""
    return bytes([0x00, 0xD6, offset >> 8, offset & 0xFF, 0]) + len(data).to_bytes(2, "big") + data


# --- the shell, sans-IO ------------------------------------------------------------------------


class RecordingCore:
    def __init__(self) -> None:
        self.events: list[tuple[str, bytes]] = []

    def modem_tpdu(self, data: bytes) -> bool:
        self.events.append(("tpdu", data))
        return True

    def modem_apdu(self, capdu: bytes) -> bool:
        self.events.append(("apdu", capdu))
        return True

    def modem_status(self, status: SlotPhysStatus) -> None:
        raise AssertionError("not in these tests")

    def modem_pts(self, pts: bytes) -> None:
        raise AssertionError("not in these tests")

    def frontend_event(self, cause: str) -> None:
        raise AssertionError("not in these tests")


def shell(apdu_mode: bool) -> tuple[ShellFrontend, RecordingCore, io.StringIO]:
    err, core = io.StringIO(), RecordingCore()
    fe = ShellFrontend(io.StringIO(), err)
    fe.attach(core)
    if apdu_mode:
        fe.set_apdu_mode(True)
    return fe, core, err


class TestShellLines:
    @pytest.mark.parametrize("size", [4, 5, 261, 4096, MAX_APDU])
    def test_apdu_mode_sends_a_line_of_any_length_whole(self, size: int) -> None:
        fe, core, err = shell(apdu_mode=True)
        capdu = bytes([0x00, 0xD6, 0x00, 0x00]) + bytes(range(256)) * (size // 256 + 1)
        fe.handle_line(capdu[:size].hex())
        assert core.events == [("apdu", capdu[:size])] and err.getvalue() == ""

    @pytest.mark.parametrize("size", [1, 3, MAX_APDU + 1])
    def test_apdu_mode_refuses_what_no_frame_carries(self, size: int) -> None:
        fe, core, err = shell(apdu_mode=True)
        fe.handle_line(bytes(size).hex())
        assert core.events == []
        assert err.getvalue() == f"ERROR: a C-APDU has 4..{MAX_APDU} bytes, not {size}\n"

    def test_tpdu_mode_refuses_long_and_extended_apdus_clearly(self) -> None:
        fe, core, err = shell(apdu_mode=False)
        fe.handle_line(READ_ALL.hex())
        fe.handle_line((bytes.fromhex("00d60000ff") + bytes(256)).hex())  # 261 bytes
        assert core.events == []
        assert err.getvalue().splitlines() == [
            "ERROR: an extended C-APDU of 7 bytes needs the APDU mode, but the bankd link is "
            "in TPDU mode (5..260 bytes, short APDUs only): see --apdu-mode",
            "ERROR: a C-APDU of 261 bytes needs the APDU mode, but the bankd link is in TPDU "
            "mode (5..260 bytes, short APDUs only): see --apdu-mode",
        ]

    def test_tpdu_mode_is_as_before(self) -> None:
        fe, core, err = shell(apdu_mode=False)
        fe.handle_line("a0a40000023f00")
        fe.handle_line("00" * 1025)  # longer than the original's buffer: its parse error
        assert core.events == [("tpdu", bytes.fromhex("a0a40000023f00"))]
        assert err.getvalue().startswith("ERROR parsing C-APDU `0000")

    def test_a_card_failure_is_an_error_line(self) -> None:
        fe, _, err = shell(apdu_mode=True)
        fe.card_error(ResultCode.CARD_UNRESPONSIVE, "no answer in 3 s")
        fe.card_error(ResultCode.CARD_NOT_PRESENT, None)
        assert err.getvalue().splitlines() == [
            "ERROR: the card did not answer: CARD_UNRESPONSIVE (no answer in 3 s)",
            "ERROR: the card did not answer: CARD_NOT_PRESENT",
        ]


# --- the shell as a process, real bankd --------------------------------------------------------


async def test_the_shell_reads_and_writes_32_kib_in_single_lines(
    server: ScriptedPeer, t1_bankd: SimBankd
) -> None:
    proc = await asyncio.create_subprocess_exec(
        *(sys.executable, "-m", "remsim_client.shell", "-p", str(server.port), "-c", "23"),
        *("-n", "0", "--apdu-mode", "on"),
        stdin=asyncio.subprocess.PIPE,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        limit=1 << 20,  # an R-APDU line of 32 KiB is ~98,000 characters
    )
    assert proc.stdin is not None and proc.stdout is not None and proc.stderr is not None

    async def line() -> str:
        assert proc.stdout is not None
        return (await asyncio.wait_for(proc.stdout.readline(), TIMEOUT)).decode()

    def rapdu(text: str) -> bytes:
        assert text.startswith("R-APDU: "), text
        return bytes.fromhex(text.removeprefix("R-APDU: "))

    try:
        await t1_bankd.send_client(server)
        assert await line() == "SET_ATR: 3b 00 \n"
        assert await line() == "SET_ATR: " + T1_ATR.hex(" ") + " \n"
        block = bytes(range(251, 0, -1)) * 100  # 25,100 bytes: one line of 50,214 digits
        for capdu in (SELECT_LARGE_EF, update_binary(0, block)):
            proc.stdin.write(capdu.hex().encode() + b"\n")
            assert rapdu(await line()) == SW_OK
        t1_bankd.proxy.reset()
        proc.stdin.write(READ_ALL.hex().encode() + b"\n")
        data = rapdu(await line())
        assert data == block + large_ef_content(LARGE_EF)[len(block) :] + SW_OK
        assert t1_bankd.proxy.counts("up") == {"apduModemToCard": 1}
        proc.stdin.close()
        assert await asyncio.wait_for(proc.wait(), TIMEOUT) == 0
        log = (await proc.stderr.read()).decode()
        assert "bankd link in APDU mode" in log and "ERROR" not in log
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()


# --- the vpcd card, sans-IO --------------------------------------------------------------------


def vpcd_card(apdu_mode: bool) -> VpcdCard:
    card = VpcdCard()
    card.set_atr(bytes.fromhex("3b00"))
    card.card_insert(apdu_mode=apdu_mode)
    assert card.set_atr(T1_ATR) == [ConnectVpcd()]
    card.vpcd_connected()
    return card


class TestVpcdCard:
    @pytest.mark.parametrize(
        "capdu",
        [
            bytes.fromhex("00b00000"),  # case 1: as it is, no P3 added
            SELECT_LARGE_EF,
            READ_ALL,
            update_binary(0, bytes(MAX_APDU - 7)),  # the largest a frame carries
        ],
    )
    def test_apdu_mode_forwards_whole_apdus(self, capdu: bytes) -> None:
        card = vpcd_card(apdu_mode=True)
        assert card.vpcd_data(frame(capdu), 0.0) == [SendApdu(capdu)]
        rapdu = bytes(LARGE_EF) + SW_OK
        assert card.card_to_modem(rapdu) == [SendToVpcd(frame(rapdu))]

    @pytest.mark.parametrize("size", [2, 3, MAX_APDU + 1, 0xFFFF])
    def test_apdu_mode_answers_6700_to_what_no_frame_carries(self, size: int) -> None:
        card = vpcd_card(apdu_mode=True)
        assert card.vpcd_data(frame(bytes(size)), 0.0) == [SendToVpcd(frame(b"\x67\x00"))]
        assert not card.apdu_pending

    def test_a_card_failure_re_inserts_the_card(self) -> None:
        card = vpcd_card(apdu_mode=True)
        card.vpcd_data(frame(READ_ALL), 0.0)
        actions = card.card_error(ResultCode.CARD_UNRESPONSIVE, "mute")
        assert actions == [DisconnectVpcd(), ConnectVpcd()]  # the application's call fails
        assert not card.apdu_pending

    def test_tpdu_mode_is_as_before_and_refuses_extended_apdus(self) -> None:
        card = vpcd_card(apdu_mode=False)
        assert card.vpcd_data(frame(SELECT_LARGE_EF), 0.0) == [SendTpdu(SELECT_LARGE_EF)]
        card.card_to_modem(SW_OK)
        assert card.vpcd_data(frame(READ_ALL), 0.0) == [SendToVpcd(frame(b"\x67\x00"))]

    def test_the_mode_ends_with_the_card(self) -> None:
        card = vpcd_card(apdu_mode=True)
        card.card_remove()
        card.card_insert()  # a bankd link in TPDU mode this time
        card.set_atr(T1_ATR)
        card.vpcd_connected()
        assert card.vpcd_data(frame(READ_ALL), 0.0) == [SendToVpcd(frame(b"\x67\x00"))]


# --- the vpcd front-end, real bankd ------------------------------------------------------------


class ScriptedVpcd:
    """vpcd's side of the card connection: listens, the client connects as the card."""

    def __init__(self) -> None:
        self.conns: asyncio.Queue[tuple[asyncio.StreamReader, asyncio.StreamWriter]] = (
            asyncio.Queue()
        )
        self.port = 0
        self._server: asyncio.Server | None = None

    async def __aenter__(self) -> ScriptedVpcd:
        async def on_conn(r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
            w.get_extra_info("socket").setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            self.conns.put_nowait((r, w))

        self._server = await asyncio.start_server(on_conn, "127.0.0.1", 0, limit=1 << 20)
        self.port = self._server.sockets[0].getsockname()[1]
        return self

    async def __aexit__(self, *exc: object) -> None:
        assert self._server is not None
        self._server.close()


@asynccontextmanager
async def vpcd_session(
    server: ScriptedPeer, bankd: SimBankd, vpcd: ScriptedVpcd, mode: ApduMode
) -> AsyncIterator[tuple[asyncio.StreamReader, asyncio.StreamWriter]]:
    """The vpcd client on ``bankd``'s card: its card connection to vpcd, powered on."""
    fe = VpcdFrontend("127.0.0.1", vpcd.port, reconnect_interval=0.05)
    config = client_config(server, software="remsim-client", apdu_mode=mode)
    async with Client(config, fe) as client:
        try:
            await bankd.send_client(server)
            r, w = await asyncio.wait_for(vpcd.conns.get(), TIMEOUT)
            w.write(frame(bytes([GET_ATR])))
            assert await read_message(r) == T1_ATR
            w.write(frame(bytes([POWER_ON])))
            proxy = bankd.proxy
            await eventually(lambda: proxy.count("up", "clientSlotStatusInd") == 1)
            assert proxy.count("up", "setAtrRes") == 1
            proxy.reset()  # count the card's exchanges only
            assert client.apdu_mode is (mode is ApduMode.ON)
            yield r, w
            w.close()
        finally:
            await fe.aclose()


async def read_message(r: asyncio.StreamReader) -> bytes:
    async with asyncio.timeout(TIMEOUT):
        n = int.from_bytes(await r.readexactly(2), "big")
        return await r.readexactly(n)


async def test_the_vpcd_client_forwards_extended_apdus_whole(
    server: ScriptedPeer, t1_bankd: SimBankd
) -> None:
    async with ScriptedVpcd() as vpcd, vpcd_session(server, t1_bankd, vpcd, ApduMode.ON) as (r, w):
        w.write(frame(SELECT_LARGE_EF))
        assert await read_message(r) == SW_OK
        t1_bankd.proxy.reset()
        w.write(frame(READ_ALL))
        assert await read_message(r) == large_ef_content(LARGE_EF) + SW_OK
        assert t1_bankd.proxy.counts("up") == {"apduModemToCard": 1}


async def test_the_vpcd_client_in_tpdu_mode_answers_6700_to_an_extended_apdu(
    server: ScriptedPeer, t1_bankd: SimBankd
) -> None:
    async with ScriptedVpcd() as vpcd, vpcd_session(server, t1_bankd, vpcd, ApduMode.OFF) as (r, w):
        w.write(frame(READ_ALL))
        assert await read_message(r) == b"\x67\x00"  # locally: nothing went to the bankd
        w.write(frame(SELECT_LARGE_EF))
        assert await read_message(r) == SW_OK
        assert t1_bankd.proxy.counts("up") == {"tpduModemToCard": 1}
