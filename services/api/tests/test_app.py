"""The RSRES API over a store and a bus (rsres-api.md; differences in docs/rsres-compat.md)."""

import json
from collections.abc import AsyncIterator
from importlib import metadata
from pathlib import Path
from typing import Any

import httpx
import pytest

from remsim_api.app import QuickCreate, create_app
from remsim_control import (
    AuditQuery,
    BackendUnavailable,
    BankdAddress,
    BankRecord,
    BankSlot,
    ClientRecord,
    ClientSlot,
    ComponentIdentity,
    ComponentType,
    Event,
    MemoryBus,
    MemoryStore,
    ResetEvent,
    SlotmapEvent,
    SlotmapState,
)

REFERENCE = Path(__file__).resolve().parents[3].parent / "shared/reference/upstream-1.0.0"
ADDITIONS = {  # keys we add, by the key that marks the object: client/bank, slotmap, identity
    "peer": {"clientId", "slotNr", "bankd"},
    "state": {"id", "result"},
    "type_": {"hwModel"},
}

BANKD = ComponentIdentity(
    type=ComponentType.BANKD, name="fixme-name", software="remsim-bankd", sw_version="1.0.0"
)
CLIENT = ComponentIdentity(
    type=ComponentType.CLIENT, name="vm", software="remsim-client", sw_version="1.0.0"
)
B1 = BankRecord(
    bank_id=1,
    number_of_slots=2,
    identity=BANKD,
    bankd=BankdAddress(host="127.0.0.1", port=9999),
    remote="127.0.0.1:41000",
    core_id="core",
)
C23_0 = ClientSlot(client_id=23, slot_nr=0)
C24_0 = ClientSlot(client_id=24, slot_nr=0)
B1_0 = BankSlot(bank_id=1, slot_nr=0)


def client_record(slot: ClientSlot) -> ClientRecord:
    return ClientRecord(client=slot, identity=CLIENT, remote="127.0.0.1:41001", core_id="core")


def body(bank: Any, bank_slot: Any, client: Any, client_slot: Any) -> dict[str, Any]:
    return {
        "bank": {"bankId": bank, "slotNr": bank_slot},
        "client": {"clientId": client, "slotNr": client_slot},
    }


class Events:
    """What the API announced on the bus."""

    def __init__(self) -> None:
        self.seen: list[Event] = []


@pytest.fixture
def store() -> MemoryStore:
    return MemoryStore()


@pytest.fixture
def bus() -> MemoryBus:
    return MemoryBus()


@pytest.fixture
async def events(bus: MemoryBus) -> AsyncIterator[Events]:
    recorder = Events()
    original = bus.publish

    async def publish(event: Event) -> None:
        recorder.seen.append(event)
        await original(event)

    bus.publish = publish  # type: ignore[method-assign]
    yield recorder


@pytest.fixture
async def api(store: MemoryStore, bus: MemoryBus) -> AsyncIterator[httpx.AsyncClient]:
    transport = httpx.ASGITransport(app=create_app(store, bus))
    base_url = "http://remsim/api/backend/v1"
    async with httpx.AsyncClient(transport=transport, base_url=base_url) as client:
        yield client


def without_additions(data: bytes) -> str:
    """Our JSON with the keys the original does not have removed, re-serialised compactly."""

    def strip(value: Any) -> Any:
        if isinstance(value, dict):
            added = set().union(*(keys for mark, keys in ADDITIONS.items() if mark in value))
            return {k: strip(v) for k, v in value.items() if k not in added}
        if isinstance(value, list):
            return [strip(v) for v in value]
        return value

    return json.dumps(strip(json.loads(data)), separators=(",", ":"))


# --- reading -------------------------------------------------------------------------------


async def test_empty_lists_are_the_originals_bytes(api: httpx.AsyncClient) -> None:
    for path, expected in [
        ("/banks", b'{"banks":[]}'),
        ("/clients", b'{"clients":[]}'),
        ("/slotmaps", b'{"slotmaps":[]}'),
    ]:
        response = await api.get(path)
        assert response.status_code == 200
        assert response.headers["content-type"] == "application/json"
        assert response.content == expected


async def test_banks_and_clients_have_the_originals_keys_in_its_order(
    api: httpx.AsyncClient, store: MemoryStore
) -> None:
    await store.register_bank(B1)
    await store.register_client(client_record(C23_0))
    banks = await api.get("/banks")
    assert without_additions(banks.content) == (
        '{"banks":[{"peer":"B1","state":"CONNECTED_BANKD","component_id":{"type_":"remsimBankd",'
        '"name":"fixme-name","software":"remsim-bankd","swVersion":"1.0.0"},"bankId":1,'
        '"numberOfSlots":2}]}'
    )
    assert banks.json()["banks"][0]["bankd"] == {"ip": "127.0.0.1", "port": 9999}
    bank = await api.get("/banks/1")
    assert bank.content == json.dumps(banks.json()["banks"][0], separators=(",", ":")).encode()
    clients = await api.get("/clients")
    assert without_additions(clients.content) == (
        '{"clients":[{"peer":"C23:0","state":"CONNECTED_CLIENT","component_id":{"type_":'
        '"remsimClient","name":"vm","software":"remsim-client","swVersion":"1.0.0"}}]}'
    )
    assert (await api.get("/clients/23")).json()["peer"] == "C23:0"


async def test_optional_identity_fields_appear_only_when_sent(
    api: httpx.AsyncClient, store: MemoryStore
) -> None:
    identity = BANKD.model_copy(update={"hw_manufacturer": "sysmocom", "hw_model": "sysmoOCTSIM"})
    await store.register_bank(B1.model_copy(update={"identity": identity}))
    component = (await api.get("/banks/1")).json()["component_id"]
    assert list(component) == [
        "type_",
        "name",
        "software",
        "swVersion",
        "hwManufacturer",
        "hwModel",
    ]


@pytest.mark.parametrize("path", ["/banks/2", "/clients/24", "/slotmaps/65536"])
async def test_an_unknown_id_is_404_with_a_problem(api: httpx.AsyncClient, path: str) -> None:
    response = await api.get(path)
    assert response.status_code == 404
    assert response.headers["content-type"] == "application/problem+json"
    problem = response.json()
    assert problem["status"] == 404 and problem["title"] == "Not Found" and problem["detail"]


@pytest.mark.parametrize(
    "path", ["/banks/abc", "/banks/70000", "/banks/1024", "/clients/-1", "/slotmaps/x"]
)
async def test_an_invalid_id_is_400(api: httpx.AsyncClient, path: str) -> None:
    response = await api.get(path)
    assert response.status_code == 400
    assert response.headers["content-type"] == "application/problem+json"


@pytest.mark.parametrize(
    "path", ["/banks/+1", "/banks/1.0", "/banks/%201", "/clients/1_0", "/slotmaps/%D9%A1"]
)
async def test_an_id_is_digits_only(api: httpx.AsyncClient, store: MemoryStore, path: str) -> None:
    await store.register_bank(B1)
    response = await api.get(path)
    assert response.status_code == 400
    assert response.headers["content-type"] == "application/problem+json"
    assert "digits" in response.json()["detail"]


async def test_delete_with_a_non_digit_id_deletes_nothing(
    api: httpx.AsyncClient, store: MemoryStore
) -> None:
    slotmap = await store.create_slotmap(BankSlot(bank_id=9, slot_nr=1), C23_0)
    assert slotmap.id == 589_825
    for path in ["/slotmaps/5_89_825", "/slotmaps/+589825", "/slotmaps/589825.0"]:
        response = await api.delete(path)
        assert response.status_code == 400
        assert response.headers["content-type"] == "application/problem+json"
    assert [m.id for m in await store.list_slotmaps(visible_only=True)] == [589_825]
    assert (await api.delete("/slotmaps/0589825")).status_code == 200


async def test_trailing_and_doubled_slashes_and_queries_are_tolerated(
    api: httpx.AsyncClient,
) -> None:
    for path in ["/banks/", "http://remsim/api/backend/v1//banks", "/banks?foo=bar"]:
        response = await api.get(path)
        assert (response.status_code, response.content) == (200, b'{"banks":[]}')


async def test_unknown_routes_and_methods_answer_with_problems(api: httpx.AsyncClient) -> None:
    unknown = await api.get("/nonexistent")
    assert unknown.status_code == 404
    assert unknown.headers["content-type"] == "application/problem+json"
    wrong_method = await api.put("/slotmaps", json={})
    assert wrong_method.status_code == 405
    assert wrong_method.headers["allow"] == "GET, POST"


async def test_restart_counter_is_an_empty_200_as_the_original(api: httpx.AsyncClient) -> None:
    response = await api.get("/restart-counter")
    assert (response.status_code, response.content) == (200, b"")


async def test_the_openapi_document_and_the_docs_are_served(api: httpx.AsyncClient) -> None:
    async with httpx.AsyncClient(transport=api._transport, base_url="http://remsim") as root:
        document = (await root.get("/openapi.json")).json()
        assert "/api/backend/v1/slotmaps/{slotmap_id}" in document["paths"]
        assert (await root.get("/docs")).status_code == 200


# --- slotmaps ------------------------------------------------------------------------------


async def test_create_answers_201_with_the_map_and_its_location(
    api: httpx.AsyncClient, store: MemoryStore, events: Events
) -> None:
    response = await api.post("/slotmaps", json=body(1, 1, 23, 0))
    assert response.status_code == 201
    assert response.headers["location"] == "/api/backend/v1/slotmaps/65537"
    assert response.content == (
        b'{"bank":{"bankId":1,"slotNr":1},"client":{"clientId":23,"slotNr":0},"state":"NEW",'
        b'"id":65537}'
    )
    [slotmap] = await store.list_slotmaps()
    assert events.seen == [SlotmapEvent.of(slotmap, SlotmapState.NEW)]  # with its state hint
    listed = await api.get("/slotmaps")
    assert without_additions(listed.content) == (
        '{"slotmaps":[{"bank":{"bankId":1,"slotNr":1},"client":{"clientId":23,"slotNr":0},'
        '"state":"NEW"}]}'
    )
    assert (await api.get("/slotmaps/65537")).json() == response.json()


async def test_create_accepts_what_the_apitool_sends(api: httpx.AsyncClient) -> None:
    content = json.dumps(body(1, 0, 23, 0))  # Python's json: spaces after ':' and ','
    headers = {"Content-Type": "application/json; charset=utf-8"}
    response = await api.post("/slotmaps", content=content, headers=headers)
    assert response.status_code == 201


@pytest.mark.parametrize(
    "content",
    [
        '{"bank": {"bankId": 1, "slotNr": 0}, ',
        "not json at all",
        "",
        "[" + json.dumps(body(1, 0, 23, 0)) + "]",
        '{"bank": {"bankId": 1, "slotNr": 0}}',
        '{"client": {"clientId": 23, "slotNr": 0}}',
        '{"bank": {"bankId": 1}, "client": {"clientId": 23, "slotNr": 0}}',
        json.dumps(body("1", 0, 23, 0)),
        json.dumps(body(True, 0, 23, 0)),
        json.dumps(body(1.5, 0, 23, 0)),
        '{"bank": [1, 0], "client": {"clientId": 23, "slotNr": 0}}',
        json.dumps(body(1024, 0, 23, 0)),
        json.dumps(body(1, 1024, 23, 0)),
        json.dumps(body(1, 0, 1024, 0)),
        json.dumps(body(1, 0, 23, 1024)),
        json.dumps(body(-1, 0, 23, 0)),
        json.dumps(body(65537, 0, 23, 0)),  # the original truncated this to 1
        json.dumps(body(4294967298, 3, 51, 0)),
    ],
)
async def test_bad_bodies_are_400_problems_without_truncation(
    api: httpx.AsyncClient, store: MemoryStore, content: str
) -> None:
    response = await api.post(
        "/slotmaps", content=content, headers={"Content-Type": "application/json"}
    )
    assert response.status_code == 400
    assert response.headers["content-type"] == "application/problem+json"
    assert response.json()["errors"]
    assert await store.list_slotmaps() == []


@pytest.mark.parametrize("content_type", [None, "application/x-www-form-urlencoded", "text/plain"])
async def test_a_body_not_sent_as_json_is_415(
    api: httpx.AsyncClient, content_type: str | None
) -> None:
    headers = {"Content-Type": content_type} if content_type else {}
    response = await api.post("/slotmaps", content=json.dumps(body(1, 0, 23, 0)), headers=headers)
    assert response.status_code == 415


async def test_extra_keys_are_ignored_and_integral_reals_accepted(api: httpx.AsyncClient) -> None:
    extra = body(1, 1, 30, 2) | {"extra": "ignored", "state": "ACTIVE"}
    assert (await api.post("/slotmaps", json=extra)).json()["state"] == "NEW"
    assert (await api.post("/slotmaps", json=body(2.0, 0, 31, 0))).status_code == 201


@pytest.mark.parametrize("slots", [(1, 0, 23, 0), (1, 0, 99, 0), (1, 1, 23, 0)])
async def test_a_slot_already_mapped_is_409(
    api: httpx.AsyncClient, slots: tuple[int, int, int, int]
) -> None:
    await api.post("/slotmaps", json=body(1, 0, 23, 0))
    response = await api.post("/slotmaps", json=body(*slots))
    assert response.status_code == 409
    problem = response.json()
    assert problem["slotmap"]["id"] == 65536
    assert "B1:0" in problem["detail"]


async def test_the_extreme_ids_are_valid(api: httpx.AsyncClient) -> None:
    assert (await api.post("/slotmaps", json=body(0, 0, 0, 0))).json()["id"] == 0
    assert (await api.post("/slotmaps", json=body(1023, 1023, 1023, 1023))).json()["id"] == (
        67044351
    )


async def test_delete_of_a_new_map_removes_it(
    api: httpx.AsyncClient, store: MemoryStore, events: Events
) -> None:
    await api.post("/slotmaps", json=body(7, 3, 31, 0))
    response = await api.delete("/slotmaps/458755")
    assert (response.status_code, response.content) == (200, b"")
    assert "content-type" not in response.headers
    assert await store.list_slotmaps() == []
    assert len(events.seen) == 2 and isinstance(events.seen[1], SlotmapEvent)


async def test_delete_of_an_active_map_asks_for_its_removal(
    api: httpx.AsyncClient, store: MemoryStore
) -> None:
    slotmap = await store.create_slotmap(B1_0, C23_0)
    await store.update_slotmap(slotmap.serial, {SlotmapState.NEW}, SlotmapState.ACTIVE)
    assert (await api.delete("/slotmaps/65536")).status_code == 200
    assert (await api.get("/slotmaps")).json() == {"slotmaps": []}
    assert [m.state for m in await store.list_slotmaps()] == [SlotmapState.DELETE_REQ]
    assert (await api.delete("/slotmaps/65536")).status_code == 404


@pytest.mark.parametrize(("path", "status"), [("/slotmaps/12345", 404), ("/slotmaps/abc", 400)])
async def test_delete_of_an_unknown_map(api: httpx.AsyncClient, path: str, status: int) -> None:
    response = await api.delete(path)
    assert response.status_code == status
    assert response.headers["content-type"] == "application/problem+json"


async def test_global_reset_removes_every_map_and_announces_it(
    api: httpx.AsyncClient, store: MemoryStore, events: Events
) -> None:
    await api.post("/slotmaps", json=body(1, 0, 23, 0))
    await api.post("/slotmaps", json=body(1, 1, 24, 0))
    response = await api.post("/global-reset", content='{"x":')
    assert (response.status_code, response.content) == (200, b"")
    assert (await api.get("/slotmaps")).json() == {"slotmaps": []}
    assert events.seen[-1] == ResetEvent(global_reset=True)


# --- against the recordings of the original -------------------------------------------------


@pytest.mark.skipif(not REFERENCE.exists(), reason="reference recordings not available")
async def test_successful_answers_match_the_recordings_of_the_original(
    api: httpx.AsyncClient, store: MemoryStore
) -> None:
    """Replays the REST calls of s1 (basic mapping), comparing status and body."""
    await store.register_bank(B1)
    await store.register_client(client_record(C23_0))
    await store.register_client(client_record(C24_0))
    replayed = 0
    for line in (REFERENCE / "rest.jsonl").read_text().splitlines():
        record = json.loads(line)
        if record.get("scenario") != "s1_basic_mapping" or "raw_request_hex" not in record:
            continue
        path = record["path"].removeprefix("/api/backend/v1")
        if path in ("/clients/23", "/clients/0"):
            continue  # the original's broken client lookup (docs/rsres-compat.md)
        response = await api.request(
            record["method"],
            path,
            content=record["request_body"] or None,
            headers={"Content-Type": "application/json"} if record["request_body"] else {},
        )
        assert response.status_code == record["status"], path
        if record["method"] == "GET" and record["response_body"]:
            assert without_additions(response.content) == record["response_body"], path
        if response.status_code == 201:  # as the bankd would acknowledge it
            for slotmap in await store.list_slotmaps():
                await store.update_slotmap(slotmap.serial, {SlotmapState.NEW}, SlotmapState.ACTIVE)
        if record["method"] in ("DELETE", "POST") and path != "/slotmaps":
            for slotmap in await store.list_slotmaps():
                await store.remove_slotmap(slotmap.serial, {SlotmapState.DELETE_REQ})
        replayed += 1
    assert replayed >= 15


async def test_a_change_the_bus_could_not_announce_is_still_made(
    api: httpx.AsyncClient, store: MemoryStore, bus: MemoryBus, monkeypatch: pytest.MonkeyPatch
) -> None:
    """NATS went away between the readiness check and the announcement: the map is in the
    store, and the cores re-read the store once the bus is back."""

    async def down(event: Event) -> None:
        raise BackendUnavailable("NATS unreachable (reconnecting)")

    monkeypatch.setattr(bus, "publish", down)
    assert (await api.post("/slotmaps", json=body(1, 0, 23, 0))).status_code == 201
    assert len(await store.list_slotmaps()) == 1


# --- health and metrics ----------------------------------------------------------------------


@pytest.fixture
async def root(api: httpx.AsyncClient) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(transport=api._transport, base_url="http://remsim") as client:
        yield client


async def test_liveness_and_readiness_are_answered(root: httpx.AsyncClient) -> None:
    live = await root.get("/healthz")
    assert (live.status_code, live.text) == (200, "ok\n")
    ready = await root.get("/readyz")
    assert (ready.status_code, ready.json()) == (200, {"store": True, "bus": True})
    assert (await root.head("/readyz")).status_code == 200
    refused = await root.post("/healthz")
    assert (refused.status_code, refused.headers["allow"]) == (405, "GET, HEAD")


async def test_metrics_count_the_slotmaps_by_state(
    api: httpx.AsyncClient, root: httpx.AsyncClient, store: MemoryStore
) -> None:
    await api.post("/slotmaps", json=body(1, 0, 23, 0))
    await api.post("/slotmaps", json=body(1, 1, 24, 0))
    [first, _] = await store.list_slotmaps()
    await store.update_slotmap(first.serial, {SlotmapState.NEW}, SlotmapState.ACTIVE)
    response = await root.get("/metrics")
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/plain; version=")
    lines = response.text.splitlines()
    for line in [
        'remsim_slotmaps{state="NEW"} 1.0',
        'remsim_slotmaps{state="ACTIVE"} 1.0',
        'remsim_slotmaps{state="DELETING"} 0.0',
    ]:
        assert line in lines
    version = metadata.version("remsim-api")
    assert [line for line in lines if line.startswith("remsim_build_info{")] == [
        f'remsim_build_info{{component="remsim-api",version="{version}"}} 1.0'
    ]
    assert not [line for line in lines if "remsim_tpdu" in line or "remsim_connections" in line]


async def test_the_health_endpoints_are_not_part_of_the_api_document(
    root: httpx.AsyncClient,
) -> None:
    paths = (await root.get("/openapi.json")).json()["paths"]
    assert all(path.startswith(("/api/backend/v1/", "/api/v1/")) for path in paths)


async def test_unavailable_shared_state_is_503(
    api: httpx.AsyncClient, store: MemoryStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    async def down(**_: object) -> None:
        raise BackendUnavailable("redis: connection refused")

    monkeypatch.setattr(store, "list_slotmaps", down)
    response = await api.get("/slotmaps")
    assert response.status_code == 503
    assert "redis" in response.json()["detail"]


# --- POST /slotmaps without FastAPI's machinery (remsim_api.app.QuickCreate) ----------------


def _without_quick_create(app: Any) -> Any:
    app.router.routes[:] = [r for r in app.router.routes if not isinstance(r, QuickCreate)]
    return app


@pytest.mark.parametrize("ready", [True, False])
async def test_quick_create_answers_as_the_fastapi_route_would(
    ready: bool, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Byte for byte, headers, store, events and audit log included: maps, a slot in use,
    bad bodies, bodies not declared as JSON, another method, shared state away."""
    handled: list[str] = []
    original_handle = QuickCreate.handle

    async def handle(self: QuickCreate, scope: Any, receive: Any, send: Any) -> None:
        handled.append(scope["method"])
        await original_handle(self, scope, receive, send)

    monkeypatch.setattr(QuickCreate, "handle", handle)
    requests: list[tuple[str, str | None, bytes]] = [
        ("POST", "application/json", json.dumps(body(1, 1, 23, 0)).encode()),
        ("POST", "application/json; charset=utf-8", json.dumps(body(1, 2, 24, 0)).encode()),
        ("POST", "application/merge-patch+json", json.dumps(body(2, 0, 25, 0)).encode()),
        ("POST", "application/json", json.dumps(body(1, 1, 26, 0)).encode()),  # 409
        ("POST", "application/json", json.dumps(body(3, 0, 23, 0)).encode()),  # 409 client
        ("POST", "application/json", json.dumps(body(2.0, 1, 27, 0)).encode()),
        ("POST", "application/json", json.dumps(body("4", 0, 28, 0)).encode()),
        ("POST", "application/json", json.dumps(body(1024, 0, 28, 0)).encode()),
        ("POST", "application/json", b'{"bank": {"bankId": 1, "slotNr": 0}, '),
        ("POST", "application/json", b""),
        ("POST", "application/json", json.dumps(body(5, 0, 29, 0)).encode("utf-16")),
        ("POST", None, json.dumps(body(6, 0, 30, 0)).encode()),
        ("POST", "text/plain", json.dumps(body(6, 0, 30, 0)).encode()),
        ("PUT", "application/json", json.dumps(body(7, 0, 31, 0)).encode()),
    ]

    async def answers(app_of: Any) -> tuple[list[Any], list[Any], list[Any], list[Any]]:
        store, bus = MemoryStore(), MemoryBus()
        if not ready:
            store.ping = _no_answer  # type: ignore[attr-defined]
        seen: list[Event] = []
        original = bus.publish

        async def publish(event: Event) -> None:
            seen.append(event)
            await original(event)

        bus.publish = publish  # type: ignore[method-assign]
        transport = httpx.ASGITransport(app=app_of(create_app(store, bus)))
        out = []
        async with httpx.AsyncClient(transport=transport, base_url="http://remsim") as client:
            for method, content_type, content in requests:
                headers = {} if content_type is None else {"Content-Type": content_type}
                response = await client.request(
                    method, "/api/backend/v1/slotmaps", content=content, headers=headers
                )
                out.append((response.status_code, response.headers.multi_items(), response.content))
        audit = [
            entry.model_dump(exclude={"seq", "time"})
            for entry in await store.list_audit(AuditQuery(limit=100))
        ]
        return out, await store.list_slotmaps(), seen, audit

    quick = await answers(lambda app: app)
    assert handled == ["POST"] * 12  # every POST but the text/plain one (Guard: 415)
    fastapi_route = await answers(_without_quick_create)
    assert quick == fastapi_route
    statuses = [status for status, _, _ in quick[0]]
    if ready:
        assert statuses == [201, 201, 201, 409, 409, 201, 400, 400, 400, 400, 201, 415, 415, 405]
    else:
        assert statuses == [503] * 8 + [400, 503, 503, 415, 415, 405]  # bad JSON: 400 first


async def _no_answer() -> bool:
    return False


async def test_a_client_gone_before_its_body_was_whole_gets_no_map(
    store: MemoryStore, bus: MemoryBus
) -> None:
    """The body cut short by a disconnect, whatever came of it, makes nothing."""
    route = next(r for r in create_app(store, bus).router.routes if isinstance(r, QuickCreate))
    messages = [
        {"type": "http.request", "body": json.dumps(body(1, 1, 23, 0)).encode(), "more_body": True},
        {"type": "http.disconnect"},
    ]
    sent: list[Any] = []

    async def receive() -> Any:
        return messages.pop(0)

    async def send(message: Any) -> None:
        sent.append(message)

    scope = {
        "type": "http", "method": "POST", "path": "/api/backend/v1/slotmaps",
        "headers": [(b"content-type", b"application/json")], "app": None,
    }  # fmt: skip
    await route.handle(scope, receive, send)
    assert sent == [] and await store.list_slotmaps() == []
