"""Configuration: the options (``BankdSettings``) and the slot file.

The options are the original's (``-i -p -b -n -N -I -P -s -g -G -d -T -e -L``) plus our
own long ones. Each one can also come from ``REMSIM_BANKD_<FIELD>`` (the logging and TLS
ones from ``REMSIM_<FIELD>`` too) or a TOML ``--config`` file: the command line wins
(``remsim_common.settings``). The slot file keeps the original's CSV format.
"""

from __future__ import annotations

import argparse
import socket
from collections.abc import Sequence
from pathlib import Path
from typing import Literal

from pydantic import Field
from pydantic_settings import SettingsConfigDict

from remsim_common import BANKD_PORT, CONTROL_PORT, CommonSettings, Program, TransportSettings
from rspro import BankSlot

from .ere import PosixRegex, RegexError
from .errors import ConfigError
from .mapping import ID_MAX

__all__ = [
    "ALIVE_CHECK_TIMEOUT",
    "CARD_RETRY",
    "CATEGORIES",
    "CLIENT_KEEPALIVE_INTERVAL",
    "CLIENT_KEEPALIVE_TIMEOUT",
    "DEFAULT_BANK_ID",
    "DEFAULT_MAX_CLIENTS",
    "DEFAULT_MAX_CLIENTS_PER_HOST",
    "DEFAULT_NUM_SLOTS",
    "DEFAULT_SLOTS_CSV",
    "IDENTIFY_TIMEOUT",
    "PROGRAM",
    "ApduMode",
    "BankdSettings",
    "InventoryMode",
    "SlotsCsvError",
    "build_parser",
    "load_slots_csv",
    "parse_args",
    "parse_slots_csv",
]

DEFAULT_SLOTS_CSV = Path("bankd_pcsc_slots.csv")
DEFAULT_BANK_ID = 1
DEFAULT_NUM_SLOTS = 8
CARD_RETRY = 2.0
"""Seconds between attempts to open an absent or mute card while a client waits for it."""
CLIENT_KEEPALIVE_INTERVAL = 20.0
"""Seconds between the IPA PINGs the bankd sends each client once a PONG came back."""
CLIENT_KEEPALIVE_TIMEOUT = 10.0
"""Seconds a client has to answer a PING; a frozen client loses its card within
interval + timeout (30 s)."""
IDENTIFY_TIMEOUT = 10.0
"""Seconds a new client connection has to send a valid connectClientReq."""
DEFAULT_MAX_CLIENTS = 1024
"""Client connections served at once; more are closed at once. The file descriptor limit
may lower it (``Bankd.limits.per_port``)."""
DEFAULT_MAX_CLIENTS_PER_HOST = 128
"""Client connections served at once from one address."""
InventoryMode = Literal["auto", "on", "off"]
"""Whether the bankd identifies its unmapped cards and reports them to the server (a
message of remsim's own): ``auto`` when the control link is TLS (the server is then remsim's:
its certificate names ``urn:remsim:server``; the original speaks no TLS), ``on`` also over
plaintext (the operator vouches the server is remsim's), ``off`` never."""
ApduMode = Literal["auto", "off"]
"""Whether the bankd accepts a client's offer of remsim's APDU mode (whole APDUs, T=1 cards,
extended lengths; docs/architecture.md, "APDU mode"): ``auto`` accepts it (only a client of
remsim's offers it; the original's offer nothing and get the original's bytes), ``off``
ignores it (TPDU mode for every client, the original's connectClientRes)."""
ALIVE_CHECK_TIMEOUT = 1.0
"""Seconds the session holding a client slot has to answer the PING sent when another
connection claims that slot; no answer: it is dropped and the newcomer gets the slot."""

CATEGORIES = {
    "DMAIN": ("remsim.bankd", "remsim.bankd.pcsc", "remsim.bankd.inventory"),
    "DBANKDW": ("remsim.bankd.session", "remsim.bankd.clients"),
    "DSLOTMAP": ("remsim.bankd.mapping",),
    "DRSPRO": ("rspro", "remsim.bankd.control"),
    "DGSMTAP": ("remsim.bankd.gsmtap",),
}
"""The original's log categories (``-d``) and the loggers behind each."""

PROGRAM = Program("remsim-bankd", "remsim-bankd", categories=CATEGORIES)


# --- the slot file ----------------------------------------------------------------------------


class SlotsCsvError(ConfigError):
    """A bad row in the slot file; the message names the file and line."""

    def __init__(self, path: str | Path, line: int, reason: str) -> None:
        super().__init__(f"{path}:{line}: {reason}")
        self.path = str(path)
        self.line = line
        self.reason = reason


def _split_csv_line(line: str) -> list[str]:
    """One CSV record the way libcsv (non-strict) reads it.

    Unquoted fields are trimmed of spaces and tabs; inside quotes everything is kept and
    ``""`` is a literal quote; blanks between a closing quote and the comma are ignored.
    """
    fields: list[str] = []
    i, n = 0, len(line)
    while True:
        while i < n and line[i] in " \t":
            i += 1
        if i < n and line[i] == '"':
            i += 1
            value: list[str] = []
            while True:
                if i >= n:
                    raise ValueError("unterminated quoted field")
                if line[i] == '"':
                    if i + 1 < n and line[i + 1] == '"':
                        value.append('"')
                        i += 2
                        continue
                    i += 1
                    break
                value.append(line[i])
                i += 1
            while i < n and line[i] in " \t":
                i += 1
            if i < n and line[i] != ",":
                raise ValueError(f"unexpected {line[i]!r} after a quoted field")
            fields.append("".join(value))
        else:
            end = line.find(",", i)
            end = n if end < 0 else end
            fields.append(line[i:end].strip(" \t"))
            i = end
        if i >= n:
            return fields
        i += 1  # the comma


def _slot_number(text: str, what: str) -> int:
    if not text.isdigit() or int(text) > 1023:
        raise ValueError(f"{what} {text!r} is not a number 0..1023")
    return int(text)


def parse_slots_csv(text: str, path: str | Path = "<slots>") -> dict[BankSlot, PosixRegex]:
    """Bank slot → reader-name pattern, from rows ``bank id, slot number, POSIX ERE``."""
    slots: dict[BankSlot, PosixRegex] = {}
    first_line: dict[BankSlot, int] = {}
    for lineno, raw in enumerate(text.splitlines(), start=1):
        if not raw.strip(" \t\r"):
            continue
        try:
            fields = _split_csv_line(raw.rstrip("\r"))
            if len(fields) != 3:
                raise ValueError(
                    f"expected 3 fields (bank id, slot number, reader name pattern), "
                    f"got {len(fields)}"
                )
            bank_id = _slot_number(fields[0], "bank id")
            slot = BankSlot(bank_id, _slot_number(fields[1], "slot number"))
            if not fields[2]:
                raise ValueError("empty reader name pattern")
            if slot in slots:
                raise ValueError(f"{slot} is already configured on line {first_line[slot]}")
            try:
                slots[slot] = PosixRegex(fields[2])
            except RegexError as exc:
                raise ValueError(f"bad regular expression {fields[2]!r}: {exc}") from None
            first_line[slot] = lineno
        except ValueError as exc:
            raise SlotsCsvError(path, lineno, str(exc)) from None
    return slots


def load_slots_csv(path: str | Path) -> dict[BankSlot, PosixRegex]:
    try:
        text = Path(path).read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"cannot read slot file {path}: {exc}") from exc
    return parse_slots_csv(text, path)


# --- options ----------------------------------------------------------------------------------


def _host_name() -> str:
    return socket.gethostname()[:32] or "bankd"


class BankdSettings(CommonSettings, TransportSettings):
    """Every option of ``remsim-bankd``; environment variables ``REMSIM_BANKD_<FIELD>``."""

    model_config = SettingsConfigDict(env_prefix="REMSIM_BANKD_", extra="forbid")

    server_host: str = Field(min_length=1, description="remsim-server host")
    server_port: int = Field(default=CONTROL_PORT, ge=1, le=65535)
    bank_id: int = Field(default=DEFAULT_BANK_ID, ge=0, le=ID_MAX)
    num_slots: int = Field(default=DEFAULT_NUM_SLOTS, ge=1, le=ID_MAX)
    name: str = Field(default_factory=_host_name, min_length=1, max_length=32)
    bind_ip: str = "0.0.0.0"
    bind_port: int = Field(default=BANKD_PORT, ge=0, le=65535)
    permit_shared_pcsc: bool = False
    gsmtap_ip: str | None = None
    gsmtap_slot: int = Field(default=-1, ge=-1, le=ID_MAX)
    slots_csv: Path = DEFAULT_SLOTS_CSV
    card_driver: Literal["pcsc", "sim"] = "pcsc"
    sim_profile: list[Path] = Field(default_factory=list)
    card_retry: float = Field(default=CARD_RETRY, gt=0)
    client_keepalive_interval: float = Field(default=CLIENT_KEEPALIVE_INTERVAL, gt=0)
    client_keepalive_timeout: float = Field(default=CLIENT_KEEPALIVE_TIMEOUT, gt=0)
    identify_timeout: float = Field(default=IDENTIFY_TIMEOUT, gt=0)
    max_clients: int = Field(default=DEFAULT_MAX_CLIENTS, ge=1)
    max_clients_per_host: int = Field(default=DEFAULT_MAX_CLIENTS_PER_HOST, ge=1)
    metrics_host: str = "0.0.0.0"
    metrics_port: int | None = Field(default=None, ge=0, le=65535)
    inventory: InventoryMode = "auto"
    apdu_mode: ApduMode = "auto"


def build_parser() -> argparse.ArgumentParser:
    p = PROGRAM.parser(
        "remsim SIM bank daemon: serves the cards of a PC/SC reader bank to remsim clients, "
        "as mapped by the remsim server.",
        epilog="Every option can also be set as an environment variable REMSIM_BANKD_<NAME> "
        "(e.g. REMSIM_BANKD_SERVER_HOST=10.0.0.1) or in the --config file; the command line "
        "wins.",
        transport=True,
    )
    add = p.add_argument
    add("-i", "--server-host", metavar="HOST", help="remsim-server host (required)")
    add("-p", "--server-port", metavar="PORT", help=f"server port ({CONTROL_PORT})")
    add("-b", "--bank-id", metavar="ID", help=f"our bank id ({DEFAULT_BANK_ID})")
    add("-n", "--num-slots", metavar="N", help=f"number of slots ({DEFAULT_NUM_SLOTS})")
    add("-N", "--name", "--component-name", dest="name", metavar="NAME",
        help="component name sent to server and clients (host name)")  # fmt: skip
    add("-I", "--bind-ip", metavar="IP", help="listen address for clients (0.0.0.0)")
    add("-P", "--bind-port", metavar="PORT", help=f"client port ({BANKD_PORT})")
    add("-s", "--permit-shared-pcsc", action="store_const", const=True,
        help="open readers in shared mode (default: exclusive)")  # fmt: skip
    add("-g", "--gsmtap-ip", metavar="HOST", help="send GSMTAP traces to HOST:4729")
    add("-G", "--gsmtap-slot", metavar="SLOT", help="trace only this slot number")
    add("--slots-csv", metavar="PATH",
        help=f"reader name patterns per bank slot (./{DEFAULT_SLOTS_CSV})")  # fmt: skip
    add("--card-driver", metavar="{pcsc,sim}",
        help="pcsc: PC/SC readers (default); sim: in-process software SIMs")  # fmt: skip
    add("--sim-profile", action="append", metavar="PATH",
        help="card profile for the sim driver, once per slot in slot order")  # fmt: skip
    add("--card-retry", metavar="SECONDS",
        help=f"retry period for opening an absent card ({CARD_RETRY:g})")  # fmt: skip
    add("--client-keepalive-interval", metavar="SECONDS",
        help=f"idle time between PINGs to each client ({CLIENT_KEEPALIVE_INTERVAL:g})")  # fmt: skip
    add("--client-keepalive-timeout", metavar="SECONDS",
        help=f"a client not answering a PING within this is dropped "
             f"({CLIENT_KEEPALIVE_TIMEOUT:g})")  # fmt: skip
    add("--identify-timeout", metavar="SECONDS",
        help=f"a client connection sending no connectClientReq within this is closed "
             f"({IDENTIFY_TIMEOUT:g})")  # fmt: skip
    add("--max-clients", metavar="N",
        help=f"client connections served at once; more are closed at once "
             f"({DEFAULT_MAX_CLIENTS}, or what the file descriptor limit allows)")  # fmt: skip
    add("--max-clients-per-host", metavar="N",
        help=f"client connections served at once from one address "
             f"({DEFAULT_MAX_CLIENTS_PER_HOST})")  # fmt: skip
    add("--metrics-port", metavar="PORT",
        help="serve /healthz, /readyz and Prometheus /metrics over HTTP on PORT (off)")  # fmt: skip
    add("--metrics-host", metavar="IP", help="listen address for --metrics-port (0.0.0.0)")
    add("--inventory", metavar="{auto,on,off}",
        help="identify unmapped cards (ATR, ICCID, IMSI) and report them to the server: "
             "auto: when the server link is TLS (default); on: also over plaintext, to a "
             "remsim server only (the original has no such message); off: never")  # fmt: skip
    add("--apdu-mode", metavar="{auto,off}",
        help="remsim's APDU mode (whole APDUs, T=1 cards, extended lengths): auto: for "
             "every client of remsim's that offers it (default); off: TPDU mode only")  # fmt: skip
    return p


def parse_args(argv: Sequence[str] | None = None) -> BankdSettings:
    """The settings from ``argv``, the environment and the config file; prints the problem
    and exits 2 on a bad value."""
    return PROGRAM.load(BankdSettings, build_parser(), argv)
