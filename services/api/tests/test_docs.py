"""The API's documentation works offline: ``/docs`` and ``/redoc`` name no external host and
remsim serves every script, style sheet and icon they load; operation ids are readable."""

import asyncio
import contextlib
import socket
from collections.abc import AsyncIterator, Iterator
from html.parser import HTMLParser
from urllib.parse import urljoin, urlsplit

import httpx
import pytest
import uvicorn

from remsim_api.app import create_app
from remsim_control import MemoryBus, MemoryStore

STARTUP_TIMEOUT = 10.0  # seconds for uvicorn to start serving
URL_ATTRIBUTES = {"src", "href", "spec-url"}  # spec-url: ReDoc's <redoc> element


class _Uvicorn(uvicorn.Server):
    """uvicorn without its own signal handling: the test stops it."""

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        yield


@pytest.fixture
async def base_url() -> AsyncIterator[str]:
    """The real app, served by uvicorn on a free port of 127.0.0.1."""
    sock = socket.create_server(("127.0.0.1", 0))
    config = uvicorn.Config(
        create_app(MemoryStore(), MemoryBus()), log_config=None, log_level="warning"
    )
    server = _Uvicorn(config)
    task = asyncio.create_task(server.serve(sockets=[sock]))
    try:
        async with asyncio.timeout(STARTUP_TIMEOUT):
            while not server.started:
                assert not task.done(), "uvicorn stopped while starting"
                await asyncio.sleep(0.01)
        yield f"http://127.0.0.1:{sock.getsockname()[1]}"
    finally:
        server.should_exit = True
        await task
        sock.close()


class _Urls(HTMLParser):
    """Every URL an HTML page loads or links to."""

    def __init__(self) -> None:
        super().__init__()
        self.urls: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.urls += [value for name, value in attrs if name in URL_ATTRIBUTES and value]


def urls_in(html: str) -> list[str]:
    parser = _Urls()
    parser.feed(html)
    parser.close()
    return parser.urls


@pytest.mark.parametrize("page", ["/docs", "/redoc"])
async def test_the_docs_load_everything_from_remsim_itself(base_url: str, page: str) -> None:
    async with httpx.AsyncClient(base_url=base_url, timeout=5) as http:
        response = await http.get(page)
        assert response.status_code == 200
        assert response.headers["content-type"].startswith("text/html")
        urls = urls_in(response.text)
        assert any(url.endswith(".js") for url in urls)
        assert all(urlsplit(url).netloc == "" for url in urls), urls
        assert "validator.swagger.io" not in response.text  # Swagger UI's default badge
        for url in urls:
            asset = await http.get(urljoin(f"{base_url}{page}", url))
            assert (asset.status_code, bool(asset.content)) == (200, True), url


async def test_the_swagger_ui_assets_are_served_under_docs_static(base_url: str) -> None:
    async with httpx.AsyncClient(base_url=base_url, timeout=5) as http:
        urls = urls_in((await http.get("/docs")).text)
    assert {url for url in urls if url.startswith("/docs/static/")} >= {
        "/docs/static/swagger-ui-bundle.js",
        "/docs/static/swagger-ui.css",
        "/docs/static/favicon.png",
    }


async def test_operation_ids_are_the_function_names(base_url: str) -> None:
    async with httpx.AsyncClient(base_url=base_url, timeout=5) as http:
        document = (await http.get("/openapi.json")).json()
    operation_ids = {
        (method.upper(), path): operation["operationId"]
        for path, operations in document["paths"].items()
        for method, operation in operations.items()
    }
    prefix = "/api/backend/v1"
    assert operation_ids == {
        ("GET", f"{prefix}/banks"): "list_banks",
        ("GET", f"{prefix}/banks/{{bank_id}}"): "get_bank",
        ("GET", f"{prefix}/clients"): "list_clients",
        ("GET", f"{prefix}/clients/{{client_id}}"): "get_client",
        ("GET", f"{prefix}/slotmaps"): "list_slotmaps",
        ("POST", f"{prefix}/slotmaps"): "create_slotmap",
        ("GET", f"{prefix}/slotmaps/{{slotmap_id}}"): "get_slotmap",
        ("DELETE", f"{prefix}/slotmaps/{{slotmap_id}}"): "delete_slotmap",
        ("POST", f"{prefix}/global-reset"): "global_reset",
        ("GET", f"{prefix}/restart-counter"): "restart_counter",
        ("GET", "/api/v1/audit"): "list_audit",
        ("GET", "/api/v1/cards"): "list_cards",
        ("GET", "/api/v1/cards/{iccid}"): "get_card",
        ("POST", "/api/v1/slotmaps"): "create_slotmap_by_card",
        ("POST", "/api/v1/slotmaps:batch"): "create_slotmaps",
        **POOL_OPERATIONS,
    }


POOL_OPERATIONS = {  # remsim_api.pools
    **{
        op: f"{verb}_{thing}"
        for what, thing in (("pools", "pool"), ("groups", "group"), ("rules", "rule"))
        for op, verb in (
            (("GET", f"/api/v1/{what}/{{name}}"), "get"),
            (("PUT", f"/api/v1/{what}/{{name}}"), "put"),
            (("DELETE", f"/api/v1/{what}/{{name}}"), "delete"),
        )
    },
    ("GET", "/api/v1/pools"): "list_pools",
    ("GET", "/api/v1/groups"): "list_groups",
    ("GET", "/api/v1/rules"): "list_rules",
    ("GET", "/api/v1/card-states"): "list_card_states",
    ("GET", "/api/v1/card-states/{card}"): "get_card_state",
    ("PUT", "/api/v1/card-states/{card}"): "put_card_state",
    ("GET", "/api/v1/slotmaps"): "list_leased_slotmaps",
    ("GET", "/api/v1/slotmaps/{slotmap_id}/lease"): "get_lease",
    ("PUT", "/api/v1/slotmaps/{slotmap_id}/lease"): "put_lease",
    ("DELETE", "/api/v1/slotmaps/{slotmap_id}/lease"): "delete_lease",
    ("POST", "/api/v1/slotmaps/{slotmap_id}/release"): "release_slotmap",
}
