"""The server caps its connections by its file descriptor limit (``remsim_server.limits``):
a real server in this process, with the limit it reads (``fd_limit``) replaced by a small
one."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable

import pytest

from remsim_server import core, metrics, server
from remsim_testing.rspro_peers import ScriptedConnection
from remsim_testing.server import connect_bankd, running_server, server_settings

FDS = 70
"""The file descriptor limit of these tests: (70 - 64 reserved) / 2 = 3 connections each."""
TIMEOUT = 5.0
"""Upper bound of every wait."""


async def eventually(check: Callable[[], Awaitable[bool]]) -> None:
    async with asyncio.timeout(TIMEOUT):
        while not await check():
            await asyncio.sleep(0.01)


@pytest.fixture(autouse=True)
def small_fd_limit(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(core, "fd_limit", lambda: FDS)
    monkeypatch.setattr(server, "fd_limit", lambda: FDS)


async def test_the_caps_are_logged_at_start(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, "remsim.server")
    async with running_server(server_settings()) as running:
        assert running.core.limits.total == 3
    assert "serving at most 3 RSPRO connections (file descriptor limit 70)" in caplog.text
    assert "serving at most 3 REST connections (file descriptor limit 70)" in caplog.text


async def test_rspro_connections_over_the_cap_are_refused_at_once(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.WARNING, "remsim.server")
    refused = "remsim_connections_refused_total"
    before = metrics.REGISTRY.get_sample_value(refused, {"limit": "total"}) or 0.0
    async with running_server(server_settings()) as running:

        async def held(count: int) -> bool:
            return running.core.limits.held() == count

        silent = [await ScriptedConnection.connect(running.rspro_port) for _ in range(3)]
        await eventually(lambda: held(3))
        for peer in [await ScriptedConnection.connect(running.rspro_port) for _ in range(5)]:
            await peer.expect_closed()  # at once: no identification timeout runs
        assert metrics.REGISTRY.get_sample_value(refused, {"limit": "total"}) == before + 5
        [line] = [r for r in caplog.records if r.getMessage().startswith("connection refused")]
        assert "3 connections on all RSPRO ports (file descriptor limit)" in line.getMessage()
        assert line.cause == "total limit"  # type: ignore[attr-defined]
        await silent[0].aclose()  # a connection that goes makes room
        await eventually(lambda: held(2))
        bankd = await connect_bankd(running.rspro_port)
        await bankd.aclose()
        for peer in silent[1:]:
            await peer.aclose()


async def test_a_server_far_below_its_fd_limit_has_no_total_cap(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setattr(core, "fd_limit", lambda: 65536)
    caplog.set_level(logging.WARNING, "remsim.server")
    async with running_server(server_settings()) as running:
        assert running.core.limits.total is None
    assert "RSPRO connections (file descriptor limit" not in caplog.text
