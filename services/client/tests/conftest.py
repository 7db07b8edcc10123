"""Scripted server and bankds (remsim_testing.client) on free ports of 127.0.0.1."""

from collections.abc import AsyncIterator

import pytest

from remsim_testing.client import BANKD_IDENTITY, SERVER_IDENTITY, ScriptedPeer


@pytest.fixture
async def server() -> AsyncIterator[ScriptedPeer]:
    async with ScriptedPeer(SERVER_IDENTITY) as peer:
        yield peer


@pytest.fixture
async def bankd() -> AsyncIterator[ScriptedPeer]:
    async with ScriptedPeer(BANKD_IDENTITY) as peer:
        yield peer


@pytest.fixture
async def bankd2() -> AsyncIterator[ScriptedPeer]:
    async with ScriptedPeer(BANKD_IDENTITY) as peer:
        yield peer
