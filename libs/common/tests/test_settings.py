"""Settings: flag > program env > shared env > config file > default, one error format."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest
from pydantic import Field
from pydantic_settings import SettingsConfigDict

from remsim_common import CommonSettings, Program, TransportSettings

PROGRAM = Program("remsim-test", "remsim-common", categories={"DMAIN": ("remsim.test",)})


class DemoSettings(CommonSettings, TransportSettings):
    model_config = SettingsConfigDict(env_prefix="REMSIM_DEMO_")

    server_host: str = Field(min_length=1)
    bind_port: int = Field(default=9999, ge=0, le=65535)
    name: str = "demo"


def load(argv: list[str]) -> DemoSettings:
    parser = PROGRAM.parser("demo", transport=True)
    parser.add_argument("-i", "--server-host", metavar="HOST")
    parser.add_argument("-P", "--bind-port", metavar="PORT")
    parser.add_argument("--name")
    return PROGRAM.load(DemoSettings, parser, argv)


@pytest.fixture(autouse=True)
def _clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    import os

    for key in list(os.environ):
        if key.startswith("REMSIM_"):
            monkeypatch.delenv(key)


def test_flag_wins_over_env_over_shared_env_over_file_over_default(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    config = tmp_path / "demo.toml"
    config.write_text(
        'server_host = "file"\nbind_port = 1000\nname = "from-file"\nlog_format = "json"\n'
    )
    assert load(["-i", "x"]).bind_port == 9999  # default
    monkeypatch.setenv("REMSIM_DEMO_CONFIG", str(config))
    assert load([]).server_host == "file"
    assert load([]).bind_port == 1000
    monkeypatch.setenv("REMSIM_DEMO_BIND_PORT", "2000")
    assert load([]).bind_port == 2000
    assert load(["-P", "3000"]).bind_port == 3000
    assert load([]).log_format == "json"  # from the file
    monkeypatch.setenv("REMSIM_LOG_FORMAT", "text")  # shared env over the file
    assert load([]).log_format == "text"
    monkeypatch.setenv("REMSIM_DEMO_LOG_FORMAT", "json")  # the program's own over shared
    assert load([]).log_format == "json"
    assert (
        load(["--config", str(tmp_path / "demo.toml"), "--log-format", "text"]).log_format == "text"
    )


def test_shared_env_applies_only_to_shared_options(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("REMSIM_NAME", "not-mine")  # not a shared option
    monkeypatch.setenv("REMSIM_LOG_LEVEL", "3")
    settings = load(["-i", "h"])
    assert settings.name == "demo" and settings.log_level == logging.INFO


@pytest.mark.parametrize("level", ["INFO", "3", "info"])
def test_e_takes_names_and_numbers(level: str) -> None:
    assert load(["-i", "h", "-e", level]).log_level == logging.INFO


def _error(capsys: pytest.CaptureFixture[str], argv: list[str]) -> str:
    with pytest.raises(SystemExit) as exit_:
        load(argv)
    assert exit_.value.code == 2
    return capsys.readouterr().err


def test_a_bad_value_names_option_variable_value_and_what_is_allowed(
    capsys: pytest.CaptureFixture[str],
) -> None:
    err = _error(capsys, ["-i", "h", "-P", "70000"])
    assert err == (
        "remsim-test: bad value '70000' for -P/--bind-port (REMSIM_DEMO_BIND_PORT): "
        "Input should be less than or equal to 65535\n"
    )


def test_a_bad_env_value_has_the_same_format(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("REMSIM_LOG_LEVEL", "LOUD")
    err = _error(capsys, ["-i", "h"])
    assert err.startswith(
        "remsim-test: bad value 'LOUD' for -e/--log-level (REMSIM_DEMO_LOG_LEVEL or "
        "REMSIM_LOG_LEVEL): unknown log level"
    )
    assert "pydantic" not in err and "http" not in err


def test_a_missing_option_and_a_bad_mask(capsys: pytest.CaptureFixture[str]) -> None:
    err = _error(capsys, [])
    assert err.startswith("usage: remsim-test")
    assert err.endswith("remsim-test: missing -i/--server-host (REMSIM_DEMO_SERVER_HOST)\n")
    assert "bad value 'DMAIN,x' for -d/--debug" in _error(capsys, ["-i", "h", "-d", "DMAIN,x"])


def test_tls_needs_all_three_files(capsys: pytest.CaptureFixture[str]) -> None:
    err = _error(capsys, ["-i", "h", "--tls-cert", "c.pem"])
    assert err == "remsim-test: bad options: TLS needs all three of tls_cert, tls_key and tls_ca\n"


def test_config_file_problems(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    missing = tmp_path / "nope.toml"
    assert f"cannot read config file {missing}" in _error(capsys, ["--config", str(missing)])
    broken = tmp_path / "broken.toml"
    broken.write_text("server_host = \n")
    assert "is not valid TOML" in _error(capsys, ["--config", str(broken)])
    typo = tmp_path / "typo.toml"
    typo.write_text('server_host = "h"\nbind_prot = 1\n')
    assert "unknown option 'bind_prot' in the config file" in _error(
        capsys, ["--config", str(typo)]
    )


def test_version_is_name_space_version(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        load(["--version"])
    out = capsys.readouterr().out.strip()
    name, version = out.split(" ")
    assert name == "remsim-test" and version[0].isdigit()


def test_compat_flags_are_accepted() -> None:
    assert load(["-i", "h", "-T", "-L"]).server_host == "h"
