"""Command line and environment of the client executables (client.md §2), shared by flavours.

Options are the original's (``-i -p -c -n -a -r -e -d -L``); each one can also be set with
an environment variable ``REMSIM_CLIENT_<LONG_OPTION>`` (e.g. ``REMSIM_CLIENT_SERVER_HOST``,
``REMSIM_CLIENT_CLIENT_ID``). The command line wins over the environment.

A flavour builds its parser with :func:`build_parser`, adds its own options, then calls
:func:`load_settings` and :meth:`ClientSettings.client_config`.
"""

from __future__ import annotations

import argparse
from typing import Literal

from pydantic import Field, ValidationError
from pydantic_settings import BaseSettings, SettingsConfigDict

from rspro import ClientSlot

from .config import DEFAULT_ATR, ClientConfig, host_name, package_version, parse_atr
from .errors import ConfigError
from .logs import setup_logging

MAX_SLOT_ID = 1023


def slot_id(text: str) -> int:
    """An argparse type: a client id or slot number, 0..1023 (the wire would truncate more)."""
    try:
        value = int(text, 10)
    except ValueError:
        raise argparse.ArgumentTypeError(f"invalid number {text!r}") from None
    if not 0 <= value <= MAX_SLOT_ID:
        raise argparse.ArgumentTypeError(f"{value} is not in 0..{MAX_SLOT_ID}")
    return value


class ClientSettings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="REMSIM_CLIENT_", extra="ignore")

    server_host: str = "127.0.0.1"
    server_port: int = 9998
    # -1: not set (sent as 0, like the original); RSPRO's ClientId and SlotNr are 0..1023.
    client_id: int = Field(-1, ge=-1, le=MAX_SLOT_ID)
    client_slot: int = Field(-1, ge=-1, le=MAX_SLOT_ID)
    atr: str | None = None
    atr_ignore_rspro: bool = False
    event_script: str | None = None
    modem_status_upstream: bool = False
    name: str | None = None
    sw_version: str | None = None
    debug: str | None = None
    disable_color: bool = False
    log_format: Literal["text", "json"] = "text"

    def client_config(self) -> ClientConfig:
        """Raises ConfigError for a malformed ATR."""
        return ClientConfig(
            server_host=self.server_host,
            server_port=self.server_port,
            # -1 means "not set", which the original sends as 0.
            client_slot=ClientSlot(max(self.client_id, 0), max(self.client_slot, 0)),
            atr=DEFAULT_ATR if self.atr is None else parse_atr(self.atr),
            atr_ignore_rspro=self.atr_ignore_rspro,
            event_script=self.event_script or None,
            modem_status_upstream=self.modem_status_upstream,
            name=self.name or host_name(),
            sw_version=self.sw_version or package_version(),
        )

    def setup_logging(self) -> None:
        setup_logging(self.debug, color=not self.disable_color, log_format=self.log_format)


def build_parser(prog: str, description: str) -> argparse.ArgumentParser:
    """The common options; every default is None so that unset options defer to the env."""
    p = argparse.ArgumentParser(prog=prog, description=description, argument_default=None)
    add = p.add_argument
    add("-v", "--version", action="version", version=f"remsim-client version {package_version()}")
    add("-d", "--debug", metavar="MASK", help="log mask, e.g. DMAIN,1:DRSPRO,5 (stderr)")
    add("-i", "--server-ip", "--server-host", dest="server_host", metavar="HOST",
        help="remsim-server host (default 127.0.0.1)")  # fmt: skip
    add("-p", "--server-port", type=int, metavar="PORT", help="remsim-server port (default 9998)")
    add("-c", "--client-id", type=slot_id, metavar="N", help="RSPRO client id (0-1023)")
    add("-n", "--client-slot", type=slot_id, metavar="N",
        help="RSPRO client slot number (0-1023)")  # fmt: skip
    add("-a", "--atr", metavar="HEX", help="ATR until the bankd sends one (default 3B 00)")
    add("-r", "--atr-ignore-rspro", action="store_const", const=True,
        help="always present --atr, ignore the bankd's ATR")  # fmt: skip
    add("-e", "--event-script", metavar="CMD", help="run 'CMD <cause>' on events")
    add("-L", "--disable-color", action="store_const", const=True, help="no colours in the log")
    add("--log-format", choices=("text", "json"), help="stderr log format (default text)")
    add("--name", help="RSPRO identity name (default: the host name)")
    add("--sw-version", metavar="VERSION", help="RSPRO identity software version")
    add("--modem-status-upstream", action="store_const", const=True,
        help="run event-modem-status on an unchanged status, like the original")  # fmt: skip
    return p


def load_settings(args: argparse.Namespace) -> ClientSettings:
    """Environment, overridden by the options given. Raises ConfigError on bad values."""
    given = {
        k: v for k, v in vars(args).items() if v is not None and k in ClientSettings.model_fields
    }
    try:
        return ClientSettings(**given)
    except ValidationError as exc:
        raise config_error(exc) from None


def config_error(exc: ValidationError) -> ConfigError:
    """One line per bad setting, named as option and environment variable."""
    lines = []
    for err in exc.errors():
        name = "_".join(str(part) for part in err["loc"])
        where = f"--{name.replace('_', '-')} / REMSIM_CLIENT_{name.upper()}"
        lines.append(f"{where}: {err['msg']} (got {err['input']!r})")
    return ConfigError("invalid settings:\n  " + "\n  ".join(lines))
