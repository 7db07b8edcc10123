"""The audit log over REST: ``GET /api/v1/audit`` (remsim's own namespace).

What is written: every mutating REST call by ``remsim_api.security.Guard`` (kind ``rest``,
``actor`` the token's name or ``anonymous``, ``action`` ``POST /api/backend/v1/slotmaps``,
``result`` the HTTP status, the caller's address, the bank and client slot where the
request names them); the server core adds slotmap changes and RSPRO identities. Handlers
add what they know of a request with ``note``.

Paging: entries come oldest first; a full page has ``next``, the ``seq`` to pass as
``after`` for the following one (``null``: nothing more now).
"""

from __future__ import annotations

import datetime
from typing import Annotated, Any

from fastapi import APIRouter, Depends, HTTPException, Query, Request
from fastapi.routing import APIRoute
from pydantic import BaseModel, ConfigDict, Field
from starlette.types import Scope

from remsim_api import paths
from remsim_api.schemas import problem_responses
from remsim_control import SLOT_MAX, AuditEntry, AuditKind, AuditQuery, Store
from remsim_control.audit import AUDIT_PAGE_MAX

__all__ = ["FACTS", "AuditEntryOut", "AuditPage", "note", "router"]

FACTS = "remsim.audit"
"""The request scope's key of what the audit entry of a mutating request records."""
SEQ_MAX = 2**63 - 1


def note(scope: Scope, **facts: Any) -> None:
    """Record ``bank_id``, ``bank_slot``, ``client_id``, ``client_slot`` or ``detail`` in
    the audit entry of the request being answered (nothing for a request not audited)."""
    recorded = scope.get(FACTS)
    if recorded is not None:
        recorded.update(facts)


class AuditEntryOut(BaseModel):
    model_config = ConfigDict(frozen=True)

    seq: int = Field(description="Increasing, unique: pass as `after` to page on.")
    time: datetime.datetime = Field(description="When (UTC).")
    kind: AuditKind = Field(
        description="`rest`: a mutating REST call; `slotmap`: a slotmap state change; "
        "`identity`: an RSPRO identity accepted or refused."
    )
    actor: str = Field(
        description="The token's name or `anonymous` (rest), the core (slotmap), the "
        "certificate's subject or `plaintext` (identity)."
    )
    action: str = Field(examples=["POST /api/backend/v1/slotmaps"])
    result: str = Field(
        description="HTTP status, RSPRO result code, accepted/refused…", examples=["201"]
    )
    address: str | None = Field(description="The caller's or peer's host:port.")
    bank_id: int | None
    bank_slot: int | None
    client_id: int | None
    client_slot: int | None
    detail: str | None = Field(description="Why (a refusal, a state change's cause), …")

    @classmethod
    def of(cls, entry: AuditEntry) -> AuditEntryOut:
        when = datetime.datetime.fromtimestamp(entry.time, datetime.UTC)
        return cls.model_validate(entry.model_dump() | {"time": when})


class AuditPage(BaseModel):
    model_config = ConfigDict(frozen=True)

    entries: list[AuditEntryOut]
    next: int | None = Field(
        description="More may follow: `after` for the next page. null: none now."
    )


def _operation_id(route: APIRoute) -> str:
    return route.name


def _store(request: Request) -> Store:
    store: Store = request.app.state.store
    return store


_AUDIT_FILTERS = frozenset({"since", "bank", "client", "kind", "after", "limit"})


def _known_filters(request: Request) -> None:
    """A misspelt filter (``clinet=23``) is an error, not a listing of everything."""
    unknown = sorted(set(request.query_params) - _AUDIT_FILTERS)
    if unknown:
        raise HTTPException(
            400,
            f"unknown query parameter {unknown[0]!r}: one of {', '.join(sorted(_AUDIT_FILTERS))}",
        )


router = APIRouter(prefix=paths.OWN_PREFIX, generate_unique_id_function=_operation_id)


@router.get(
    "/audit",
    responses=problem_responses(400, 503),
    summary="The audit log",
    dependencies=[Depends(_known_filters)],
)
async def list_audit(
    store: Annotated[Store, Depends(_store)],
    since: Annotated[
        datetime.datetime | float | None,
        Query(description="Only entries from then on: RFC 3339 (UTC if no offset) or Unix time."),
    ] = None,
    bank: Annotated[int | None, Query(ge=0, le=SLOT_MAX, description="Only this bank id.")] = None,
    client: Annotated[
        int | None, Query(ge=0, le=SLOT_MAX, description="Only this client id.")
    ] = None,
    kind: Annotated[AuditKind | None, Query(description="Only this kind.")] = None,
    after: Annotated[int, Query(ge=0, le=SEQ_MAX, description="Entries after this seq.")] = 0,
    limit: Annotated[int, Query(ge=1, le=AUDIT_PAGE_MAX, description="At most this many.")] = 100,
) -> AuditPage:
    if isinstance(since, datetime.datetime):
        since = (since if since.tzinfo else since.replace(tzinfo=datetime.UTC)).timestamp()
    query = AuditQuery(
        since=since,
        kind=kind,
        bank_id=bank,
        client_id=client,
        after=after,
        limit=limit,
    )
    entries = await store.list_audit(query)
    more = None
    if len(entries) == limit:
        following = query.model_copy(update={"after": entries[-1].seq, "limit": 1})
        if await store.list_audit(following):
            more = entries[-1].seq
    return AuditPage(entries=[AuditEntryOut.of(entry) for entry in entries], next=more)
