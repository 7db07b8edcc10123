"""``remsim-client-shell``: the remote card on stdin/stdout (client.md §9).

stdin, one command per line: a C-APDU in hex (``a0a40000023f00``), or ``RESET`` (any case),
which reports RST=1 VCC=0 CLK=0 card=1 to the bankd (a cold reset there). stdout carries
only ``SET_ATR: <hex>`` and ``R-APDU: <hex>`` lines in the original's format; logs go to
stderr. End of stdin ends the program (status 0), as do SIGTERM and SIGINT.

In TPDU mode (an original bankd) a line is one T=0 TPDU of 5..260 bytes, as the original's;
a longer or extended APDU is refused with an error line on stderr. In remsim's APDU mode
(``--apdu-mode``) a line may be any whole APDU, short or extended, up to ``rspro.MAX_APDU``
bytes (a line of ~131,000 hex digits: pipe it in, a terminal takes at most 4095 characters
per line), and its R-APDU comes in one piece; a card that fails it prints ``ERROR: ...``.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
import signal
import sys
import threading
from typing import TextIO

from remsim_common import TransportSecurity
from rspro import MAX_APDU, MAX_TPDU, MIN_APDU, ResultCode

from .client import Client
from .config import ClientConfig, hexdump, is_extended_apdu, parse_hex
from .frontend import POWER_OFF, ModemFrontend
from .options import ClientSettings, client_parser, client_program, configure

PROGRAM = client_program("remsim-client-shell")

MAX_LINE_TPDU = 1024
"""TPDU mode: longer lines are a parse error, as in the original (whose buffer this is)."""
SHELL_RESET = POWER_OFF
"""What ``RESET`` reports: RST=1 VCC=0 CLK=0 card=1, as the original."""
_EOL = re.compile(rb"\r\n|\r|\n")


class LineSplitter:
    """Bytes in, lines out; a line ends with LF, CR or CR LF, whatever the chunking."""

    def __init__(self) -> None:
        self._buf = b""
        self._after_cr = False

    def feed(self, data: bytes) -> list[bytes]:
        if self._after_cr and data.startswith(b"\n"):
            data = data[1:]  # the LF of a CR LF split across two reads
        if data:
            self._after_cr = data.endswith(b"\r")
        *lines, self._buf = _EOL.split(self._buf + data)
        return lines

    def finish(self) -> list[bytes]:
        """End of input: a last line without terminator still counts."""
        rest, self._buf = self._buf, b""
        return [rest] if rest else []


class ShellFrontend(ModemFrontend):
    """Prints ATRs and R-APDUs to ``out``; turns stdin lines into modem events."""

    whole_apdus = True

    def __init__(self, out: TextIO | None = None, err: TextIO | None = None) -> None:
        self.out = out or sys.stdout
        self.err = err or sys.stderr

    def set_atr(self, atr: bytes) -> None:
        self._print(f"SET_ATR: {hexdump(atr)}")

    def card_to_modem(self, data: bytes) -> None:
        self._print(f"R-APDU: {hexdump(data)}")

    def card_error(self, result: ResultCode, error: str | None) -> None:
        why = f"{result.name} ({error})" if error else result.name
        self._error(f"ERROR: the card did not answer: {why}")

    def _error(self, line: str) -> None:
        self.err.write(line + "\n")
        self.err.flush()

    def _print(self, line: str) -> None:
        self.out.write(line + "\n")
        self.out.flush()

    def handle_line(self, line: str) -> None:
        assert self.core is not None
        text = line.strip()
        if not text:
            return  # the original would send a 0-byte TPDU that the core drops anyway
        if text.upper() == "RESET":
            self.core.modem_status(SHELL_RESET)
            return
        try:
            apdu = parse_hex(text, " \t")
        except ValueError:
            apdu = b""
        if self.apdu_mode and apdu:
            if not MIN_APDU <= len(apdu) <= MAX_APDU:
                self._error(f"ERROR: a C-APDU has {MIN_APDU}..{MAX_APDU} bytes, not {len(apdu)}")
                return
            self.core.modem_apdu(apdu)
            return
        if not apdu or len(apdu) > MAX_LINE_TPDU:
            self._error(f"ERROR parsing C-APDU `{line}'!")
            return
        if len(apdu) > MAX_TPDU or is_extended_apdu(apdu):
            kind = "an extended C-APDU" if is_extended_apdu(apdu) else "a C-APDU"
            self._error(
                f"ERROR: {kind} of {len(apdu)} bytes needs the APDU mode, but the bankd link "
                f"is in TPDU mode (5..{MAX_TPDU} bytes, short APDUs only): see --apdu-mode"
            )
            return
        self.core.modem_tpdu(apdu)

    async def run(self, fd: int = 0) -> None:
        """Read commands from ``fd`` until end of input."""
        loop = asyncio.get_running_loop()
        chunks: asyncio.Queue[bytes] = asyncio.Queue()

        # A thread, because stdin may be a regular file, which the event loop cannot poll.
        def read() -> None:
            while True:
                try:
                    chunk = os.read(fd, 65536)
                except OSError:
                    chunk = b""
                try:
                    loop.call_soon_threadsafe(chunks.put_nowait, chunk)
                except RuntimeError:  # the loop is gone: the program is ending
                    return
                if not chunk:
                    return

        threading.Thread(target=read, name="stdin", daemon=True).start()
        splitter = LineSplitter()
        while chunk := await chunks.get():
            for line in splitter.feed(chunk):
                self.handle_line(line.decode(errors="replace"))
        for line in splitter.finish():
            self.handle_line(line.decode(errors="replace"))
        self.err.write("STDIN was closed, terminating\n")
        self.err.flush()


async def run_shell(
    config: ClientConfig,
    fd: int = 0,
    *,
    security: TransportSecurity = TransportSecurity.PLAINTEXT,
) -> int:
    """Run until end of input on ``fd`` or SIGTERM/SIGINT; the exit status."""
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    frontend = ShellFrontend()
    try:
        async with Client(config, frontend, security=security):
            reader = asyncio.create_task(frontend.run(fd))
            stopper = asyncio.create_task(stop.wait())
            await asyncio.wait((reader, stopper), return_when=asyncio.FIRST_COMPLETED)
            for task in (reader, stopper):
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task
    finally:
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.remove_signal_handler(sig)
    return 0


def main(argv: list[str] | None = None) -> None:
    parser = client_parser(PROGRAM, "remsim client with the card on stdin/stdout")
    settings, security = configure(PROGRAM, ClientSettings, parser, parser.parse_args(argv))
    sys.exit(asyncio.run(run_shell(settings.client_config(), security=security)))


if __name__ == "__main__":
    main()
