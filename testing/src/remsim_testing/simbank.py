"""A virtual SIM bank for tests, the demo and benchmarks: pcscd + vpcd + remsim-vcard.

    with VirtualSimBank() as bank:          # card0.json and card1.json
        bank.readers                        # ['Virtual PCD 00 00', 'Virtual PCD 00 01']
        bank.stop_card(0); bank.start_card(0)

One pcscd is started with a private reader.conf holding one vpcd entry (two slots: card i
connects to TCP port `base_port + i`), and one `remsim-vcard` process per profile: at most
two cards, readers "Virtual PCD 00 00" and "Virtual PCD 00 01". (Debian's vpcd 0.8 keeps
its slot state per driver, not per reader: a second vpcd entry in the same pcscd mixes up
the slots of both, observed.)

pcscd 1.9.9 always serves its clients at /run/pcscd/pcscd.comm. Two modes:

* isolated (default where possible, i.e. as root with `unshare`): pcscd runs in a private
  mount namespace in which /run/pcscd is a private directory, so its socket is
  `socket_path` on the host, any other pcscd on the machine is left alone, and several
  banks (with different ports) may run at once. PC/SC clients find it through the
  environment variable PCSCLITE_CSOCK_NAME (libpcsclite reads it once per process, at the
  first PC/SC call): if unset, `start()` sets it in os.environ (inherited by child
  processes, so a bankd started afterwards sees this bank); `env` holds it for others.
* shared (`isolated=False`): pcscd uses the standard /run/pcscd/pcscd.comm. If a pcscd is
  already running there, `start()` fails with `TestbedError` (it never stops a pcscd it did
  not start).

pcscd and the cards die with the process that started them, also when it is killed: they
are forked by one long-lived thread (see `_Spawner`), so a bank may be started and its cards
restarted from any thread.
"""

from __future__ import annotations

import ctypes
import functools
import os
import queue
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Sequence
from concurrent.futures import Future
from pathlib import Path
from types import TracebackType

from remsim_bankd.errors import BankdError
from remsim_bankd.sim.profile import CardProfile

__all__ = [
    "PROFILES_DIR",
    "SYSTEM_SOCKET",
    "VPCD_DRIVER",
    "VPCD_SLOTS",
    "ReaderConnection",
    "TestbedError",
    "VirtualSimBank",
    "can_isolate",
    "default_profiles",
    "missing_requirements",
]

VPCD_DRIVER = Path("/usr/lib/pcsc/drivers/serial/libifdvpcd.so")
SYSTEM_SOCKET = "/run/pcscd/pcscd.comm"
# The bankd's example profiles, in the workspace next to its sources.
PROFILES_DIR = Path(__file__).resolve().parents[3] / "services" / "bankd" / "profiles"
VPCD_SLOTS = 2  # vpcd's compile-time VPCDSLOTS: cards per bank


class TestbedError(BankdError, RuntimeError):
    """The virtual SIM bank could not be started or did not reach the expected state."""

    __test__ = False  # not a pytest test class despite the name


def default_profiles() -> list[Path]:
    """card0.json and card1.json: the two cards of the upstream recordings."""
    return [PROFILES_DIR / "card0.json", PROFILES_DIR / "card1.json"]


def missing_requirements() -> str | None:
    """Why a virtual SIM bank cannot run here, or None."""
    if shutil.which("pcscd") is None:
        return "pcscd is not installed (Debian: apt-get install pcscd)"
    if not VPCD_DRIVER.exists():
        return f"{VPCD_DRIVER} missing (Debian: apt-get install vsmartcard-vpcd)"
    try:
        import smartcard.scard  # noqa: F401
    except ImportError as e:
        return f"pyscard unusable: {e}"
    if not can_isolate() and os.geteuid() != 0:
        return "pcscd needs root (or a private mount namespace via unshare)"
    return None


_isolate_ok: bool | None = None


def can_isolate() -> bool:
    """Whether pcscd can be given a private /run/pcscd (root and a working `unshare`)."""
    global _isolate_ok
    if _isolate_ok is None:
        tool = shutil.which("unshare")
        _isolate_ok = (
            tool is not None
            and os.geteuid() == 0
            and subprocess.run(
                [tool, "--mount", "--propagation", "private", "true"],
                capture_output=True,
                check=False,
            ).returncode
            == 0
        )
    return _isolate_ok


def _free_base_port(count: int) -> int:
    """A port p with p .. p+count-1 all free (vpcd binds them on all interfaces)."""
    for _ in range(100):
        with socket.socket() as s:
            s.bind(("0.0.0.0", 0))
            base = int(s.getsockname()[1])
        if base + count <= 65535 and _ports_free(base, count):
            return base
    raise TestbedError(f"no {count} consecutive free TCP ports found")


def _ports_free(base: int, count: int) -> bool:
    socks: list[socket.socket] = []
    try:
        for port in range(base, base + count):
            s = socket.socket()
            socks.append(s)
            s.bind(("0.0.0.0", port))
        return True
    except OSError:
        return False
    finally:
        for s in socks:
            s.close()


def _socket_alive(path: str) -> bool:
    with socket.socket(socket.AF_UNIX) as s:
        try:
            s.connect(path)
        except OSError:
            return False
        return True


_PR_SET_PDEATHSIG = 1


def _die_with_parent(parent: int) -> None:
    # Runs in the child between fork and exec: SIGTERM it when the test process dies, so a
    # crashed test run leaves no pcscd holding the vpcd ports.
    ctypes.CDLL(None, use_errno=True).prctl(_PR_SET_PDEATHSIG, signal.SIGTERM)
    if os.getppid() != parent:  # the parent died before prctl: nobody would signal us
        os.kill(os.getpid(), signal.SIGTERM)


def _popen(cmd: list[str], log: Path) -> subprocess.Popen[bytes]:
    with open(log, "ab") as logfile:
        return subprocess.Popen(
            cmd,
            stdin=subprocess.DEVNULL,
            stdout=logfile,
            stderr=subprocess.STDOUT,
            preexec_fn=functools.partial(_die_with_parent, os.getpid()),
        )


_SpawnJob = tuple[list[str], Path, Future[subprocess.Popen[bytes]]]


class _Spawner:
    """Forks every child of the test bed from one thread that lives as long as the process.

    PR_SET_PDEATHSIG signals a child when the *thread* that forked it ends, not the process:
    a card started from a short-lived worker thread would die with that thread. Forked from
    this thread, the children die exactly when the process does.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._jobs: queue.SimpleQueue[_SpawnJob] = queue.SimpleQueue()
        self._thread: threading.Thread | None = None

    def popen(self, cmd: list[str], log: Path) -> subprocess.Popen[bytes]:
        """Start ``cmd`` (stdout and stderr appended to ``log``) and return its process."""
        job: Future[subprocess.Popen[bytes]] = Future()
        with self._lock:
            if self._thread is None or not self._thread.is_alive():  # first use, or forked
                self._thread = threading.Thread(
                    target=self._run, name="simbank-spawner", daemon=True
                )
                self._thread.start()
            self._jobs.put((cmd, log, job))
        return job.result()

    def _run(self) -> None:
        while True:
            cmd, log, job = self._jobs.get()
            try:
                job.set_result(_popen(cmd, log))
            except BaseException as exc:
                job.set_exception(exc)


_spawner = _Spawner()


class VirtualSimBank:
    """pcscd with vpcd readers and one software SIM (`remsim-vcard`) per profile.

    Context manager; `start()`/`stop()` do the same by hand. Attributes after start:
    `readers` (reader name of card i), `ports` (vpcd port of card i), `socket_path`,
    `env` (environment for PC/SC clients in other processes), `pcscd` and `vcards[i]`
    (the `subprocess.Popen` objects; `vcards[i]` is None while card i is stopped),
    `workdir` (reader.conf, logs, profile copies).
    """

    def __init__(
        self,
        profiles: Sequence[CardProfile | str | Path] | None = None,
        *,
        base_port: int | None = None,
        host: str = "127.0.0.1",
        isolated: bool | None = None,
        socket_path: str | None = None,
        ready_timeout: float = 15.0,
        reconnect_interval: float = 0.2,
        vcard_log_level: str = "INFO",
    ) -> None:
        """`base_port` None picks free ports (35963 is what the recordings used);
        `isolated` None isolates when `can_isolate()`; `socket_path` (isolated mode, must end
        in /pcscd.comm) defaults to $PCSCLITE_CSOCK_NAME or one in the work directory."""
        self.profiles = list(default_profiles() if profiles is None else profiles)
        if not 1 <= len(self.profiles) <= VPCD_SLOTS:
            raise ValueError(f"a virtual SIM bank holds 1..{VPCD_SLOTS} cards")
        self.host = host
        self.isolated = can_isolate() if isolated is None else isolated
        self.ready_timeout = ready_timeout
        self.reconnect_interval = reconnect_interval
        self.vcard_log_level = vcard_log_level
        self._base_port = base_port
        self._socket_path = socket_path
        self.workdir: Path | None = None
        self.socket_path = ""
        self.ports: list[int] = []
        self.readers = [self.reader_name(i) for i in range(len(self.profiles))]
        self.pcscd: subprocess.Popen[bytes] | None = None
        self.vcards: list[subprocess.Popen[bytes] | None] = [None] * len(self.profiles)
        self._profile_files: list[Path] = []
        self._set_env = False

    @staticmethod
    def reader_name(index: int) -> str:
        """PC/SC name of the reader of card `index`."""
        return f"Virtual PCD 00 {index:02X}"

    @property
    def env(self) -> dict[str, str]:
        """Environment entries a PC/SC client process needs to reach this bank's pcscd."""
        return {"PCSCLITE_CSOCK_NAME": self.socket_path} if self.isolated else {}

    # --- life cycle -------------------------------------------------------------------------

    def __enter__(self) -> VirtualSimBank:
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    def start(self) -> None:
        reason = missing_requirements()
        if reason:
            raise TestbedError(reason)
        self.workdir = Path(tempfile.mkdtemp(prefix="remsim-vsb-"))
        try:
            self._prepare()
            self._start_pcscd()
            for i in range(len(self.profiles)):
                self.start_card(i, wait=False)
            self.wait_ready()
        except BaseException:
            self.stop()
            raise

    def stop(self) -> None:
        """Stop the cards and pcscd; remove the work directory. Idempotent."""
        for i in range(len(self.vcards)):
            self.stop_card(i, wait=False)
        self._stop_pcscd()
        if self._set_env:
            os.environ.pop("PCSCLITE_CSOCK_NAME", None)
            self._set_env = False
        if self.workdir is not None:
            shutil.rmtree(self.workdir, ignore_errors=True)
            self.workdir = None

    def _prepare(self) -> None:
        assert self.workdir is not None
        n = len(self.profiles)
        base = self._base_port
        if base is None:
            base = _free_base_port(VPCD_SLOTS)
        elif not _ports_free(base, VPCD_SLOTS):
            raise TestbedError(f"TCP ports {base}..{base + VPCD_SLOTS - 1} are not all free")
        self.ports = [base + i for i in range(n)]

        confdir = self.workdir / "reader.conf.d"
        confdir.mkdir()
        # As Debian's /etc/reader.conf.d/vpcd, with our port: slot n listens on port + n.
        (confdir / "vpcd").write_text(
            'FRIENDLYNAME "Virtual PCD"\n'
            f"DEVICENAME   /dev/null:{base}\n"
            f"LIBPATH      {VPCD_DRIVER}\n"
            f"CHANNELID    {base}\n"
        )
        self._profile_files = [
            self._profile_file(p, f"card{i}") for i, p in enumerate(self.profiles)
        ]

        if self.isolated:
            path = self._socket_path or os.environ.get("PCSCLITE_CSOCK_NAME")
            if not path:
                path = str(self.workdir / "run" / "pcscd.comm")
            if os.path.basename(path) != "pcscd.comm":
                raise TestbedError(f"socket path {path} must end in /pcscd.comm (pcscd's name)")
            env_path = os.environ.get("PCSCLITE_CSOCK_NAME")
            if env_path is None:
                os.environ["PCSCLITE_CSOCK_NAME"] = path
                self._set_env = True
            elif env_path != path:
                raise TestbedError(
                    f"PCSCLITE_CSOCK_NAME is {env_path}, not {path}: this process would talk "
                    "to another pcscd"
                )
        else:
            path = SYSTEM_SOCKET
            if os.environ.get("PCSCLITE_CSOCK_NAME", path) != path:
                raise TestbedError("PCSCLITE_CSOCK_NAME points away from the system pcscd")
        if _socket_alive(path):
            raise TestbedError(
                f"a pcscd is already serving {path}; this bank does not stop pcscds it did "
                "not start (stop it, e.g. `systemctl stop pcscd.socket pcscd`, or use "
                "isolated mode)"
            )
        self.socket_path = path

    def _start_pcscd(self) -> None:
        assert self.workdir is not None
        confdir = self.workdir / "reader.conf.d"
        pcscd = shutil.which("pcscd") or "pcscd"
        rundir = os.path.dirname(self.socket_path)
        os.makedirs(rundir, exist_ok=True)
        if self.isolated:
            os.makedirs("/run/pcscd", exist_ok=True)  # the mount point
            script = 'mount --bind "$0" /run/pcscd && exec "$1" -f -c "$2"'
            cmd = ["unshare", "--mount", "--propagation", "private"]
            cmd += ["sh", "-c", script, rundir, pcscd, str(confdir)]
        else:
            cmd = [pcscd, "-f", "-c", str(confdir)]
        self.pcscd = _spawner.popen(cmd, self.workdir / "pcscd.log")
        deadline = time.monotonic() + self.ready_timeout
        while not _socket_alive(self.socket_path):
            if self.pcscd.poll() is not None:
                raise TestbedError(f"pcscd exited with {self.pcscd.returncode}\n{self._logs()}")
            if time.monotonic() > deadline:
                raise TestbedError(f"pcscd did not open {self.socket_path}\n{self._logs()}")
            time.sleep(0.02)

    def _stop_pcscd(self) -> None:
        proc, self.pcscd = self.pcscd, None
        if proc is not None:
            _terminate(proc)

    def restart_pcscd(self, wait: bool = True) -> None:
        """Stop and start pcscd (the cards reconnect by themselves); PC/SC handles die."""
        self._stop_pcscd()
        self._start_pcscd()
        if wait:
            self.wait_ready()

    # --- cards --------------------------------------------------------------------------------

    def _profile_file(self, profile: CardProfile | str | Path, name: str) -> Path:
        assert self.workdir is not None
        if isinstance(profile, CardProfile):
            file = self.workdir / f"{name}.json"
            file.write_text(profile.model_dump_json(indent=2))
            return file
        return Path(profile).resolve()

    def start_card(
        self, index: int, wait: bool = True, profile: CardProfile | str | Path | None = None
    ) -> None:
        """Start card `index`'s remsim-vcard (insert the card); wait until pcscd sees it.

        `profile`: insert this card instead of the bank's card `index` (this time only).
        Any thread may call this: the card lives on after the calling thread ends."""
        assert self.workdir is not None, "bank not started"
        if self.vcards[index] is not None:
            return
        file = self._profile_files[index]
        if profile is not None:
            file = self._profile_file(profile, f"card{index}-{time.monotonic_ns()}")
        cmd = [
            sys.executable,
            "-m",
            "remsim_bankd.vcard",
            "--profile",
            str(file),
            "--host",
            self.host,
            "--port",
            str(self.ports[index]),
            "--reconnect-interval",
            str(self.reconnect_interval),
            "--log-level",
            self.vcard_log_level,
        ]
        self.vcards[index] = _spawner.popen(cmd, self.workdir / f"vcard{index}.log")
        if wait:
            self.wait_card(index, present=True)

    def stop_card(self, index: int, wait: bool = True) -> None:
        """Stop card `index`'s remsim-vcard (remove the card); wait until pcscd notices."""
        proc, self.vcards[index] = self.vcards[index], None
        if proc is not None:
            _terminate(proc)
        if wait:
            self.wait_card(index, present=False)

    def card_present(self, index: int) -> bool:
        """Whether pcscd reports a card in reader `index` now."""
        states = _reader_states() or {}
        return _present(states.get(self.readers[index]))

    def wait_card(self, index: int, present: bool = True, timeout: float | None = None) -> None:
        reader = self.readers[index]
        self._wait(
            lambda s: reader in s and _present(s[reader]) == present,
            f"card {index} {'present' if present else 'absent'} in {reader!r}",
            timeout,
        )

    def wait_ready(self, timeout: float | None = None) -> None:
        """Wait until every reader exists and every running card is present in it."""

        def ready(states: dict[str, int]) -> bool:
            return all(
                r in states and (self.vcards[i] is None or _present(states[r]))
                for i, r in enumerate(self.readers)
            )

        self._wait(ready, f"readers {self.readers} with their cards", timeout)

    def _wait(
        self, cond: Callable[[dict[str, int]], bool], what: str, timeout: float | None
    ) -> None:
        deadline = time.monotonic() + (self.ready_timeout if timeout is None else timeout)
        states: dict[str, int] | None = None
        while True:
            states = _reader_states()
            if states is not None and cond(states):
                return
            if self.pcscd is None or self.pcscd.poll() is not None:
                raise TestbedError(f"pcscd is not running while waiting for {what}\n{self._logs()}")
            if time.monotonic() > deadline:
                seen = {r: _describe(s) for r, s in (states or {}).items()}
                raise TestbedError(
                    f"timed out waiting for {what}; pcscd at {self.socket_path} shows {seen} "
                    "(if this process used PC/SC before PCSCLITE_CSOCK_NAME was set, "
                    f"libpcsclite talks to another pcscd)\n{self._logs()}"
                )
            time.sleep(0.05)

    def _logs(self, lines: int = 15) -> str:
        if self.workdir is None:
            return ""
        out = []
        for path in sorted(self.workdir.glob("*.log")):
            tail = path.read_text(errors="replace").splitlines()[-lines:]
            out.append(f"--- {path.name} ---\n" + "\n".join(tail))
        return "\n".join(out)


def _terminate(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(5)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def _present(state: int | None) -> bool:
    from smartcard import scard

    return (
        state is not None
        and bool(state & scard.SCARD_STATE_PRESENT)
        and not state & scard.SCARD_STATE_MUTE
    )


def _describe(state: int) -> str:
    from smartcard import scard

    names = ("EMPTY", "PRESENT", "MUTE", "INUSE", "EXCLUSIVE", "UNAVAILABLE")
    return "|".join(n for n in names if state & getattr(scard, f"SCARD_STATE_{n}")) or hex(state)


def _reader_states() -> dict[str, int] | None:
    """Reader name → state flags as pcscd reports them now; None if pcscd is unreachable."""
    from smartcard import scard

    hr, ctx = scard.SCardEstablishContext(scard.SCARD_SCOPE_USER)
    if hr != scard.SCARD_S_SUCCESS:
        return None
    try:
        hr, readers = scard.SCardListReaders(ctx, [])
        if hr != scard.SCARD_S_SUCCESS or not readers:
            return {}
        hr, states = scard.SCardGetStatusChange(
            ctx, 0, [(r, scard.SCARD_STATE_UNAWARE) for r in readers]
        )
        if hr != scard.SCARD_S_SUCCESS:
            return {}
        return {name: state for name, state, _atr in states}
    finally:
        scard.SCardReleaseContext(ctx)


class ReaderConnection:
    """A PC/SC application's view of one reader (pyscard, T=0 unless ``protocol`` says
    otherwise, e.g. ``CardConnection.T1_protocol``): C-APDU in, data + SW out."""

    def __init__(self, reader_name: str, protocol: int | None = None) -> None:
        from smartcard.CardConnection import CardConnection
        from smartcard.System import readers

        reader = next(r for r in readers() if str(r) == reader_name)
        self.conn = reader.createConnection()
        self.conn.connect(CardConnection.T0_protocol if protocol is None else protocol)
        self.protocol = self.conn.getProtocol()
        self.atr = bytes(self.conn.getATR())

    def tx(self, apdu: bytes | str) -> bytes:
        if isinstance(apdu, str):
            apdu = bytes.fromhex(apdu)
        data, sw1, sw2 = self.conn.transmit(list(apdu))
        return bytes([*data, sw1, sw2])

    def cold_reset(self) -> None:
        """SCardReconnect(SCARD_UNPOWER_CARD): vpcd sees POWER OFF, POWER ON."""
        from smartcard.scard import SCARD_UNPOWER_CARD

        self.conn.reconnect(disposition=SCARD_UNPOWER_CARD)

    def close(self) -> None:
        try:
            self.conn.disconnect()
        finally:
            self.conn.release()
