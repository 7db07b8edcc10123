"""Errors of the control plane."""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from remsim_control.models import BankRecord, ClientRecord, Slotmap


class ControlError(Exception):
    """Base of every error raised by remsim_control."""


class BackendUnavailable(ControlError):
    """Redis or NATS cannot be reached now (the API answers 503; callers retry later)."""


class SlotInUse(ControlError):
    """A visible slotmap already uses the bank slot or the client slot."""

    def __init__(self, existing: Slotmap) -> None:
        super().__init__(f"{existing} already uses this bank slot or client slot")
        self.existing = existing


class IdentityInUse(ControlError):
    """Another connection is registered with the same bank id or client slot."""

    def __init__(self, existing: BankRecord | ClientRecord) -> None:
        super().__init__(f"{existing.peer} is already connected from {existing.remote}")
        self.existing = existing
