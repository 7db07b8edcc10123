"""The package's exceptions."""

from __future__ import annotations

__all__ = ["CardGone", "MessageTooLong", "VpcdError"]


class VpcdError(Exception):
    """Base of the vpcd package's exceptions."""


class CardGone(VpcdError):
    """Raised by a `VirtualCard` that failed or went away: it leaves the reader."""


class MessageTooLong(VpcdError, ValueError):
    """A message (an ATR or R-APDU) that vpcd's 2-byte length cannot carry, or an empty one."""
