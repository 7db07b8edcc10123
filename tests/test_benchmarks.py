"""Every benchmark still runs: each one, in its smallest configuration, exits 0 and prints
its figures. No figure is judged here (speed goals live in the benchmarks and
docs/benchmarks.md); this catches a benchmark broken by a change elsewhere, as when the bankd
began to report its cards over TLS and the round-trip benchmark's scripted server did not
expect it. bench/soak.py runs on its own in .ci/run (one minute)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).parents[1]
TIMEOUT = 240.0
"""Seconds one small benchmark run may take on a loaded machine (a bound, not a goal)."""

RUNS = {
    "rspro_codec.py": (["--seconds", "0.05", "--repeat", "1"], "RsproConnection.receive_data"),
    "tls_echo.py": (["--rounds", "1", "--count", "300"], "TLS adds:"),
    "mapping_scale.py": (["--quick"], "regression guard: server CPU"),
    "dashboard_scale.py": (["--cards", "20", "--clients", "20"], "update delay"),
    "apdu_roundtrip.py": (["--quick"], "TLS adds to RemoteCard"),
}


def test_every_benchmark_is_listed_here() -> None:
    assert {p.name for p in (ROOT / "bench").glob("*.py")} == {*RUNS, "soak.py"}


@pytest.mark.slow
@pytest.mark.parametrize("name", sorted(RUNS))
def test_the_benchmark_runs(name: str) -> None:
    options, figure = RUNS[name]
    # As from a shell: not on this session's pcscd (the PC/SC fixtures point
    # PCSCLITE_CSOCK_NAME at theirs); each benchmark starts its own virtual SIM bank.
    env = {k: v for k, v in os.environ.items() if k != "PCSCLITE_CSOCK_NAME"}
    done = subprocess.run(
        [sys.executable, str(ROOT / "bench" / name), *options],
        env=env,
        capture_output=True,
        text=True,
        timeout=TIMEOUT,
        cwd=ROOT,
        check=False,
    )
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    assert figure in done.stdout
    assert "Traceback" not in done.stderr
