"""Exceptions of the st2 package: one base, a few precise kinds."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from .usb import Candidate


class St2Error(Exception):
    """Base of every error raised by the st2 front-end."""


class ProtocolError(St2Error):
    """Bytes that are not a well-formed SIMtrace2 message."""


class SelectionError(St2Error):
    """No, or more than one, card-emulation interface matches the selection options."""

    def __init__(self, message: str, candidates: Sequence[Candidate] = ()) -> None:
        super().__init__(message)
        self.candidates = tuple(candidates)


class DeviceError(St2Error):
    """The selected USB device cannot be opened or a transfer on it failed."""


class DeviceGone(DeviceError):
    """The USB device disappeared (unplugged, reset)."""
