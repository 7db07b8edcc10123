"""``remsim-api``: the REST API as a process of its own.

Without a shared store configured it serves an in-memory store and bus (useful to try the
API or run it under test); the distributed deployment connects it to Redis and NATS.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
from collections.abc import Sequence

import uvicorn

from remsim_api.app import create_app
from remsim_api.settings import ApiSettings
from remsim_control import MemoryBus, MemoryStore
from remsim_control.logs import setup_logging


def parse_args(argv: Sequence[str] | None = None) -> ApiSettings:
    parser = argparse.ArgumentParser(
        prog="remsim-api", description="remsim RSRES REST API (environment: REMSIM_*)"
    )
    parser.add_argument("--rest-host", help="bind address (default 0.0.0.0)")
    parser.add_argument("--rest-port", type=int, help="port (default 9997)")
    parser.add_argument("--log-level", help="DEBUG, INFO, WARNING, ERROR (default INFO)")
    parser.add_argument("--log-format", choices=["text", "json"], help="default text")
    given = {
        key: value for key, value in vars(parser.parse_args(argv)).items() if value is not None
    }
    return ApiSettings(**given)


async def serve(settings: ApiSettings) -> None:
    store, bus = MemoryStore(), MemoryBus()
    app = create_app(store, bus)
    config = uvicorn.Config(
        app,
        host=settings.rest_host,
        port=settings.rest_port,
        log_config=None,
        server_header=False,
        log_level=settings.log_level.lower(),
    )
    try:
        await uvicorn.Server(config).serve()
    finally:
        await bus.close()
        await store.close()


def main(argv: Sequence[str] | None = None) -> None:
    settings = parse_args(argv)
    setup_logging(settings.log_level, settings.log_format)
    try:
        asyncio.run(serve(settings))
    except KeyboardInterrupt:
        sys.exit(130)
