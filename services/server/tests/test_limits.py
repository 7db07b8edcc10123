"""Connection limits, the rate-limited peer log and the quiet accept failures, without
sockets."""

import asyncio
import logging

import pytest

from remsim_common.limits import ConnectionLimits
from remsim_common.logs import RateLimitedLog
from remsim_server.main import ACCEPT_FAILED, parse_args, quiet_accept_failures

log = logging.getLogger("test.ratelimit")


def test_a_connection_over_the_port_or_address_limit_is_refused_and_not_counted() -> None:
    limits = ConnectionLimits(per_port=3, per_address=2)
    assert limits.admit(9998, "192.0.2.1") is None
    assert limits.admit(9998, "192.0.2.1") is None
    assert limits.admit(9998, "192.0.2.1") == "address"
    assert limits.admit(9998, "192.0.2.2") is None
    assert limits.admit(9998, "192.0.2.3") == "port"
    assert limits.admit(9999, "192.0.2.3") is None  # another port
    assert limits.held(port=9998) == 3 and limits.held(address="192.0.2.1") == 2
    limits.release(9998, "192.0.2.1")
    assert limits.admit(9998, "192.0.2.3") is None  # room again
    for port, address in [(9998, "192.0.2.1"), (9998, "192.0.2.2"), (9998, "192.0.2.3")]:
        limits.release(port, address)
    limits.release(9999, "192.0.2.3")
    assert limits.held() == 0


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def test_one_line_per_interval_and_cause_and_the_next_counts_the_rest(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO, log.name)
    clock = Clock()
    limited = RateLimitedLog(log, interval=10.0, clock=clock)
    assert limited.log(logging.WARNING, "undecodable", "closed: %s", "bad") is True
    assert limited.log(logging.WARNING, "undecodable", "closed: %s", "bad") is False
    assert limited.log(logging.WARNING, "framing", "closed: %s", "framing") is True
    clock.now = 9.9
    assert limited.log(logging.WARNING, "undecodable", "closed: %s", "bad") is False
    clock.now = 10.0
    assert limited.log(logging.WARNING, "undecodable", "closed: %s", "bad") is True
    assert [r.getMessage() for r in caplog.records] == [
        "closed: bad",
        "closed: framing",
        "closed: bad (and 2 more like it since the last such line)",
    ]


def test_accept_failures_are_logged_without_traceback_once_per_interval(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO, log.name)
    handle = quiet_accept_failures(RateLimitedLog(log, interval=10.0, clock=Clock()))
    loop = asyncio.new_event_loop()
    try:
        for _ in range(100):
            handle(loop, {"message": ACCEPT_FAILED, "exception": OSError(24, "Too many")})
    finally:
        loop.close()
    [line] = caplog.records
    assert line.levelno == logging.ERROR and line.exc_info is None
    assert "Too many" in line.getMessage()


def test_the_timeouts_and_limits_are_options() -> None:
    settings = parse_args(
        [
            "--identify-timeout", "3",
            "--map-request-timeout", "2.5",
            "--max-connections", "50",
            "--max-connections-per-address", "5",
            "--peer-log-interval", "60",
        ]
    )  # fmt: skip
    assert (settings.identify_timeout, settings.map_request_timeout) == (3.0, 2.5)
    assert (settings.max_connections, settings.max_connections_per_address) == (50, 5)
    assert settings.peer_log_interval == 60.0
