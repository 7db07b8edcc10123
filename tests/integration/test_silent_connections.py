"""Thousands of silent connections to daemons limited to 1,024 file descriptors (issue 12).

``remsim-server`` and ``remsim-bankd`` run as processes with ``ulimit -n 1024`` (the
default of a systemd unit without ``LimitNOFILE``), the bankd serving a software SIM to a
mapped ``remsim-client-shell``. Both cap their connections by that limit (the server 480
RSPRO and 480 REST connections, the bankd 480 client connections) and refuse the rest at
once, so that 2,000 silent connections to each RSPRO port and a few hundred to the REST
port never use up their descriptors: the client keeps getting its APDUs answered, REST
keeps answering, and once the connections are gone the descriptors are back.

The identification and request timeouts are longer than the test, so that every silent
connection stays until the test closes it (the worst case for the caps).
"""

from __future__ import annotations

import os
import resource
import socket
import subprocess
import time
import urllib.request
from pathlib import Path

import pytest
from prometheus_client.parser import text_string_to_metric_families

from remsim_bankd.bankd import REFUSAL_LOG_INTERVAL
from tests.system import (
    BIN,
    REST_PREFIX,
    SELECT_MF,
    Daemon,
    ShellClient,
    free_port,
    wait_for,
)

PROFILES = Path(__file__).parents[2] / "services" / "bankd" / "profiles"
ATR = bytes.fromhex("3B9F96801FC78031A073BE21136743200718000001A5")
"""The ATR of ``card0.json``."""

MAX_FDS = 1024
"""The daemons' file descriptor limit (``ulimit -n``)."""
CAP = 480
"""What each cap comes to with ``MAX_FDS``: (1024 - 64 reserved) / 2."""
SILENT = 2000
"""Silent connections to the server's RSPRO port, and as many to the bankd's client port."""
SILENT_REST = 300
"""Silent connections to the server's REST port (fewer than its cap: REST must answer)."""
BATCH = 250
"""Silent connections opened to each RSPRO port before the client and REST are checked."""
HOLD = 120
"""Seconds the daemons give a new connection to identify itself or send its request:
longer than the test, so that the silent connections stay until closed."""
WAIT = 30.0
"""Seconds any step may take (a bound on a slow, shared machine, not a measurement)."""
OWN_FDS = 2 * SILENT + SILENT_REST + 512
"""File descriptors this test process needs: the silent sockets and its own."""


def limit_fds() -> None:
    resource.setrlimit(resource.RLIMIT_NOFILE, (MAX_FDS, MAX_FDS))


class LimitedDaemon(Daemon):
    """A ``Daemon`` started with ``ulimit -n MAX_FDS`` and the environment ``env``."""

    def __init__(self, name: str, argv: list[str], workdir: Path, env: dict[str, str]) -> None:
        self.env = env
        super().__init__(name, argv, workdir)

    def _spawn(self) -> subprocess.Popen[bytes]:
        with self.log.open("ab") as out:
            return subprocess.Popen(
                self.argv,
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=out,
                env=os.environ | {"PYTHONUNBUFFERED": "1"} | self.env,
                preexec_fn=limit_fds,
            )


def open_fds(daemon: Daemon) -> int:
    return len(os.listdir(f"/proc/{daemon.proc.pid}/fd"))


def get(url: str) -> tuple[int, bytes]:
    with urllib.request.urlopen(url, timeout=WAIT) as answer:
        return int(answer.status), bytes(answer.read())


def post(url: str, body: bytes) -> int:
    request = urllib.request.Request(url, body, {"Content-Type": "application/json"}, method="POST")
    with urllib.request.urlopen(request, timeout=WAIT) as answer:
        return int(answer.status)


def samples(url: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """The samples of a ``/metrics`` page by name and labels."""
    text = get(url)[1].decode()
    return {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


def silent(port: int, count: int) -> list[socket.socket]:
    """``count`` connections to ``port`` that never send a byte (queued, accepted or
    refused: the daemon decides)."""
    socks = []
    for _ in range(count):
        sock = socket.socket()
        sock.setblocking(False)
        sock.connect_ex(("127.0.0.1", port))
        socks.append(sock)
    return socks


def test_2000_silent_connections_to_server_and_bankd_under_ulimit_1024(tmp_path: Path) -> None:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < OWN_FDS:
        if hard != resource.RLIM_INFINITY and hard < OWN_FDS:
            pytest.skip(f"the test needs {OWN_FDS} file descriptors, the limit is {hard}")
        resource.setrlimit(resource.RLIMIT_NOFILE, (OWN_FDS, hard))
    rest, rspro, bankd_port, bankd_metrics = (free_port() for _ in range(4))
    api = f"http://127.0.0.1:{rest}{REST_PREFIX}"
    timeouts = {"REMSIM_REST_REQUEST_TIMEOUT": str(HOLD)}
    server = LimitedDaemon("server", [
        str(BIN / "remsim-server"), "--rest-host", "127.0.0.1", "--rest-port", str(rest),
        "--rspro-host", "127.0.0.1", "--rspro-port", str(rspro),
        "--bankd-port", str(bankd_port), "--state-dir", str(tmp_path / "state"),
        "--identify-timeout", str(HOLD), "--max-connections-per-address", str(2 * SILENT),
        "--peer-log-interval", str(HOLD),
    ], tmp_path, timeouts)  # fmt: skip
    daemons: list[Daemon] = [server]
    opened: list[socket.socket] = []

    def server_handled() -> int:
        """Silent connections the server holds or refused."""
        values = samples(f"http://127.0.0.1:{rest}/metrics")
        return int(sum(
            value for (name, labels), value in values.items()
            if name == "remsim_connections_refused_total"
            or (name == "remsim_connections" and ("role", "unidentified") in labels)
        ))  # fmt: skip

    def bankd_handled() -> int:
        """Silent connections the bankd holds or refused."""
        values = samples(f"http://127.0.0.1:{bankd_metrics}/metrics")
        return int(sum(
            value for (name, labels), value in values.items()
            if name == "remsim_connections_refused_total"
            or (name == "remsim_connections" and ("state", "CONN_WAIT_ID") in labels)
        ))  # fmt: skip

    def answers(client: ShellClient) -> None:
        """The mapped client gets an APDU answered and REST answers."""
        assert client.transmit(SELECT_MF, WAIT) == bytes.fromhex("9f16")
        status, body = get(f"{api}/slotmaps")
        assert status == 200 and b'"clientId":23' in body.replace(b" ", b"")

    try:
        wait_for(lambda: get(f"{api}/banks")[0] == 200, "the server's REST API", WAIT)
        daemons.append(bankd := LimitedDaemon("bankd", [
            str(BIN / "remsim-bankd"), "-i", "127.0.0.1", "-p", str(rspro), "-b", "1",
            "-n", "1", "-I", "127.0.0.1", "-P", str(bankd_port), "--card-driver", "sim",
            "--sim-profile", str(PROFILES / "card0.json"), "--identify-timeout", str(HOLD),
            "--max-clients-per-host", str(2 * SILENT), "--metrics-host", "127.0.0.1",
            "--metrics-port", str(bankd_metrics),
        ], tmp_path, {}))  # fmt: skip
        wait_for(lambda: get(f"{api}/banks/1")[0] == 200, "the bankd", WAIT)
        body = b'{"bank":{"bankId":1,"slotNr":0},"client":{"clientId":23,"slotNr":0}}'
        assert post(f"{api}/slotmaps", body) == 201
        daemons.append(client := ShellClient("client", [
            str(BIN / "remsim-client-shell"), "-i", "127.0.0.1", "-p", str(rspro),
            "-c", "23", "-n", "0",
        ], tmp_path))  # fmt: skip
        client.expect_atr(ATR, WAIT)
        answers(client)
        idle = {daemon.name: open_fds(daemon) for daemon in (server, bankd)}
        started = time.monotonic()

        opened += silent(rest, SILENT_REST)
        for batch in range(1, SILENT // BATCH + 1):
            opened += silent(rspro, BATCH) + silent(bankd_port, BATCH)
            count = batch * BATCH
            wait_for(lambda: server_handled() >= count, f"the server to take {count}", WAIT)  # noqa: B023
            wait_for(lambda: bankd_handled() >= count, f"the bankd to take {count}", WAIT)  # noqa: B023
            answers(client)
        assert open_fds(server) < MAX_FDS and open_fds(bankd) < MAX_FDS

        for sock in opened:
            sock.close()
        opened.clear()
        answers(client)
        for daemon in (server, bankd):
            wait_for(lambda: open_fds(daemon) <= idle[daemon.name], f"{daemon.name}'s FDs", WAIT)  # noqa: B023
        refusing = time.monotonic() - started
    finally:
        for sock in opened:
            sock.close()
        for running in reversed(daemons):
            running.stop()

    server_log = server.log.read_text(errors="replace")
    bankd_log = bankd.log.read_text(errors="replace")
    for log in (server_log, bankd_log):
        assert "Traceback" not in log
    assert (
        f"serving at most {CAP} RSPRO connections (file descriptor limit {MAX_FDS})" in server_log
    )
    assert f"serving at most {CAP} REST connections (file descriptor limit {MAX_FDS})" in server_log
    refusals = [line for line in server_log.splitlines() if "connection refused" in line]
    assert len(refusals) == 1, refusals  # rate-limited: one line per HOLD seconds
    assert f"{CAP} connections on all RSPRO ports" in refusals[0]
    assert "cannot accept" not in server_log  # the descriptors never ran out
    assert (
        f"serving at most {CAP} client connections (file descriptor limit {MAX_FDS})" in bankd_log
    )
    refusals = [line for line in bankd_log.splitlines() if "refused" in line]
    assert 1 <= len(refusals) <= 1 + refusing // REFUSAL_LOG_INTERVAL + 1  # one per interval
    assert "Too many open files" not in bankd_log
