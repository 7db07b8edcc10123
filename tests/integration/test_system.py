"""The whole system on one host, every part a real process (issue: the first mapped APDU
end to end): remsim-server, remsim-bankd on the virtual SIM bank (pcscd + vpcd + two
software SIMs), remsim-client-shell; slotmaps made over REST.
"""

from __future__ import annotations

import signal
from collections.abc import Iterator
from pathlib import Path

import pytest

from remsim_bankd.sim import CardProfile
from remsim_testing.simbank import VirtualSimBank
from tests.system import SELECT_MF, RemsimSystem

pytestmark = [pytest.mark.integration, pytest.mark.pcsc]


@pytest.fixture
def system(virtual_sim_bank: VirtualSimBank, tmp_path: Path) -> Iterator[RemsimSystem]:
    with RemsimSystem(virtual_sim_bank, tmp_path) as system:
        yield system


def test_map_apdus_remap_unmap(system: RemsimSystem, card_profiles: list[CardProfile]) -> None:
    client = system.start_shell_client(23)
    system.map(bank_slot=0, client_id=23)
    client.expect_atr(card_profiles[0].atr)
    system.wait(lambda: system.slotmap_state(0) == "ACTIVE", "B1:0 ACTIVE")
    assert client.read_iccid() == card_profiles[0].ef_iccid
    # T=0 procedure status words reach the client unchanged
    assert client.transmit("a0b000000b") == b"\x6c\x0a"  # EF_ICCID has 10 bytes
    assert client.transmit("00a40004023f00")[0] == 0x61

    system.unmap(0)
    system.map(bank_slot=1, client_id=23)
    client.expect_atr(card_profiles[1].atr)
    assert client.read_iccid() == card_profiles[1].ef_iccid

    system.unmap(1)
    system.wait(lambda: system.rest("GET", "/slotmaps")[1]["slotmaps"] == [], "no slotmaps")
    client.send(SELECT_MF)  # unmapped: dropped locally, no answer
    with pytest.raises(TimeoutError):
        client.expect("R-APDU: ", timeout=1.0)
    # ... by a client that is alive and still registered, just without a card
    assert client.running
    assert [c["peer"] for c in system.rest("GET", "/clients")[1]["clients"]] == ["C23:0"]


def test_after_a_server_restart_the_bankd_serves_only_the_maps_the_server_knows(
    system: RemsimSystem, card_profiles: list[CardProfile]
) -> None:
    client = system.start_shell_client(23)
    system.map(bank_slot=0, client_id=23)
    client.expect_atr(card_profiles[0].atr)
    assert system.server is not None
    system.server.restart()  # --store memory: the new server knows no map
    system.wait(lambda: system.rest("GET", "/banks")[0] == 200, "the new server")
    system.wait_bank_connected()  # and told the bankd to drop every map (resetStateReq)
    system.wait(
        lambda: system.rest("GET", "/clients")[1]["clients"], "the client back at the server"
    )
    # Unlike with the original, the bankd no longer serves the forgotten map (once the
    # server's re-push after its resetStateReq, here empty, has had its RESET_GRACE) ...
    bankd = system.bankd
    assert bankd is not None
    system.wait(lambda: "removed by resetState" in bankd.log.read_text(), "the map dropped")
    system.map(bank_slot=0, client_id=23)
    system.wait(lambda: system.slotmap_state(0) == "ACTIVE", "B1:0 ACTIVE again")
    # ... and the client gets its card again once it is mapped again.
    client.expect_atr(card_profiles[0].atr, timeout=30)
    assert client.read_iccid() == card_profiles[0].ef_iccid


def test_bankd_restart_reconnects_the_client(
    system: RemsimSystem, card_profiles: list[CardProfile]
) -> None:
    client = system.start_shell_client(23)
    system.map(bank_slot=0, client_id=23)
    client.expect_atr(card_profiles[0].atr)
    assert system.bankd is not None
    system.bankd.restart()
    system.wait_bank_connected()
    # the server pushes the map to the new bankd; the client reconnects and gets the ATR
    client.expect_atr(card_profiles[0].atr, timeout=30)
    assert client.read_iccid() == card_profiles[0].ef_iccid


def test_client_restart_gets_its_card_again(
    system: RemsimSystem, card_profiles: list[CardProfile]
) -> None:
    client = system.start_shell_client(23)
    system.map(bank_slot=0, client_id=23)
    client.expect_atr(card_profiles[0].atr)
    client.stop(signal.SIGKILL)
    system.wait(lambda: system.rest("GET", "/clients")[1]["clients"] == [], "client gone")
    client = system.start_shell_client(23)
    client.expect_atr(card_profiles[0].atr)
    assert client.read_iccid() == card_profiles[0].ef_iccid
