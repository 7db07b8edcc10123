"""remsim-api's options and exit status."""

import asyncio
import socket
import sys
from importlib import metadata
from pathlib import Path

import pytest

from remsim_api.main import parse_args
from remsim_common.pki import token_line


def test_the_rest_port_defaults_to_9997_and_follows_env_and_flags(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.delenv("REMSIM_REST_PORT", raising=False)
    assert parse_args([]).rest_port == 9997
    monkeypatch.setenv("REMSIM_REST_PORT", "19997")
    monkeypatch.setenv("REMSIM_LOG_FORMAT", "json")
    settings = parse_args(["--rest-host", "127.0.0.1"])
    assert (settings.rest_host, settings.rest_port, settings.log_format) == (
        "127.0.0.1",
        19997,
        "json",
    )
    assert parse_args(["--rest-port", "8000"]).rest_port == 8000


def test_the_shared_store_and_bus_come_from_env_and_flags(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("REMSIM_REDIS_URL", "REMSIM_NATS_URL", "REMSIM_LEASE_TTL"):
        monkeypatch.delenv(name, raising=False)
    settings = parse_args([])
    assert (settings.redis_url, settings.nats_url, settings.lease_ttl) == (None, None, 15.0)
    monkeypatch.setenv("REMSIM_REDIS_URL", "redis://redis:6379/0")
    monkeypatch.setenv("REMSIM_LEASE_TTL", "5")
    settings = parse_args(["--nats-url", "nats://nats:4222"])
    assert (settings.redis_url, settings.nats_url, settings.lease_ttl) == (
        "redis://redis:6379/0",
        "nats://nats:4222",
        5.0,
    )


def test_an_empty_variable_unsets_the_state_dir_and_the_urls(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A systemd drop-in ``Environment=REMSIM_STATE_DIR=`` turns the unit's default off
    (an empty path would otherwise be the working directory)."""
    for name in ("REMSIM_STATE_DIR", "REMSIM_REDIS_URL", "REMSIM_NATS_URL"):
        monkeypatch.setenv(name, "")
    settings = parse_args([])
    assert (settings.state_dir, settings.redis_url, settings.nats_url) == (None, None, None)
    monkeypatch.setenv("REMSIM_STATE_DIR", "/var/lib/remsim")
    assert parse_args([]).state_dir == Path("/var/lib/remsim")


def test_the_api_keeps_nothing_unless_told_and_has_no_store_option(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """remsim-api serves the shared store of the distributed mode; alone it is for trying
    the API, in memory: it never takes the per-user state directory (and its lock) that a
    remsim-server on the same host uses, and ``REMSIM_STORE`` (a host-wide file) is not its."""
    monkeypatch.setenv("REMSIM_STORE", "sqlite")
    assert parse_args([]).state_dir is None
    with pytest.raises(SystemExit) as exited:
        parse_args(["--store", "memory"])
    assert exited.value.code == 2
    assert "unrecognized arguments: --store" in capsys.readouterr().err


def test_a_bad_value_is_one_line_naming_the_option(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("REMSIM_LEASE_TTL", "-1")
    with pytest.raises(SystemExit) as exited:
        parse_args([])
    assert exited.value.code == 2
    error = capsys.readouterr().err
    assert error.startswith("remsim-api: bad value '-1' for --lease-ttl (REMSIM_LEASE_TTL): ")
    assert error.count("\n") == 1 and "pydantic" not in error


def test_logging_takes_the_originals_levels() -> None:
    assert parse_args(["-e", "NOTICE"]).log_level == parse_args(["--log-level", "5"]).log_level
    assert parse_args(["-d", "DREST,1"]).debug == "DREST,1"


def test_version(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exited:
        parse_args(["--version"])
    assert exited.value.code == 0
    assert capsys.readouterr().out == f"remsim-api {metadata.version('remsim-api')}\n"


async def run_api(*args: str) -> tuple[int, str]:
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-c",
        "from remsim_api.main import main; main()",
        *args,
        stderr=asyncio.subprocess.PIPE,
    )
    _, stderr = await asyncio.wait_for(process.communicate(), 20)
    assert process.returncode is not None
    return process.returncode, stderr.decode()


async def test_nats_without_redis_or_a_busy_port_exit_1() -> None:
    status, stderr = await run_api("--rest-port", "0", "--nats-url", "nats://127.0.0.1:4222")
    assert status == 1 and "cannot start" in stderr and "REMSIM_REDIS_URL" in stderr
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = str(busy.getsockname()[1])
        status, stderr = await run_api("--rest-host", "127.0.0.1", "--rest-port", port)
    assert status == 1 and "cannot start" in stderr


def test_a_bad_tokens_file_is_a_bad_option(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    tokens = tmp_path / "api-tokens"
    tokens.write_text(token_line("vera", "viewer", "secret") + "\nalice root 00\n")
    with pytest.raises(SystemExit) as exited:
        parse_args(["--api-tokens", str(tokens)])
    assert exited.value.code == 2
    assert capsys.readouterr().err == (
        f"remsim-api: bad value '{tokens}' for --api-tokens (REMSIM_API_TOKENS): "
        f"{tokens}, line 2: role 'root' is not viewer, operator or admin\n"
    )


def test_the_security_options(tmp_path: Path) -> None:
    tokens = tmp_path / "api-tokens"
    tokens.write_text("# no tokens yet\n")
    settings = parse_args([
        "--api-tokens", str(tokens), "--api-origins", "https://a.example,https://b.example",
        "--api-origins", "HTTPS://C.example:443", "--api-hosts", "remsim.example",
        "--tls-cert", "api.pem", "--tls-key", "api.key",
    ])  # fmt: skip
    assert settings.api_tokens == tokens
    assert settings.api_origins == ["https://a.example", "https://b.example", "https://c.example"]
    assert settings.api_hosts == ["remsim.example"]
    assert (settings.tls_cert, settings.tls_key) == (Path("api.pem"), Path("api.key"))


async def test_tls_files_that_cannot_be_used_exit_1(tmp_path: Path) -> None:
    missing = str(tmp_path / "missing.pem")
    status, stderr = await run_api(
        "--rest-host", "127.0.0.1", "--rest-port", "0", "--tls-cert", missing, "--tls-key", missing
    )
    assert status == 1 and "cannot start" in stderr and "Traceback" not in stderr
