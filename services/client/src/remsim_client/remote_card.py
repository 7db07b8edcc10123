"""A remote SIM for Python programs: the client core with the program as the "modem".

    async with RemoteCard(server="10.0.0.1", client_id=23, slot=0) as card:
        print(card.atr.hex())
        rsp = await card.transmit(bytes.fromhex("a0a40000023f00"))

Entering the context connects to the server and waits until a slotmap names a bankd, the
bankd link is up and the card's ATR has arrived. ``transmit`` sends one C-APDU and returns
the R-APDU (response data + SW1 SW2); APDUs are sent one at a time. Errors:
:class:`NoCardMappedError` (the server has no slotmap for this client slot),
:class:`LinkLostError` (server or bankd unreachable, or the card went away during an
exchange), :class:`CardTimeoutError` (no response in time), :class:`InvalidApduError`,
:class:`CardError` (APDU mode: the bankd says the card failed the exchange).

APDU mode (``apdu_mode``, see ``remsim_client.config.ApduMode``; with a bankd of ours):
``transmit`` sends the whole APDU, short or extended (``rspro.MIN_APDU..MAX_APDU`` bytes),
in one round trip, and the bankd does what T=0 needs (GET RESPONSE, 6Cxx) itself. In TPDU
mode (an original bankd) each APDU is one T=0 TPDU of 4..260 bytes, as the original's.

:class:`BlockingRemoteCard` offers the same for code without an event loop.
"""

from __future__ import annotations

import asyncio
import logging
import threading
from collections.abc import Coroutine
from typing import Any, TypeVar

from remsim_common import CONTROL_PORT, TransportSecurity
from rspro import MAX_APDU, MAX_TPDU, MIN_APDU, MIN_TPDU, ClientSlot, Keepalive, ResultCode

from .client import Client
from .config import (
    DEFAULT_KEEPALIVE,
    ApduMode,
    ClientConfig,
    host_name,
    is_extended_apdu,
    package_version,
)
from .errors import (
    CardError,
    CardTimeoutError,
    InvalidApduError,
    LinkLostError,
    NoCardMappedError,
    RemsimClientError,
)
from .frontend import POWER_OFF, POWER_ON, ModemFrontend
from .main_fsm import MainState

__all__ = ["BlockingRemoteCard", "RemoteCard"]

log = logging.getLogger("remsim.client")

_T = TypeVar("_T")


class _AppFrontend(ModemFrontend):
    """The program as the modem: keeps the ATR, hands each R-APDU to the waiting call."""

    whole_apdus = True

    def __init__(self) -> None:
        self.atr = b""
        self.inserted = False
        self.ready = asyncio.Event()
        self.pending: asyncio.Future[bytes] | None = None
        self.stale = 0  # responses still due for exchanges that timed out

    def set_atr(self, atr: bytes) -> None:
        self.atr = atr
        # The configured ATR comes before the card insertion; any ATR after it is the card's.
        if self.inserted:
            self.ready.set()

    def card_insert(self) -> None:
        self.inserted = True
        self.stale = 0

    def card_remove(self) -> None:
        self.inserted = False
        self.stale = 0
        self.ready.clear()
        self.fail(
            LinkLostError("the card was removed (bankd link lost or slotmap removed)", "bankd")
        )

    def card_to_modem(self, data: bytes) -> None:
        if self._answer_due(data.hex()):
            assert self.pending is not None
            self.pending.set_result(data)

    def card_error(self, result: ResultCode, error: str | None) -> None:
        if self._answer_due(result.name):
            assert self.pending is not None
            why = f"{result.name}: {error}" if error else result.name
            self.pending.set_exception(CardError(f"the card did not answer ({why})", result))

    def _answer_due(self, what: str) -> bool:
        """Whether an answer from the bankd answers the pending exchange."""
        if self.stale:
            # A late answer to an exchange that timed out must not answer the next one.
            self.stale -= 1
            log.warning("dropping a late R-APDU: %s", what)
            return False
        if self.pending is not None and not self.pending.done():
            return True
        log.warning("dropping an R-APDU nobody waits for: %s", what)
        return False

    def fail(self, exc: RemsimClientError) -> None:
        if self.pending is not None and not self.pending.done():
            self.pending.set_exception(exc)


class RemoteCard:
    """The card mapped to client slot ``client_id:slot`` on ``server``.

    ``timeout``: how long entering the context (or :meth:`wait_ready`) waits for the card;
    ``apdu_timeout``: how long :meth:`transmit` waits for each response;
    ``auto_get_response`` (TPDU mode): answer ``61xx`` with GET RESPONSE (same CLA, Le = xx)
    and return the collected data with the last SW, as if the card had answered at once (in
    APDU mode the bankd does that for a T=0 card, and the R-APDU is returned as it comes);
    ``apdu_mode``: offer the bankd the APDU mode: ``auto`` (only over TLS, to a bankd whose
    certificate names it), ``on``, ``off``;
    ``security``: the socket security of both links, to the server and to the bankd
    (plaintext by default; ``TransportSecurity.mutual_tls(cert, key, ca)`` for mTLS).
    """

    def __init__(
        self,
        server: str = "127.0.0.1",
        client_id: int = 0,
        slot: int = 0,
        *,
        port: int = CONTROL_PORT,
        timeout: float = 10.0,
        apdu_timeout: float = 30.0,
        auto_get_response: bool = False,
        name: str | None = None,
        sw_version: str | None = None,
        keepalive: Keepalive | None = DEFAULT_KEEPALIVE,
        security: TransportSecurity = TransportSecurity.PLAINTEXT,
        apdu_mode: ApduMode | str = ApduMode.AUTO,
    ) -> None:
        self.timeout = timeout
        self.apdu_timeout = apdu_timeout
        self.auto_get_response = auto_get_response
        self.config = ClientConfig(
            server_host=server,
            server_port=port,
            client_slot=ClientSlot(client_id, slot),
            name=name or host_name(),
            sw_version=sw_version or package_version(),
            keepalive=keepalive,
            apdu_mode=ApduMode(apdu_mode),
        )
        self._frontend = _AppFrontend()
        self.client = Client(self.config, self._frontend, security=security)
        self._lock = asyncio.Lock()

    # --- life cycle ------------------------------------------------------------------------

    async def open(self) -> None:
        """Connect and wait (up to ``timeout``) for the card; closes again on failure."""
        await self.client.start()
        try:
            await self.wait_ready()
        except BaseException:
            await self.close()
            raise

    async def close(self) -> None:
        self._frontend.ready.clear()
        self._frontend.fail(LinkLostError("the remote card was closed", "bankd"))
        await self.client.aclose()

    async def __aenter__(self) -> RemoteCard:
        await self.open()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def wait_ready(self, timeout: float | None = None) -> None:
        """Wait until the card can be used, e.g. again after a LinkLostError."""
        try:
            async with asyncio.timeout(self.timeout if timeout is None else timeout):
                await self._frontend.ready.wait()
        except TimeoutError:
            raise self._unavailable() from None

    # --- the card --------------------------------------------------------------------------

    @property
    def ready(self) -> bool:
        return self._frontend.ready.is_set()

    @property
    def atr(self) -> bytes:
        """The card's ATR as the bankd sent it."""
        return self._frontend.atr

    @property
    def client_slot(self) -> ClientSlot:
        return self.client.fsm.client_slot

    @property
    def apdu_mode(self) -> bool:
        """The bankd link is in APDU mode: whole APDUs, also extended ones, in one round trip."""
        return self.client.apdu_mode

    @property
    def protocol(self) -> int | None:
        """The card's protocol (0: T=0, 1: T=1) as the bankd said (APDU mode), else None."""
        return self.client.fsm.card_protocol

    async def transmit(self, apdu: bytes, *, timeout: float | None = None) -> bytes:
        """Send one C-APDU, return the R-APDU (response data + SW1 SW2)."""
        apdu = bytes(apdu)
        if not MIN_APDU <= len(apdu) <= MAX_APDU:
            raise InvalidApduError(
                f"an APDU has {MIN_APDU}..{MAX_APDU} bytes (APDU mode) or {MIN_APDU}..{MAX_TPDU} "
                f"(TPDU mode), not {len(apdu)}"
            )
        async with self._lock:
            if not self._frontend.ready.is_set():
                raise self._unavailable()
            if self.client.apdu_mode:
                return await self._exchange(apdu, timeout, whole=True)
            if len(apdu) == MIN_TPDU - 1:
                apdu += b"\x00"  # case 1: the bankd wants the P3 byte
            if len(apdu) > MAX_TPDU or is_extended_apdu(apdu):
                kind = "an extended APDU" if is_extended_apdu(apdu) else "an APDU"
                raise InvalidApduError(
                    f"{kind} of {len(apdu)} bytes needs the APDU mode, but the bankd link is "
                    f"in TPDU mode (short APDUs of {MIN_APDU}..{MAX_TPDU} bytes): see apdu_mode"
                )
            rsp = await self._exchange(apdu, timeout)
            if not self.auto_get_response:
                return rsp
            data = b""
            while len(rsp) >= 2 and rsp[-2] == 0x61:
                data += rsp[:-2]
                rsp = await self._exchange(bytes((apdu[0], 0xC0, 0, 0, rsp[-1])), timeout)
            return data + rsp

    async def reset(self) -> None:
        """Cold reset: report power off then on to the bankd (its reset is a VCC 1->0 edge)."""
        if not self.ready:
            raise self._unavailable()
        self.client.modem_status(POWER_OFF)
        self.client.modem_status(POWER_ON)

    # --- internals -------------------------------------------------------------------------

    async def _exchange(self, apdu: bytes, timeout: float | None, *, whole: bool = False) -> bytes:
        if not self._frontend.ready.is_set():
            raise self._unavailable()
        loop = asyncio.get_running_loop()
        pending: asyncio.Future[bytes] = loop.create_future()
        self._frontend.pending = pending
        client = self.client
        if not (client.modem_apdu(apdu) if whole else client.modem_tpdu(apdu)):
            # Dropped (the bankd link went down, its loss not handled yet): no answer comes.
            self._frontend.pending = None
            raise LinkLostError(
                f"the APDU {apdu[:5].hex()}… could not be sent: the bankd link is down", "bankd"
            )
        # A bare timer on the future: cheaper per APDU than an asyncio.timeout() scope.
        timer = loop.call_later(
            self.apdu_timeout if timeout is None else timeout, self._expire, pending, apdu
        )
        try:
            return await pending
        except asyncio.CancelledError:
            if pending.cancelled():  # the caller gave up while the APDU was out: as a timeout
                self._frontend.stale += 1
            raise
        finally:
            timer.cancel()
            self._frontend.pending = None

    def _expire(self, pending: asyncio.Future[bytes], apdu: bytes) -> None:
        if not pending.done():
            self._frontend.stale += 1
            pending.set_exception(
                CardTimeoutError(f"no response to {apdu[:5].hex()}… from the card")
            )

    def _unavailable(self) -> RemsimClientError:
        """Why the card cannot be used right now."""
        cfg, client = self.config, self.client
        server = f"{cfg.server_host}:{cfg.server_port}"
        state = client.state
        if state is MainState.INIT:
            return LinkLostError(
                f"no connection to the server {server} ({client.server_state.value})", "server"
            )
        if state is MainState.UNCONFIGURED:
            return NoCardMappedError(f"the server {server} has no slotmap for {self.client_slot}")
        fsm = client.fsm
        if state is MainState.WAIT_BANKD:
            return LinkLostError(
                f"no connection to the bankd {fsm.bankd_host}:{fsm.bankd_port} for "
                f"{fsm.bank_slot} ({client.bankd_state.value})",
                "bankd",
            )
        return CardTimeoutError(f"the bankd {fsm.bankd_host}:{fsm.bankd_port} sent no ATR")


class BlockingRemoteCard:
    """:class:`RemoteCard` for synchronous code: runs its own event loop in a thread.

    with BlockingRemoteCard(server="10.0.0.1", client_id=23, slot=0) as card:
        rsp = card.transmit(bytes.fromhex("a0a40000023f00"))
    """

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, name="remote-card")
        self._thread.daemon = True
        self._thread.start()
        self.card: RemoteCard = self._call(self._make(*args, **kwargs))

    @staticmethod
    async def _make(*args: Any, **kwargs: Any) -> RemoteCard:
        return RemoteCard(*args, **kwargs)

    def _call(self, coro: Coroutine[Any, Any, _T]) -> _T:
        return asyncio.run_coroutine_threadsafe(coro, self._loop).result()

    def open(self) -> None:
        self._call(self.card.open())

    def close(self) -> None:
        """Close the card and stop the loop thread (the object cannot be reopened)."""
        if self._loop.is_closed():
            return
        try:
            self._call(self.card.close())
        finally:
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._thread.join()
            self._loop.close()

    def __enter__(self) -> BlockingRemoteCard:
        try:
            self.open()
        except BaseException:
            self.close()
            raise
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @property
    def ready(self) -> bool:
        return self.card.ready

    @property
    def atr(self) -> bytes:
        return self.card.atr

    @property
    def apdu_mode(self) -> bool:
        return self.card.apdu_mode

    @property
    def protocol(self) -> int | None:
        return self.card.protocol

    def wait_ready(self, timeout: float | None = None) -> None:
        self._call(self.card.wait_ready(timeout))

    def transmit(self, apdu: bytes, *, timeout: float | None = None) -> bytes:
        return self._call(self.card.transmit(apdu, timeout=timeout))

    def reset(self) -> None:
        self._call(self.card.reset())
