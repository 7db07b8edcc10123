"""Command line, environment and config file of the client executables (client.md §2),
shared by the flavours, on ``remsim_common.Program``.

Options are the original's (``-i -p -c -n -a -r -e -d -L``, ``-v`` for the version), plus
remsim's common ones (``--config``, ``--log-level``, ``--log-format``, ``--tls-*``) and
``--apdu-mode auto|on|off`` (remsim's APDU mode towards the bankd, ``config.ApduMode``). Each
can also be set with an environment variable ``REMSIM_CLIENT_<FIELD>`` (e.g.
``REMSIM_CLIENT_SERVER_HOST``, ``REMSIM_CLIENT_CLIENT_ID``); the logging and TLS ones also
with ``REMSIM_<FIELD>`` (``REMSIM_LOG_FORMAT=json``). The command line wins over the
environment, the environment over the config file.

A flavour makes its ``Program`` with :func:`client_program`, its parser with
:func:`client_parser` (then adds its own options, ``dest`` = a field of its settings model,
no ``type=``), and gets its settings, with logging set up and the links'
``TransportSecurity``, from :func:`configure`.
"""

from __future__ import annotations

import argparse
from collections.abc import Mapping
from typing import Annotated, TypeVar

from pydantic import BeforeValidator, Field
from pydantic_settings import SettingsConfigDict

from remsim_common import (
    CONTROL_PORT,
    CommonSettings,
    Program,
    TransportSecurity,
    TransportSettings,
)
from rspro import ClientSlot

from .config import (
    DEFAULT_ATR,
    DISTRIBUTION,
    ApduMode,
    ClientConfig,
    host_name,
    package_version,
    parse_atr,
)

__all__ = [
    "CATEGORIES",
    "MAX_SLOT_ID",
    "ClientSettings",
    "client_parser",
    "client_program",
    "configure",
]

MAX_SLOT_ID = 1023
"""RSPRO's ClientId and SlotNr are 0..1023 (the wire would truncate more)."""
NOT_SET = -1
"""A client id or slot not given: sent as 0, like the original."""

CATEGORIES: Mapping[str, tuple[str, ...]] = {
    "DMAIN": ("remsim.client",),
    "DRSPRO": ("rspro",),
}
"""The original's log categories (``-d``) of every client and the loggers behind each
(``remsim.client`` covers the core and the front-ends below it, e.g. ``remsim.client.vpcd``)."""

S = TypeVar("S", bound="ClientSettings")


def _atr(value: object) -> object:
    return parse_atr(value) if isinstance(value, str) else value


Atr = Annotated[bytes, BeforeValidator(_atr)]
"""An ATR given as hex (whitespace allowed), 2..55 bytes."""
SlotId = Annotated[int, Field(ge=NOT_SET, le=MAX_SLOT_ID)]


class ClientSettings(CommonSettings, TransportSettings):
    """What every client flavour is configured with."""

    model_config = SettingsConfigDict(env_prefix="REMSIM_CLIENT_")

    server_host: str = Field("127.0.0.1", min_length=1)
    server_port: int = Field(CONTROL_PORT, ge=1, le=65535)
    client_id: SlotId = NOT_SET
    client_slot: SlotId = NOT_SET
    atr: Atr = DEFAULT_ATR
    atr_ignore_rspro: bool = False
    event_script: str | None = None
    modem_status_upstream: bool = False
    name: str | None = None
    sw_version: str | None = None
    apdu_mode: ApduMode = ApduMode.AUTO

    def client_config(self) -> ClientConfig:
        return ClientConfig(
            server_host=self.server_host,
            server_port=self.server_port,
            client_slot=ClientSlot(max(self.client_id, 0), max(self.client_slot, 0)),
            atr=self.atr,
            atr_ignore_rspro=self.atr_ignore_rspro,
            event_script=self.event_script or None,
            modem_status_upstream=self.modem_status_upstream,
            name=self.name or host_name(),
            sw_version=self.sw_version or package_version(),
            apdu_mode=self.apdu_mode,
        )


def client_program(name: str, categories: Mapping[str, tuple[str, ...]] = CATEGORIES) -> Program:
    """The ``Program`` of one client executable: ``-v`` prints ``NAME VERSION``; the global
    log level is ``--log-level`` only, since ``-e`` is the event script, as in the original."""
    return Program(
        name,
        DISTRIBUTION,
        categories=categories,
        version_flags=("-v", "--version"),
        level_flags=("--log-level",),
    )


def client_parser(program: Program, description: str) -> argparse.ArgumentParser:
    """The common options and the client's; unset options defer to the environment."""
    p = program.parser(description, transport=True)
    add = p.add_argument
    add("-i", "--server-ip", "--server-host", dest="server_host", metavar="HOST",
        help="remsim-server host (default 127.0.0.1)")  # fmt: skip
    add("-p", "--server-port", metavar="PORT", help=f"remsim-server port (default {CONTROL_PORT})")
    add("-c", "--client-id", metavar="N", help=f"RSPRO client id (0-{MAX_SLOT_ID})")
    add("-n", "--client-slot", metavar="N", help=f"RSPRO client slot number (0-{MAX_SLOT_ID})")
    add("-a", "--atr", metavar="HEX", help="ATR until the bankd sends one (default 3B 00)")
    add("-r", "--atr-ignore-rspro", action="store_const", const=True,
        help="always present --atr, ignore the bankd's ATR")  # fmt: skip
    add("-e", "--event-script", metavar="CMD", help="run 'CMD <cause>' on events")
    add("--name", help="RSPRO identity name (default: the host name)")
    add("--sw-version", metavar="VERSION", help="RSPRO identity software version")
    add("--modem-status-upstream", action="store_const", const=True,
        help="run event-modem-status on an unchanged status, like the original")  # fmt: skip
    add("--apdu-mode", metavar="auto|on|off",
        help="offer the bankd remsim's APDU mode (whole, also extended, APDUs in one round "
        "trip): auto = only to a TLS bankd of ours (default), on = also over plaintext, "
        "off = never; the st2 client always stays in TPDU mode")  # fmt: skip
    return p


def configure(
    program: Program,
    settings_cls: type[S],
    parser: argparse.ArgumentParser,
    args: argparse.Namespace,
) -> tuple[S, TransportSecurity]:
    """The settings from parsed ``args``, logging set up, and the socket security of both
    RSPRO links. A bad value or unusable TLS files: one line on stderr, exit status 2."""
    settings = program.settings(settings_cls, args, parser)
    program.setup_logging(settings)
    try:
        security = TransportSecurity.from_settings(settings)
    except OSError as exc:  # ssl.SSLError included
        parser.exit(2, f"{program.name}: cannot use the TLS files: {exc}\n")
    return settings, security
