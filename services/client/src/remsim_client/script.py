"""The event script (``-e``): ``/bin/sh -c "<script> <cause>"``, fire and forget (client.md §8).

The client never waits for a script: it is spawned, a daemon thread reaps it, and its exit
status is ignored. Scripts inherit stdin/stdout/stderr (so in the shell their output lands
next to the ``R-APDU:`` lines) and see a small, fixed environment.
"""

from __future__ import annotations

import logging
import os
import subprocess
import threading
from collections.abc import Mapping

from rspro import BankSlot, ClientSlot, SlotPhysStatus

log = logging.getLogger("remsim.client")

ENV_WHITELIST = (
    *("USER", "LOGNAME", "HOME", "LANG", "LC_ALL", "LC_COLLATE", "LC_CTYPE", "LC_MESSAGES"),
    *("LC_MONETARY", "LC_NUMERIC", "LC_TIME", "PATH", "PWD", "SHELL", "TERM", "TMPDIR"),
    *("LD_LIBRARY_PATH", "LD_PRELOAD", "POSIXLY_CORRECT", "HOSTALIASES", "TZ", "TZDIR"),
    *("TERMCAP", "COLUMNS", "LINES"),
)
"""The client's own variables a script inherits (only those that are set)."""


def _flag(value: bool | None) -> str:
    return "-1" if value is None else str(int(value))


def remsim_env(
    *,
    version: str,
    server_host: str,
    server_port: int,
    server_state: str,
    bankd_host: str | None,
    bankd_port: int,
    bankd_state: str,
    client_slot: ClientSlot,
    bank_slot: BankSlot,
    modem_status: SlotPhysStatus,
    cause: str,
) -> dict[str, str]:
    """The REMSIM_* variables, in the original's order."""
    return {
        "REMSIM_CLIENT_VERSION": version,
        "REMSIM_SERVER_ADDR": f"{server_host}:{server_port}",
        "REMSIM_SERVER_STATE": server_state,
        # Before any configuration the original prints a C NULL: "(null):0". Kept as is.
        "REMSIM_BANKD_ADDR": f"{bankd_host or '(null)'}:{bankd_port}",
        "REMSIM_BANKD_STATE": bankd_state,
        "REMSIM_CLIENT_SLOT": f"{client_slot.client_id}:{client_slot.slot_nr}",
        "REMSIM_BANKD_SLOT": f"{bank_slot.bank_id}:{bank_slot.slot_nr}",
        "REMSIM_SIM_VCC": _flag(modem_status.vcc_present),
        "REMSIM_SIM_RST": _flag(modem_status.reset_active),
        "REMSIM_SIM_CLK": _flag(modem_status.clk_active),
        "REMSIM_CAUSE": cause,
    }


class ScriptRunner:
    """Runs ``command`` with a cause appended, never waiting for it."""

    def __init__(self, command: str, environ: Mapping[str, str] | None = None) -> None:
        self.command = command
        source = os.environ if environ is None else environ
        self._base_env = {k: source[k] for k in ENV_WHITELIST if k in source}

    def run(self, cause: str, variables: Mapping[str, str]) -> subprocess.Popen[bytes] | None:
        """Spawn the script now; returns the process (None if it could not be started)."""
        env = {**self._base_env, **variables}
        try:
            proc = subprocess.Popen(["/bin/sh", "-c", f"{self.command} {cause}"], env=env)
        except OSError as exc:
            log.error("cannot run the event script: %s", exc, extra={"cause": cause})
            return None
        threading.Thread(target=proc.wait, name=f"reap-{proc.pid}", daemon=True).start()
        return proc
