"""remsim-client-vpcd over real TCP: scripted server and bankd, and a scripted vpcd.

The vpcd peer talks like Debian's vpcd 0.8 (length and body in two writes, Nagle on). The
RSPRO frames are compared with the original ifdhandler client's (scenario
s9_ifdhandler_client of reference/upstream-1.0.0: client C24:0, bank slot B1:0).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import socket
import sys
import time
from collections.abc import AsyncIterator

import pytest

from remsim_client import Client, ClientConfig, MainState
from remsim_client.vpcd import VpcdFrontend
from remsim_client.vpcd.cli import main
from remsim_testing.client import (
    B1_0,
    TIMEOUT,
    ScriptedPeer,
    client_config,
    config_bank,
    eventually,
)
from remsim_testing.rspro_peers import ScriptedConnection
from rspro import (
    ClientSlot,
    ClientSlotStatusInd,
    ConfigClientBankRes,
    ConnectClientReq,
    SetAtrReq,
    SetAtrRes,
    TpduCardToModem,
    TpduModemToCard,
    decode,
)
from vpcd import GET_ATR, POWER_OFF, POWER_ON, RESET

C24 = ClientSlot(24, 0)
CARD_ATR = bytes.fromhex("3b9f96801fc78031a073be21136743200718000001a5")
SELECT_MF = bytes.fromhex("a0a40000023f00")

# The original ifdhandler client's frames (s9_ifdhandler_client, seq 17, 21, 22, 23, 25).
S9_CONNECT_CLIENT_REQ = bytes.fromhex(
    "0040ee07303d800102810100a235a23330290a0100160a6669786d652d6e616d65801172656d73696d5f"
    "69666468616e646c65728105312e302e303006020118020100"
)
S9_SET_ATR_RES = bytes.fromhex("0010ee07300d800102810100a205ab030a0100")
S9_POWER_UP = bytes.fromhex(
    "002bee073028800102810100a220ae1e30060201180201003006020101020100300c8001008101ff8201ff8301ff"
)
S9_POWER_DOWN = bytes.fromhex(
    "002bee073028800102810100a220ae1e30060201180201003006020101020100300c8001ff8101008201008301ff"
)
S9_TPDU_SELECT_MF = bytes.fromhex(
    "0034ee073031800102810100a229ac2730060201180201003006020101020100300c0101000101000101"
    "000101000407a0a40000023f00"
)


# --- scripted vpcd ---------------------------------------------------------------------------


class VpcdConn:
    """vpcd's end of one card connection."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader, self.writer = reader, writer
        # As vpcd 0.8: Nagle on, length and body in separate writes.
        writer.get_extra_info("socket").setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 0)

    async def send(self, payload: bytes) -> None:
        self.writer.write(len(payload).to_bytes(2, "big"))
        await self.writer.drain()
        self.writer.write(payload)
        await self.writer.drain()

    async def control(self, code: int) -> None:
        await self.send(bytes([code]))

    async def recv(self, timeout: float = TIMEOUT) -> bytes:
        async with asyncio.timeout(timeout):
            n = int.from_bytes(await self.reader.readexactly(2), "big")
            return await self.reader.readexactly(n)

    async def exchange(self, payload: bytes) -> bytes:
        await self.send(payload)
        return await self.recv()

    async def wait_removed(self) -> None:
        """The card left the reader: the connection is closed."""
        async with asyncio.timeout(TIMEOUT):
            assert await self.reader.read() == b""

    def close(self) -> None:
        self.writer.close()


class FakeVpcd:
    def __init__(self, port: int = 0) -> None:
        self.port = port
        self.conns: asyncio.Queue[VpcdConn] = asyncio.Queue()
        self._server: asyncio.Server | None = None
        self._all: list[VpcdConn] = []

    async def start(self) -> FakeVpcd:
        self._server = await asyncio.start_server(self._on_conn, "127.0.0.1", self.port)
        self.port = self._server.sockets[0].getsockname()[1]
        return self

    async def _on_conn(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        conn = VpcdConn(reader, writer)
        self._all.append(conn)
        self.conns.put_nowait(conn)

    async def accept(self, timeout: float = TIMEOUT) -> VpcdConn:
        """The card is inserted: the client connected."""
        return await asyncio.wait_for(self.conns.get(), timeout)

    async def no_card_for(self, seconds: float) -> None:
        with pytest.raises(TimeoutError):
            await self.accept(seconds)

    async def stop(self) -> None:
        for conn in self._all:
            conn.close()
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()


# --- fixtures --------------------------------------------------------------------------------


@pytest.fixture
async def vpcd() -> AsyncIterator[FakeVpcd]:
    fake = await FakeVpcd().start()
    yield fake
    await fake.stop()


def ifdhandler_config(server: ScriptedPeer) -> ClientConfig:
    """Client C24:0 with the identity the original ifdhandler sent (for byte comparisons)."""
    return client_config(server, C24, name="fixme-name", software="remsim_ifdhandler")


@contextlib.asynccontextmanager
async def vpcd_client(
    server: ScriptedPeer, vpcd: FakeVpcd, **kwargs: object
) -> AsyncIterator[tuple[Client, VpcdFrontend]]:
    kwargs.setdefault("reconnect_interval", 0.05)
    fe = VpcdFrontend("127.0.0.1", vpcd.port, **kwargs)  # type: ignore[arg-type]
    async with Client(ifdhandler_config(server), fe) as client:
        try:
            yield client, fe
        finally:
            await fe.aclose()


async def map_card(
    client: Client, server: ScriptedPeer, bankd: ScriptedPeer
) -> tuple[ScriptedConnection, ScriptedConnection]:
    """Slotmap B1:0 <-> C24:0: the client connects to the bankd, which sends the ATR."""
    srv, raw = await server.accept_client()
    assert raw == S9_CONNECT_CLIENT_REQ
    await eventually(lambda: client.state is MainState.UNCONFIGURED)
    srv.send(config_bank(bankd))
    await srv.expect(ConfigClientBankRes)
    bk, raw = await bankd.accept_client()
    assert raw == S9_CONNECT_CLIENT_REQ
    bk.send(SetAtrReq(C24, CARD_ATR))
    _, raw = await bk.expect(SetAtrRes)
    assert raw == S9_SET_ATR_RES
    return srv, bk


async def answer(bk: ScriptedConnection, rapdu: bytes) -> bytes:
    """The bankd's side of one APDU: returns the TPDU's raw frame, sends ``rapdu``."""
    _, raw = await bk.expect(TpduModemToCard)
    bk.send(TpduCardToModem(B1_0, C24, rapdu))
    return raw


# --- tests -----------------------------------------------------------------------------------


class TestCardSession:
    async def test_pcscd_session_as_the_original_ifdhandler(
        self, server: ScriptedPeer, bankd: ScriptedPeer, vpcd: FakeVpcd
    ) -> None:
        async with vpcd_client(server, vpcd) as (client, _):
            _, bk = await map_card(client, server, bankd)
            card = await vpcd.accept()
            # pcscd's first presence poll and power-up (vpcd.md §6).
            assert await card.exchange(bytes([GET_ATR])) == CARD_ATR
            await card.control(POWER_ON)  # never answered
            assert await card.exchange(bytes([GET_ATR])) == CARD_ATR
            _, raw = await bk.expect(ClientSlotStatusInd)
            assert raw == S9_POWER_UP
            # An application's APDU goes to the bank, the answer comes back.
            exchange = asyncio.create_task(card.exchange(SELECT_MF))
            assert await answer(bk, b"\x9f\x16") == S9_TPDU_SELECT_MF
            assert await exchange == b"\x9f\x16"
            # Idle power-down: to the bank as the original does (a cold reset there).
            await card.control(POWER_OFF)
            assert await card.exchange(bytes([GET_ATR])) == CARD_ATR
            _, raw = await bk.expect(ClientSlotStatusInd)
            assert raw == S9_POWER_DOWN
            # SCardDisconnect(SCARD_RESET_CARD): RST asserted with VCC on, then released.
            await card.control(RESET)
            assert await card.exchange(bytes([GET_ATR])) == CARD_ATR
            msg, _ = await bk.expect(ClientSlotStatusInd)
            assert isinstance(msg, ClientSlotStatusInd)
            assert msg.slot_phys_status.reset_active and msg.slot_phys_status.vcc_present
            _, raw = await bk.expect(ClientSlotStatusInd)
            assert raw == S9_POWER_UP
            # A 4-byte case-1 APDU gets P3=00; unknown control messages are ignored.
            await card.control(0x07)
            exchange = asyncio.create_task(card.exchange(bytes.fromhex("00b00000")))
            tpdu, _ = await bk.expect(TpduModemToCard)
            assert isinstance(tpdu, TpduModemToCard) and tpdu.data == bytes.fromhex("00b0000000")
            bk.send(TpduCardToModem(B1_0, C24, b"\x69\x86"))
            assert await exchange == b"\x69\x86"

    async def test_no_card_in_the_reader_until_the_bankd_sent_the_atr(
        self, server: ScriptedPeer, bankd: ScriptedPeer, vpcd: FakeVpcd
    ) -> None:
        async with vpcd_client(server, vpcd) as (client, fe):
            srv, _ = await server.accept_client()
            await eventually(lambda: client.state is MainState.UNCONFIGURED)
            await vpcd.no_card_for(0.2)  # no slotmap: no card
            srv.send(config_bank(bankd))
            bk, _ = await bankd.accept_client()
            await eventually(lambda: client.state is MainState.OPERATIONAL)
            await vpcd.no_card_for(0.2)  # bankd link up, but no ATR yet
            bk.send(SetAtrReq(C24, CARD_ATR))
            card = await vpcd.accept()
            assert await card.exchange(bytes([GET_ATR])) == CARD_ATR
            assert fe.connected
            # The slotmap is removed (port 0): the card leaves the reader.
            srv.send(config_bank(None))
            await card.wait_removed()
            await vpcd.no_card_for(0.2)
            assert not fe.connected

    async def test_a_new_atr_reinserts_the_card(
        self, server: ScriptedPeer, bankd: ScriptedPeer, vpcd: FakeVpcd
    ) -> None:
        async with vpcd_client(server, vpcd) as (client, _):
            _, bk = await map_card(client, server, bankd)
            card = await vpcd.accept()
            new_atr = bytes.fromhex("3b9f96801fc78031a073be21136743200718000001a6")
            bk.send(SetAtrReq(C24, new_atr))
            await card.wait_removed()
            card = await vpcd.accept()
            assert await card.exchange(bytes([GET_ATR])) == new_atr

    async def test_with_atr_ignore_rspro_the_configured_atr_is_shown(
        self, server: ScriptedPeer, bankd: ScriptedPeer, vpcd: FakeVpcd
    ) -> None:
        atr = bytes.fromhex("3b0201")
        fe = VpcdFrontend("127.0.0.1", vpcd.port, atr_ignore_rspro=True)
        config = ClientConfig(
            server_host="127.0.0.1",
            server_port=server.port,
            client_slot=C24,
            atr=atr,
            atr_ignore_rspro=True,
        )
        async with Client(config, fe):
            srv, _ = await server.accept_client()
            srv.send(config_bank(bankd))
            await bankd.accept_client()  # no SetAtrReq needed
            card = await vpcd.accept()
            assert await card.exchange(bytes([GET_ATR])) == atr
            await fe.aclose()
            await card.wait_removed()

    async def test_idle_power_cycles_kept_local(
        self, server: ScriptedPeer, bankd: ScriptedPeer, vpcd: FakeVpcd
    ) -> None:
        async with vpcd_client(server, vpcd, ignore_idle_power_cycles=True) as (client, _):
            _, bk = await map_card(client, server, bankd)
            card = await vpcd.accept()
            await card.control(POWER_ON)
            _, raw = await bk.expect(ClientSlotStatusInd)
            assert raw == S9_POWER_UP
            for code in (POWER_OFF, GET_ATR, POWER_ON, GET_ATR):
                await card.send(bytes([code]))
            assert await card.recv() == CARD_ATR and await card.recv() == CARD_ATR
            exchange = asyncio.create_task(card.exchange(SELECT_MF))
            # The next thing the bank hears about is the APDU: no power-down, no power-up.
            assert await answer(bk, b"\x9f\x16") == S9_TPDU_SELECT_MF
            assert await exchange == b"\x9f\x16"


class TestFailures:
    async def test_apdu_timeout_removes_the_card_until_the_bank_answers(
        self, server: ScriptedPeer, bankd: ScriptedPeer, vpcd: FakeVpcd
    ) -> None:
        async with vpcd_client(server, vpcd, apdu_timeout=0.2) as (client, fe):
            _, bk = await map_card(client, server, bankd)
            card = await vpcd.accept()
            start = time.monotonic()
            await card.send(SELECT_MF)
            await bk.expect(TpduModemToCard)
            await card.wait_removed()  # PC/SC sees the card removed, not a made-up SW
            assert 0.2 <= time.monotonic() - start < 1.0
            assert fe.card.timeouts == 1
            await vpcd.no_card_for(0.2)  # stays out while the bank is silent
            bk.send(TpduCardToModem(B1_0, C24, b"\x90\x00"))  # the late answer
            card = await vpcd.accept()  # the bank is back: so is the card
            assert await card.exchange(bytes([GET_ATR])) == CARD_ATR
            exchange = asyncio.create_task(card.exchange(SELECT_MF))
            await answer(bk, b"\x9f\x16")
            assert await exchange == b"\x9f\x16"
            assert client.state is MainState.OPERATIONAL

    async def test_bankd_lost_during_an_apdu_removes_the_card(
        self, server: ScriptedPeer, bankd: ScriptedPeer, vpcd: FakeVpcd
    ) -> None:
        async with vpcd_client(server, vpcd) as (client, _):
            _, bk = await map_card(client, server, bankd)
            card = await vpcd.accept()
            await card.send(SELECT_MF)
            await bk.expect(TpduModemToCard)
            bk.close()  # the bankd goes away without answering
            await card.wait_removed()  # PC/SC sees the card removed, not a made-up SW
            # The bankd is back: the client reconnects, the card returns.
            bk, _ = await bankd.accept_client()
            bk.send(SetAtrReq(C24, CARD_ATR))
            await bk.expect(SetAtrRes)
            card = await vpcd.accept()
            exchange = asyncio.create_task(card.exchange(SELECT_MF))
            await answer(bk, b"\x9f\x16")
            assert await exchange == b"\x9f\x16"

    async def test_vpcd_restart(
        self, server: ScriptedPeer, bankd: ScriptedPeer, vpcd: FakeVpcd
    ) -> None:
        async with vpcd_client(server, vpcd) as (client, fe):
            await map_card(client, server, bankd)
            await vpcd.accept()
            await vpcd.stop()  # pcscd stops: vpcd closes the card's connection
            await eventually(lambda: not fe.connected)
            await asyncio.sleep(0.15)  # refused attempts meanwhile
            again = await FakeVpcd(vpcd.port).start()  # and comes back on the same port
            try:
                card = await again.accept()
                assert await card.exchange(bytes([GET_ATR])) == CARD_ATR
            finally:
                await again.stop()

    async def test_apdus_flow_against_a_nagling_vpcd(
        self, server: ScriptedPeer, bankd: ScriptedPeer, vpcd: FakeVpcd
    ) -> None:
        """APDU after APDU with a vpcd that writes length and body apart (Nagle on). How
        fast (TCP_NODELAY + TCP_QUICKACK: no ~40 ms delayed-ACK stall) is for bench/."""
        async with vpcd_client(server, vpcd) as (client, _):
            _, bk = await map_card(client, server, bankd)
            card = await vpcd.accept()

            async def bank() -> None:
                while True:
                    await answer(bk, b"\x9f\x16")

            bank_task = asyncio.create_task(bank())
            for _ in range(30):
                assert await card.exchange(SELECT_MF) == b"\x9f\x16"
            bank_task.cancel()


# --- the executable --------------------------------------------------------------------------


async def run_cli(*args: str, env: dict[str, str] | None = None) -> asyncio.subprocess.Process:
    return await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "remsim_client.vpcd",
        *args,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        env={**os.environ, **(env or {})},
    )


class TestExecutable:
    def test_help_lists_the_vpcd_options(self, capsys: pytest.CaptureFixture[str]) -> None:
        with pytest.raises(SystemExit) as exit_:
            main(["--help"])
        assert exit_.value.code == 0
        out = capsys.readouterr().out
        for option in ("--vpcd-host", "--vpcd-port", "--apdu-timeout", "--ignore-idle-power"):
            assert option in out

    @pytest.mark.parametrize(
        "args", [["--apdu-timeout", "0"], ["--vpcd-port", "70000"], ["-a", "3b"]]
    )
    def test_bad_values_exit_2(self, args: list[str]) -> None:
        with pytest.raises(SystemExit) as exit_:
            main(args)
        assert exit_.value.code == 2

    async def test_a_session_and_sigterm(
        self, server: ScriptedPeer, bankd: ScriptedPeer, vpcd: FakeVpcd
    ) -> None:
        proc = await run_cli(
            "-i", "127.0.0.1", "-p", str(server.port), "-c", "24", "-n", "0",
            "--ignore-power-off", env={"REMSIM_CLIENT_VPCD_PORT": str(vpcd.port)},
        )  # fmt: skip
        try:
            srv, raw = await server.accept_client()
            msg = decode(raw[4:]).msg
            assert isinstance(msg, ConnectClientReq) and msg.client_slot == C24
            assert msg.identity.software == "remsim-client"
            srv.send(config_bank(bankd))
            bk, _ = await bankd.accept_client()
            bk.send(SetAtrReq(C24, CARD_ATR))
            card = await vpcd.accept()
            assert await card.exchange(bytes([GET_ATR])) == CARD_ATR
            await card.control(POWER_ON)
            await card.control(POWER_OFF)  # --ignore-power-off: stays local
            exchange = asyncio.create_task(card.exchange(SELECT_MF))
            await bk.expect(SetAtrRes)
            await bk.expect(ClientSlotStatusInd)
            await answer(bk, b"\x9f\x16")
            assert await exchange == b"\x9f\x16"
            proc.send_signal(signal.SIGTERM)
            await card.wait_removed()
            async with asyncio.timeout(TIMEOUT):
                assert await proc.wait() == 0
        finally:
            if proc.returncode is None:
                proc.kill()
                await proc.wait()
