"""Configuration: command-line options, ``REMSIM_BANKD_*`` environment variables, slot file.

Options are the original's (``-i -p -b -n -N -I -P -s -g -G -d -T -e -L``) plus our own
long ones; each one can also come from the environment (``REMSIM_BANKD_SERVER_HOST=…``),
the command line winning. The slot file keeps the original's CSV format.
"""

from __future__ import annotations

import argparse
import socket
import sys
from collections.abc import Sequence
from importlib import metadata
from pathlib import Path
from typing import Any, Literal

from pydantic import Field, ValidationError
from pydantic_settings import BaseSettings, SettingsConfigDict

from rspro import BankSlot

from .ere import PosixRegex, RegexError
from .errors import ConfigError

__all__ = [
    "DEFAULT_SLOTS_CSV",
    "BankdSettings",
    "SlotsCsvError",
    "build_parser",
    "load_slots_csv",
    "package_version",
    "parse_args",
    "parse_slots_csv",
]

DEFAULT_SLOTS_CSV = Path("bankd_pcsc_slots.csv")


def package_version() -> str:
    try:
        return metadata.version("remsim-bankd")
    except metadata.PackageNotFoundError:  # running from a source tree
        return "0.0.0"


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


class BankdSettings(BaseSettings):
    """Every option of ``remsim-bankd``; environment variables ``REMSIM_BANKD_<FIELD>``."""

    model_config = SettingsConfigDict(env_prefix="REMSIM_BANKD_", extra="forbid")

    server_host: str = Field(min_length=1)
    server_port: int = Field(default=9998, ge=1, le=65535)
    bank_id: int = Field(default=1, ge=0, le=1023)
    num_slots: int = Field(default=8, ge=1, le=1023)
    name: str = Field(
        default_factory=lambda: socket.gethostname()[:32] or "bankd", min_length=1, max_length=32
    )
    bind_ip: str = "0.0.0.0"
    bind_port: int = Field(default=9999, ge=0, le=65535)
    permit_shared_pcsc: bool = False
    gsmtap_ip: str | None = None
    gsmtap_slot: int = Field(default=-1, ge=-1, le=1023)
    slots_csv: Path = DEFAULT_SLOTS_CSV
    card_driver: Literal["pcsc", "sim"] = "pcsc"
    sim_profile: list[Path] = Field(default_factory=list)
    card_retry: float = Field(default=2.0, gt=0)
    debug: str | None = None
    log_level: int | None = None
    timestamp: bool = False
    log_format: Literal["human", "json"] = "human"
    metrics_host: str = "0.0.0.0"
    metrics_port: int | None = Field(default=None, ge=0, le=65535)


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="remsim-bankd",
        description="remsim SIM bank daemon: serves the cards of a PC/SC reader bank to "
        "remsim clients, as mapped by the remsim server.",
        epilog="Every option can also be set as an environment variable REMSIM_BANKD_<NAME> "
        "(e.g. REMSIM_BANKD_SERVER_HOST=10.0.0.1); the command line wins.",
        argument_default=argparse.SUPPRESS,
    )
    p.add_argument("-V", "--version", action="version", version=f"remsim-bankd {package_version()}")
    p.add_argument("-i", "--server-host", metavar="HOST", help="remsim-server host (required)")
    p.add_argument("-p", "--server-port", type=int, metavar="PORT", help="server port (9998)")
    p.add_argument("-b", "--bank-id", type=int, metavar="ID", help="our bank id (1)")
    p.add_argument("-n", "--num-slots", type=int, metavar="N", help="number of slots (8)")
    p.add_argument(
        "-N", "--name", "--component-name", dest="name", metavar="NAME",
        help="component name sent to server and clients (host name)",
    )  # fmt: skip
    p.add_argument("-I", "--bind-ip", metavar="IP", help="listen address for clients (0.0.0.0)")
    p.add_argument("-P", "--bind-port", type=int, metavar="PORT", help="client port (9999)")
    p.add_argument(
        "-s", "--permit-shared-pcsc", action="store_const", const=True,
        help="open readers in shared mode (default: exclusive)",
    )  # fmt: skip
    p.add_argument("-g", "--gsmtap-ip", metavar="HOST", help="send GSMTAP traces to HOST:4729")
    p.add_argument("-G", "--gsmtap-slot", type=int, metavar="SLOT", help="trace only this slot")
    p.add_argument(
        "--slots-csv", type=Path, metavar="PATH",
        help=f"reader name patterns per bank slot (./{DEFAULT_SLOTS_CSV})",
    )  # fmt: skip
    p.add_argument(
        "--card-driver", choices=("pcsc", "sim"),
        help="pcsc: PC/SC readers (default); sim: in-process software SIMs",
    )  # fmt: skip
    p.add_argument(
        "--sim-profile", type=Path, action="append", metavar="PATH",
        help="card profile for the sim driver, once per slot in slot order",
    )  # fmt: skip
    p.add_argument(
        "--card-retry", type=float, metavar="SECONDS",
        help="retry period for opening an absent card (2)",
    )  # fmt: skip
    p.add_argument("-d", "--debug", metavar="MASK", help="log mask, e.g. DMAIN,1:DBANKDW,3")
    p.add_argument("-e", "--log-level", type=int, metavar="LEVEL", help="global log level")
    p.add_argument(
        "-T", "--timestamp", action="store_const", const=True, help="timestamps on log lines"
    )
    p.add_argument(
        "-L", "--disable-color", action="store_const", const=True, dest="_color",
        help="accepted for compatibility (logs are never coloured)",
    )  # fmt: skip
    p.add_argument("--log-format", choices=("human", "json"), help="log line format (human)")
    p.add_argument(
        "--metrics-port", type=int, metavar="PORT",
        help="serve /healthz, /readyz and Prometheus /metrics over HTTP on PORT (off)",
    )  # fmt: skip
    p.add_argument(
        "--metrics-host", metavar="IP", help="listen address for --metrics-port (0.0.0.0)"
    )
    return p


def parse_args(argv: Sequence[str] | None = None) -> BankdSettings:
    """Options from argv over the environment; prints the problem and exits 2 on bad input."""
    parser = build_parser()
    given: dict[str, Any] = vars(parser.parse_args(argv))
    given.pop("_color", None)
    try:
        return BankdSettings(**given)
    except ValidationError as exc:
        problems = "; ".join(
            f"{'.'.join(str(x) for x in e['loc']) or 'options'}: {e['msg']}" for e in exc.errors()
        )
        if any(e["loc"] == ("server_host",) and e["type"] == "missing" for e in exc.errors()):
            parser.print_help(sys.stderr)
            problems = "-i/--server-host (or REMSIM_BANKD_SERVER_HOST) is required"
        parser.exit(2, f"remsim-bankd: error: {problems}\n")
