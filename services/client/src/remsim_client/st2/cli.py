"""Command-line options of the st2 client (client.md §2) and a device lister.

:func:`add_st2_arguments` adds upstream's USB selection options and ``-Z`` to any argparse
parser (the ``remsim-client-st2`` main reuses it); :func:`st2_options` turns the parsed
namespace into a :class:`~.usb.Selector` and the presence polarity. Every option also has an
environment variable ``REMSIM_CLIENT_<LONG_OPTION>`` (e.g. ``REMSIM_CLIENT_USB_PATH``) as its
default, like the client's common options.

``python -m remsim_client.st2 --list`` prints the card-emulation interfaces present (or
matching the given options); without ``--list`` it prints the one the options select, or
why none can be selected.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, TextIO

from .errors import St2Error
from .usb import Selector, find_candidates, select_candidate

__all__ = ["St2Options", "add_st2_arguments", "build_parser", "main", "st2_options"]


def _hex16(text: str) -> int:
    """``strtol(text, 16)`` as upstream, strictly: ``1d50`` or ``0x1d50``."""
    value = int(text, 16)
    if not 0 <= value <= 0xFFFF:
        raise ValueError(text)
    return value


_hex16.__name__ = "hexadecimal id"  # argparse's error message names the type


def _number(text: str) -> int:
    return int(text, 10)


_number.__name__ = "decimal number"


def _flag(text: str) -> bool:
    return int(text, 10) != 0


_flag.__name__ = "0 or 1"


def add_st2_arguments(
    parser: argparse.ArgumentParser, environ: Mapping[str, str] | None = None
) -> None:
    """Add ``-V -P -C -I -S -A -H`` and ``-Z`` (defaults from ``REMSIM_CLIENT_*``)."""
    env = os.environ if environ is None else environ
    group = parser.add_argument_group("SIMtrace2 card emulation (USB)")

    def option(short: str, long: str, **kwargs: Any) -> None:
        variable = "REMSIM_CLIENT_" + long.removeprefix("--").replace("-", "_").upper()
        kwargs.setdefault("default", None)
        if variable in env:
            kwargs["default"] = env[variable]  # argparse converts string defaults with `type`
        group.add_argument(short, long, **kwargs)

    # fmt: off
    option("-V", "--usb-vendor", type=_hex16, metavar="HEX",
           help="USB idVendor (default: any SIMtrace2-family board)")
    option("-P", "--usb-product", type=_hex16, metavar="HEX", help="USB idProduct")
    option("-C", "--usb-config", type=_number, metavar="N",
           help="bConfigurationValue (default: the one with the card-emulation interface)")
    option("-I", "--usb-interface", type=_number, metavar="N",
           help="bInterfaceNumber = card-emulation slot (default: the only one)")
    option("-S", "--usb-altsetting", type=_number, metavar="N", default=0,
           help="alternate setting (default 0)")
    option("-A", "--usb-address", type=_number, metavar="N",
           help="USB device address (0 = the only device); -A or -H alone picks a device")
    option("-H", "--usb-path", metavar="PATH",
           help="USB port path <bus>-<port>[.<port>...]; the only way to tell the two "
                "SAM3 devices of a sysmoQMOD apart (see --list)")
    option("-Z", "--set-sim-presence", type=_flag, metavar="0|1",
           help="SIM presence signalled as 1 = high level, 0 = low level (default: unchanged)")
    # fmt: on


@dataclass(frozen=True, slots=True)
class St2Options:
    selector: Selector
    presence_high: bool | None  # -Z; None = not sent


def st2_options(ns: argparse.Namespace) -> St2Options:
    selector = Selector(
        vendor=ns.usb_vendor,
        product=ns.usb_product,
        config=ns.usb_config,
        interface=ns.usb_interface,
        altsetting=ns.usb_altsetting,
        address=ns.usb_address,
        path=ns.usb_path or None,
    )
    return St2Options(selector, ns.set_sim_presence)


def build_parser(environ: Mapping[str, str] | None = None) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m remsim_client.st2",
        description="List SIMtrace2 card-emulation interfaces, or show which one the "
        "selection options pick.",
    )
    parser.add_argument(
        "--list", action="store_true", help="list the card-emulation interfaces that match"
    )
    add_st2_arguments(parser, environ)
    return parser


def main(
    argv: Sequence[str] | None = None,
    *,
    backend: Any = None,
    stdout: TextIO | None = None,
    stderr: TextIO | None = None,
) -> int:
    out, err = stdout or sys.stdout, stderr or sys.stderr
    ns = build_parser().parse_args(argv)
    selector = st2_options(ns).selector
    try:
        if ns.list:
            candidates = find_candidates(selector, backend)
            for candidate in candidates:
                print(candidate.describe(), file=out)
            if not candidates:
                print("no card-emulation interface found", file=err)
            return 0 if candidates else 1
        print(select_candidate(selector, backend).describe(), file=out)
        return 0
    except St2Error as exc:
        print(exc, file=err)
        return 1
