"""A thin asyncio layer over ``RsproConnection``: TCP (optionally TLS) in, PDUs out.

One ``RsproStream`` per TCP connection. Bytes are moved by an ``asyncio.Protocol`` (no
reader task, no copies beyond the framer), keepalive timers run on the loop, and every
frame is written with a single ``transport.write`` (deployed bankds drop a client whose
frame arrives split). TCP_NODELAY is set on every socket: the TPDU path is latency-bound.

The TPDUs of a card session take a shorter way (``rspro.tpdu.TpduFrames``): a TPDU sent with
the default envelope and flags is written from pre-encoded frame bytes, and a received chunk
that is exactly one such TPDU of the slot pair last sent is turned into its PDU by a few
byte comparisons, the framer and the decoder skipped. The bytes on the wire and the PDUs
delivered are the same either way.
"""

from __future__ import annotations

import asyncio
import collections
import logging
import socket
import ssl as _ssl
from collections.abc import AsyncIterator, Awaitable, Callable

from .connection import (
    DEFAULT_KEEPALIVE,
    InvalidPdu,
    Keepalive,
    KeepaliveTimedOut,
    PduReceived,
    RsproConnection,
)
from .errors import ConnectionClosedError, KeepaliveTimeoutError, RsproError
from .messages import (
    NO_FLAGS,
    BankSlot,
    ClientSlot,
    Message,
    RsproPdu,
    TpduCardToModem,
    TpduModemToCard,
)
from .tls import connect_tls
from .tpdu import TpduFrames

log = logging.getLogger("rspro")

Handler = Callable[["RsproStream"], Awaitable[None]]
TlsFailureHandler = Callable[[tuple[str, int], str], None]
"""Told the peer address and the reason of a failed TLS handshake (instead of a log line)."""
Admit = Callable[[tuple[str, int], tuple[str, int]], Callable[[], None] | None]
"""Asked (our address, the peer's address) of each accepted connection before anything is
read from it, a TLS handshake included: a function to call once the connection is over, or
None to refuse it (then it is closed at once)."""

TLS_HANDSHAKE_TIMEOUT = 10.0
"""Seconds an accepted connection has to complete its TLS handshake."""
LISTEN_BACKLOG = 1024
"""Connections the kernel queues for a listener before they are accepted (connect bursts)."""


def tune_socket(sock: socket.socket | None) -> None:
    """Low-latency options for an RSPRO socket."""
    if sock is None or sock.family not in (socket.AF_INET, socket.AF_INET6):
        return
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)


class RsproStream(asyncio.Protocol):
    """An RSPRO connection on the event loop: ``await recv()``, ``send()``, ``close()``."""

    def __init__(
        self,
        conn: RsproConnection,
        on_connection_made: Callable[[RsproStream], None] | None = None,
        *,
        drop_invalid: bool = False,
        report_errors: bool = True,
    ) -> None:
        self.conn = conn
        self.drop_invalid = drop_invalid
        self.report_errors = report_errors
        """Log why a peer's bytes closed the connection (False: its owner reports
        ``error``, e.g. rate-limited)."""
        self._on_connection_made = on_connection_made
        self._loop = asyncio.get_running_loop()
        self._transport: asyncio.Transport | None = None
        self._inbox: collections.deque[RsproPdu] = collections.deque()
        self._receiver: Callable[[RsproPdu], None] | None = None
        self._waiter: asyncio.Future[None] | None = None
        self._timer: asyncio.TimerHandle | None = None
        self._error: RsproError | None = None
        self._closed = self._loop.create_future()
        self._frames: TpduFrames | None = None  # the slot pair of the last TPDU sent
        self.peername: tuple[str, int] = ("", 0)
        self.sockname: tuple[str, int] = ("", 0)

    # --- asyncio.Protocol -----------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self._transport = transport
        tune_socket(transport.get_extra_info("socket"))
        self.peername = tuple(transport.get_extra_info("peername")[:2])
        self.sockname = tuple(transport.get_extra_info("sockname")[:2])
        self.conn.start(self._loop.time())
        self._flush()
        if self._on_connection_made is not None:
            self._on_connection_made(self)

    def data_received(self, data: bytes) -> None:
        frames = self._frames
        if frames is not None and not self.conn.buffered and not self.conn.closed:
            if self.conn.initiator:  # a client: the bankd's answers
                pdu = frames.card_to_modem_pdu(data)
            else:
                pdu = frames.modem_to_card_pdu(data)
            if pdu is not None:
                if self._receiver is None:
                    self._inbox.append(pdu)
                    self._wake()
                else:
                    self._deliver(pdu)
                return
        try:
            events = self.conn.receive_data(data, self._loop.time())
        except RsproError as exc:
            self._fail(exc)
            return
        for event in events:
            if isinstance(event, PduReceived):
                if self._receiver is None:
                    self._inbox.append(event.pdu)
                else:
                    self._deliver(event.pdu)
            elif isinstance(event, InvalidPdu):
                if not self.drop_invalid:
                    self._fail(event.error)
                    return
                log.error("dropping an invalid PDU from %s:%s: %s", *self.peername, event.error)
        self._flush()
        self._wake()

    def eof_received(self) -> bool | None:
        self._fail(ConnectionClosedError("connection closed by peer"))
        return None

    def connection_lost(self, exc: Exception | None) -> None:
        reason = f"connection lost: {exc}" if exc else "connection closed"
        self._error = self._error or ConnectionClosedError(reason)
        self.conn.close()
        self._cancel_timer()
        self._transport = None
        self._wake()
        if not self._closed.done():
            self._closed.set_result(None)

    # --- public API -----------------------------------------------------------------------

    def get_extra_info(self, name: str, default: object = None) -> object:
        """As ``asyncio.BaseTransport.get_extra_info`` ("socket", "peername", "ssl_object", …)."""
        if self._transport is None:
            return default
        try:
            return self._transport.get_extra_info(name, default)
        except AttributeError:  # asyncio's TLS transport, once closed, raises this
            return default

    @property
    def error(self) -> RsproError | None:
        """Why the connection ended (None while it is open)."""
        return self._error

    @property
    def is_closing(self) -> bool:
        return self._transport is None or self._transport.is_closing()

    def send(self, msg: Message | RsproPdu) -> None:
        """Encode and write one PDU now. Raises ConnectionClosedError when closed (also
        when the peer's bad bytes closed it: that error is ``error``)."""
        if self._transport is None or self._transport.is_closing():
            if isinstance(self._error, ConnectionClosedError):
                raise self._error
            raise ConnectionClosedError(f"connection is closed: {self._error or 'locally'}")
        if (
            (type(msg) is TpduModemToCard or type(msg) is TpduCardToModem)
            and msg.flags is NO_FLAGS
            and not self.conn.closed
        ):
            self._send_tpdu(msg)
            return
        self.conn.send(msg)
        self._flush()

    def _send_tpdu(self, msg: TpduModemToCard | TpduCardToModem) -> None:
        """``send(msg)`` from pre-encoded frames: the same bytes, one write."""
        if isinstance(msg, TpduModemToCard):
            frame = self._tpdu_frames(msg.from_client_slot, msg.to_bank_slot).modem_to_card(
                msg.data
            )
        else:
            frame = self._tpdu_frames(msg.to_client_slot, msg.from_bank_slot).card_to_modem(
                msg.data
            )
        pending = self.conn.data_to_send()  # nothing, unless queued without a flush
        assert self._transport is not None
        self._transport.write(pending + frame if pending else frame)

    def _tpdu_frames(self, client: ClientSlot, bank: BankSlot) -> TpduFrames:
        """The frames of this slot pair (those of the last TPDU sent, usually)."""
        frames = self._frames
        if (
            frames is None
            or (frames.client is not client and frames.client != client)
            or (frames.bank is not bank and frames.bank != bank)
        ):
            frames = self._frames = TpduFrames(client, bank)
        return frames

    def set_receiver(self, receiver: Callable[[RsproPdu], None] | None) -> None:
        """Have each PDU handed to ``receiver(pdu)`` as it arrives, instead of ``recv()``.

        This saves the hop through a reader task on latency-critical links; the receiver runs
        in the protocol callback, so it must not block. An exception it raises is logged.
        """
        self._receiver = receiver
        while receiver is not None and self._inbox:
            self._deliver(self._inbox.popleft())

    def _deliver(self, pdu: RsproPdu) -> None:
        assert self._receiver is not None
        try:
            self._receiver(pdu)
        except Exception:
            log.exception("handling %s from %s:%s failed", type(pdu.msg).__name__, *self.peername)

    async def recv(self) -> RsproPdu:
        """The next PDU. Raises ConnectionClosedError (or a subclass) when the link is gone."""
        while not self._inbox:
            if self._error is not None:
                raise self._error
            self._waiter = self._loop.create_future()
            try:
                await self._waiter
            finally:
                self._waiter = None
        return self._inbox.popleft()

    def __aiter__(self) -> AsyncIterator[RsproPdu]:
        return self._iterate()

    async def _iterate(self) -> AsyncIterator[RsproPdu]:
        while True:
            try:
                yield await self.recv()
            except ConnectionClosedError:
                return

    def close(self) -> None:
        if self._transport is not None:
            self._transport.close()

    def abort(self) -> None:
        if self._transport is not None:
            self._transport.abort()

    async def wait_closed(self) -> None:
        await asyncio.shield(self._closed)

    async def aclose(self) -> None:
        self.close()
        await self.wait_closed()

    async def __aenter__(self) -> RsproStream:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    # --- internals ------------------------------------------------------------------------

    def _flush(self) -> None:
        data = self.conn.data_to_send()
        if data and self._transport is not None and not self._transport.is_closing():
            self._transport.write(data)
        self._arm_timer()

    def _arm_timer(self) -> None:
        deadline = self.conn.next_deadline()
        if self._timer is not None:
            if deadline is not None and self._timer.when() == deadline:
                return
            self._timer.cancel()
            self._timer = None
        if deadline is not None and self._transport is not None:
            self._timer = self._loop.call_at(deadline, self._on_timer)

    def _cancel_timer(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None

    def _on_timer(self) -> None:
        self._timer = None
        for event in self.conn.handle_timeout(self._loop.time()):
            if isinstance(event, KeepaliveTimedOut):
                self._fail(KeepaliveTimeoutError("keepalive timeout: no PONG from peer"))
                return
        self._flush()

    def _fail(self, exc: RsproError) -> None:
        if self._error is None:
            self._error = exc
            if self.report_errors and not isinstance(exc, ConnectionClosedError):
                log.warning("closing RSPRO connection from %s:%s: %s", *self.peername, exc)
        self.conn.close()
        self._cancel_timer()
        if self._transport is not None:
            self._transport.abort() if isinstance(exc, KeepaliveTimeoutError) else self.close()
        self._wake()

    def _wake(self) -> None:
        if self._waiter is not None and not self._waiter.done():
            self._waiter.set_result(None)


class _TlsAccept(asyncio.Protocol):
    """The server side of a TLS handshake, before ``stream`` sees the connection.

    asyncio's own TLS accept drops a peer that fails the handshake (a plaintext RSPRO peer
    on a TLS port, a certificate from another CA) without a word: this closes it with one
    log line. Whatever arrives between the handshake and ``stream`` taking over is passed
    on to it, in order.
    """

    def __init__(
        self,
        stream: RsproStream,
        context: _ssl.SSLContext,
        keep: Callable[[asyncio.Task[None]], None],
        on_failure: TlsFailureHandler | None = None,
        admit: Callable[[RsproStream, asyncio.Transport], bool] | None = None,
        release: Callable[[RsproStream], None] | None = None,
    ) -> None:
        self._stream = stream
        self._context = context
        self._keep = keep
        self._on_failure = on_failure
        self._admit = admit
        self._release = release
        self._early: list[bytes] = []
        self._eof = False
        self._lost: list[Exception | None] = []

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        if self._admit is not None and not self._admit(self._stream, transport):
            return  # refused before its handshake: closed
        transport.pause_reading()  # the ClientHello waits in the socket for start_tls
        self._keep(asyncio.get_running_loop().create_task(self._handshake(transport)))

    # the TLS transport's events until the handshake's caller hands over to the stream
    def data_received(self, data: bytes) -> None:
        self._early.append(data)

    def eof_received(self) -> bool | None:
        self._eof = True
        return None

    def connection_lost(self, exc: Exception | None) -> None:
        self._lost.append(exc)

    async def _handshake(self, transport: asyncio.Transport) -> None:
        host, port = (transport.get_extra_info("peername") or ("", 0))[:2]
        loop = asyncio.get_running_loop()
        try:
            tls = await loop.start_tls(
                transport,
                self,
                self._context,
                server_side=True,
                ssl_handshake_timeout=TLS_HANDSHAKE_TIMEOUT,
            )
        except (OSError, TimeoutError) as exc:
            if self._on_failure is not None:
                self._on_failure((host, port), _tls_failure(exc))
            else:
                log.warning("closing connection from %s:%s: TLS handshake failed: %s",
                            host, port, _tls_failure(exc))  # fmt: skip
            transport.abort()
            if self._release is not None:
                self._release(self._stream)
            return
        except BaseException:  # cancelled: the server is closing
            transport.abort()
            if self._release is not None:
                self._release(self._stream)
            raise
        assert tls is not None
        tls.set_protocol(self._stream)
        self._stream.connection_made(tls)
        for data in self._early:
            self._stream.data_received(data)
        if self._eof:
            self._stream.eof_received()
        for error in self._lost:
            self._stream.connection_lost(error)


_NOT_TLS = frozenset({"WRONG_VERSION_NUMBER", "HTTP_REQUEST", "UNKNOWN_PROTOCOL"})
"""OpenSSL's reasons for a first record that is not TLS."""


def _tls_failure(exc: BaseException) -> str:
    """What went wrong in a handshake, in a few words."""
    if isinstance(exc, _ssl.SSLCertVerificationError):
        return f"certificate refused: {exc.verify_message}"
    if isinstance(exc, _ssl.SSLError) and exc.reason:
        reason = str(exc.reason)
        return f"the peer does not speak TLS ({reason})" if reason in _NOT_TLS else reason
    if isinstance(exc, ConnectionResetError):
        return "the peer reset the connection"
    return str(exc) or type(exc).__name__


async def open_connection(
    host: str,
    port: int,
    *,
    keepalive: Keepalive | None = DEFAULT_KEEPALIVE,
    ssl: _ssl.SSLContext | None = None,
    timeout: float = 10.0,
    drop_invalid: bool = False,
) -> RsproStream:
    """Connect to an RSPRO peer; the first PING is sent as soon as TCP is up.

    A PDU that does not decode closes the connection, or with ``drop_invalid`` is logged
    and dropped (what the deployed components do on their connecting side). With ``ssl``
    the link is a ``rspro.tls.TlsSocketTransport`` (OpenSSL on the socket).
    """
    loop = asyncio.get_running_loop()

    def factory() -> RsproStream:
        conn = RsproConnection(initiator=True, keepalive=keepalive)
        return RsproStream(conn, drop_invalid=drop_invalid)

    async with asyncio.timeout(timeout):
        if ssl is None:
            _, stream = await loop.create_connection(factory, host, port)
        else:  # OpenSSL on the socket: a third of the cost of asyncio's TLS transport
            _, protocol = await connect_tls(factory, host, port, ssl)
            assert isinstance(protocol, RsproStream)
            stream = protocol
    return stream


async def start_server(
    handler: Handler,
    host: str | None,
    port: int,
    *,
    keepalive: Keepalive | None = DEFAULT_KEEPALIVE,
    ssl: _ssl.SSLContext | None = None,
    reuse_address: bool = True,
    drop_invalid: bool = False,
    backlog: int = LISTEN_BACKLOG,
    report_errors: bool = True,
    on_tls_failure: TlsFailureHandler | None = None,
    admit: Admit | None = None,
) -> asyncio.Server:
    """Serve RSPRO: ``handler(stream)`` runs as one task per accepted connection.

    The stream is closed when the handler returns or raises; a handler's exception is
    logged and never reaches another connection. With ``ssl`` every connection does the
    TLS handshake first; one that fails it is closed with a log line. A peer's bad bytes
    close its connection with a log line, or without one (``report_errors`` False) when the
    handler reports ``stream.error`` itself; ``on_tls_failure`` likewise takes the place of
    the log line of a failed TLS handshake. ``admit`` (see ``Admit``) decides on each
    connection as it is accepted, before its TLS handshake: connection limits.
    """
    loop = asyncio.get_running_loop()
    tasks: set[asyncio.Task[None]] = set()
    releases: dict[RsproStream, Callable[[], None]] = {}

    def admitted(stream: RsproStream, transport: asyncio.Transport) -> bool:
        if admit is None or stream in releases:
            return True
        release = admit(transport.get_extra_info("sockname"), transport.get_extra_info("peername"))
        if release is None:
            transport.abort()
            return False
        releases[stream] = release
        return True

    def released(stream: RsproStream) -> None:
        if (release := releases.pop(stream, None)) is not None:
            release()

    def keep(task: asyncio.Task[None]) -> None:
        tasks.add(task)
        task.add_done_callback(tasks.discard)

    async def run(stream: RsproStream) -> None:
        try:
            await handler(stream)
        except ConnectionClosedError:
            pass
        except Exception:
            log.exception("RSPRO handler for %s:%s failed", *stream.peername)
        finally:
            stream.close()
            released(stream)

    def spawn(stream: RsproStream) -> None:
        assert stream._transport is not None
        if admitted(stream, stream._transport):
            keep(loop.create_task(run(stream)))

    def factory() -> asyncio.Protocol:
        conn = RsproConnection(initiator=False, keepalive=keepalive)
        stream = RsproStream(conn, spawn, drop_invalid=drop_invalid, report_errors=report_errors)
        if ssl is None:
            return stream
        return _TlsAccept(stream, ssl, keep, on_tls_failure, admitted, released)

    return await loop.create_server(
        factory, host, port, reuse_address=reuse_address, backlog=backlog
    )
