"""The real ``remsim-server`` process with TLS and tokens (``remsim-pki`` certificates and
tokens): HTTPS on the REST port, roles, the browser checks, the audit log, ``remsim-apitool
--token --ca``, and no token in its log."""

from __future__ import annotations

import os
import ssl
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from remsim_common.pki import issue_files
from remsim_testing.pki import TestCA
from tests.system import end_process, free_port, wait_for

BIN = Path(sys.executable).parent
PREFIX = "/api/backend/v1"
MAP = {"bank": {"bankId": 1, "slotNr": 0}, "client": {"clientId": 23, "slotNr": 0}}
TIMEOUT = 10.0
"""Seconds one command or request may take."""

Completed = subprocess.CompletedProcess[str]


def run(*argv: str, env: dict[str, str] | None = None) -> Completed:
    return subprocess.run(
        [str(BIN / argv[0]), *argv[1:]],
        capture_output=True,
        text=True,
        timeout=TIMEOUT,
        env=os.environ | (env or {}),
        check=False,
    )


class Server:
    """``remsim-server`` on free ports of 127.0.0.1, its stderr in ``log``."""

    def __init__(self, tmp_path: Path) -> None:
        ca = TestCA(tmp_path / "pki")
        self.ca_file = ca.ca_file
        cert, key = issue_files(
            ca.authority, ca.directory, "server", ["urn:remsim:server"],
            dns=["localhost"], ips=["127.0.0.1"],
        )  # fmt: skip
        tokens = tmp_path / "api-tokens"
        self.tokens = {
            name: run(
                "remsim-pki", "token", name, "--role", role, "--file", str(tokens)
            ).stdout.strip()
            for name, role in [("vera", "viewer"), ("otto", "operator"), ("ada", "admin")]
        }
        assert all(self.tokens.values())
        self.port = free_port()
        self.log = tmp_path / "server.log"
        with self.log.open("wb") as log:
            self.proc = subprocess.Popen(
                [
                    str(BIN / "remsim-server"),
                    "--rspro-host", "127.0.0.1", "--rspro-port", str(free_port()),
                    "--rest-host", "127.0.0.1", "--rest-port", str(self.port),
                    "--tls-cert", str(cert), "--tls-key", str(key), "--tls-ca", str(ca.ca_file),
                    "--api-tokens", str(tokens), "--store", "memory",
                ],
                stdout=log, stderr=log, env=os.environ | {"PYTHONUNBUFFERED": "1"},
            )  # fmt: skip
        self.https = httpx.Client(
            base_url=f"https://127.0.0.1:{self.port}",
            verify=ssl.create_default_context(cafile=str(self.ca_file)),
            timeout=TIMEOUT,
        )
        wait_for(self.healthy, "the server's HTTPS")

    def healthy(self) -> bool:
        assert self.proc.poll() is None, self.log.read_text()
        try:
            return self.https.get("/healthz").status_code == 200
        except httpx.TransportError:
            return False

    def as_(self, name: str) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.tokens[name]}"}

    def apitool(self, *argv: str, env: dict[str, str] | None = None) -> Completed:
        where = ["-H", "127.0.0.1", "-p", str(self.port), "--ca", str(self.ca_file)]
        return run("remsim-apitool", *where, *argv, env=env)

    def stop(self) -> int:
        self.https.close()
        return end_process(self.proc)


@pytest.fixture
def server(tmp_path: Path) -> Iterator[Server]:
    running = Server(tmp_path)
    try:
        yield running
    finally:
        running.stop()


def test_tokens_roles_browser_checks_and_audit_over_https(server: Server) -> None:
    http = server.https
    slotmaps, reset = f"{PREFIX}/slotmaps", f"{PREFIX}/global-reset"
    refused = http.get(slotmaps)
    assert refused.status_code == 401
    assert refused.headers["www-authenticate"] == 'Bearer realm="remsim"'
    assert http.post(slotmaps, json=MAP, headers=server.as_("vera")).status_code == 403
    assert http.post(slotmaps, json=MAP, headers=server.as_("otto")).status_code == 201
    form = {"Content-Type": "application/x-www-form-urlencoded"}
    assert http.post(reset, content="a=1", headers=form | server.as_("ada")).status_code == 415
    evil = {"Origin": "http://evil.example"}
    assert http.post(reset, headers=evil | server.as_("ada")).status_code == 403
    listed = http.get(slotmaps, headers=server.as_("vera")).json()["slotmaps"]
    assert [m["id"] for m in listed] == [65536]  # no map lost
    assert http.post(reset, headers=server.as_("ada")).status_code == 200
    assert http.get(slotmaps, headers=server.as_("vera")).json() == {"slotmaps": []}

    # remsim-apitool, token from the flag or from REMSIM_API_TOKEN
    assert server.apitool("-m", "1", "1", "24", "0").returncode == 1
    created = server.apitool("--token", server.tokens["otto"], "-m", "1", "1", "24", "0")
    assert (created.returncode, created.stdout, created.stderr) == (0, "", "")
    shown = server.apitool("-s", env={"REMSIM_API_TOKEN": server.tokens["vera"]})
    assert shown.returncode == 0
    assert shown.stdout.startswith("/slotmaps: {'slotmaps': [{'bank': {'bankId': 1, 'slotNr': 1}")
    deleted = server.apitool("-d", "1", "1", env={"REMSIM_API_TOKEN": server.tokens["otto"]})
    assert deleted.returncode == 0, deleted.stderr

    audit = http.get("/api/v1/audit?kind=rest", headers=server.as_("vera")).json()
    assert [(e["actor"], e["action"], e["result"]) for e in audit["entries"]] == [
        ("vera", "POST /api/backend/v1/slotmaps", "403"),
        ("otto", "POST /api/backend/v1/slotmaps", "201"),
        ("ada", "POST /api/backend/v1/global-reset", "415"),
        ("ada", "POST /api/backend/v1/global-reset", "403"),
        ("ada", "POST /api/backend/v1/global-reset", "200"),
        ("anonymous", "POST /api/backend/v1/slotmaps", "401"),
        ("otto", "POST /api/backend/v1/slotmaps", "201"),
        ("otto", "DELETE /api/backend/v1/slotmaps/65537", "200"),
    ]
    assert all(e["address"].startswith("127.0.0.1:") for e in audit["entries"])

    with pytest.raises(httpx.HTTPError):  # plain HTTP to the HTTPS port
        httpx.get(f"http://127.0.0.1:{server.port}/healthz", timeout=TIMEOUT)

    assert server.stop() == 0
    log = server.log.read_text()
    assert '"POST /api/backend/v1/slotmaps HTTP/1.1" 403' in log  # uvicorn's access log
    assert not any(token in log for token in server.tokens.values())
