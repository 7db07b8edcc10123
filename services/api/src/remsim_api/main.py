"""``remsim-api``: the REST API as a process of its own.

Without a shared store configured it serves an in-memory store and bus (useful to try the
API or run it under test); the distributed deployment connects it to Redis and NATS
(``REMSIM_REDIS_URL``, ``REMSIM_NATS_URL``), and it holds no state of its own.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import socket
import sys
from collections.abc import Sequence
from importlib.metadata import PackageNotFoundError, version

import uvicorn
from pydantic import ValidationError

from remsim_api.app import create_app
from remsim_api.settings import ApiSettings
from remsim_control import BackendUnavailable
from remsim_control.backends import open_backends
from remsim_control.logs import setup_logging
from remsim_control.metrics import METRICS

log = logging.getLogger("remsim.api")


def add_backend_options(parser: argparse.ArgumentParser) -> None:
    """The shared store and bus options of ``remsim-api`` and ``remsim-server``."""
    parser.add_argument("--redis-url", help="shared store, redis://HOST:6379/0 (in memory)")
    parser.add_argument("--nats-url", help="shared bus, nats://HOST:4222 (in process)")
    parser.add_argument(
        "--lease-ttl", type=float, help="seconds until a dead core's connections vanish (15)"
    )


def parse_args(argv: Sequence[str] | None = None) -> ApiSettings:
    parser = argparse.ArgumentParser(
        prog="remsim-api", description="remsim RSRES REST API (environment: REMSIM_*)"
    )
    parser.add_argument("--rest-host", help="bind address (default 0.0.0.0)")
    parser.add_argument("--rest-port", type=int, help="port (default 9997)")
    parser.add_argument("--log-level", help="DEBUG, INFO, WARNING, ERROR (default INFO)")
    parser.add_argument("--log-format", choices=["text", "json"], help="default text")
    add_backend_options(parser)
    given = {
        key: value for key, value in vars(parser.parse_args(argv)).items() if value is not None
    }
    return ApiSettings(**given)


def package_version() -> str:
    try:
        return version("remsim-api")
    except PackageNotFoundError:
        return "0"


def bind(host: str, port: int) -> socket.socket:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.create_server((host, port), family=family)
    sock.setblocking(False)
    return sock


async def serve(settings: ApiSettings) -> int:
    """Serve until SIGINT or SIGTERM (0); 1 if the port or the backends are unavailable."""
    try:
        sock = bind(settings.rest_host, settings.rest_port)
    except OSError as exc:
        log.error("cannot start: %s", exc)
        return 1
    try:
        store, bus = await open_backends(settings)
    except (BackendUnavailable, ValueError) as exc:
        log.error("cannot start: %s", exc)
        sock.close()
        return 1
    log.info("state in %s, events on %s", type(store).__name__, type(bus).__name__)
    METRICS.set_build_info("remsim-api", package_version())
    config = uvicorn.Config(
        create_app(store, bus),
        log_config=None,
        server_header=False,
        log_level=settings.log_level.lower(),
    )
    try:
        await uvicorn.Server(config).serve(sockets=[sock])
    finally:
        sock.close()
        await bus.close()
        await store.close()
    return 0


def main(argv: Sequence[str] | None = None) -> None:
    try:
        settings = parse_args(argv)
    except ValidationError as exc:
        print(f"remsim-api: invalid option: {exc}", file=sys.stderr)
        sys.exit(2)
    setup_logging(settings.log_level, settings.log_format)
    try:
        sys.exit(asyncio.run(serve(settings)))
    except KeyboardInterrupt:
        sys.exit(130)
