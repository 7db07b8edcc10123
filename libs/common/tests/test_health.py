"""The health endpoint on a real HTTP server (uvicorn), as a probe and Prometheus see it."""

from __future__ import annotations

from collections.abc import Mapping

import httpx
import pytest
from prometheus_client import Counter
from prometheus_client.parser import text_string_to_metric_families

from remsim_common import HealthEndpoint, HealthServer, component_registry, exposition


async def test_healthz_readyz_and_metrics_over_http() -> None:
    ready = {"control_link": False}
    registry = component_registry()
    tpdus = Counter("remsim_tpdus_relayed", "TPDUs relayed.", registry=registry)
    scrapes = 0

    async def checks() -> Mapping[str, bool]:
        return ready

    async def before_scrape() -> None:
        nonlocal scrapes
        scrapes += 1

    server = HealthServer(
        HealthEndpoint(
            exposition("remsim-test", "1.2.3", registry), checks, before_scrape=before_scrape
        )
    )
    await server.start("127.0.0.1", 0)
    try:
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{server.port}") as http:
            assert (await http.get("/healthz")).text == "ok\n"
            answer = await http.get("/readyz")
            assert answer.status_code == 503 and answer.json() == {"control_link": False}
            ready["control_link"] = True
            assert (await http.get("/readyz")).status_code == 200
            tpdus.inc(3)
            answer = await http.get("/metrics")
            assert answer.status_code == 200 and scrapes == 1
            families = {f.name: f for f in text_string_to_metric_families(answer.text)}
            assert families["remsim_tpdus_relayed"].samples[0].value == 3
            (info,) = families["remsim_build_info"].samples
            assert info.labels == {"component": "remsim-test", "version": "1.2.3"}
            assert "process_cpu_seconds" in families or "python_info" in families
            assert (await http.get("/nope")).status_code == 404
            assert (await http.post("/readyz")).status_code == 405
            head = await http.head("/healthz")
            assert head.status_code == 200 and head.content == b""
    finally:
        await server.close()


async def test_a_failing_check_is_not_ready() -> None:
    async def broken() -> Mapping[str, bool]:
        raise RuntimeError("store gone")

    endpoint = HealthEndpoint(component_registry(), broken)
    assert await endpoint.checks() == {"check": False}


async def test_a_taken_port_raises() -> None:
    first = HealthServer(HealthEndpoint(component_registry()))
    await first.start("127.0.0.1", 0)
    try:
        with pytest.raises(OSError):
            await HealthServer(HealthEndpoint(component_registry())).start("127.0.0.1", first.port)
    finally:
        await first.close()


def test_components_in_one_process_have_separate_registries() -> None:
    a, b = component_registry(), component_registry()
    Counter("remsim_connections_total", "x", registry=a)
    Counter("remsim_connections_total", "x", registry=b)  # no clash
