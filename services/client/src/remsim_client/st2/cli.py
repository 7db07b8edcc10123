"""Settings of the st2 client (client.md §2) and a device lister.

:class:`St2Settings` is the client settings plus upstream's USB selection options and
``-Z``; :func:`add_st2_arguments` adds their flags to a parser (the ``remsim-client-st2``
main puts them next to the common client options) and :meth:`St2Settings.st2_options`
gives the :class:`~.usb.Selector` and the presence polarity. Like every client option,
each is also ``REMSIM_CLIENT_<FIELD>`` in the environment (``REMSIM_CLIENT_USB_PATH``) and
``<field> = value`` in the ``--config`` file (``usb_vendor = "1d50"``).

``python -m remsim_client.st2 --list`` prints the card-emulation interfaces present (or
matching the given options); without ``--list`` it prints the one the options select, or
why none can be selected.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Annotated, Any, TextIO

from pydantic import BeforeValidator, Field

from ..options import ClientSettings, client_program
from .errors import St2Error
from .usb import Selector, find_candidates, select_candidate

__all__ = ["LISTER", "St2Options", "St2Settings", "add_st2_arguments", "build_parser", "main"]

MAX_USB_ID = 0xFFFF
"""idVendor and idProduct are 16 bits."""
MAX_DESCRIPTOR_VALUE = 0xFF
"""bConfigurationValue, bInterfaceNumber and bAlternateSetting are 8 bits."""
MAX_USB_ADDRESS = 127
"""A USB device address is 7 bits (0 = "the only device", as upstream)."""


def _hex16(value: object) -> object:
    """``strtol(value, 16)`` as upstream, strictly: ``1d50`` or ``0x1d50`` (a TOML integer
    as it is)."""
    if isinstance(value, str):
        try:
            number = int(value, 16)
        except ValueError:
            raise ValueError("not a hexadecimal id such as 1d50 or 0x1d50") from None
    elif isinstance(value, int) and not isinstance(value, bool):
        number = value
    else:
        return value  # pydantic's int check says what is wrong
    if not 0 <= number <= MAX_USB_ID:
        raise ValueError(f"a USB id is 16 bits: 0 to {MAX_USB_ID:x}")
    return number


def _nonzero(value: object) -> object:
    """``atoi(value) != 0`` as upstream for decimal text; ``true``/``false`` work too."""
    if isinstance(value, str) and value.strip().removeprefix("-").isdigit():
        return int(value) != 0
    return value


UsbId = Annotated[int, BeforeValidator(_hex16)]
"""idVendor or idProduct, hexadecimal."""
DescriptorValue = Annotated[int, Field(ge=0, le=MAX_DESCRIPTOR_VALUE)]
UsbAddress = Annotated[int, Field(ge=0, le=MAX_USB_ADDRESS)]
Presence = Annotated[bool, BeforeValidator(_nonzero)]


@dataclass(frozen=True, slots=True)
class St2Options:
    selector: Selector
    presence_high: bool | None  # -Z; None = not sent


class St2Settings(ClientSettings):
    """The client settings plus the SIMtrace2 ones; ``None`` = not given (client.md §2)."""

    usb_vendor: UsbId | None = None
    usb_product: UsbId | None = None
    usb_config: DescriptorValue | None = None
    usb_interface: DescriptorValue | None = None
    usb_altsetting: DescriptorValue = 0
    usb_address: UsbAddress | None = None
    usb_path: str | None = None
    set_sim_presence: Presence | None = None

    def st2_options(self) -> St2Options:
        selector = Selector(
            vendor=self.usb_vendor,
            product=self.usb_product,
            config=self.usb_config,
            interface=self.usb_interface,
            altsetting=self.usb_altsetting,
            address=self.usb_address,
            path=self.usb_path or None,
        )
        return St2Options(selector, self.set_sim_presence)


def add_st2_arguments(parser: argparse.ArgumentParser) -> None:
    """Add ``-V -P -C -I -S -A -H`` and ``-Z``, ``dest`` = the :class:`St2Settings` field."""
    add = parser.add_argument_group("SIMtrace2 card emulation (USB)").add_argument
    # fmt: off
    add("-V", "--usb-vendor", metavar="HEX",
        help="USB idVendor (default: any SIMtrace2-family board)")
    add("-P", "--usb-product", metavar="HEX", help="USB idProduct")
    add("-C", "--usb-config", metavar="N",
        help="bConfigurationValue (default: the one with the card-emulation interface)")
    add("-I", "--usb-interface", metavar="N",
        help="bInterfaceNumber = card-emulation slot (default: the only one)")
    add("-S", "--usb-altsetting", metavar="N", help="alternate setting (default 0)")
    add("-A", "--usb-address", metavar="N",
        help="USB device address (0 = the only device); -A or -H alone picks a device")
    add("-H", "--usb-path", metavar="PATH",
        help="USB port path <bus>-<port>[.<port>...]; the only way to tell the two "
             "SAM3 devices of a sysmoQMOD apart (see --list)")
    add("-Z", "--set-sim-presence", metavar="0|1",
        help="SIM presence signalled as 1 = high level, 0 = low level (default: unchanged)")
    # fmt: on


LISTER = client_program("python -m remsim_client.st2")
"""The lister, for its error messages: it reads the st2 client's settings."""


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog=LISTER.name,
        description="List SIMtrace2 card-emulation interfaces, or show which one the "
        "selection options (or REMSIM_CLIENT_* variables, or the config file) pick.",
        argument_default=argparse.SUPPRESS,
    )
    parser.add_argument(
        "--list",
        action="store_true",
        default=False,
        help="list the card-emulation interfaces that match",
    )
    parser.add_argument("--config", metavar="FILE", help="read options from this TOML file")
    add_st2_arguments(parser)
    return parser


def main(
    argv: Sequence[str] | None = None,
    *,
    backend: Any = None,
    stdout: TextIO | None = None,
    stderr: TextIO | None = None,
) -> int:
    out, err = stdout or sys.stdout, stderr or sys.stderr
    parser = build_parser()
    ns = parser.parse_args(argv)
    selector = LISTER.settings(St2Settings, ns, parser).st2_options().selector
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
