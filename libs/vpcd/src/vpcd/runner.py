"""A blocking virtual card for vpcd: `VpcdCardRunner` serves any `VirtualCard`."""

from __future__ import annotations

import contextlib
import logging
import socket
import threading
from typing import Protocol

from .errors import CardGone
from .protocol import (
    GET_ATR,
    MAX_RAPDU,
    POWER_OFF,
    POWER_ON,
    RESET,
    VPCD_PORT,
    Apdu,
    VpcdConnection,
)

__all__ = ["SW_TOO_LONG", "VirtualCard", "VpcdCardRunner"]

SW_TOO_LONG = b"\x67\x00"
"""What vpcd gets instead of an R-APDU longer than `MAX_RAPDU` (wrong length: the command's
Le asks for more than vpcd carries)."""

log = logging.getLogger(__name__)


class VirtualCard(Protocol):
    """What `VpcdCardRunner` serves: a card that may come and go.

    `atr` is asked every ~0.4 s while connected (presence polling), also while powered off,
    so it must answer from memory. `transmit` and the power calls may raise `CardGone`: the
    runner then closes the connection, which pcscd sees as card removal. An R-APDU longer
    than `MAX_RAPDU` (65,535 bytes) is logged and answered `SW_TOO_LONG`; an empty one takes
    the card out of the reader (vpcd hangs on an empty message).
    """

    @property
    def present(self) -> bool:
        """Whether the card should be in the reader now (the runner connects only then)."""
        ...

    @property
    def atr(self) -> bytes: ...

    def power_on(self) -> None: ...

    def power_off(self) -> None: ...

    def reset(self) -> None: ...

    def transmit(self, apdu: bytes) -> bytes: ...


_QUICKACK: int | None = getattr(socket, "TCP_QUICKACK", None)


class VpcdCardRunner:
    """Connect to vpcd as a virtual card and serve `card` until `stop()`.

    Blocking; run it in its own thread or process. Reconnects every `reconnect_interval`
    seconds while vpcd is unreachable (pcscd restart) or the card is not `present`.
    """

    def __init__(
        self,
        card: VirtualCard,
        host: str = "127.0.0.1",
        port: int = VPCD_PORT,
        *,
        reconnect_interval: float = 1.0,
    ) -> None:
        self.card = card
        self.host = host
        self.port = port
        self.reconnect_interval = reconnect_interval
        self.connected = threading.Event()  # set while a vpcd connection is up
        self._stop = threading.Event()
        self._sock: socket.socket | None = None
        self._lock = threading.Lock()

    def run(self) -> None:
        while not self._stop.is_set():
            if not self.card.present:
                self._stop.wait(self.reconnect_interval)
                continue
            try:
                sock = socket.create_connection(
                    (self.host, self.port), timeout=self.reconnect_interval
                )
            except OSError as e:
                log.debug("vpcd %s:%d not reachable: %s", self.host, self.port, e)
                self._stop.wait(self.reconnect_interval)
                continue
            with self._lock:
                if self._stop.is_set():
                    sock.close()
                    break
                self._sock = sock
            log.info("connected to vpcd %s:%d (card inserted)", self.host, self.port)
            self.connected.set()
            try:
                self._serve(sock)
            except OSError as e:
                log.info("vpcd connection lost: %s", e)
            finally:
                self.connected.clear()
                with self._lock:
                    self._sock = None
                sock.close()
            log.info("disconnected from vpcd %s:%d (card removed)", self.host, self.port)
            if not self._stop.is_set():
                # vpcd closed on us (pcscd going away) or the card left: don't spin.
                self._stop.wait(min(self.reconnect_interval, 0.1))

    def stop(self) -> None:
        """Make `run` return soon; safe from other threads and signal handlers."""
        self._stop.set()
        sock = self._sock
        if sock is not None:
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)

    def _serve(self, sock: socket.socket) -> None:
        sock.settimeout(None)
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        conn = VpcdConnection()
        card = self.card
        recv, sendall, setsockopt = sock.recv, sock.sendall, sock.setsockopt
        tcp, quickack = socket.IPPROTO_TCP, _QUICKACK
        debug = log.isEnabledFor(logging.DEBUG)
        while True:
            if quickack is not None:
                # Linux drops quick-ACK mode again by itself: re-arm it before every read, or
                # vpcd's length-then-body writes wait for our delayed ACK (~40 ms) each time.
                setsockopt(tcp, quickack, 1)
            data = recv(0x10002)
            if not data:
                return
            for event in conn.feed(data):
                if type(event) is Apdu:
                    try:
                        rapdu = card.transmit(event.data)
                    except CardGone as e:
                        log.warning("card failed: %s; leaving the reader", e)
                        return
                    if debug:
                        log.debug("APDU %s -> %s", event.data.hex(), rapdu.hex())
                    if len(rapdu) > MAX_RAPDU:
                        log.error(
                            "R-APDU of %d bytes to %s exceeds vpcd's %d-byte limit; answering %s",
                            len(rapdu),
                            event.data[:4].hex(),
                            MAX_RAPDU,
                            SW_TOO_LONG.hex(),
                        )
                        rapdu = SW_TOO_LONG
                    elif not rapdu:
                        log.warning("card answered an empty R-APDU; leaving the reader")
                        return
                    sendall(conn.reply(rapdu))
                    continue
                assert not isinstance(event, Apdu)
                code = event.code
                try:
                    if code == GET_ATR:
                        atr = card.atr if card.present else b""
                        if not atr:
                            return  # card gone: leave the reader rather than answer nothing
                        sendall(conn.reply(atr))
                    elif code == POWER_ON:
                        card.power_on()
                    elif code == POWER_OFF:
                        card.power_off()
                    elif code == RESET:
                        card.reset()
                    else:
                        log.warning("unknown vpcd control message %#04x ignored", code)
                    if debug:
                        log.debug("control %#04x", code)
                except CardGone as e:
                    log.warning("card failed on control %#04x: %s; leaving the reader", code, e)
                    return
