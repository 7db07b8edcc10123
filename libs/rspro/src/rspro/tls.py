"""The connecting side of a TLS link on the event loop, with OpenSSL on the socket.

asyncio's own TLS transport (``create_connection(ssl=...)``) moves every record through a
pair of ``ssl.MemoryBIO`` buffers in Python code: on this project's TPDU path that costs
about 33 µs per round trip, against about 9 µs for a blocking ``ssl.SSLSocket``
(docs/benchmarks.md, "Where the time goes"). ``TlsSocketTransport`` keeps the event loop
but lets OpenSSL read and write the non-blocking socket itself, as a blocking client does:
the loop's selector says when the socket is readable or writable, and one ``recv``/
``send`` of the ``SSLSocket`` does the record layer.

Only the connecting side lives here (``connect_tls``): it is the latency-bound one (the
client's links to its bankd); listeners keep asyncio's TLS transport.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import ssl
from collections.abc import Callable
from typing import Any

__all__ = ["TlsSocketTransport", "connect_tls"]

READ_SIZE = 65536
"""Bytes asked of the TLS socket per read (one record carries at most 16 KiB)."""


class TlsSocketTransport(asyncio.Transport):
    """An ``asyncio.Transport`` over a connected, handshaken, non-blocking ``SSLSocket``."""

    def __init__(
        self,
        loop: asyncio.AbstractEventLoop,
        sock: ssl.SSLSocket,
        protocol: asyncio.Protocol,
    ) -> None:
        super().__init__()
        self._loop = loop
        self._sock = sock
        self._fd = sock.fileno()
        self._protocol = protocol
        self._pending: bytes | None = None
        """A chunk OpenSSL refused with a WANT error: it must be retried as it is."""
        self._queue = bytearray()
        self._writing = False
        self._read_wants_write = False
        self._paused = False
        self._closing = False
        self._closed = False
        self._extra: dict[str, Any] = {
            "socket": sock,
            "peername": sock.getpeername(),
            "sockname": sock.getsockname(),
            "ssl_object": sock,
            "sslcontext": sock.context,
            "peercert": sock.getpeercert(),
            "cipher": sock.cipher(),
            "compression": sock.compression(),
        }
        protocol.connection_made(self)
        if not self._closing:
            loop.add_reader(self._fd, self._read_ready)
            if sock.pending():  # records read along with the handshake's last flight
                loop.call_soon(self._read_ready)

    # --- asyncio.BaseTransport -----------------------------------------------------------

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        return self._extra.get(name, default)

    def is_closing(self) -> bool:
        return self._closing

    def close(self) -> None:
        """Send what is queued, then close (with a TLS close_notify)."""
        if self._closing:
            return
        self._closing = True
        self._stop_reading()
        if self._pending is None and not self._queue:
            self._loop.call_soon(self._finish, None)

    def set_protocol(self, protocol: asyncio.BaseProtocol) -> None:
        assert isinstance(protocol, asyncio.Protocol)
        self._protocol = protocol

    def get_protocol(self) -> asyncio.BaseProtocol:
        return self._protocol

    # --- asyncio.ReadTransport -----------------------------------------------------------

    def is_reading(self) -> bool:
        return not self._paused and not self._closing

    def pause_reading(self) -> None:
        if self.is_reading():
            self._paused = True
            self._loop.remove_reader(self._fd)

    def resume_reading(self) -> None:
        if self._paused and not self._closing:
            self._paused = False
            self._loop.add_reader(self._fd, self._read_ready)
            if self._sock.pending():
                self._loop.call_soon(self._read_ready)

    # --- asyncio.WriteTransport ----------------------------------------------------------

    def write(self, data: bytes | bytearray | memoryview) -> None:
        if self._closing or not data:
            return
        self._queue += data
        if not self._writing:
            self._write_ready()

    def get_write_buffer_size(self) -> int:
        return len(self._queue) + len(self._pending or b"")

    def can_write_eof(self) -> bool:
        return False  # TLS 1.3 has no half-close

    def write_eof(self) -> None:
        raise NotImplementedError("a TLS link cannot be half-closed")

    def abort(self) -> None:
        """Close at once, dropping what is queued."""
        self._closing = True
        self._finish(None)

    # --- the selector's callbacks --------------------------------------------------------

    def _read_ready(self) -> None:
        if self._read_wants_write or not self.is_reading():
            return
        while True:
            try:
                data = self._sock.recv(READ_SIZE)
            except ssl.SSLWantReadError:
                return
            except ssl.SSLWantWriteError:  # a handshake message to answer first
                self._read_wants_write = True
                self._want_write()
                return
            except (ssl.SSLError, OSError) as exc:
                self._finish(exc)
                return
            if not data:  # close_notify or the peer's FIN
                self._stop_reading()
                if not self._protocol.eof_received():
                    self.close()
                return
            self._protocol.data_received(data)
            if not self.is_reading() or not self._sock.pending():
                return

    def _write_ready(self) -> None:
        if self._read_wants_write:
            self._read_wants_write = False
            self._read_ready()
        while self._pending is not None or self._queue:
            chunk = self._pending
            if chunk is None:
                chunk = bytes(self._queue)
                self._queue.clear()
            try:
                sent = self._sock.send(chunk)
            except (ssl.SSLWantWriteError, ssl.SSLWantReadError):
                self._pending = chunk
                self._want_write()
                return
            except (ssl.SSLError, OSError) as exc:
                self._finish(exc)
                return
            self._pending = chunk[sent:] or None
        if self._writing:
            self._writing = False
            self._loop.remove_writer(self._fd)
        if self._closing:
            self._finish(None)

    def _want_write(self) -> None:
        if not self._writing and not self._closed:
            self._writing = True
            self._loop.add_writer(self._fd, self._write_ready)

    def _stop_reading(self) -> None:
        if not self._paused:
            self._paused = True
            self._loop.remove_reader(self._fd)

    def _finish(self, exc: Exception | None) -> None:
        if self._closed:
            return
        self._closed = self._closing = True
        self._stop_reading()
        if self._writing:
            self._writing = False
            self._loop.remove_writer(self._fd)
        self._pending = None
        self._queue.clear()
        if exc is None:
            with contextlib.suppress(ssl.SSLError, OSError, ValueError):
                self._sock.unwrap()  # sends close_notify; the peer's answer is not awaited
        self._sock.close()
        self._loop.call_soon(self._protocol.connection_lost, exc)


async def _until(loop: asyncio.AbstractEventLoop, fd: int, writable: bool) -> None:
    """Wait until ``fd`` is readable (or writable); cancellation-safe."""
    ready = loop.create_future()

    def wake() -> None:
        if not ready.done():
            ready.set_result(None)

    (loop.add_writer if writable else loop.add_reader)(fd, wake)
    try:
        await ready
    finally:
        (loop.remove_writer if writable else loop.remove_reader)(fd)


async def connect_tls(
    protocol_factory: Callable[[], asyncio.Protocol],
    host: str,
    port: int,
    context: ssl.SSLContext,
) -> tuple[TlsSocketTransport, asyncio.Protocol]:
    """Connect to ``host:port`` (each of its addresses in turn), do the TLS handshake with
    ``context`` and hand the link to a new protocol: as ``loop.create_connection(...,
    ssl=context)`` does. Bound it with a timeout; on cancellation the socket is closed."""
    loop = asyncio.get_running_loop()
    infos = await loop.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    error: OSError = OSError(f"no address for {host}")
    for family, kind, proto, _, address in infos:
        sock = socket.socket(family, kind, proto)
        try:
            sock.setblocking(False)
            await loop.sock_connect(sock, address)
            tls = context.wrap_socket(sock, server_hostname=host, do_handshake_on_connect=False)
        except OSError as exc:
            sock.close()
            error = exc
            continue
        except BaseException:
            sock.close()
            raise
        try:
            while True:
                try:
                    tls.do_handshake()
                    break
                except ssl.SSLWantReadError:
                    await _until(loop, tls.fileno(), writable=False)
                except ssl.SSLWantWriteError:
                    await _until(loop, tls.fileno(), writable=True)
        except BaseException:
            tls.close()
            raise
        protocol = protocol_factory()
        return TlsSocketTransport(loop, tls, protocol), protocol
    raise error
