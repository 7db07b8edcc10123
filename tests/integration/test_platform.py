"""One platform for every program: ``--version``, log options and the JSON log layout.

Every console script of every shipped member prints ``NAME VERSION``; the server, the
bankd, a shell client and the software SIM, run as processes with ``--log-format json``
and the level given by name or by libosmocore number, write only JSON lines with the same
keys.
"""

from __future__ import annotations

import json
import subprocess
import time
import tomllib
import urllib.request
from pathlib import Path

import pytest

from tests.system import BIN, Daemon, free_port, wait_for

ROOT = Path(__file__).resolve().parents[2]
SHIPPED = sorted([*ROOT.glob("libs/*/pyproject.toml"), *ROOT.glob("services/*/pyproject.toml")])
BASE_KEYS = ["time", "level", "logger", "message"]
PROFILES = ROOT / "services" / "bankd" / "profiles"

pytestmark = pytest.mark.integration


def _console_scripts() -> list[tuple[str, str]]:
    scripts = []
    for pyproject in SHIPPED:
        project = tomllib.loads(pyproject.read_text())["project"]
        scripts += [(name, project["version"]) for name in project.get("scripts", {})]
    return scripts


SCRIPTS = _console_scripts()


def test_every_shipped_member_with_a_program_is_covered() -> None:
    names = {name for name, _ in SCRIPTS}
    assert {
        "remsim-server",
        "remsim-api",
        "remsim-apitool",
        "remsim-bankd",
        "remsim-vcard",
    } <= names
    assert {"remsim-client-shell", "remsim-client-st2", "remsim-client-vpcd", "rspro"} <= names


@pytest.mark.parametrize(("name", "version"), SCRIPTS, ids=[name for name, _ in SCRIPTS])
def test_version_is_name_and_version(name: str, version: str) -> None:
    flag = "-v" if name.startswith("remsim-client-") else "--version"  # the original's -v
    for option in (flag, "--version"):
        done = subprocess.run(
            [str(BIN / name), option], capture_output=True, text=True, timeout=60, check=False
        )
        assert done.returncode == 0, done.stderr
        assert done.stdout == f"{name} {version}\n"


def _json_lines(daemon: Daemon) -> list[dict[str, object]]:
    lines = [line for line in daemon.log.read_text().splitlines() if line.strip()]
    assert lines, f"{daemon.name} wrote no log line"
    parsed = []
    for line in lines:
        try:
            entry = json.loads(line)
        except ValueError:
            pytest.fail(f"{daemon.name} wrote a line that is not JSON: {line!r}")
        assert isinstance(entry, dict)
        assert list(entry)[:4] == BASE_KEYS, f"{daemon.name}: {line}"
        parsed.append(entry)
    return parsed


def test_server_bankd_client_and_vcard_log_the_same_json(tmp_path: Path) -> None:
    rest, rspro, bankd_port, vpcd = free_port(), free_port(), free_port(), free_port()
    server = Daemon("server", [
        str(BIN / "remsim-server"), "--rest-host", "127.0.0.1", "--rest-port", str(rest),
        "--rspro-host", "127.0.0.1", "--rspro-port", str(rspro), "--bankd-port",
        str(bankd_port), "--log-format", "json", "-e", "INFO", "--store", "memory",
    ], tmp_path)  # fmt: skip
    daemons = [server]
    try:
        url = f"http://127.0.0.1:{rest}/api/backend/v1"
        wait_for(lambda: urllib.request.urlopen(f"{url}/banks", timeout=2), "the server")
        daemons.append(Daemon("bankd", [
            str(BIN / "remsim-bankd"), "-i", "127.0.0.1", "-p", str(rspro), "-b", "1",
            "-n", "1", "-I", "127.0.0.1", "-P", str(bankd_port), "--card-driver", "sim",
            "--sim-profile", str(PROFILES / "card0.json"), "--log-format", "json", "-e", "3",
        ], tmp_path))  # fmt: skip
        daemons.append(Daemon("client", [
            str(BIN / "remsim-client-shell"), "-i", "127.0.0.1", "-p", str(rspro),
            "-c", "23", "-n", "0", "--log-format", "json", "--log-level", "3",
        ], tmp_path, pipe_stdio=True))  # fmt: skip
        daemons.append(Daemon("vcard", [
            str(BIN / "remsim-vcard"), "--profile", str(PROFILES / "card0.json"),
            "--port", str(vpcd), "--log-format", "json", "-e", "INFO",
        ], tmp_path))  # fmt: skip
        body = json.dumps(
            {"bank": {"bankId": 1, "slotNr": 0}, "client": {"clientId": 23, "slotNr": 0}}
        )
        request = urllib.request.Request(
            f"{url}/slotmaps", body.encode(), {"Content-Type": "application/json"}, method="POST"
        )
        urllib.request.urlopen(request, timeout=5)

        def active() -> bool:
            with urllib.request.urlopen(f"{url}/slotmaps", timeout=2) as answer:
                return any(m.get("state") == "ACTIVE" for m in json.load(answer)["slotmaps"])

        wait_for(active, "the slotmap to become ACTIVE")
        wait_for(lambda: daemons[3].log.stat().st_size > 0, "the vcard's first log line")
        time.sleep(0.5)  # the client's connect to the bankd, logged
    finally:
        for daemon in reversed(daemons):
            daemon.stop()
    levels = set()
    for daemon in daemons:
        entries = _json_lines(daemon)
        levels |= {str(entry["level"]) for entry in entries}
        assert all(str(entry["time"]).endswith("+00:00") for entry in entries)
    assert "DEBUG" not in levels  # -e INFO / -e 3 / --log-level 3 took effect
    assert len(_json_lines(daemons[1])) >= 2 and len(_json_lines(daemons[2])) >= 2


@pytest.mark.parametrize(
    "argv",
    [
        ["remsim-server", "-e", "3", "--rspro-port", "x"],
        ["remsim-bankd", "-i", "h", "-e", "INFO", "-P", "x"],
        ["remsim-client-shell", "--log-level", "INFO", "-p", "x"],
        ["remsim-vcard", "--profile", "p", "-e", "3", "--port", "x"],
    ],
)
def test_a_bad_value_is_one_line_naming_option_and_value(argv: list[str]) -> None:
    """``-e 3`` / ``-e INFO`` pass; the bad port is what is reported, in the one format."""
    done = subprocess.run(
        [str(BIN / argv[0]), *argv[1:]], capture_output=True, text=True, timeout=60, check=False
    )
    assert done.returncode == 2
    (line,) = done.stderr.splitlines()[-1:]
    assert line.startswith(f"{argv[0]}: bad value 'x' for ")
    assert "port" in line and "Traceback" not in done.stderr
