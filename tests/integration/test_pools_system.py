"""Acceptance (issue 16): SIM pools, client groups, rules and leases with a real
``remsim-server`` (embedded SQLite store) and simulated bankds and clients speaking RSPRO.

The rules' maps are ordinary slotmaps: the bankd is sent createMappingReq /
removeMappingReq and the client configClientBankReq, exactly as for a map made over REST.
"""

from __future__ import annotations

import asyncio
import datetime
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import httpx
import pytest

import rspro
from remsim_bankd.sim import CardProfile
from remsim_testing.simbank import VirtualSimBank
from tests.fixtures.servers import RemsimProcess, SimBankd, SimClient, sim_atr
from tests.system import RemsimSystem, free_port

pytestmark = [pytest.mark.integration, pytest.mark.slow]

WAIT = 20.0
"""Seconds a change may take to reach a peer: a bound, not a speed goal."""
LEASE = 3.0
LEASE_TOLERANCE = 0.5
"""The acceptance: a 3 s lease ends after 3 s ± 0.5 s."""

C23_0 = rspro.ClientSlot(23, 0)
OWN = "/api/v1"


def slot(n: int) -> dict[str, Any]:
    return {"bank": {"bankId": 1, "slotNr": n}}


class Lab:
    """One server (state in ``state``), one bankd with 4 slots, REST on the server."""

    def __init__(self, tmp_path: Path, empty: set[int] | None = None) -> None:
        self.bankd_port = free_port()
        env = {
            "REMSIM_STATE_DIR": str(tmp_path / "state"),
            "REMSIM_LOG_LEVEL": "INFO",
            "REMSIM_BANKD_PORT": str(self.bankd_port),  # the address clients are given
        }
        self.server = RemsimProcess("core", "server", env, tmp_path)
        self.empty = empty or set()
        self.bankd: SimBankd | None = None
        self.clients: list[SimClient] = []
        self.http = httpx.AsyncClient(
            base_url=f"http://127.0.0.1:{self.server.rest_port}{OWN}", timeout=5
        )

    @property
    def servers(self) -> list[tuple[str, int]]:
        return [("127.0.0.1", self.server.rspro_port)]

    async def start(self) -> None:
        await asyncio.to_thread(self.server.start)
        self.bankd = SimBankd(1, 4, self.servers)
        self.bankd.empty = self.empty
        await self.bankd.start(self.bankd_port)

    async def client(self, slot: rspro.ClientSlot = C23_0) -> SimClient:
        client = SimClient(slot, self.servers)
        await client.start()
        self.clients.append(client)
        return client

    async def put(self, path: str, body: dict[str, Any]) -> dict[str, Any]:
        response = await self.http.put(path, json=body)
        assert response.status_code == 200, response.text
        result: dict[str, Any] = response.json()
        return result

    async def get(self, path: str) -> Any:
        response = await self.http.get(path)
        assert response.status_code == 200, response.text
        return response.json()

    async def aclose(self) -> None:
        for client in self.clients:
            await client.aclose()
        if self.bankd is not None:
            await self.bankd.aclose()
        await self.http.aclose()
        await asyncio.to_thread(self.server.stop)


@pytest.fixture
async def lab(tmp_path: Path) -> AsyncIterator[Lab]:
    lab = Lab(tmp_path)
    await lab.start()
    yield lab
    await lab.aclose()


async def eventually(condition: Callable[[], Any], what: str, timeout: float = WAIT) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        result = condition()
        if asyncio.iscoroutine(result):
            result = await result
        if result:
            return result
        if time.monotonic() > deadline:
            raise AssertionError(f"{what} not reached within {timeout} s")
        await asyncio.sleep(0.02)


def card_of(client: SimClient) -> int | None:
    """The bank slot number the client was last sent (None: none, or told to disconnect)."""
    config = client.config
    if config is None or config.bankd.port == 0:
        return None
    return config.bank_slot.slot_nr


async def configure(lab: Lab, **rule: Any) -> None:
    await lab.put("/pools/A", {"cards": [slot(0), slot(1), slot(2)]})
    await lab.put("/groups/modems", {"clients": [{"clientId": 23, "slotNr": 0}]})
    await lab.put("/rules/r", {"group": "modems", "pools": ["A"], "method": "cyclic", **rule})


async def test_a_cyclic_rule_gives_a_card_and_disabling_it_moves_the_client(lab: Lab) -> None:
    await configure(lab)
    client = await lab.client()
    await eventually(lambda: card_of(client) == 0, "the client given B1:0")
    await asyncio.wait_for(client.has_atr.wait(), WAIT)
    assert client.atr == sim_atr(rspro.BankSlot(1, 0))  # the card itself, from the bankd
    await lab.put("/card-states/B1:0", {"state": "disabled"})
    await eventually(lambda: card_of(client) == 1, "the client moved to B1:1")
    await eventually(lambda: client.atr == sim_atr(rspro.BankSlot(1, 1)), "the ATR of B1:1")
    assert lab.bankd is not None
    removed = [m for _, m in lab.bankd.requests if isinstance(m, rspro.RemoveMappingReq)]
    assert [m.bank for m in removed] == [rspro.BankSlot(1, 0)]
    (listed,) = (await lab.get("/slotmaps"))["slotmaps"]
    assert listed["bank"] == {"bankId": 1, "slotNr": 1}
    assert listed["lease"] == {"rule": "r", "card": "B1:1"}


async def test_a_3_s_lease_ends_after_3_s_and_extending_keeps_it(lab: Lab) -> None:
    await configure(lab, leaseSeconds=LEASE)
    client = await lab.client()
    await eventually(lambda: card_of(client) == 0, "the client given B1:0")
    given = time.monotonic()
    await eventually(lambda: card_of(client) == 1, "the next card", timeout=LEASE + 5)
    lasted = time.monotonic() - given
    print(f"the 3 s lease lasted {lasted:.3f} s")
    assert LEASE - LEASE_TOLERANCE <= lasted <= LEASE + LEASE_TOLERANCE
    # Extended: B1:1's map stays past its 3 s.
    response = await lab.http.put(f"/slotmaps/{65536 + 1}/lease", json={"duration": 30})
    assert response.status_code == 200, response.text
    await asyncio.sleep(LEASE + 1)
    assert card_of(client) == 1
    usage = {c["card"]: c for c in (await lab.get("/card-states"))["cards"]}
    assert usage["B1:0"]["maps"] == 1
    assert LEASE - LEASE_TOLERANCE <= usage["B1:0"]["mappedSeconds"] <= LEASE + LEASE_TOLERANCE


async def test_three_card_not_present_block_the_card_which_is_then_skipped(
    tmp_path: Path,
) -> None:
    lab = Lab(tmp_path, empty={0})
    await lab.start()
    try:
        await lab.put("/pools/A", {"cards": [slot(0)]})
        await lab.put("/groups/modems", {"clients": [{"clientId": 23, "slotNr": 0}]})
        await lab.put("/rules/r", {"group": "modems", "pools": ["A"]})
        client = await lab.client()

        async def blocked() -> bool:
            state = await lab.get("/card-states/B1:0")
            return bool(state["state"] == "blocked")

        await eventually(blocked, "B1:0 blocked")
        state = await lab.get("/card-states/B1:0")
        assert state["failures"] == 3 and state["lastFailure"] == "cardNotPresent"
        assert lab.bankd is not None
        assert len(lab.bankd.creates()) == 3
        await asyncio.sleep(1)
        assert len(lab.bankd.creates()) == 3  # skipped from now on
        assert card_of(client) is None
        await lab.put("/pools/A", {"cards": [slot(0), slot(1)]})
        await eventually(lambda: card_of(client) == 1, "the client given B1:1")
        assert len(lab.bankd.creates()) == 4
    finally:
        await lab.aclose()


async def test_a_restart_keeps_pools_rules_leases_and_counters(lab: Lab) -> None:
    await configure(lab, leaseSeconds=3600)
    client = await lab.client()
    await eventually(lambda: card_of(client) == 0, "the client given B1:0")
    await lab.put("/card-states/B1:2", {"state": "disabled"})
    before = {
        what: await lab.get(what)
        for what in ("/pools", "/groups", "/rules", "/card-states", "/slotmaps")
    }
    (listed,) = before["/slotmaps"]["slotmaps"]
    assert listed["lease"]["expiresAt"] is not None
    await asyncio.to_thread(lab.server.stop)
    await asyncio.to_thread(lab.server.start)
    for what, value in before.items():
        if what == "/slotmaps":  # the map waits (NEW) until the bankd is back, then ACTIVE
            await eventually(
                lambda: _slotmaps_active(lab), "the map ACTIVE again after the restart"
            )
            after = await lab.get(what)
            for map_before, map_after in zip(value["slotmaps"], after["slotmaps"], strict=True):
                assert map_after | {"state": "ACTIVE"} == map_before | {"state": "ACTIVE"}
        else:
            assert await lab.get(what) == value, what
    await eventually(lambda: card_of(client) == 0 and client.atr is not None, "the card again")


async def _slotmaps_active(lab: Lab) -> bool:
    maps = (await lab.get("/slotmaps"))["slotmaps"]
    return bool(maps) and all(m["state"] == "ACTIVE" for m in maps)


async def test_a_window_maps_when_it_opens_and_unmaps_when_it_closes(lab: Lab) -> None:
    opens = datetime.datetime.now(datetime.UTC) + datetime.timedelta(seconds=3)
    closes = opens + datetime.timedelta(seconds=2)
    client = await lab.client()
    await configure(lab, notBefore=opens.isoformat(), notAfter=closes.isoformat())
    await asyncio.sleep(1)
    assert card_of(client) is None
    await eventually(lambda: card_of(client) == 0, "the window open", timeout=10)
    opened = datetime.datetime.now(datetime.UTC)
    assert abs((opened - opens).total_seconds()) <= LEASE_TOLERANCE
    await eventually(lambda: client.config is not None and card_of(client) is None, "closed")
    closed = datetime.datetime.now(datetime.UTC)
    assert abs((closed - closes).total_seconds()) <= LEASE_TOLERANCE
    assert client.config is not None and client.config.bankd.port == 0  # told: no bankd


@pytest.mark.pcsc
def test_rule_driven_maps_with_the_real_bankd_and_shell_client(
    virtual_sim_bank: VirtualSimBank, card_profiles: list[CardProfile], tmp_path: Path
) -> None:
    """The whole system (remsim-bankd on the virtual SIM bank, remsim-client-shell): a rule's
    map gives the modem its card, APDUs and all; disabling the card gives it the next one."""
    with RemsimSystem(virtual_sim_bank, tmp_path) as system:
        for path, body in (
            ("/api/v1/pools/A", {"cards": [slot(0), slot(1)]}),
            ("/api/v1/groups/modems", {"clients": [{"clientId": 23, "slotNr": 0}]}),
            ("/api/v1/rules/r", {"group": "modems", "pools": ["A"], "method": "cyclic"}),
        ):
            status, answer = system.rest("PUT", path, body)
            assert status == 200, answer
        client = system.start_shell_client(23)
        client.expect_atr(card_profiles[0].atr)
        assert client.read_iccid() == card_profiles[0].ef_iccid
        system.wait(lambda: system.slotmap_state(0) == "ACTIVE", "B1:0 ACTIVE")
        status, answer = system.rest("PUT", "/api/v1/card-states/B1:0", {"state": "disabled"})
        assert status == 200, answer
        client.expect_atr(card_profiles[1].atr)
        assert client.read_iccid() == card_profiles[1].ef_iccid
        system.wait(lambda: system.slotmap_state(1) == "ACTIVE", "B1:1 ACTIVE")
        assert system.slotmap_state(0) is None
