"""``remsim-server``: the control server with its REST API, in one process.

Flags as the original's where it has them (``-h``, ``-V``, ``-d MASK``, ``-L``); every
option can also be set as a ``REMSIM_*`` environment variable (see docs/server.md). Without
``--redis-url``/``--nats-url`` everything is in memory; with them this process is one of
several cores sharing Redis and NATS (docs/distributed.md).
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import signal
import sys
from collections.abc import Sequence

from pydantic import ValidationError

from remsim_api.main import add_backend_options
from remsim_control import BackendUnavailable
from remsim_control.backends import open_backends
from remsim_control.logs import level_from_debug_mask, setup_logging
from remsim_control.metrics import METRICS
from remsim_server.server import RemsimServer
from remsim_server.settings import ServerSettings, package_version

log = logging.getLogger("remsim.server")


def _bank_address(text: str) -> tuple[int, str]:
    bank, sep, address = text.partition("=")
    if not sep or not bank.strip().isdigit():
        raise argparse.ArgumentTypeError(f"expected BANK_ID=HOST[:PORT], got {text!r}")
    return int(bank), address


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="remsim-server",
        description="remsim control server: RSPRO for bankds and clients, and the REST API. "
        "Every option is also read from REMSIM_<OPTION> (e.g. REMSIM_RSPRO_PORT).",
    )
    parser.add_argument(
        "-V", "--version", action="version", version=f"remsim-server version {package_version()}"
    )
    parser.add_argument("--rspro-host", help="RSPRO control bind address (0.0.0.0)")
    parser.add_argument("--rspro-port", type=int, help="RSPRO control port (9998)")
    parser.add_argument("--rest-host", help="REST API bind address (0.0.0.0)")
    parser.add_argument("--rest-port", type=int, help="REST API port (9997)")
    parser.add_argument(
        "--name", dest="identity_name", help="name in the server's identity (host name)"
    )
    parser.add_argument("--bankd-port", type=int, help="bankd port given to clients (9999)")
    parser.add_argument(
        "--bankd-address",
        dest="bankd_addresses",
        type=_bank_address,
        action="append",
        metavar="BANK_ID=HOST[:PORT]",
        help="address given to clients for this bank, instead of the address its control "
        "connection comes from (NAT, multi-homed hosts); repeatable",
    )
    add_backend_options(parser)
    parser.add_argument(
        "--resync-interval", type=float, help="seconds between re-reads of the store (30)"
    )
    parser.add_argument("--core-id", help="this core's name in the registry (host-pid-random)")
    parser.add_argument("--log-level", help="DEBUG, INFO, WARNING, ERROR (INFO)")
    parser.add_argument("--log-format", choices=["text", "json"], help="log format (text)")
    parser.add_argument(
        "-d", "--debug", metavar="MASK", help="the original's log mask, e.g. DMAIN,1:DRSPRO"
    )
    parser.add_argument(
        "-L", "--disable-color", action="store_true", help="accepted; logs are never coloured"
    )
    return parser


def parse_args(argv: Sequence[str] | None = None) -> ServerSettings:
    args = build_parser().parse_args(argv)
    given = {
        key: value
        for key, value in vars(args).items()
        if value is not None and key not in ("debug", "disable_color", "bankd_addresses")
    }
    if args.bankd_addresses:
        given["bankd_addresses"] = dict(args.bankd_addresses)
    if args.debug and args.log_level is None:
        given["log_level"] = level_from_debug_mask(args.debug)
    return ServerSettings(**given)


async def run(settings: ServerSettings) -> int:
    """Serve until SIGINT or SIGTERM (0); 1 if a port or the backends are unavailable."""
    try:
        store, bus = await open_backends(settings, core_id=settings.core_id)
    except (BackendUnavailable, ValueError) as exc:
        log.error("cannot start: %s", exc)
        return 1
    log.info(
        "core %s: state in %s, events on %s",
        settings.core_id,
        type(store).__name__,
        type(bus).__name__,
    )
    METRICS.set_build_info("remsim-server", package_version())
    try:
        return await _serve(RemsimServer(settings, store, bus))
    finally:
        await store.close()  # a shared store: releases this core's lease
        await bus.close()


async def _serve(server: RemsimServer) -> int:
    try:
        await server.start()
    except OSError as exc:
        log.error("cannot start: %s", exc)
        return 1
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(signum, stop.set)
    try:
        await stop.wait()
        log.info("shutting down")
    finally:
        await server.aclose()
    return 0


def main(argv: Sequence[str] | None = None) -> None:
    try:
        settings = parse_args(argv)
    except ValidationError as exc:
        print(f"remsim-server: invalid option: {exc}", file=sys.stderr)
        sys.exit(2)
    setup_logging(settings.log_level, settings.log_format)
    sys.exit(asyncio.run(run(settings)))
