"""Metrics by Prometheus conventions, and the health endpoints of processes without a web
framework."""

from collections.abc import AsyncIterator, Mapping

import httpx
import pytest
from prometheus_client import CollectorRegistry

from remsim_control.metrics import HealthServer, Metrics, health_response, parse_request_head
from remsim_control.models import SlotmapState


@pytest.fixture
def registry() -> CollectorRegistry:
    return CollectorRegistry()


@pytest.fixture
def metrics(registry: CollectorRegistry) -> Metrics:
    return Metrics(registry)


def exposition(registry: CollectorRegistry) -> str:
    from prometheus_client import generate_latest

    return generate_latest(registry).decode()


def test_families_follow_prometheus_naming(metrics: Metrics, registry: CollectorRegistry) -> None:
    text = exposition(registry)
    for line in [
        "# TYPE remsim_connections gauge",
        "# TYPE remsim_slotmaps gauge",
        "# TYPE remsim_tpdus_relayed_total counter",
        "# TYPE remsim_tpdu_roundtrip_seconds histogram",
        "# TYPE remsim_reconnects_total counter",
        "# TYPE remsim_keepalive_timeouts_total counter",
        'remsim_tpdus_relayed_total{direction="modem_to_card"} 0.0',
        'remsim_reconnects_total{link="server"} 0.0',
        'remsim_keepalive_timeouts_total{link="client"} 0.0',
        'remsim_slotmaps{state="DELETE_REQ"} 0.0',
    ]:
        assert line in text


def test_values_are_exposed(metrics: Metrics, registry: CollectorRegistry) -> None:
    metrics.set_build_info("remsim-server", "0.1.0")
    metrics.set_connections({("bankd", "CONNECTED_BANKD"): 2, ("client", "CONNECTED_CLIENT"): 1})
    metrics.set_connections({("bankd", "CONNECTED_BANKD"): 1})
    metrics.count_slotmaps([SlotmapState.ACTIVE, SlotmapState.ACTIVE, SlotmapState.NEW])
    metrics.tpdus_relayed.labels("card_to_modem").inc()
    metrics.tpdu_roundtrip.observe(0.0003)
    metrics.reconnects.labels("bankd").inc()
    text = exposition(registry)
    assert 'remsim_build_info{component="remsim-server",version="0.1.0"} 1.0' in text
    assert 'remsim_connections{role="bankd",state="CONNECTED_BANKD"} 1.0' in text
    assert "CONNECTED_CLIENT" not in text
    assert 'remsim_slotmaps{state="ACTIVE"} 2.0' in text
    assert 'remsim_slotmaps{state="NEW"} 1.0' in text
    assert 'remsim_tpdus_relayed_total{direction="card_to_modem"} 1.0' in text
    assert 'remsim_tpdu_roundtrip_seconds_bucket{le="0.0005"} 1.0' in text
    assert 'remsim_reconnects_total{link="bankd"} 1.0' in text


def test_request_heads_are_parsed() -> None:
    assert parse_request_head(b"GET /metrics?x=1 HTTP/1.1\r\nHost: a\r\n\r\n") == (
        "GET",
        "/metrics",
    )
    assert parse_request_head(b"garbage\r\n\r\n") is None


async def test_other_paths_are_not_health_endpoints() -> None:
    assert await health_response("/api/backend/v1/slotmaps") is None


class Checks:
    def __init__(self) -> None:
        self.result = {"store": True, "bus": True}
        self.scrapes = 0

    async def ready(self) -> Mapping[str, bool]:
        return self.result

    async def before_scrape(self) -> None:
        self.scrapes += 1


@pytest.fixture
async def served(
    registry: CollectorRegistry, metrics: Metrics
) -> AsyncIterator[tuple[httpx.AsyncClient, Checks]]:
    checks = Checks()
    server = HealthServer(checks.ready, registry=registry, before_scrape=checks.before_scrape)
    await server.start("127.0.0.1", 0)
    async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{server.port}", timeout=5) as http:
        yield http, checks
    await server.close()


async def test_health_server_answers_liveness_and_readiness(
    served: tuple[httpx.AsyncClient, Checks],
) -> None:
    http, checks = served
    assert (await http.get("/healthz")).status_code == 200
    ready = await http.get("/readyz")
    assert (ready.status_code, ready.json()) == (200, {"store": True, "bus": True})
    checks.result = {"store": False, "bus": True}
    not_ready = await http.get("/readyz")
    assert (not_ready.status_code, not_ready.json()) == (503, {"store": False, "bus": True})


async def test_health_server_serves_metrics(served: tuple[httpx.AsyncClient, Checks]) -> None:
    http, checks = served
    response = await http.get("/metrics")
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/plain; version=")
    assert "remsim_tpdu_roundtrip_seconds_count 0.0" in response.text
    assert checks.scrapes == 1


async def test_health_server_refuses_the_rest(served: tuple[httpx.AsyncClient, Checks]) -> None:
    http, _ = served
    assert (await http.get("/nope")).status_code == 404
    assert (await http.post("/healthz")).status_code == 405
