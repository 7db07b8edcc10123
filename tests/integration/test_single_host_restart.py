"""Acceptance (issue 12): on a single host nothing is lost when the server dies.

``remsim-server`` runs with its default store: no ``--store``, no ``--state-dir``, so the
slotmaps and the audit log are in SQLite in the per-user state directory
(``$XDG_STATE_HOME/remsim``, here under the test's own directory, as is ``HOME``). After
kill -9 and a restart every map is back and ACTIVE again, a client gets its card (ATR,
APDUs) and the audit log still has every entry. A second server on the same state directory is
refused at once. (A server that forgets its maps, ``--store memory``, and the bankd that
then drops them: tests/integration/test_system.py.)
"""

from __future__ import annotations

import json
import signal
import subprocess
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from remsim_bankd.sim import CardProfile
from remsim_testing.simbank import VirtualSimBank
from tests.system import BIN, RemsimSystem, free_port, server_environment

pytestmark = [pytest.mark.integration, pytest.mark.pcsc]

RESTART_TIMEOUT = 30.0
"""Seconds for the client to get its card again after the server's restart (the bankd
reconnects, is reconciled, the client reconnects): a bound, not a speed goal."""
REFUSAL_TIMEOUT = 30.0
"""Seconds a second server may take to start Python and refuse the state directory."""


@pytest.fixture
def state_home(tmp_path: Path) -> Path:
    return tmp_path / "xdg-state"


@pytest.fixture
def system(
    virtual_sim_bank: VirtualSimBank, tmp_path: Path, state_home: Path
) -> Iterator[RemsimSystem]:
    env = {"HOME": str(tmp_path / "home"), "XDG_STATE_HOME": str(state_home)}
    with RemsimSystem(virtual_sim_bank, tmp_path, store="default", server_env=env) as system:
        yield system


def audit(system: RemsimSystem) -> list[dict[str, Any]]:
    """Every entry of ``GET /api/v1/audit`` (no tokens configured: open to all)."""
    url = f"http://127.0.0.1:{system.rest_port}/api/v1/audit?limit=1000"
    with urllib.request.urlopen(url, timeout=5) as response:
        entries: list[dict[str, Any]] = json.load(response)["entries"]
    return entries


def slotmaps(system: RemsimSystem) -> list[tuple[int, int, int, int]]:
    status, body = system.rest("GET", "/slotmaps")
    assert status == 200, body
    return [
        (m["bank"]["bankId"], m["bank"]["slotNr"], m["client"]["clientId"], m["client"]["slotNr"])
        for m in body["slotmaps"]
    ]


def test_after_kill_9_every_map_is_back_and_the_client_gets_its_card(
    system: RemsimSystem, card_profiles: list[CardProfile], state_home: Path, tmp_path: Path
) -> None:
    state_file = state_home / "remsim" / "remsim.sqlite3"
    assert system.server is not None
    assert f"state in the file {state_file}" in system.server.log.read_text()
    assert not (tmp_path / "home").exists()  # XDG_STATE_HOME wins over ~/.local/state

    client = system.start_shell_client(23)
    system.map(bank_slot=0, client_id=23)
    system.map(bank_slot=1, client_id=24)  # no client: the map is kept all the same
    client.expect_atr(card_profiles[0].atr)
    assert client.read_iccid() == card_profiles[0].ef_iccid
    system.wait(lambda: system.slotmap_state(0) == system.slotmap_state(1) == "ACTIVE", "ACTIVE")
    maps = slotmaps(system)
    assert maps == [(1, 0, 23, 0), (1, 1, 24, 0)]
    before = audit(system)
    posts = [e for e in before if e["kind"] == "rest" and e["action"].startswith("POST")]
    assert [e["result"] for e in posts] == ["201", "201"]

    system.server.restart(signal.SIGKILL)
    system.wait(lambda: system.rest("GET", "/banks")[0] == 200, "the restarted server")
    assert slotmaps(system) == maps  # from the file, before any bankd is back
    system.wait_bank_connected()
    system.wait(
        lambda: system.slotmap_state(0) == system.slotmap_state(1) == "ACTIVE", "ACTIVE again"
    )
    # The client that stayed up keeps its session through the bankd's RESET_GRACE (or, on a
    # slow day, gets it again); one started anew gets its card from the map read back.
    client.kill()
    client = system.start_shell_client(23)
    client.expect_atr(card_profiles[0].atr, timeout=RESTART_TIMEOUT)
    assert client.read_iccid() == card_profiles[0].ef_iccid
    after = audit(system)
    assert after[: len(before)] == before  # nothing lost, nothing changed


def test_a_second_server_on_the_same_state_directory_exits_at_once(
    system: RemsimSystem, state_home: Path, tmp_path: Path
) -> None:
    argv = [
        str(BIN / "remsim-server"),
        "--rest-host", "127.0.0.1", "--rest-port", str(free_port()),
        "--rspro-host", "127.0.0.1", "--rspro-port", str(free_port()),
    ]  # fmt: skip
    env = server_environment(HOME=str(tmp_path / "home"), XDG_STATE_HOME=str(state_home))
    second = subprocess.run(
        argv, env=env, capture_output=True, text=True, timeout=REFUSAL_TIMEOUT, check=False
    )
    assert second.returncode == 1
    assert (
        f"cannot start: the state directory {state_home / 'remsim'} is in use by another process"
        in second.stderr
    )
    assert "Traceback" not in second.stderr
    assert system.rest("GET", "/banks")[0] == 200  # the first one serves on
