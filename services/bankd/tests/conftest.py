"""Fixtures shared by the bankd's tests."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from remsim_testing.bankd import ScriptedServer


@pytest.fixture
async def server() -> AsyncIterator[ScriptedServer]:
    """A scripted remsim server on a free port of 127.0.0.1, for a bankd to register at."""
    async with ScriptedServer() as s:
        yield s
