"""The ``remsim-bankd`` program: start-up failures, logging options, a full run as a process."""

from __future__ import annotations

import asyncio
import json
import logging
import os
import signal
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from remsim_bankd.config import CATEGORIES, PROGRAM, parse_args
from remsim_bankd.main import main
from remsim_testing.bankd import ScriptedServer, connect_client, create_mapping, transceive
from rspro import BankSlot, ClientSlot, ResultCode, SetAtrReq

PROFILES = Path(__file__).parents[1] / "profiles"
C23, B0 = ClientSlot(23, 0), BankSlot(1, 0)


@pytest.fixture(autouse=True)
def _restore_logging() -> Iterator[None]:
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    names = {name for names in CATEGORIES.values() for name in names}
    loggers = {n: logging.getLogger(n).level for n in names}
    yield
    root.handlers[:] = handlers
    root.setLevel(level)
    for name, lvl in loggers.items():
        logging.getLogger(name).setLevel(lvl)


def test_bad_slot_file_stops_start_up(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    csv = tmp_path / "bankd_pcsc_slots.csv"
    csv.write_text('"1","0","Virtual PCD 00 00"\n"1","x","Virtual PCD 00 01"\n')
    assert main(["-i", "127.0.0.1", "--slots-csv", str(csv)]) == 1
    assert f"{csv}:2: slot number 'x' is not a number" in capsys.readouterr().err
    csv.write_text('"1","0","Virtual PCD (00"\n')
    assert main(["-i", "127.0.0.1", "--slots-csv", str(csv)]) == 1
    assert f"{csv}:1: bad regular expression 'Virtual PCD (00'" in capsys.readouterr().err


def test_missing_slot_file_in_the_working_directory(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.chdir(tmp_path)
    assert main(["-i", "127.0.0.1"]) == 1
    assert "bankd_pcsc_slots.csv" in capsys.readouterr().err


def test_client_port_in_use_stops_start_up(capsys: pytest.CaptureFixture[str]) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        argv = ["-i", "127.0.0.1", "-I", "127.0.0.1", "-P", str(port), "--card-driver", "sim"]
        assert main(argv) == 1
    assert "cannot start" in capsys.readouterr().err


@pytest.mark.parametrize(
    ("program", "status"),
    [(["remsim_bankd.main", "-i", "127.0.0.1", "--card-driver", "sim", "--sim-profile"], 1),
     (["remsim_bankd.vcard", "--profile"], 2)],
)  # fmt: skip
def test_a_broken_yaml_profile_is_one_log_line_not_a_traceback(
    tmp_path: Path, program: list[str], status: int
) -> None:
    profile = tmp_path / "card0.yaml"
    profile.write_text("iccid: '89490200000000000000'\nimsi: [262\n")
    run = subprocess.run(
        [sys.executable, "-m", *program, str(profile)], capture_output=True, text=True, timeout=30
    )
    assert run.returncode == status
    (line,) = run.stderr.splitlines()
    expected = "bad YAML at line 3, column 1: expected ',' or ']', but got '<stream end>'"
    assert f"cannot load profile {profile}: {expected}" in line


def test_debug_mask_sets_category_levels() -> None:
    PROGRAM.setup_logging(parse_args(["-i", "x", "-d", "DBANKDW,1:DRSPRO,7", "-T", "-L"]))
    assert logging.getLogger("remsim.bankd.session").level == logging.DEBUG
    assert logging.getLogger("remsim.bankd.clients").level == logging.DEBUG
    assert logging.getLogger("rspro").level == logging.ERROR
    assert logging.getLogger("remsim.bankd.control").level == logging.ERROR
    assert logging.getLogger("remsim.bankd").level > logging.CRITICAL  # not listed: off
    assert logging.getLogger("remsim.bankd.mapping").level > logging.CRITICAL


def test_text_log_lines_carry_the_ids(capsys: pytest.CaptureFixture[str]) -> None:
    PROGRAM.setup_logging(parse_args(["-i", "x"]))
    logging.getLogger("remsim.bankd.mapping").info(
        "createMapping: OK", extra={"bank_slot": "B1:0", "client_slot": "C23:0"}
    )
    line = capsys.readouterr().err.strip()
    assert line.endswith(
        "INFO remsim.bankd.mapping: createMapping: OK client_slot=C23:0 bank_slot=B1:0"
    )


def test_json_log_lines(capsys: pytest.CaptureFixture[str]) -> None:
    PROGRAM.setup_logging(parse_args(["-i", "x", "--log-format", "json"]))
    logging.getLogger("remsim.bankd").info("hello %s", "there", extra={"bank": 1})
    entry = json.loads(capsys.readouterr().err)
    assert (entry["message"], entry["logger"], entry["level"]) == (
        "hello there",
        "remsim.bankd",
        "INFO",
    )
    assert entry["bank"] == 1 and "time" in entry


def test_unusable_tls_files_stop_start_up(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    missing = [str(tmp_path / name) for name in ("bankd.pem", "bankd.key", "ca.pem")]
    argv = ["-i", "127.0.0.1", "--card-driver", "sim", "--tls-cert", missing[0],
            "--tls-key", missing[1], "--tls-ca", missing[2]]  # fmt: skip
    assert main(argv) == 1
    assert "cannot use the TLS files" in capsys.readouterr().err


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


async def test_a_full_run_as_a_process(tmp_path: Path) -> None:
    """``remsim-bankd --card-driver sim``: registers, serves a client and its metrics, stops
    on SIGTERM."""
    port, metrics_port = free_port(), free_port()
    env = {**os.environ, "REMSIM_BANKD_METRICS_PORT": str(metrics_port)}
    async with ScriptedServer() as server:
        bankd = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "remsim_bankd.main", "-i", "127.0.0.1",
            "-p", str(server.port), "-n", "2", "-I", "127.0.0.1", "-P", str(port),
            "--card-driver", "sim", "--sim-profile", str(PROFILES / "card0.json"),
            "--metrics-host", "127.0.0.1", cwd=tmp_path, env=env,
        )  # fmt: skip
        try:
            peer = await server.bankd(timeout=15)
            assert await create_mapping(peer, C23, B0) is ResultCode.OK
            client, msgs = await connect_client(port, C23)
            assert isinstance(msgs[1], SetAtrReq)
            assert await transceive(client, bytes.fromhex("a0a40000023f00"), C23, B0) == b"\x9f\x16"
            async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{metrics_port}") as http:
                assert (await http.get("/readyz")).status_code == 200
                metrics = (await http.get("/metrics")).text
            assert 'remsim_tpdus_relayed_total{direction="modem_to_card"} 1.0' in metrics
            bankd.send_signal(signal.SIGTERM)
            assert await asyncio.wait_for(bankd.wait(), 10) == 0
            assert await client.closed_by_peer() == []
        finally:
            if bankd.returncode is None:
                bankd.kill()
                await bankd.wait()
