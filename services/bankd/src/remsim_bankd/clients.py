"""Client connections (port 9999): each one served by its own thread, as the original does.

The thread owns its socket and makes the card calls of its session: a TPDU is read,
transmitted to the card and answered without leaving the thread, so the APDU path has no
hand-off between threads (each one costs tens of microseconds). Card calls block, so one
slow card delays only its own connection. Everything else about the session is decided by
the shared ``BankdCore`` (through ``Bankd.run``); actions for this connection that arise
elsewhere (a map removed by the server, a card retry timer) arrive in its inbox.

The bankd never pings its clients (as the original); it answers their PINGs. Frames may
arrive split or coalesced in any way, and a client that vanishes ends only its own session.

Each TPDU is counted (``remsim_tpdus_relayed_total``) and its card round trip observed
(``remsim_tpdu_roundtrip_seconds``) right in this thread: about 1.5 µs, no hand-off.
"""

from __future__ import annotations

import contextlib
import logging
import os
import queue
import select
import socket
import threading
import time
from typing import TYPE_CHECKING

from remsim_control.metrics import METRICS
from rspro import BankSlot, IpaFramingError, PduReceived, RsproConnection

from .card import Card, CardError
from .core import Action, Close, OpenCard, ReleaseCard, ResetCard, Send, Transmit

if TYPE_CHECKING:
    from .bankd import Bankd

__all__ = ["ClientConnection", "tune_client_socket"]

log = logging.getLogger("remsim_bankd.clients")

# The bankd sends nothing on an idle link, so only TCP keepalive notices a client host that
# died without a FIN (it would hold its bank slot for hours); unacknowledged data gives up
# after the user timeout.
_KEEPALIVE = ((socket.TCP_KEEPIDLE, 30), (socket.TCP_KEEPINTVL, 10), (socket.TCP_KEEPCNT, 3))
_USER_TIMEOUT_MS = 60_000

# The metric children of the TPDU path, looked up once.
_TO_CARD = METRICS.tpdus_relayed.labels("modem_to_card")
_TO_MODEM = METRICS.tpdus_relayed.labels("card_to_modem")
_ROUNDTRIP = METRICS.tpdu_roundtrip


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

    def __init__(self, bankd: Bankd, sock: socket.socket, sid: int, peer: str) -> None:
        self.bankd = bankd
        self.sock = sock
        self.sid = sid
        self.peer = peer
        self.conn = RsproConnection(initiator=False, keepalive=None)
        self._inbox: queue.SimpleQueue[Action] = queue.SimpleQueue()
        self._wake_r, self._wake_w = os.pipe()
        os.set_blocking(self._wake_w, False)  # a full pipe already wakes the thread
        self._open = True
        # The card this session opened: only this thread uses it while the session holds
        # its bank slot, so TPDUs need not look it up (under the bankd lock) each time.
        self._held: Card | None = None
        self.thread = threading.Thread(target=self._run, name=f"bankd-client({sid})", daemon=True)

    def start(self) -> None:
        self.thread.start()

    def post(self, action: Action) -> None:
        """Hand an action to this connection's thread (called with the bankd lock held)."""
        self._inbox.put(action)
        with contextlib.suppress(BlockingIOError):
            os.write(self._wake_w, b"\0")

    # --- the thread -------------------------------------------------------------------------

    def _run(self) -> None:
        try:
            self._serve()
        except OSError as exc:
            log.info("client %s (%d): %s", self.peer, self.sid, exc)
        except Exception:
            log.exception("client %s (%d): connection failed", self.peer, self.sid)
        finally:
            self._finish()

    def _serve(self) -> None:
        poller = select.poll()
        poller.register(self.sock, select.POLLIN)
        poller.register(self._wake_r, select.POLLIN)
        sock_fd = self.sock.fileno()
        while self._open:
            for fd, _ in poller.poll():
                if fd == sock_fd:
                    data = self.sock.recv(65536)
                    if not data:
                        log.debug("client %s (%d) closed the connection", self.peer, self.sid)
                        return
                    self._received(data)
                else:
                    os.read(self._wake_r, 4096)
                    self._execute(self._drain_inbox())
                if not self._open:
                    return

    def _received(self, data: bytes) -> None:
        try:
            events = self.conn.receive_data(data, time.monotonic())
        except IpaFramingError as exc:
            log.warning("client %s (%d): %s: closing", self.peer, self.sid, exc)
            self._open = False
            return
        bankd, sid = self.bankd, self.sid
        for event in events:
            if isinstance(event, PduReceived):
                self._execute(bankd.run(sid, bankd.core.receive, sid, event.pdu.msg))
            else:
                log.warning("client %s (%d): %s: closing", self.peer, self.sid, event)
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
                _TO_CARD.inc()
                started = time.perf_counter()
                try:
                    response = self._card(action.slot).transmit(data)
                except CardError as exc:
                    self._card_failed(exc)
                    continue
                _ROUNDTRIP.observe(time.perf_counter() - started)
                answer = bankd.run(sid, bankd.core.card_response, sid, action.tpdu, response)
                if answer:
                    _TO_MODEM.inc()
                self._execute(answer)
                if bankd.tracer is not None:
                    bankd.tracer.apdu(action.slot.slot_nr, data, response)
            elif type(action) is Send:
                self.conn.send(action.msg)
            elif isinstance(action, OpenCard | ResetCard):
                try:
                    if isinstance(action, OpenCard):
                        self._held = card = bankd.card(action.slot)
                        atr = card.connect()
                    else:
                        atr = self._card(action.slot).reset(action.warm)
                except CardError as exc:
                    self._card_failed(exc)
                    continue
                self._execute(bankd.run(sid, bankd.core.card_opened, sid, atr))
                if bankd.tracer is not None:
                    bankd.tracer.atr(action.slot.slot_nr, atr)
            elif isinstance(action, ReleaseCard):
                try:
                    self._card(action.slot).disconnect()
                except CardError as exc:
                    log.warning("%s: releasing the card failed: %s", action.slot, exc)
                self._held = None
                self._execute(bankd.run(sid, bankd.core.card_released, action.slot))
            elif isinstance(action, Close):
                self._flush()
                self._open = False
        self._flush()

    def _card(self, slot: BankSlot) -> Card:
        """The card of ``slot``: the one this session opened, else the bankd's."""
        card = self._held
        return card if card is not None else self.bankd.card(slot)

    def _card_failed(self, error: CardError) -> None:
        self._held = None
        self._execute(self.bankd.card_failed(self.sid, error))

    def _flush(self) -> None:
        data = self.conn.data_to_send()
        if data and self._open:
            try:
                self.sock.sendall(data)
            except OSError as exc:  # the client vanished mid-response
                log.info("client %s (%d): %s", self.peer, self.sid, exc)
                self._open = False

    def _finish(self) -> None:
        self._open = False
        with contextlib.suppress(OSError):
            self.sock.shutdown(socket.SHUT_RDWR)
        self.sock.close()
        # Whatever was posted before the session ended must still run: a card release.
        self._execute(self.bankd.end_session(self.sid) + self._drain_inbox())
        os.close(self._wake_r)
        os.close(self._wake_w)
