"""Root conftest: shared fixtures live in tests/fixtures/ as pytest plugins.

Under CI (``CI`` set), a test skipped because something the suite REQUIRES is missing (the
reference recordings, pcscd + vpcd, nats-server, redis-server, chromium, the workspace's
tools) fails instead: a green CI must mean those tests ran. Skips for optional tools (editcap, IPv6
loopback) stay skips.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterator

import pytest

pytest_plugins = [
    "tests.fixtures.pcsc",
    "tests.fixtures.servers",
    "tests.fixtures.procs",
    "tests.fixtures.browser",
]

REQUIRED = (
    "no reference recordings",
    "reference recordings not available",
    "virtual SIM bank unavailable",
    "a second pcscd needs isolation",
    "nats-server is not installed",
    "redis-server is not installed",
    "rspro console script not installed",
    "no Compose v2 binary",
    "kubernetes-validate is not installed",
    "pcscd",
    "chromium is not installed",
)


@pytest.fixture(autouse=True)
def _no_store_from_the_shell(monkeypatch: pytest.MonkeyPatch) -> None:
    """The developer's ``REMSIM_STORE``/``REMSIM_STATE_DIR`` reach no test, nor any process
    a test starts: a server's store is what the test gives it (``--store memory`` or a
    state directory of its own), never the shell's."""
    for name in ("REMSIM_STORE", "REMSIM_STATE_DIR"):
        monkeypatch.delenv(name, raising=False)


@pytest.fixture(autouse=True)
def _isolated_logging() -> Iterator[None]:
    """Undo what a test's ``setup_logging()`` (an in-process main) did to the logging tree.

    A handler left on a logger writes to the stderr that pytest captured for that test and
    closed after it: later tests would see "--- Logging error ---" in their own stderr.
    """
    manager = logging.Logger.manager
    saved = {
        name: (logger.level, logger.handlers[:], logger.propagate, logger.disabled)
        for name, logger in [("", logging.getLogger()), *manager.loggerDict.items()]
        if isinstance(logger, logging.Logger)
    }
    yield
    for name, logger in [("", logging.getLogger()), *manager.loggerDict.items()]:
        if not isinstance(logger, logging.Logger):
            continue
        level, handlers, propagate, disabled = saved.get(name, (logging.NOTSET, [], True, False))
        logger.setLevel(level)
        logger.handlers[:] = handlers
        logger.propagate = propagate
        logger.disabled = disabled


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]):  # type: ignore[no-untyped-def]
    outcome = yield
    report = outcome.get_result()
    if report.skipped and os.environ.get("CI") and isinstance(report.longrepr, tuple):
        reason = str(report.longrepr[2])
        if any(required in reason for required in REQUIRED):
            report.outcome = "failed"
            report.longrepr = f"required for CI but skipped: {reason}"
