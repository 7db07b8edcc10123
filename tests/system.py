"""The whole remsim system as real processes on one host: the harness of the integration
tests, the demo and the benchmarks.

``RemsimSystem`` runs ``remsim-server`` and ``remsim-bankd`` (against a running
``VirtualSimBank``) on chosen or free ports, talks REST to the server, and starts clients
(``remsim-client-shell`` as a ``ShellClient`` whose stdin/stdout the caller drives, any
other client program as a ``Daemon``). With ``tls`` (a ``TestCA``) every RSPRO link is
mutual TLS: each program gets ``--tls-cert/--tls-key/--tls-ca`` with a certificate naming
it (``urn:remsim:server``, ``urn:remsim:bankd:<bank>``, ``urn:remsim:client:<id>``), and
the REST API is HTTPS.
"""

from __future__ import annotations

import json
import os
import queue
import signal
import socket
import ssl
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any, Literal, TypeVar

from remsim_testing.pki import Credentials, TestCA
from remsim_testing.simbank import VirtualSimBank

REST_PREFIX = "/api/backend/v1"
OWN_PREFIX = "/api/v1"
SELECT_MF = "a0a40000023f00"
SELECT_EF_ICCID = "a0a40000022fe2"
READ_ICCID = "a0b000000a"
BIN = Path(sys.executable).parent
WAIT = 20.0
START_WAIT = 60.0
"""Upper bound in seconds for a remsim program to serve after its start: its imports alone
took 18 s on the busy 2-core test machine (issue 12)."""
STORE_VARIABLES = ("REMSIM_STORE", "REMSIM_STATE_DIR")

D = TypeVar("D", bound="Daemon")


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port nobody listens on right now (the OS picks it)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


def end_process(
    proc: subprocess.Popen[bytes], sig: int = signal.SIGTERM, grace: float = 5.0
) -> int:
    """Send ``sig`` and wait up to ``grace`` seconds; SIGKILL a process that lingers."""
    if proc.poll() is None:
        proc.send_signal(sig)
        try:
            proc.wait(grace)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
    return proc.returncode


def wait_for(condition: Callable[[], Any], what: str, timeout: float = WAIT) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        try:
            value = condition()
        except (OSError, ValueError):
            value = None
        if value:
            return value
        if time.monotonic() > deadline:
            raise TimeoutError(f"timed out after {timeout:.0f} s waiting for {what}")
        time.sleep(0.05)


def server_environment(**extra: str) -> dict[str, str]:
    """This process's environment without the shell's ``REMSIM_STORE``/``REMSIM_STATE_DIR``
    (a server's store is chosen by its flags), plus ``extra``."""
    return {k: v for k, v in os.environ.items() if k not in STORE_VARIABLES} | extra


class Daemon:
    """A remsim program as a child process, its stderr (and stdout unless piped) in a log;
    ``env``: its environment (default: this process's)."""

    def __init__(
        self,
        name: str,
        argv: list[str],
        workdir: Path,
        *,
        pipe_stdio: bool = False,
        env: Mapping[str, str] | None = None,
    ) -> None:
        self.name = name
        self.argv = argv
        self.log = workdir / f"{name}.log"
        self.pipe_stdio = pipe_stdio
        self.env = dict(os.environ if env is None else env)
        self.proc = self._spawn()

    def _spawn(self) -> subprocess.Popen[bytes]:
        with self.log.open("ab") as out:
            return subprocess.Popen(
                self.argv,
                stdin=subprocess.PIPE if self.pipe_stdio else subprocess.DEVNULL,
                stdout=subprocess.PIPE if self.pipe_stdio else out,
                stderr=out,
                env=self.env | {"PYTHONUNBUFFERED": "1"},
            )

    @property
    def running(self) -> bool:
        return self.proc.poll() is None

    def stop(self, sig: int = signal.SIGTERM) -> int:
        end_process(self.proc, sig)
        for pipe in (self.proc.stdin, self.proc.stdout):
            if pipe is not None:
                pipe.close()
        return self.proc.returncode

    def kill(self) -> int:
        return self.stop(signal.SIGKILL)

    def restart(self, sig: int = signal.SIGTERM) -> None:
        """Stop it (``sig``; SIGKILL: as if it crashed) and start it again."""
        self.stop(sig)
        self.proc = self._spawn()

    def tail(self, size: int = 3000) -> str:
        return f"--- {self.name} ---\n" + self.log.read_text(errors="replace")[-size:]


class ShellClient(Daemon):
    """``remsim-client-shell``: hex APDUs on stdin, ``SET_ATR:``/``R-APDU:`` on stdout."""

    def __init__(self, name: str, argv: list[str], workdir: Path) -> None:
        self.lines: queue.Queue[str] = queue.Queue()
        super().__init__(name, argv, workdir, pipe_stdio=True)

    def _spawn(self) -> subprocess.Popen[bytes]:
        proc = super()._spawn()
        threading.Thread(target=self._read, args=(proc,), daemon=True).start()
        return proc

    def _read(self, proc: subprocess.Popen[bytes]) -> None:
        assert proc.stdout is not None
        for line in proc.stdout:
            self.lines.put(line.decode().rstrip("\n"))

    def expect(self, prefix: str, timeout: float = WAIT) -> bytes:
        """The bytes of the next stdout line starting with ``prefix`` (other lines skipped)."""
        deadline = time.monotonic() + timeout
        while True:
            try:
                line = self.lines.get(timeout=max(0.0, deadline - time.monotonic()))
            except queue.Empty:
                raise TimeoutError(f"{self.name}: no {prefix!r} line\n{self.tail()}") from None
            if line.startswith(prefix):
                return bytes.fromhex(line[len(prefix) :])

    def send(self, line: str) -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.write(line.encode() + b"\n")
        self.proc.stdin.flush()

    def transmit(self, apdu: str, timeout: float = WAIT) -> bytes:
        self.send(apdu)
        return self.expect("R-APDU: ", timeout)

    def expect_atr(self, atr: bytes, timeout: float = WAIT) -> None:
        """Wait for ``SET_ATR: <atr>``; the shell prints its local default (3b 00) first."""
        while (seen := self.expect("SET_ATR: ", timeout)) != atr:
            assert seen == b"\x3b\x00", seen.hex()

    def read_iccid(self) -> bytes:
        """EF_ICCID of the card, read with the SIM's class byte (SELECT MF, EF, READ)."""
        assert self.transmit(SELECT_MF)[0] == 0x9F
        assert self.transmit(SELECT_EF_ICCID) == b"\x9f\x0f"
        rsp = self.transmit(READ_ICCID)
        assert rsp[-2:] == b"\x90\x00"
        return rsp[:-2]


class RemsimSystem:
    """remsim-server and remsim-bankd B1 serving the cards of a ``VirtualSimBank`` (the
    first ``num_slots`` of its readers; all by default).

    The server's ``store``: ``memory`` (``--store memory``: nothing kept, the default here),
    ``sqlite`` (``--state-dir``: ``state_dir``, else ``workdir/state``) or ``default`` (no
    store flag: the server's own default, the per-user state directory; point ``HOME`` and
    ``XDG_STATE_HOME`` elsewhere through ``server_env``). The shell's ``REMSIM_STORE`` and
    ``REMSIM_STATE_DIR`` never reach the server."""

    def __init__(
        self,
        bank: VirtualSimBank,
        workdir: Path,
        *,
        rest_port: int | None = None,
        rspro_port: int | None = None,
        bankd_port: int | None = None,
        bank_id: int = 1,
        num_slots: int | None = None,
        tls: TestCA | None = None,
        store: Literal["memory", "sqlite", "default"] = "memory",
        state_dir: Path | None = None,
        server_env: Mapping[str, str] | None = None,
    ) -> None:
        assert state_dir is None or store == "sqlite", "a state_dir is for store sqlite"
        self.bank = bank
        self.store = store
        self.state_dir = (state_dir or workdir / "state") if store == "sqlite" else None
        self.server_env = dict(server_env or {})
        self.tls = tls
        self._credentials: dict[str, Credentials] = {}
        self.workdir = workdir
        self.bank_id = bank_id
        self.readers = bank.readers[:num_slots]
        self.rest_port = rest_port or free_port()
        self.rspro_port = rspro_port or free_port()
        self.bankd_port = bankd_port or free_port()
        self.rest_url = f"http://127.0.0.1:{self.rest_port}{REST_PREFIX}"
        self._rest_tls: ssl.SSLContext | None = None
        self.rest_token: str | None = None
        """The bearer token ``rest`` sends (``REMSIM_API_TOKENS`` in ``server_env``)."""
        if tls is not None:  # HTTPS with the server's certificate, which names localhost
            self.rest_url = f"https://localhost:{self.rest_port}{REST_PREFIX}"
            self._rest_tls = ssl.create_default_context(cafile=tls.ca_file)
        self.server: Daemon | None = None
        self.bankd: Daemon | None = None
        self.clients: list[Daemon] = []

    # --- processes ----------------------------------------------------------------------

    def start_server(self) -> Daemon:
        self.server = Daemon("server", [
            str(BIN / "remsim-server"), "--rest-host", "127.0.0.1",
            "--rest-port", str(self.rest_port), "--rspro-host", "127.0.0.1",
            "--rspro-port", str(self.rspro_port), "--bankd-port", str(self.bankd_port),
            *self.tls_options("server", "urn:remsim:server"), *self.store_options(),
        ], self.workdir, env=server_environment(**self.server_env))  # fmt: skip
        self.wait(lambda: self.rest("GET", "/banks")[0] == 200, "the server's REST API", START_WAIT)
        return self.server

    def store_options(self) -> list[str]:
        if self.store == "memory":
            return ["--store", "memory"]
        if self.state_dir is not None:
            return ["--state-dir", str(self.state_dir)]
        return []

    def start_bankd(self, options: Sequence[str] = ()) -> Daemon:
        """remsim-bankd B<bank_id> on this system's readers, with the bankd's own ``options``
        (e.g. ``--metrics-port``)."""
        slots = self.workdir / "bankd_pcsc_slots.csv"
        slots.write_text(
            "".join(f'"{self.bank_id}","{i}","{r}"\n' for i, r in enumerate(self.readers))
        )
        # The bankd finds the bank's pcscd through PCSCLITE_CSOCK_NAME, inherited.
        self.bankd = Daemon("bankd", [
            str(BIN / "remsim-bankd"), "-i", "127.0.0.1", "-p", str(self.rspro_port),
            "-b", str(self.bank_id), "-n", str(len(self.readers)), "-I", "127.0.0.1",
            "-P", str(self.bankd_port), "--slots-csv", str(slots),
            *self.tls_options(f"bankd-{self.bank_id}", f"urn:remsim:bankd:{self.bank_id}"),
            *options,
        ], self.workdir)  # fmt: skip
        self.wait_bank_connected()
        return self.bankd

    def start_client(
        self, program: str, client_id: int, slot: int = 0, options: Sequence[str] = ()
    ) -> Daemon:
        """``program`` (remsim-client-vpcd, remsim-client-st2, ...) as client
        C<client_id>:<slot> of this system's server, with the program's own ``options``."""
        return self._start_client(Daemon, program, client_id, slot, options)

    def start_shell_client(self, client_id: int, slot: int = 0) -> ShellClient:
        return self._start_client(ShellClient, "remsim-client-shell", client_id, slot, ())

    def _start_client(
        self, kind: type[D], program: str, client_id: int, slot: int, options: Sequence[str]
    ) -> D:
        client = kind(f"client-C{client_id}:{slot}", [
            str(BIN / program), "-i", "127.0.0.1", "-p", str(self.rspro_port),
            "-c", str(client_id), "-n", str(slot),
            *self.tls_options(f"client-{client_id}", f"urn:remsim:client:{client_id}"), *options,
        ], self.workdir)  # fmt: skip
        self.clients.append(client)
        return client

    def tls_options(self, name: str, *uris: str) -> list[str]:
        """``--tls-cert/--tls-key/--tls-ca`` of a certificate ``name`` naming ``uris`` (issued
        on first use), or nothing without TLS."""
        if self.tls is None:
            return []
        if name not in self._credentials:
            self._credentials[name] = self.tls.issue(name, *uris)
        c = self._credentials[name]
        return ["--tls-cert", str(c.cert), "--tls-key", str(c.key), "--tls-ca", str(c.ca)]

    def start(self) -> RemsimSystem:
        self.start_server()
        self.start_bankd()
        return self

    def stop(self) -> None:
        for daemon in [*self.clients, self.bankd, self.server]:
            if daemon is not None:
                daemon.stop()

    def __enter__(self) -> RemsimSystem:
        try:
            return self.start()
        except BaseException:
            self.stop()  # whatever did start
            raise

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # --- REST -----------------------------------------------------------------------------

    def rest(self, method: str, path: str, body: object = None) -> tuple[int, Any]:
        """``path`` under the original's prefix, or one of remsim's own (``/api/v1/...``)."""
        own = path.startswith(OWN_PREFIX + "/")
        request = urllib.request.Request(
            (self.rest_url.removesuffix(REST_PREFIX) if own else self.rest_url) + path,
            data=None if body is None else json.dumps(body).encode(),
            headers={"Content-Type": "application/json"}
            | ({"Authorization": f"Bearer {self.rest_token}"} if self.rest_token else {}),
            method=method,
        )
        try:
            with urllib.request.urlopen(request, timeout=5, context=self._rest_tls) as response:
                status, data = response.status, response.read()
        except urllib.error.HTTPError as err:
            status, data = err.code, err.read()
        return status, json.loads(data) if data else None

    def map(self, bank_slot: int, client_id: int, client_slot: int = 0) -> dict[str, Any]:
        status, body = self.rest("POST", "/slotmaps", {
            "bank": {"bankId": self.bank_id, "slotNr": bank_slot},
            "client": {"clientId": client_id, "slotNr": client_slot},
        })  # fmt: skip
        assert status == 201, body
        return dict(body)

    def unmap(self, bank_slot: int) -> None:
        status, body = self.rest("DELETE", f"/slotmaps/{self.bank_id << 16 | bank_slot}")
        assert status == 200, body

    def slotmap_state(self, bank_slot: int) -> str | None:
        status, body = self.rest("GET", f"/slotmaps/{self.bank_id << 16 | bank_slot}")
        return str(body["state"]) if status == 200 else None

    def wait_bank_connected(self) -> None:
        """Until the server lists this system's bank (a bankd just started: ``START_WAIT``)."""
        self.wait(
            lambda: self.rest("GET", f"/banks/{self.bank_id}")[0] == 200, "the bankd", START_WAIT
        )

    def wait(self, condition: Callable[[], Any], what: str, timeout: float = WAIT) -> Any:
        try:
            return wait_for(condition, what, timeout)
        except TimeoutError as exc:
            raise TimeoutError(f"{exc}\n{self.logs()}") from None

    def logs(self) -> str:
        daemons = [d for d in [self.server, self.bankd, *self.clients] if d is not None]
        by_log = {d.log: d for d in daemons}  # a client started again writes the same log
        return "\n".join(d.tail() for d in by_log.values())
