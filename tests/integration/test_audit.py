"""The audit log as an operator reads it: after a scripted session against the real
``remsim-server`` (mutual TLS, tokens, the embedded store), ``GET /api/v1/audit`` lists
every POST and DELETE with its token name and every refused RSPRO identity, and the entries
are still there after kill -9 and a restart."""

from __future__ import annotations

import asyncio
import os
import signal
import ssl
import subprocess
import sys
from pathlib import Path
from typing import Any

import httpx
import pytest

import rspro
from remsim_common.pki import issue_files
from remsim_testing.pki import TestCA
from remsim_testing.rspro_peers import ScriptedConnection
from remsim_testing.server import BANKD_IDENTITY
from tests.system import end_process, free_port, wait_for

pytestmark = pytest.mark.integration

BIN = Path(sys.executable).parent
MAP = {"bank": {"bankId": 1, "slotNr": 0}, "client": {"clientId": 23, "slotNr": 0}}
TIMEOUT = 10.0


class Server:
    """``remsim-server`` with TLS, tokens and a state directory; restartable."""

    def __init__(self, tmp_path: Path) -> None:
        self.ca = TestCA(tmp_path / "pki")
        cert, key = issue_files(
            self.ca.authority, self.ca.directory, "server", ["urn:remsim:server"],
            dns=["localhost"], ips=["127.0.0.1"],
        )  # fmt: skip
        tokens = tmp_path / "api-tokens"
        self.tokens = {}
        for name, role in [("vera", "viewer"), ("otto", "operator")]:
            done = subprocess.run(
                [str(BIN / "remsim-pki"), "token", name, "--role", role, "--file", str(tokens)],
                capture_output=True, text=True, timeout=TIMEOUT, check=True,
            )  # fmt: skip
            self.tokens[name] = done.stdout.strip()
        self.rest, self.rspro = free_port(), free_port()
        self.argv = [
            str(BIN / "remsim-server"),
            "--rspro-host", "127.0.0.1", "--rspro-port", str(self.rspro),
            "--rest-host", "127.0.0.1", "--rest-port", str(self.rest),
            "--tls-cert", str(cert), "--tls-key", str(key), "--tls-ca", str(self.ca.ca_file),
            "--api-tokens", str(tokens), "--state-dir", str(tmp_path / "state"),
        ]  # fmt: skip
        self.log = tmp_path / "server.log"
        self.https = httpx.Client(
            base_url=f"https://127.0.0.1:{self.rest}",
            verify=ssl.create_default_context(cafile=str(self.ca.ca_file)),
            timeout=TIMEOUT,
        )
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        with self.log.open("ab") as log:
            self.proc = subprocess.Popen(
                self.argv, stdout=log, stderr=log, env=os.environ | {"PYTHONUNBUFFERED": "1"}
            )
        wait_for(self._healthy, "the server's HTTPS")

    def _healthy(self) -> bool:
        assert self.proc is not None and self.proc.poll() is None, self.log.read_text()
        try:
            return self.https.get("/healthz").status_code == 200
        except httpx.TransportError:
            return False

    def as_(self, name: str) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.tokens[name]}"}

    def audit(self, **query: Any) -> list[dict[str, Any]]:
        answer = self.https.get("/api/v1/audit", params=query, headers=self.as_("vera"))
        assert answer.status_code == 200, answer.text
        entries: list[dict[str, Any]] = answer.json()["entries"]
        return entries

    def stop(self, sig: int = signal.SIGTERM) -> None:
        if self.proc is not None:
            end_process(self.proc, sig)


async def _false_bankd(server: Server) -> None:
    """A bankd certificate for B2 claiming B1: refused, and the connection closed."""
    context = server.ca.issue("bankd-2", "urn:remsim:bankd:2").security().client_context
    fake = await ScriptedConnection.connect(server.rspro, ssl=context)
    try:
        fake.send(rspro.ConnectBankReq(BANKD_IDENTITY, bank_id=1, number_of_slots=2))
        answer, _ = await fake.expect(rspro.ConnectBankRes)
        assert answer.result is rspro.ResultCode.ILLEGAL_BANK_ID
        await fake.expect_closed(TIMEOUT)
    finally:
        await fake.aclose()


def test_the_audit_lists_the_session_and_survives_kill_9(tmp_path: Path) -> None:
    server = Server(tmp_path)
    server.start()
    try:
        assert server.https.post("/api/backend/v1/slotmaps", json=MAP).status_code == 401
        viewer = server.https.post("/api/backend/v1/slotmaps", json=MAP, headers=server.as_("vera"))
        assert viewer.status_code == 403
        created = server.https.post(
            "/api/backend/v1/slotmaps", json=MAP, headers=server.as_("otto")
        )
        assert created.status_code == 201
        deleted = server.https.delete("/api/backend/v1/slotmaps/65536", headers=server.as_("otto"))
        assert deleted.status_code == 200
        asyncio.run(_false_bankd(server))
        before = server.audit(limit=1000)

        rest = [e for e in before if e["kind"] == "rest"]
        assert [(e["actor"], e["action"], e["result"]) for e in rest] == [
            ("anonymous", "POST /api/backend/v1/slotmaps", "401"),
            ("vera", "POST /api/backend/v1/slotmaps", "403"),
            ("otto", "POST /api/backend/v1/slotmaps", "201"),
            ("otto", "DELETE /api/backend/v1/slotmaps/65536", "200"),
        ]
        assert all(e["address"].startswith("127.0.0.1") for e in rest)
        refused = [e for e in before if e["kind"] == "identity" and e["result"] == "refused"]
        assert len(refused) == 1 and refused[0]["bank_id"] == 1
        assert "bankd-2" in refused[0]["actor"] and refused[0]["address"].startswith("127.0.0.1")
        assert server.audit(kind="identity") == [refused[0]]

        server.stop(signal.SIGKILL)
        server.start()
        after = server.audit(limit=1000)
        assert after[: len(before)] == before  # nothing lost, nothing changed
        assert all(token not in server.log.read_text() for token in server.tokens.values())
    finally:
        server.stop()
        server.https.close()
