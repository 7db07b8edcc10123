"""A real server on free ports of 127.0.0.1, and an HTTP client for its REST API."""

from collections.abc import AsyncIterator

import httpx
import pytest

from remsim_server.server import RemsimServer
from remsim_testing.server import running_server


@pytest.fixture
async def server() -> AsyncIterator[RemsimServer]:
    async with running_server() as server:
        yield server


@pytest.fixture
async def rest(server: RemsimServer) -> AsyncIterator[httpx.AsyncClient]:
    base_url = f"http://127.0.0.1:{server.rest_port}/api/backend/v1"
    async with httpx.AsyncClient(base_url=base_url, timeout=5) as client:
        yield client
