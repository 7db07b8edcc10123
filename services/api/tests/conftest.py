"""The API served for real: uvicorn on a free port of 127.0.0.1, in the test's event loop."""

from __future__ import annotations

import asyncio
import contextlib
import socket
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import AbstractAsyncContextManager
from typing import Any

import pytest
import uvicorn
from starlette.types import ASGIApp

STARTUP_TIMEOUT = 10.0
"""Seconds uvicorn may take to start serving."""


class _Uvicorn(uvicorn.Server):
    """uvicorn without its own signal handling: the test stops it."""

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        yield


@contextlib.asynccontextmanager
async def serving(app: ASGIApp, **config: Any) -> AsyncIterator[int]:
    """Serve ``app`` with these ``uvicorn.Config`` options; yields the port."""
    sock = socket.create_server(("127.0.0.1", 0))
    options: dict[str, Any] = {"log_config": None, "log_level": None} | config
    server = _Uvicorn(uvicorn.Config(app, **options))
    task = asyncio.create_task(server.serve(sockets=[sock]))
    try:
        async with asyncio.timeout(STARTUP_TIMEOUT):
            while not server.started:
                assert not task.done(), "uvicorn stopped while starting"
                await asyncio.sleep(0.01)
        yield int(sock.getsockname()[1])
    finally:
        server.should_exit = True
        await task
        sock.close()


Serve = Callable[..., AbstractAsyncContextManager[int]]


@pytest.fixture
def serve() -> Serve:
    """``async with serve(app, **uvicorn_options) as port``."""
    return serving
