"""vsmartcard vpcd protocol, virtual card side.

vpcd (the pcscd reader driver) listens on TCP 35963 + slot; a virtual card connects to it.
Every message both ways is a 2-byte big-endian length followed by that many bytes. From
vpcd, a 1-byte message is a control command (power off / power on / reset: no reply; get
ATR: reply the ATR), anything else a C-APDU (reply the R-APDU). Closing the connection is
how a card leaves the reader.

`VpcdConnection` is the sans-IO part (bytes in, events out, framed replies out);
`VpcdCardRunner` connects to vpcd and serves any `VirtualCard`; `CardAsVirtualCard` makes a
`Card` driver one.
"""

from __future__ import annotations

import contextlib
import logging
import socket
import threading
from dataclasses import dataclass
from typing import Protocol

from .card import Card, CardError

__all__ = [
    "GET_ATR",
    "POWER_OFF",
    "POWER_ON",
    "RESET",
    "VPCD_PORT",
    "Apdu",
    "CardAsVirtualCard",
    "Control",
    "VirtualCard",
    "VpcdCardRunner",
    "VpcdConnection",
    "frame",
]

log = logging.getLogger(__name__)

VPCD_PORT = 0x8C7B  # 35963: slot 0; slot n listens on VPCD_PORT + n

POWER_OFF = 0x00
POWER_ON = 0x01
RESET = 0x02
GET_ATR = 0x04

_MAX = 0xFFFF


@dataclass(frozen=True, slots=True)
class Control:
    """A 1-byte control message: POWER_OFF, POWER_ON, RESET, GET_ATR (or an unknown code)."""

    code: int


@dataclass(frozen=True, slots=True)
class Apdu:
    """A command APDU to be answered with an R-APDU."""

    data: bytes


def frame(payload: bytes) -> bytes:
    """One vpcd message: 2-byte big-endian length, payload."""
    if not payload or len(payload) > _MAX:
        # A zero-length reply hangs vpcd (it waits for 0 bytes forever); say "gone" by closing.
        raise ValueError(f"vpcd message must be 1..{_MAX} bytes, got {len(payload)}")
    return len(payload).to_bytes(2, "big") + payload


class VpcdConnection:
    """Sans-IO card side of one vpcd connection.

    `feed` the bytes received from vpcd (any slicing) and get the complete messages as
    events; answer each `Apdu` and each GET_ATR `Control` with `reply`, in order. Other
    control messages must not be answered.
    """

    __slots__ = ("_buf", "_owed")

    def __init__(self) -> None:
        self._buf = bytearray()
        self._owed = 0

    @property
    def replies_owed(self) -> int:
        return self._owed

    def feed(self, data: bytes) -> list[Control | Apdu]:
        buf = self._buf
        buf += data
        events: list[Control | Apdu] = []
        while len(buf) >= 2:
            n = buf[0] << 8 | buf[1]
            if len(buf) < 2 + n:
                break
            body = bytes(buf[2 : 2 + n])
            del buf[: 2 + n]
            if n == 1:
                events.append(Control(body[0]))
                if body[0] == GET_ATR:
                    self._owed += 1
            else:
                events.append(Apdu(body))
                self._owed += 1
        return events

    def reply(self, payload: bytes) -> bytes:
        """Frame the answer to the oldest pending GET_ATR or APDU."""
        if not self._owed:
            raise RuntimeError("vpcd does not expect a message now (no unsolicited messages)")
        data = frame(payload)
        self._owed -= 1
        return data


class VirtualCard(Protocol):
    """What `VpcdCardRunner` serves: a card that may come and go.

    `atr` is asked every ~0.4 s while connected (presence polling), also while powered off,
    so it must answer from memory. `transmit` may raise `CardError`: the runner then closes
    the connection, which pcscd sees as card removal.
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


class CardAsVirtualCard:
    """Serve a `Card` driver to vpcd.

    With `follow_power` (default), pcscd's POWER OFF / POWER ON / RESET are done on the card
    (disconnect / connect / warm reset): the card state is lost on pcscd's idle power-down,
    as with a real card in a real reader. Without it, they are ignored and the card stays
    powered.
    """

    def __init__(self, card: Card, *, follow_power: bool = True) -> None:
        self.card = card
        self.follow_power = follow_power
        self._atr = b""

    @property
    def present(self) -> bool:
        if not self._atr:
            try:
                self._atr = self.card.connect()
            except CardError:
                return False
        return True

    @property
    def atr(self) -> bytes:
        return self._atr

    def power_on(self) -> None:
        if self.follow_power:
            self._atr = self.card.connect()

    def power_off(self) -> None:
        if self.follow_power:
            self.card.disconnect()

    def reset(self) -> None:
        if self.follow_power:
            self._atr = self.card.reset(warm=True)

    def transmit(self, apdu: bytes) -> bytes:
        try:
            return self.card.transmit(apdu)
        except CardError:
            self._atr = b""  # reconnect (and re-insert) only once `connect` works again
            raise


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
                    except CardError as e:
                        log.warning("card failed: %s; leaving the reader", e)
                        return
                    if debug:
                        log.debug("APDU %s -> %s", event.data.hex(), rapdu.hex())
                    sendall(conn.reply(rapdu))
                    continue
                assert isinstance(event, Control)
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
                except CardError as e:
                    log.warning("card failed on control %#04x: %s; leaving the reader", code, e)
                    return
