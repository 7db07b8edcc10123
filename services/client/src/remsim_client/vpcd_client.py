"""``remsim-client-vpcd``: the remote card in a PC/SC reader, through vsmartcard's vpcd.

The client plays a virtual card for vpcd, the pcscd reader driver (vpcd.md): while the
bankd link is up and the card's ATR is known, it keeps a TCP connection to vpcd
(``127.0.0.1:35963`` = reader ``Virtual PCD 00 00``; 35964 = ``Virtual PCD 00 01``), so
every PC/SC application on the host sees the remote card in that reader. Closing the
connection removes the card. What vpcd asks is answered as the original's ifdhandler
client does (client.md §11, §12):

* GET ATR: the bankd's ATR, from memory (pcscd polls it every ~0.4 s).
* POWER ON: ClientSlotStatusInd RST=0 VCC=1 CLK=1 card=1. POWER OFF: RST=1 VCC=0 CLK=0
  card=1 (the bankd cold-resets the card). RESET: RST=1 VCC=1 CLK=1 card=1, then RST=0
  (the bankd warm-resets it). pcscd powers an idle card off after about a second and on
  again before the next use; with ``ignore_idle_power_cycles`` these power cycles stay
  local, so the remote SIM keeps its state (PIN, selected files). RESET always goes through.
* A C-APDU: a TpduModemToCard; the TpduCardToModem that follows is the R-APDU. A 4-byte
  case-1 APDU gets P3=00 (the bankd wants 5..260 bytes); other lengths are answered 6700
  locally. No answer within ``apdu_timeout``: the card leaves the reader (the waiting
  application's transmit fails) rather than answer a made-up status word (client.md §12,
  vpcd.md §7); it comes back once the bank answers again (the late answer itself is
  dropped) or sends a new ATR. An empty R-APDU, which vpcd cannot carry, re-inserts the card.

:class:`VpcdCard` is the sans-IO core (events and time in, actions out);
:class:`VpcdFrontend` the asyncio front-end around it.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import signal
import socket
import sys
from dataclasses import dataclass

from pydantic import Field, ValidationError

from rspro import MAX_TPDU, MIN_TPDU, SlotPhysStatus
from vpcd import GET_ATR, POWER_OFF, POWER_ON, RESET, VPCD_PORT, Apdu, VpcdConnection

from .client import Client
from .config import ClientConfig
from .errors import ConfigError
from .frontend import POWER_OFF as STATUS_POWER_OFF
from .frontend import POWER_ON as STATUS_POWER_ON
from .frontend import ModemFrontend
from .options import ClientSettings, build_parser, config_error

__all__ = [
    "DEFAULT_APDU_TIMEOUT",
    "STATUS_RESET",
    "SW_WRONG_LENGTH",
    "ConnectVpcd",
    "DisconnectVpcd",
    "ReportStatus",
    "SendToVpcd",
    "SendTpdu",
    "VpcdCard",
    "VpcdFrontend",
    "VpcdSettings",
    "main",
    "run_vpcd_client",
]

log = logging.getLogger("DMAIN")

DEFAULT_APDU_TIMEOUT = 10.0
SW_WRONG_LENGTH = bytes.fromhex("6700")
STATUS_RESET = SlotPhysStatus(
    reset_active=True, vcc_present=True, clk_active=True, card_present=True
)
"""RST asserted with VCC and CLK on: the first half of a warm reset (then STATUS_POWER_ON)."""


# --- actions of the sans-IO core -------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class ConnectVpcd:
    """Insert the card: connect to vpcd, and keep reconnecting until DisconnectVpcd."""


@dataclass(frozen=True, slots=True)
class DisconnectVpcd:
    """Remove the card: close the vpcd connection (or stop trying to open one)."""


@dataclass(frozen=True, slots=True)
class SendToVpcd:
    data: bytes
    """A framed message (length + body) for the current vpcd connection."""


@dataclass(frozen=True, slots=True)
class ReportStatus:
    """ClientSlotStatusInd to the bankd (ModemCore.modem_status)."""

    status: SlotPhysStatus


@dataclass(frozen=True, slots=True)
class SendTpdu:
    """TpduModemToCard to the bankd (ModemCore.modem_tpdu)."""

    data: bytes


Action = ConnectVpcd | DisconnectVpcd | SendToVpcd | ReportStatus | SendTpdu


class VpcdCard:
    """The remote card as vpcd sees it; sans-IO.

    Fed by the client core's hooks (:meth:`set_atr`, :meth:`card_insert`,
    :meth:`card_remove`, :meth:`card_to_modem`), by the vpcd connection
    (:meth:`vpcd_connected`, :meth:`vpcd_data`, :meth:`vpcd_closed`) and by time
    (:meth:`next_deadline`, :meth:`handle_timeout`); every call returns the actions to
    carry out, in order.
    """

    def __init__(
        self,
        *,
        apdu_timeout: float = DEFAULT_APDU_TIMEOUT,
        ignore_idle_power_cycles: bool = False,
        atr_ignore_rspro: bool = False,
    ) -> None:
        self.apdu_timeout = apdu_timeout
        self.ignore_idle_power_cycles = ignore_idle_power_cycles
        self.atr_ignore_rspro = atr_ignore_rspro
        self.atr = b""
        self.inserted = False  # the core is OPERATIONAL (bankd link up)
        self.atr_known = False  # the ATR to show is the card's (or -r: the configured one)
        self.stalled = False  # an APDU timed out: out of the reader until the bank answers
        self.timeouts = 0
        self._conn: VpcdConnection | None = None
        self._deadline: float | None = None  # of the APDU the bank has to answer
        self._stale = 0  # answers still due for APDUs that timed out or were abandoned
        self._reported: SlotPhysStatus | None = None

    @property
    def present(self) -> bool:
        """Whether the card should be in the reader (connected to vpcd) now."""
        return self.inserted and self.atr_known and not self.stalled

    @property
    def connected(self) -> bool:
        return self._conn is not None

    @property
    def apdu_pending(self) -> bool:
        return self._deadline is not None

    # --- hooks of the client core ------------------------------------------------------------

    def set_atr(self, atr: bytes) -> list[Action]:
        if not self.inserted:
            self.atr = atr  # the configured ATR, announced just before the insertion
            return []
        if self.present:
            if atr == self.atr:
                return []
            # pcscd reads a new ATR only on a new insertion (or power-up): re-insert.
            log.info("vpcd: the card's ATR changed to %s, re-inserting the card", atr.hex())
            self.atr = atr
            return [*self._eject(), ConnectVpcd()]
        # A first ATR, or one after a timeout: either way the bank is there now.
        self.atr = atr
        self.atr_known = True
        self.stalled = False
        log.info("vpcd: inserting the card, ATR %s", atr.hex())
        return [ConnectVpcd()]

    def card_insert(self) -> list[Action]:
        self.inserted = True
        self.stalled = False
        self._stale = 0
        self._reported = None
        if self.atr_ignore_rspro:
            self.atr_known = True
            log.info("vpcd: inserting the card, ATR %s (-r)", self.atr.hex())
            return [ConnectVpcd()]
        return []

    def card_remove(self) -> list[Action]:
        was_present = self.present
        self.inserted = self.atr_known = self.stalled = False
        self._stale = 0  # whatever the old bankd link still owed is gone with it
        if not was_present:
            return []
        log.info("vpcd: removing the card")
        return self._eject()

    def card_to_modem(self, data: bytes) -> list[Action]:
        if self._stale:
            self._stale -= 1
            log.warning("vpcd: dropping a late R-APDU %s", data.hex())
            if self._stale or not self.stalled:
                return []
            self.stalled = False
            log.info("vpcd: the bank answers again, re-inserting the card")
            return [ConnectVpcd()] if self.present else []
        if self._deadline is None or self._conn is None:
            log.warning("vpcd: dropping an R-APDU nobody asked for: %s", data.hex())
            return []
        self._deadline = None
        if not data:
            # vpcd cannot carry an empty message, and a made-up SW would lie: the
            # application's transmit fails as with a card pulled and pushed back in.
            log.error("vpcd: the bankd sent an empty R-APDU, re-inserting the card")
            return [*self._eject(), ConnectVpcd()]
        return [SendToVpcd(self._conn.reply(data))]

    # --- the vpcd connection -----------------------------------------------------------------

    def vpcd_connected(self) -> list[Action]:
        self._conn = VpcdConnection()
        return []

    def vpcd_closed(self) -> list[Action]:
        """vpcd closed the connection (pcscd stopped): reconnecting is the front-end's job."""
        self._drop_connection()
        return []

    def vpcd_data(self, data: bytes, now: float) -> list[Action]:
        conn = self._conn
        if conn is None:
            return []
        actions: list[Action] = []
        for event in conn.feed(data):
            if isinstance(event, Apdu):
                actions += self._apdu(conn, event.data, now)
                continue
            code = event.code
            if code == GET_ATR:
                actions.append(SendToVpcd(conn.reply(self.atr)))
            elif code == POWER_ON:
                log.debug("vpcd: power on")
                actions += self._report(STATUS_POWER_ON)
            elif code == POWER_OFF:
                if self.ignore_idle_power_cycles:
                    log.debug("vpcd: power off, not passed on to the bank")
                else:
                    log.debug("vpcd: power off")
                    actions += self._report(STATUS_POWER_OFF)
            elif code == RESET:
                log.debug("vpcd: reset")
                actions += self._report(STATUS_RESET) + self._report(STATUS_POWER_ON)
            else:
                log.warning("vpcd: unknown control message %#04x ignored", code)
        return actions

    # --- time --------------------------------------------------------------------------------

    def next_deadline(self) -> float | None:
        return self._deadline

    def handle_timeout(self, now: float) -> list[Action]:
        if self._deadline is None or now < self._deadline or self._conn is None:
            return []
        self._deadline = None
        self._stale += 1
        self.timeouts += 1
        self.stalled = True
        log.warning(
            "vpcd: no answer from the card within %g s; it leaves the reader until the bank "
            "answers again",
            self.apdu_timeout,
        )
        return self._eject()

    # --- internals ---------------------------------------------------------------------------

    def _apdu(self, conn: VpcdConnection, apdu: bytes, now: float) -> list[Action]:
        if len(apdu) == MIN_TPDU - 1:
            apdu += b"\x00"  # case 1 (CLA INS P1 P2): vpcd passes it on verbatim, add P3
        if not MIN_TPDU <= len(apdu) <= MAX_TPDU:
            log.warning("vpcd: C-APDU of %d bytes cannot go to the bank", len(apdu))
            return [SendToVpcd(conn.reply(SW_WRONG_LENGTH))]
        if log.isEnabledFor(logging.DEBUG):
            log.debug("vpcd: C-APDU %s", apdu.hex())
        self._deadline = now + self.apdu_timeout
        return [SendTpdu(apdu)]

    def _report(self, status: SlotPhysStatus) -> list[Action]:
        # Ignoring idle power cycles, a power-on after a power-off kept local changes nothing.
        if self.ignore_idle_power_cycles and status == self._reported:
            return []
        self._reported = status
        return [ReportStatus(status)]

    def _drop_connection(self) -> None:
        self._conn = None
        if self._deadline is not None:
            self._deadline = None
            self._stale += 1  # its answer may still come: it must not answer the next APDU

    def _eject(self) -> list[Action]:
        self._drop_connection()
        return [DisconnectVpcd()]


# --- asyncio ---------------------------------------------------------------------------------

_QUICKACK: int | None = getattr(socket, "TCP_QUICKACK", None)


class _VpcdProtocol(asyncio.Protocol):
    def __init__(self, frontend: VpcdFrontend) -> None:
        self.frontend = frontend
        self.owner = asyncio.current_task()  # the connector that opened this connection
        self.transport: asyncio.Transport | None = None
        self._sock: socket.socket | None = None
        self.lost: asyncio.Future[None] = asyncio.get_running_loop().create_future()

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport
        # Kept for _quickack, which runs on every read.
        self._sock = sock = transport.get_extra_info("socket")
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self._quickack()
        self.frontend._vpcd_made(self)

    def _quickack(self) -> None:
        # Linux leaves quick-ACK mode by itself: re-arm it before every read, or vpcd's
        # length-then-body writes wait ~40 ms for our delayed ACK on every message.
        if _QUICKACK is not None and self._sock is not None:
            with contextlib.suppress(OSError):
                self._sock.setsockopt(socket.IPPROTO_TCP, _QUICKACK, 1)

    def data_received(self, data: bytes) -> None:
        self.frontend._vpcd_data(self, data)
        self._quickack()

    def connection_lost(self, exc: Exception | None) -> None:
        if not self.lost.done():
            self.lost.set_result(None)
        self.frontend._vpcd_lost(self)


class VpcdFrontend(ModemFrontend):
    """The client's front-end for vpcd: connects to ``host:port`` as the remote card.

    ``reconnect_interval``: how often to retry while vpcd is unreachable. Call
    :meth:`aclose` when done.
    """

    def __init__(
        self,
        host: str = "127.0.0.1",
        port: int = VPCD_PORT,
        *,
        apdu_timeout: float = DEFAULT_APDU_TIMEOUT,
        ignore_idle_power_cycles: bool = False,
        atr_ignore_rspro: bool = False,
        reconnect_interval: float = 1.0,
    ) -> None:
        self.host = host
        self.port = port
        self.reconnect_interval = reconnect_interval
        self.card = VpcdCard(
            apdu_timeout=apdu_timeout,
            ignore_idle_power_cycles=ignore_idle_power_cycles,
            atr_ignore_rspro=atr_ignore_rspro,
        )
        self._protocol: _VpcdProtocol | None = None
        self._connector: asyncio.Task[None] | None = None
        self._timer: asyncio.TimerHandle | None = None

    @property
    def connected(self) -> bool:
        """Whether the card is in vpcd's reader (the TCP connection is up)."""
        return self._protocol is not None

    async def aclose(self) -> None:
        """Take the card out of the reader and stop reconnecting."""
        connector = self._connector
        self._do(self.card.card_remove())
        self._disconnect()
        if connector is not None:
            with contextlib.suppress(asyncio.CancelledError):
                await connector

    # --- hooks of the client core ------------------------------------------------------------

    def set_atr(self, atr: bytes) -> None:
        self._do(self.card.set_atr(atr))

    def card_insert(self) -> None:
        self._do(self.card.card_insert())

    def card_remove(self) -> None:
        self._do(self.card.card_remove())

    def card_to_modem(self, data: bytes) -> None:
        self._do(self.card.card_to_modem(data))

    # --- carrying out actions ----------------------------------------------------------------

    def _do(self, actions: list[Action]) -> None:
        for action in actions:
            match action:
                case SendToVpcd(data):
                    if self._protocol is not None and self._protocol.transport is not None:
                        self._protocol.transport.write(data)
                case SendTpdu(data):
                    assert self.core is not None
                    self.core.modem_tpdu(data)
                case ReportStatus(status):
                    assert self.core is not None
                    self.core.modem_status(status)
                case ConnectVpcd():
                    if self._connector is None or self._connector.done():
                        self._connector = asyncio.get_running_loop().create_task(
                            self._keep_inserted(), name="vpcd"
                        )
                case DisconnectVpcd():
                    self._disconnect()
        self._arm_timer()

    def _arm_timer(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        deadline = self.card.next_deadline()
        if deadline is not None:
            self._timer = asyncio.get_running_loop().call_at(deadline, self._on_timer)

    def _on_timer(self) -> None:
        self._timer = None
        self._do(self.card.handle_timeout(asyncio.get_running_loop().time()))

    def _disconnect(self) -> None:
        connector, self._connector = self._connector, None
        if connector is not None:
            connector.cancel()
        protocol, self._protocol = self._protocol, None
        if protocol is not None and protocol.transport is not None:
            protocol.transport.close()  # FIN after what is queued: vpcd sees the card go
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None

    # --- the vpcd connection -----------------------------------------------------------------

    async def _keep_inserted(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            try:
                _, protocol = await loop.create_connection(
                    lambda: _VpcdProtocol(self), self.host, self.port
                )
            except OSError as exc:
                log.debug("vpcd %s:%d not reachable: %s", self.host, self.port, exc)
                await asyncio.sleep(self.reconnect_interval)
                continue
            try:
                await protocol.lost
            except asyncio.CancelledError:
                if protocol.transport is not None:
                    protocol.transport.close()
                raise
            log.info("vpcd: %s:%d closed the connection", self.host, self.port)
            # pcscd going away: do not spin while it restarts.
            await asyncio.sleep(min(self.reconnect_interval, 0.1))

    def _vpcd_made(self, protocol: _VpcdProtocol) -> None:
        # Here rather than after create_connection returns: vpcd's first message may be
        # delivered before the connector task runs again.
        if protocol.owner is not self._connector or protocol.transport is None:
            if protocol.transport is not None:
                protocol.transport.close()  # the card was removed meanwhile
            return
        self._protocol = protocol
        self._do(self.card.vpcd_connected())
        log.info("vpcd: connected to %s:%d, the card is in the reader", self.host, self.port)

    def _vpcd_data(self, protocol: _VpcdProtocol, data: bytes) -> None:
        if protocol is self._protocol:
            self._do(self.card.vpcd_data(data, asyncio.get_running_loop().time()))

    def _vpcd_lost(self, protocol: _VpcdProtocol) -> None:
        if protocol is self._protocol:  # not a connection we closed ourselves
            self._protocol = None
            self._do(self.card.vpcd_closed())


# --- the program -----------------------------------------------------------------------------


class VpcdSettings(ClientSettings):
    """The client settings plus the vpcd ones (``REMSIM_CLIENT_VPCD_HOST`` etc.)."""

    vpcd_host: str = "127.0.0.1"
    vpcd_port: int = Field(VPCD_PORT, ge=1, le=65535)
    apdu_timeout: float = Field(DEFAULT_APDU_TIMEOUT, gt=0)
    ignore_idle_power_cycles: bool = False

    def frontend(self) -> VpcdFrontend:
        return VpcdFrontend(
            self.vpcd_host,
            self.vpcd_port,
            apdu_timeout=self.apdu_timeout,
            ignore_idle_power_cycles=self.ignore_idle_power_cycles,
            atr_ignore_rspro=self.atr_ignore_rspro,
        )


def build_vpcd_parser() -> argparse.ArgumentParser:
    p = build_parser(
        "remsim-client-vpcd",
        "remsim client showing the remote card to PC/SC applications in a vsmartcard vpcd reader",
    )
    add = p.add_argument
    add("--vpcd-host", metavar="HOST", help="where vpcd (in pcscd) listens (default 127.0.0.1)")
    add(
        "--vpcd-port",
        type=int,
        metavar="PORT",
        help=f"vpcd port: {VPCD_PORT} is its reader slot 0, {VPCD_PORT + 1} slot 1 "
        f"(default {VPCD_PORT})",
    )
    add(
        "--apdu-timeout",
        type=float,
        metavar="SECONDS",
        help="take the card out of the reader if it has not answered an APDU by then "
        f"(default {DEFAULT_APDU_TIMEOUT:g})",
    )
    add(
        "--ignore-idle-power-cycles",
        "--ignore-power-off",
        action="store_const",
        const=True,
        help="keep pcscd's power-off of an idle card local instead of cold-resetting the "
        "remote card",
    )
    return p


def load_vpcd_settings(args: argparse.Namespace) -> VpcdSettings:
    """Environment, overridden by the options given. Raises ConfigError on bad values."""
    given = {
        k: v for k, v in vars(args).items() if v is not None and k in VpcdSettings.model_fields
    }
    try:
        return VpcdSettings(**given)
    except ValidationError as exc:
        raise config_error(exc) from None


async def run_vpcd_client(config: ClientConfig, frontend: VpcdFrontend) -> int:
    """Run until SIGTERM/SIGINT; the exit status."""
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    try:
        async with Client(config, frontend):
            log.info("vpcd: the card will appear at vpcd %s:%d", frontend.host, frontend.port)
            try:
                await stop.wait()
            finally:
                await frontend.aclose()
    finally:
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.remove_signal_handler(sig)
    return 0


def main(argv: list[str] | None = None) -> None:
    args = build_vpcd_parser().parse_args(argv)
    try:
        settings = load_vpcd_settings(args)
        config = settings.client_config()
        settings.setup_logging()
    except (ConfigError, ValueError) as exc:
        print(exc, file=sys.stderr)
        sys.exit(2)
    sys.exit(asyncio.run(run_vpcd_client(config, settings.frontend())))


if __name__ == "__main__":
    main()
