"""The audit log of REST changes and ``GET /api/v1/audit``: every POST and DELETE, refused
or not, with who (the token's name or ``anonymous``), what, from where and the result."""

import datetime
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from remsim_api.app import create_app
from remsim_api.security import ApiSecurity, TokenFile
from remsim_common.pki import token_line
from remsim_control import AuditEntry, AuditKind, BackendUnavailable, MemoryBus, MemoryStore

PREFIX = "/api/backend/v1"
AUDIT = "/api/v1/audit"
SECRETS = {
    "vera": ("viewer", "vera-7d1f0b"),
    "otto": ("operator", "otto-93ce4a"),
    "ada": ("admin", "ada-1b8e52"),
}


def bearer(name: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {SECRETS[name][1]}"}


def body(bank: int, bank_slot: int, client: int, client_slot: int) -> dict[str, Any]:
    return {
        "bank": {"bankId": bank, "slotNr": bank_slot},
        "client": {"clientId": client, "slotNr": client_slot},
    }


@pytest.fixture
def store() -> MemoryStore:
    return MemoryStore()


@pytest.fixture
async def api(store: MemoryStore, tmp_path: Path) -> AsyncIterator[httpx.AsyncClient]:
    tokens = tmp_path / "api-tokens"
    tokens.write_text("".join(token_line(n, r, s) + "\n" for n, (r, s) in SECRETS.items()))
    app = create_app(store, MemoryBus(), security=ApiSecurity(tokens=TokenFile(tokens)))
    transport = httpx.ASGITransport(app=app, client=("192.0.2.9", 40123))
    async with httpx.AsyncClient(transport=transport, base_url="http://127.0.0.1:9997") as client:
        yield client


async def a_scripted_session(api: httpx.AsyncClient) -> None:
    """What an operator, a viewer, a stranger and an admin do, in this order."""
    slotmaps, reset = f"{PREFIX}/slotmaps", f"{PREFIX}/global-reset"
    form = {"Content-Type": "application/x-www-form-urlencoded"}
    statuses = [
        await api.post(slotmaps, json=body(1, 0, 23, 0), headers=bearer("otto")),
        await api.post(slotmaps, json=body(1, 1, 24, 0), headers=bearer("vera")),
        await api.post(slotmaps, json=body(1, 1, 24, 0)),
        await api.post(slotmaps, json=body(1, 0, 25, 0), headers=bearer("otto")),  # B1:0 in use
        await api.post(reset, headers=form | bearer("ada")),
        await api.post(slotmaps, json=body(2, 3, 24, 1), headers=bearer("otto")),
        await api.delete(f"{slotmaps}/65536", headers=bearer("otto")),
        await api.post(reset, headers=bearer("ada")),
    ]
    assert [r.status_code for r in statuses] == [201, 403, 401, 409, 415, 201, 200, 200]


def summary(entries: list[dict[str, Any]]) -> list[tuple[str, str, str]]:
    return [(e["actor"], e["action"], e["result"]) for e in entries]


async def test_every_post_and_delete_is_listed_with_its_token_name(
    api: httpx.AsyncClient,
) -> None:
    await a_scripted_session(api)
    page = (await api.get(AUDIT, headers=bearer("vera"))).json()
    assert summary(page["entries"]) == [
        ("otto", "POST /api/backend/v1/slotmaps", "201"),
        ("vera", "POST /api/backend/v1/slotmaps", "403"),
        ("anonymous", "POST /api/backend/v1/slotmaps", "401"),
        ("otto", "POST /api/backend/v1/slotmaps", "409"),
        ("ada", "POST /api/backend/v1/global-reset", "415"),
        ("otto", "POST /api/backend/v1/slotmaps", "201"),
        ("otto", "DELETE /api/backend/v1/slotmaps/65536", "200"),
        ("ada", "POST /api/backend/v1/global-reset", "200"),
    ]
    assert page["next"] is None
    first, refused, _, conflict, form, _, deleted, reset = page["entries"]
    assert first["kind"] == "rest" and first["address"] == "192.0.2.9:40123"
    assert (first["bank_id"], first["bank_slot"], first["client_id"], first["client_slot"]) == (
        1,
        0,
        23,
        0,
    )
    assert refused["detail"] == "token 'vera' has role viewer; this needs operator"
    assert refused["bank_id"] is None  # a refused request's body is not read
    assert "B1:0" in conflict["detail"] and conflict["client_id"] == 25
    assert "application/json" in form["detail"]
    assert (deleted["bank_id"], deleted["bank_slot"], deleted["client_id"]) == (1, 0, 23)
    assert reset["detail"] == "1 slotmaps deleted"
    when = datetime.datetime.fromisoformat(first["time"])
    assert when.tzinfo is not None
    assert abs(when - datetime.datetime.now(datetime.UTC)) < datetime.timedelta(minutes=5)
    assert [e["seq"] for e in page["entries"]] == sorted({e["seq"] for e in page["entries"]})


async def test_reads_are_not_audited_and_the_audit_needs_a_viewer(
    api: httpx.AsyncClient, store: MemoryStore
) -> None:
    assert (await api.get(f"{PREFIX}/slotmaps", headers=bearer("ada"))).status_code == 200
    assert (await api.get(AUDIT)).status_code == 401
    assert (await api.get(AUDIT, headers=bearer("vera"))).json() == {"entries": [], "next": None}


@pytest.mark.parametrize(
    ("query", "expected"),
    [
        ("client=23", [("otto", "POST /api/backend/v1/slotmaps", "201"), ("otto",
            "DELETE /api/backend/v1/slotmaps/65536", "200")]),
        ("bank=2", [("otto", "POST /api/backend/v1/slotmaps", "201")]),
        ("kind=slotmap", []),
        ("since=2999-01-01T00:00:00Z", []),
    ],
)  # fmt: skip
async def test_filters(
    api: httpx.AsyncClient, query: str, expected: list[tuple[str, str, str]]
) -> None:
    await a_scripted_session(api)
    page = (await api.get(f"{AUDIT}?{query}", headers=bearer("vera"))).json()
    assert summary(page["entries"]) == expected


SINCE_2000 = [
    "2000",
    "2000.0",
    "1970-01-01T00:33:20Z",
    "1970-01-01T00:33:20",
    "1970-01-01T01:33:20+01:00",
]
"""Unix time 2000 written five ways (RFC 3339 without an offset is UTC)."""


async def test_since_takes_rfc3339_or_unix_time(api: httpx.AsyncClient, store: MemoryStore) -> None:
    for when in (1000.0, 2000.0, 3000.0):
        entry = AuditEntry(
            kind=AuditKind.SLOTMAP, actor="core", action="NEW -> ACTIVE", result="ok"
        )
        await store.add_audit(entry.model_copy(update={"time": when}))
    for since in SINCE_2000:
        page = (await api.get(AUDIT, params={"since": since}, headers=bearer("vera"))).json()
        times = [e["time"] for e in page["entries"]]
        assert times == ["1970-01-01T00:33:20Z", "1970-01-01T00:50:00Z"], since
        assert page["entries"][0]["kind"] == "slotmap"


async def test_paging_with_limit_after_and_next(api: httpx.AsyncClient) -> None:
    await a_scripted_session(api)
    seen: list[tuple[str, str, str]] = []
    after, pages = 0, 0
    while True:
        page = (
            await api.get(AUDIT, params={"limit": 3, "after": after}, headers=bearer("vera"))
        ).json()
        seen += summary(page["entries"])
        pages += 1
        if page["next"] is None:
            break
        assert page["next"] == page["entries"][-1]["seq"]
        after = page["next"]
    assert pages == 3 and len(seen) == 8
    full = (await api.get(AUDIT, params={"limit": 8}, headers=bearer("vera"))).json()
    assert full["next"] is None  # no more: no empty page to fetch
    assert summary(full["entries"]) == seen


@pytest.mark.parametrize(
    "query", ["limit=0", "limit=1001", "bank=1024", "kind=x", "after=-1", "clinet=23"]
)
async def test_bad_queries_are_400(api: httpx.AsyncClient, query: str) -> None:
    response = await api.get(f"{AUDIT}?{query}", headers=bearer("vera"))
    assert response.status_code == 400
    assert response.headers["content-type"] == "application/problem+json"


async def test_without_tokens_the_actor_is_anonymous(store: MemoryStore) -> None:
    transport = httpx.ASGITransport(app=create_app(store, MemoryBus()))
    async with httpx.AsyncClient(transport=transport, base_url="http://remsim") as api:
        assert (await api.post(f"{PREFIX}/slotmaps", json=body(1, 0, 23, 0))).status_code == 201
        assert (await api.post(f"{PREFIX}/global-reset")).status_code == 200
        page = (await api.get(AUDIT)).json()
    assert summary(page["entries"]) == [
        ("anonymous", "POST /api/backend/v1/slotmaps", "201"),
        ("anonymous", "POST /api/backend/v1/global-reset", "200"),
    ]


async def test_an_audit_log_that_cannot_be_written_does_not_fail_the_request(
    api: httpx.AsyncClient,
    store: MemoryStore,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    async def down(entry: AuditEntry) -> AuditEntry:
        raise BackendUnavailable("redis: connection refused")

    monkeypatch.setattr(store, "add_audit", down)
    response = await api.post(f"{PREFIX}/slotmaps", json=body(1, 0, 23, 0), headers=bearer("otto"))
    assert response.status_code == 201
    assert [r.getMessage() for r in caplog.records if "audit entry not written" in r.getMessage()]
