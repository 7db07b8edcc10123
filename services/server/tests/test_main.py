"""remsim-server's command line and environment, and the process itself."""

import asyncio
import os
import signal
import socket
import sys

import httpx
import pytest

from remsim_server.main import parse_args


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def test_defaults_are_the_originals_ports(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in list(os.environ):
        if name.startswith("REMSIM_"):
            monkeypatch.delenv(name)
    settings = parse_args([])
    assert (settings.rspro_host, settings.rspro_port) == ("0.0.0.0", 9998)
    assert (settings.rest_host, settings.rest_port) == ("0.0.0.0", 9997)
    assert settings.bankd_port == 9999
    assert settings.identity_name == socket.gethostname()[:32]


def test_options_come_from_the_environment_and_flags_win(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("REMSIM_RSPRO_PORT", "19998")
    monkeypatch.setenv("REMSIM_REST_HOST", "::1")
    monkeypatch.setenv("REMSIM_BANKD_ADDRESSES", '{"1": "203.0.113.5:9999"}')
    monkeypatch.setenv("REMSIM_LOG_LEVEL", "DEBUG")
    settings = parse_args(["--rspro-port", "29998", "--name", "fixme-name"])
    assert settings.rspro_port == 29998
    assert settings.rest_host == "::1"
    assert settings.bankd_addresses == {1: "203.0.113.5:9999"}
    assert settings.identity_name == "fixme-name"
    assert settings.log_level == "DEBUG"


def test_bankd_addresses_are_given_per_bank() -> None:
    settings = parse_args(["--bankd-address", "1=bankd1.example", "--bankd-address", "2=[::1]:7"])
    assert settings.bankd_addresses == {1: "bankd1.example", 2: "[::1]:7"}
    with pytest.raises(SystemExit):
        parse_args(["--bankd-address", "bankd1.example"])


def test_the_originals_debug_mask_sets_the_log_level() -> None:
    assert parse_args(["-d", "DMAIN,1:DRSPRO,3"]).log_level == "DEBUG"
    assert parse_args(["-d", "DMAIN,7"]).log_level == "ERROR"
    assert parse_args(["-d", "DMAIN,3", "--log-level", "WARNING"]).log_level == "WARNING"
    assert parse_args(["-L"]).log_level == "INFO"


def test_the_shared_store_and_bus_and_the_core_id(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("REMSIM_REDIS_URL", "REMSIM_NATS_URL", "REMSIM_CORE_ID"):
        monkeypatch.delenv(name, raising=False)
    first, second = parse_args([]), parse_args([])
    assert (first.redis_url, first.nats_url, first.lease_ttl) == (None, None, 15.0)
    assert first.core_id.startswith(f"{socket.gethostname()}-{os.getpid()}-")
    assert first.core_id != second.core_id  # unique per start, even with the same pid
    monkeypatch.setenv("REMSIM_NATS_URL", "nats://nats:4222")
    monkeypatch.setenv("REMSIM_CORE_ID", "core-a")
    settings = parse_args(["--redis-url", "redis://redis/0", "--lease-ttl", "3"])
    assert (settings.redis_url, settings.nats_url, settings.lease_ttl) == (
        "redis://redis/0",
        "nats://nats:4222",
        3.0,
    )
    assert (settings.core_id, parse_args(["--core-id", "core-b"]).core_id) == ("core-a", "core-b")


def test_version_and_positional_arguments(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exited:
        parse_args(["-V"])
    assert exited.value.code == 0
    assert capsys.readouterr().out.startswith("remsim-server version ")
    with pytest.raises(SystemExit) as exited:
        parse_args(["extra"])
    assert exited.value.code == 2


async def start(*args: str) -> asyncio.subprocess.Process:
    code = "from remsim_server.main import main; main()"
    return await asyncio.create_subprocess_exec(
        sys.executable, "-c", code, *args, stderr=asyncio.subprocess.PIPE
    )


async def test_the_process_serves_both_ports_and_stops_on_sigterm() -> None:
    rspro_port, rest_port = free_port(), free_port()
    process = await start(
        "--rspro-host", "127.0.0.1", "--rspro-port", str(rspro_port),
        "--rest-host", "127.0.0.1", "--rest-port", str(rest_port),
    )  # fmt: skip
    try:
        async with httpx.AsyncClient() as http, asyncio.timeout(20):
            while True:
                try:
                    response = await http.get(f"http://127.0.0.1:{rest_port}/api/backend/v1/banks")
                    break
                except httpx.TransportError:
                    await asyncio.sleep(0.05)
        assert response.json() == {"banks": []}
        _, writer = await asyncio.open_connection("127.0.0.1", rspro_port)
        writer.close()
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{rest_port}") as http:
            assert (await http.get("/healthz")).status_code == 200
            ready = await http.get("/readyz")
            assert (ready.status_code, ready.json()) == (200, {"store": True})
            metrics = (await http.get("/metrics")).text
        assert 'remsim_build_info{component="remsim-server",version="' in metrics
    finally:
        process.send_signal(signal.SIGTERM)
        assert await asyncio.wait_for(process.wait(), 10) == 0


async def test_a_port_in_use_exits_1() -> None:
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        process = await start("--rspro-host", "127.0.0.1", "--rspro-port", str(port))
        _, stderr = await asyncio.wait_for(process.communicate(), 20)
    assert process.returncode == 1
    assert b"cannot start" in stderr


async def test_nats_without_redis_exits_1() -> None:
    process = await start("--rspro-port", "0", "--rest-port", "0", "--nats-url", "nats://n:4222")
    _, stderr = await asyncio.wait_for(process.communicate(), 20)
    assert process.returncode == 1
    assert b"cannot start" in stderr and b"REMSIM_REDIS_URL" in stderr
