"""Client connections (port 9999): each one served by its own thread, as the original does.

The thread owns its socket and makes the card calls of its session: a TPDU is read,
transmitted to the card and answered without leaving the thread, so the APDU path has no
hand-off between threads (each one costs tens of microseconds). Card calls block, so one
slow card delays only its own connection. Everything else about the session is decided by
the shared ``BankdCore`` (through the ``Bankd``'s typed core calls); actions for this
connection that arise elsewhere (a map removed by the server, a card retry timer) arrive in
its inbox.

With TLS on, the thread does the handshake first (``TransportSecurity.wrap_accepted``), so a
slow or broken one never holds up the accept loop or another client; a failed handshake
closes that connection with one log line. Then it hands the identity in the client's
certificate to the core (``session_secured``), which judges the client's connectClientReq
by it.

The thread also keeps the session's timers, on ``time.monotonic``: the identification
timeout (no valid connectClientReq in time: closed), the IPA keepalive (the first PING one
interval after the accept, so nothing unasked precedes the client's connectClientReq; a
client that stops answering PINGs is dropped and its card released) and the liveness check
the core asks for (``CheckAlive``) when another connection claims this session's client
slot. Original clients answer PINGs (libosmo-abis does). Frames may arrive split or
coalesced in any way, and a client that vanishes ends only its own session.

Each TPDU is counted (``remsim_tpdus_relayed_total``) and its card round trip observed
(``remsim_tpdu_roundtrip_seconds``) right in this thread: about 1.5 µs, no hand-off.

The APDU path (``_fast_tpdu``): from the session's second TPDU on, a received chunk that is
exactly one TpduModemToCard of its slot pair is recognised and answered from pre-encoded
frames (``rspro.tpdu.TpduFrames``, the same bytes as the general path), the core asked only
whether the session's TPDUs flow (``BankdCore.tpdus_flow``, before and after the card call):
about 10 µs of Python per TPDU instead of about 50 (docs/benchmarks.md, "The APDU fast
path"). Anything else takes the general path (framer, decoder, ``BankdCore.receive``).

remsim's APDU mode: once the session's connectClientRes accepted it, the connection takes
frames up to IPA's limit (``RsproConnection.allow_large_frames``). An ApduModemToCard takes
the general path; its C-APDU is exchanged with the card right in this thread
(``apdu.exchange``: as it is on T=1, through T=0's TPDUs and GET RESPONSEs on T=0) and
answered with one ApduCardToModem. It counts as one TPDU each way
(``remsim_tpdus_relayed_total``, the card activity), its whole exchange (every TPDU of it)
is one round trip (``remsim_tpdu_roundtrip_seconds``), and GSMTAP traces each TPDU the card
got, as in TPDU mode. A C-APDU the bankd answers itself (``apdu.ApduError``: malformed, or
extended on a T=0 card) gets ``6700`` with the reason in ``error``, and counts nothing.
"""

from __future__ import annotations

import contextlib
import logging
import os
import queue
import select
import socket
import ssl
import threading
import time
from collections.abc import Callable
from typing import TYPE_CHECKING

from remsim_common import PeerIdentity
from rspro import (
    MAX_TPDU,
    MIN_TPDU,
    BankSlot,
    ConnectClientReq,
    ConnectClientRes,
    IpaFramingError,
    KeepaliveTimedOut,
    PduReceived,
    RsproConnection,
)
from rspro.tpdu import TpduFrames

from .apdu import ApduError, exchange
from .card import Card, CardError, card_protocol
from .core import (
    Action,
    CheckAlive,
    Close,
    OpenCard,
    ReleaseCard,
    ResetCard,
    Send,
    Transmit,
    TransmitApdu,
)
from .metrics import CLIENT_KEEPALIVE_TIMEOUTS, REFUSED, TO_CARD, TO_MODEM, TPDU_ROUNDTRIP

if TYPE_CHECKING:
    from .bankd import Bankd

__all__ = ["ClientConnection", "tune_client_socket"]

log = logging.getLogger("remsim.bankd.clients")

# TCP keepalive as a second line behind the IPA keepalive; unacknowledged data gives up
# after the user timeout.
_KEEPALIVE = ((socket.TCP_KEEPIDLE, 30), (socket.TCP_KEEPINTVL, 10), (socket.TCP_KEEPCNT, 3))
_USER_TIMEOUT_MS = 60_000
_RECV_SIZE = 65536


def tune_client_socket(sock: socket.socket) -> None:
    sock.setblocking(True)
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE, 1)
    for option, value in _KEEPALIVE:
        sock.setsockopt(socket.IPPROTO_TCP, option, value)
    if hasattr(socket, "TCP_USER_TIMEOUT"):
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_USER_TIMEOUT, _USER_TIMEOUT_MS)


class ClientConnection:
    """One client connection and the thread that serves it."""

    def __init__(
        self, bankd: Bankd, sock: socket.socket, sid: int, peer: str, host: str = ""
    ) -> None:
        self.bankd = bankd
        self.sock = sock
        self.sid = sid
        self.peer = peer
        self.host = host  # the client's address, for the per-host limit
        self.log_fields = {"peer": peer}
        self.conn = RsproConnection(initiator=False, keepalive=bankd.config.client_keepalive)
        self._identify_by: float | None = None  # until a valid connectClientReq came
        self._checking_since: float | None = None  # a CheckAlive's PING went out then
        self._inbox: queue.SimpleQueue[Action] = queue.SimpleQueue()
        self._wake = os.eventfd(0, os.EFD_NONBLOCK | os.EFD_CLOEXEC)  # one FD, not a pipe's two
        self._open = True
        # The card this session opened: only this thread uses it while the session holds
        # its bank slot, so TPDUs need not look it up (under the bankd lock) each time.
        self._held: Card | None = None
        # The TPDU frames of this session's slot pair, once its first TPDU went the general
        # way: later ones take the fast path (``_fast_tpdu``).
        self._frames: TpduFrames | None = None
        self.thread = threading.Thread(target=self._run, name=f"bankd-client({sid})", daemon=True)

    def start(self) -> None:
        self.thread.start()

    def post(self, action: Action) -> None:
        """Hand an action to this connection's thread (called with the bankd lock held)."""
        self._inbox.put(action)
        with contextlib.suppress(BlockingIOError):  # a full counter already wakes the thread
            os.eventfd_write(self._wake, 1)

    # --- the thread -------------------------------------------------------------------------

    def _run(self) -> None:
        try:
            if self._secure():
                self._serve()
        except OSError as exc:
            log.info("client connection %d: %s", self.sid, exc, extra=self.log_fields)
        except Exception:
            log.exception("client connection %d failed", self.sid, extra=self.log_fields)
        finally:
            self._finish()

    def _secure(self) -> bool:
        """The TLS handshake, if TLS is on, and the client's identity to the core; False
        (logged) if the handshake fails."""
        try:
            self.sock = self.bankd.security.wrap_accepted(self.sock)
        except (OSError, ValueError) as exc:  # ssl.SSLError is an OSError
            log.warning(
                "client connection %d: TLS handshake failed: %s",
                self.sid,
                exc,
                extra=self.log_fields,
            )
            return False
        if isinstance(self.sock, ssl.SSLSocket):
            self.bankd.session_secured(self.sid, PeerIdentity.from_peer(self.sock))
        return True

    def _serve(self) -> None:
        poller = select.poll()
        poller.register(self.sock, select.POLLIN)
        poller.register(self._wake, select.POLLIN)
        sock_fd = self.sock.fileno()
        now = time.monotonic()
        conn = self.conn
        conn.start(now, idle=True)
        self._identify_by = now + self.bankd.config.identify_timeout
        while self._open:
            deadline = conn.next_deadline()
            identify_by = self._identify_by
            if identify_by is not None and (deadline is None or identify_by < deadline):
                deadline = identify_by
            timeout = None
            if deadline is not None:
                now = time.monotonic()
                if now >= deadline:
                    self._timers(now)
                    continue
                timeout = int((deadline - now) * 1000) + 1
            for fd, _ in poller.poll(timeout):
                if fd == sock_fd:
                    data = self._recv()
                    if not data:
                        log.debug(
                            "client connection %d closed by the client",
                            self.sid,
                            extra=self.log_fields,
                        )
                        return
                    if self._frames is None or conn.buffered or not self._fast_tpdu(data):
                        self._received(data)
                else:
                    with contextlib.suppress(BlockingIOError):
                        os.eventfd_read(self._wake)
                    self._execute(self._drain_inbox())
                if not self._open:
                    return

    def _timers(self, now: float) -> None:
        if self._identify_by is not None and now >= self._identify_by:
            timeout = self.bankd.config.identify_timeout
            REFUSED.labels("identify_timeout").inc()
            self._give_up(f"no connectClientReq within {timeout:g}s")
            return
        for event in self.conn.handle_timeout(now):
            if isinstance(event, KeepaliveTimedOut):
                if self._checking_since is None:
                    CLIENT_KEEPALIVE_TIMEOUTS.inc()
                self._give_up(self._no_pong())
                return
        self._flush()  # a keepalive PING

    def _give_up(self, why: str) -> None:
        """End the session for a timeout (the core says what to send and release first)."""
        self._identify_by = None
        self._execute(self.bankd.drop(self.sid, why))
        self._open = False

    def _no_pong(self) -> str:
        if self._checking_since is not None:
            return (
                f"no PONG within {self.bankd.config.alive_check_timeout:g}s "
                "while another connection claims its client slot"
            )
        return f"keepalive: no PONG within {self.bankd.config.client_keepalive.timeout:g}s"

    def _recv(self) -> bytes:
        data = self.sock.recv(_RECV_SIZE)
        if isinstance(self.sock, ssl.SSLSocket):  # decrypted bytes poll() cannot see
            while pending := self.sock.pending():
                data += self.sock.recv(pending)
        return data

    def _fast_tpdu(self, data: bytes) -> bool:
        """The APDU path: ``data`` is one TpduModemToCard of this session's slot pair
        (``TpduFrames``) and the core still lets its TPDUs flow (``Bankd.tpdus_flow``, as
        ``BankdCore.receive`` would decide): the card's answer goes out in one send, with
        what ``card_response`` would send, counted as on the general path. False (nothing
        done): not such a frame, take the general path."""
        frames, card = self._frames, self._held
        assert frames is not None
        apdu = frames.parse_modem_to_card(data)
        if apdu is None or card is None or not MIN_TPDU <= len(apdu) <= MAX_TPDU:
            return False
        bankd, sid = self.bankd, self.sid
        if not bankd.tpdus_flow(sid, frames):
            return False
        TO_CARD.inc()
        started = time.perf_counter()
        try:
            response = card.transmit(apdu)
        except CardError as exc:
            self._card_failed(exc)
            return True
        TPDU_ROUNDTRIP.observe(time.perf_counter() - started)
        bankd.core.tpdus.count(frames.bank.slot_nr, started)  # card activity
        if bankd.tpdus_flow(sid, frames):  # still: else the answer is dropped, as the core does
            TO_MODEM.inc()
            frame = frames.card_to_modem(response)
            pending = self.conn.data_to_send()  # a PONG answered before, if any
            self._send(pending + frame if pending else frame)
        if bankd.tracer is not None:
            bankd.tracer.apdu(frames.bank.slot_nr, apdu, response)
        return True

    def _received(self, data: bytes) -> None:
        try:
            events = self.conn.receive_data(data, time.monotonic())
        except IpaFramingError as exc:
            log.warning("client connection %d: %s: closing", self.sid, exc, extra=self.log_fields)
            self._open = False
            return
        bankd, sid = self.bankd, self.sid
        since = self._checking_since
        if since is not None and self.conn.last_pong is not None and self.conn.last_pong >= since:
            self._checking_since = None
            self._execute(bankd.alive(sid))
        for event in events:
            if isinstance(event, PduReceived):
                msg = event.pdu.msg
                self._execute(bankd.receive(sid, msg))
                if isinstance(msg, ConnectClientReq) and self._open:
                    self._identify_by = None
            else:
                log.warning(
                    "client connection %d: %s: closing", self.sid, event, extra=self.log_fields
                )
                self._open = False
            if not self._open:
                return
        self._flush()  # PONGs

    def _drain_inbox(self) -> list[Action]:
        actions = []
        while True:
            try:
                actions.append(self._inbox.get_nowait())
            except queue.Empty:
                return actions

    def _execute(self, actions: list[Action]) -> None:
        """Carry out actions in order; what an action leads to is done before the next one."""
        bankd, sid = self.bankd, self.sid
        for action in actions:
            if not self._open and not isinstance(action, ReleaseCard):
                continue  # the session is over: only its card release still matters
            if type(action) is Transmit:
                data = action.tpdu.data
                TO_CARD.inc()
                started = time.perf_counter()
                try:
                    response = self._card(action.slot).transmit(data)
                except CardError as exc:
                    self._card_failed(exc)
                    continue
                TPDU_ROUNDTRIP.observe(time.perf_counter() - started)
                bankd.core.tpdus.count(action.slot.slot_nr, started)  # card activity
                answer = bankd.card_response(sid, action.tpdu, response)
                if answer:
                    TO_MODEM.inc()
                    if self._frames is None:
                        self._frames = bankd.tpdu_frames(sid)
                self._execute(answer)
                if bankd.tracer is not None:
                    bankd.tracer.apdu(action.slot.slot_nr, data, response)
            elif type(action) is Send:
                msg = action.msg
                if type(msg) is ConnectClientRes and msg.features is not None and msg.features.apdu:
                    self.conn.allow_large_frames()  # APDU mode: whole APDUs both ways
                self.conn.send(msg)
            elif type(action) is TransmitApdu:
                self._transmit_apdu(action)
            elif isinstance(action, CheckAlive):
                now = time.monotonic()
                self._checking_since = now
                self.conn.ping(now, bankd.config.alive_check_timeout)
            elif isinstance(action, OpenCard | ResetCard):
                try:
                    if isinstance(action, OpenCard):
                        self._held = card = bankd.card(action.slot)
                        if action.any_protocol:
                            atr = card.connect(any_protocol=True)
                        else:  # as card objects of old (test doubles) expect
                            atr = card.connect()
                    else:
                        card = self._card(action.slot)
                        atr = card.reset(action.warm)
                except CardError as exc:
                    self._card_failed(exc)
                    continue
                self._execute(bankd.card_opened(sid, atr, card_protocol(card)))
                if bankd.tracer is not None:
                    bankd.tracer.atr(action.slot.slot_nr, atr)
            elif isinstance(action, ReleaseCard):
                try:
                    self._card(action.slot).disconnect()
                except CardError as exc:
                    log.warning(
                        "releasing the card of %s failed: %s",
                        action.slot,
                        exc,
                        extra={"bank_slot": str(action.slot)},
                    )
                self._held = None
                self._execute(bankd.card_released(sid, action.slot))
            elif isinstance(action, Close):
                self._flush()
                self._open = False
        self._flush()

    def _transmit_apdu(self, action: TransmitApdu) -> None:
        """One whole C-APDU to the card and its R-APDU back (see the module's text)."""
        bankd, msg, slot_nr = self.bankd, action.apdu, action.slot.slot_nr
        try:
            card = self._card(action.slot)
        except CardError as exc:  # as a card that fails
            self._held = None
            self._execute(bankd.apdu_failed(self.sid, msg, exc))
            return
        transmit: Callable[[bytes], bytes] = card.transmit
        tracer = bankd.tracer
        if tracer is not None and tracer.wants(slot_nr):

            def transmit(tpdu: bytes) -> bytes:  # each TPDU traced as in TPDU mode
                response = card.transmit(tpdu)
                tracer.apdu(slot_nr, tpdu, response)
                return response

        started = time.perf_counter()
        try:
            rapdu = exchange(msg.capdu, transmit, card_protocol(card))
        except ApduError as exc:  # answered by the bankd: the card saw nothing
            log.debug("client connection %d: %s", self.sid, exc, extra=self.log_fields)
            self._execute(bankd.apdu_response(self.sid, msg, exc.sw, str(exc)))
            return
        except CardError as exc:
            TO_CARD.inc()
            self._held = None
            self._execute(bankd.apdu_failed(self.sid, msg, exc))
            return
        TO_CARD.inc()
        TPDU_ROUNDTRIP.observe(time.perf_counter() - started)
        bankd.core.tpdus.count(slot_nr, started)  # card activity
        answer = bankd.apdu_response(self.sid, msg, rapdu)
        if answer:
            TO_MODEM.inc()
        self._execute(answer)

    def _card(self, slot: BankSlot) -> Card:
        """The card of ``slot``: the one this session opened, else the bankd's."""
        card = self._held
        return card if card is not None else self.bankd.card(slot)

    def _card_failed(self, error: CardError) -> None:
        self._held = None
        self._execute(self.bankd.card_failed(self.sid, error))

    def _flush(self) -> None:
        data = self.conn.data_to_send()
        if data:
            self._send(data)

    def _send(self, data: bytes) -> None:
        if self._open:
            try:
                self.sock.sendall(data)
            except OSError as exc:  # the client vanished mid-response
                log.info("client connection %d: %s", self.sid, exc, extra=self.log_fields)
                self._open = False

    def _finish(self) -> None:
        self._open = False
        with contextlib.suppress(OSError):
            self.sock.shutdown(socket.SHUT_RDWR)
        self.sock.close()
        # Whatever was posted before the session ended must still run: a card release.
        self._execute(self.bankd.session_closed(self.sid) + self._drain_inbox())
        os.close(self._wake)
