"""README's main command: the demo runs the whole system and talks to the card."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from remsim_testing.simbank import missing_requirements
from tests.system import free_port

pytestmark = [pytest.mark.integration, pytest.mark.pcsc]

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.skipif(bool(missing_requirements()), reason=str(missing_requirements()))
def test_demo_exchanges_select_read_and_authenticate() -> None:
    env = {k: v for k, v in os.environ.items() if k != "PCSCLITE_CSOCK_NAME"}  # its own pcscd
    ports = [str(free_port()) for _ in range(3)]
    result = subprocess.run(
        [sys.executable, str(ROOT / "scripts" / "demo.py"), "--once",
         "--rest-port", ports[0], "--rspro-port", ports[1], "--bankd-port", ports[2]],
        capture_output=True, text=True, timeout=120, env=env, check=False,
    )  # fmt: skip
    assert result.returncode == 0, result.stdout + result.stderr
    out = result.stdout
    assert "client C23:0 got the card's ATR 3b 9f 96 80" in out
    assert "IMSI: 262000000010000" in out
    assert "matches Milenage(Ki, OPc) computed here" in out
    assert "Try next" in out and out.rstrip().endswith("done")
