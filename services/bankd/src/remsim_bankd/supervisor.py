"""``remsim-bankd-supervisor``: the bankd image's entry point, supervising the card side.

    remsim-bankd-supervisor -i server -p 9998 -n 2 --log-format json   # remsim-bankd's arguments

It starts pcscd (for the ``pcsc`` card driver), one ``remsim-vcard`` per software SIM and
``remsim-bankd`` with its own arguments. A pcscd or ``remsim-vcard`` that dies is started
again after ``restart_delay`` seconds (doubled after each death within ``STABLE_RUN`` of its
start, up to ``RESTART_DELAY_MAX``); while pcscd is down the bankd's ``/readyz`` says so
(``pcscd``/``readers`` checks). When ``remsim-bankd`` ends the supervisor stops the others
and exits with its status: the container ends with the bankd and its restart policy decides.
SIGTERM/SIGINT stop the bankd first (it powers its cards down through pcscd), then the rest.
As PID 1 it also reaps orphaned processes.

Its own settings come from the environment only (its arguments are the bankd's):

- ``REMSIM_VCARD_PROFILES``: software SIM profiles, separated by spaces, at most two (one
  vpcd entry has two slots). With them it writes pcscd's vpcd entry
  (``REMSIM_READER_CONF_DIR``/vpcd, ports ``REMSIM_VPCD_PORT`` and the next) and the bankd's
  slot file (readers "Virtual PCD 00 00" and "... 00 01" in bank ``--bank-id``'s slots 0, 1).
- ``REMSIM_VPCD_PORT`` (35963), ``REMSIM_PCSCD_COMMAND`` (``pcscd --foreground --error``),
  ``REMSIM_READER_CONF_DIR`` (/etc/reader.conf.d), ``REMSIM_RESTART_DELAY`` (seconds).

Logging (format, level) is the bankd's, also for the ``remsim-vcard`` processes.
"""

from __future__ import annotations

import argparse
import ctypes
import logging
import os
import shlex
import signal
import subprocess
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any

from pydantic import Field, field_validator
from pydantic_settings import NoDecode, SettingsConfigDict

from remsim_common import CommonSettings, Program
from vpcd import VPCD_PORT

from .config import BankdSettings, parse_args

__all__ = [
    "PCSCD_COMMAND",
    "PROGRAM",
    "READER_CONF_DIR",
    "RESTART_DELAY",
    "RESTART_DELAY_MAX",
    "STABLE_RUN",
    "STOP_TIMEOUT",
    "VPCD_SLOTS",
    "Child",
    "Supervisor",
    "SupervisorSettings",
    "main",
]

log = logging.getLogger("remsim.bankd.supervisor")

PROGRAM = Program("remsim-bankd-supervisor", "remsim-bankd")

PCSCD_COMMAND = "pcscd --foreground --error"
READER_CONF_DIR = Path("/etc/reader.conf.d")
"""Where Debian's pcscd reads its serial readers' entries (the vpcd one among them)."""
VPCD_SLOTS = 2
"""Readers of one vpcd entry (vpcd's compile-time VPCDSLOTS): software SIMs at most."""
RESTART_DELAY = 1.0
"""Seconds before a dead pcscd or remsim-vcard is started again."""
RESTART_DELAY_MAX = 30.0
"""The longest pause between two starts of a process that keeps dying at once."""
STABLE_RUN = 10.0
"""Seconds a process must have run for its next restart to wait ``restart_delay`` again."""
STOP_TIMEOUT = 10.0
"""Seconds each process has to end after SIGTERM before it is killed."""

_SIGNALS = {signal.SIGCHLD, signal.SIGTERM, signal.SIGINT}
_PR_SET_PDEATHSIG = 1


class SupervisorSettings(CommonSettings):
    """The supervisor's own settings: environment variables ``REMSIM_<FIELD>``."""

    model_config = SettingsConfigDict(env_prefix="REMSIM_", extra="forbid")

    vcard_profiles: Annotated[list[Path], NoDecode] = Field(
        default_factory=list, max_length=VPCD_SLOTS
    )
    vpcd_port: int = Field(default=VPCD_PORT, ge=1, le=65535 - VPCD_SLOTS + 1)
    pcscd_command: str = Field(default=PCSCD_COMMAND, min_length=1)
    reader_conf_dir: Path = READER_CONF_DIR
    restart_delay: float = Field(default=RESTART_DELAY, gt=0)

    @field_validator("vcard_profiles", mode="before")
    @classmethod
    def _split(cls, value: Any) -> Any:
        return value.split() if isinstance(value, str) else value


@dataclass
class Child:
    """One supervised process: ``argv``, started again when it dies unless it is the main one."""

    name: str
    argv: list[str]
    main: bool = False
    proc: subprocess.Popen[bytes] | None = None
    started: float = 0.0
    delay: float = RESTART_DELAY
    restart_at: float | None = None

    @property
    def pid(self) -> int | None:
        return None if self.proc is None else self.proc.pid


def _child_setup() -> None:
    # Between fork and exec: the supervisor's blocked signals are not the child's, and the
    # child is told (SIGTERM) if the supervisor itself is killed.
    signal.pthread_sigmask(signal.SIG_SETMASK, set())
    ctypes.CDLL(None, use_errno=True).prctl(_PR_SET_PDEATHSIG, signal.SIGTERM)


def _exit_code(status: int) -> int:
    code = os.waitstatus_to_exitcode(status)
    return 128 - code if code < 0 else code


class Supervisor:
    """Runs ``children`` until the main one ends (``run`` returns its exit code)."""

    def __init__(self, children: Sequence[Child], restart_delay: float = RESTART_DELAY) -> None:
        self.children = list(children)
        self.restart_delay = restart_delay
        for child in self.children:
            child.delay = restart_delay

    def run(self) -> int:
        signal.pthread_sigmask(signal.SIG_BLOCK, _SIGNALS)
        try:
            for child in self.children:
                self._start(child)
            while True:
                info = self._wait_signal(self._next_restart())
                if info is None:
                    self._restart_due()
                elif info.si_signo == signal.SIGCHLD:
                    ended = self._reap()
                    if ended is not None:
                        log.info("remsim-bankd exited with status %d", ended)
                        self._stop()
                        return ended
                else:
                    log.info("stopping on %s", signal.Signals(info.si_signo).name)
                    return self._stop()
        finally:
            signal.pthread_sigmask(signal.SIG_UNBLOCK, _SIGNALS)

    # --- children -------------------------------------------------------------------------

    def _start(self, child: Child) -> None:
        child.restart_at = None
        try:
            child.proc = subprocess.Popen(child.argv, preexec_fn=_child_setup)
        except OSError as exc:
            if child.main:
                raise
            log.error("cannot start %s: %s", child.name, exc)
            self._schedule(child)
            return
        child.started = time.monotonic()
        log.info("started %s (pid %d)", child.name, child.proc.pid,
                 extra={"child": child.name, "pid": child.proc.pid})  # fmt: skip

    def _schedule(self, child: Child) -> None:
        now = time.monotonic()
        if child.proc is not None and now - child.started >= STABLE_RUN:
            child.delay = self.restart_delay
        child.restart_at = now + child.delay
        child.delay = min(child.delay * 2, RESTART_DELAY_MAX)

    def _next_restart(self) -> float | None:
        due = [c.restart_at for c in self.children if c.restart_at is not None]
        return None if not due else max(0.0, min(due) - time.monotonic())

    def _restart_due(self) -> None:
        now = time.monotonic()
        for child in self.children:
            if child.restart_at is not None and child.restart_at <= now:
                self._start(child)

    def _reap(self) -> int | None:
        """Collect every ended process (orphans too, as PID 1); the main one's exit code if it
        ended, after scheduling the restart of any other child of ours."""
        ended: int | None = None
        while True:
            try:
                pid, status = os.waitpid(-1, os.WNOHANG)
            except ChildProcessError:
                return ended
            if pid == 0:
                return ended
            child = next((c for c in self.children if c.pid == pid), None)
            if child is None or child.proc is None:
                continue  # an orphan reparented to us
            code = _exit_code(status)
            child.proc.returncode = code  # reaped here: Popen must not wait for it again
            if child.main:
                ended = code
                continue
            self._schedule(child)
            assert child.restart_at is not None
            log.warning("%s (pid %d) exited with status %d; starting it again in %.1f s",
                        child.name, pid, code, child.restart_at - time.monotonic(),
                        extra={"child": child.name, "pid": pid, "status": code})  # fmt: skip
            child.proc = None

    @staticmethod
    def _wait_signal(timeout: float | None) -> signal.struct_siginfo | None:
        if timeout is None:
            return signal.sigwaitinfo(_SIGNALS)
        return signal.sigtimedwait(_SIGNALS, timeout)

    def _stop(self) -> int:
        """Stop the main child, then the others; its exit code (0 if it was not running)."""
        main = [c for c in self.children if c.main]
        code = self._terminate(main)
        self._terminate([c for c in self.children if not c.main])
        return code

    def _terminate(self, children: list[Child]) -> int:
        running = [c for c in children if c.proc is not None and c.proc.returncode is None]
        for child in running:
            assert child.proc is not None
            child.restart_at = None
            child.proc.terminate()
        deadline = time.monotonic() + STOP_TIMEOUT
        while any(c.proc is not None and c.proc.returncode is None for c in running):
            left = deadline - time.monotonic()
            if left <= 0:
                for child in running:
                    if child.proc is not None and child.proc.returncode is None:
                        log.warning("%s did not stop in %g s: killed", child.name, STOP_TIMEOUT)
                        child.proc.kill()
                        child.proc.returncode = _exit_code(os.waitpid(child.proc.pid, 0)[1])
                break
            if self._wait_signal(left) is not None:
                self._reap_quietly()
        for child in children:
            child.restart_at = None
        codes = [c.proc.returncode for c in children if c.proc is not None]
        return next((code for code in codes if code is not None), 0)

    def _reap_quietly(self) -> None:
        while True:
            try:
                pid, status = os.waitpid(-1, os.WNOHANG)
            except ChildProcessError:
                return
            if pid == 0:
                return
            for child in self.children:
                if child.proc is not None and child.proc.pid == pid:
                    child.proc.returncode = _exit_code(status)


# --- the bankd image's processes -------------------------------------------------------------


def vpcd_reader_conf(port: int) -> str:
    """pcscd's vpcd entry: reader "Virtual PCD 00 0n" takes its card on TCP ``port + n``."""
    return (
        'FRIENDLYNAME "Virtual PCD"\n'
        f"DEVICENAME   /dev/null:0x{port:X}\n"
        "LIBPATH      /usr/lib/pcsc/drivers/serial/libifdvpcd.so\n"
        f"CHANNELID    0x{port:X}\n"
    )


def vcard_slots_csv(bank_id: int, cards: int) -> str:
    """The slot file for the software SIMs: card n in reader "Virtual PCD 00 0n", slot n."""
    return "".join(f'"{bank_id}","{n}","Virtual PCD 00 {n:02X}"\n' for n in range(cards))


def children(
    settings: SupervisorSettings, bankd: BankdSettings, argv: Sequence[str]
) -> list[Child]:
    """What the image runs for these settings and bankd arguments."""
    procs: list[Child] = []
    if bankd.card_driver == "pcsc":
        procs.append(Child("pcscd", shlex.split(settings.pcscd_command)))
    for n, profile in enumerate(settings.vcard_profiles):
        vcard = [sys.executable, "-m", "remsim_bankd.vcard", "--profile", str(profile)]
        vcard += ["--port", str(settings.vpcd_port + n), "--log-format", bankd.log_format]
        procs.append(Child(f"remsim-vcard {n}", vcard))
    procs.append(Child("remsim-bankd", [sys.executable, "-m", "remsim_bankd.main", *argv], True))
    return procs


def write_vcard_config(settings: SupervisorSettings, bankd: BankdSettings) -> None:
    """pcscd's vpcd entry and the bankd's slot file for the software SIMs."""
    settings.reader_conf_dir.mkdir(parents=True, exist_ok=True)
    (settings.reader_conf_dir / "vpcd").write_text(vpcd_reader_conf(settings.vpcd_port))
    bankd.slots_csv.write_text(vcard_slots_csv(bankd.bank_id, len(settings.vcard_profiles)))


def main(argv: Sequence[str] | None = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    if set(args) & set(PROGRAM.version_flags):  # this program's version, not the bankd's
        print(f"{PROGRAM.name} {PROGRAM.version}")
        return 0
    bankd = parse_args(args)  # the bankd's own checks and messages, before anything starts
    PROGRAM.setup_logging(bankd)
    parser = PROGRAM.parser("remsim-bankd with pcscd and its software SIMs")
    settings = PROGRAM.settings(SupervisorSettings, argparse.Namespace(), parser)
    if settings.vcard_profiles:
        write_vcard_config(settings, bankd)
    supervisor = Supervisor(children(settings, bankd, args), settings.restart_delay)
    return supervisor.run()


if __name__ == "__main__":
    sys.exit(main())
