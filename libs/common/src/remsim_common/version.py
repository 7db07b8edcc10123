"""``--version``: one format for every program, ``NAME VERSION``."""

from __future__ import annotations

from importlib import metadata

UNKNOWN_VERSION = "0+unknown"
"""The version reported when a program runs from a tree that was never installed."""


def distribution_version(distribution: str) -> str:
    """The installed version of ``distribution`` (e.g. ``remsim-bankd``)."""
    try:
        return metadata.version(distribution)
    except metadata.PackageNotFoundError:
        return UNKNOWN_VERSION


def version_line(program: str, distribution: str) -> str:
    """What ``PROGRAM --version`` prints: ``remsim-bankd 0.1.0``."""
    return f"{program} {distribution_version(distribution)}"
