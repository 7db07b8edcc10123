"""``remsim-apitool``: the original's osmo-remsim-apitool, same flags and output (and
``--version``: ``remsim-apitool VERSION``).

Successful GETs print ``<path>: <Python repr of the JSON>`` on stdout, as the original.
Unlike the original, a failure (server unreachable, HTTP error) is one line on stderr and
exit status 1 instead of silence, a traceback or exit status 0.

For a server with tokens, ``--token`` (or ``REMSIM_API_TOKEN``, which keeps the token out of
the process list) is sent as ``Authorization: Bearer``; never printed, not even with ``-v``.
``--ca FILE`` (``REMSIM_API_CA``) talks HTTPS and trusts the server's certificate if that CA
signed it; ``--https`` alone trusts the system's CAs.

``--iccid ICCID CLIENT_ID CLIENT_SLOT`` (remsim's, not the original's) maps the card with
that ICCID, at the bank slot the inventory has it in now, via ``POST /api/v1/slotmaps``,
and prints the map made like a GET: ``/api/v1/slotmaps: {...}``.
"""

from __future__ import annotations

import argparse
import json
import os
import ssl
import sys
from collections.abc import Sequence
from typing import Any

import httpx

from remsim_common import REST_PORT, version_line

PREFIX = "/api/backend/v1"
OWN_PREFIX = "/api/v1"
"""remsim's own operations (``--iccid``), outside the original's API."""


class ApitoolError(Exception):
    """A request that failed; the message is the one line shown to the user."""


TIMEOUT = 10.0
"""Seconds one request may take."""


class Api:
    def __init__(
        self,
        host: str,
        port: int,
        verbose: int,
        *,
        token: str | None = None,
        tls: ssl.SSLContext | None = None,
    ) -> None:
        authority = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
        self.origin = f"{'https' if tls else 'http'}://{authority}"
        self.base = self.origin + PREFIX
        self.verbose = verbose
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        self.http = httpx.Client(timeout=TIMEOUT, headers=headers, verify=tls or True)

    def _request(
        self, method: str, suffix: str, body: Any = None, *, prefix: str = PREFIX
    ) -> httpx.Response:
        url = self.origin + prefix + suffix
        if self.verbose:
            print(f"{method} {url}{body!r}" if method == "POST" else f"{method} {url}")
        try:
            if body is None:
                response = self.http.request(method, url)
            else:
                content = json.dumps(body)
                headers = {"Content-Type": "application/json"}
                response = self.http.request(method, url, content=content, headers=headers)
        except (httpx.HTTPError, httpx.InvalidURL) as exc:
            raise ApitoolError(f"{method} {url} failed: {exc or type(exc).__name__}") from exc
        if response.is_error:
            where = suffix if prefix == PREFIX else prefix + suffix  # the original's: short
            raise ApitoolError(f"{method} {where} failed: {_describe(response)}")
        return response

    def show(self, suffix: str) -> None:
        response = self._request("GET", suffix)
        try:
            decoded = response.json()
        except ValueError:
            return  # the original prints nothing for an empty or non-JSON body
        print(f"{suffix}: {decoded!r}")

    def post(self, suffix: str, body: Any = None) -> None:
        self._request("POST", suffix, body)

    def create(self, suffix: str, body: Any) -> None:
        """POST ``body`` to remsim's own API and print what was created, as ``show``."""
        response = self._request("POST", suffix, body, prefix=OWN_PREFIX)
        print(f"{OWN_PREFIX}{suffix}: {response.json()!r}")

    def delete(self, suffix: str) -> None:
        self._request("DELETE", suffix)


def _describe(response: httpx.Response) -> str:
    status = f"{response.status_code} {response.reason_phrase}"
    try:
        problem = response.json()
    except ValueError:
        problem = None
    if isinstance(problem, dict) and problem.get("detail"):
        return f"{status}: {problem['detail']}"
    return status


def _port(text: str) -> int:
    if not text.isdigit() or not 0 < int(text) < 65536:
        raise argparse.ArgumentTypeError(f"not a TCP port: {text!r}")
    return int(text)


def _number(text: str) -> int:
    if not (text.isascii() and text.isdigit()):
        raise ApitoolError(f"not a client id or slot number: {text!r}")
    return int(text)


def _id_suffix(collection: str, ident: str) -> str:
    return f"/{collection}" if ident == "all" else f"/{collection}/{ident}"


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="remsim-apitool", description="Talk to the remsim server's REST API."
    )
    parser.add_argument(
        "--version", action="version", version=version_line("remsim-apitool", "remsim-api")
    )
    parser.add_argument("-H", "--host", default="127.0.0.1", help="server host (127.0.0.1)")
    parser.add_argument(
        "-p", "-P", "--port", type=_port, default=REST_PORT, help=f"REST port ({REST_PORT})"
    )
    parser.add_argument("-v", "--verbose", action="count", default=0, help="show requests")
    parser.add_argument(
        "--token",
        default=os.environ.get("REMSIM_API_TOKEN") or None,
        help="bearer token (REMSIM_API_TOKEN)",
    )
    parser.add_argument(
        "--ca",
        "--tls-ca",
        metavar="FILE",
        default=os.environ.get("REMSIM_API_CA") or None,
        help="HTTPS, trusting the CA in FILE (REMSIM_API_CA)",
    )
    parser.add_argument("--https", action="store_true", help="HTTPS, trusting the system's CAs")
    commands = parser.add_mutually_exclusive_group()
    commands.add_argument("-r", "--reset", action="store_true", help="delete all slotmaps")
    for short, long, what in (
        ("-c", "--show-clients", "clients"),
        ("-b", "--show-banks", "banks"),
        ("-s", "--show-slotmaps", "slotmaps"),
    ):
        commands.add_argument(
            short, long, nargs="?", const="all", metavar="ID", help=f"show {what} (or one)"
        )
    commands.add_argument(
        "-m",
        "--create-slotmap",
        nargs=4,
        type=int,
        metavar=("BANK_ID", "BANK_SLOT", "CLIENT_ID", "CLIENT_SLOT"),
        help="create a slotmap",
    )
    commands.add_argument(
        "--iccid",
        nargs=3,
        metavar=("ICCID", "CLIENT_ID", "CLIENT_SLOT"),
        help="create a slotmap for the card with this ICCID, wherever its bankd has it now "
        "(remsim's /api/v1; prints the map)",
    )
    commands.add_argument(
        "-d",
        "--delete-slotmap",
        nargs=2,
        type=int,
        metavar=("BANK_ID", "BANK_SLOT"),
        help="delete the slotmap of a bank slot",
    )
    commands.add_argument(
        "-a", "--show-all", action="store_true", help="show clients, banks and slotmaps"
    )
    return parser


def _tls(args: argparse.Namespace) -> ssl.SSLContext | None:
    if args.ca is None and not args.https:
        return None
    try:
        return ssl.create_default_context(cafile=args.ca)
    except (OSError, ssl.SSLError) as exc:
        raise ApitoolError(f"cannot use CA file {args.ca}: {exc}") from exc


def run(args: argparse.Namespace) -> None:
    api = Api(args.host, args.port, args.verbose, token=args.token, tls=_tls(args))
    if args.verbose:
        print("verbosity = ", args.verbose)
    if args.reset:
        api.post("/global-reset")
    elif args.show_clients:
        api.show(_id_suffix("clients", args.show_clients))
    elif args.show_banks:
        api.show(_id_suffix("banks", args.show_banks))
    elif args.show_slotmaps:
        api.show(_id_suffix("slotmaps", args.show_slotmaps))
    elif args.create_slotmap:
        bank_id, bank_slot, client_id, client_slot = args.create_slotmap
        body = {
            "bank": {"bankId": bank_id, "slotNr": bank_slot},
            "client": {"clientId": client_id, "slotNr": client_slot},
        }
        api.post("/slotmaps", body)
    elif args.iccid:
        iccid, client_id, client_slot = args.iccid
        body = {
            "card": {"iccid": iccid},
            "client": {"clientId": _number(client_id), "slotNr": _number(client_slot)},
        }
        api.create("/slotmaps", body)
    elif args.delete_slotmap:
        bank_id, bank_slot = args.delete_slotmap
        api.delete(f"/slotmaps/{bank_id * 65536 + bank_slot}")
    else:
        for suffix in ("/clients", "/banks", "/slotmaps"):
            api.show(suffix)


def main(argv: Sequence[str] | None = None) -> None:
    args = build_parser().parse_args(argv)
    try:
        run(args)
    except ApitoolError as exc:
        print(f"remsim-apitool: {exc}", file=sys.stderr)
        sys.exit(1)
