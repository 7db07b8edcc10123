"""Fast recovery (issue 12): a client whose bankd connection is refused retries on the
original's back-off table from its first step (every second after three immediate
attempts), so that the card is back soon after the bankd is. Real processes: server,
bankd on the virtual SIM bank, remsim-client-shell."""

from __future__ import annotations

import socket
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from remsim_bankd.sim import CardProfile
from remsim_testing.simbank import VirtualSimBank
from tests.system import RemsimSystem, wait_for

pytestmark = [pytest.mark.integration, pytest.mark.pcsc]

DOWN = 1.0
"""Seconds the bankd stays dead."""
RECOVERY = 2.0
"""Seconds from the bankd listening again to the client's first good APDU (the acceptance)."""


@pytest.fixture
def system(virtual_sim_bank: VirtualSimBank, tmp_path: Path) -> Iterator[RemsimSystem]:
    with RemsimSystem(virtual_sim_bank, tmp_path) as system:
        yield system


def listening(port: int) -> bool:
    try:
        socket.create_connection(("127.0.0.1", port), timeout=1.0).close()
    except OSError:
        return False
    return True


def test_the_card_is_back_within_2_s_of_a_killed_bankd_restarting(
    system: RemsimSystem, card_profiles: list[CardProfile]
) -> None:
    client = system.start_shell_client(23)
    system.map(bank_slot=0, client_id=23)
    client.expect_atr(card_profiles[0].atr)
    system.wait(lambda: system.slotmap_state(0) == "ACTIVE", "B1:0 ACTIVE")
    bankd = system.bankd
    assert bankd is not None
    bankd.kill()
    time.sleep(DOWN)  # the acceptance's outage; meanwhile the client's connects are refused
    bankd.restart()  # already dead: just started again
    wait_for(lambda: listening(system.bankd_port), "the bankd's client port", timeout=30)
    back = time.monotonic()
    client.expect_atr(card_profiles[0].atr, timeout=10)
    assert client.read_iccid() == card_profiles[0].ef_iccid
    recovered = time.monotonic() - back
    print(f"first good APDU {recovered:.2f} s after the bankd listened again")
    assert recovered <= RECOVERY, system.logs()


def test_client_and_bankd_are_back_at_a_killed_server_within_2_s_of_its_restart(
    system: RemsimSystem, card_profiles: list[CardProfile]
) -> None:
    client = system.start_shell_client(23)
    system.map(bank_slot=0, client_id=23)
    client.expect_atr(card_profiles[0].atr)
    server = system.server
    assert server is not None
    server.kill()
    time.sleep(DOWN)
    server.restart()
    wait_for(lambda: listening(system.rspro_port), "the server's RSPRO port", timeout=30)
    back = time.monotonic()

    def both_connected() -> bool:
        banks = system.rest("GET", "/banks")[1]["banks"]
        clients = system.rest("GET", "/clients")[1]["clients"]
        return bool(banks) and bool(clients)

    wait_for(both_connected, "the bankd and the client at the new server", timeout=10)
    recovered = time.monotonic() - back
    print(f"bankd and client at the server {recovered:.2f} s after it listened again")
    assert recovered <= RECOVERY, system.logs()
