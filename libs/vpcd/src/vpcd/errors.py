"""The package's exceptions."""

from __future__ import annotations

__all__ = ["CardGone", "VpcdError"]


class VpcdError(Exception):
    """Base of the vpcd package's exceptions."""


class CardGone(VpcdError):
    """Raised by a `VirtualCard` that failed or went away: it leaves the reader."""
