"""remsim-api's options."""

import pytest

from remsim_api.main import parse_args


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
