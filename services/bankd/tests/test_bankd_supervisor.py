"""``remsim-bankd-supervisor`` as the bankd image runs it, as real processes without Docker: its
own pcscd (in a private mount namespace, on a socket of this test), vpcd and two software SIMs,
and remsim-bankd. pcscd killed: started again, the bankd's ``/readyz`` not ready meanwhile.

The restarted pcscd waits for the test (a "hold" file) before it starts, so that the test sees
the not-ready state however fast the restart is, without timing assumptions.
"""

from __future__ import annotations

import asyncio
import os
import shlex
import shutil
import signal
import socket
import sys
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import httpx
import pytest

from remsim_bankd.config import parse_args, parse_slots_csv
from remsim_bankd.pcsc_card import PcscCards
from remsim_bankd.supervisor import (
    SupervisorSettings,
    children,
    vcard_slots_csv,
    vpcd_reader_conf,
)
from remsim_testing.bankd import ScriptedServer, connect_client, create_mapping
from remsim_testing.simbank import (
    VirtualSimBank,
    can_isolate,
    default_profiles,
    missing_requirements,
)
from rspro import BankSlot, ClientSlot, ResultCode, SetAtrReq

ATR = bytes.fromhex("3b9f96801fc78031a073be21136743200718000001a5")  # card0.json
C23, B0 = ClientSlot(23, 0), BankSlot(1, 0)
READY = {"server": True, "pcscd": True, "readers": True}
WAIT = 30.0
"""Upper bound in seconds for each step (a busy 2-core machine starts Python slowly)."""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def free_port_pair() -> int:
    """A port p with p and p + 1 free on every interface (vpcd binds both)."""
    for _ in range(100):
        with socket.socket() as first, socket.socket() as second:
            first.bind(("0.0.0.0", 0))
            base = int(first.getsockname()[1])
            try:
                second.bind(("0.0.0.0", base + 1))
            except OSError:
                continue
            return base
    raise AssertionError("no two consecutive free ports")


def child_pids(pid: int) -> list[int]:
    text = Path(f"/proc/{pid}/task/{pid}/children").read_text()
    return [int(word) for word in text.split()]


def comm(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/comm").read_text().strip()
    except OSError:
        return ""


def running(pid: int) -> bool:
    """The process exists and is no zombie."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rpartition(")")[2].split()[0] != "Z"


async def until(condition: Callable[[], Awaitable[Any]], what: str) -> Any:
    try:
        async with asyncio.timeout(WAIT):
            while not (result := await condition()):
                await asyncio.sleep(0.05)
    except TimeoutError:
        raise AssertionError(f"not within {WAIT:g} s: {what}") from None
    return result


# --- what the image runs ---------------------------------------------------------------------


def test_the_image_runs_pcscd_the_software_sims_and_the_bankd(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("REMSIM_VCARD_PROFILES", "/p/card0.json  /p/card1.json")
    monkeypatch.setenv("REMSIM_VPCD_PORT", "40000")
    settings = SupervisorSettings()
    argv = ["-i", "server", "-b", "7", "--log-format", "json"]
    procs = children(settings, parse_args(argv), argv)
    assert [c.name for c in procs] == ["pcscd", "remsim-vcard 0", "remsim-vcard 1", "remsim-bankd"]
    assert procs[0].argv == ["pcscd", "--foreground", "--error"]
    # every card on its vpcd port, logging as the bankd does (JSON here)
    assert procs[2].argv[-6:] == ["--profile", "/p/card1.json", "--port", "40001",
                                  "--log-format", "json"]  # fmt: skip
    assert procs[3].argv[-len(argv) :] == argv and procs[3].main
    assert not any(c.main for c in procs[:3])
    assert "DEVICENAME   /dev/null:0x9C40\n" in vpcd_reader_conf(40000)
    assert vcard_slots_csv(7, 2) == '"7","0","Virtual PCD 00 00"\n"7","1","Virtual PCD 00 01"\n'


def test_the_sim_driver_needs_no_pcscd(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("REMSIM_VCARD_PROFILES", raising=False)
    argv = ["-i", "server", "--card-driver", "sim", "--sim-profile", "card0.json"]
    assert [c.name for c in children(SupervisorSettings(), parse_args(argv), argv)] == [
        "remsim-bankd"
    ]


def test_at_most_two_software_sims(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("REMSIM_VCARD_PROFILES", "a.json b.json c.json")
    with pytest.raises(ValueError, match="at most 2"):
        SupervisorSettings()


# --- the card side of /readyz ----------------------------------------------------------------


@pytest.mark.pcsc
async def test_readiness_needs_pcscd_and_a_reader_of_the_slot_file(
    virtual_sim_bank: VirtualSimBank,
) -> None:
    bank = PcscCards(parse_slots_csv('"1","0","Virtual PCD 00 00"\n"1","1","No Such Reader"\n'))
    assert await bank.readiness() == {"pcscd": True, "readers": True}
    elsewhere = PcscCards(parse_slots_csv('"1","0","No Such Reader"\n'))
    assert await elsewhere.readiness() == {"pcscd": True, "readers": False}


# --- pcscd killed under supervision ----------------------------------------------------------


@pytest.mark.pcsc
@pytest.mark.timeout(180)
async def test_a_killed_pcscd_is_started_again_and_readyz_follows(tmp_path: Path) -> None:
    reason = missing_requirements() or (None if can_isolate() else "no private mount namespace")
    if reason:
        pytest.skip(f"pcscd under supervision: {reason}")
    rundir, confdir, hold = tmp_path / "run", tmp_path / "reader.conf.d", tmp_path / "hold"
    rundir.mkdir()
    os.makedirs("/run/pcscd", exist_ok=True)  # the mount point in pcscd's namespace
    # pcscd on this test's socket (rundir/pcscd.comm), other pcscds left alone; it starts only
    # while there is no hold file.
    script = 'while [ -e "$3" ]; do sleep 0.05; done; mount --bind "$0" /run/pcscd && exec "$1" -f -c "$2"'  # noqa: E501
    pcscd = [shutil.which("pcscd") or "pcscd", str(confdir), str(hold)]
    command = ["unshare", "--mount", "--propagation", "private", "sh", "-c", script, str(rundir)]
    env = {name: value for name, value in os.environ.items() if not name.startswith("REMSIM_")}
    env |= {
        "PCSCLITE_CSOCK_NAME": str(rundir / "pcscd.comm"),
        "REMSIM_PCSCD_COMMAND": shlex.join(command + pcscd),
        "REMSIM_READER_CONF_DIR": str(confdir),
        "REMSIM_VCARD_PROFILES": " ".join(map(str, default_profiles())),
        "REMSIM_VPCD_PORT": str(free_port_pair()),
        "REMSIM_RESTART_DELAY": "0.2",
    }
    port, metrics_port = free_port(), free_port()
    argv = ["-i", "127.0.0.1", "-n", "2", "-I", "127.0.0.1", "-P", str(port),
            "--metrics-host", "127.0.0.1", "--metrics-port", str(metrics_port),
            "--card-retry", "0.2", "--log-format", "json"]  # fmt: skip
    log = (tmp_path / "supervisor.log").open("wb")
    async with (
        ScriptedServer() as server,
        httpx.AsyncClient(base_url=f"http://127.0.0.1:{metrics_port}") as http,
    ):
        supervisor = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "remsim_bankd.supervisor", *argv, "-p", str(server.port),
            cwd=tmp_path, env=env, stdout=log, stderr=log,
        )  # fmt: skip

        async def readyz(expected: dict[str, bool]) -> bool:
            try:
                response = await http.get("/readyz")
            except httpx.TransportError:
                return False
            return bool(response.json() == expected)

        def pcscd_pid() -> int | None:
            return next((p for p in child_pids(supervisor.pid) if comm(p) == "pcscd"), None)

        async def started_pcscd() -> int | None:
            return pcscd_pid()

        async def card_served() -> bool:
            """A client of the mapped slot gets the card's ATR (the software SIM reconnects
            to vpcd by itself, some time after pcscd is back)."""
            client, msgs = await connect_client(port, C23, timeout=WAIT)
            client.close()
            return msgs[1:] == [SetAtrReq(C23, ATR)]

        try:
            peer = await server.bankd(timeout=WAIT)
            await until(lambda: readyz(READY), "ready")
            assert await create_mapping(peer, C23, B0) is ResultCode.OK
            await until(card_served, "the card served")

            first = await until(started_pcscd, "pcscd")
            hold.touch()
            os.kill(first, signal.SIGKILL)
            await until(
                lambda: readyz({"server": True, "pcscd": False, "readers": False}), "not ready"
            )
            assert not running(first)  # reaped, no zombie
            hold.unlink()
            second = await until(started_pcscd, "pcscd started again")
            assert second != first
            await until(lambda: readyz(READY), "ready again")
            await until(card_served, "the card served again through the new pcscd")

            supervisor.send_signal(signal.SIGTERM)
            assert await asyncio.wait_for(supervisor.wait(), WAIT) == 0
            assert not running(second)
        finally:
            if supervisor.returncode is None:
                supervisor.kill()
                await supervisor.wait()
            log.close()
            print((tmp_path / "supervisor.log").read_text(errors="replace")[-4000:])
