"""remsim-server's command line and environment, and the process itself."""

import asyncio
import io
import json
import logging
import os
import signal
import socket
import sys
from collections.abc import Iterator
from importlib import metadata
from pathlib import Path

import httpx
import pytest

from remsim_server.main import CATEGORIES, PROGRAM, parse_args


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
    assert settings.log_level == logging.DEBUG


def test_options_come_from_a_config_file(tmp_path: Path) -> None:
    config = tmp_path / "server.toml"
    config.write_text('rspro_port = 19998\nbankd_addresses = {1 = "bankd1.example"}\n')
    settings = parse_args(["--config", str(config), "--rest-port", "19997"])
    assert (settings.rspro_port, settings.rest_port) == (19998, 19997)
    assert settings.bankd_addresses == {1: "bankd1.example"}


def test_bankd_addresses_are_given_per_bank(capsys: pytest.CaptureFixture[str]) -> None:
    settings = parse_args(["--bankd-address", "1=bankd1.example", "--bankd-address", "2=[::1]:7"])
    assert settings.bankd_addresses == {1: "bankd1.example", 2: "[::1]:7"}
    with pytest.raises(SystemExit) as exited:
        parse_args(["--bankd-address", "bankd1.example"])
    assert exited.value.code == 2
    assert capsys.readouterr().err == (
        "remsim-server: bad value ['bankd1.example'] for --bankd-address "
        "(REMSIM_BANKD_ADDRESSES): expected BANK_ID=HOST[:PORT], got 'bankd1.example'\n"
    )


def test_a_bad_value_is_one_line_naming_the_option(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("REMSIM_RSPRO_PORT", "abc")
    with pytest.raises(SystemExit) as exited:
        parse_args([])
    assert exited.value.code == 2
    error = capsys.readouterr().err
    assert error.startswith("remsim-server: bad value 'abc' for --rspro-port (REMSIM_RSPRO_PORT): ")
    assert error.count("\n") == 1 and "pydantic" not in error
    with pytest.raises(SystemExit):
        parse_args(["--rspro-port", "1", "-e", "LOUD"])
    assert capsys.readouterr().err.startswith(
        "remsim-server: bad value 'LOUD' for -e/--log-level (REMSIM_LOG_LEVEL): "
    )


def test_log_levels_are_names_or_the_originals_numbers() -> None:
    assert parse_args(["-e", "INFO"]).log_level == logging.INFO
    assert parse_args(["-e", "3"]).log_level == logging.INFO
    assert parse_args(["--log-level", "7"]).log_level == logging.ERROR
    assert parse_args(["-L", "-T"]).log_level is None  # accepted, and INFO by default


@pytest.fixture
def restore_logging() -> Iterator[None]:
    loggers = [
        logging.getLogger(),
        *(logging.getLogger(n) for ns in CATEGORIES.values() for n in ns),
    ]
    saved = [(logger, logger.level, logger.handlers[:]) for logger in loggers]
    yield
    for logger, level, handlers in saved:
        logger.setLevel(level)
        logger.handlers[:] = handlers
    logging.captureWarnings(False)


@pytest.mark.usefixtures("restore_logging")
def test_the_originals_debug_mask_selects_categories() -> None:
    settings = parse_args(["-d", "DMAIN,1:DRSPRO,7"])
    PROGRAM.setup_logging(settings, stream=io.StringIO())
    assert logging.getLogger("remsim.server").isEnabledFor(logging.DEBUG)
    assert not logging.getLogger("rspro").isEnabledFor(logging.WARNING)
    assert logging.getLogger("rspro").isEnabledFor(logging.ERROR)
    assert not logging.getLogger("remsim.api").isEnabledFor(logging.CRITICAL)  # not listed


@pytest.mark.usefixtures("restore_logging")
def test_json_logs_carry_the_fields() -> None:
    out = io.StringIO()
    PROGRAM.setup_logging(parse_args(["--log-format", "json"]), stream=out)
    logging.getLogger("remsim.server").info("bankd connected", extra={"bank": 1})
    line = json.loads(out.getvalue())
    assert (line["level"], line["logger"], line["message"], line["bank"]) == (
        "INFO",
        "remsim.server",
        "bankd connected",
        1,
    )


@pytest.mark.usefixtures("restore_logging")
def test_dslotmap_selects_the_slotmap_life_cycle() -> None:
    PROGRAM.setup_logging(parse_args(["-d", "DSLOTMAP,3"]), stream=io.StringIO())
    for name in ("remsim.server.slotmap", "remsim.api.slotmap"):
        assert logging.getLogger(name).isEnabledFor(logging.INFO)
        assert not logging.getLogger(name).isEnabledFor(logging.DEBUG)
    assert not logging.getLogger("remsim.server").isEnabledFor(logging.CRITICAL)


def test_tls_needs_its_three_files(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    for name in ("REMSIM_TLS_CERT", "REMSIM_TLS_KEY", "REMSIM_TLS_CA", "REMSIM_REQUIRE_TLS"):
        monkeypatch.delenv(name, raising=False)
    assert parse_args([]).tls_cert is None  # plaintext by default
    monkeypatch.setenv("REMSIM_TLS_CA", str(tmp_path / "ca.pem"))
    settings = parse_args(["--tls-cert", "server.pem", "--tls-key", "server.key"])
    assert (settings.tls_cert, settings.tls_ca) == (Path("server.pem"), tmp_path / "ca.pem")
    with pytest.raises(SystemExit) as exited:
        parse_args(["--tls-cert", "server.pem"])
    assert exited.value.code == 2
    assert "TLS needs all three" in capsys.readouterr().err


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


@pytest.fixture
def home(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Path:
    """A home directory of the test's own, no ``XDG_STATE_HOME``, no shared store."""
    for name in ("XDG_STATE_HOME", "REMSIM_REDIS_URL", "REMSIM_NATS_URL"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    return tmp_path / "home"


def test_one_host_keeps_its_state_in_sqlite_in_the_per_user_state_directory(
    home: Path, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    settings = parse_args([])
    assert (settings.store, settings.state_dir) == ("sqlite", home / ".local/state/remsim")
    monkeypatch.setenv("XDG_STATE_HOME", str(tmp_path / "state"))
    assert parse_args([]).state_dir == tmp_path / "state" / "remsim"
    monkeypatch.setenv("XDG_STATE_HOME", "relative/state")  # not absolute: ignored (XDG)
    assert parse_args([]).state_dir == home / ".local/state/remsim"
    assert not home.exists()  # parsing touches no directory; the store creates it


def test_a_state_directory_given_is_used_and_memory_keeps_nothing(
    home: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    settings = parse_args(["--state-dir", "/srv/remsim"])
    assert (settings.store, settings.state_dir) == ("sqlite", Path("/srv/remsim"))
    settings = parse_args(["--store", "sqlite", "--state-dir", "/srv/remsim"])
    assert (settings.store, settings.state_dir) == ("sqlite", Path("/srv/remsim"))
    monkeypatch.setenv("REMSIM_STATE_DIR", "/var/lib/remsim")  # the systemd unit
    assert parse_args([]).state_dir == Path("/var/lib/remsim")
    monkeypatch.delenv("REMSIM_STATE_DIR")
    settings = parse_args(["--store", "memory"])
    assert (settings.store, settings.state_dir) == ("memory", None)
    monkeypatch.setenv("REMSIM_STORE", "memory")
    assert parse_args([]).state_dir is None
    settings = parse_args(["--redis-url", "redis://redis/0", "--store", ""])
    assert (settings.store, settings.state_dir) == (None, None)  # Redis holds the state


@pytest.mark.parametrize(
    ("argv", "problem"),
    [
        (["--store", "memory", "--state-dir", "/srv/remsim"], "store memory keeps nothing"),
        (["--store", "sqlite", "--redis-url", "redis://r/0"], "store sqlite is for a single host"),
        (["--store", "memory", "--redis-url", "redis://r/0"], "store memory is for a single host"),
        (["--store", "disk"], "bad value 'disk' for --store (REMSIM_STORE): "),
    ],
)
def test_a_store_that_contradicts_the_other_options_is_one_line(
    home: Path, argv: list[str], problem: str, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as exited:
        parse_args(argv)
    assert exited.value.code == 2
    error = capsys.readouterr().err
    assert error.startswith("remsim-server: ") and problem in error
    assert error.count("\n") == 1


def test_version_and_positional_arguments(capsys: pytest.CaptureFixture[str]) -> None:
    for flag in ("-V", "--version"):
        with pytest.raises(SystemExit) as exited:
            parse_args([flag])
        assert exited.value.code == 0
        assert capsys.readouterr().out == f"remsim-server {metadata.version('remsim-server')}\n"
    with pytest.raises(SystemExit) as exited:
        parse_args(["extra"])
    assert exited.value.code == 2


async def start(*args: str) -> asyncio.subprocess.Process:
    """The server process, its store in memory unless ``args`` name another."""
    code = "from remsim_server.main import main; main()"
    named = {"--store", "--state-dir", "--redis-url", "--nats-url"} & set(args)
    store = [] if named else ["--store", "memory"]
    return await asyncio.create_subprocess_exec(
        sys.executable, "-c", code, *store, *args, stderr=asyncio.subprocess.PIPE
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
        # the core's and the API's families, once, and no card traffic
        assert metrics.count("remsim_build_info{") == 1
        assert 'remsim_build_info{component="remsim-server",version="' in metrics
        assert "# TYPE remsim_connections gauge" in metrics
        assert 'remsim_keepalive_timeouts_total{link="bankd"} 0.0' in metrics
        assert 'remsim_slotmaps{state="ACTIVE"} 0.0' in metrics
        assert "remsim_tpdu" not in metrics
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


async def test_tls_files_that_cannot_be_used_exit_1(tmp_path: Path) -> None:
    missing = [str(tmp_path / name) for name in ("server.pem", "server.key", "ca.pem")]
    process = await start(
        "--rspro-port", "0", "--rest-port", "0",
        "--tls-cert", missing[0], "--tls-key", missing[1], "--tls-ca", missing[2],
    )  # fmt: skip
    _, stderr = await asyncio.wait_for(process.communicate(), 20)
    assert process.returncode == 1
    assert b"cannot start: the TLS files cannot be used" in stderr
    assert b"Traceback" not in stderr
