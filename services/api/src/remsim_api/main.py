"""``remsim-api``: the REST API as a process of its own.

Without a shared store configured it serves an in-memory store and bus (useful to try the
API or run it under test); the distributed deployment connects it to Redis and NATS
(``REMSIM_REDIS_URL``, ``REMSIM_NATS_URL``), and it holds no state of its own. With
``--tls-cert``/``--tls-key`` it serves HTTPS; ``--api-tokens``, ``--api-origins`` and
``--api-hosts`` as ``remsim_api.security`` describes.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import sys
from collections.abc import Sequence

import uvicorn

from remsim_api.app import create_app
from remsim_api.limits import http_options
from remsim_api.security import ApiSecurity, tls_options
from remsim_api.settings import ApiSettings
from remsim_common import REST_PORT, Program
from remsim_common.health import bind
from remsim_control import BackendUnavailable
from remsim_control.backends import open_backends, state_location

log = logging.getLogger("remsim.api")

CATEGORIES = {
    "DMAIN": ("remsim_control",),
    "DREST": ("remsim.api", "uvicorn"),
    "DSLOTMAP": ("remsim.api.slotmap",),
}
"""The original's log categories (``-d``) and the loggers behind each (as remsim-server's)."""

PROGRAM = Program("remsim-api", "remsim-api", categories=CATEGORIES)
SHUTDOWN_TIMEOUT = 2
"""Seconds open requests (a dashboard's event stream, ``remsim_api.ui``) get when stopping."""


def add_backend_options(
    parser: argparse.ArgumentParser, state_dir: str = "one host: keep the state in DIR (in memory)"
) -> None:
    """The shared store and bus options of ``remsim-api`` and ``remsim-server`` (``state_dir``:
    the help of ``--state-dir``, whose default differs)."""
    add = parser.add_argument
    add("--state-dir", metavar="DIR", help=state_dir)
    add("--redis-url", metavar="URL", help="shared store, redis://HOST:6379/0 (in memory)")
    add("--nats-url", metavar="URL", help="shared bus, nats://HOST:4222 (in process)")
    add("--lease-ttl", metavar="SECONDS", help="until a dead core's connections vanish (15)")


def add_security_options(parser: argparse.ArgumentParser) -> None:
    """Who may use the REST API, and from where: of ``remsim-api`` and ``remsim-server``."""
    add = parser.add_argument
    add(
        "--api-tokens",
        metavar="FILE",
        help="bearer tokens: NAME ROLE SHA256 lines (remsim-pki token); unset: no tokens",
    )
    add(
        "--api-origins",
        metavar="ORIGIN",
        action="append",
        help="a browser origin allowed besides the API's own, e.g. https://dash.example "
        "(repeatable, or comma-separated)",
    )
    add(
        "--api-hosts",
        metavar="NAME",
        action="append",
        help="a Host name answered to besides IP addresses, localhost and this host's name "
        "(repeatable; '*': any)",
    )


def build_parser() -> argparse.ArgumentParser:
    parser = PROGRAM.parser(
        "remsim RSRES REST API. Every option is also read from REMSIM_<OPTION> "
        "(e.g. REMSIM_REST_PORT) or a TOML file (--config)."
    )
    parser.add_argument("--rest-host", metavar="HOST", help="bind address (0.0.0.0)")
    parser.add_argument("--rest-port", metavar="PORT", help=f"port ({REST_PORT})")
    parser.add_argument("--tls-cert", metavar="FILE", help="certificate: serve HTTPS")
    parser.add_argument("--tls-key", metavar="FILE", help="its private key")
    add_security_options(parser)
    add_backend_options(parser)
    return parser


def parse_args(argv: Sequence[str] | None = None) -> ApiSettings:
    """The settings from ``argv``, the environment and the config file; exits 2 on a bad
    value."""
    return PROGRAM.load(ApiSettings, build_parser(), argv)


async def serve(settings: ApiSettings) -> int:
    """Serve until SIGINT or SIGTERM (0); 1 if the port or the backends are unavailable."""
    try:
        security = ApiSecurity.from_settings(settings)
        sock = bind(settings.rest_host, settings.rest_port)
    except (OSError, ValueError) as exc:
        log.error("cannot start: %s", exc)
        return 1
    try:
        store, bus = await open_backends(settings)
    except (BackendUnavailable, ValueError) as exc:
        log.error("cannot start: %s", exc)
        sock.close()
        return 1
    log.info("state in %s, events on %s", state_location(store), type(bus).__name__)
    # log_level None: uvicorn's loggers follow -e and -d (DREST) like every other
    config = uvicorn.Config(
        create_app(store, bus, security=security),
        log_config=None,
        log_level=None,
        server_header=False,
        timeout_graceful_shutdown=SHUTDOWN_TIMEOUT,
        **http_options(settings),
        **tls_options(settings),
    )
    try:
        await uvicorn.Server(config).serve(sockets=[sock])
    except OSError as exc:  # ssl.SSLError: the certificate or key cannot be used
        log.error("cannot start: %s", exc)
        return 1
    finally:
        sock.close()
        await bus.close()
        await store.close()
    return 0


def main(argv: Sequence[str] | None = None) -> None:
    settings = parse_args(argv)
    PROGRAM.setup_logging(settings)
    try:
        sys.exit(asyncio.run(serve(settings)))
    except KeyboardInterrupt:
        sys.exit(130)
