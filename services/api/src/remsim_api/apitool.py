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

``--create-slotmaps FILE`` (remsim's; ``-`` reads stdin) makes a whole fleet's maps through
``POST /api/v1/slotmaps:batch``, ``BATCH`` a request: one map a line, ``BANK_ID BANK_SLOT
CLIENT_ID CLIENT_SLOT`` (by bank slot) or ``ICCID CLIENT_ID CLIENT_SLOT`` (by card), numbers
separated by spaces or commas, ``#`` starting a comment. Each map's outcome is one line,
``<line number>: <Python repr of its result>``; a map not made (unknown card, slot in use)
makes the exit status 1, after all the others were tried.
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
BATCH = 1000
"""Maps per ``POST /api/v1/slotmaps:batch`` (the API's ``schemas.BATCH_MAX``)."""


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

    def batch(self, maps: list[tuple[int, dict[str, Any]]]) -> int:
        """Make ``maps`` ((line number, body) each) ``BATCH`` a request; print each outcome;
        return how many were not made."""
        failed = 0
        for start in range(0, len(maps), BATCH):
            chunk = maps[start : start + BATCH]
            body = {"slotmaps": [item for _, item in chunk]}
            response = self._request("POST", "/slotmaps:batch", body, prefix=OWN_PREFIX)
            for (line, _), result in zip(chunk, response.json()["results"], strict=True):
                print(f"{line}: {result!r}")
                failed += result.get("status") != 201
        return failed

    def own(self, method: str, suffix: str, body: Any = None) -> None:
        """A request to remsim's own API; prints its JSON answer, if any, as ``show``."""
        response = self._request(method, suffix, body, prefix=OWN_PREFIX)
        try:
            decoded = response.json()
        except ValueError:
            return
        print(f"{OWN_PREFIX}{suffix}: {decoded!r}")


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


def read_maps(lines: Sequence[str]) -> list[tuple[int, dict[str, Any]]]:
    """The maps of a ``--create-slotmaps`` file: (line number, ``POST /api/v1/slotmaps``
    body) for every line that is not blank or a comment."""
    maps = []
    for number, text in enumerate(lines, 1):
        fields = text.split("#", 1)[0].replace(",", " ").split()
        if not fields:
            continue
        if len(fields) == 4:
            bank_id, bank_slot, client_id, client_slot = (_number(f) for f in fields)
            where: dict[str, Any] = {"bank": {"bankId": bank_id, "slotNr": bank_slot}}
        elif len(fields) == 3:
            where = {"card": {"iccid": fields[0]}}
            client_id, client_slot = _number(fields[1]), _number(fields[2])
        else:
            raise ApitoolError(
                f"line {number}: BANK_ID BANK_SLOT CLIENT_ID CLIENT_SLOT or "
                f"ICCID CLIENT_ID CLIENT_SLOT, not {text.strip()!r}"
            )
        maps.append((number, where | {"client": {"clientId": client_id, "slotNr": client_slot}}))
    return maps


def _read_lines(path: str) -> list[str]:
    try:
        if path == "-":
            return sys.stdin.read().splitlines()
        with open(path, encoding="utf-8") as file:
            return file.read().splitlines()
    except (OSError, UnicodeDecodeError) as exc:
        raise ApitoolError(f"cannot read {path}: {exc}") from exc


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
        "--create-slotmaps",
        metavar="FILE",
        help="create the slotmaps listed in FILE (- : stdin), one a line: BANK_ID BANK_SLOT "
        f"CLIENT_ID CLIENT_SLOT, or ICCID CLIENT_ID CLIENT_SLOT; {BATCH} a request "
        "(remsim's /api/v1/slotmaps:batch; prints each outcome)",
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
    _pool_commands(commands)
    return parser


def _pool_commands(commands: argparse._MutuallyExclusiveGroup) -> None:
    """SIM pools, groups, rules, card states and leases (remsim's /api/v1, remsim_api.pools)."""
    add = commands.add_argument
    for what in ("pools", "groups", "rules", "card-states"):
        add(f"--show-{what}", action="store_true", help=f"show the {what.replace('-', ' ')}")
    add(
        "--pool",
        nargs="+",
        metavar=("NAME", "CARD"),
        help="create or replace a SIM pool of these cards (ICCIDs, or bank slots as B1:0)",
    )
    add(
        "--group",
        nargs="+",
        metavar=("NAME", "CLIENT"),
        help="create or replace a client group of these client slots (as 23:0)",
    )
    add("--rule", nargs=2, metavar=("NAME", "JSON"),
        help='create or replace a rule, e.g. \'{"group": "modems", "pools": ["A"], '
        '"method": "cyclic"}\'')  # fmt: skip
    add("--delete-pool", metavar="NAME", help="delete a SIM pool")
    add("--delete-group", metavar="NAME", help="delete a client group")
    add("--delete-rule", metavar="NAME", help="delete a rule")
    add("--disable-card", metavar="CARD", help="never assign this card (ICCID or B1:0)")
    add("--enable-card", metavar="CARD", help="assign this card again (clears a block)")
    add(
        "--lease",
        nargs=3,
        metavar=("BANK_ID", "BANK_SLOT", "SECONDS"),
        help="the slotmap of this bank slot ends SECONDS from now (sets or extends its lease)",
    )
    add("--release", nargs=2, metavar=("BANK_ID", "BANK_SLOT"),
        help="end the slotmap of this bank slot now (a rule assigns the next card)")  # fmt: skip


def _client_slot(text: str) -> dict[str, int]:
    client_id, sep, slot_nr = text.partition(":")
    if not sep:
        raise ApitoolError(f"not a client slot (CLIENT_ID:SLOT_NR): {text!r}")
    return {"clientId": _number(client_id), "slotNr": _number(slot_nr)}


def _card(text: str) -> dict[str, Any]:
    if text.upper().startswith("B") and ":" in text:
        bank_id, _, slot_nr = text[1:].partition(":")
        return {"bank": {"bankId": _number(bank_id), "slotNr": _number(slot_nr)}}
    return {"iccid": text}


def _run_pool_command(api: Api, args: argparse.Namespace) -> bool:
    """Carry out a pool command, if one was given."""
    for what in ("pools", "groups", "rules", "card_states"):
        if getattr(args, f"show_{what}"):
            api.own("GET", "/" + what.replace("_", "-"))
            return True
    if args.pool:
        name, *cards = args.pool
        api.own("PUT", f"/pools/{name}", {"cards": [_card(card) for card in cards]})
    elif args.group:
        name, *clients = args.group
        api.own("PUT", f"/groups/{name}", {"clients": [_client_slot(c) for c in clients]})
    elif args.rule:
        name, text = args.rule
        try:
            body = json.loads(text)
        except ValueError as exc:
            raise ApitoolError(f"the rule is not JSON: {exc}") from exc
        api.own("PUT", f"/rules/{name}", body)
    elif args.delete_pool or args.delete_group or args.delete_rule:
        for what in ("pool", "group", "rule"):
            if name := getattr(args, f"delete_{what}"):
                api.own("DELETE", f"/{what}s/{name}")
    elif args.disable_card or args.enable_card:
        card, state = (args.disable_card, "disabled") if args.disable_card else (
            args.enable_card, "enabled")  # fmt: skip
        api.own("PUT", f"/card-states/{card}", {"state": state})
    elif args.lease:
        bank_id, bank_slot, seconds = args.lease
        try:
            duration = float(seconds)
        except ValueError as exc:
            raise ApitoolError(f"not a number of seconds: {seconds!r}") from exc
        slotmap_id = _number(bank_id) * 65536 + _number(bank_slot)
        api.own("PUT", f"/slotmaps/{slotmap_id}/lease", {"duration": duration})
    elif args.release:
        bank_id, bank_slot = args.release
        api.own("POST", f"/slotmaps/{_number(bank_id) * 65536 + _number(bank_slot)}/release")
    else:
        return False
    return True


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
    if _run_pool_command(api, args):
        return
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
    elif args.create_slotmaps:
        maps = read_maps(_read_lines(args.create_slotmaps))
        if not maps:
            raise ApitoolError(f"no slotmaps in {args.create_slotmaps}")
        failed = api.batch(maps)
        if failed:
            raise ApitoolError(f"{failed} of {len(maps)} slotmaps not made")
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
