"""The client over real TCP on 127.0.0.1, against scripted server and bankd peers.

The peers (``remsim_testing.client``) record every frame exactly as it arrived, so the
bytes can be compared with the recordings of the original
(reference/upstream-1.0.0/README.md): identity "vm", swVersion "1.0.0", client C23:0.
Covers the shell as a real process (stdin/stdout, event script), the ``Client`` core with
a recording front-end, and ``RemoteCard``.
"""

from __future__ import annotations

import asyncio
import os
import sys
from pathlib import Path

import pytest

from remsim_client import (
    BlockingRemoteCard,
    CardTimeoutError,
    Client,
    InvalidApduError,
    LinkLostError,
    MainState,
    ModemFrontend,
    NoCardMappedError,
    RemoteCard,
)
from remsim_client.frontend import POWER_OFF
from remsim_testing.client import (
    B1_0,
    BANKD_IDENTITY,
    C23,
    TIMEOUT,
    ScriptedPeer,
    client_config,
    config_bank,
    eventually,
)
from remsim_testing.rspro_peers import ScriptedConnection
from rspro import (
    BankSlot,
    ClientSlotStatusInd,
    ConfigClientBankRes,
    ResultCode,
    SetAtrReq,
    SetAtrRes,
    SlotPhysStatus,
    TpduCardToModem,
    TpduModemToCard,
    ipa,
)
from rspro.link import LinkState

CARD_ATR = bytes.fromhex("3b9f96801fc78031a073be21136743200718000001a5")

# Frames of the original, from reference/upstream-1.0.0/README.md and messages.jsonl.
REF_CONNECT_CLIENT_REQ = bytes.fromhex(
    "0034ee073031800102810100a229a227301d0a01001602766d800d72656d73696d2d636c69656e74"
    "8105312e302e303006020117020100"
)
REF_CONFIG_CLIENT_BANK_RES = bytes.fromhex("0010ee07300d800102810100a205b2030a0100")
REF_SET_ATR_RES = bytes.fromhex("0010ee07300d800102810100a205ab030a0100")
REF_TPDU_MODEM_TO_CARD = bytes.fromhex(
    "0034ee073031800102810100a229ac2730060201170201003006020101020100300c0101000101000101"
    "000101000407a0a40000023f00"
)
REF_CLIENT_SLOT_STATUS_IND_RESET = bytes.fromhex(
    "002bee073028800102810100a220ae1e30060201170201003006020101020100300c8001ff8101008201008301ff"
)
SELECT_MF = bytes.fromhex("a0a40000023f00")


# --- the Client core with a recording front-end ------------------------------------------


class Recorder(ModemFrontend):
    def __init__(self) -> None:
        self.calls: list[tuple[str, bytes | None]] = []

    def set_atr(self, atr: bytes) -> None:
        self.calls.append(("set_atr", atr))

    def card_to_modem(self, data: bytes) -> None:
        self.calls.append(("card_to_modem", data))

    def sim_remote(self) -> None:
        self.calls.append(("sim_remote", None))

    def sim_local(self) -> None:
        self.calls.append(("sim_local", None))

    def card_insert(self) -> None:
        self.calls.append(("card_insert", None))

    def card_remove(self) -> None:
        self.calls.append(("card_remove", None))

    def modem_reset(self) -> None:
        self.calls.append(("modem_reset", None))


async def operational(
    client: Client, fe: Recorder, server: ScriptedPeer, bankd: ScriptedPeer
) -> tuple[ScriptedConnection, ScriptedConnection]:
    """Drive a started client to OPERATIONAL with the card's ATR presented."""
    srv, _ = await server.accept_client()
    await eventually(lambda: client.state is MainState.UNCONFIGURED)
    srv.send(config_bank(bankd))
    await srv.expect(ConfigClientBankRes)
    bk, _ = await bankd.accept_client()
    bk.send(SetAtrReq(C23, CARD_ATR))
    await bk.expect(SetAtrRes)
    await eventually(lambda: ("set_atr", CARD_ATR) in fe.calls)
    return srv, bk


class TestClientWire:
    async def test_connect_client_req_bytes_equal_the_original(
        self, server: ScriptedPeer, bankd: ScriptedPeer
    ) -> None:
        fe = Recorder()
        async with Client(client_config(server), fe) as client:
            srv, raw = await server.accept_client()
            assert srv.frames[0] == ipa.PING  # the keepalive PING goes out before the request
            assert raw == REF_CONNECT_CLIENT_REQ
            await eventually(lambda: client.state is MainState.UNCONFIGURED)
            srv.send(config_bank(bankd))
            _, raw = await srv.expect(ConfigClientBankRes)
            assert raw == REF_CONFIG_CLIENT_BANK_RES
            bk, raw = await bankd.accept_client()
            assert bk.frames[0] == ipa.PING
            assert raw == REF_CONNECT_CLIENT_REQ  # the same request towards the bankd
            assert srv.split_frames == 0 and bk.split_frames == 0

    async def test_the_card_session(self, server: ScriptedPeer, bankd: ScriptedPeer) -> None:
        fe = Recorder()
        async with Client(client_config(server), fe) as client:
            _, bk = await operational(client, fe, server, bankd)
            assert client.state is MainState.OPERATIONAL
            assert fe.calls == [
                ("sim_remote", None),
                ("set_atr", bytes.fromhex("3b00")),
                ("card_insert", None),
                ("modem_reset", None),
                ("set_atr", CARD_ATR),
            ]
            assert bk.frames[-1] == REF_SET_ATR_RES
            client.modem_tpdu(SELECT_MF)
            _, raw = await bk.expect(TpduModemToCard)
            assert raw == REF_TPDU_MODEM_TO_CARD
            bk.send(TpduCardToModem(B1_0, C23, bytes.fromhex("9f16")))
            await eventually(lambda: fe.calls[-1] == ("card_to_modem", bytes.fromhex("9f16")))
            client.modem_status(POWER_OFF)
            _, raw = await bk.expect(ClientSlotStatusInd)
            assert raw == REF_CLIENT_SLOT_STATUS_IND_RESET
            assert bk.split_frames == 0

    async def test_port_0_disconnects_from_the_bankd(
        self, server: ScriptedPeer, bankd: ScriptedPeer
    ) -> None:
        fe = Recorder()
        async with Client(client_config(server), fe) as client:
            srv, bk = await operational(client, fe, server, bankd)
            srv.send(config_bank(None))
            await srv.expect(ConfigClientBankRes)
            await bk.wait_closed()
            assert client.state is MainState.UNCONFIGURED
            assert client.bankd_state is LinkState.INIT
            assert fe.calls[-3:] == [
                ("card_remove", None),
                ("sim_local", None),
                ("modem_reset", None),
            ]

    async def test_an_unchanged_configuration_keeps_the_session(
        self, server: ScriptedPeer, bankd: ScriptedPeer
    ) -> None:
        fe = Recorder()
        async with Client(client_config(server), fe) as client:
            srv, bk = await operational(client, fe, server, bankd)
            calls = len(fe.calls)
            srv.send(config_bank(bankd))
            await srv.expect(ConfigClientBankRes)
            client.modem_tpdu(SELECT_MF)
            await bk.expect(TpduModemToCard)  # still the same connection
            assert not bk.closed.is_set() and bankd.no_new_connection()
            assert len(fe.calls) == calls and client.state is MainState.OPERATIONAL

    async def test_switching_to_another_bankd(
        self, server: ScriptedPeer, bankd: ScriptedPeer, bankd2: ScriptedPeer
    ) -> None:
        fe = Recorder()
        async with Client(client_config(server), fe) as client:
            srv, bk = await operational(client, fe, server, bankd)
            srv.send(config_bank(bankd2, BankSlot(2, 0)))
            await srv.expect(ConfigClientBankRes)
            await bk.wait_closed()
            bk2, _ = await bankd2.accept_client()
            await eventually(lambda: client.state is MainState.OPERATIONAL)
            assert fe.calls[-7:] == [
                ("card_remove", None),
                ("sim_local", None),
                ("modem_reset", None),
                ("sim_remote", None),
                ("set_atr", bytes.fromhex("3b00")),
                ("card_insert", None),
                ("modem_reset", None),
            ]
            client.modem_tpdu(SELECT_MF)
            msg, _ = await bk2.expect(TpduModemToCard)
            assert isinstance(msg, TpduModemToCard) and msg.to_bank_slot == BankSlot(2, 0)

    async def test_bankd_loss_reconnects_and_server_loss_keeps_the_card(
        self, server: ScriptedPeer, bankd: ScriptedPeer
    ) -> None:
        fe = Recorder()
        async with Client(client_config(server), fe) as client:
            srv, bk = await operational(client, fe, server, bankd)
            srv.close()  # the server goes away: the card session carries on
            await eventually(lambda: client.server_state is not LinkState.CONNECTED)
            client.modem_tpdu(SELECT_MF)
            await bk.expect(TpduModemToCard)
            assert client.state is MainState.OPERATIONAL
            await server.accept_client()  # it reconnects by itself, no new configuration
            bk.close()  # the bankd drops us: card removed, then reconnect to the same bankd
            await eventually(lambda: client.state is MainState.WAIT_BANKD)
            assert ("card_remove", None) in fe.calls
            await bankd.accept_client()
            await eventually(lambda: client.state is MainState.OPERATIONAL)

    async def test_a_bankd_without_slotmap_is_retried(
        self, server: ScriptedPeer, bankd: ScriptedPeer
    ) -> None:
        fe = Recorder()
        async with Client(client_config(server), fe) as client:
            srv, _ = await server.accept_client()
            await eventually(lambda: client.state is MainState.UNCONFIGURED)
            srv.send(config_bank(bankd))
            first, _ = await bankd.accept_client(ResultCode.CARD_NOT_PRESENT)
            await first.wait_closed()  # the client closes on a non-ok result...
            await bankd.accept_client()  # ...and retries at once (back-off table: 0, 0, 0, 1 s)
            await eventually(lambda: client.state is MainState.OPERATIONAL)

    async def test_a_server_of_the_wrong_type_is_not_retried(self, server: ScriptedPeer) -> None:
        server.identity = BANKD_IDENTITY
        async with Client(client_config(server), Recorder()) as client:
            conn, _ = await server.accept_client()
            await conn.wait_closed()
            assert client.server_state is LinkState.INIT
            assert client.state is MainState.INIT


# --- remsim-client-shell as a process --------------------------------------------------------

EVENT_SCRIPT = """#!/bin/sh
{ echo "cause=$1"; env | grep -v '^REMSIM_CAUSE=' | sort; } > "%s/$$-$1"
"""


def read_script_runs(directory: Path) -> list[dict[str, str]]:
    runs = []
    for path in directory.iterdir():
        lines = path.read_text().splitlines()
        runs.append(dict(line.split("=", 1) for line in lines if "=" in line))
    return runs


class ShellProcess:
    def __init__(self, proc: asyncio.subprocess.Process) -> None:
        self.proc = proc
        self.log = ""  # what stderr carried so far, as far as read

    async def line(self) -> str:
        assert self.proc.stdout is not None
        raw = await asyncio.wait_for(self.proc.stdout.readline(), TIMEOUT)
        return raw.decode()

    async def logged(self, text: str) -> None:
        """Until a stderr line containing ``text`` has come (the shell's log, in order)."""
        assert self.proc.stderr is not None
        async with asyncio.timeout(TIMEOUT):
            while True:
                raw = await self.proc.stderr.readline()
                assert raw, f"stderr ended without {text!r}:\n{self.log}"
                self.log += raw.decode()
                if text in raw.decode():
                    return

    async def rest_of_log(self) -> str:
        """Everything stderr carried, to its end (the event scripts hold it open too)."""
        assert self.proc.stderr is not None
        self.log += (await asyncio.wait_for(self.proc.stderr.read(), TIMEOUT)).decode()
        return self.log

    def type(self, line: str) -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.write(line.encode())


async def start_shell(*args: str, env: dict[str, str] | None = None) -> ShellProcess:
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "remsim_client.shell",
        *args,
        stdin=asyncio.subprocess.PIPE,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        env=env,
    )
    return ShellProcess(proc)


class TestShell:
    async def test_shell_session(
        self, server: ScriptedPeer, bankd: ScriptedPeer, tmp_path: Path
    ) -> None:
        runs = tmp_path / "runs"
        runs.mkdir()
        script = tmp_path / "event-script"
        script.write_text(EVENT_SCRIPT % runs)
        script.chmod(0o755)
        env = {**os.environ, "REMSIM_CLIENT_CLIENT_ID": "23", "NOT_FOR_SCRIPTS": "x"}
        shell = await start_shell(
            *("-i", "127.0.0.1", "-p", str(server.port), "-n", "0", "-e", str(script)),
            *("--name", "vm", "--sw-version", "1.0.0"),
            env=env,
        )
        try:
            srv, raw = await server.accept_client()
            assert raw == REF_CONNECT_CLIENT_REQ
            await eventually(lambda: len(list(runs.iterdir())) == 1)  # event-server-connect
            # Not mapped yet: dropped, and said so. stdin and the server link are separate
            # channels, so the mapping goes out only once the shell has dealt with the line
            # (else the shell may read it after the mapping, and rightly send it).
            shell.type("a0a40000023f00\n")
            await shell.logged("event MDM_TPDU not permitted in state UNCONFIGURED")
            srv.send(config_bank(bankd))
            await srv.expect(ConfigClientBankRes)
            bk, raw = await bankd.accept_client()
            assert raw == REF_CONNECT_CLIENT_REQ
            assert await shell.line() == "SET_ATR: 3b 00 \n"
            bk.send(SetAtrReq(C23, CARD_ATR))
            assert await shell.line() == "SET_ATR: " + CARD_ATR.hex(" ") + " \n"
            await bk.expect(SetAtrRes)

            shell.type("a0a40000023f00\r\n")
            _, raw = await bk.expect(TpduModemToCard)
            assert raw == REF_TPDU_MODEM_TO_CARD
            bk.send(TpduCardToModem(B1_0, C23, bytes.fromhex("9f16")))
            assert await shell.line() == "R-APDU: 9f 16 \n"

            shell.type("RESET\n")
            _, raw = await bk.recv()
            assert raw == REF_CLIENT_SLOT_STATUS_IND_RESET
            await eventually(lambda: len(list(runs.iterdir())) == 7)

            assert shell.proc.stdin is not None
            shell.proc.stdin.close()  # end of input ends the program
            assert await asyncio.wait_for(shell.proc.wait(), TIMEOUT) == 0
            assert "STDIN was closed, terminating\n" in await shell.rest_of_log()
            assert bk.split_frames == 0 and srv.split_frames == 0
        finally:
            if shell.proc.returncode is None:
                shell.proc.kill()
                await shell.proc.wait()

        # A clean stop in OPERATIONAL runs the leave scripts too (card remove, local SIM,
        # modem reset); they may finish after the client.
        await eventually(
            lambda: [f.read_text().count("REMSIM_SIM_VCC=") for f in runs.iterdir()] == [1] * 10
        )
        by_cause = {run["cause"]: run for run in read_script_runs(runs)}
        assert sorted(by_cause) == sorted(
            [
                "event-server-connect",
                "event-config-bankd",
                "request-sim-remote",
                "request-card-insert",
                "request-modem-reset",
                "event-bankd-connect",
                "event-modem-status",
                "request-card-remove",
                "request-sim-local",
            ]
        )
        common = {
            "REMSIM_CLIENT_VERSION": "1.0.0",
            "REMSIM_SERVER_ADDR": f"127.0.0.1:{server.port}",
            "REMSIM_SERVER_STATE": "CONNECTED",
            "REMSIM_CLIENT_SLOT": "23:0",
        }
        first = by_cause["event-server-connect"]
        assert (
            first.items()
            >= {
                **common,
                "REMSIM_BANKD_ADDR": "(null):0",
                "REMSIM_BANKD_STATE": "INIT",
                "REMSIM_BANKD_SLOT": "0:0",
                "REMSIM_SIM_VCC": "0",
                "REMSIM_SIM_RST": "0",
                "REMSIM_SIM_CLK": "0",
            }.items()
        )
        assert "NOT_FOR_SCRIPTS" not in first and "PATH" in first
        configured = {**common, "REMSIM_BANKD_ADDR": f"127.0.0.1:{bankd.port}"}
        assert (
            by_cause["event-config-bankd"].items()
            >= {
                **configured,
                "REMSIM_BANKD_STATE": "REESTABLISH_DELAY",
                "REMSIM_BANKD_SLOT": "1:0",
            }.items()
        )
        assert by_cause["event-bankd-connect"]["REMSIM_BANKD_STATE"] == "CONNECTED"
        status = by_cause["event-modem-status"]
        assert (status["REMSIM_SIM_RST"], status["REMSIM_SIM_VCC"], status["REMSIM_SIM_CLK"]) == (
            "1",
            "0",
            "0",
        )

    async def test_sigterm_ends_the_shell_cleanly(self, server: ScriptedPeer) -> None:
        shell = await start_shell("-i", "127.0.0.1", "-p", str(server.port))
        srv, _ = await server.accept_client()
        shell.proc.terminate()
        assert await asyncio.wait_for(shell.proc.wait(), TIMEOUT) == 0
        await srv.wait_closed()


# --- RemoteCard --------------------------------------------------------------------------------


async def serve_card(
    server: ScriptedPeer, bankd: ScriptedPeer, responses: dict[bytes, bytes] | None = None
) -> tuple[ScriptedConnection, ScriptedConnection, asyncio.Task[None]]:
    """Server maps C23:0 to B1:0 on ``bankd``; the bankd answers APDUs from ``responses``.

    Without ``responses`` the card never answers and the test reads the bankd's PDUs itself.
    """
    srv, _ = await server.accept_client()
    srv.send(config_bank(bankd))
    bk, _ = await bankd.accept_client()
    bk.send(SetAtrReq(C23, CARD_ATR))

    async def card() -> None:
        while responses is not None:
            msg, _ = await bk.recv()
            if isinstance(msg, TpduModemToCard):
                bk.send(TpduCardToModem(B1_0, C23, responses[msg.data]))

    return srv, bk, asyncio.create_task(card())


def remote_card(server: ScriptedPeer | None, **kwargs: object) -> RemoteCard:
    return RemoteCard(
        "127.0.0.1",
        23,
        0,
        port=server.port if server else 1,
        name="vm",
        sw_version="1.0.0",
        **kwargs,  # type: ignore[arg-type]
    )


class TestRemoteCard:
    RESPONSES = {
        SELECT_MF: bytes.fromhex("9f16"),
        bytes.fromhex("00a40004023f00"): bytes.fromhex("6112"),
        bytes.fromhex("00c0000012"): bytes.fromhex("62108202782183023f00") + bytes.fromhex("6108"),
        bytes.fromhex("00c0000008"): bytes.fromhex("a5038001718a0105") + bytes.fromhex("9000"),
        bytes.fromhex("0070000000"): bytes.fromhex("9000"),
    }

    async def test_transmit(self, server: ScriptedPeer, bankd: ScriptedPeer) -> None:
        card = remote_card(server)
        opened = asyncio.create_task(card.open())
        *_, task = await serve_card(server, bankd, self.RESPONSES)
        await opened
        async with card:
            assert card.atr == CARD_ATR
            assert await card.transmit(SELECT_MF) == bytes.fromhex("9f16")
            assert await card.transmit(bytes.fromhex("00a40004023f00")) == bytes.fromhex("6112")
            assert await card.transmit(bytes.fromhex("00700000")) == bytes.fromhex("9000")
            task.cancel()

    async def test_automatic_get_response(self, server: ScriptedPeer, bankd: ScriptedPeer) -> None:
        card = remote_card(server, auto_get_response=True)
        opened = asyncio.create_task(card.open())
        *_, task = await serve_card(server, bankd, self.RESPONSES)
        await opened
        try:
            assert await card.transmit(bytes.fromhex("00a40004023f00")) == bytes.fromhex(
                "62108202782183023f00a5038001718a01059000"
            )
        finally:
            task.cancel()
            await card.close()

    async def test_no_card_mapped(self, server: ScriptedPeer) -> None:
        card = remote_card(server, timeout=0.3)
        opened = asyncio.create_task(card.open())
        await server.accept_client()  # the server knows no slotmap for C23:0
        with pytest.raises(NoCardMappedError, match="C23:0"):
            await opened

    async def test_server_unreachable(self) -> None:
        with pytest.raises(LinkLostError) as exc:
            async with remote_card(None, timeout=0.2):
                pass
        assert exc.value.link == "server"

    async def test_bankd_lost_during_an_exchange(
        self, server: ScriptedPeer, bankd: ScriptedPeer
    ) -> None:
        card = remote_card(server)
        opened = asyncio.create_task(card.open())
        srv, bk, task = await serve_card(server, bankd, responses=None)  # the card never answers
        await opened
        try:
            exchange = asyncio.create_task(card.transmit(SELECT_MF))
            await eventually(lambda: bool(bk.frames) and bk.frames[-1][-7:] == SELECT_MF)
            bk.close()
            with pytest.raises(LinkLostError) as exc:
                await exchange
            assert exc.value.link == "bankd"
            with pytest.raises(LinkLostError):
                await card.transmit(SELECT_MF)
            srv.send(config_bank(None))  # now the slotmap goes away
            await eventually(lambda: card.client.state is MainState.UNCONFIGURED)
            with pytest.raises(NoCardMappedError):
                await card.transmit(SELECT_MF)
        finally:
            task.cancel()
            await card.close()

    async def test_an_apdu_the_bankd_link_drops_fails_at_once(
        self, server: ScriptedPeer, bankd: ScriptedPeer
    ) -> None:
        card = remote_card(server)  # apdu_timeout 30 s: waiting for it would fail the test
        opened = asyncio.create_task(card.open())
        _, bk, task = await serve_card(server, bankd, responses=None)
        await opened
        try:
            # The bankd connection dies; until the client has noticed (a loop iteration or
            # more) the card still looks ready, and a TPDU sent then is dropped by the link.
            link = card.client._bankd
            assert link is not None and link._stream is not None
            link._stream.close()
            assert card.ready
            async with asyncio.timeout(1):
                with pytest.raises(LinkLostError, match="could not be sent") as exc:
                    await card.transmit(SELECT_MF)
            assert exc.value.link == "bankd"
            await bk.closed.wait()
            assert not any(frame.endswith(SELECT_MF) for frame in bk.frames)  # never sent
        finally:
            task.cancel()
            await card.close()

    async def test_card_timeout_and_bad_apdus(
        self, server: ScriptedPeer, bankd: ScriptedPeer
    ) -> None:
        card = remote_card(server, apdu_timeout=0.1)
        opened = asyncio.create_task(card.open())
        _, bk, task = await serve_card(server, bankd, responses=None)
        await opened
        try:
            with pytest.raises(CardTimeoutError):
                await card.transmit(SELECT_MF)
            bk.send(TpduCardToModem(B1_0, C23, bytes.fromhex("9f16")))  # too late: dropped
            get_response = asyncio.create_task(
                card.transmit(bytes.fromhex("a0c0000016"), timeout=5)
            )
            await bk.expect(SetAtrRes)
            await bk.expect(TpduModemToCard)
            msg, _ = await bk.expect(TpduModemToCard)
            assert isinstance(msg, TpduModemToCard) and msg.data == bytes.fromhex("a0c0000016")
            bk.send(TpduCardToModem(B1_0, C23, bytes.fromhex("6f00")))
            assert await get_response == bytes.fromhex("6f00")
            with pytest.raises(InvalidApduError):
                await card.transmit(b"\xa0\xa4\x00")
            with pytest.raises(InvalidApduError):
                await card.transmit(bytes(261))
        finally:
            task.cancel()
            await card.close()

    async def test_the_late_answer_to_a_cancelled_apdu_answers_nothing(
        self, server: ScriptedPeer, bankd: ScriptedPeer
    ) -> None:
        # Found by the chaos test (issue 12): a caller that gives up on a transmit (task
        # cancelled, e.g. by its own timeout) must not get that APDU's answer for its next.
        card = remote_card(server)
        opened = asyncio.create_task(card.open())
        _, bk, task = await serve_card(server, bankd, responses=None)
        await opened
        try:
            await bk.expect(SetAtrRes)
            given_up = asyncio.create_task(card.transmit(SELECT_MF))
            await bk.expect(TpduModemToCard)  # SELECT MF is out
            given_up.cancel()
            with pytest.raises(asyncio.CancelledError):
                await given_up
            get_response = asyncio.create_task(card.transmit(bytes.fromhex("a0c0000016")))
            msg, _ = await bk.expect(TpduModemToCard)
            assert isinstance(msg, TpduModemToCard) and msg.data == bytes.fromhex("a0c0000016")
            bk.send(TpduCardToModem(B1_0, C23, bytes.fromhex("9f16")))  # SELECT MF's: dropped
            bk.send(TpduCardToModem(B1_0, C23, bytes.fromhex("6f00")))
            assert await get_response == bytes.fromhex("6f00")
        finally:
            task.cancel()
            await card.close()

    async def test_reset_is_a_power_cycle(self, server: ScriptedPeer, bankd: ScriptedPeer) -> None:
        card = remote_card(server)
        opened = asyncio.create_task(card.open())
        _, bk, _ = await serve_card(server, bankd)
        await opened
        try:
            await bk.expect(SetAtrRes)
            await card.reset()
            off, _ = await bk.recv()
            on, _ = await bk.recv()
            assert [m.slot_phys_status for m in (off, on)] == [  # type: ignore[attr-defined]
                POWER_OFF,
                SlotPhysStatus(False, True, True, True),
            ]
        finally:
            await card.close()

    async def test_blocking_remote_card(self, server: ScriptedPeer, bankd: ScriptedPeer) -> None:
        def use_card() -> tuple[bytes, bytes]:
            with BlockingRemoteCard("127.0.0.1", 23, 0, port=server.port) as card:
                return card.atr, card.transmit(SELECT_MF)

        used = asyncio.create_task(asyncio.to_thread(use_card))
        *_, task = await serve_card(server, bankd, self.RESPONSES)
        try:
            assert await used == (CARD_ATR, bytes.fromhex("9f16"))
        finally:
            task.cancel()
