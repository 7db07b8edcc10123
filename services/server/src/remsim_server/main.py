"""``remsim-server``: the control server with its REST API, in one process.

Flags as the original's where it has them (``-h``, ``-V``, ``-d MASK``, ``-L``; ``-e``/
``--log-level`` and ``-T`` as the bankd's); every option can also be set as a
``REMSIM_*`` environment variable or in a TOML file (``--config``, see docs/server.md).
Without ``--redis-url``/``--nats-url`` the state (slotmaps, client configurations, the audit
log) is kept in an SQLite file in the state directory (``--state-dir``; by default
``$XDG_STATE_HOME/remsim`` or ``~/.local/state/remsim``), or with ``--store memory`` in
memory only; with them this process is one of several cores sharing Redis and NATS
(docs/distributed.md). With ``--tls-cert``/``--tls-key``/``--tls-ca`` the RSPRO control
port speaks mutual TLS; with ``--tls-port`` as well, the control port stays plaintext and
TLS is on that port (mixed fleets), until ``--require-tls`` drops the plaintext port.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import logging
import signal
import sys
from collections.abc import Callable, Sequence
from typing import Any

import rspro.codec
from remsim_api.main import add_backend_options, add_security_options
from remsim_common import BANKD_PORT, CONTROL_PORT, REST_PORT, Program, TransportSecurity
from remsim_common.logs import RateLimitedLog
from remsim_control import BackendUnavailable
from remsim_control.backends import open_backends, state_location
from remsim_server.limits import LOG_INTERVAL, MAX_CONNECTIONS, MAX_CONNECTIONS_PER_ADDRESS
from remsim_server.role import IDENTIFY_TIMEOUT, MAP_REQUEST_TIMEOUT
from remsim_server.server import RemsimServer
from remsim_server.settings import ServerSettings

log = logging.getLogger("remsim.server")

CATEGORIES = {
    "DMAIN": ("remsim.server", "remsim_control"),
    "DRSPRO": ("rspro",),
    "DREST": ("remsim.api", "uvicorn"),
    "DSLOTMAP": ("remsim.server.slotmap", "remsim.api.slotmap"),
}
"""The original's log categories (``-d``) and the loggers behind each."""

PROGRAM = Program("remsim-server", "remsim-server", categories=CATEGORIES)

GC_THRESHOLDS = (10_000, 20, 100)
"""``gc.set_threshold``: allocations before a young collection (Python: 700), and young
(10) and middle (10) collections before an older one; see ``tune_gc``."""

ACCEPT_FAILED = "socket.accept() out of system resource"
"""asyncio's report of a listener that cannot accept (file descriptors used up): logged
with a traceback each time it retries, which floods the log under attack."""


def build_parser() -> argparse.ArgumentParser:
    parser = PROGRAM.parser(
        "remsim control server: RSPRO for bankds and clients, and the REST API. Every "
        "option is also read from REMSIM_<OPTION> (e.g. REMSIM_RSPRO_PORT) or a TOML file "
        "(--config).",
        transport=True,
    )
    add = parser.add_argument
    add("--rspro-host", metavar="HOST", help="RSPRO control bind address (0.0.0.0)")
    add("--rspro-port", metavar="PORT", help=f"RSPRO control port ({CONTROL_PORT})")
    add("--tls-port", metavar="PORT",
        help="RSPRO port for TLS peers beside a plaintext control port, while a fleet "
        "moves to TLS (needs --tls-cert/--tls-key/--tls-ca); with --require-tls the only "
        "one")  # fmt: skip
    add("--rest-host", metavar="HOST", help="REST API bind address (0.0.0.0)")
    add("--rest-port", metavar="PORT", help=f"REST API port ({REST_PORT})")
    add("--name", dest="identity_name", help="name in the server's identity (host name)")
    add("--bankd-port", metavar="PORT", help=f"bankd port given to clients ({BANKD_PORT})")
    add("--bankd-address", dest="bankd_addresses", action="append",
        metavar="BANK_ID=HOST[:PORT]",
        help="address given to clients for this bank, instead of the address its control "
        "connection comes from (NAT, multi-homed hosts); repeatable")  # fmt: skip
    add("--store", metavar="{sqlite,memory}",
        help="one host: sqlite keeps the maps and the audit log in the state directory "
        "(default), memory keeps nothing (tests); not with --redis-url")  # fmt: skip
    add_backend_options(parser, state_dir="the sqlite store's directory "
        "($XDG_STATE_HOME/remsim, else ~/.local/state/remsim)")  # fmt: skip
    add_security_options(parser)
    add("--resync-interval", metavar="SECONDS", help="between re-reads of the store (30)")
    add(
        "--identify-timeout",
        metavar="SECONDS",
        help=f"for a new RSPRO connection to send its connect request ({IDENTIFY_TIMEOUT:g})",
    )
    add(
        "--max-connections",
        metavar="N",
        help=f"RSPRO connections per port, more are refused ({MAX_CONNECTIONS})",
    )
    add(
        "--max-connections-per-address",
        metavar="N",
        help=f"RSPRO connections per source address ({MAX_CONNECTIONS_PER_ADDRESS})",
    )
    add(
        "--peer-log-interval",
        metavar="SECONDS",
        help=f"between two log lines of the same peer error ({LOG_INTERVAL:g})",
    )
    add("--map-request-timeout", metavar="SECONDS",
        help="for a bankd to answer a map request; then retried at the next resync "
        f"({MAP_REQUEST_TIMEOUT:g})")  # fmt: skip
    add("--core-id", help="this core's name in the registry (host-pid-random)")
    add("--audit-days", metavar="DAYS", help="days the audit log keeps its entries (90)")
    return parser


def parse_args(argv: Sequence[str] | None = None) -> ServerSettings:
    """The settings from ``argv``, the environment and the config file; exits 2 on a bad
    value."""
    return PROGRAM.load(ServerSettings, build_parser(), argv)


async def run(settings: ServerSettings) -> int:
    """Serve until SIGINT or SIGTERM (0); 1 if the TLS files, a port or the backends are
    unavailable."""
    try:
        security = TransportSecurity.from_settings(settings)
    except OSError as exc:  # ssl.SSLError included
        log.error("cannot start: the TLS files cannot be used: %s", exc)
        return 1
    # The ASN.1 codec compiles on first use (a few tenths of a second of CPU): before the
    # core's lease is taken, not on the event loop at the first connect, where it once
    # outlasted a short lease under load.
    rspro.codec.schema()
    tune_gc()
    try:
        store, bus = await open_backends(settings, core_id=settings.core_id)
    except (BackendUnavailable, ValueError) as exc:
        log.error("cannot start: %s", exc)
        return 1
    log.info(
        "state in %s, events on %s",
        state_location(store),
        type(bus).__name__,
        extra={"core": settings.core_id},
    )
    try:
        return await _serve(RemsimServer(settings, store, bus, security=security))
    finally:
        await store.close()  # a shared store: releases this core's lease
        await bus.close()


def tune_gc() -> None:
    """The garbage collector for a server holding thousands of connections: what start-up
    made (modules, the ASN.1 schema) is never scanned again (``gc.freeze``), and the
    collections of the older generations come less often (``GC_THRESHOLDS``). With
    Python's defaults, the collections scanning the connections' long-lived objects grew
    with their number: 10,000 maps took 15.8 s instead of 9.4 s (docs/benchmarks.md)."""
    gc.freeze()
    gc.set_threshold(*GC_THRESHOLDS)


def quiet_accept_failures(
    limiter: RateLimitedLog,
) -> Callable[[asyncio.AbstractEventLoop, dict[str, Any]], None]:
    """An event loop exception handler that logs ``ACCEPT_FAILED`` without a traceback, at
    most once per interval; everything else as asyncio does."""

    def handle(loop: asyncio.AbstractEventLoop, context: dict[str, Any]) -> None:
        if context.get("message") == ACCEPT_FAILED:
            limiter.log(
                logging.ERROR,
                "accept",
                "cannot accept connections now: %s (too many open files?)",
                context.get("exception"),
            )
        else:
            loop.default_exception_handler(context)

    return handle


async def _serve(server: RemsimServer) -> int:
    loop = asyncio.get_running_loop()
    loop.set_exception_handler(quiet_accept_failures(server.core.peer_log))
    try:
        await server.start()
    except OSError as exc:
        log.error("cannot start: %s", exc)
        return 1
    stop = asyncio.Event()
    for signum in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(signum, stop.set)
    try:
        await stop.wait()
        log.info("shutting down")
    finally:
        await server.aclose()
    return 0


def main(argv: Sequence[str] | None = None) -> None:
    settings = parse_args(argv)
    PROGRAM.setup_logging(settings)
    sys.exit(asyncio.run(run(settings)))
