"""The audit log: the operator's record of who connected which card to which modem.

Three kinds of entry, each with when, who, what, from where and the result:

- ``rest``: every mutating REST call (``actor`` = the token's name or ``anonymous``);
- ``slotmap``: every slotmap state change, with its cause (``actor`` = the core);
- ``identity``: every RSPRO identity accepted or refused (``actor`` = the certificate's
  subject, or ``plaintext``; ``detail`` = the claimed id).

Entries live in the configured store (``Store.add_audit`` / ``list_audit`` /
``prune_audit``) and are kept ``AUDIT_RETENTION_DAYS`` days unless configured otherwise.
"""

from __future__ import annotations

import enum
import time

from pydantic import BaseModel, ConfigDict, Field

__all__ = ["AUDIT_PAGE_MAX", "AUDIT_RETENTION_DAYS", "AuditEntry", "AuditKind", "AuditQuery"]

AUDIT_RETENTION_DAYS = 90.0
AUDIT_PAGE_MAX = 1000
"""The most entries one ``list_audit`` call returns."""


class AuditKind(enum.StrEnum):
    REST = "rest"
    SLOTMAP = "slotmap"
    IDENTITY = "identity"


class AuditEntry(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    seq: int = 0
    """Assigned by the store: increasing, unique; the paging cursor."""
    time: float = Field(default_factory=time.time)
    """Seconds since the epoch (UTC)."""
    kind: AuditKind
    actor: str
    """Token name / ``anonymous`` (rest), core id (slotmap), certificate subject or
    ``plaintext`` (identity)."""
    action: str
    """``POST /api/backend/v1/slotmaps``, ``NEW -> ACTIVE``, ``connectBankReq``, …"""
    result: str
    """HTTP status, RSPRO result code name, ``accepted`` / ``refused``, …"""
    address: str | None = None
    """The peer's address (``host:port``) or the HTTP client's."""
    bank_id: int | None = None
    bank_slot: int | None = None
    client_id: int | None = None
    client_slot: int | None = None
    detail: str | None = None
    """The cause of a state change, the claimed id of a refused identity, …"""


class AuditQuery(BaseModel):
    """Filters of ``list_audit``: entries after ``after`` (a seq), newest last."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    since: float | None = None
    kind: AuditKind | None = None
    bank_id: int | None = None
    client_id: int | None = None
    after: int = 0
    limit: int = Field(default=100, ge=1, le=AUDIT_PAGE_MAX)

    def matches(self, entry: AuditEntry) -> bool:
        return (
            entry.seq > self.after
            and (self.since is None or entry.time >= self.since)
            and (self.kind is None or entry.kind == self.kind)
            and (self.bank_id is None or entry.bank_id == self.bank_id)
            and (self.client_id is None or entry.client_id == self.client_id)
        )
